//! `trainer detect`: a detection model on the test canvases, float and int8, as a table.

use crate::report::detect::{cmd_detect, DetectArgs};

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
