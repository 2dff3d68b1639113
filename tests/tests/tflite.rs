//! Imported `.tflite` models on the emulated Cortex-M4: the firmware's bytes equal TensorFlow
//! Lite Micro's (committed by `scripts/tflite-fixtures.py`) on every committed input.

use tests::*;

const MODELS: [&str; 4] = ["ref-cnn", "mobilenet", "residual", "concat"];

#[test]
fn imported_models_equal_tflite_micro_on_the_device() {
    let fixtures = repo_root().join("trainer/tests/fixtures/tflite");
    for name in MODELS {
        let dir = temp_dir(&format!("tflite-{name}"));
        let read = |ext: &str| std::fs::read(fixtures.join(format!("{name}.{ext}"))).unwrap();
        let blob = trainer::deploy::tflite::import(&read("tflite"), name).unwrap();
        let m = runtime::Model::from_bytes(&blob).unwrap();
        let inputs = read("inputs.bin");
        let n = inputs.len() / m.input_len();
        std::fs::write(dir.join("model.bin"), &blob).unwrap();
        std::fs::write(dir.join("inputs.bin"), vector_file(m.input_len(), &inputs)).unwrap();
        let elf = build_firmware(&dir.join("model.bin"), &dir.join("inputs.bin"), &dir).unwrap();
        let run = run_qemu(&elf).unwrap();
        assert_eq!(run.status, 0, "{name}: {}", run.stdout);
        let tflm: Vec<Vec<i8>> = read("tflm.bin")
            .chunks_exact(m.output_len())
            .map(|c| c.iter().map(|&b| b as i8).collect())
            .collect();
        assert_eq!(run.outputs.len(), n, "{name}");
        assert_eq!(run.outputs, tflm, "{name}: the device differs from TFLM");
        let stack = run.stack.unwrap_or(usize::MAX);
        assert!(stack <= 2048, "{name}: peak stack {stack} B");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
