//! MLPerf Tiny's four reference models in the firmware: on the emulated Cortex-M4 and on every
//! other emulated core whose board holds them, the device's bytes equal TensorFlow Lite
//! Micro's (`trainer/tests/fixtures/mlperf/`, made by `scripts/mlperf-fixtures.py`).

use tests::*;

/// `(model, inputs run in the default suite)`: keyword spotting's first 100 official inputs
/// here, all 1,000 in the ignored test below.
const MODELS: [(&str, usize); 4] = [
    ("ad01_int8", 16),
    ("kws_ref_model", 100),
    ("pretrainedResnet_quant", 16),
    ("vww_96_int8", 16),
];

struct Fixture {
    blob: Vec<u8>,
    inputs: Vec<u8>,
    tflm: Vec<Vec<i8>>,
    input_len: usize,
}

fn fixture(name: &str) -> Fixture {
    let dir = repo_root().join("trainer/tests/fixtures/mlperf");
    let read = |ext: &str| {
        let p = dir.join(format!("{name}.{ext}"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let blob = trainer::deploy::tflite::import(&read("tflite"), name).unwrap();
    let (input_len, output_len) = {
        let m = runtime::Model::from_bytes(&blob).unwrap();
        (m.input_len(), m.output_len())
    };
    let tflm = read("tflm.bin")
        .chunks_exact(output_len)
        .map(|c| c.iter().map(|&b| b as i8).collect())
        .collect();
    Fixture {
        blob,
        inputs: read("inputs.bin"),
        tflm,
        input_len,
    }
}

/// Builds `name` with its first `n` inputs for `board`, runs it, and checks every output
/// against TFLM's; returns the instructions of the first inference.
fn run_on(board: &str, name: &str, n: usize) -> u64 {
    let f = fixture(name);
    let n = n.min(f.tflm.len());
    let dir = temp_dir(&format!("mlperf-{board}-{name}"));
    std::fs::write(dir.join("model.bin"), &f.blob).unwrap();
    let inputs = vector_file(f.input_len, &f.inputs[..n * f.input_len]);
    std::fs::write(dir.join("inputs.bin"), inputs).unwrap();
    let elf = build_firmware_for(board, &dir.join("model.bin"), &dir.join("inputs.bin"), &dir)
        .unwrap_or_else(|e| panic!("{name} on {board}: {e:#}"));
    let run = run_qemu_on(board, &elf).unwrap();
    assert_eq!(run.status, 0, "{name} on {board}: {}", run.stdout);
    assert_eq!(run.outputs.len(), n, "{name} on {board}");
    for (i, (ours, tflm)) in run.outputs.iter().zip(&f.tflm).enumerate() {
        assert_eq!(ours, tflm, "{name} on {board}: input {i} differs from TFLM");
    }
    let stack = run.stack.unwrap_or(usize::MAX);
    assert!(stack <= 2048, "{name} on {board}: peak stack {stack} B");
    let _ = std::fs::remove_dir_all(&dir);
    run.insns.first().copied().unwrap_or(0)
}

/// The Cortex-M4 (mps2-an386), the board MLPerf Tiny's results are compared on.
#[test]
fn mlperf_tiny_models_equal_tflite_micro_on_the_cortex_m4() {
    for (name, n) in MODELS {
        let insns = run_on("mps2-an386", name, n);
        eprintln!("{name}: {insns} instructions on the emulated Cortex-M4");
        assert!(insns > 0, "{name}: no instruction count");
    }
}

/// The other emulated cores whose memory holds the models (the micro:bit's 16 KiB of RAM
/// holds none of them): M3 and M7 (no M4 DSP path on the M3), M33 and M55, four inputs each.
#[test]
#[ignore = "long: 16 firmware builds and runs; CI runs it"]
fn mlperf_tiny_models_equal_tflite_micro_on_every_core_that_holds_them() {
    let boards: Vec<_> = trainer::deploy::device::boards()
        .unwrap()
        .into_iter()
        .filter(|b| b.emulated && !["mps2-an386", "microbit"].contains(&b.name.as_str()))
        .map(|b| b.name)
        .collect();
    assert!(
        boards.len() >= 4,
        "the registry lost emulated boards: {boards:?}"
    );
    for board in boards.iter().map(String::as_str) {
        for (name, _) in MODELS {
            run_on(board, name, 4);
        }
    }
}

/// All 1,000 official keyword-spotting inputs on the emulated Cortex-M4.
#[test]
#[ignore = "long: 1,000 inferences in QEMU; CI runs it"]
fn keyword_spotting_all_official_inputs_on_the_cortex_m4() {
    run_on("mps2-an386", "kws_ref_model", 1000);
}
