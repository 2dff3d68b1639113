//! The `detect` command: a detection model on the test canvases, float and int8, with mAP.

use crate::data::source::*;
use crate::deploy::export::run_int8;
use crate::deploy::run::*;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct DetectArgs {
    /// A grid-detector blob from `export`.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// PNG of predicted (red) and true (green) boxes on the first test canvases.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// How many canvases the PNG shows.
    #[arg(long, default_value_t = 16)]
    pub count: usize,
    /// Also train and run the sliding-window baseline.
    #[arg(long)]
    pub baseline: bool,
    #[arg(long, default_value_t = 5)]
    pub baseline_epochs: usize,
    #[arg(long)]
    pub json: bool,
}

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

pub fn cmd_detect(a: &DetectArgs) -> anyhow::Result<Vec<DetectRow>> {
    let blob = read_blob(&a.model)?;
    let m = runtime::Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let dec = *m
        .grid_decoder()
        .with_context(|| format!("{} is not a grid detector", a.model.display()))?;
    let classes = match m.def().head {
        runtime::format::Head::GridDetector { classes, .. } => classes as usize,
        _ => 0,
    };
    let size = m.def().input.shape.w as usize;
    let (train_digits, test_digits) = a.data.load(classes)?;
    let test = crate::data::canvas::multi_object(
        &test_digits,
        CANVAS_TEST_COUNT.min(test_digits.len()),
        size,
        CANVAS_SEEDS.1,
    );
    let t = std::time::Instant::now();
    let outs = run_int8(&blob, &test)?;
    let preds: Vec<Vec<crate::data::metrics::Pred>> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| crate::detect::grid::preds_from_runtime(&dec.decode(o), size, i))
        .collect();
    let ms = t.elapsed().as_secs_f32() * 1e3 / test.len().max(1) as f32;
    let flat: Vec<_> = preds.iter().flatten().copied().collect();
    let mut rows = vec![DetectRow {
        method: format!("{} int8 (runtime)", m.def().name),
        map50: crate::data::metrics::mean_ap(&flat, &test.objects, classes, 0.5),
        map_coco: crate::data::metrics::mean_ap_coco(&flat, &test.objects, classes),
        macs_per_image: m.macs(),
        flash_bytes: Some(blob.len()),
        arena_bytes: Some(m.arena_bytes()),
        host_ms_per_image: ms,
    }];
    if let Some(p) = &a.png {
        let title = format!(
            "{} int8: red = predicted (class), green = true; mAP@0.5 {:.3}",
            m.def().name,
            rows[0].map50
        );
        crate::report::plots::detections_grid(&test, &preds, a.count, &title, p)?;
    }
    if a.baseline {
        let train_canvases = crate::data::canvas::multi_object(
            &train_digits,
            train_digits.len(),
            size,
            CANVAS_SEEDS.0,
        );
        let mut clf =
            crate::detect::sliding::train_classifier(&train_canvases, a.baseline_epochs, 7)?;
        let t = std::time::Instant::now();
        let sw = crate::detect::sliding::detect(&mut clf, &test);
        let ms = t.elapsed().as_secs_f32() * 1e3 / test.len().max(1) as f32;
        let flat: Vec<_> = sw.iter().flatten().copied().collect();
        rows.push(DetectRow {
            method: format!(
                "sliding window, {} windows x ref-cnn+bg (float)",
                crate::detect::sliding::windows(size).len()
            ),
            map50: crate::data::metrics::mean_ap(&flat, &test.objects, classes, 0.5),
            map_coco: crate::data::metrics::mean_ap_coco(&flat, &test.objects, classes),
            macs_per_image: crate::detect::sliding::windows(size).len() * 290_080,
            flash_bytes: None,
            arena_bytes: None,
            host_ms_per_image: ms,
        });
    }
    Ok(rows)
}
