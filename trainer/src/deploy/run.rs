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
/// `None` for a model that names its classes (the built-in data is not its data) or outputs
/// values.
pub fn builtin_arch_for(m: &runtime::Model) -> Option<ArchSpec> {
    use runtime::format::Head;
    if !m.def().labels.is_empty() {
        return None;
    }
    match m.def().head {
        Head::Classifier { classes } => Some(ArchSpec {
            classes: classes as usize,
            ..ArchSpec::ref_cnn()
        }),
        Head::Localizer { .. } => Some(ArchSpec::loc_cnn()),
        Head::GridDetector { .. } => Some(ArchSpec::grid_det()),
        Head::Values { .. } => None,
    }
}

/// A model's class names for a message: "a, b, c" (the first eight, then how many more).
pub fn class_list(m: &runtime::Model) -> String {
    let names: Vec<&str> = m.def().label_names().collect();
    let mut s = names.iter().take(8).copied().collect::<Vec<_>>().join(", ");
    if names.len() > 8 {
        s += &format!(" and {} more", names.len() - 8);
    }
    s
}

/// A model that names its classes runs only data whose class folders have those names, in
/// that order (data that names none, an IDX set, is taken as it is).
pub fn check_data_classes(m: &runtime::Model, data: &crate::data::Dataset) -> anyhow::Result<()> {
    crate::data::source::same_classes(m.def().label_names(), &data.class_names)
}
