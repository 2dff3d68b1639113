//! The command-line interface: `train`, `eval`, `export`, `inspect`, `predict`, `bench`, `demo`.

pub mod bench;
pub mod compare;
pub mod detect;
pub mod device;
pub mod eval;
pub mod export;
pub mod import;
pub mod rcnn;
pub mod train;

use crate::deploy::inspect::*;
use crate::deploy::predict::*;
use crate::deploy::run::*;
use crate::report::detect::*;
use crate::report::eval::*;
use crate::report::train::*;
use crate::report::visualize_cmd::*;

use clap::{Args, Parser, Subcommand};
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
    /// Convert a fully-int8 TensorFlow Lite model (.tflite) to a model blob that computes
    /// what TensorFlow Lite Micro computes, byte for byte; prints the blob's table.
    Import(crate::deploy::tflite::ImportArgs),
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
    /// Fast R-CNN on the detection canvases: the trunk runs once per image, selective-search
    /// proposals are RoI-pooled from its feature map; per-epoch mAP, a checkpoint.
    FastRcnn(crate::detect::two_stage_cmd::TwoStageArgs),
    /// Faster R-CNN on the detection canvases: a region proposal network on the same feature
    /// map replaces selective search (joint training); per-epoch mAP, a checkpoint.
    FasterRcnn(crate::detect::two_stage_cmd::TwoStageArgs),
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
    Device(crate::deploy::board::DeviceArgs),
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
        Command::Train(TrainCmd { train, finetune }) => train::run(&train, &finetune)?,
        Command::Eval(a) => eval::run(&a)?,
        Command::Export(a) => export::run(&a)?,
        Command::Import(a) => import::run(&a)?,
        Command::Inspect { model } => print!("{}", cmd_inspect(&model)?),
        Command::Visualize(a) => {
            for f in cmd_visualize(&a)? {
                println!("wrote {}", f.display());
            }
        }
        Command::Detect(a) => detect::run(&a)?,
        Command::Predict(a) => print!("{}", cmd_predict(&a)?.to_text()),
        Command::Bench {
            what:
                BenchWhat::Train {
                    steps,
                    rounds,
                    pytorch,
                    json,
                },
        } => bench::train(steps, rounds, pytorch.as_deref(), json)?,
        Command::Bench {
            what: BenchWhat::Runtime { model, iters, json },
        } => bench::runtime(&model, iters, json)?,
        Command::Bench {
            what:
                BenchWhat::Tflite {
                    dir,
                    no_device,
                    work,
                    json,
                },
        } => bench::tflite(&dir, !no_device, &work, json)?,
        Command::Demo(a) => crate::report::demo::run(&a)?,
        Command::Device(a) => device::run(&a)?,
        Command::Proposals(a) => crate::detect::rcnn::cmd_proposals(&a)?,
        Command::Compare(a) => compare::run(&a)?,
        Command::Rcnn(a) => rcnn::run(&a)?,
        Command::FastRcnn(a) => rcnn::run_two_stage(&a, false)?,
        Command::FasterRcnn(a) => rcnn::run_two_stage(&a, true)?,
    }
    Ok(())
}
