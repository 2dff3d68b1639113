//! `trainer compare`: every detector (sliding window, selective search + R-CNN, Fast R-CNN,
//! Faster R-CNN, the grid detector) trained or loaded, then scored on the same 1,000 test
//! canvases; the table (`detect::compare::Comparison`) printed as markdown.

use crate::commands::data::DataArgs;
use crate::detect::compare::{CompareRow, Comparison};
use crate::nn::arch::ArchSpec;
use crate::nn::model::Model;
use crate::train::{Checkpoint, TrainConfig};
use anyhow::Context;
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Grid-detector checkpoint (`train --arch grid-det`); default: train one here for
    /// --grid-epochs.
    #[arg(long)]
    pub grid_checkpoint: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    pub grid_epochs: usize,
    /// R-CNN from `rcnn --out`; default: train one here (3,000 canvases, --rcnn-epochs, trunk
    /// fine-tuned from ref-cnn trained on the digits for 3 epochs).
    #[arg(long)]
    pub rcnn: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub rcnn_epochs: usize,
    /// Fast R-CNN and Faster R-CNN from `fast-rcnn --out` and `faster-rcnn --out`; default:
    /// train them here (3,000 canvases, --two-stage-epochs, trunk from the same digit
    /// classifier as R-CNN's).
    #[arg(long)]
    pub fast_rcnn: Option<PathBuf>,
    #[arg(long)]
    pub faster_rcnn: Option<PathBuf>,
    #[arg(long, default_value_t = crate::detect::fast_rcnn::TwoStageConfig::default().epochs)]
    pub two_stage_epochs: usize,
    /// Epochs of the sliding-window classifier (trained as `detect --baseline` trains it).
    #[arg(long, default_value_t = 5)]
    pub baseline_epochs: usize,
    /// Also write the markdown table here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Trains (or loads) the five detectors and scores them on the detection test set.
pub fn compare(a: &CompareArgs) -> anyhow::Result<Comparison> {
    // Fail before training, not after it, when the table cannot be written.
    if let Some(dir) = a.out.as_ref().and_then(|p| p.parent()) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            anyhow::bail!(
                "cannot write {}: directory {} does not exist",
                a.out
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                dir.display()
            );
        }
    }
    crate::util::with_threads(1, || compare_on_this_thread(a))?
}

fn compare_on_this_thread(a: &CompareArgs) -> anyhow::Result<Comparison> {
    let size = 64;
    let source = a.data.source();
    let (train_digits, test) = crate::data::source::detection_test_set(&source, size)?;
    let n = test.len().max(1) as f32;
    let mut rows = Vec::new();
    // Progress on stderr: each detector as it is scored, with the time so far (the whole
    // comparison takes minutes).
    let t0 = Instant::now();
    let done = |rows: &Vec<CompareRow>| {
        if let Some(r) = rows.last() {
            eprintln!(
                "      detector {}/5 scored after {:.0} s: {}",
                rows.len(),
                t0.elapsed().as_secs_f32(),
                r.method
            );
        }
    };

    // Sliding window: exactly `detect --baseline`.
    let train_canvases = crate::data::canvas::multi_object(
        &train_digits,
        train_digits.len(),
        size,
        crate::data::source::CANVAS_SEEDS.0,
    );
    let mut clf = crate::detect::sliding::train_classifier(&train_canvases, a.baseline_epochs, 7)?;
    let t = Instant::now();
    let sw = crate::detect::sliding::detect(&mut clf, &test);
    let ms = t.elapsed().as_secs_f32() * 1e3 / n;
    let flat: Vec<_> = sw.iter().flatten().copied().collect();
    let windows = crate::detect::sliding::windows(size).len();
    rows.push(CompareRow {
        method: format!("sliding window ({windows} windows, ref-cnn + background)"),
        map50: crate::data::metrics::mean_ap(&flat, &test.objects, 10, 0.5),
        map_coco: crate::data::metrics::mean_ap_coco(&flat, &test.objects, 10),
        proposals_per_image: Some(windows as f32),
        macs_per_image: (windows * clf.arch.macs()) as f64,
        host_ms_per_image: ms,
    });
    done(&rows);

    // Selective search + R-CNN.
    let mut pre: Option<Model> = None;
    let mut digits = || -> anyhow::Result<Model> {
        if pre.is_none() {
            pre = Some(crate::detect::rcnn::pretrain_digits(&source, 3, 3)?);
        }
        Ok(pre.clone().expect("set above"))
    };
    let train_canvases_rcnn = crate::detect::rcnn::training_canvases(
        &train_digits,
        crate::data::source::RCNN_CANVASES,
        size,
    );
    // Selective search on the training canvases, once for R-CNN and Fast R-CNN.
    let mut train_props_cache: Option<Vec<Vec<[f32; 4]>>> = None;
    let mut train_props = || {
        train_props_cache
            .get_or_insert_with(|| {
                crate::detect::rcnn::propose_all(
                    &train_canvases_rcnn,
                    crate::detect::rcnn::TEST_PROPOSALS,
                )
            })
            .clone()
    };
    let mut rcnn: crate::detect::rcnn::Rcnn = match &a.rcnn {
        Some(p) => {
            let bytes = std::fs::read(p)
                .with_context(|| format!("cannot read R-CNN file {}", p.display()))?;
            serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not an R-CNN file from `rcnn --out`", p.display())
            })?
        }
        None => {
            let pre = digits()?;
            let data = crate::detect::rcnn::RcnnData::with_proposals(
                &train_canvases_rcnn,
                &train_props(),
                crate::detect::rcnn::CROP_SEED,
            );
            let cfg = crate::detect::rcnn::RcnnConfig {
                epochs: a.rcnn_epochs,
                ..Default::default()
            };
            crate::detect::rcnn::train_rcnn(&data, Some(&pre), &cfg, None, |_| {})?.0
        }
    };
    let t = Instant::now();
    let props = crate::detect::rcnn::propose_all(&test, crate::detect::rcnn::TEST_PROPOSALS);
    let prop_ms = t.elapsed().as_secs_f32() * 1e3 / n;
    let e = crate::detect::rcnn::evaluate(&mut rcnn, &test, &props);
    rows.push(CompareRow {
        method: "selective search + R-CNN (ref-cnn + background, fine-tuned; box regression)"
            .into(),
        map50: e.map50,
        map_coco: e.map_coco,
        proposals_per_image: Some(e.proposals_per_image),
        macs_per_image: e.macs_per_image as f64,
        host_ms_per_image: prop_ms + e.ms_per_image,
    });
    done(&rows);

    // Fast R-CNN: the same proposals, the trunk once per image.
    use crate::detect::fast_rcnn::{TwoStage, TwoStageConfig};
    let load = |p: &PathBuf, what: &str| -> anyhow::Result<TwoStage> {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a file from `{what} --out`", p.display()))
    };
    let cfg = TwoStageConfig {
        epochs: a.two_stage_epochs,
        ..TwoStageConfig::default()
    };
    let fast = match &a.fast_rcnn {
        Some(p) => load(p, "fast-rcnn")?,
        None => {
            let mut net = TwoStage::from_classifier(&digits()?, 17)?;
            let train_props = train_props();
            crate::detect::fast_rcnn::train_fast(
                &mut net,
                &train_canvases_rcnn,
                &train_props,
                &cfg,
                None,
                |_| {},
            )?;
            net
        }
    };
    let e = crate::detect::fast_rcnn::evaluate(&fast, &test, &props);
    rows.push(CompareRow {
        method: "selective search + Fast R-CNN (shared trunk, RoI pooling)".into(),
        map50: e.map50,
        map_coco: e.map_coco,
        proposals_per_image: Some(e.proposals_per_image),
        macs_per_image: e.macs_per_image as f64,
        host_ms_per_image: prop_ms + e.ms_per_image,
    });
    done(&rows);

    // Faster R-CNN: proposals from its own RPN.
    let faster = match &a.faster_rcnn {
        Some(p) => load(p, "faster-rcnn")?,
        None => {
            let net = TwoStage::from_classifier(&digits()?, 17)?;
            let mut net = crate::detect::faster_rcnn::with_rpn(net, 19);
            crate::detect::faster_rcnn::train_faster(
                &mut net,
                &train_canvases_rcnn,
                &cfg,
                None,
                |_| {},
            )?;
            net
        }
    };
    if faster.params.len() <= crate::detect::fast_rcnn::HEAD_PARAMS {
        anyhow::bail!("--faster-rcnn: the file has no region proposal network");
    }
    let e = crate::detect::faster_rcnn::evaluate(&faster, &test);
    rows.push(CompareRow {
        method: "Faster R-CNN (RPN on the shared trunk, no selective search)".into(),
        map50: e.map50,
        map_coco: e.map_coco,
        proposals_per_image: Some(e.proposals_per_image),
        macs_per_image: e.macs_per_image as f64,
        host_ms_per_image: e.ms_per_image,
    });
    done(&rows);

    // Grid detector.
    let mut grid: Model = match &a.grid_checkpoint {
        Some(p) => Checkpoint::load(p)?.model,
        None => {
            let arch = ArchSpec::grid_det();
            let (tr, te) = source.load_for(&arch)?;
            let mut m = Model::new(arch, &mut ChaCha8Rng::seed_from_u64(42))?;
            let cfg = TrainConfig {
                epochs: a.grid_epochs,
                weight_decay: 0.002,
                ..TrainConfig::default()
            };
            crate::train::train_silent(&mut m, &tr, &te.slice(0..200.min(te.len())), &cfg)?;
            m
        }
    };
    if !grid.arch.grid {
        anyhow::bail!(
            "--grid-checkpoint: '{}' is not a grid detector",
            grid.arch.name
        );
    }
    let t = Instant::now();
    let preds = crate::train::grid_head::predict_all(&mut grid, &test);
    let ms = t.elapsed().as_secs_f32() * 1e3 / n;
    rows.push(CompareRow {
        method: format!("grid detector ({}, one pass)", grid.arch.name),
        map50: crate::data::metrics::mean_ap(&preds, &test.objects, grid.arch.classes, 0.5),
        map_coco: crate::data::metrics::mean_ap_coco(&preds, &test.objects, grid.arch.classes),
        proposals_per_image: None,
        macs_per_image: grid.arch.macs() as f64,
        host_ms_per_image: ms,
    });
    done(&rows);
    Ok(Comparison {
        test_images: test.len(),
        rows,
    })
}

/// `trainer compare`: the markdown table (also to `--out`; and as JSON with `--json`).
pub fn run(a: &CompareArgs) -> anyhow::Result<()> {
    let c = compare(a)?;
    let md = c.to_markdown();
    print!("{md}");
    if let Some(p) = &a.out {
        crate::io::write_atomic(p, md.as_bytes())?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&c)?);
    }
    Ok(())
}
