//! `trainer train`: a training run (library call `report::train::cmd_train_with`), printed.

use crate::report::train::{cmd_train_with, FinetuneArgs, TrainArgs};

pub fn run(a: &TrainArgs, finetune: &FinetuneArgs) -> anyhow::Result<()> {
    let r = cmd_train_with(a, finetune)?;
    println!(
        "{}: {} params, {} epochs, test accuracy {:.2}%, {:.1}s training ({:.0} images/s); checkpoint {}, curves {}",
        r.arch, r.params, r.epochs, r.test_accuracy * 100.0, r.train_seconds, r.images_per_second, r.checkpoint.display(), r.plot.display()
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
