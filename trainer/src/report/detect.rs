//! The `detect` command's result row, which the main job's report also holds
//! (`report::html::Summary::detector`); the command is `commands::detect`.

/// One row of the detection comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DetectRow {
    pub method: String,
    pub map50: f32,
    pub map_coco: f32,
    pub macs_per_image: usize,
    pub flash_bytes: Option<usize>,
    pub arena_bytes: Option<usize>,
    pub host_ms_per_image: f32,
}
