//! `trainer rcnn`: R-CNN trained and evaluated on the detection canvases (the pipeline is
//! `detect::rcnn`), printed.

use crate::commands::data::DataArgs;
use crate::detect::rcnn::{
    epochs_to, evaluate, pretrain_digits, propose_all, train_rcnn, training_canvases, EpochMap,
    RcnnConfig, RcnnData, RcnnEval, CROP_SEED, TARGET_MAP50, TEST_PROPOSALS,
};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct RcnnArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Training canvases (1-4 training digits each).
    #[arg(long, default_value_t = crate::data::source::RCNN_CANVASES)]
    pub canvases: usize,
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// Digit classifier checkpoint whose trunk starts the fine-tuning (default: ref-cnn trained
    /// here on the training digits for --pretrain-epochs).
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub pretrain_epochs: usize,
    /// Freeze the first N classifier layers at the pretrained values (8: the conv trunk).
    #[arg(long, default_value_t = 0)]
    pub freeze: usize,
    /// Also train the same classifier from scratch (same data, epochs and seed) and report
    /// both learning curves.
    #[arg(long)]
    pub scratch: bool,
    /// Write the fine-tuned R-CNN here (JSON: classifier and box regressors).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// What `rcnn` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RcnnReport {
    pub training_crops: usize,
    pub pretrained_accuracy: Option<f32>,
    pub init: Vec<String>,
    pub finetuned: Vec<EpochMap>,
    pub scratch: Vec<EpochMap>,
    pub finetuned_epochs_to_target: Option<usize>,
    pub scratch_epochs_to_target: Option<usize>,
    pub final_eval: RcnnEval,
    pub proposal_ms_per_image: f32,
}

pub fn cmd_rcnn(a: &RcnnArgs) -> anyhow::Result<RcnnReport> {
    let size = 64;
    let (train_digits, test) = crate::data::source::detection_test_set(&a.data.source(), size)?;
    let canvases = training_canvases(&train_digits, a.canvases, size);
    let t = std::time::Instant::now();
    let test_props = propose_all(&test, TEST_PROPOSALS);
    let proposal_ms = t.elapsed().as_secs_f32() * 1e3 / test.len().max(1) as f32;
    let data = RcnnData::new(&canvases, CROP_SEED);
    eprintln!(
        "{} training crops from {} canvases ({} for box regression)",
        data.crops.len(),
        canvases.len(),
        data.reg.len()
    );
    let (pre, pre_acc) = match &a.pretrained {
        Some(p) => (crate::train::Checkpoint::load(p)?.model, None),
        None => {
            let mut m = pretrain_digits(&a.data.source(), a.pretrain_epochs, 3)?;
            let (_, test_digits) = a.data.source().load(10)?;
            let acc = crate::train::evaluate(&mut m, &test_digits, 500).1;
            eprintln!(
                "pretrained ref-cnn on the digits: {} epochs, test accuracy {:.2}%",
                a.pretrain_epochs,
                acc * 100.0
            );
            (m, Some(acc))
        }
    };
    let cfg = RcnnConfig {
        epochs: a.epochs,
        lr: a.lr,
        freeze: a.freeze,
        ..RcnnConfig::default()
    };
    let show = |name: &'static str| {
        move |e: &EpochMap| {
            eprintln!(
                "{name} epoch {}: mAP@0.5 {:.3}, mAP@[.5:.95] {:.3} (held-out crop accuracy {:.2}%)",
                e.epoch,
                e.map50,
                e.map_coco,
                e.crop_accuracy * 100.0
            )
        }
    };
    let eval = Some((&test, &test_props[..]));
    let (mut rcnn, finetuned, init) =
        train_rcnn(&data, Some(&pre), &cfg, eval, show("fine-tuned"))?;
    for l in &init {
        eprintln!("init from the digit classifier: {l}");
    }
    let scratch = if a.scratch {
        let cfg = RcnnConfig { freeze: 0, ..cfg };
        train_rcnn(&data, None, &cfg, eval, show("scratch"))?.1
    } else {
        Vec::new()
    };
    let final_eval = evaluate(&mut rcnn, &test, &test_props);
    if let Some(p) = &a.out {
        crate::io::write_atomic(p, &serde_json::to_vec(&rcnn)?)?;
    }
    Ok(RcnnReport {
        training_crops: data.crops.len(),
        pretrained_accuracy: pre_acc,
        init,
        finetuned_epochs_to_target: epochs_to(&finetuned, TARGET_MAP50),
        scratch_epochs_to_target: epochs_to(&scratch, TARGET_MAP50),
        finetuned,
        scratch,
        final_eval,
        proposal_ms_per_image: proposal_ms,
    })
}

/// `trainer rcnn`: the final figures and the epochs to the target (and the report as JSON with
/// `--json`).
pub fn run(a: &RcnnArgs) -> anyhow::Result<()> {
    let r = cmd_rcnn(a)?;
    let e = r.final_eval;
    println!(
        "R-CNN (fine-tuned, {} epochs) on the 1,000 test canvases: mAP@0.5 {:.3}, mAP@[.5:.95] {:.3}; {:.1} proposals, {:.2} M MACs, {:.2} ms + {:.2} ms proposals per image",
        a.epochs, e.map50, e.map_coco, e.proposals_per_image, e.macs_per_image / 1e6, e.ms_per_image, r.proposal_ms_per_image
    );
    let ep = |v: Option<usize>| v.map_or("not reached".to_string(), |e| format!("epoch {e}"));
    println!(
        "mAP@0.5 >= {}: fine-tuned {}, from scratch {}",
        TARGET_MAP50,
        ep(r.finetuned_epochs_to_target),
        if a.scratch {
            ep(r.scratch_epochs_to_target)
        } else {
            "not run (--scratch)".into()
        }
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
