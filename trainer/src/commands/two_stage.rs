//! `trainer fast-rcnn` and `trainer faster-rcnn`: the training canvases, the digit classifier
//! that starts them, training with per-epoch mAP, the final evaluation on the 1,000 test
//! canvases, and the checkpoint, printed.

use crate::commands::data::DataArgs;
use crate::detect::fast_rcnn::{
    evaluate, train_fast, EpochMap, TwoStage, TwoStageConfig, TwoStageEval,
};
use crate::detect::rcnn::{pretrain_digits, propose_all, training_canvases, TEST_PROPOSALS};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct TwoStageArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Training canvases (1-4 training digits each).
    #[arg(long, default_value_t = crate::data::source::RCNN_CANVASES)]
    pub canvases: usize,
    #[arg(long, default_value_t = TwoStageConfig::default().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// Digit classifier checkpoint (ref-cnn) whose conv trunk starts the detector
    /// (default: ref-cnn trained here on the training digits for --pretrain-epochs).
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub pretrain_epochs: usize,
    /// Write the trained detector here (JSON).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// What a two-stage command measured.
#[derive(Debug, Clone, Serialize)]
pub struct TwoStageReport {
    pub method: String,
    pub curve: Vec<EpochMap>,
    pub final_eval: TwoStageEval,
    /// Selective search per test image (Fast R-CNN only; 0 for Faster R-CNN).
    pub proposal_ms_per_image: f32,
}

/// The digit classifier a two-stage detector starts from.
pub fn classifier(a: &TwoStageArgs) -> anyhow::Result<crate::nn::model::Model> {
    match &a.pretrained {
        Some(p) => Ok(crate::train::Checkpoint::load(p)?.model),
        None => pretrain_digits(&a.data.source(), a.pretrain_epochs, 3),
    }
}

fn show(name: &'static str) -> impl FnMut(&EpochMap) {
    move |e: &EpochMap| {
        eprintln!(
            "{name} epoch {}: loss {:.4} | test mAP@0.5 {:.3}, mAP@[.5:.95] {:.3}",
            e.epoch, e.loss, e.map50, e.map_coco
        )
    }
}

pub fn cmd_fast_rcnn(a: &TwoStageArgs) -> anyhow::Result<TwoStageReport> {
    let size = crate::detect::fast_rcnn::SIZE;
    let (train_digits, test) = crate::data::source::detection_test_set(&a.data.source(), size)?;
    let canvases = training_canvases(&train_digits, a.canvases, size);
    let t = std::time::Instant::now();
    let test_props = propose_all(&test, TEST_PROPOSALS);
    let proposal_ms = t.elapsed().as_secs_f32() * 1e3 / test.len().max(1) as f32;
    let train_props = propose_all(&canvases, TEST_PROPOSALS);
    let mut net = TwoStage::from_classifier(&classifier(a)?, 17)?;
    let cfg = TwoStageConfig {
        epochs: a.epochs,
        lr: a.lr,
        ..TwoStageConfig::default()
    };
    let curve = train_fast(
        &mut net,
        &canvases,
        &train_props,
        &cfg,
        Some((&test, &test_props)),
        show("Fast R-CNN"),
    )?;
    let final_eval = evaluate(&net, &test, &test_props);
    if let Some(p) = &a.out {
        crate::io::write_atomic(p, &serde_json::to_vec(&net)?)?;
    }
    Ok(TwoStageReport {
        method: "Fast R-CNN".into(),
        curve,
        final_eval,
        proposal_ms_per_image: proposal_ms,
    })
}

pub fn cmd_faster_rcnn(a: &TwoStageArgs) -> anyhow::Result<TwoStageReport> {
    let size = crate::detect::fast_rcnn::SIZE;
    let (train_digits, test) = crate::data::source::detection_test_set(&a.data.source(), size)?;
    let canvases = training_canvases(&train_digits, a.canvases, size);
    let net = TwoStage::from_classifier(&classifier(a)?, 17)?;
    let mut net = crate::detect::faster_rcnn::with_rpn(net, 19);
    let cfg = TwoStageConfig {
        epochs: a.epochs,
        lr: a.lr,
        ..TwoStageConfig::default()
    };
    let curve = crate::detect::faster_rcnn::train_faster(
        &mut net,
        &canvases,
        &cfg,
        Some(&test),
        show("Faster R-CNN"),
    )?;
    let final_eval = crate::detect::faster_rcnn::evaluate(&net, &test);
    if let Some(p) = &a.out {
        crate::io::write_atomic(p, &serde_json::to_vec(&net)?)?;
    }
    Ok(TwoStageReport {
        method: "Faster R-CNN".into(),
        curve,
        final_eval,
        proposal_ms_per_image: 0.0,
    })
}

/// `trainer fast-rcnn` (and, with `faster`, `trainer faster-rcnn`): the final figures (and the
/// report as JSON with `--json`).
pub fn run(a: &TwoStageArgs, faster: bool) -> anyhow::Result<()> {
    let r = if faster {
        cmd_faster_rcnn(a)?
    } else {
        cmd_fast_rcnn(a)?
    };
    let e = r.final_eval;
    println!(
        "{} ({} epochs) on the 1,000 test canvases: mAP@0.5 {:.3}, mAP@[.5:.95] {:.3}; {:.1} proposals, {:.2} M MACs, {:.2} ms per image{}",
        r.method,
        a.epochs,
        e.map50,
        e.map_coco,
        e.proposals_per_image,
        e.macs_per_image / 1e6,
        e.ms_per_image,
        if faster { String::new() } else { format!(" + {:.2} ms selective search", r.proposal_ms_per_image) }
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
