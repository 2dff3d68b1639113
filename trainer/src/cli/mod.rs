//! The command-line interface: `train`, `eval`, `export`, `inspect`, `predict`, `bench`, `demo`.

pub mod device;

use crate::data::{default_data_dir, find_pair, load_pair, split, Dataset};
use crate::deploy::export::{quantize, run_int8};
use crate::nn::model::{ArchSpec, Model};
use crate::train::{
    evaluate, train, train_silent, Checkpoint, OptimizerKind, TrainConfig, CHECKPOINT_FORMAT,
};
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::{Path, PathBuf};

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

/// Where the data comes from and how it is split.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Directory with images-idx3-ubyte[.gz] and labels-idx1-ubyte[.gz], or with one sub-folder
    /// of grayscale PNGs per class (sorted names are classes 0, 1, ...). Default: the bundled
    /// mnist10k.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// First N images are the training split.
    #[arg(long, default_value_t = 8000)]
    pub train_count: usize,
    /// Last N images are the test split.
    #[arg(long, default_value_t = 2000)]
    pub test_count: usize,
    /// Boxes for the images (JSON, see `trainer::data::boxes`): localization and detection models
    /// then train on these images instead of generated canvases.
    #[arg(long)]
    pub boxes: Option<PathBuf>,
    /// Localization/detection: training canvases per training digit (other scale and place).
    #[arg(long, default_value_t = 3)]
    pub canvas_copies: usize,
}

impl Default for DataArgs {
    /// The bundled data, 8,000 / 2,000 split, 3 training canvases per digit.
    fn default() -> Self {
        DataArgs {
            data: None,
            train_count: 8000,
            test_count: 2000,
            boxes: None,
            canvas_copies: 3,
        }
    }
}

/// Seeds of the localization canvases: fixed, so every command sees the same test canvases.
pub const CANVAS_SEEDS: (u64, u64) = (1, 2);
/// Test canvases for localization models.
pub const CANVAS_TEST_COUNT: usize = 1000;

impl DataArgs {
    /// The data a command on `ck` uses: what the user passed with `--data`, or, when they
    /// passed none and the checkpoint was trained on other data, that data (said on stderr).
    pub fn for_checkpoint(&self, ck: &Checkpoint) -> DataArgs {
        match (&self.data, &ck.trained_on) {
            (None, Some(t)) if t.data.is_some() => {
                eprintln!(
                    "note: using the data the checkpoint was trained on: {} ({} / {} split; \
                     --data overrides)",
                    t.data.as_deref().unwrap_or(Path::new("")).display(),
                    t.train_count,
                    t.test_count
                );
                DataArgs {
                    data: t.data.clone(),
                    train_count: t.train_count,
                    test_count: t.test_count,
                    boxes: t.boxes.clone(),
                    canvas_copies: t.canvas_copies,
                }
            }
            _ => self.clone(),
        }
    }

    /// The data an architecture trains on: the IDX images themselves, or for a localization
    /// model single-digit canvases built from them (train digits -> train canvases, test
    /// digits -> 1,000 test canvases).
    pub fn load_for(&self, arch: &ArchSpec) -> anyhow::Result<(Dataset, Dataset)> {
        if let (Some(b), false) = (&self.boxes, arch.boxes || arch.grid) {
            bail!(
                "--boxes {}: architecture '{}' is a classifier and takes no boxes (use loc-cnn, \
                 grid-det or an architecture with boxes or grid set)",
                b.display(),
                arch.name
            );
        }
        if let (Some(b), true) = (&self.boxes, arch.boxes || arch.grid) {
            let dir = self.data.clone().unwrap_or_else(default_data_dir);
            let (i, l) = find_pair(&dir)?;
            let all = crate::data::boxes::attach_boxes_for(
                load_pair(&i, &l, 256)?,
                b,
                arch.classes,
                arch.boxes && !arch.grid,
            )?;
            return Ok(split(&all, self.train_count, self.test_count)?);
        }
        let (train, test) = self.load(arch.classes)?;
        let size = arch.input[0];
        if arch.grid {
            let tr = crate::data::canvas::multi_object(
                &train,
                self.canvas_copies.max(1) * train.len(),
                size,
                CANVAS_SEEDS.0,
            );
            let te = crate::data::canvas::multi_object(
                &test,
                CANVAS_TEST_COUNT.min(test.len()),
                size,
                CANVAS_SEEDS.1,
            );
            return Ok((tr, te));
        }
        if !arch.boxes {
            return Ok((train, test));
        }
        // Each training digit appears on three canvases (other scale and place): cheap augmentation.
        let tr = crate::data::canvas::single_object(
            &train,
            self.canvas_copies.max(1) * train.len(),
            size,
            CANVAS_SEEDS.0,
        );
        let te = crate::data::canvas::single_object(
            &test,
            CANVAS_TEST_COUNT.min(test.len()),
            size,
            CANVAS_SEEDS.1,
        );
        Ok((tr, te))
    }

    pub fn load(&self, classes: usize) -> anyhow::Result<(Dataset, Dataset)> {
        let dir = self.data.clone().unwrap_or_else(default_data_dir);
        let all = match find_pair(&dir) {
            Ok((i, l)) => load_pair(&i, &l, classes)?,
            // No IDX pair: a folder of class sub-folders of PNGs, if that is what it holds.
            Err(e) => match crate::data::load_png_folders(&dir, classes) {
                Some(r) => r?,
                None => return Err(e.into()),
            },
        };
        Ok(split(&all, self.train_count, self.test_count)?)
    }
}

#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Built-in architecture (ref-cnn, loc-cnn, grid-det, tiny-resnet, tiny-inception) or a
    /// .toml/.json architecture file.
    #[arg(long, default_value = "ref-cnn")]
    pub arch: String,
    /// Passes over the training split.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Images per optimizer step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate (after warmup; cosine decay to the last epoch).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// Optimizer: SGD with momentum 0.9, or Adam.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Sgd)]
    pub optimizer: OptimizerKind,
    /// L2 weight decay (0.002 measured +0.15 points mean test accuracy over 4 seeds on ref-cnn).
    #[arg(long, default_value_t = 0.002)]
    pub weight_decay: f32,
    /// Seed of the initialization and of the batch order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Worker threads (1 gives bit-identical results for a seed).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Checkpoint path (written atomically after every epoch).
    #[arg(long, default_value = "runs/model.ckpt.json")]
    pub out: PathBuf,
    /// Loss/accuracy curves PNG (default: next to the checkpoint).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// `train`'s arguments: the training run and, optionally, where it starts from.
#[derive(Args, Clone, Debug)]
pub struct TrainCmd {
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub finetune: FinetuneArgs,
}

/// Fine-tuning: start from a trained checkpoint instead of a fresh initialization.
#[derive(Args, Clone, Debug, Default)]
pub struct FinetuneArgs {
    /// Checkpoint to start from: each layer whose index, kind and parameter shapes match is
    /// copied (with BatchNorm statistics); the others (a replaced or added head) keep their
    /// fresh initialization and are listed by name.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Freeze the first N layers (indices 0..N) at the loaded values: no updates to their
    /// parameters or BatchNorm statistics. ref-cnn: 8 freezes the whole conv trunk.
    #[arg(long, default_value_t = 0, requires = "init_from")]
    pub freeze: usize,
}

#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// Checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Confusion matrix PNG.
    #[arg(long)]
    pub confusion_png: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    /// Checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Model blob to write (what the runtime and the firmware load).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Training images used to calibrate activation ranges (min/max).
    #[arg(long, default_value_t = 500)]
    pub calibration: usize,
    /// Also write the first N test images, quantized, as firmware test vectors to this path.
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// How many test images `--vectors` writes.
    #[arg(long, default_value_t = 100)]
    pub vector_count: usize,
    /// Calibrate on these images even if the checkpoint was trained on others.
    #[arg(long)]
    pub any_data: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone, Debug)]
pub struct VisualizeArgs {
    /// Checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Test image whose activation maps are drawn.
    #[arg(long, default_value_t = 0)]
    pub image: usize,
    /// Conv layer (index in the architecture) and channel for the top-images grid.
    #[arg(long, default_value_t = 0)]
    pub layer: usize,
    #[arg(long, default_value_t = 0)]
    pub channel: usize,
    /// Output directory (must exist).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// Writes `filters.png`, `activations.png` and `top-images.png` into `a.out`.
pub fn cmd_visualize(a: &VisualizeArgs) -> anyhow::Result<Vec<PathBuf>> {
    let mut ck = Checkpoint::load(&a.checkpoint)?;
    let (_, test) = a.data.load_for(&ck.model.arch)?;
    if !a.out.is_dir() {
        bail!("output directory {} does not exist", a.out.display());
    }
    let files = [
        a.out.join("filters.png"),
        a.out.join("activations.png"),
        a.out.join("top-images.png"),
    ];
    crate::report::visualize::filters_png(&ck.model, &files[0])?;
    crate::report::visualize::activations_png(&mut ck.model, &test, a.image, &files[1])?;
    crate::report::visualize::top_images_png(&mut ck.model, &test, a.layer, a.channel, &files[2])?;
    Ok(files.to_vec())
}

#[derive(Args, Clone, Debug)]
pub struct DetectArgs {
    /// A grid-detector blob from `export`.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// PNG of predicted (red) and true (green) boxes on the first test canvases.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// How many canvases the PNG shows.
    #[arg(long, default_value_t = 16)]
    pub count: usize,
    /// Also train and run the sliding-window baseline.
    #[arg(long)]
    pub baseline: bool,
    #[arg(long, default_value_t = 5)]
    pub baseline_epochs: usize,
    #[arg(long)]
    pub json: bool,
}

/// One row of the detection comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DetectRow {
    pub method: String,
    pub map50: f32,
    pub map_coco: f32,
    pub macs_per_image: usize,
    pub flash_bytes: Option<usize>,
    pub arena_bytes: Option<usize>,
    pub host_ms_per_image: f32,
}

/// The detection test set every detector is scored on (the grid detector's, `detect`'s): 1,000
/// multi-digit canvases from the test digits. Returns `(training digits, test canvases)`.
pub fn detection_test_set(data: &DataArgs, size: usize) -> anyhow::Result<(Dataset, Dataset)> {
    let (train_digits, test_digits) = data.load(10)?;
    let test = crate::data::canvas::multi_object(
        &test_digits,
        CANVAS_TEST_COUNT.min(test_digits.len()),
        size,
        CANVAS_SEEDS.1,
    );
    Ok((train_digits, test))
}

pub fn cmd_detect(a: &DetectArgs) -> anyhow::Result<Vec<DetectRow>> {
    let blob = read_blob(&a.model)?;
    let m = runtime::Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let dec = *m
        .grid_decoder()
        .with_context(|| format!("{} is not a grid detector", a.model.display()))?;
    let classes = match m.def().head {
        runtime::format::Head::GridDetector { classes, .. } => classes as usize,
        _ => 0,
    };
    let size = m.def().input.shape.w as usize;
    let (train_digits, test_digits) = a.data.load(classes)?;
    let test = crate::data::canvas::multi_object(
        &test_digits,
        CANVAS_TEST_COUNT.min(test_digits.len()),
        size,
        CANVAS_SEEDS.1,
    );
    let t = std::time::Instant::now();
    let outs = run_int8(&blob, &test)?;
    let preds: Vec<Vec<crate::data::metrics::Pred>> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| crate::detect::grid::preds_from_runtime(&dec.decode(o), size, i))
        .collect();
    let ms = t.elapsed().as_secs_f32() * 1e3 / test.len().max(1) as f32;
    let flat: Vec<_> = preds.iter().flatten().copied().collect();
    let mut rows = vec![DetectRow {
        method: format!("{} int8 (runtime)", m.def().name),
        map50: crate::data::metrics::mean_ap(&flat, &test.objects, classes, 0.5),
        map_coco: crate::data::metrics::mean_ap_coco(&flat, &test.objects, classes),
        macs_per_image: m.macs(),
        flash_bytes: Some(blob.len()),
        arena_bytes: Some(m.arena_bytes()),
        host_ms_per_image: ms,
    }];
    if let Some(p) = &a.png {
        let title = format!(
            "{} int8: red = predicted (class), green = true; mAP@0.5 {:.3}",
            m.def().name,
            rows[0].map50
        );
        crate::report::plots::detections_grid(&test, &preds, a.count, &title, p)?;
    }
    if a.baseline {
        let train_canvases = crate::data::canvas::multi_object(
            &train_digits,
            train_digits.len(),
            size,
            CANVAS_SEEDS.0,
        );
        let mut clf =
            crate::detect::sliding::train_classifier(&train_canvases, a.baseline_epochs, 7)?;
        let t = std::time::Instant::now();
        let sw = crate::detect::sliding::detect(&mut clf, &test);
        let ms = t.elapsed().as_secs_f32() * 1e3 / test.len().max(1) as f32;
        let flat: Vec<_> = sw.iter().flatten().copied().collect();
        rows.push(DetectRow {
            method: format!(
                "sliding window, {} windows x ref-cnn+bg (float)",
                crate::detect::sliding::windows(size).len()
            ),
            map50: crate::data::metrics::mean_ap(&flat, &test.objects, classes, 0.5),
            map_coco: crate::data::metrics::mean_ap_coco(&flat, &test.objects, classes),
            macs_per_image: crate::detect::sliding::windows(size).len() * 290_080,
            flash_bytes: None,
            arena_bytes: None,
            host_ms_per_image: ms,
        });
    }
    Ok(rows)
}

#[derive(Args, Clone, Debug)]
pub struct PredictArgs {
    /// Model blob (what `export` wrote).
    #[arg(long)]
    pub model: PathBuf,
    /// A grayscale PNG of the model's input size (white digit on black, as MNIST; a mostly
    /// bright image is inverted), or an index into the test split (test canvases for
    /// localization and detection models).
    pub image: String,
    /// Scale a PNG of another size to the model's input size.
    #[arg(long)]
    pub resize: bool,
    /// Keep a mostly bright PNG as it is instead of inverting it.
    #[arg(long)]
    pub no_invert: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

/// The built-in architecture whose data a loaded model's kind uses: ref-cnn (with the model's
/// class count) for a classifier, loc-cnn for a localizer, grid-det for a grid detector.
pub fn builtin_arch_for(m: &runtime::Model) -> ArchSpec {
    match m.def().head {
        runtime::format::Head::Classifier { classes } => ArchSpec {
            classes: classes as usize,
            ..ArchSpec::ref_cnn()
        },
        runtime::format::Head::Localizer { .. } => ArchSpec::loc_cnn(),
        runtime::format::Head::GridDetector { .. } => ArchSpec::grid_det(),
    }
}

/// "the bundled mnist10k", or the `--data` directory.
fn data_name(dir: Option<&Path>) -> String {
    dir.map_or("the bundled mnist10k".into(), |p| p.display().to_string())
}

pub fn arch_from(name: &str) -> anyhow::Result<ArchSpec> {
    let p = Path::new(name);
    if p.extension().is_some_and(|e| e == "toml" || e == "json") {
        Ok(ArchSpec::from_file(p)?)
    } else {
        Ok(ArchSpec::builtin(name)?)
    }
}

fn bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30.cyan/blue}] {pos:>4}/{len:4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// Runs `f` on a rayon pool of `threads` workers.
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()?;
    Ok(pool.install(f))
}

/// Result of `train`, also what `--json` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    pub arch: String,
    pub params: usize,
    pub epochs: usize,
    pub test_accuracy: f32,
    pub train_seconds: f32,
    pub images_per_second: f32,
    pub checkpoint: PathBuf,
    pub plot: PathBuf,
    /// With --init-from: what happened to each layer with parameters.
    pub init: Vec<String>,
}

pub fn cmd_train(a: &TrainArgs) -> anyhow::Result<TrainReport> {
    cmd_train_with(a, &FinetuneArgs::default())
}

pub fn cmd_train_with(a: &TrainArgs, ft: &FinetuneArgs) -> anyhow::Result<TrainReport> {
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        bail!(
            "--weight-decay must be zero or a positive number, got {}",
            a.weight_decay
        );
    }
    if a.data.train_count == 0 || a.data.test_count == 0 {
        bail!(
            "--train-count and --test-count must be at least 1 (got {} and {}): the test split \
             is what the reported accuracy is measured on",
            a.data.train_count,
            a.data.test_count
        );
    }
    let arch = arch_from(&a.arch)?;
    let (train_set, test_set) = a.data.load_for(&arch)?;
    if [train_set.h, train_set.w, 1] != arch.input {
        bail!(
            "data images are {}x{}x1 but architecture '{}' expects {:?}",
            train_set.h,
            train_set.w,
            arch.name,
            arch.input
        );
    }
    if a.out.parent().is_some_and(|d| d == Path::new("runs")) {
        std::fs::create_dir_all("runs")?;
    }
    let plot = a
        .plot
        .clone()
        .unwrap_or_else(|| a.out.with_extension("").with_extension("curves.png"));
    // Fail before training, not after it, when an output cannot be written.
    for p in [&a.out, &plot] {
        crate::io::check_writable(p)?;
    }
    if a.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        optimizer: a.optimizer,
        momentum: 0.9,
        weight_decay: a.weight_decay,
        seed: a.seed,
        frozen_layers: (0..ft.freeze).collect(),
    };
    let mut model = Model::new(arch.clone(), &mut ChaCha8Rng::seed_from_u64(a.seed))?;
    if ft.freeze > arch.layers.len() {
        bail!(
            "--freeze {}: architecture '{}' has {} layers",
            ft.freeze,
            arch.name,
            arch.layers.len()
        );
    }
    let mut init = Vec::new();
    if let Some(p) = &ft.init_from {
        let source = Checkpoint::load(p)?;
        let r = crate::train::finetune::init_from(&mut model, &source.model);
        if r.copied() == 0 {
            bail!(
                "--init-from {}: no layer of '{}' matches architecture '{}' (index, kind and shapes)",
                p.display(),
                source.model.arch.name,
                arch.name
            );
        }
        init = r.lines();
        for l in &init {
            eprintln!("init from {}: {l}", p.display());
        }
    }
    let steps = (train_set.len() / a.batch_size.max(1)) as u64;
    let quiet = a.quiet;
    let grid = arch.grid;
    let trained_on = crate::train::TrainedOn {
        data: a.data.data.clone(),
        train_count: a.data.train_count,
        test_count: a.data.test_count,
        boxes: a.data.boxes.clone(),
        canvas_copies: a.data.canvas_copies,
        train_fingerprint: crate::train::fingerprint(&train_set),
    };
    let pb = std::sync::Mutex::new(bar(steps, quiet));
    let mut history_so_far = Vec::new();
    let out = a.out.clone();
    let cfg2 = cfg.clone();
    let history = with_threads(a.threads, || {
        train(
            &mut model,
            &train_set,
            &test_set,
            &cfg2,
            |epoch, s, _n, loss, acc| {
                let Ok(mut pb) = pb.lock() else { return };
                if s == 1 {
                    *pb = bar(steps, quiet);
                    pb.set_prefix(format!("epoch {epoch}"));
                }
                pb.set_position(s as u64);
                if s % 10 == 0 {
                    pb.set_message(format!("loss {loss:.4} acc {:.2}%", acc * 100.0));
                }
            },
            |m, e| {
                if let Ok(pb) = pb.lock() {
                    pb.finish_and_clear();
                }
                if !quiet {
                    // A grid detector has no per-image class (and its test pass measures mAP,
                    // not a loss): show only the figures that mean something for it.
                    let figures = if grid {
                        format!(
                            "train loss {:.4} | test mAP@0.5 {:.3}",
                            e.train_loss, e.test_map50
                        )
                    } else {
                        format!(
                            "train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}%{}",
                            e.train_loss,
                            e.train_accuracy * 100.0,
                            e.test_loss,
                            e.test_accuracy * 100.0,
                            if e.test_mean_iou > 0.0 {
                                format!(" mean IoU {:.3}", e.test_mean_iou)
                            } else {
                                String::new()
                            }
                        )
                    };
                    eprintln!(
                        "epoch {:>2}: {figures} | lr {:.4} | {:.1}s",
                        e.epoch, e.lr, e.seconds
                    );
                }
                history_so_far.push(e.clone());
                // The checkpoint after every epoch is the "last good" one if a later step fails.
                Checkpoint {
                    format: CHECKPOINT_FORMAT.into(),
                    model: m.clone(),
                    config: cfg2.clone(),
                    history: history_so_far.clone(),
                    trained_on: Some(trained_on.clone()),
                }
                .save(&out)
            },
        )
    })??;
    crate::report::plots::training_curves(&history, &plot)?;
    let train_seconds: f32 = history.iter().map(|m| m.seconds).sum();
    let last = history.last().context("no epochs were run (--epochs 0)")?;
    Ok(TrainReport {
        arch: arch.name.clone(),
        params: model.param_count(),
        epochs: history.len(),
        test_accuracy: last.test_accuracy,
        train_seconds,
        images_per_second: (steps as usize * a.batch_size * history.len()) as f32
            / train_seconds.max(1e-6),
        checkpoint: a.out.clone(),
        plot,
        init,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub accuracy: f32,
    pub loss: f32,
    pub images: usize,
    pub confusion: Vec<Vec<usize>>,
}

pub fn cmd_eval(a: &EvalArgs) -> anyhow::Result<EvalReport> {
    let mut ck = Checkpoint::load(&a.checkpoint)?;
    let (_, test) = a.data.for_checkpoint(&ck).load_for(&ck.model.arch)?;
    let (loss, accuracy, preds) = evaluate(&mut ck.model, &test, 500);
    let confusion = crate::report::plots::confusion(&test.labels, &preds, ck.model.arch.classes);
    if let Some(p) = &a.confusion_png {
        crate::report::plots::confusion_matrix(
            &confusion,
            &format!(
                "{} float, test accuracy {:.2}%",
                ck.model.arch.name,
                accuracy * 100.0
            ),
            p,
        )?;
    }
    Ok(EvalReport {
        accuracy,
        loss,
        images: test.len(),
        confusion,
    })
}

pub fn print_confusion(cm: &[Vec<usize>]) {
    print!("true\\pred");
    for p in 0..cm.len() {
        print!("{p:>6}");
    }
    println!();
    for (t, row) in cm.iter().enumerate() {
        print!("{t:>9}");
        for n in row {
            print!("{n:>6}");
        }
        println!();
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub blob_bytes: usize,
    pub arena_bytes: usize,
    pub macs: usize,
    pub float_accuracy: f32,
    pub int8_accuracy: f32,
    pub top1_agreement: f32,
    pub max_abs_logit_diff: f32,
    /// Grid detectors: mAP@0.5 and mAP@[.5:.95] (0 for other models).
    pub float_map50: f32,
    pub float_map_coco: f32,
    pub int8_map50: f32,
    pub int8_map_coco: f32,
    /// Localization models: mean IoU of the boxes (0 for classifiers).
    pub float_mean_iou: f32,
    pub int8_mean_iou: f32,
    pub test_images: usize,
    pub out: PathBuf,
}

pub fn cmd_export(a: &ExportArgs) -> anyhow::Result<ExportReport> {
    // Every output is checked before the work: nothing is written half-way.
    crate::io::check_writable(&a.out)?;
    if let Some(v) = &a.vectors {
        crate::io::check_writable(v)?;
    }
    if a.calibration == 0 {
        bail!("--calibration must be at least 1 image (activation ranges come from them)");
    }
    let mut ck = Checkpoint::load(&a.checkpoint)?;
    let data = a.data.for_checkpoint(&ck);
    let (train_set, test) = data.load_for(&ck.model.arch)?;
    if let Some(t) = &ck.trained_on {
        let fp = crate::train::fingerprint(&train_set);
        if fp != t.train_fingerprint && !a.any_data {
            bail!(
                "{} was trained on other images ({}, {} training images) than these ({}, {}): \
                 calibrating on them gives another blob. Pass the same --data and \
                 --train-count, or --any-data to calibrate on these anyway",
                a.checkpoint.display(),
                data_name(t.data.as_deref()),
                t.train_count,
                data_name(data.data.as_deref()),
                data.train_count
            );
        }
    }
    let blob = quantize(&ck.model, &train_set, a.calibration)?;
    let rt = runtime::Model::from_bytes(&blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (arena_bytes, macs) = (rt.arena_bytes(), rt.macs());
    let out_q = rt.def().output.quant;
    let int8 = run_int8(&blob, &test)?;
    let classes = ck.model.arch.classes;
    let (mut agree, mut correct_q, mut correct_f, mut max_diff) = (0usize, 0usize, 0usize, 0f32);
    let (mut iou_f, mut iou_q) = (0f64, 0f64);
    let idx: Vec<usize> = (0..test.len()).collect();
    for chunk in idx.chunks(500) {
        let (x, y) = test.batch(chunk);
        let logits = ck.model.predict(x);
        for ((row, &t), &i) in logits.outer_iter().zip(&y).zip(chunk) {
            let f = row.as_slice().unwrap_or(&[]);
            let pf = crate::train::argmax_f32(&f[..classes]);
            let pq = runtime::argmax(&int8[i][..classes]).unwrap_or(0);
            if let Some(dec) = rt.box_decoder() {
                let b = dec.decode(&int8[i]).bbox;
                let s = 16.0 * test.w as f32;
                let q = [
                    b.x0 as f32 / s,
                    b.y0 as f32 / s,
                    b.x1 as f32 / s,
                    b.y1 as f32 / s,
                ];
                iou_q += crate::data::canvas::iou(q, test.boxes[i]) as f64;
                let w = test.w as f32;
                let fb = [
                    f[classes] / w,
                    f[classes + 1] / w,
                    f[classes + 2] / w,
                    f[classes + 3] / w,
                ];
                iou_f += crate::data::canvas::iou(fb, test.boxes[i]) as f64;
            }
            agree += (pf == pq) as usize;
            correct_f += (pf == t) as usize;
            correct_q += (pq == t) as usize;
            for (&q, &fv) in int8[i].iter().zip(f) {
                max_diff = max_diff.max((out_q.dequantize(q) - fv).abs());
            }
        }
    }
    // Grid detectors: mAP of the float model and of the runtime's integer decoding.
    let mut maps = [0f32; 4];
    if let Some(dec) = rt.grid_decoder() {
        let c = ck.model.arch.classes;
        let (float_map50, float_coco) = crate::detect::grid::evaluate_map(&mut ck.model, &test);
        let preds: Vec<_> = int8
            .iter()
            .enumerate()
            .flat_map(|(i, o)| crate::detect::grid::preds_from_runtime(&dec.decode(o), test.w, i))
            .collect();
        maps = [
            float_map50,
            float_coco,
            crate::data::metrics::mean_ap(&preds, &test.objects, c, 0.5),
            crate::data::metrics::mean_ap_coco(&preds, &test.objects, c),
        ];
    }
    crate::io::write_atomic(&a.out, &blob)?;
    if let Some(p) = &a.vectors {
        crate::io::write_atomic(p, &test_vectors(&blob, &test, a.vector_count)?)?;
    }
    let n = test.len().max(1) as f32;
    Ok(ExportReport {
        blob_bytes: blob.len(),
        arena_bytes,
        macs,
        float_accuracy: correct_f as f32 / n,
        int8_accuracy: correct_q as f32 / n,
        top1_agreement: agree as f32 / n,
        max_abs_logit_diff: max_diff,
        float_map50: maps[0],
        float_map_coco: maps[1],
        int8_map50: maps[2],
        int8_map_coco: maps[3],
        float_mean_iou: (iou_f / n as f64) as f32,
        int8_mean_iou: (iou_q / n as f64) as f32,
        test_images: test.len(),
        out: a.out.clone(),
    })
}

/// Firmware test-vector file: u32 LE count, u32 LE bytes per input, then the int8 inputs
/// quantized with the model's input parameters (the first `count` images of `data`).
pub fn test_vectors(blob: &[u8], data: &Dataset, count: usize) -> anyhow::Result<Vec<u8>> {
    let m = runtime::Model::from_bytes(blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(test_vectors_for(&m, data, count))
}

/// [`test_vectors`] for an already loaded model.
pub fn test_vectors_for(m: &runtime::Model, data: &Dataset, count: usize) -> Vec<u8> {
    let n = count.min(data.len());
    let len = m.input_len();
    let mut out = Vec::with_capacity(8 + n * len);
    out.extend((n as u32).to_le_bytes());
    out.extend((len as u32).to_le_bytes());
    let mut x = vec![0i8; len];
    for i in 0..n {
        crate::deploy::export::quantize_image(data.image(i), m.def().input.quant, &mut x);
        out.extend(x.iter().map(|&v| v as u8));
    }
    out
}

pub fn read_blob(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read model blob {}", path.display()))
}

pub fn cmd_inspect(path: &Path) -> anyhow::Result<String> {
    use runtime::format::OutputStage;
    use runtime::Layer;
    use std::fmt::Write;
    let blob = read_blob(path)?;
    let m = runtime::Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // The layer list as written (the model keeps it resolved, in layer_info).
    let d = runtime::decode_def(&blob).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut s = String::new();
    writeln!(
        s,
        "model '{}' ({} bytes, format v{}, head {:?})",
        d.name,
        blob.len(),
        runtime::format::FORMAT_VERSION,
        d.head
    )?;
    let q = |t: &runtime::TensorSpec| {
        format!(
            "{:?} scale {:.6} zp {}",
            t.shape.dims(),
            t.quant.scale,
            t.quant.zero_point
        )
    };
    writeln!(s, "input  {}", q(&d.input))?;
    let row = |s: &mut String, c: [&str; 10]| {
        writeln!(
            s,
            "{:<3} {:<15} {:>9} {:>9} {:<22} {:>8} {:>7} {:>6} {:<19} {}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
        )
    };
    row(
        &mut s,
        [
            "#",
            "op",
            "in",
            "out",
            "params",
            "MACs",
            "flash B",
            "act B",
            "requant M (min-max)",
            "out zp / clamp",
        ],
    )?;
    // Real requantization multipliers of a stage, and its zero point and clamp.
    let stage = |o: &OutputStage| {
        let ms: Vec<f64> = o.channels().map(|(_, q)| q.to_real()).collect();
        let (lo, hi) = ms
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
        (
            format!("{lo:.2e}-{hi:.2e}"),
            format!("{} [{}, {}]", o.zero_point, o.act_min, o.act_max),
        )
    };
    for (i, (node, info)) in d.layers.iter().zip(m.layer_info()).enumerate() {
        let l = &node.layer;
        // Inputs other than the previous layer's output (graph edges), as tensor ids.
        let from = if node.inputs.len() == 1 && node.inputs[0] as usize == i {
            String::new()
        } else {
            let ids: Vec<String> = node.inputs.iter().map(|t| format!("t{t}")).collect();
            format!("({}) ", ids.join(","))
        };
        let (params, (mr, zp)) = match l {
            Layer::Conv2d(c) | Layer::DepthwiseConv2d(c) => (
                format!(
                    "k{}x{} s{} p{}{}",
                    c.kernel_h,
                    c.kernel_w,
                    c.stride,
                    c.padding,
                    c.pool
                        .map_or(String::new(), |p| format!(" +maxpool{}", p.kernel))
                ),
                stage(&c.output),
            ),
            Layer::FullyConnected(f) => (
                format!("{}->{}", f.in_features, f.out_features),
                stage(&f.output),
            ),
            Layer::MaxPool2d(p) | Layer::AvgPool2d(p) => (
                format!("k{} s{} p{}", p.kernel, p.stride, p.padding),
                ("-".into(), "same as input".into()),
            ),
            Layer::GlobalAvgPool => (String::new(), ("-".into(), "same as input".into())),
            Layer::Add(a) => (
                String::new(),
                (
                    format!("{:.2e}", a.requant[2].to_real()),
                    format!("{} [{}, {}]", a.zero_point, a.act_min, a.act_max),
                ),
            ),
            Layer::Concat => (String::new(), ("-".into(), "same as inputs".into())),
        };
        let params = from + &params;
        let dims = |d: [u16; 3]| format!("{}x{}x{}", d[0], d[1], d[2]);
        let cells = [
            i.to_string(),
            l.name().to_string(),
            dims(info.in_shape.dims()),
            dims(info.out_shape.dims()),
            params,
            info.macs.to_string(),
            info.param_bytes.to_string(),
            info.out_shape.len().to_string(),
            mr,
            zp,
        ];
        row(&mut s, cells.each_ref().map(|c| c.as_str()))?;
    }
    writeln!(s, "output {}", q(&d.output))?;
    let pbytes: usize = m.layer_info().iter().map(|l| l.param_bytes).sum();
    let (arena, live, naive) = m.arena_figures();
    writeln!(
        s,
        "totals: flash {} B (blob; {} B weights/bias/requant), RAM {} B arena (most bytes live at one step: {} B; every tensor live at once: {} B), {} MACs",
        blob.len(),
        pbytes,
        arena,
        live,
        naive,
        m.macs()
    )?;
    Ok(s)
}

/// What `predict` found for one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PredictReport {
    /// Classifier or localizer: the predicted class (first maximum of the class logits).
    pub class: Option<usize>,
    /// The true class of a test-split image.
    pub label: Option<usize>,
    /// Dequantized class logits (classifier and localizer; not the box values).
    pub logits: Vec<f32>,
    /// Boxes in input pixels `(class, score byte, [x0, y0, x1, y1])`: the localizer's one box,
    /// or the grid detector's detections after the runtime's integer NMS.
    pub boxes: Vec<(usize, i8, [f32; 4])>,
    /// What was done to the input (inverted, resized).
    pub notes: Vec<String>,
}

impl PredictReport {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for n in &self.notes {
            s += &format!("note: {n}\n");
        }
        if let Some(c) = self.class {
            s += &format!("class {c}");
            if let Some(l) = self.label {
                s += &format!(" (true label {l}{})", if l == c { "" } else { ": wrong" });
            }
            s += "\n";
        }
        if !self.logits.is_empty() {
            s += &format!("logits {:.3?}\n", self.logits);
        }
        if self.class.is_none() && self.boxes.is_empty() {
            s += "no detections above the objectness threshold\n";
        }
        for (c, score, b) in &self.boxes {
            s += &format!(
                "box class {c} score {score} (pixels) x0 {:.2} y0 {:.2} x1 {:.2} y1 {:.2}\n",
                b[0], b[1], b[2], b[3]
            );
        }
        s
    }
}

pub fn cmd_predict(a: &PredictArgs) -> anyhow::Result<PredictReport> {
    use runtime::format::Head;
    let blob = read_blob(&a.model)?;
    let m = runtime::Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let spec = m.def().input;
    let (h, w, c) = (
        spec.shape.h as usize,
        spec.shape.w as usize,
        spec.shape.c as usize,
    );
    let mut notes = Vec::new();
    let mut label = None;
    let pixels: Vec<u8> = if let Ok(i) = a.image.parse::<usize>() {
        // The test split the model's kind trains on: digits, or the detection canvases.
        let arch = builtin_arch_for(&m);
        let (_, test) = if matches!(m.def().head, Head::Classifier { .. }) {
            a.data.load(256)?
        } else {
            a.data.load_for(&arch)?
        };
        if (test.h, test.w, 1) != (h, w, c) {
            bail!(
                "the model takes {h}x{w}x{c} inputs but test image {i} is {}x{}x1; pass a PNG of \
                 the model's input size instead",
                test.h,
                test.w
            );
        }
        if i >= test.len() {
            bail!("index {i} is outside the {}-image test split", test.len());
        }
        if matches!(m.def().head, Head::Classifier { .. }) {
            label = test.labels.get(i).map(|&l| l as usize);
        }
        test.image(i).to_vec()
    } else {
        if c != 1 {
            bail!("the model takes {c}-channel inputs; predict reads grayscale PNGs only");
        }
        let img = image::open(&a.image)
            .with_context(|| format!("cannot read image {}", a.image))?
            .to_luma8();
        let img = if img.width() as usize != w || img.height() as usize != h {
            if !a.resize {
                bail!(
                    "{} is {}x{}, the model takes {w}x{h} (add --resize to scale it)",
                    a.image,
                    img.width(),
                    img.height()
                );
            }
            notes.push(format!(
                "resized {}x{} to {w}x{h}",
                img.width(),
                img.height()
            ));
            image::imageops::resize(
                &img,
                w as u32,
                h as u32,
                image::imageops::FilterType::Triangle,
            )
        } else {
            img
        };
        let mut raw = img.into_raw();
        // The models learn white strokes on black (MNIST); a mostly-bright picture is the
        // other polarity, so invert it rather than silently misclassify it.
        let mean = raw.iter().map(|&p| p as u64).sum::<u64>() / raw.len().max(1) as u64;
        if mean > 127 && !a.no_invert {
            for p in raw.iter_mut() {
                *p = 255 - *p;
            }
            notes.push(format!(
                "inverted: the image is mostly bright (mean {mean}), the model expects a white \
                 digit on black (--no-invert keeps it as is)"
            ));
        }
        raw
    };
    let mut arena = vec![0u8; m.arena_bytes()];
    let mut it = runtime::Interpreter::new(&m, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::deploy::export::quantize_image(&pixels, spec.quant, it.input_mut());
    it.invoke();
    let q = m.def().output.quant;
    let out = it.output();
    let px = |v: i32| v as f32 / 16.0;
    let mut r = PredictReport {
        class: None,
        label,
        logits: Vec::new(),
        boxes: Vec::new(),
        notes,
    };
    match m.def().head {
        Head::Classifier { classes } => {
            let n = (classes as usize).min(out.len());
            r.logits = out[..n].iter().map(|&v| q.dequantize(v)).collect();
            r.class = runtime::argmax(&out[..n]);
        }
        Head::Localizer { classes } => {
            let n = (classes as usize).min(out.len());
            r.logits = out[..n].iter().map(|&v| q.dequantize(v)).collect();
            if let Some(dec) = m.box_decoder() {
                let d = dec.decode(out);
                let b = d.bbox;
                r.class = Some(d.class as usize);
                r.boxes.push((
                    d.class as usize,
                    d.score,
                    [px(b.x0), px(b.y0), px(b.x1), px(b.y1)],
                ));
            }
        }
        Head::GridDetector { .. } => {
            if let Some(dec) = m.grid_decoder() {
                for d in dec.decode(out) {
                    let b = d.bbox;
                    r.boxes.push((
                        d.class as usize,
                        d.score,
                        [px(b.x0), px(b.y0), px(b.x1), px(b.y1)],
                    ));
                }
            }
        }
    }
    Ok(r)
}

/// Median, lowest and highest of a set of measurements.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    pub median: f32,
    pub min: f32,
    pub max: f32,
}

impl Spread {
    pub fn of(v: &[f32]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let median = if s.is_empty() {
            f32::NAN
        } else if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        Spread {
            median,
            min: s.first().copied().unwrap_or(f32::NAN),
            max: s.last().copied().unwrap_or(f32::NAN),
        }
    }
}

/// Images/s of ref-cnn training at batch 64, `rounds` rounds of `steps` steps each, on 1 and 2
/// threads.
pub fn cmd_bench_train(steps: usize, rounds: usize) -> anyhow::Result<(Spread, Spread)> {
    if steps == 0 || rounds == 0 {
        bail!("--steps and --rounds must be at least 1");
    }
    let all = DataArgs::default().load(10)?.0;
    let run = |threads: usize| -> anyhow::Result<Spread> {
        with_threads(threads, || {
            let mut model = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(1))?;
            let cfg = TrainConfig {
                epochs: 1,
                ..TrainConfig::default()
            };
            // Warm up on 3 batches, then time `steps` batches per round, wrapping around the
            // training set as epochs when it holds fewer.
            let warm = all.slice(0..64 * 3);
            train_silent(&mut model, &warm, &warm.slice(0..1), &cfg)?;
            let per_epoch = (all.len() / 64).max(1);
            let mut ips = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = std::time::Instant::now();
                let mut left = steps;
                while left > 0 {
                    let n = left.min(per_epoch);
                    let timed = all.slice(0..64 * n);
                    train_silent(&mut model, &timed, &timed.slice(0..1), &cfg)?;
                    left -= n;
                }
                ips.push((64 * steps) as f32 / t.elapsed().as_secs_f32());
            }
            Ok(Spread::of(&ips))
        })?
    };
    Ok((run(1)?, run(2)?))
}

/// PyTorch's images/s for the same model, optimizer and data (bench/pytorch_train.py), run by
/// `python`, on `threads` threads.
pub fn bench_pytorch(
    python: &str,
    steps: usize,
    rounds: usize,
    threads: usize,
) -> anyhow::Result<Spread> {
    let script = crate::deploy::device::repo_root().join("bench/pytorch_train.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args([
            "--steps",
            &steps.to_string(),
            "--rounds",
            &rounds.to_string(),
        ])
        .args(["--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    if !out.status.success() {
        bail!(
            "{python} {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        );
    }
    let ips: Vec<f32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    if ips.is_empty() {
        bail!("{python} {}: printed no figures", script.display());
    }
    Ok(Spread::of(&ips))
}

pub fn cmd_bench_runtime(model: &Path, iters: usize) -> anyhow::Result<(f64, usize)> {
    let blob = read_blob(model)?;
    let m = runtime::Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
    let (_, test) = DataArgs::default().load(10)?;
    let mut arena = vec![0u8; m.arena_bytes()];
    let mut it = runtime::Interpreter::new(&m, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
    let q = m.def().input.quant;
    let inputs: Vec<Vec<i8>> = (0..100)
        .map(|i| {
            let mut v = vec![0i8; m.input_len()];
            crate::deploy::export::quantize_image(test.image(i), q, &mut v);
            v
        })
        .collect();
    for x in &inputs {
        it.input_mut().copy_from_slice(x);
        it.invoke();
    }
    let t = std::time::Instant::now();
    for i in 0..iters {
        it.input_mut().copy_from_slice(&inputs[i % inputs.len()]);
        it.invoke();
        std::hint::black_box(it.output());
    }
    Ok((
        t.elapsed().as_secs_f64() * 1e6 / iters.max(1) as f64,
        m.macs(),
    ))
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
            let ref_cnn = r.macs == 290_080;
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
