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
    let (code, _, err) = trainer(&args);
    assert_eq!(code, 0, "{err}");
    // ref-cnn with an 11-way head: the trunk is copied, the head is re-initialized.
    let arch = d.join("eleven.toml");
    let text = std::fs::read_to_string(&src).unwrap();
    let ck: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut a = ck["model"]["arch"].clone();
    a["classes"] = 11.into();
    a["layers"][9]["out_features"] = 11.into();
    std::fs::write(
        &arch,
        toml::to_string(&serde_json::from_value::<trainer::model::ArchSpec>(a).unwrap()).unwrap(),
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
