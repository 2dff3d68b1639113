//! `trainer bench train`, `trainer bench runtime` and `trainer bench tflite`: the figures,
//! beside the peers' where they exist.

use crate::report::bench::{
    bench_pytorch, cmd_bench_runtime, cmd_bench_train, pytorch_files, BenchModel, Spread,
};
use crate::report::html::grouped as group;
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BenchWhat {
    /// Training images/s at batch 64 on 1 and 2 threads (ref-cnn, or --arch): several
    /// rounds, median and spread, beside PyTorch's from the same run when --pytorch is given.
    Train {
        /// A built-in architecture or an architecture file (default ref-cnn), trained on the
        /// bundled digits fitted to its input.
        #[arg(long)]
        arch: Option<String>,
        /// Optimizer steps per round (125 = one pass over the 8,000 training images; more
        /// wrap around).
        #[arg(long, default_value_t = 125)]
        steps: usize,
        /// Timed rounds per thread count.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// A Python with torch installed: runs bench/pytorch_train.py (the same model,
        /// optimizer and data) in the same run.
        #[arg(long)]
        pytorch: Option<String>,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Imported .tflite models beside TensorFlow Lite Micro: MACs, file and blob bytes, arena
    /// (and its activation floor), outputs equal to TFLM's on the host and in QEMU,
    /// instructions per inference, top-1 where labels exist. MLPerf Tiny's models:
    /// `--dir trainer/tests/fixtures/mlperf`.
    Tflite {
        /// Fixtures: NAME.tflite with NAME.json, NAME.inputs.bin and NAME.tflm.bin (and
        /// optionally NAME.labels.bin, one class byte per input).
        #[arg(long, default_value = "trainer/tests/fixtures/tflite")]
        dir: PathBuf,
        /// Host only: skip building and running the firmware.
        #[arg(long)]
        no_device: bool,
        /// Where the firmware builds go.
        #[arg(long, default_value = "target/tflite-bench")]
        work: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Host int8 latency of a model blob, 1 thread, batch 1.
    Runtime {
        #[arg(long, default_value = "firmware/models/ref-cnn.bin")]
        model: PathBuf,
        #[arg(long, default_value_t = 2000)]
        iters: usize,
        #[arg(long)]
        json: bool,
    },
}

/// `trainer bench WHAT`.
pub fn run(what: BenchWhat) -> anyhow::Result<()> {
    match what {
        BenchWhat::Train {
            arch,
            steps,
            rounds,
            pytorch,
            json,
        } => train(arch.as_deref(), steps, rounds, pytorch.as_deref(), json),
        BenchWhat::Runtime { model, iters, json } => runtime(&model, iters, json),
        BenchWhat::Tflite {
            dir,
            no_device,
            work,
            json,
        } => tflite(&dir, !no_device, &work, json),
    }
}

pub fn train(
    arch: Option<&str>,
    steps: usize,
    rounds: usize,
    pytorch: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let bm = BenchModel::new(arch)?;
    let (t1, t2) = cmd_bench_train(&bm, steps, rounds)?;
    let show = |s: Spread| format!("{:>8.0}  ({:.0}-{:.0})", s.median, s.min, s.max);
    let [h, w, c] = bm.arch.input;
    println!(
        "{} training ({h}x{w}x{c}, {} MACs per image), batch 64, {rounds} rounds of {steps} \
         steps: images/s median (min-max)",
        bm.arch.name,
        group(bm.arch.macs() as u64)
    );
    println!("  this trainer, 1 thread      {}", show(t1));
    println!("  this trainer, 2 threads     {}", show(t2));
    let torch = match pytorch {
        Some(py) => {
            // Another architecture goes to the script as JSON with its images.
            let work = arch.map(|_| {
                std::env::temp_dir().join(format!("trainer-bench-{}", std::process::id()))
            });
            let r = (|| {
                let files = match &work {
                    Some(d) => {
                        std::fs::create_dir_all(d)?;
                        Some(pytorch_files(&bm, d)?)
                    }
                    None => None,
                };
                let p1 = bench_pytorch(py, files.as_ref(), steps, rounds, 1)?;
                let p2 = bench_pytorch(py, files.as_ref(), steps, rounds, 2)?;
                anyhow::Ok((p1, p2))
            })();
            if let Some(d) = &work {
                let _ = std::fs::remove_dir_all(d);
            }
            let (p1, p2) = r?;
            println!("  PyTorch, 1 thread           {}", show(p1));
            println!("  PyTorch, 2 threads          {}", show(p2));
            println!(
                "  ratio (median)              {:.2}x on 1 thread, {:.2}x on 2",
                t1.median / p1.median,
                t2.median / p2.median
            );
            Some((p1, p2))
        }
        None => {
            println!("  PyTorch: not measured in this run (--pytorch PYTHON, with torch installed, runs bench/pytorch_train.py beside it)");
            None
        }
    };
    if json {
        println!(
            "{}",
            json!({"train_1t": t1, "train_2t": t2, "pytorch_1t": torch.map(|t| t.0), "pytorch_2t": torch.map(|t| t.1)})
        );
    }
    Ok(())
}

pub fn runtime(model: &Path, iters: usize, json: bool) -> anyhow::Result<()> {
    let (us, macs) = cmd_bench_runtime(model, iters)?;
    println!("int8 inference, 1 thread, batch 1       us/inference");
    println!(
        "  this runtime (host)                   {us:>8.1}   ({:.2} GMAC/s)",
        macs as f64 / us / 1e3
    );
    println!(
        "  ONNX Runtime int8 QDQ                 {:>8}   (bench/PEERS.md, quoted)",
        "~34"
    );
    println!("  TFLite Micro, x86 reference kernels   {:>8}", "~475");
    if json {
        println!("{}", json!({"us_per_inference": us, "macs": macs}));
    }
    Ok(())
}

pub fn tflite(dir: &Path, device: bool, work: &Path, json: bool) -> anyhow::Result<()> {
    let rows = crate::deploy::tflite::compare::cmd_bench_tflite(dir, device, work)?;
    let opt = |v: Option<u64>| v.map_or("-".to_string(), group);
    println!("| model | MACs | .tflite B | blob B | TFLM arena B | arena B | of which activations B | equal to TFLM (host / device) | instructions | per MAC | stack B | static RAM B |");
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &rows {
        let per_mac = r
            .instructions
            .filter(|_| r.macs > 0)
            .map_or("-".to_string(), |i| {
                format!("{:.2}", i as f64 / r.macs as f64)
            });
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {}/{} / {} | {} | {} | {} | {} |",
            r.name,
            group(r.macs as u64),
            group(r.tflite_bytes as u64),
            group(r.blob_bytes as u64),
            group(r.tflm_arena_bytes),
            group(r.arena_bytes as u64),
            group(r.activation_bytes as u64),
            r.host_equal,
            r.inputs,
            r.device_equal
                .map_or("-".into(), |d| format!("{d}/{}", r.inputs)),
            opt(r.instructions),
            per_mac,
            opt(r.stack_bytes.map(|s| s as u64)),
            opt(r.static_ram_bytes),
        );
    }
    for r in &rows {
        if r.removed_channels > 0 {
            println!(
                "{}: {} output channels removed (all-zero weights, or reading only constants at \
                 their zero point; folded into their consumers); outputs as in the row above",
                r.name, r.removed_channels
            );
        }
    }
    for r in &rows {
        if let Some(t) = r.top1 {
            let pct = |k: usize| format!("{:.1} %", 100.0 * k as f64 / t.of as f64);
            println!(
                "{}: top-1 on its {} labelled inputs: host runtime {} ({}), TFLM {} ({}), device {}",
                r.name,
                t.of,
                pct(t.host),
                t.host,
                pct(t.tflm),
                t.tflm,
                t.device
                    .map_or("not run".into(), |d| format!("{} ({d})", pct(d)))
            );
        }
    }
    for r in &rows {
        if let Some(elf) = &r.elf {
            println!(
                "{}: {} ({} MACs)",
                r.name,
                elf.display(),
                group(r.macs as u64)
            );
        }
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    }
    Ok(())
}
