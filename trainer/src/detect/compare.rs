//! The detector comparison's table: sliding window, selective search + R-CNN, Fast R-CNN,
//! Faster R-CNN and the grid detector on the same 1,000 test canvases, as one markdown table
//! (what `trainer compare` prints, `commands::compare` runs, and the main job's report holds).

use serde::Serialize;
use std::fmt::Write;

/// One detector's figures on the test canvases.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub method: String,
    pub map50: f32,
    pub map_coco: f32,
    /// Windows or proposals classified per image (`None`: a single pass, no proposals).
    pub proposals_per_image: Option<f32>,
    pub macs_per_image: f64,
    /// Host wall time per image, one thread, float, everything from pixels to boxes.
    pub host_ms_per_image: f32,
}

/// The comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub test_images: usize,
    pub rows: Vec<CompareRow>,
}

impl Comparison {
    /// A markdown table with a one-line caption.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Detectors on the same {} test canvases (float, host, 1 thread):\n",
            self.test_images
        );
        let _ = writeln!(
            s,
            "| method | mAP@0.5 | mAP@[.5:.95] | proposals / image | MACs / image | host ms / image |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {:.3} | {:.3} | {} | {:.2} M | {:.2} |",
                r.method,
                r.map50,
                r.map_coco,
                r.proposals_per_image
                    .map_or("- (one pass)".into(), |p| format!("{p:.1}")),
                r.macs_per_image / 1e6,
                r.host_ms_per_image
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use crate::detect::compare::{CompareRow, Comparison};
    use crate::nn::arch::ArchSpec;

    #[test]
    fn macs_match_the_runtime_figures() {
        // The runtime's counts for the exported blobs (README): ref-cnn 290,080, grid-det 8.9 M.
        assert_eq!(ArchSpec::ref_cnn().macs(), 290_080);
        let g = ArchSpec::grid_det().macs();
        assert!((8_800_000..9_000_000).contains(&g), "{g}");
    }

    #[test]
    fn markdown_table_has_a_row_per_method() {
        let c = Comparison {
            test_images: 3,
            rows: vec![
                CompareRow {
                    method: "a".into(),
                    map50: 0.5,
                    map_coco: 0.25,
                    proposals_per_image: Some(12.5),
                    macs_per_image: 2.5e6,
                    host_ms_per_image: 1.0,
                },
                CompareRow {
                    method: "b".into(),
                    map50: 0.9,
                    map_coco: 0.6,
                    proposals_per_image: None,
                    macs_per_image: 8.9e6,
                    host_ms_per_image: 0.5,
                },
            ],
        };
        let t = c.to_markdown();
        assert!(
            t.contains("| a | 0.500 | 0.250 | 12.5 | 2.50 M | 1.00 |"),
            "{t}"
        );
        assert!(
            t.contains("| b | 0.900 | 0.600 | - (one pass) | 8.90 M | 0.50 |"),
            "{t}"
        );
        assert_eq!(t.lines().filter(|l| l.starts_with('|')).count(), 4);
    }
}
