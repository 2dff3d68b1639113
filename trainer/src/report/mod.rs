//! What the main job shows: plots, visualisations and the HTML report.

pub mod bench;
pub mod detect;
pub mod html;
pub mod plots;
pub mod visualize;
