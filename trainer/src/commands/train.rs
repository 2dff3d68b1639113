//! `trainer train`: a training run from its arguments to a saved checkpoint, its curves and a
//! report, printed.

use crate::commands::data::DataArgs;
use crate::nn::model::Model;
use crate::train::{train_from, Checkpoint, OptimizerKind, TrainConfig, CHECKPOINT_FORMAT};
use crate::util::*;
use anyhow::{bail, Context};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// `train`'s arguments: the training run and, optionally, where it starts from.
#[derive(Args, Clone, Debug)]
pub struct TrainCmd {
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub finetune: FinetuneArgs,
}

#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Built-in architecture (ref-cnn, loc-cnn, grid-det, tiny-resnet, tiny-inception, ds-cnn,
    /// resnet-8, mobilenet-v1, mobilenet-v1-32) or a .toml/.json architecture file.
    #[arg(long, default_value = "ref-cnn")]
    pub arch: String,
    /// Passes over the training split.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Images per optimizer step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// Peak learning rate (after warmup; cosine decay to the last epoch).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f32,
    /// Optimizer: SGD with momentum 0.9, or Adam.
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(OptimizerKind::ALL.map(OptimizerKind::name))
            .try_map(|s| s.parse::<OptimizerKind>()),
        default_value_t = TrainConfig::default().optimizer
    )]
    pub optimizer: OptimizerKind,
    /// L2 weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    pub weight_decay: f32,
    /// Seed of the initialization and of the batch order.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// Worker threads: 1 gives bit-identical results for a seed; 2 split each batch across
    /// two threads (each half normalized by its own BatchNorm statistics; gradients and
    /// running statistics averaged); more than 2 add nothing yet.
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

impl TrainArgs {
    /// `arch` trained with the recipe of [`TrainConfig::default`] into `out`, quietly unless
    /// told otherwise: what the main job runs.
    pub fn recipe(data: DataArgs, arch: &str, out: PathBuf) -> TrainArgs {
        let c = TrainConfig::default();
        TrainArgs {
            data,
            arch: arch.into(),
            epochs: c.epochs,
            batch_size: c.batch_size,
            lr: c.lr,
            optimizer: c.optimizer,
            weight_decay: c.weight_decay,
            seed: c.seed,
            threads: 1,
            out,
            plot: None,
            json: false,
            quiet: true,
        }
    }
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
    /// Go on with an interrupted run: the checkpoint's architecture, recipe and data from the
    /// epoch it stopped after, bit for bit as if it had not stopped (one thread), written back
    /// to the same file.
    #[arg(long, conflicts_with_all = ["init_from", "arch", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "seed", "out"])]
    pub resume: Option<PathBuf>,
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
    let run = match &ft.resume {
        Some(p) => resumed_run(a, p)?,
        None => fresh_run(a, ft)?,
    };
    run_epochs(a, run)
}

/// What a run trains, on what, from where.
struct Run {
    arch: crate::nn::arch::ArchSpec,
    model: Model,
    cfg: TrainConfig,
    train_set: crate::data::Dataset,
    test_set: crate::data::Dataset,
    trained_on: crate::data::source::TrainedOn,
    out: PathBuf,
    plot: PathBuf,
    /// The epochs done and where they left the run (`--resume`).
    history: Vec<crate::train::EpochMetrics>,
    state: Option<crate::train::RunState>,
    init: Vec<String>,
}

/// A new run: the architecture (its head following class folders), fresh or `--init-from`
/// weights.
fn fresh_run(a: &TrainArgs, ft: &FinetuneArgs) -> anyhow::Result<Run> {
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        bail!(
            "--weight-decay must be zero or a positive number, got {}",
            a.weight_decay
        );
    }
    if a.data.train_count == Some(0) || a.data.test_count == Some(0) {
        bail!(
            "--train-count and --test-count must be at least 1: the test split is what the \
             reported accuracy is measured on"
        );
    }
    let arch = crate::nn::arch::arch_from(&a.arch)?;
    let (arch, train_set, test_set) = a.data.source().load_for_training(&arch)?;
    if test_set.is_empty() || train_set.is_empty() {
        bail!(
            "the split leaves {} training and {} test images: set --train-count and \
             --test-count so that both have some",
            train_set.len(),
            test_set.len()
        );
    }
    if [train_set.h, train_set.w, train_set.c] != arch.input {
        let colour = if arch.input[2] == 3 && train_set.c == 1 {
            " (colour input reads PNG class folders as RGB; IDX files are gray)"
        } else {
            ""
        };
        bail!(
            "data images are {h}x{w}x{c} but architecture '{}' expects {:?}{colour}: give \
             --arch an architecture file whose input is [{h}, {w}, {c}] (examples/arch/ has \
             ones for 32x32 and 64x64 to start from)",
            arch.name,
            arch.input,
            h = train_set.h,
            w = train_set.w,
            c = train_set.c,
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
        momentum: TrainConfig::default().momentum,
        weight_decay: a.weight_decay,
        seed: a.seed,
        frozen_layers: (0..ft.freeze).collect(),
        split_batch: a.threads >= 2,
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

    // The split as resolved: a classifier's images themselves; canvases are made from the
    // fixed counts.
    let (train_count, test_count) = if arch.boxes || arch.grid {
        a.data.source().split_counts(0, false)
    } else {
        (train_set.len(), test_set.len())
    };
    let trained_on = crate::data::source::TrainedOn {
        data: a.data.data.clone(),
        train_count,
        test_count,
        boxes: a.data.boxes.clone(),
        canvas_copies: a.data.canvas_copies,
        train_fingerprint: crate::data::source::fingerprint(&train_set),
    };
    Ok(Run {
        arch,
        model,
        cfg,
        train_set,
        test_set,
        trained_on,
        out: a.out.clone(),
        plot,
        history: Vec::new(),
        state: None,
        init,
    })
}

/// `--resume CKPT`: the run the checkpoint records (architecture, recipe, data) from where it
/// stopped, written back to the same file.
fn resumed_run(a: &TrainArgs, path: &Path) -> anyhow::Result<Run> {
    let ck = Checkpoint::load(path)?;
    let Some(state) = ck.run_state.clone() else {
        bail!(
            "--resume {}: the checkpoint records no run state (written by an older trainer): \
             train anew, or fine-tune it with --init-from",
            path.display()
        );
    };
    let (done, all) = (ck.history.len(), ck.config.epochs);
    if state.epochs != done {
        bail!("--resume {}: inconsistent run state", path.display());
    }
    if done >= all {
        bail!(
            "--resume {}: all {all} epochs are done, nothing to resume (train a new run, or \
             fine-tune this one with --init-from)",
            path.display()
        );
    }
    let Some(trained_on) = ck.trained_on.clone() else {
        bail!(
            "--resume {}: the checkpoint does not record its data",
            path.display()
        );
    };
    let source = a.data.for_checkpoint(Some(&trained_on));
    let arch = ck.model.arch.clone();
    let (train_set, test_set) = source.load_for(&arch)?;
    if crate::data::source::fingerprint(&train_set) != trained_on.train_fingerprint {
        bail!(
            "--resume {}: the training images differ from the ones the run started on (the \
             data changed, or --data names other data)",
            path.display()
        );
    }
    let plot = a
        .plot
        .clone()
        .unwrap_or_else(|| path.with_extension("").with_extension("curves.png"));
    crate::io::check_writable(&plot)?;
    let threads = if ck.config.split_batch {
        " on two threads, as it started"
    } else {
        ""
    };
    eprintln!(
        "resuming {}: '{}' after epoch {done} of {all} (its recipe and data{threads})",
        path.display(),
        arch.name
    );
    Ok(Run {
        arch,
        model: ck.model,
        cfg: ck.config,
        train_set,
        test_set,
        trained_on,
        out: path.to_owned(),
        plot,
        history: ck.history,
        state: Some(state),
        init: Vec::new(),
    })
}

/// Trains `run`'s remaining epochs, saving the checkpoint after each.
fn run_epochs(a: &TrainArgs, run: Run) -> anyhow::Result<TrainReport> {
    let Run {
        arch,
        mut model,
        cfg,
        train_set,
        test_set,
        trained_on,
        out,
        plot,
        history: before,
        state,
        init,
    } = run;
    let batch = cfg.batch_size;
    let steps = (train_set.len() / batch.max(1)) as u64;
    let quiet = a.quiet;
    let grid = arch.grid;
    let pb = std::sync::Mutex::new(bar(steps, quiet));
    let mut history_so_far = before.clone();
    let cfg2 = cfg.clone();
    // A run that split its batches across two threads goes on doing so (one thread would take
    // the whole-batch step: other statistics, another run).
    let threads = if cfg.split_batch {
        a.threads.max(2)
    } else {
        a.threads
    };
    let history = with_threads(threads, || {
        train_from(
            &mut model,
            &train_set,
            &test_set,
            &cfg2,
            state.as_ref(),
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
            |m, e, st| {
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
                    run_state: Some(st.clone()),
                }
                .save(&out)
            },
        )
    })??;
    // A resumed run's report covers the whole run: its curves and its time.
    let history = [before, history].concat();
    crate::report::plots::training_curves(&history, &plot)?;
    let train_seconds: f32 = history.iter().map(|m| m.seconds).sum();
    let last = history.last().context("no epochs were run (--epochs 0)")?;
    Ok(TrainReport {
        arch: arch.name.clone(),
        params: model.param_count(),
        epochs: history.len(),
        test_accuracy: last.test_accuracy,
        train_seconds,
        images_per_second: (steps as usize * batch * history.len()) as f32
            / train_seconds.max(1e-6),
        checkpoint: out,
        plot,
        init,
    })
}

/// `trainer train`: the run's one-line summary (and the report as JSON with `--json`).
pub fn run(c: &TrainCmd) -> anyhow::Result<()> {
    let a = &c.train;
    let r = cmd_train_with(a, &c.finetune)?;
    let epochs = if r.epochs == 1 { "epoch" } else { "epochs" };
    println!(
        "{}: {} params, {} {epochs}, test accuracy {:.2}%, {:.1}s training ({:.0} images/s); checkpoint {}, curves {}",
        r.arch, r.params, r.epochs, r.test_accuracy * 100.0, r.train_seconds, r.images_per_second, r.checkpoint.display(), r.plot.display()
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::commands::train::TrainCmd;
    use crate::train::OptimizerKind;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        train: TrainCmd,
    }

    fn optimizer(args: &[&str]) -> Result<OptimizerKind, clap::Error> {
        let argv = std::iter::once("train").chain(args.iter().copied());
        Ok(Cmd::try_parse_from(argv)?.train.train.optimizer)
    }

    /// `--optimizer` takes the names the library reads, and defaults to the recipe's.
    #[test]
    fn optimizer_flag_reads_the_library_names() {
        assert_eq!(optimizer(&[]).unwrap(), OptimizerKind::Sgd);
        assert_eq!(
            optimizer(&["--optimizer", "sgd"]).unwrap(),
            OptimizerKind::Sgd
        );
        assert_eq!(
            optimizer(&["--optimizer", "adam"]).unwrap(),
            OptimizerKind::Adam
        );
        let e = optimizer(&["--optimizer", "Adam"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
    }
}
