//! The main job in one command: train -> fold and quantize -> export -> host runtime ->
//! firmware build -> emulated Cortex-M4 -> parity -> report.
//!
//! Every step is named; a failure stops the journey with the step and what to do, and the
//! report folder is assembled in a staging directory that only replaces `--out` at the end, so
//! a half-finished report is never presented as complete.

use crate::commands::compare::{compare, CompareArgs};
use crate::commands::data::DataArgs;
use crate::commands::detect::{cmd_detect, DetectArgs};
use crate::commands::eval::{cmd_eval, EvalArgs};
use crate::commands::export::{cmd_export, ExportArgs, FormatArg, RoundingArg};
use crate::commands::train::{cmd_train, TrainArgs};
use crate::commands::visualize::{cmd_visualize, VisualizeArgs};
use crate::deploy::device;
use crate::report::html::{html, readme_table, Summary};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Built-in architecture name or a .toml/.json architecture file.
    #[arg(long, default_value = "ref-cnn")]
    pub arch: String,
    #[arg(long, default_value_t = crate::train::TrainConfig::default().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = crate::train::TrainConfig::default().seed)]
    pub seed: u64,
    /// Test images run on the emulated board (each is compared byte for byte with the host).
    #[arg(long, default_value_t = 200)]
    pub device_images: usize,
    /// Report folder (replaced as a whole when the journey succeeds).
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    /// Print the summary as one JSON object as the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// No progress bars (for logs).
    #[arg(long)]
    pub quiet: bool,
    /// Epochs of the grid detector trained for the report's picture of boxes (0 skips it).
    #[arg(long, default_value_t = 6)]
    pub detector_epochs: usize,
    /// Epochs of Fast R-CNN and Faster R-CNN in the detector comparison.
    #[arg(long, default_value_t = crate::detect::fast_rcnn::TwoStageConfig::default().epochs)]
    pub two_stage_epochs: usize,
}

fn spinner(msg: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Runs one named step; failures say which step and what to do.
/// Runs step `n` of `total`: prints its name and time, names it in an error.
fn step<T>(
    (n, total): (usize, usize),
    name: &str,
    hint: &str,
    quiet: bool,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if !quiet {
        eprintln!("\n[{n}/{total}] {name}");
    }
    let t = Instant::now();
    let r = f().with_context(|| format!("step {n}/{total} '{name}' failed. {hint}"))?;
    if !quiet {
        eprintln!("      done in {:.1}s", t.elapsed().as_secs_f32());
    }
    Ok(r)
}

/// `trainer demo`: the journey, then its summary (and the summary as JSON with `--json`).
pub fn run(a: &DemoArgs) -> anyhow::Result<()> {
    let s = journey(a)?;
    print_summary(&s, &a.out);
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    }
    Ok(())
}

/// The journey; returns the summary after the report folder is in place.
pub fn journey(a: &DemoArgs) -> anyhow::Result<Summary> {
    let t0 = Instant::now();
    let out = a.out.clone();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let name = out
        .file_name()
        .map_or("report".into(), |n| n.to_string_lossy().into_owned());
    let stale = remove_stale_stages(&parent, &name);
    if stale > 0 && !a.quiet {
        println!(
            "removed {stale} staging folder(s) left in {} by interrupted runs",
            parent.display()
        );
    }
    let stage = parent.join(format!(".{name}.staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)
        .with_context(|| format!("cannot create {}", stage.display()))?;
    let result = build_report(a, &stage, t0);
    match result {
        Ok(s) => {
            if out.exists() {
                std::fs::remove_dir_all(&out)
                    .with_context(|| format!("cannot replace the old report {}", out.display()))?;
            }
            std::fs::rename(&stage, &out)
                .with_context(|| format!("cannot move the report into {}", out.display()))?;
            Ok(s)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            Err(e)
        }
    }
}

/// Removes `parent/.NAME.staging-PID` folders whose process is gone (a run interrupted with
/// Ctrl-C leaves its staging folder behind); a live process's folder is kept. Where processes
/// cannot be looked up (no `/proc`), nothing is removed. Returns how many went.
fn remove_stale_stages(parent: &Path, name: &str) -> usize {
    let proc_fs = Path::new("/proc/self");
    if !proc_fs.exists() {
        return 0;
    }
    let prefix = format!(".{name}.staging-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let alive = pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists();
        if !alive && e.path().is_dir() && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn build_report(a: &DemoArgs, dir: &Path, t0: Instant) -> anyhow::Result<Summary> {
    let q = a.quiet;
    // 9 steps, or 7 without the detector steps (`--detector-epochs 0`).
    let total = if a.detector_epochs == 0 { 7 } else { 9 };
    let ckpt = dir.join("model.ckpt.json");
    let blob_path = dir.join("model.bin");
    let vectors = dir.join("test-inputs.bin");
    let tr = step((1, total), "train", "Check the data path (--data) and architecture file (--arch); lower --lr if the loss diverged.", q, || {
        cmd_train(&TrainArgs {
            epochs: a.epochs,
            seed: a.seed,
            plot: Some(dir.join("curves.png")),
            quiet: q,
            ..TrainArgs::recipe(a.data.clone(), &a.arch, ckpt.clone())
        })
    })?;
    let ev = step(
        (2, total),
        "evaluate the float model",
        "The checkpoint could not be evaluated; see the cause above.",
        q,
        || {
            cmd_eval(&EvalArgs {
                checkpoint: ckpt.clone(),
                data: a.data.clone(),
                confusion_png: Some(dir.join("confusion-float.png")),
                json: false,
            })
        },
    )?;
    // What the network learned (a few seconds): filters, one image's activations, and the test
    // images that excite the first conv layer's channel 0 most.
    cmd_visualize(&VisualizeArgs {
        checkpoint: ckpt.clone(),
        data: a.data.clone(),
        image: 0,
        layer: 0,
        channel: 0,
        out: dir.to_owned(),
    })?;
    let ex = step(
        (3, total),
        "fold BatchNorm, calibrate, quantize to int8, export",
        "The architecture may use a layer the device cannot run (named above).",
        q,
        || {
            cmd_export(&ExportArgs {
                checkpoint: ckpt.clone(),
                out: blob_path.clone(),
                data: a.data.clone(),
                calibration: 500,
                vectors: Some(vectors.clone()),
                vector_count: a.device_images,
                any_data: false,
                rounding: RoundingArg::Single,
                format: FormatArg::Blob,
                json: false,
            })
        },
    )?;
    let blob = std::fs::read(&blob_path)?;
    let rt = runtime::Model::from_bytes(&blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    let classes = rt.output_len();
    let channels = rt.def().input.shape.c as usize;
    let (_, test) = a.data.source().load_channels(classes, channels)?;
    let int8 = crate::deploy::export::run_int8(&rt, &test)?;
    let preds: Vec<usize> = int8
        .iter()
        .map(|o| runtime::argmax(o).unwrap_or(0))
        .collect();
    let confusion_int8 = crate::report::plots::confusion(&test.labels, &preds, classes);
    crate::report::plots::confusion_matrix(
        &confusion_int8,
        &ev.class_names,
        &format!(
            "int8 (host runtime), accuracy {:.2}%",
            ex.int8_accuracy * 100.0
        ),
        &dir.join("confusion-int8.png"),
    )?;
    let layers = crate::deploy::inspect::cmd_inspect(&blob_path)?;

    let dev = device_steps(a, dir, total, &blob, &blob_path, &vectors, &test)?;
    let (detector, comparison) = detector_steps(a, dir, total)?;
    if let Some(t) = &comparison {
        crate::io::write_atomic(&dir.join("detectors.md"), t.to_markdown().as_bytes())?;
    }
    let run = &dev.run;
    let insn = if run.insns.is_empty() {
        0
    } else {
        run.insns.iter().sum::<u64>() / run.insns.len() as u64
    };
    let _ = std::fs::remove_file(&dev.elf);
    let s = Summary {
        arch: tr.arch.clone(),
        own_data: a.data.data.is_some(),
        params: tr.params,
        epochs: tr.epochs,
        train_seconds: tr.train_seconds,
        train_images_per_second: tr.images_per_second,
        float_accuracy: ev.accuracy,
        int8_accuracy: ex.int8_accuracy,
        top1_agreement: ex.top1_agreement,
        max_abs_logit_diff: ex.max_abs_logit_diff,
        test_images: ex.test_images,
        blob_bytes: ex.blob_bytes,
        arena_bytes: ex.arena_bytes,
        macs: ex.macs,
        device_images: dev.bit_exact,
        device_accuracy: dev.correct as f32 / dev.bit_exact.max(1) as f32,
        device_bit_exact: dev.bit_exact,
        instructions_per_inference: insn,
        instructions_per_mac: insn as f64 / ex.macs.max(1) as f64,
        firmware_flash_bytes: dev.flash,
        firmware_static_ram_bytes: dev.ram,
        firmware_peak_stack_bytes: run.stack.unwrap_or(0),
        class_names: ev.class_names.clone(),
        confusion_float: ev.confusion,
        confusion_int8,
        layers,
        device_layer_instructions: run.layers.clone(),
        detector,
        detector_comparison: comparison,
        seconds_total: t0.elapsed().as_secs_f32(),
    };
    crate::io::write_atomic(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&s)?.as_bytes(),
    )?;
    crate::io::write_atomic(&dir.join("index.html"), html(&s).as_bytes())?;
    // The README's figures table, from exactly this summary (see `readme_table`).
    let table = readme_table(&serde_json::to_value(&s)?)?;
    crate::io::write_atomic(&dir.join("readme-table.md"), table.as_bytes())?;
    Ok(s)
}

/// What steps 4 to 7 leave: the firmware, its run, and how it compares with the host.
struct DeviceSteps {
    elf: PathBuf,
    run: device::DeviceRun,
    /// Inputs bit-exact with the host (all of them, or the step failed), and right by label.
    bit_exact: usize,
    correct: usize,
    flash: u64,
    ram: u64,
}

/// Steps 4 to 7: the firmware toolchain, the firmware built with this model, its run on the
/// emulated Cortex-M4, and parity with the host runtime.
#[allow(clippy::too_many_arguments)]
fn device_steps(
    a: &DemoArgs,
    dir: &Path,
    total: usize,
    blob: &[u8],
    blob_path: &Path,
    vectors: &Path,
    test: &crate::data::Dataset,
) -> anyhow::Result<DeviceSteps> {
    let q = a.quiet;
    step(
        (4, total),
        "firmware toolchain (QEMU, ld.lld, Rust for thumbv7em)",
        "Needs apt and the Debian package archive; see firmware/README.md.",
        q,
        || {
            if !q && !device::repo_root().join(".toolchain/env.sh").exists() {
                eprintln!("      first run: installs qemu-system-arm, lld and binutils-arm-none-eabi with apt, and unpacks Debian's rustc-web (about 144 MB) into .toolchain/");
            }
            let st = std::process::Command::new(
                device::repo_root().join("scripts/firmware-toolchain.sh"),
            )
            .status()
            .context("cannot start scripts/firmware-toolchain.sh")?;
            anyhow::ensure!(
                st.success(),
                "scripts/firmware-toolchain.sh exited with {st}"
            );
            Ok(())
        },
    )?;
    let elf = step(
        (5, total),
        "build the firmware with this model",
        "See the cargo output above; scripts/build-firmware.sh reproduces it.",
        q,
        || {
            let pb = spinner("cargo build --release (thumbv7em-none-eabihf)", q);
            let r = device::build_firmware(blob_path, vectors, dir);
            pb.finish_and_clear();
            r
        },
    )?;
    let run = step(
        (6, total),
        "run on the emulated Cortex-M4 (QEMU mps2-an386)",
        "scripts/run-qemu.sh ELF reproduces the run.",
        q,
        || {
            let pb = spinner(&format!("{} inferences in QEMU", a.device_images), q);
            let r = device::run_qemu(&elf);
            pb.finish_and_clear();
            let r = r?;
            anyhow::ensure!(
                r.status == 0 && r.done.is_some(),
                "QEMU exited with {} ({}); output:\n{}",
                r.status,
                r.error.clone().unwrap_or_default(),
                r.stdout
            );
            Ok(r)
        },
    )?;
    let (bit_exact, device_correct) = step((7, total), "check device parity with the host runtime", "The device computed something else than the host: a runtime bug; report it with the line above.", q, || {
        let inputs = device::read_vectors(&std::fs::read(vectors)?)?;
        let host = device::host_outputs(blob, &inputs)?;
        if let Some(m) = device::first_mismatch(&host, &run.outputs) {
            anyhow::bail!("device differs from host: {m}");
        }
        let correct = run.outputs.iter().enumerate().filter(|(i, o)| runtime::argmax(o) == Some(test.labels[*i] as usize)).count();
        Ok((host.len(), correct))
    })?;
    let (flash, ram) = device::firmware_size(&elf)?;
    Ok(DeviceSteps {
        elf,
        run,
        bit_exact,
        correct: device_correct,
        flash,
        ram,
    })
}

/// Steps 8 and 9 (none with `--detector-epochs 0`): the grid detector trained, exported and
/// run on canvases, then every detector compared.
type DetectorSteps = (
    Option<crate::report::detect::DetectRow>,
    Option<crate::detect::compare::Comparison>,
);

fn detector_steps(a: &DemoArgs, dir: &Path, total: usize) -> anyhow::Result<DetectorSteps> {
    let q = a.quiet;
    let detector = if a.detector_epochs == 0 {
        None
    } else {
        let hint = "The classifier journey above is complete; rerun with --detector-epochs 0 to skip this step.";
        Some(step(
            (8, total),
            "grid detector: train, quantize, detect boxes (picture for the report)",
            hint,
            q,
            || {
                let data = DataArgs {
                    canvas_copies: 1,
                    ..a.data.clone()
                };
                let ckpt = dir.join("detector.ckpt.json");
                cmd_train(&TrainArgs {
                    epochs: a.detector_epochs,
                    seed: a.seed,
                    plot: Some(dir.join("detector-curves.png")),
                    quiet: q,
                    ..TrainArgs::recipe(data.clone(), "grid-det", ckpt.clone())
                })?;
                let bin = dir.join("detector.bin");
                cmd_export(&ExportArgs {
                    checkpoint: ckpt,
                    out: bin.clone(),
                    data: data.clone(),
                    calibration: 300,
                    vectors: None,
                    vector_count: 0,
                    any_data: false,
                    rounding: RoundingArg::Single,
                    format: FormatArg::Blob,
                    json: false,
                })?;
                let rows = cmd_detect(&DetectArgs {
                    model: bin,
                    data,
                    png: Some(dir.join("detections.png")),
                    count: 16,
                    baseline: false,
                    baseline_epochs: 0,
                    json: false,
                })?;
                rows.into_iter().next().context("detect returned no row")
            },
        )?)
    };
    let comparison = if a.detector_epochs == 0 {
        None
    } else {
        Some(step((9, total),
            "compare detectors: sliding window, R-CNN, Fast R-CNN, Faster R-CNN, grid detector",
            "The classifier journey and the detector picture are complete; rerun with --detector-epochs 0 to skip this step.",
            q,
            || {
                if !q {
                    eprintln!("      trains the sliding-window classifier (2 epochs), R-CNN (1 epoch), Fast and Faster R-CNN ({} epochs) and runs selective search, scoring each of the five detectors on 1,000 test canvases as it goes", a.two_stage_epochs);
                }
                compare(&CompareArgs {
                    data: a.data.clone(),
                    grid_checkpoint: Some(dir.join("detector.ckpt.json")),
                    grid_epochs: 0,
                    rcnn: None,
                    rcnn_epochs: 1,
                    fast_rcnn: None,
                    faster_rcnn: None,
                    two_stage_epochs: a.two_stage_epochs,
                    baseline_epochs: 2,
                    out: None,
                    json: false,
                })
            },
        )?)
    };
    Ok((detector, comparison))
}

fn print_summary(s: &Summary, out: &Path) {
    let p = s.peers();
    let peer = |on: bool, t: &'static str| if on { t } else { "" };
    println!();
    println!("{:<38} {} ({} params)", "model", s.arch, s.params);
    println!(
        "{:<38} {:.2} %{}",
        "float test accuracy",
        s.float_accuracy * 100.0,
        peer(p.accuracy, "  (PyTorch: 97.2 %)")
    );
    println!(
        "{:<38} {:.2} %{}",
        "int8 test accuracy (host runtime)",
        s.int8_accuracy * 100.0,
        peer(p.accuracy, "  (TFLM/ORT int8: 97.3 %)")
    );
    println!(
        "{:<38} {:.2} %",
        "top-1 agreement float vs int8",
        s.top1_agreement * 100.0
    );
    println!(
        "{:<38} {:.2} % on {} images",
        "device accuracy (QEMU)",
        s.device_accuracy * 100.0,
        s.device_images
    );
    println!(
        "{:<38} {} / {} bit-exact",
        "device vs host parity", s.device_bit_exact, s.device_images
    );
    println!(
        "{:<38} {} B{}",
        "model blob",
        s.blob_bytes,
        peer(p.model, "  (TFLite: 13,688 B)")
    );
    println!(
        "{:<38} {} B{}",
        "arena",
        s.arena_bytes,
        peer(p.model, "  (TFLite Micro: 10,080 B)")
    );
    println!(
        "{:<38} {} ({:.2}/MAC)",
        "instructions per inference", s.instructions_per_inference, s.instructions_per_mac
    );
    println!(
        "{:<38} {} B flash, {} B static RAM, {} B stack",
        "firmware",
        s.firmware_flash_bytes,
        s.firmware_static_ram_bytes,
        s.firmware_peak_stack_bytes
    );
    println!("{:<38} {:.0} s", "total time", s.seconds_total);
    if let Some(d) = &s.detector {
        println!(
            "{:<38} mAP@0.5 {:.3}, mAP@[.5:.95] {:.3} (int8, host runtime)",
            "grid detector", d.map50, d.map_coco
        );
    }
    if let Some(t) = &s.detector_comparison {
        println!("\n{}", t.to_markdown());
    }
    println!("report: {}", out.join("index.html").display());
}

#[cfg(test)]
mod tests {
    use super::remove_stale_stages;

    /// An interrupted run's staging folder (its process gone) is removed by the next run; a
    /// live process's folder and other files stay (#33: Ctrl-C left hidden folders forever).
    #[test]
    fn stale_staging_folders_are_removed() {
        let dir = std::env::temp_dir().join(format!("demo-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Above Linux's largest pid (2^22), so no process has it.
        let dead = dir.join(".report.staging-4294967");
        let live = dir.join(format!(".report.staging-{}", std::process::id()));
        let other = dir.join(".other.staging-4294967");
        for d in [&dead, &live, &other] {
            std::fs::create_dir_all(d.join("inner")).unwrap();
        }
        assert_eq!(remove_stale_stages(&dir, "report"), 1);
        assert!(!dead.exists() && live.exists() && other.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
