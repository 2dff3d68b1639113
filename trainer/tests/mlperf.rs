//! MLPerf Tiny's four reference models, imported unchanged and run on the host runtime against
//! TensorFlow Lite Micro's outputs. The fixtures under `tests/fixtures/mlperf/` (the upstream
//! `.tflite` files, the keyword-spotting runner's 1,000 official inputs and TFLM's outputs)
//! were made by `scripts/mlperf-fixtures.py`; this suite only reads them.

use std::path::Path;
use trainer::deploy::tflite::{import, import_with};

/// The four reference models, by their upstream file stems.
const MODELS: [&str; 4] = [
    "ad01_int8",
    "kws_ref_model",
    "pretrainedResnet_quant",
    "vww_96_int8",
];

fn fixture(name: &str, ext: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mlperf")
        .join(format!("{name}.{ext}"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn rows(bytes: &[u8], n: usize) -> Vec<Vec<i8>> {
    assert_eq!(bytes.len() % n, 0);
    bytes
        .chunks_exact(n)
        .map(|c| c.iter().map(|&b| b as i8).collect())
        .collect()
}

/// The first index of the largest value (numpy's `argmax`, which scored TFLM's 90.1 %).
fn top1(v: &[i8]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// The host runtime's outputs on every committed input of `name`, and TFLM's.
fn outputs(name: &str) -> (Vec<Vec<i8>>, Vec<Vec<i8>>) {
    let blob = import(&fixture(name, "tflite"), name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    outputs_of(name, &blob)
}

/// `blob`'s outputs on every committed input of `name`, and TFLM's.
fn outputs_of(name: &str, blob: &[u8]) -> (Vec<Vec<i8>>, Vec<Vec<i8>>) {
    let m = runtime::Model::from_bytes(blob).unwrap();
    let xs = rows(&fixture(name, "inputs.bin"), m.input_len());
    let ours = trainer::deploy::device::host_outputs(blob, &xs).unwrap();
    let tflm = rows(&fixture(name, "tflm.bin"), m.output_len());
    assert_eq!(ours.len(), tflm.len(), "{name}");
    (ours, tflm)
}

/// All four import as upstream ships them (a -1 batch in the signatures, 25x5 and 8x8 average
/// pools, a 10x4 stride-2 first convolution, 1x1 stride-2 shortcuts, tensors read by two
/// operators, biases of 2^30 + 128 on dead channels, per-tensor fully connected layers,
/// SOFTMAX), and every output byte equals TFLM's on every input.
#[test]
fn mlperf_tiny_models_equal_tflite_micro_byte_for_byte() {
    for name in MODELS {
        let (ours, tflm) = outputs(name);
        let wrong: Vec<usize> = (0..ours.len()).filter(|&i| ours[i] != tflm[i]).collect();
        assert!(
            wrong.is_empty(),
            "{name}: {} of {} inputs differ from TFLM, first #{}: ours {:?}, TFLM {:?}",
            wrong.len(),
            ours.len(),
            wrong[0],
            ours[wrong[0]],
            tflm[wrong[0]]
        );
        // Not a vacuous comparison: the inputs lead to different outputs.
        let distinct: std::collections::HashSet<&Vec<i8>> = tflm.iter().collect();
        assert!(distinct.len() > 1, "{name}: every output is the same");
    }
}

/// Dead-channel elimination keeps every output byte of every input equal to TFLM's, and on
/// visual wake words removes at least the 971 output channels whose weights are all zero
/// (counted in the `.tflite` when the issue was filed; more go as dead channels chain through
/// depthwise layers), cutting its MACs and its blob.
#[test]
fn dead_channel_elimination_keeps_tflite_micros_outputs() {
    for name in MODELS {
        let tflite = fixture(name, "tflite");
        let (blob, notes) = import_with(&tflite, name, true, &[]).unwrap();
        let (ours, tflm) = outputs_of(name, &blob);
        assert!(
            ours == tflm,
            "{name}: outputs differ from TFLM after pruning"
        );
        let full = import(&tflite, name).unwrap();
        let load = |b| runtime::Model::from_bytes(b).unwrap();
        let (pruned_macs, full_macs) = (load(&blob).macs(), load(&full).macs());
        if name == "vww_96_int8" {
            assert!(notes.pruned.removed >= 971, "{:?}", notes.pruned);
            assert!(
                pruned_macs * 10 < full_macs * 6,
                "{pruned_macs} of {full_macs}"
            );
            assert!(
                blob.len() * 2 < full.len(),
                "{} of {} B",
                blob.len(),
                full.len()
            );
        } else if notes.pruned.removed == 0 {
            assert_eq!(blob, full, "{name}: nothing removed, yet another blob");
        }
    }
}

/// Keyword spotting on the MLPerf Tiny runner's 1,000 official inputs: 901 right (90.1 %),
/// the figure TFLM's reference kernels get and the fixture script recorded.
#[test]
fn keyword_spotting_top1_on_the_official_inputs_is_tflite_micros() {
    let (ours, tflm) = outputs("kws_ref_model");
    let labels = fixture("kws_ref_model", "labels.bin");
    assert_eq!(labels.len(), 1000);
    assert!(labels.iter().all(|&l| l < 12));
    let right = |outs: &[Vec<i8>]| {
        outs.iter()
            .zip(&labels)
            .filter(|(o, &l)| top1(o) == l as usize)
            .count()
    };
    let meta: serde_json::Value =
        serde_json::from_slice(&fixture("kws_ref_model", "json")).unwrap();
    let recorded = meta["tflm_top1"].as_f64().unwrap();
    assert_eq!(right(&tflm), (recorded * 1000.0).round() as usize);
    assert_eq!(right(&ours), 901);
}

/// Each arena is the live peak (no layout needs less), and its activations are the floor of
/// layer-by-layer execution, worked out by hand from the architectures:
/// - anomaly detection: the 640-byte input and the first 128-byte output;
/// - keyword spotting: two 25x5x64 maps (every block reads one and writes one);
/// - image classification: three 32x32x16 maps at the first residual add (its two inputs and
///   its output: the block's input is still read by the add);
/// - visual wake words: the first depthwise-separable block, 48x48x8 in and 48x48x16 out.
///
/// What the kernels' scratch adds on top is reported apart (`trainer bench tflite`).
#[test]
fn mlperf_arenas_sit_on_the_activation_floor() {
    let floors = [
        ("ad01_int8", 640 + 128),
        ("kws_ref_model", 2 * 25 * 5 * 64),
        ("pretrainedResnet_quant", 3 * 32 * 32 * 16),
        ("vww_96_int8", 48 * 48 * 8 + 48 * 48 * 16),
    ];
    for (name, floor) in floors {
        let blob = import(&fixture(name, "tflite"), name).unwrap();
        let f = runtime::Model::from_bytes(&blob).unwrap().arena_figures();
        assert_eq!(f.activation_peak_bytes, floor, "{name}");
        assert_eq!(
            f.arena_bytes, f.live_peak_bytes,
            "{name}: above the live peak"
        );
        assert!(f.arena_bytes >= floor, "{name}");
    }
}
