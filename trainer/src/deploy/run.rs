//! What the commands that run a blob share: reading it, the firmware's test-vector file, and
//! the built-in architecture whose data a blob's kind uses.

use crate::data::Dataset;
use crate::nn::arch::ArchSpec;
use anyhow::Context;
use std::path::Path;

/// Firmware test-vector file: u32 LE count, u32 LE bytes per input, then the int8 inputs
/// quantized with the model's input parameters (the first `count` images of `data`).
pub fn test_vectors(blob: &[u8], data: &Dataset, count: usize) -> anyhow::Result<Vec<u8>> {
    let m = runtime::Model::from_bytes(blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(test_vectors_for(&m, data, count))
}

/// [`test_vectors`] for an already loaded model.
pub fn test_vectors_for(m: &runtime::Model, data: &Dataset, count: usize) -> Vec<u8> {
    let n = count.min(data.len());
    let len = m.input_len();
    let mut raw = Vec::with_capacity(n * len);
    let mut x = vec![0i8; len];
    for i in 0..n {
        crate::deploy::export::quantize_image(data.image(i), m.def().input.quant, &mut x);
        raw.extend(x.iter().map(|&v| v as u8));
    }
    crate::deploy::device::vector_file(len, &raw)
}

pub fn read_blob(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read model blob {}", path.display()))
}

/// The built-in architecture whose data a loaded model's kind uses: ref-cnn (with the model's
/// class count) for a classifier, loc-cnn for a localizer, grid-det for a grid detector.
pub fn builtin_arch_for(m: &runtime::Model) -> ArchSpec {
    match m.def().head {
        runtime::format::Head::Classifier { classes } => ArchSpec {
            classes: classes as usize,
            ..ArchSpec::ref_cnn()
        },
        runtime::format::Head::Localizer { .. } => ArchSpec::loc_cnn(),
        runtime::format::Head::GridDetector { .. } => ArchSpec::grid_det(),
    }
}
