//! The trainer as a library: each folder is one stage of the pipeline, and dependencies point
//! one way (cli -> report -> detect / deploy -> train -> nn / data -> runtime).
pub mod cli;
pub mod data;
pub mod deploy;
pub mod detect;
pub mod io;
pub mod nn;
pub mod report;
pub mod train;
pub mod util;
