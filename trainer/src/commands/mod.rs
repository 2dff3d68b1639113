//! The command line: one file per command, holding its arguments (the only place clap is
//! used, with `main.rs`), the work it orchestrates over the library, its report and the
//! printing. `DataArgs` (`data.rs`) is the data options most of them flatten in.

pub mod bench;
pub mod compare;
pub mod data;
pub mod demo;
pub mod detect;
pub mod device;
pub mod eval;
pub mod export;
pub mod import;
pub mod inspect;
pub mod predict;
pub mod proposals;
pub mod rcnn;
pub mod sample_data;
pub mod train;
pub mod two_stage;
pub mod visualize;

use crate::commands::bench::BenchWhat;
use crate::commands::compare::CompareArgs;
use crate::commands::demo::DemoArgs;
use crate::commands::detect::DetectArgs;
use crate::commands::device::DeviceArgs;
use crate::commands::eval::EvalArgs;
use crate::commands::export::ExportArgs;
use crate::commands::import::ImportArgs;
use crate::commands::inspect::InspectArgs;
use crate::commands::predict::PredictArgs;
use crate::commands::proposals::ProposalsArgs;
use crate::commands::rcnn::RcnnArgs;
use crate::commands::sample_data::SampleDataArgs;
use crate::commands::train::TrainCmd;
use crate::commands::two_stage::TwoStageArgs;
use crate::commands::visualize::VisualizeArgs;

use clap::{Parser, Subcommand};

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
    /// Write an example PNG data set (three shapes) in the layout `train --data` reads.
    SampleData(SampleDataArgs),
    /// Fold BatchNorm, calibrate, quantize to int8 and write the runtime's model blob.
    Export(ExportArgs),
    /// Convert a fully-int8 TensorFlow Lite model (.tflite) to a model blob that computes
    /// what TensorFlow Lite Micro computes, byte for byte; prints the blob's table.
    Import(ImportArgs),
    /// Per-layer table of a model blob: shapes, MACs, bytes, quantization.
    Inspect(InspectArgs),
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
    Proposals(ProposalsArgs),
    /// R-CNN on the detection canvases: selective search, warped proposals, an 11-way
    /// classifier fine-tuned from a digit classifier (optionally also from scratch), box
    /// regression, per-class NMS; mAP after every epoch.
    Rcnn(RcnnArgs),
    /// Fast R-CNN on the detection canvases: the trunk runs once per image, selective-search
    /// proposals are RoI-pooled from its feature map; per-epoch mAP, a checkpoint.
    FastRcnn(TwoStageArgs),
    /// Faster R-CNN on the detection canvases: a region proposal network on the same feature
    /// map replaces selective search (joint training); per-epoch mAP, a checkpoint.
    FasterRcnn(TwoStageArgs),
    /// Every detector (sliding window, R-CNN, Fast and Faster R-CNN, the grid detector) on the
    /// same 1,000 test canvases: one markdown table (mAP, proposals, MACs, host time per image).
    Compare(CompareArgs),
    /// Benchmarks that print figures (never assertions).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// The whole journey: train, export, host runtime, firmware in QEMU, parity, report.
    Demo(DemoArgs),
    /// Build the firmware for a model blob and a board; on the emulated board run test inputs,
    /// check them byte for byte against the host runtime and print instructions per layer.
    Device(DeviceArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(a) => train::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::SampleData(a) => sample_data::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Import(a) => import::run(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Predict(a) => predict::run(&a),
        Command::Detect(a) => detect::run(&a),
        Command::Visualize(a) => visualize::run(&a),
        Command::Proposals(a) => proposals::run(&a),
        Command::Rcnn(a) => rcnn::run(&a),
        Command::FastRcnn(a) => two_stage::run(&a, false),
        Command::FasterRcnn(a) => two_stage::run(&a, true),
        Command::Compare(a) => compare::run(&a),
        Command::Bench { what } => bench::run(what),
        Command::Demo(a) => demo::run(&a),
        Command::Device(a) => device::run(&a),
    }
}
