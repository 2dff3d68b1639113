//! The runtime on a host, as a user embeds it: the committed ref-cnn blob (an MNIST digit
//! classifier) on a hand-drawn "1", real values in and out.
//!
//! `cargo run --release -p runtime --features std --example host`

use runtime::{Interpreter, Model};

/// A model blob as `trainer export` or `trainer import` wrote it.
static BLOB: &[u8] = include_bytes!("../../firmware/models/ref-cnn.bin");

fn main() -> Result<(), runtime::Error> {
    // Checks everything `invoke` relies on, once: magic, version, CRC, every length, shape
    // and limit.
    let model = Model::from_bytes(BLOB)?;
    let spec = model.def().input.shape;
    println!(
        "model '{}': input {}x{}x{}, {} MACs, arena {} B",
        model.def().name,
        spec.h,
        spec.w,
        spec.c,
        model.macs(),
        model.arena_bytes()
    );
    // The caller owns the memory: here a Vec, on a device a static buffer.
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut interp = Interpreter::new(&model, &mut arena)?;

    // A vertical stroke in the middle of a 28x28 image, pixel values in [0, 1].
    let mut image = vec![0.0f32; model.input_len()];
    for y in 5..23 {
        for x in 13..16 {
            image[y * 28 + x] = 1.0;
        }
    }
    interp.set_input_f32(&image)?;
    interp.invoke()?;
    let mut logits = vec![0.0f32; model.output_len()];
    interp.output_f32(&mut logits)?;
    let best = runtime::argmax(interp.output()).unwrap_or(0);
    println!("logits {logits:.2?}\nclass {best}");
    Ok(())
}
