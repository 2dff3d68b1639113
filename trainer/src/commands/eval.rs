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
    /// The classes' names (empty: numbers).
    pub class_names: Vec<String>,
}

pub fn cmd_eval(a: &EvalArgs) -> anyhow::Result<EvalReport> {
    let mut ck = Checkpoint::load(&a.checkpoint)?;
    if let Some(note) = ck.partial_note(&a.checkpoint) {
        eprintln!("{note}");
    }
    let (_, test) = a
        .data
        .for_checkpoint(ck.trained_on.as_ref())
        .load_for(&ck.model.arch)?;
    let (loss, accuracy, preds) = evaluate(&mut ck.model, &test, 500);
    let confusion = crate::report::plots::confusion(&test.labels, &preds, ck.model.arch.classes);
    if let Some(p) = &a.confusion_png {
        crate::report::plots::confusion_matrix(
            &confusion,
            &ck.model.arch.class_names,
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
        class_names: ck.model.arch.class_names.clone(),
    })
}

/// The confusion matrix as text: rows true classes, columns predictions, each headed by the
/// class's name (or number).
pub fn confusion_text(cm: &[Vec<usize>], names: &[String]) -> String {
    let name = |k: usize| names.get(k).cloned().unwrap_or_else(|| k.to_string());
    let widest = (0..cm.len())
        .map(|k| name(k).chars().count())
        .max()
        .unwrap_or(0);
    let (col, first) = (widest.max(5) + 1, widest.max(9));
    let mut s = format!("{:<first$}", "true\\pred");
    for p in 0..cm.len() {
        s += &format!("{:>col$}", name(p));
    }
    s.push('\n');
    for (t, row) in cm.iter().enumerate() {
        s += &format!("{:>first$}", name(t));
        for n in row {
            s += &format!("{n:>col$}");
        }
        s.push('\n');
    }
    s
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
    print!("{}", confusion_text(&r.confusion, &r.class_names));
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Named classes head the rows and columns, numbers otherwise; counts line up under them.
    #[test]
    fn confusion_text_names_the_classes() {
        let cm = vec![vec![5, 1], vec![0, 7]];
        let names = ["circle".to_string(), "a-very-long-class".to_string()];
        let t = super::confusion_text(&cm, &names);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with(" circle a-very-long-class"), "{t}");
        assert!(lines[1].trim_start().starts_with("circle"), "{t}");
        assert!(lines[2].ends_with(" 7"), "{t}");
        assert_eq!(lines[1].len(), lines[0].len(), "{t}");
        let t = super::confusion_text(&cm, &[]);
        assert!(t.lines().next().unwrap().ends_with("     0     1"), "{t}");
    }
}
