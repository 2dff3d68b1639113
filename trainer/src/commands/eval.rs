//! `trainer eval`: a checkpoint's float accuracy and confusion matrix on a test set, printed.

use crate::commands::data::DataArgs;
use crate::train::{evaluate, Checkpoint};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// Checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Confusion matrix PNG.
    #[arg(long)]
    pub confusion_png: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub accuracy: f32,
    pub loss: f32,
    pub images: usize,
    pub confusion: Vec<Vec<usize>>,
}

pub fn cmd_eval(a: &EvalArgs) -> anyhow::Result<EvalReport> {
    let mut ck = Checkpoint::load(&a.checkpoint)?;
    let (_, test) = a
        .data
        .source()
        .for_checkpoint(ck.trained_on.as_ref())
        .load_for(&ck.model.arch)?;
    let (loss, accuracy, preds) = evaluate(&mut ck.model, &test, 500);
    let confusion = crate::report::plots::confusion(&test.labels, &preds, ck.model.arch.classes);
    if let Some(p) = &a.confusion_png {
        crate::report::plots::confusion_matrix(
            &confusion,
            &format!(
                "{} float, test accuracy {:.2}%",
                ck.model.arch.name,
                accuracy * 100.0
            ),
            p,
        )?;
    }
    Ok(EvalReport {
        accuracy,
        loss,
        images: test.len(),
        confusion,
    })
}

pub fn print_confusion(cm: &[Vec<usize>]) {
    print!("true\\pred");
    for p in 0..cm.len() {
        print!("{p:>6}");
    }
    println!();
    for (t, row) in cm.iter().enumerate() {
        print!("{t:>9}");
        for n in row {
            print!("{n:>6}");
        }
        println!();
    }
}

/// `trainer eval`: accuracy, loss and the confusion matrix (and the report as JSON with `--json`).
pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    let r = cmd_eval(a)?;
    println!(
        "accuracy {:.2}% on {} images (loss {:.4})",
        r.accuracy * 100.0,
        r.images,
        r.loss
    );
    print_confusion(&r.confusion);
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
