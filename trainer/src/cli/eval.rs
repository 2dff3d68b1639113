//! `trainer eval`: a checkpoint's accuracy and confusion matrix, printed.

use crate::report::eval::{cmd_eval, print_confusion, EvalArgs};

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
