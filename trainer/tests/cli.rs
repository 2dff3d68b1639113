//! The CLI's failure modes: each bad input is a one-line error naming the problem and a
//! non-zero exit, and nothing is left half-written.

use std::path::{Path, PathBuf};
use std::process::Command;

fn trainer(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trainer-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist10k")
}

fn assert_fails(args: &[&str], needle: &str) {
    let (code, _, err) = trainer(args);
    assert_ne!(code, 0, "{args:?} should fail");
    assert!(
        err.contains(needle),
        "{args:?}: stderr does not mention '{needle}':\n{err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{args:?}: expected a one-line error, got:\n{err}"
    );
}

#[test]
fn corrupt_or_truncated_data_is_a_clear_error() {
    let d = tmp("data");
    let images = std::fs::read(data_dir().join("images-idx3-ubyte.gz")).unwrap();
    let labels = std::fs::read(data_dir().join("labels-idx1-ubyte.gz")).unwrap();
    // Truncated gzip stream.
    std::fs::write(d.join("images-idx3-ubyte.gz"), &images[..images.len() / 2]).unwrap();
    std::fs::write(d.join("labels-idx1-ubyte.gz"), &labels).unwrap();
    assert_fails(
        &[
            "train",
            "--epochs",
            "1",
            "--data",
            d.to_str().unwrap(),
            "--out",
            d.join("m.json").to_str().unwrap(),
        ],
        "images-idx3-ubyte.gz",
    );
    // Raw IDX, truncated payload.
    let mut raw = vec![0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28];
    raw.extend(vec![0u8; 100]);
    std::fs::remove_file(d.join("images-idx3-ubyte.gz")).unwrap();
    std::fs::write(d.join("images-idx3-ubyte"), &raw).unwrap();
    std::fs::write(
        d.join("labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    )
    .unwrap();
    std::fs::remove_file(d.join("labels-idx1-ubyte.gz")).unwrap();
    assert_fails(
        &["train", "--epochs", "1", "--data", d.to_str().unwrap()],
        "truncated",
    );
    assert_fails(&["train", "--data", "/nonexistent"], "/nonexistent");
    // A label the architecture has no output for is refused (it panicked in the loss once
    // class folders could set the head: IDX labels name no classes).
    let mut raw = vec![0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28];
    raw.extend(vec![0u8; 10 * 28 * 28]);
    std::fs::write(d.join("images-idx3-ubyte"), &raw).unwrap();
    std::fs::write(
        d.join("labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 12],
    )
    .unwrap();
    let data = d.to_str().unwrap();
    let (code, _, err) = trainer(&[
        "train",
        "--epochs",
        "1",
        "--data",
        data,
        "--batch-size",
        "4",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("the data has label 12, but 'ref-cnn' has 10 classes"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!d.join("m.json").exists());
}

#[test]
fn bad_architecture_file_names_the_layer() {
    let d = tmp("arch");
    let f = d.join("bad.toml");
    std::fs::write(
        &f,
        "name = 'bad'\ninput = [28, 28, 1]\nclasses = 10\n[[layers]]\ntype = 'conv2d'\nout_channels = 4\nkernel = 3\n[[layers]]\ntype = 'linear'\nout_features = 10\n",
    )
    .unwrap();
    assert_fails(
        &["train", "--arch", f.to_str().unwrap()],
        "layer 1 (linear)",
    );
    std::fs::write(
        &f,
        "name = 'bad'\ninput = [28, 28, 1]\nclasses = 10\n[[layers]]\ntype = 'conv5d'\n",
    )
    .unwrap();
    assert_fails(&["train", "--arch", f.to_str().unwrap()], "conv5d");
}

#[test]
fn unwritable_outputs_and_missing_checkpoints_fail_cleanly() {
    let d = tmp("out");
    assert_fails(
        &["train", "--epochs", "1", "--out", "/nonexistent-dir/m.json"],
        "/nonexistent-dir",
    );
    assert_fails(
        &[
            "export",
            "--checkpoint",
            d.join("missing.json").to_str().unwrap(),
            "--out",
            d.join("m.bin").to_str().unwrap(),
        ],
        "missing.json",
    );
    assert!(!d.join("m.bin").exists());
    // A checkpoint whose parameters do not match the architecture it claims.
    let ck = d.join("m.json");
    let (code, _, err) = trainer(&[
        "train",
        "--epochs",
        "1",
        "--train-count",
        "640",
        "--test-count",
        "100",
        "--out",
        ck.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&ck).unwrap();
    let lie = text.replacen("\"out_channels\":16", "\"out_channels\":12", 1);
    assert_ne!(lie, text);
    let bad = d.join("lie.json");
    std::fs::write(&bad, lie).unwrap();
    assert_fails(
        &[
            "export",
            "--checkpoint",
            bad.to_str().unwrap(),
            "--out",
            d.join("m.bin").to_str().unwrap(),
        ],
        "inconsistent checkpoint",
    );
    // Unwritable export target: nothing written, clear error.
    assert_fails(
        &[
            "export",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--out",
            "/nonexistent-dir/m.bin",
        ],
        "/nonexistent-dir",
    );
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn corrupt_model_blob_is_rejected_by_inspect_and_predict() {
    let d = tmp("blob");
    let mut blob =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/models/ref-cnn.bin"))
            .unwrap();
    let n = blob.len();
    blob[n - 3] ^= 1;
    let f = d.join("bad.bin");
    std::fs::write(&f, &blob).unwrap();
    assert_fails(&["inspect", f.to_str().unwrap()], "CRC-32");
    std::fs::write(&f, &blob[..100]).unwrap();
    assert_fails(
        &["predict", "--model", f.to_str().unwrap(), "0"],
        "truncated",
    );
}

#[test]
fn init_from_reports_mismatched_layers_by_name() {
    let d = tmp("finetune");
    let src = d.join("src.json");
    let small = ["--train-count", "640", "--test-count", "100", "--quiet"];
    let mut args = vec!["train", "--epochs", "1", "--out", src.to_str().unwrap()];
    args.extend(small);
    let (code, out, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    // One epoch, not "1 epochs".
    assert!(out.contains(" 1 epoch, "), "{out}");
    // ref-cnn with an 11-way head: the trunk is copied, the head is re-initialized.
    let arch = d.join("eleven.toml");
    let text = std::fs::read_to_string(&src).unwrap();
    let ck: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut a = ck["model"]["arch"].clone();
    a["classes"] = 11.into();
    a["layers"][9]["out_features"] = 11.into();
    std::fs::write(
        &arch,
        toml::to_string(&serde_json::from_value::<trainer::nn::arch::ArchSpec>(a).unwrap())
            .unwrap(),
    )
    .unwrap();
    let dst = d.join("dst.json");
    let mut args = vec![
        "train",
        "--epochs",
        "1",
        "--arch",
        arch.to_str().unwrap(),
        "--init-from",
        src.to_str().unwrap(),
        "--freeze",
        "8",
        "--out",
        dst.to_str().unwrap(),
    ];
    args.extend(small);
    let (code, _, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("layer 9 (linear): shape [10, 784] + [10] in the checkpoint vs [11, 784] + [11] here, re-initialized"),
        "{err}"
    );
    assert!(err.contains("layer 4 (conv2d): copied"), "{err}");
    // The frozen trunk is bit-identical to the source's.
    let out: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dst).unwrap()).unwrap();
    for p in 0..8 {
        assert_eq!(out["model"]["params"][p], ck["model"]["params"][p], "{p}");
    }
    // Nothing in common: a one-line error naming both architectures.
    assert_fails(
        &[
            "train",
            "--epochs",
            "1",
            "--arch",
            "loc-cnn",
            "--init-from",
            src.to_str().unwrap(),
            "--train-count",
            "640",
            "--test-count",
            "100",
            "--out",
            d.join("x.json").to_str().unwrap(),
        ],
        "no layer of 'ref-cnn' matches architecture 'loc-cnn'",
    );
    // Clap's own usage error (several lines) for --freeze without a checkpoint.
    let (code, _, err) = trainer(&["train", "--freeze", "2"]);
    assert_ne!(code, 0);
    assert!(err.contains("--init-from"), "{err}");
}

/// `device` runs any blob on the emulated board, checks it against the host runtime and prints
/// instructions per layer; a board it does not know is a one-line error.
#[test]
fn device_runs_a_blob_and_prints_instructions_per_layer() {
    let blob = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/models/ref-cnn.bin");
    let blob = blob.to_str().unwrap();
    assert_fails(
        &["device", "--model", blob, "--board", "pdp11"],
        "unknown board 'pdp11'",
    );
    let (code, out, err) = trainer(&["device", "--model", blob, "--images", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("bit-exact with the host runtime: 3 / 3"),
        "{out}"
    );
    for kind in ["Conv2d", "FullyConnected"] {
        assert!(out.contains(kind), "{out}");
    }
    let layer_lines = out
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<usize>().is_ok())
        })
        .count();
    assert_eq!(layer_lines, 3, "{out}");
}

/// Issue 16 regressions: each of these exited 0, clobbered a file or answered wrongly before.
#[test]
fn nonsense_is_refused_and_nothing_unreadable_is_written() {
    let d = tmp("issue16");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    // 1. A learning rate that blows up BatchNorm's running variance (the loss stayed finite)
    //    exited 0 with a checkpoint holding nulls. Now: an error naming it, and no checkpoint.
    let ck = d.join("x.ckpt.json");
    let (code, _, err) = trainer(&[
        "train",
        "--train-count",
        "512",
        "--test-count",
        "128",
        "--epochs",
        "1",
        "--lr",
        "100",
        "--quiet",
        "--out",
        &s(&ck),
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("non-finite") && err.contains("no checkpoint was written"),
        "{err}"
    );
    assert!(!ck.exists());
    // 7. Accepted nonsense.
    for (flag, v, needle) in [
        ("--lr", "0", "--lr must be a positive number"),
        ("--lr=-1", "", "--lr must be a positive number"),
        ("--weight-decay", "nan", "--weight-decay must be"),
        ("--test-count", "0", "--test-count must be at least 1"),
        ("--epochs", "0", "--epochs must be at least 1"),
    ] {
        let mut args = vec!["train", "--out", ck.to_str().unwrap(), flag];
        if !v.is_empty() {
            args.push(v);
        }
        assert_fails(&args, needle);
        assert!(!ck.exists() && !d.join("x.curves.png").exists());
    }
    // 6. Outputs checked before any work: a directory or a path under a file.
    assert_fails(&["train", "--out", d.to_str().unwrap()], "is a directory");
    let (code, _, err) = trainer(&[
        "train",
        "--train-count",
        "256",
        "--test-count",
        "64",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        &s(&ck),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_fails(
        &["train", "--out", &s(&ck.join("y.json"))],
        "is not a directory",
    );
    // 2. Export never replaces a device node, and writes through a symlink.
    let common = [
        "--train-count",
        "256",
        "--test-count",
        "64",
        "--calibration",
        "32",
    ];
    let mut args = vec![
        "export",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--out",
        "/dev/null",
    ];
    args.extend(common);
    assert_fails(&args, "not a regular file");
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    let target = d.join("model.bin");
    std::fs::write(&target, b"old").unwrap();
    let link = d.join("link.bin");
    std::os::unix::fs::symlink("model.bin", &link).unwrap();
    let mut args = vec![
        "export",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--out",
        link.to_str().unwrap(),
    ];
    args.extend(common);
    let (code, _, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read(&target).unwrap().starts_with(b"TMCU"));
    // ... and an unwritable --vectors fails before the blob is written.
    let fresh = d.join("fresh.bin");
    let mut args = vec![
        "export",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--out",
        fresh.to_str().unwrap(),
        "--vectors",
        "/nonexistent-dir/v.bin",
    ];
    args.extend(common);
    assert_fails(&args, "does not exist");
    assert!(!fresh.exists());
    // 9. bench train with more steps than the training set holds wraps around.
    let (code, out, err) = trainer(&["bench", "train", "--steps", "130", "--rounds", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("images/s"), "{out}");
}

/// Issue 16, 3: `predict <index>` on a localizer or grid detector used the 28x28 digits (and
/// printed `class 154` for the grid); it must use the model's own test canvases and print boxes.
#[test]
fn predict_by_index_uses_the_models_own_inputs_and_prints_boxes() {
    let d = tmp("predict16");
    let ck = d.join("grid.ckpt.json");
    let bin = d.join("grid.bin");
    let common = [
        "--train-count",
        "256",
        "--test-count",
        "64",
        "--canvas-copies",
        "1",
    ];
    let mut args = vec![
        "train",
        "--arch",
        "grid-det",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        ck.to_str().unwrap(),
    ];
    args.extend(common);
    let (code, _, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    let mut args = vec![
        "export",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--out",
        bin.to_str().unwrap(),
        "--calibration",
        "32",
    ];
    args.extend(common);
    let (code, _, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    let mut args = vec!["predict", "--model", bin.to_str().unwrap(), "3"];
    args.extend(common);
    let (code, out, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("class ") || out.contains("box class"),
        "{out}"
    );
    assert!(
        !out.contains("logits"),
        "a grid has no logits to list: {out}"
    );
    assert!(
        out.contains("box class") || out.contains("no detections"),
        "{out}"
    );
    // A classifier names the true label of a test image.
    let blob = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/models/ref-cnn.bin");
    let (code, out, err) = trainer(&["predict", "--model", blob.to_str().unwrap(), "17"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("true label"), "{out}");
}

/// Issue 13: a user's own data as a folder of PNGs, one sub-folder per class.
#[test]
fn trains_on_a_folder_of_png_class_folders() {
    let d = tmp("pngdata");
    let (train, _) = trainer::data::source::DataSource::default()
        .load(10)
        .unwrap();
    let mut written = [0usize; 2];
    for i in 0..train.len() {
        let c = train.labels[i] as usize;
        if c > 1 || written[c] == 40 {
            continue;
        }
        let dir = d.join(format!("class-{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        image::GrayImage::from_raw(28, 28, train.image(i).to_vec())
            .unwrap()
            .save(dir.join(format!("{i}.png")))
            .unwrap();
        written[c] += 1;
    }
    let out = d.join("m.ckpt.json");
    let (code, stdout, err) = trainer(&[
        "train",
        "--data",
        d.to_str().unwrap(),
        "--train-count",
        "60",
        "--test-count",
        "20",
        "--epochs",
        "4",
        "--batch-size",
        "10",
        "--quiet",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // Zeros and ones: far above the 50 % of guessing.
    assert!(last["test_accuracy"].as_f64().unwrap() > 0.8, "{stdout}");
    // A picture of another size is named.
    image::GrayImage::new(20, 20)
        .save(d.join("class-1/odd.png"))
        .unwrap();
    assert_fails(
        &[
            "train",
            "--data",
            d.to_str().unwrap(),
            "--train-count",
            "60",
            "--test-count",
            "20",
            "--out",
            out.to_str().unwrap(),
        ],
        "odd.png: 20x20 pixels, but the other images are 28x28",
    );
}

/// Issue 16, 4, 5 and 8: absurd architectures are refused before anything is allocated, and
/// export calibrates on the data the checkpoint was trained on or says why not.
#[test]
fn absurd_architectures_and_other_data_are_refused_clearly() {
    let d = tmp("issue16b");
    let out = d.join("x.json");
    for (json, needle) in [
        (
            r#"{"type":"conv2d","out_channels":8,"kernel":4611686018427387905,"padding":1}"#,
            "at most 255",
        ),
        (
            r#"{"type":"conv2d","out_channels":1000000,"kernel":3,"padding":1}"#,
            "out_channels at most 65535",
        ),
        (
            r#"{"type":"conv2d","out_channels":60000,"kernel":3,"padding":1}"#,
            "over the limit of 4194304",
        ),
    ] {
        let f = d.join("arch.json");
        std::fs::write(
            &f,
            format!(r#"{{"name":"a","input":[28,28,1],"classes":10,"layers":[{json},{{"type":"flatten"}},{{"type":"linear","out_features":10}}]}}"#),
        )
        .unwrap();
        assert_fails(
            &[
                "train",
                "--arch",
                f.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            needle,
        );
    }
    let f = d.join("arch.json");
    std::fs::write(
        &f,
        r#"{"name":"a","input":[28,28,1],"classes":10,"layers":[{"type":"flatten"},{"type":"linear","out_features":100000000}]}"#,
    )
    .unwrap();
    assert_fails(
        &[
            "train",
            "--arch",
            f.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "out_features must be 1..=65535",
    );
    // 8. A checkpoint remembers its training data: export on another training split is
    //    refused (it would calibrate on other images), unless asked for.
    let ck = d.join("m.ckpt.json");
    let (code, _, err) = trainer(&[
        "train",
        "--train-count",
        "256",
        "--test-count",
        "64",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        ck.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let bin = d.join("m.bin");
    let export = |extra: &[&str]| {
        let mut args = vec![
            "export",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--out",
            bin.to_str().unwrap(),
            "--test-count",
            "64",
            "--calibration",
            "32",
        ];
        args.extend_from_slice(extra);
        trainer(&args)
    };
    let (code, _, err) = export(&["--train-count", "300"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("was trained on other images") && err.contains("--any-data"),
        "{err}"
    );
    assert!(!bin.exists());
    let (code, _, err) = export(&["--train-count", "300", "--any-data"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = export(&["--train-count", "256"]);
    assert_eq!(code, 0, "{err}");
}

/// Issue 16, 10: a missing architecture file is named once; an unknown field is reported at
/// its own line.
#[test]
fn architecture_file_messages_point_at_the_cause() {
    let d = tmp("issue16c");
    let out = d.join("x.json");
    let missing = d.join("nope.toml");
    let (code, _, err) = trainer(&[
        "train",
        "--arch",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let f = d.join("a.toml");
    std::fs::write(
        &f,
        "name = \"t\"\ninput = [28, 28, 1]\nclasses = 10\n\n[[layers]]\ntype = \"conv2d\"\nout_channels = 4\nkernel = 3\n\n[[layers]]\ntype = \"flatten\"\n\n[[layers]]\ntype = \"linear\"\nout_features = 10\nbogus = 3\n",
    )
    .unwrap();
    assert_fails(
        &[
            "train",
            "--arch",
            f.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "line 16: unknown field `bogus`",
    );
}

/// Issue 16, 7: `--boxes` with an empty object list for a single-object localizer trained it
/// as class 0 with box [0, 0, 0, 0]; with a classifier the file was ignored unread.
#[test]
fn boxes_files_are_checked_against_the_architecture() {
    let d = tmp("issue16d");
    let out = d.join("x.json");
    let boxes = d.join("boxes.json");
    // One list per bundled image: the first empty, the others one digit-sized box.
    let mut lists = vec!["[]".to_string()];
    lists.extend((1..10_000).map(|_| r#"[{"class": 1, "box": [4, 4, 24, 24]}]"#.to_string()));
    std::fs::write(&boxes, format!("[{}]", lists.join(","))).unwrap();
    let b = boxes.to_str().unwrap();
    assert_fails(
        &[
            "train",
            "--arch",
            "loc-cnn",
            "--boxes",
            b,
            "--out",
            out.to_str().unwrap(),
        ],
        "image 0 has 0 objects; a single-object localizer needs exactly one",
    );
    assert_fails(
        &["train", "--boxes", b, "--out", out.to_str().unwrap()],
        "is a classifier and takes no boxes",
    );
}

/// Issue 33: an unreadable PNG's error said its cause twice ("Invalid PNG signature.: Invalid
/// PNG signature.").
#[test]
fn unreadable_png_is_named_once() {
    let d = tmp("badpng");
    let png = d.join("bad.png");
    std::fs::write(&png, b"not a png").unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/models/ref-cnn.bin");
    let (code, _, err) = trainer(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        png.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read image"), "{err}");
    assert_eq!(err.matches("signature").count(), 1, "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Issue 33: a wrong image size named no way forward and the repository shipped no example
/// architecture file. The error points at examples/arch/, and its files train on a PNG folder
/// of their size.
#[test]
fn other_image_sizes_have_example_architectures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for side in [32usize, 64] {
        let d = tmp(&format!("own{side}"));
        for class in ["a", "b"] {
            std::fs::create_dir_all(d.join(class)).unwrap();
            for i in 0..12 {
                let img = image::GrayImage::from_fn(side as u32, side as u32, |x, y| {
                    let on = if class == "a" { x < y } else { x > y };
                    image::Luma([if on { 200 + i as u8 } else { 10 }])
                });
                img.save(d.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        let data = d.to_str().unwrap();
        let counts = [
            "--train-count",
            "16",
            "--test-count",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "8",
        ];
        let out = d.join("m.ckpt.json");
        let mut args = vec!["train", "--data", data, "--out", out.to_str().unwrap()];
        args.extend(counts);
        let (code, _, err) = trainer(&args);
        assert_ne!(code, 0);
        assert!(err.contains("examples/arch/"), "{err}");
        let file = root.join(format!("examples/arch/cnn-{side}x{side}.toml"));
        args.extend(["--arch", file.to_str().unwrap()]);
        let (code, _, err) = trainer(&args);
        assert_eq!(code, 0, "{err}");
        assert!(out.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// Issue 32: colour images. A PNG folder whose classes differ only in hue (equal gray level,
/// so a grayscale read cannot tell them apart) trains with an RGB architecture, exports, and
/// `predict` reads a colour PNG; read as gray, the classes cannot be told apart; a colour
/// architecture on the gray IDX digits is refused naming the channel counts.
#[test]
fn colour_png_folders_train_export_and_predict() {
    let d = tmp("rgb");
    // Red and a green of the same gray level, as the image crate reads them.
    let colours = [("red", [200u8, 0, 0]), ("green", [0u8, 60, 0])];
    let gray = |rgb: [u8; 3]| {
        let px = image::RgbImage::from_pixel(1, 1, image::Rgb(rgb));
        image::DynamicImage::ImageRgb8(px).to_luma8().into_raw()
    };
    assert_eq!(gray(colours[0].1), gray(colours[1].1));
    for (class, rgb) in colours {
        std::fs::create_dir_all(d.join(class)).unwrap();
        for i in 0..24u32 {
            let img = image::RgbImage::from_fn(8, 8, |x, y| {
                if (x + y + i) % 3 == 0 {
                    image::Rgb([10, 10, 10])
                } else {
                    image::Rgb(rgb)
                }
            });
            img.save(d.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let arch = d.join("rgb.toml");
    std::fs::write(
        &arch,
        r#"name = "rgb"
input = [8, 8, 3]
classes = 2
[[layers]]
type = "conv2d"
out_channels = 4
kernel = 3
padding = 1
[[layers]]
type = "relu"
[[layers]]
type = "global_avg_pool"
[[layers]]
type = "linear"
out_features = 2
"#,
    )
    .unwrap();
    let (data, ck, blob) = (d.to_str().unwrap(), d.join("m.ckpt.json"), d.join("m.bin"));
    let counts = ["--train-count", "32", "--test-count", "16"];
    let mut args = vec!["train", "--data", data, "--out", ck.to_str().unwrap()];
    args.extend(counts);
    args.extend(["--epochs", "20", "--batch-size", "8", "--lr", "0.1"]);
    args.extend(["--arch", arch.to_str().unwrap()]);
    let (code, out, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("test accuracy 100.00%"), "{out}");
    let (code, _, err) = trainer(&[
        "export",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--out",
        blob.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let png = d.join("green").join("5.png");
    let (code, out, err) = trainer(&[
        "predict",
        "--model",
        blob.to_str().unwrap(),
        png.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("class 0"), "{out}");
    // The same folder read as gray (an architecture of one input channel): the classes look
    // alike, so the model cannot separate them.
    let gray = std::fs::read_to_string(&arch)
        .unwrap()
        .replace("[8, 8, 3]", "[8, 8, 1]");
    std::fs::write(&arch, gray).unwrap();
    let (code, out, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("test accuracy 100.00%"), "{out}");
    // A colour architecture on the bundled (gray IDX) digits: they train as gray in each of
    // R, G and B (issue 32: the bundled digits, coloured where an architecture needs it), and
    // the command says so.
    let rgb28 = std::fs::read_to_string(&arch)
        .unwrap()
        .replace("[8, 8, 1]", "[28, 28, 3]")
        .replace("classes = 2", "classes = 10")
        .replace("out_features = 2", "out_features = 10");
    std::fs::write(&arch, rgb28).unwrap();
    let (code, _, err) = trainer(&[
        "train",
        "--arch",
        arch.to_str().unwrap(),
        "--out",
        ck.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the bundled 28x28 digits, gray in each of R, G, B,"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// Issue 33: folders that cannot make a classifier trained without a word (one class scored
/// 100 %, an empty class folder was dropped silently) and imbalance got no note. Now: one
/// class and an empty class folder are refused with the reason, the classes found are listed
/// with their counts, and a strong imbalance is warned about.
#[test]
fn class_folders_are_checked_and_listed() {
    let d = tmp("classes");
    let save = |class: &str, n: u32| {
        std::fs::create_dir_all(d.join(class)).unwrap();
        for i in 0..n {
            let img = image::GrayImage::from_fn(28, 28, |x, _| image::Luma([(x * 9 + i) as u8]));
            img.save(d.join(class).join(format!("{i}.png"))).unwrap();
        }
    };
    save("circle", 30);
    let (data, ck) = (d.to_str().unwrap(), d.join("m.ckpt.json"));
    let args = [
        "train",
        "--data",
        data,
        "--out",
        ck.to_str().unwrap(),
        "--train-count",
        "20",
        "--test-count",
        "5",
        "--epochs",
        "1",
        "--batch-size",
        "8",
    ];
    let (code, _, err) = trainer(&args);
    assert_ne!(code, 0);
    assert!(err.contains("one class folder (circle)"), "{err}");
    std::fs::create_dir_all(d.join("empty")).unwrap();
    save("square", 30);
    let (code, _, err) = trainer(&args);
    assert_ne!(code, 0);
    assert!(
        err.contains("empty") && err.contains("holds no PNG"),
        "{err}"
    );
    std::fs::remove_dir_all(d.join("empty")).unwrap();
    let (code, _, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("2 classes (images): circle 30, square 30"),
        "{err}"
    );
    assert!(!err.contains("imbalanced"), "{err}");
    save("triangle", 5);
    std::fs::write(d.join("triangle/notes.txt"), "not an image").unwrap();
    std::fs::write(d.join("triangle/.DS_Store"), "hidden").unwrap();
    let (code, _, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("triangle 5") && err.contains("imbalanced (30 images against 5)"),
        "{err}"
    );
    // Files that are not PNGs are skipped and said (hidden ones silently).
    assert!(
        err.contains("skipped 1 file(s) of the class folders that are not PNGs")
            && err.contains("notes.txt"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// Issue 33: the defaults failed on your own data ("split asks for 10000 images but the data
/// set has 60") and named no flag. A PNG folder now trains with no count flags (the last fifth
/// tests), says so, and `export` and `eval` take the split the checkpoint recorded; counts that
/// do not fit name the flags.
#[test]
fn own_data_splits_without_count_flags() {
    let d = tmp("autosplit");
    for (class, on) in [("dark", 30u8), ("light", 220u8)] {
        std::fs::create_dir_all(d.join(class)).unwrap();
        for i in 0..30u32 {
            let img = image::GrayImage::from_fn(28, 28, |x, y| {
                image::Luma([if (x + y + i) % 4 == 0 { 0 } else { on }])
            });
            img.save(d.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let (data, ck, blob) = (d.to_str().unwrap(), d.join("m.ckpt.json"), d.join("m.bin"));
    let (code, out, err) = trainer(&[
        "train",
        "--data",
        data,
        "--out",
        ck.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "8",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("split: 48 training / 12 test images"), "{err}");
    assert!(out.contains("test accuracy"), "{out}");
    let (code, _, err) = trainer(&[
        "export",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--out",
        blob.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("48 / 12 split"), "{err}");
    let (code, _, err) = trainer(&[
        "train",
        "--data",
        data,
        "--out",
        ck.to_str().unwrap(),
        "--train-count",
        "100",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--train-count and --test-count"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Issue 33: the detector comparison (the main job's step 9) printed nothing for over a minute
/// under a fixed "about 4 minutes". It says each detector as it is scored, with the time so
/// far. Long (a whole comparison at one epoch each): ignored by default, run by CI.
#[test]
#[ignore]
fn detector_comparison_reports_progress() {
    let (code, out, err) = trainer(&[
        "compare",
        "--grid-epochs",
        "1",
        "--rcnn-epochs",
        "1",
        "--two-stage-epochs",
        "1",
        "--baseline-epochs",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    for k in 1..=5 {
        assert!(
            err.contains(&format!("detector {k}/5 scored after")),
            "{err}"
        );
    }
    assert!(out.contains("grid detector"), "{out}");
}

/// Three shapes, 28x28 gray, drawn with a per-image offset: class folders `circle`, `square`,
/// `triangle` under `dir`, `n` images each.
fn shapes(dir: &Path, n: u32, seed: u32) {
    for (k, class) in ["circle", "square", "triangle"].into_iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..n {
            let (cx, cy) = (10 + (i * 7 + seed) % 8, 10 + (i * 3 + seed) % 8);
            let img = image::GrayImage::from_fn(28, 28, |x, y| {
                let (dx, dy) = (x as i32 - cx as i32, y as i32 - cy as i32);
                let on = match k {
                    0 => dx * dx + dy * dy <= 36,
                    1 => dx.abs() <= 5 && dy.abs() <= 5,
                    _ => (-6..=5).contains(&dy) && dx.abs() * 2 <= dy + 6,
                };
                image::Luma([if on {
                    230
                } else {
                    ((x * 5 + y * 3 + i) % 23) as u8
                }])
            });
            img.save(dir.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
}

/// Issue 33: three class folders became ten anonymous outputs, and `predict <index>` ran the
/// bundled digits on any model. Now a `train/` + `test/` layout is the split, the head has the
/// folders' class count, the names travel from the folders through the checkpoint and the blob
/// to `eval`'s confusion matrix, `inspect` and `predict`, and an index needs the model's data.
/// `--resume` goes on with a stopped run and refuses a finished one.
#[test]
fn classes_by_name_from_folders_to_predict_and_resume() {
    let d = tmp("named");
    shapes(&d.join("train"), 24, 0);
    shapes(&d.join("test"), 6, 5);
    let (data, ck, blob) = (d.to_str().unwrap(), d.join("m.ckpt.json"), d.join("m.bin"));
    let (ck_s, blob_s) = (ck.to_str().unwrap(), blob.to_str().unwrap());
    let train = [
        "train",
        "--data",
        data,
        "--out",
        ck_s,
        "--epochs",
        "3",
        "--batch-size",
        "8",
    ];
    let (code, out, err) = trainer(&train);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("split: 72 training / 18 test images (the train/ and test/ folders)"),
        "{err}"
    );
    assert!(
        err.contains(
            "classes: 3 from the folders, so 'ref-cnn' has 3 outputs (its definition has 10)"
        ),
        "{err}"
    );
    assert!(out.contains("test accuracy"), "{out}");
    let (code, out, err) = trainer(&["eval", "--checkpoint", ck_s]);
    assert_eq!(code, 0, "{err}");
    let header = out.lines().find(|l| l.starts_with("true")).unwrap_or("");
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        cols,
        ["true\\pred", "circle", "square", "triangle"],
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("triangle ")),
        "{out}"
    );
    let (code, _, err) = trainer(&["export", "--checkpoint", ck_s, "--out", blob_s]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = trainer(&["inspect", blob_s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("classes circle, square, triangle"), "{out}");
    let png = d.join("test/square/0.png");
    let (code, out, err) = trainer(&["predict", "--model", blob_s, png.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let class = out.lines().find(|l| l.starts_with("class ")).unwrap_or("");
    assert!(
        ["0 circle", "1 square", "2 triangle"]
            .iter()
            .any(|c| class == format!("class {c}")),
        "{out}"
    );
    assert_fails(
        &["predict", "--model", blob_s, "0"],
        "names its classes (circle, square, triangle)",
    );
    let (code, out, err) = trainer(&["predict", "--model", blob_s, "0", "--data", data]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("note: test image 0 of {data} (18 test images)")),
        "{out}"
    );
    assert!(out.contains("(true label "), "{out}");
    // visualize reads the checkpoint's own data too (it read the bundled digits).
    let (code, out, err) = trainer(&["visualize", "--checkpoint", ck_s, "--out", data]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("top-images.png"), "{out}");
    assert!(
        err.contains("using the data the checkpoint was trained on"),
        "{err}"
    );
    // A finished run has nothing to resume; one that stopped early is said to and finishes.
    assert_fails(&["train", "--resume", ck_s], "all 3 epochs are done");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&ck).unwrap()).unwrap();
    j["config"]["epochs"] = 4.into();
    std::fs::write(&ck, serde_json::to_vec(&j).unwrap()).unwrap();
    let (code, _, err) = trainer(&["eval", "--checkpoint", ck_s]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("holds 3 of 4 epochs"), "{err}");
    let (code, out, err) = trainer(&["train", "--resume", ck_s, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("'ref-cnn' after epoch 3 of 4"), "{err}");
    assert!(out.contains("4 epochs"), "{out}");
    // A run that split its batches across two threads resumes on two threads.
    let two = d.join("two.ckpt.json");
    let mut split = train.to_vec();
    let two_s = two.to_str().unwrap();
    split[4] = two_s;
    split.extend(["--threads", "2", "--quiet"]);
    let (code, _, err) = trainer(&split);
    assert_eq!(code, 0, "{err}");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&two).unwrap()).unwrap();
    j["config"]["epochs"] = 4.into();
    std::fs::write(&two, serde_json::to_vec(&j).unwrap()).unwrap();
    let (code, _, err) = trainer(&["train", "--resume", two_s, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("on two threads, as it started"), "{err}");
    let (code, _, err) = trainer(&["train", "--resume", ck_s, "--epochs", "9"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("'--resume <RESUME>' cannot be used with '--epochs"),
        "{err}"
    );
    // train/ and test/ must hold the same classes.
    std::fs::rename(d.join("test/triangle"), d.join("test/cone")).unwrap();
    assert_fails(
        &train,
        "train/ has classes (circle, square, triangle) and test/ (circle, cone, square)",
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// A checkpoint trained on the bundled digits with a split of its own: `export` and `eval`
/// take that split (they refused, naming the counts to pass again), and say so.
#[test]
fn bundled_data_with_other_counts_is_reused() {
    let d = tmp("bundled-split");
    let (ck, blob) = (d.join("m.ckpt.json"), d.join("m.bin"));
    let (ck_s, blob_s) = (ck.to_str().unwrap(), blob.to_str().unwrap());
    let (code, _, err) = trainer(&[
        "train",
        "--train-count",
        "500",
        "--test-count",
        "100",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        ck_s,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = trainer(&["export", "--checkpoint", ck_s, "--out", blob_s]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the bundled mnist10k (500 / 100 split"),
        "{err}"
    );
    assert!(out.contains("on 100 images"), "{out}");
    let (code, out, err) = trainer(&["eval", "--checkpoint", ck_s, "--test-count", "50"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("on 50 images"), "{out}");
    std::fs::remove_dir_all(&d).unwrap();
}
