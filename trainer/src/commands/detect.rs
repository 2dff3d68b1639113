//! `trainer detect`: a detection model on the test canvases, float and int8, with mAP, as a
//! table.

use crate::commands::data::DataArgs;
use crate::data::source::{CANVAS_SEEDS, CANVAS_TEST_COUNT};
use crate::deploy::export::run_int8;
use crate::deploy::run::read_blob;
use crate::report::detect::DetectRow;
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
    let (train_digits, test_digits) = a.data.source().load(classes)?;
    let test = crate::data::canvas::multi_object(
        &test_digits,
        CANVAS_TEST_COUNT.min(test_digits.len()),
        size,
        CANVAS_SEEDS.1,
    );
    let t = std::time::Instant::now();
    let outs = run_int8(&m, &test)?;
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

/// `trainer detect`: the table of rows (and the rows as JSON with `--json`).
pub fn run(a: &DetectArgs) -> anyhow::Result<()> {
    let rows = cmd_detect(a)?;
    println!(
        "{:<52} {:>8} {:>12} {:>12} {:>8} {:>8} {:>10}",
        "method (1,000 test canvases)",
        "mAP@0.5",
        "mAP@.5:.95",
        "MACs/image",
        "flash B",
        "arena B",
        "host ms"
    );
    let opt = |v: Option<usize>| v.map_or("-".to_string(), |v| v.to_string());
    for r in &rows {
        println!(
            "{:<52} {:>8.3} {:>12.3} {:>12} {:>8} {:>8} {:>10.2}",
            r.method,
            r.map50,
            r.map_coco,
            r.macs_per_image,
            opt(r.flash_bytes),
            opt(r.arena_bytes),
            r.host_ms_per_image
        );
    }
    if a.json {
        println!("{}", serde_json::to_string(&rows)?);
    }
    Ok(())
}
