//! The command-line interface: `train`, `eval`, `export`, `inspect`, `predict`, `bench`, `demo`.

pub mod device;

use crate::deploy::inspect::*;
use crate::deploy::predict::*;
use crate::deploy::run::*;
use crate::report::bench::*;
use crate::report::detect::*;
use crate::report::eval::*;
use crate::report::train::*;
use crate::report::visualize_cmd::*;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Train small CNNs, quantize them to int8 and run them on a Cortex-M"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a model (defaults: ref-cnn on the bundled MNIST 8k/2k split), optionally
    /// fine-tuning from a checkpoint (--init-from, --freeze).
    Train(TrainCmd),
    /// Accuracy and confusion matrix of a checkpoint.
    Eval(EvalArgs),
    /// Fold BatchNorm, calibrate, quantize to int8 and write the runtime's model blob.
    Export(ExportArgs),
    /// Per-layer table of a model blob: shapes, MACs, bytes, quantization.
    Inspect {
        /// Model blob (what `export` wrote).
        model: PathBuf,
    },
    /// Run a model blob on the host runtime on one image (PNG path or test-split index).
    Predict(PredictArgs),
    /// Grid detector on the test canvases: mAP on the host runtime, a PNG of the boxes, and
    /// (with --baseline) the sliding-window classifier beside it.
    Detect(DetectArgs),
    /// PNGs of what a trained CNN learned: first-layer filters, activation maps for one test
    /// image, and the test images that excite one channel most.
    Visualize(VisualizeArgs),
    /// Selective-search proposals on the detection test canvases: recall at IoU 0.5 against
    /// the number of proposals per image.
    Proposals(crate::detect::rcnn::ProposalsArgs),
    /// R-CNN on the detection canvases: selective search, warped proposals, an 11-way
    /// classifier fine-tuned from a digit classifier (optionally also from scratch), box
    /// regression, per-class NMS; mAP after every epoch.
    Rcnn(crate::detect::rcnn::RcnnArgs),
    /// Sliding window, selective search + R-CNN and the grid detector on the same 1,000 test
    /// canvases: one markdown table (mAP, proposals, MACs, host time per image).
    Compare(crate::detect::compare::CompareArgs),
    /// Benchmarks that print figures (never assertions).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// The whole journey: train, export, host runtime, firmware in QEMU, parity, report.
    Demo(crate::report::demo::DemoArgs),
    /// Build the firmware for a model blob and a board; on the emulated board run test inputs,
    /// check them byte for byte against the host runtime and print instructions per layer.
    Device(crate::cli::device::DeviceArgs),
}

#[derive(Subcommand)]
pub enum BenchWhat {
    /// Training images/s of ref-cnn at batch 64 on 1 and 2 threads: several rounds, median
    /// and spread, beside PyTorch's from the same run when --pytorch is given.
    Train {
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

/// `train`'s arguments: the training run and, optionally, where it starts from.
#[derive(Args, Clone, Debug)]
pub struct TrainCmd {
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub finetune: FinetuneArgs,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(TrainCmd { train: a, finetune }) => {
            let r = cmd_train_with(&a, &finetune)?;
            println!(
                "{}: {} params, {} epochs, test accuracy {:.2}%, {:.1}s training ({:.0} images/s); checkpoint {}, curves {}",
                r.arch, r.params, r.epochs, r.test_accuracy * 100.0, r.train_seconds, r.images_per_second, r.checkpoint.display(), r.plot.display()
            );
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        Command::Eval(a) => {
            let r = cmd_eval(&a)?;
            println!(
                "accuracy {:.2}% on {} images (loss {:.4})",
                r.accuracy * 100.0,
                r.images,
                r.loss
            );
            print_confusion(&r.confusion);
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        Command::Export(a) => {
            let r = cmd_export(&a)?;
            // The peers' figures (bench/PEERS.md, quoted) are for ref-cnn only.
            let ref_cnn = r.reference_cnn;
            let peer = |t: &'static str| if ref_cnn { t } else { "" };
            println!(
                "wrote {} ({} bytes{})",
                r.out.display(),
                r.blob_bytes,
                peer("; TFLite int8 file of ref-cnn: 13,688")
            );
            println!(
                "planned arena {} bytes{}, {} MACs",
                r.arena_bytes,
                peer(" (TFLite Micro: 10,080)"),
                r.macs
            );
            println!(
                "test accuracy on {} images: float {:.2}%, int8 {:.2}%, top-1 agreement {:.2}%, max |logit diff| {:.4}",
                r.test_images, r.float_accuracy * 100.0, r.int8_accuracy * 100.0, r.top1_agreement * 100.0, r.max_abs_logit_diff
            );
            if r.int8_map50 > 0.0 {
                println!(
                    "detection on {} canvases: mAP@0.5 float {:.3}, int8 {:.3}; mAP@[.5:.95] float {:.3}, int8 {:.3}",
                    r.test_images, r.float_map50, r.int8_map50, r.float_map_coco, r.int8_map_coco
                );
            }
            if r.int8_mean_iou > 0.0 {
                println!(
                    "mean IoU of boxes: float {:.3}, int8 {:.3}",
                    r.float_mean_iou, r.int8_mean_iou
                );
            }
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        Command::Inspect { model } => print!("{}", cmd_inspect(&model)?),
        Command::Visualize(a) => {
            for f in cmd_visualize(&a)? {
                println!("wrote {}", f.display());
            }
        }
        Command::Detect(a) => {
            let rows = cmd_detect(&a)?;
            println!(
                "{:<52} {:>8} {:>12} {:>12} {:>8} {:>8} {:>10}",
                "method (1,000 test canvases)",
                "mAP@0.5",
                "mAP@.5:.95",
                "MACs/image",
                "flash B",
                "arena B",
                "host ms"
            );
            let opt = |v: Option<usize>| v.map_or("-".to_string(), |v| v.to_string());
            for r in &rows {
                println!(
                    "{:<52} {:>8.3} {:>12.3} {:>12} {:>8} {:>8} {:>10.2}",
                    r.method,
                    r.map50,
                    r.map_coco,
                    r.macs_per_image,
                    opt(r.flash_bytes),
                    opt(r.arena_bytes),
                    r.host_ms_per_image
                );
            }
            if a.json {
                println!("{}", serde_json::to_string(&rows)?);
            }
        }
        Command::Predict(a) => {
            print!("{}", cmd_predict(&a)?.to_text());
        }
        Command::Bench {
            what:
                BenchWhat::Train {
                    steps,
                    rounds,
                    pytorch,
                    json,
                },
        } => {
            let (t1, t2) = cmd_bench_train(steps, rounds)?;
            let show = |s: Spread| format!("{:>8.0}  ({:.0}-{:.0})", s.median, s.min, s.max);
            println!("ref-cnn training, batch 64, {rounds} rounds of {steps} steps: images/s median (min-max)");
            println!("  this trainer, 1 thread      {}", show(t1));
            println!("  this trainer, 2 threads     {}", show(t2));
            let torch = match &pytorch {
                Some(py) => {
                    let p1 = bench_pytorch(py, steps, rounds, 1)?;
                    let p2 = bench_pytorch(py, steps, rounds, 2)?;
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
        }
        Command::Bench {
            what: BenchWhat::Runtime { model, iters, json },
        } => {
            let (us, macs) = cmd_bench_runtime(&model, iters)?;
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
        }
        Command::Demo(a) => crate::report::demo::run(&a)?,
        Command::Device(a) => {
            let r = crate::cli::device::cmd_device(&a)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", r.to_text());
            }
        }
        Command::Proposals(a) => crate::detect::rcnn::cmd_proposals(&a)?,
        Command::Compare(a) => {
            let c = crate::detect::compare::compare(&a)?;
            let md = c.to_markdown();
            print!("{md}");
            if let Some(p) = &a.out {
                crate::io::write_atomic(p, md.as_bytes())?;
            }
            if a.json {
                println!("{}", serde_json::to_string(&c)?);
            }
        }
        Command::Rcnn(a) => {
            let r = crate::detect::rcnn::cmd_rcnn(&a)?;
            let e = r.final_eval;
            println!(
                "R-CNN (fine-tuned, {} epochs) on the 1,000 test canvases: mAP@0.5 {:.3}, mAP@[.5:.95] {:.3}; {:.1} proposals, {:.2} M MACs, {:.2} ms + {:.2} ms proposals per image",
                a.epochs, e.map50, e.map_coco, e.proposals_per_image, e.macs_per_image / 1e6, e.ms_per_image, r.proposal_ms_per_image
            );
            let ep =
                |v: Option<usize>| v.map_or("not reached".to_string(), |e| format!("epoch {e}"));
            println!(
                "mAP@0.5 >= {}: fine-tuned {}, from scratch {}",
                crate::detect::rcnn::TARGET_MAP50,
                ep(r.finetuned_epochs_to_target),
                if a.scratch {
                    ep(r.scratch_epochs_to_target)
                } else {
                    "not run (--scratch)".into()
                }
            );
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
    }
    Ok(())
}
