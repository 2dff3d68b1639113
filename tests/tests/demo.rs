//! The main job end to end (short): the report's figures must equal what the separate
//! commands print for the same run.

use tests::temp_dir;
use trainer::commands::data::DataArgs;
use trainer::commands::demo::{journey, DemoArgs};
use trainer::commands::eval::{cmd_eval, EvalArgs};
use trainer::commands::export::{cmd_export, ExportArgs, RoundingArg};

#[test]
fn demo_report_matches_the_separate_commands() {
    let dir = temp_dir("demo");
    let data = DataArgs {
        data: None,
        train_count: Some(8000),
        test_count: Some(2000),
        boxes: None,
        canvas_copies: 3,
    };
    let out = dir.join("report");
    let s = journey(&DemoArgs {
        data: data.clone(),
        arch: "ref-cnn".into(),
        epochs: 1,
        seed: 3,
        device_images: 30,
        out: out.clone(),
        json: false,
        quiet: true,
        detector_epochs: 1,
        two_stage_epochs: 1,
    })
    .unwrap();
    for f in [
        "index.html",
        "summary.json",
        "curves.png",
        "confusion-float.png",
        "confusion-int8.png",
        "model.bin",
        "model.ckpt.json",
        "detections.png",
        "filters.png",
        "activations.png",
        "top-images.png",
        "detectors.md",
        "detector-curves.png",
        "readme-table.md",
    ] {
        assert!(out.join(f).is_file(), "report lacks {f}");
    }
    let table = s
        .detector_comparison
        .as_ref()
        .map(|c| c.to_markdown())
        .unwrap_or_default();
    for method in [
        "sliding window",
        "R-CNN",
        "Fast R-CNN",
        "Faster R-CNN",
        "grid detector",
    ] {
        assert!(
            table.contains(method),
            "comparison lacks {method}:\n{table}"
        );
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        html.contains("Detectors compared") && html.contains("<td>"),
        "report lacks the table"
    );
    assert_eq!(s.device_bit_exact, 30);
    // Instructions per layer on the device: one line per layer, summing to the inference.
    assert_eq!(s.device_layer_instructions.len(), 3);
    let per_layer: u64 = s.device_layer_instructions.iter().map(|l| l.2).sum();
    assert!(per_layer.abs_diff(s.instructions_per_inference) < 1_000);
    assert!(html.contains("Where the instructions go") && html.contains("detector-curves.png"));
    let ex = cmd_export(&ExportArgs {
        checkpoint: out.join("model.ckpt.json"),
        out: dir.join("again.bin"),
        data: data.clone(),
        calibration: 500,
        vectors: None,
        vector_count: 0,
        any_data: false,
        rounding: RoundingArg::Single,
        format: trainer::commands::export::FormatArg::Blob,
        json: true,
    })
    .unwrap();
    assert_eq!(
        std::fs::read(dir.join("again.bin")).unwrap(),
        std::fs::read(out.join("model.bin")).unwrap()
    );
    assert_eq!(
        (ex.blob_bytes, ex.arena_bytes),
        (s.blob_bytes, s.arena_bytes)
    );
    assert_eq!(
        (ex.int8_accuracy, ex.top1_agreement, ex.float_accuracy),
        (s.int8_accuracy, s.top1_agreement, s.float_accuracy)
    );
    let ev = cmd_eval(&EvalArgs {
        checkpoint: out.join("model.ckpt.json"),
        data,
        confusion_png: None,
        json: true,
    })
    .unwrap();
    assert_eq!(ev.accuracy, s.float_accuracy);
    assert_eq!(ev.confusion, s.confusion_float);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["blob_bytes"].as_u64(), Some(s.blob_bytes as u64));
    assert!(std::fs::read_to_string(out.join("index.html"))
        .unwrap()
        .contains(&format!("{} / {}", 30, 30)));
}

/// A failing step leaves no report behind and names the step.
#[test]
fn demo_failure_names_the_step_and_leaves_no_report() {
    let dir = temp_dir("demo-fail");
    let out = dir.join("report");
    let e = journey(&DemoArgs {
        data: DataArgs {
            data: Some(dir.join("no-such-data")),
            train_count: Some(8000),
            test_count: Some(2000),
            boxes: None,
            canvas_copies: 3,
        },
        arch: "ref-cnn".into(),
        epochs: 1,
        seed: 3,
        device_images: 10,
        out: out.clone(),
        json: false,
        quiet: true,
        detector_epochs: 0,
        two_stage_epochs: 1,
    })
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("step 1/7 'train' failed") && msg.contains("no-such-data"),
        "{msg}"
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains("staging")),
        "{leftovers:?}"
    );
}
