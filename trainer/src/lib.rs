//! The trainer as a library: each folder is one stage of the pipeline, and dependencies point
//! one way (commands -> report -> detect / deploy -> train -> nn / data -> runtime). Only
//! `commands` knows the command line (clap); the rest takes plain structs and parameters.
pub mod commands;
pub mod data;
pub mod deploy;
pub mod detect;
pub mod io;
pub mod nn;
pub mod report;
pub mod train;
pub mod util;
