//! `trainer export --format tflite`: the `.tflite` of every built-in architecture, imported
//! back, computes byte for byte what the blob `export --rounding tflite` writes from the same
//! quantized graph (the importer is the one that is bit-exact with TensorFlow Lite Micro on
//! TFLM's own outputs, `tflite.rs` and `mlperf.rs`).

#[path = "support/perturbed.rs"]
mod support;

use support::perturbed;
use trainer::data::source::DataSource;
use trainer::deploy::export::{quantize_graph, run_int8, write_quantized};
use trainer::deploy::tflite::{import_with, write::write_tflite};
use trainer::nn::arch::{arch_from, ArchSpec};

/// The blob and the `.tflite` imported back: equal outputs on 16 test images, which differ
/// from one another (a constant model would prove little); the same MACs.
fn round_trip(arch: ArchSpec) {
    let name = arch.name.clone();
    let (train, test) = DataSource::default().load_for(&arch).unwrap();
    let m = perturbed(arch, 11);
    let qz = quantize_graph(&m, &train.slice(0..64), 64).unwrap();
    let blob = write_quantized(&m.arch, &qz, runtime::Rounding::Double).unwrap();
    let tflite = write_tflite(&name, m.arch.input, &qz).unwrap();
    let (back, _) = import_with(&tflite, &name, false, &[]).unwrap();
    let load = |b: &[u8]| runtime::Model::from_bytes(b).unwrap().macs();
    assert_eq!(load(&blob), load(&back), "{name}: MACs");
    let test = test.slice(0..16);
    let m1 = runtime::Model::from_bytes(&blob).unwrap();
    let m2 = runtime::Model::from_bytes(&back).unwrap();
    let (ours, theirs) = (run_int8(&m1, &test).unwrap(), run_int8(&m2, &test).unwrap());
    assert_eq!(ours, theirs, "{name}");
    assert!(
        ours.iter().any(|o| *o != ours[0]),
        "{name}: every output alike"
    );
}

/// The committed exports (`scripts/export-fixtures.py`): the built-in classifiers, then the
/// example file whose stride-2 convolutions need a PAD.
const EXPORTED: [&str; 7] = [
    "ref-cnn",
    "tiny-resnet",
    "tiny-inception",
    "ds-cnn",
    "resnet-8",
    "mobilenet-v1-32",
    "ds-cnn-28x28",
];

#[test]
fn builtin_architectures_round_trip_through_tflite() {
    for name in EXPORTED.iter().take(6).chain(&["loc-cnn", "grid-det"]) {
        round_trip(arch_from(name).unwrap());
    }
}

/// The example architecture files: stride-2 convolutions whose symmetric padding is neither
/// SAME nor VALID (a PAD before them), SAME padding, non-square kernels.
#[test]
fn example_architectures_round_trip_through_tflite() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/arch");
    for f in ["ds-cnn-28x28.toml", "cnn-32x32.toml"] {
        round_trip(arch_from(root.join(f).to_str().unwrap()).unwrap());
    }
}

/// MobileNetV1 0.25 at 96x96x3, MLPerf Tiny's visual wake words network.
#[test]
fn mobilenet_v1_round_trips_through_tflite() {
    round_trip(arch_from("mobilenet-v1").unwrap());
}

/// The committed exports (`scripts/export-fixtures.py`: each built-in classifier trained one
/// epoch, exported with `--format tflite`) run in TensorFlow Lite Micro's interpreter gave the
/// committed outputs; the runtime, importing the same files, gives the same bytes.
#[test]
fn exported_files_run_as_in_tensorflow_lite_micro() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/export");
    let read = |name: &str, ext: &str| std::fs::read(dir.join(format!("{name}.{ext}"))).unwrap();
    for name in EXPORTED {
        let (blob, _) = import_with(&read(name, "tflite"), name, false, &[]).unwrap();
        let m = runtime::Model::from_bytes(&blob).unwrap();
        let (inputs, want) = (read(name, "inputs.bin"), read(name, "tflm.bin"));
        let mut arena = vec![0u8; m.arena_bytes()];
        let mut it = runtime::Interpreter::new(&m, &mut arena).unwrap();
        let mut got = Vec::new();
        for x in inputs.chunks_exact(m.input_len()) {
            for (d, &s) in it.input_mut().iter_mut().zip(x) {
                *d = s as i8;
            }
            it.invoke().unwrap();
            got.extend(it.output().iter().map(|&v| v as u8));
        }
        assert_eq!(got.len(), want.len(), "{name}");
        assert_eq!(got, want, "{name}: the runtime differs from TFLM");
    }
}
