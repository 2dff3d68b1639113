//! `trainer import`: a fully-int8 `.tflite` to the runtime's blob (library call
//! `deploy::tflite::cmd_import`), then the blob's `inspect` table.

use crate::deploy::tflite::{cmd_import, ImportArgs};

pub fn run(a: &ImportArgs) -> anyhow::Result<()> {
    let r = cmd_import(a)?;
    print!("{}", r.table);
    println!(
        "wrote {} ({} bytes; the .tflite is {} bytes): {} layers, arena {} bytes, {} MACs, TensorFlow Lite rounding",
        r.out.display(),
        r.blob_bytes,
        r.tflite_bytes,
        r.layers,
        r.arena_bytes,
        r.macs
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
