//! What the main job shows: plots, visualisations and the HTML report.

pub mod bench;
pub mod demo;
pub mod detect;
pub mod eval;
pub mod html;
pub mod plots;
pub mod train;
pub mod visualize;
pub mod visualize_cmd;
