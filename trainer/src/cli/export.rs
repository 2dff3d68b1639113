//! `trainer export`: fold, quantize and write the blob (library call `deploy::run::cmd_export`),
//! and print float vs int8.

use crate::deploy::run::{cmd_export, ExportArgs};

pub fn run(a: &ExportArgs) -> anyhow::Result<()> {
    let r = cmd_export(a)?;
    // The peers' figures (bench/PEERS.md, quoted) are for ref-cnn only.
    let ref_cnn = r.reference_cnn;
    let peer = |t: &'static str| if ref_cnn { t } else { "" };
    println!(
        "wrote {} ({} bytes{})",
        r.out.display(),
        r.blob_bytes,
        peer("; TFLite int8 file of ref-cnn: 13,688")
    );
    println!(
        "planned arena {} bytes{}, {} MACs",
        r.arena_bytes,
        peer(" (TFLite Micro: 10,080)"),
        r.macs
    );
    println!(
        "test accuracy on {} images: float {:.2}%, int8 {:.2}%, top-1 agreement {:.2}%, max |logit diff| {:.4}",
        r.test_images, r.float_accuracy * 100.0, r.int8_accuracy * 100.0, r.top1_agreement * 100.0, r.max_abs_logit_diff
    );
    if r.int8_map50 > 0.0 {
        println!(
            "detection on {} canvases: mAP@0.5 float {:.3}, int8 {:.3}; mAP@[.5:.95] float {:.3}, int8 {:.3}",
            r.test_images, r.float_map50, r.int8_map50, r.float_map_coco, r.int8_map_coco
        );
    }
    if r.int8_mean_iou > 0.0 {
        println!(
            "mean IoU of boxes: float {:.3}, int8 {:.3}",
            r.float_mean_iou, r.int8_mean_iou
        );
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
