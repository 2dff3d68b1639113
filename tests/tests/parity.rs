//! Host-side parity: the float trainer vs the int8 runtime (within a stated tolerance), and the
//! host runtime vs the firmware running in QEMU (bit for bit).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tests::*;
use trainer::data::source::DataSource;
use trainer::deploy::export::quantize;
use trainer::deploy::run::test_vectors;
use trainer::nn::arch::ArchSpec;
use trainer::nn::model::Model;
use trainer::train::{train_silent, TrainConfig};

/// A briefly trained model (parity does not depend on accuracy), exported, with `n` test
/// inputs run on the host runtime and in QEMU, raw outputs already compared bit for bit.
struct OnDevice {
    model: Model,
    test_set: trainer::data::Dataset,
    blob: Vec<u8>,
    host: Vec<Vec<i8>>,
    run: DeviceRun,
}

/// A briefly trained model of `arch`, exported, and `n` of its test inputs as a vector file.
fn export_brief(
    arch: ArchSpec,
    train_images: usize,
    epochs: usize,
    n: usize,
    seed: u64,
) -> (Model, trainer::data::Dataset, Vec<u8>, Vec<u8>) {
    let (train_set, test_set) = DataSource::default().load_for(&arch).unwrap();
    let mut model = Model::new(arch, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
    let cfg = TrainConfig {
        epochs,
        seed,
        ..TrainConfig::default()
    };
    let sub = train_set.slice(0..train_images.min(train_set.len()));
    train_silent(&mut model, &sub, &test_set.slice(0..50), &cfg).unwrap();
    let blob = quantize(&model, &train_set, 300).unwrap();
    let vectors = test_vectors(&blob, &test_set, n).unwrap();
    (model, test_set, blob, vectors)
}

fn export_and_run(
    arch: ArchSpec,
    train_images: usize,
    epochs: usize,
    n: usize,
    seed: u64,
) -> OnDevice {
    let dir = temp_dir(&format!("parity-{}", arch.name));
    let (model, test_set, blob, vectors) = export_brief(arch, train_images, epochs, n, seed);
    std::fs::write(dir.join("model.bin"), &blob).unwrap();
    std::fs::write(dir.join("inputs.bin"), &vectors).unwrap();
    let host = host_outputs(&blob, &read_vectors(&vectors).unwrap()).unwrap();
    let run =
        run_qemu(&build_firmware(&dir.join("model.bin"), &dir.join("inputs.bin"), &dir).unwrap())
            .unwrap();
    assert_eq!(run.status, 0, "QEMU exit status; output:\n{}", run.stdout);
    assert_eq!(run.error, None);
    assert_eq!(run.done, Some(n), "DONE line; output:\n{}", run.stdout);
    if let Some(m) = first_mismatch(&host, &run.outputs) {
        panic!("device differs from host runtime: {m}");
    }
    let stack = run.stack.unwrap_or(usize::MAX);
    assert!(
        stack <= STACK_BUDGET,
        "{}: peak stack {stack} B",
        dir.display()
    );
    OnDevice {
        model,
        test_set,
        blob,
        host,
        run,
    }
}

/// ref-cnn trained for two epochs: 100 test images bit-exact on the device, int8 close to float.
#[test]
fn fresh_export_is_bit_exact_on_the_device_and_close_to_float() {
    let OnDevice {
        mut model,
        test_set,
        blob,
        host,
        run,
    } = export_and_run(ArchSpec::ref_cnn(), 8000, 2, 100, 7);
    assert_eq!(run.insns.len(), 100, "one INSN line per image");
    assert!(run.stack.is_some_and(|s| s > 0), "STACK line");

    // Float vs int8. Tolerance: top-1 agrees on at least 97 of 100 images, and every
    // dequantized logit is within 10% of the float logits' range of the float value.
    let rt = runtime::Model::from_bytes(&blob).unwrap();
    let q = rt.def().output.quant;
    let (x, _) = test_set.batch(&(0..100).collect::<Vec<_>>());
    let float = model.predict(x);
    let lo = float.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = float.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let tol = 0.10 * (hi - lo);
    let mut agree = 0;
    for (i, row) in float.outer_iter().enumerate() {
        let f: Vec<f32> = row.iter().copied().collect();
        agree +=
            (trainer::data::metrics::argmax_f32(&f) == runtime::argmax(&host[i]).unwrap()) as usize;
        for (c, (&qv, &fv)) in host[i].iter().zip(&f).enumerate() {
            let d = (q.dequantize(qv) - fv).abs();
            assert!(
                d <= tol,
                "image {i} class {c}: int8 {} vs float {fv} differs by {d} > {tol}",
                q.dequantize(qv)
            );
        }
    }
    assert!(agree >= 97, "top-1 agreement float vs int8: {agree}/100");
}

/// Peak stack every built-in model must stay within on the device (the model's table is a
/// static; the kernels' scratch is in the arena).
const STACK_BUDGET: usize = 2048;

/// [`STACK_BUDGET`] for Armv6-M code (the M0/M0+ instruction set): no DSP path and eight low
/// registers, so the kernels spill more (the grid detector peaks at 2,148 B there).
const STACK_BUDGET_V6M: usize = 2304;

/// The committed default model and inputs (what `cargo run` in firmware/ embeds). Also its RAM
/// on the device: peak stack within [`STACK_BUDGET`], and all of RAM (statics, the arena
/// among them, plus the stack) within 6 KiB.
#[test]
fn default_firmware_model_is_bit_exact() {
    let dir = temp_dir("default");
    let root = repo_root();
    let model = root.join("firmware/models/ref-cnn.bin");
    let inputs = root.join("firmware/models/test-inputs.bin");
    let blob = std::fs::read(&model).unwrap();
    let host = host_outputs(
        &blob,
        &read_vectors(&std::fs::read(&inputs).unwrap()).unwrap(),
    )
    .unwrap();
    let elf = build_firmware(&model, &inputs, &dir).unwrap();
    let run = run_qemu(&elf).unwrap();
    assert_eq!(run.status, 0, "{}", run.stdout);
    let stack = run.stack.unwrap_or(usize::MAX);
    let (_, ram_static) = trainer::deploy::device::firmware_size(&elf).unwrap();
    assert!(stack <= STACK_BUDGET, "peak stack {stack} B");
    assert!(
        ram_static as usize + stack <= 6 * 1024,
        "RAM {ram_static} B static + {stack} B stack"
    );
    if let Some(m) = first_mismatch(&host, &run.outputs) {
        panic!("device differs from host runtime: {m}");
    }
    assert_eq!(run.outputs.len(), host.len());
    // The profiling inference: one LAYER line per layer, in order, named after the layer, and
    // together they account for the whole inference (each adds one counter reading, at most
    // 40 instructions of SysTick resolution per line).
    let kinds: Vec<_> = run.layers.iter().map(|l| (l.0, l.1.as_str())).collect();
    let want: Vec<_> = runtime::decode_def(&blob)
        .unwrap()
        .layers
        .iter()
        .enumerate()
        .map(|(k, n)| (k, n.layer.name()))
        .collect();
    assert_eq!(kinds, want);
    let sum: u64 = run.layers.iter().map(|l| l.2).sum();
    let insn = run.insns[0];
    assert!(
        sum.abs_diff(insn) <= 100 * run.layers.len() as u64 + 200,
        "layer sum {sum} vs INSN {insn}"
    );
}

/// A corrupted blob must give the runtime's error on the device and a non-zero exit, not a
/// hang or a HardFault.
#[test]
fn corrupted_blob_is_an_error_on_the_device() {
    let dir = temp_dir("corrupt");
    let root = repo_root();
    let mut blob = std::fs::read(root.join("firmware/models/ref-cnn.bin")).unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 0x40; // a weight byte: only the CRC can notice
    std::fs::write(dir.join("bad.bin"), &blob).unwrap();
    let elf = build_firmware(
        &dir.join("bad.bin"),
        &root.join("firmware/models/test-inputs.bin"),
        &dir,
    )
    .unwrap();
    let run = run_qemu(&elf).unwrap();
    assert_eq!(
        run.status, 2,
        "expected the ERR exit status 2; output:\n{}",
        run.stdout
    );
    let err = run.error.unwrap_or_default();
    assert!(err.contains("CrcMismatch"), "device error: {err}");
    assert!(run.outputs.is_empty());
}

/// The graph models (residual adds, concats, a padded max-pool, a branching arena plan) and the
/// depthwise-separable example (trained depthwise convolutions, ReLU6 clamps): 100 test images
/// bit-exact on the device. One epoch on 2,000 images: parity does not depend on accuracy, but
/// the activations must not be degenerate, so the int8 argmax must vary.
#[test]
fn graph_models_are_bit_exact_on_the_device() {
    let ds =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/arch/ds-cnn-28x28.toml");
    for (arch, seed) in [
        (ArchSpec::tiny_resnet(), 8),
        (ArchSpec::tiny_inception(), 9),
        (ArchSpec::from_file(&ds).unwrap(), 10),
    ] {
        let name = arch.name.clone();
        let d = export_and_run(arch, 2000, 1, 100, seed);
        assert_eq!(d.run.outputs.len(), 100, "{name}");
        let classes: std::collections::BTreeSet<usize> =
            d.host.iter().filter_map(|o| runtime::argmax(o)).collect();
        assert!(
            classes.len() >= 5,
            "{name}: predictions collapse to {classes:?}"
        );
    }
}

/// A localization model (class + box head): raw outputs and decoded boxes bit-exact.
#[test]
fn localization_boxes_are_bit_exact_on_the_device() {
    let d = export_and_run(ArchSpec::loc_cnn(), 640, 1, 40, 5);
    let host_boxes = host_boxes(&d.blob, &d.host).unwrap();
    assert_eq!(host_boxes.len(), 40);
    assert_eq!(
        d.run.boxes, host_boxes,
        "decoded boxes differ between device and host"
    );
}

/// A grid detector: raw outputs and the decoded, NMS-filtered detections bit-exact. The
/// decoder must have something to report, so the test also requires some detections.
#[test]
fn grid_detections_are_bit_exact_on_the_device() {
    let d = export_and_run(ArchSpec::grid_det(), 1280, 1, 30, 6);
    let host_dets = host_detections(&d.blob, &d.host).unwrap();
    assert!(
        !host_dets.is_empty(),
        "the briefly trained detector reports nothing"
    );
    assert_eq!(
        d.run.detections, host_dets,
        "detections differ between device and host"
    );
}

/// The MPU guard (1 KiB, `firmware/src/stack.rs`) catches an overflow only if no function's
/// frame is larger: a bigger frame's first store could land below the guard, in the statics.
/// Every function of the M4 firmware is read from the disassembly; the largest frame must
/// leave room under 1 KiB. A firmware links only its model's kernels, so this one embeds a
/// blob the runtime refuses (ref-cnn with its CRC broken): `build.rs` then links every kernel,
/// and the device reports the blob's error.
#[test]
fn no_stack_frame_can_jump_the_guard() {
    let root = repo_root();
    let dir = temp_dir("frames");
    let mut blob = std::fs::read(root.join("firmware/models/ref-cnn.bin")).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 0x55;
    assert!(runtime::Model::from_bytes(&blob).is_err());
    let refused = dir.join("refused.bin");
    std::fs::write(&refused, &blob).unwrap();
    let elf = build_firmware(
        &refused,
        &root.join("firmware/models/test-inputs.bin"),
        &dir,
    )
    .unwrap();
    // Every kind's kernel is in: the depthwise and softmax kernels, which ref-cnn lacks.
    let syms = std::process::Command::new("arm-none-eabi-nm")
        .args(["-C"])
        .arg(&elf)
        .output()
        .expect("arm-none-eabi-nm");
    let syms = String::from_utf8_lossy(&syms.stdout);
    for k in ["depthwise_3x3", "softmax::softmax", "pool::mean"] {
        assert!(syms.contains(k), "{k} is not linked");
    }
    let out = std::process::Command::new("arm-none-eabi-objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(&elf)
        .output()
        .expect("arm-none-eabi-objdump (binutils-arm-none-eabi, installed by scripts/test.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut function, mut largest) = (String::new(), (0u32, String::new()));
    let mut frames = 0;
    for line in text.lines() {
        if line.ends_with(">:") {
            function = line.to_string();
            continue;
        }
        // `sub sp, #N`, `sub.w sp, sp, #N`, `subw sp, sp, #N`: a frame of N bytes.
        let mut fields = line.split('\t').skip(1);
        let (Some(op), Some(args)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !op.starts_with("sub") || !args.starts_with("sp,") {
            continue;
        }
        let n = args
            .split('#')
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(n) = n {
            frames += 1;
            if n > largest.0 {
                largest = (n, function.clone());
            }
        }
    }
    assert!(
        frames > 20,
        "read {frames} frames: the disassembly was not parsed"
    );
    assert!(
        largest.0 + 64 <= 1024,
        "the largest frame, {} B in {}, can jump the 1 KiB stack guard",
        largest.0,
        largest.1
    );
    println!("largest frame: {} B in {}", largest.0, largest.1);
}

/// A stack that outgrows its space faults at the guard above the statics (where the arena
/// lives) and reports it, instead of silently corrupting them: the MPU on the M4, the stack
/// limit register MSPLIM on the Armv8-M cores (M33; the M55 build shares its code).
#[test]
fn stack_overflow_is_a_clean_fault() {
    let root = repo_root();
    for board in ["mps2-an386", "mps2-an505"] {
        let dir = temp_dir(&format!("overflow-{board}"));
        let elf = trainer::deploy::device::build_firmware_with(
            board,
            &["overflow-test"],
            &root.join("firmware/models/ref-cnn.bin"),
            &root.join("firmware/models/test-inputs.bin"),
            &dir,
        )
        .unwrap();
        let run = run_qemu_on(board, &elf).unwrap();
        assert_eq!(run.status, 103, "{board}: {}", run.stdout);
        assert!(
            run.error
                .as_deref()
                .is_some_and(|e| e.starts_with("STACK OVERFLOW")),
            "{board}: {}",
            run.stdout
        );
        assert!(run.outputs.is_empty(), "it faults before any inference");
    }
}

/// Every core QEMU emulates besides the M4 (microbit M0, mps2-an385 M3, mps2-an500 M7,
/// mps2-an505 M33, mps3-an547 M55): the committed ref-cnn on its 100 test images, a graph model
/// (tiny-resnet) and a detector (grid-det, decoded detections included) bit-exact with the host
/// runtime. A model that does not fit a board's RAM must be refused by the build with the
/// figures, never run half-way; only the 16 KiB micro:bit may refuse.
#[test]
#[ignore = "builds the firmware for five more cores (a few minutes cold); CI runs it"]
fn every_core_is_bit_exact() {
    let root = repo_root();
    let ref_blob = std::fs::read(root.join("firmware/models/ref-cnn.bin")).unwrap();
    let ref_vectors = std::fs::read(root.join("firmware/models/test-inputs.bin")).unwrap();
    let (_, _, resnet, resnet_vectors) = export_brief(ArchSpec::tiny_resnet(), 2000, 1, 20, 8);
    let (_, _, det, det_vectors) = export_brief(ArchSpec::grid_det(), 1280, 1, 10, 6);
    let models = [
        ("ref-cnn", ref_blob, ref_vectors),
        ("tiny-resnet", resnet, resnet_vectors),
        ("grid-det", det, det_vectors),
    ];
    // Every emulated board of the registry (firmware/boards/*/board.env) but the M4's, which
    // the other tests cover: a board added there is tested here with no change.
    let boards: Vec<_> = trainer::deploy::device::boards()
        .unwrap()
        .into_iter()
        .filter(|b| b.emulated && b.name != "mps2-an386")
        .map(|b| b.name)
        .collect();
    assert!(
        boards.len() >= 5,
        "the registry lost emulated boards: {boards:?}"
    );
    for board in boards.iter().map(String::as_str) {
        for (name, blob, vectors) in &models {
            let dir = temp_dir(&format!("core-{board}-{name}"));
            std::fs::write(dir.join("model.bin"), blob).unwrap();
            std::fs::write(dir.join("inputs.bin"), vectors).unwrap();
            let elf = match build_firmware_for(
                board,
                &dir.join("model.bin"),
                &dir.join("inputs.bin"),
                &dir,
            ) {
                Ok(elf) => elf,
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(
                        board == "microbit" && msg.contains("does not fit board microbit"),
                        "{board} {name}: {msg}"
                    );
                    assert!(
                        msg.contains("arena") && msg.contains("B of RAM exceeds"),
                        "{msg}"
                    );
                    eprintln!("{board} {name}: does not fit (the build says so)");
                    continue;
                }
            };
            let run = run_qemu_on(board, &elf).unwrap();
            assert_eq!(run.status, 0, "{board} {name}: {}", run.stdout);
            let inputs = read_vectors(vectors).unwrap();
            let host = host_outputs(blob, &inputs).unwrap();
            assert_eq!(run.outputs.len(), inputs.len(), "{board} {name}");
            if let Some(m) = first_mismatch(&host, &run.outputs) {
                panic!("{board} {name}: device differs from host runtime: {m}");
            }
            if *name == "grid-det" {
                assert_eq!(
                    run.detections,
                    host_detections(blob, &host).unwrap(),
                    "{board}: detections"
                );
            }
            let stack = run.stack.unwrap_or(usize::MAX);
            let v6m = ["microbit", "mps2-an385-v6m"].contains(&board);
            let budget = if v6m { STACK_BUDGET_V6M } else { STACK_BUDGET };
            assert!(stack <= budget, "{board} {name}: peak stack {stack} B");
            eprintln!(
                "{board} {name}: {} inputs bit-exact, {} instructions per inference, stack {stack} B",
                run.outputs.len(),
                run.insns.first().copied().unwrap_or(0)
            );
        }
    }
}

/// `trainer device` builds in a folder per call (`trainer-device-PID-N`); the tests that call
/// it take turns so that one's check of what is left in the temporary directory does not see
/// another's folder.
static DEVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `trainer device` removes its build folder after an emulated run (it left about 2.5 MB in
/// the temporary directory per run), keeps it with `--keep-build`, and states the SysTick
/// resolution of the board it ran on (one instruction per nanosecond under QEMU: 40 at the
/// AN386's 25 MHz, 62.5 at the micro:bit's 16 MHz).
#[test]
fn device_cleans_up_and_states_its_boards_resolution() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    use trainer::commands::device::{cmd_device, DeviceArgs};
    let root = repo_root();
    let prefix = format!("trainer-device-{}-", std::process::id());
    let left = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .count()
    };
    let args = |board: &str, keep_build: bool| DeviceArgs {
        model: root.join("firmware/models/ref-cnn.bin"),
        board: board.into(),
        images: 1,
        data: Default::default(),
        keep_build,
        json: false,
    };
    let r = cmd_device(&args("mps2-an386", false)).unwrap();
    assert_eq!(r.bit_exact, 1);
    assert_eq!(left(), 0, "{prefix}* left behind");
    assert!(r.elf.is_none());
    assert!(r.to_text().contains("SysTick resolution 40 instructions"));

    let r = cmd_device(&args("microbit", true)).unwrap();
    let elf = r.elf.clone().expect("kept");
    let folder = elf.parent().unwrap().to_owned();
    assert!(elf.exists() && folder.to_string_lossy().contains(&prefix));
    assert!(r.to_text().contains("SysTick resolution 62.5 instructions"));
    std::fs::remove_dir_all(&folder).unwrap();
    assert_eq!(left(), 0);
}

/// Issue 33: `device` ran the bundled digits whatever `--data` said. A classifier's `--data`
/// now supplies its test images (said in the report, bit-exact on the device), and images of
/// another shape than the model's input are refused rather than replaced.
#[test]
fn device_runs_the_data_it_is_given() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    use trainer::commands::device::{cmd_device, DeviceArgs};
    let root = repo_root();
    let dir = std::env::temp_dir().join(format!("trainer-device-data-{}", std::process::id()));
    let folder = |side: u32| {
        let d = dir.join(format!("s{side}"));
        for class in ["a", "b"] {
            std::fs::create_dir_all(d.join(class)).unwrap();
            for i in 0..10u32 {
                let img = image::GrayImage::from_fn(side, side, |x, y| {
                    image::Luma([((x * 7 + y * 3 + i) % 256) as u8])
                });
                img.save(d.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        d
    };
    // As `--data DIR` with no count flags parses.
    let mut data = trainer::commands::data::DataArgs::default();
    (data.data, data.train_count, data.test_count) = (Some(folder(28)), None, None);
    let args = DeviceArgs {
        model: root.join("firmware/models/ref-cnn.bin"),
        board: "mps2-an386".into(),
        images: 3,
        data: data.clone(),
        keep_build: false,
        json: false,
    };
    let r = cmd_device(&args).unwrap();
    assert_eq!(r.bit_exact, 3);
    let text = r.to_text();
    assert!(
        text.contains(&format!(
            "classified as labelled on the device: {} / 3",
            r.correct.unwrap()
        )),
        "{text}"
    );
    assert!(
        text.contains("the first 3 test images of") && text.contains("s28"),
        "{text}"
    );
    data.data = Some(folder(32));
    let e = cmd_device(&DeviceArgs { data, ..args })
        .unwrap_err()
        .to_string();
    assert!(e.contains("32x32x1") && e.contains("[28, 28, 1]"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 33: the micro:bit's fit refusal named the build folder's copy of the model
/// (`/tmp/trainer-device-PID/model.bin`) instead of the user's file, and listed the
/// flash-resident model inside its RAM sum.
#[test]
fn fit_refusal_names_the_users_model() {
    let _turn = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    use trainer::commands::device::{cmd_device, DeviceArgs};
    let root = repo_root();
    let tflite =
        std::fs::read(root.join("trainer/tests/fixtures/mlperf/kws_ref_model.tflite")).unwrap();
    let blob = trainer::deploy::tflite::import(&tflite, "kws").unwrap();
    let path = std::env::temp_dir().join(format!("kws-{}.bin", std::process::id()));
    std::fs::write(&path, blob).unwrap();
    let e = cmd_device(&DeviceArgs {
        model: path.clone(),
        board: "microbit".into(),
        images: 1,
        data: Default::default(),
        keep_build: false,
        json: false,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not fit board microbit"), "{e}");
    assert!(e.contains(&format!("Model: {}", path.display())), "{e}");
    assert!(!e.contains("trainer-device-"), "{e}");
    // The sum is RAM's alone: the flash-resident model is named apart from it.
    assert!(e.contains(") stays in flash"), "{e}");
    assert!(!e.contains("in flash) +"), "{e}");
    std::fs::remove_file(&path).unwrap();
}
