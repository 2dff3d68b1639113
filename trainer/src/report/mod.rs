//! What the main job shows: plots, visualisations and the HTML report.

pub mod demo;
pub mod plots;
pub mod visualize;
