//! `trainer rcnn`: R-CNN trained and evaluated on the canvases, printed.

use crate::detect::rcnn::RcnnArgs;

pub fn run(a: &RcnnArgs) -> anyhow::Result<()> {
    let r = crate::detect::rcnn::cmd_rcnn(a)?;
    let e = r.final_eval;
    println!(
        "R-CNN (fine-tuned, {} epochs) on the 1,000 test canvases: mAP@0.5 {:.3}, mAP@[.5:.95] {:.3}; {:.1} proposals, {:.2} M MACs, {:.2} ms + {:.2} ms proposals per image",
        a.epochs, e.map50, e.map_coco, e.proposals_per_image, e.macs_per_image / 1e6, e.ms_per_image, r.proposal_ms_per_image
    );
    let ep = |v: Option<usize>| v.map_or("not reached".to_string(), |e| format!("epoch {e}"));
    println!(
        "mAP@0.5 >= {}: fine-tuned {}, from scratch {}",
        crate::detect::rcnn::TARGET_MAP50,
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

/// `trainer fast-rcnn` (and, with `faster`, `trainer faster-rcnn`).
pub fn run_two_stage(
    a: &crate::detect::two_stage_cmd::TwoStageArgs,
    faster: bool,
) -> anyhow::Result<()> {
    let r = if faster {
        crate::detect::two_stage_cmd::cmd_faster_rcnn(a)?
    } else {
        crate::detect::two_stage_cmd::cmd_fast_rcnn(a)?
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
