//! The training loop: seeded shuffling, mini-batches, an optimizer and schedule, per-epoch
//! metrics, NaN detection, and atomic checkpoints.

pub mod finetune;
pub mod grid_head;
pub mod loc_head;
pub mod optim;

use crate::data::metrics::argmax_f32;
use crate::data::{shuffled, Dataset};
use crate::nn::autograd::{Graph, Tensor, Var};
use crate::nn::model::Model;
use crate::train::optim::{AdamConfig, LrSchedule, LrScheduler, Optimizer, SgdConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

impl OptimizerKind {
    /// Every kind, in the order the command line lists them.
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Sgd, OptimizerKind::Adam];

    /// The name the command line takes (`--optimizer sgd`) and prints.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;

    /// `sgd` or `adam`, exactly (what [`OptimizerKind::name`] gives).
    fn from_str(s: &str) -> Result<Self, String> {
        OptimizerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown optimizer '{s}' (sgd or adam)"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub optimizer: OptimizerKind,
    pub momentum: f32,
    pub weight_decay: f32,
    pub seed: u64,
    /// Layer indices whose parameters and BatchNorm running statistics stay as they are
    /// (fine-tuning a pretrained trunk, see `finetune`).
    #[serde(default)]
    pub frozen_layers: Vec<usize>,
    /// Split each batch across two threads when the pool has two or more (`train --threads
    /// 2`): each half normalized by its own BatchNorm statistics. Off, training is the plain
    /// whole-batch step whatever the pool.
    #[serde(default)]
    pub split_batch: bool,
}

impl Default for TrainConfig {
    /// The training recipe, the one place its values live (the `train` command's defaults, the
    /// main job and the tests take them from here): the PyTorch reference recipe (SGD 0.05,
    /// momentum 0.9, batch 64) with a cosine decay and a little weight decay against the
    /// overfitting seen at 99.9 % train accuracy (0.002 measured +0.15 points of mean test
    /// accuracy over 4 seeds on ref-cnn).
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 64,
            lr: 0.05,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 0.002,
            seed: 42,
            frozen_layers: Vec::new(),
            split_batch: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_loss: f32,
    pub test_accuracy: f32,
    /// Mean IoU of predicted boxes on the test set (localization models; 0 otherwise).
    #[serde(default)]
    pub test_mean_iou: f32,
    /// mAP@0.5 on the test set (grid detectors; 0 otherwise).
    #[serde(default)]
    pub test_map50: f32,
    pub lr: f32,
    pub seconds: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("loss became {value} at epoch {epoch}, step {step} (lr {lr}); the last good checkpoint is left as it was. Lower the learning rate.")]
    NonFinite {
        epoch: usize,
        step: usize,
        value: f32,
        lr: f32,
    },
    #[error("batch size must be positive and at most the {0} training images")]
    BatchSize(usize),
    #[error("{what} became non-finite by the end of epoch {epoch} (lr {lr}); {}. Lower the learning rate.", if *epoch > 1 { format!("the checkpoint of epoch {} is left as it was", epoch - 1) } else { "no checkpoint was written".to_string() })]
    NonFiniteState { epoch: usize, what: String, lr: f32 },
}

/// The first parameter or BatchNorm statistic that is not finite (or a negative running
/// variance), named; `None` when every number can be saved and loaded back.
pub fn non_finite_state(model: &Model) -> Option<String> {
    for (i, p) in model.params.iter().enumerate() {
        if p.iter().any(|v| !v.is_finite()) {
            return Some(format!("parameter tensor {i}"));
        }
    }
    for (i, bn) in model.bn.iter().enumerate() {
        if bn.running_mean.iter().any(|v| !v.is_finite()) {
            return Some(format!("the running mean of batch norm {i}"));
        }
        if bn.running_var.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Some(format!("the running variance of batch norm {i}"));
        }
    }
    None
}

/// Loss and accuracy of `model` (eval mode) on `data`.
pub fn evaluate(model: &mut Model, data: &Dataset, batch: usize) -> (f32, f32, Vec<usize>) {
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    let mut preds = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, y) = data.batch(chunk);
        let logits = model.predict(x);
        let classes = model.arch.classes;
        // The tape's cross-entropy (the one the loop trains with) on the class columns:
        // localization outputs carry a box after the logits.
        let mut g = Graph::new();
        let out = g.constant(logits.clone());
        let rows: Vec<usize> = (0..chunk.len()).collect();
        let class_part = g.gather(out, &rows, 0..classes);
        let ce = g.cross_entropy(class_part, &y);
        loss += g.value(ce).iter().next().copied().unwrap_or(f32::NAN) as f64 * chunk.len() as f64;
        for row in logits.outer_iter() {
            let row = &row.as_slice().unwrap_or(&[])[..classes];
            let p = argmax_f32(row);
            preds.push(p);
        }
        correct += preds[preds.len() - chunk.len()..]
            .iter()
            .zip(&y)
            .filter(|(p, t)| p == t)
            .count();
    }
    let n = data.len().max(1) as f64;
    ((loss / n) as f32, (correct as f64 / n) as f32, preds)
}

/// Where a run stands after an epoch: with the model, what `train --resume` needs to go on
/// exactly as if it had not stopped (bit for bit on one thread).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs done.
    pub epochs: usize,
    /// Optimizer steps done (the learning-rate schedule's position).
    pub step: usize,
    /// The shuffling and dropout generator's position (ChaCha8 word position, decimal: a u128).
    pub rng_word_pos: String,
    pub optimizer: optim::OptimState,
}

/// Trains `model` in place. `on_step(epoch, step, steps, loss, acc)` drives a progress bar;
/// `on_epoch` sees each epoch's metrics (and may save a checkpoint).
pub fn train(
    model: &mut Model,
    train: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
    on_step: impl FnMut(usize, usize, usize, f32, f32),
    mut on_epoch: impl FnMut(&Model, &EpochMetrics) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<EpochMetrics>> {
    train_from(model, train, test, cfg, None, on_step, |m, e, _| {
        on_epoch(m, e)
    })
}

/// [`train`] from a saved [`RunState`] (`None`: from the start), `on_epoch` seeing the state
/// after each epoch too. The model must be the one saved with the state.
pub fn train_from(
    model: &mut Model,
    train: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
    resume: Option<&RunState>,
    mut on_step: impl FnMut(usize, usize, usize, f32, f32),
    mut on_epoch: impl FnMut(&Model, &EpochMetrics, &RunState) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<EpochMetrics>> {
    if cfg.batch_size == 0 || cfg.batch_size > train.len() {
        return Err(TrainError::BatchSize(train.len()).into());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
    let steps_per_epoch = train.len() / cfg.batch_size; // the ragged last batch is dropped
    let total = steps_per_epoch * cfg.epochs;
    let sched = LrScheduler {
        base_lr: cfg.lr,
        schedule: LrSchedule::Cosine {
            total_steps: total.max(1),
            min_lr: cfg.lr * 0.01,
        },
        warmup_steps: steps_per_epoch.min(100),
    };
    let mut opt: Box<dyn Optimizer> = match cfg.optimizer {
        OptimizerKind::Sgd => Box::new(
            SgdConfig {
                lr: cfg.lr,
                momentum: cfg.momentum,
                weight_decay: cfg.weight_decay,
                nesterov: false,
            }
            .init(),
        ),
        OptimizerKind::Adam => Box::new(
            AdamConfig {
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                ..AdamConfig::default()
            }
            .init(),
        ),
    };
    // Frozen tensors are restored after every step: the optimizer's momentum and weight decay
    // would otherwise still move them.
    let (frozen_p, frozen_bn) = crate::train::finetune::frozen_indices(model, &cfg.frozen_layers)?;
    let keep_p: Vec<(usize, Tensor)> = frozen_p
        .iter()
        .map(|&i| (i, model.params[i].clone()))
        .collect();
    let keep_bn: Vec<_> = frozen_bn
        .iter()
        .map(|&i| (i, model.bn[i].clone()))
        .collect();
    let mut history = Vec::new();
    let mut step = 0;
    let mut first = 1;
    if let Some(r) = resume {
        let pos: u128 = r
            .rng_word_pos
            .parse()
            .map_err(|_| anyhow::anyhow!("run state: bad generator position"))?;
        rng.set_word_pos(pos);
        opt.restore(r.optimizer.clone(), &model.params)?;
        (step, first) = (r.step, r.epochs + 1);
    }
    // Asked for and with two threads or more, each batch is split across two of them; else
    // the step is the plain one (on one thread, bit-identical for a seed).
    let data_parallel = cfg.split_batch && rayon::current_num_threads() >= 2;
    for epoch in first..=cfg.epochs {
        let t0 = std::time::Instant::now();
        let order = shuffled(train.len(), &mut rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (s, chunk) in order.chunks_exact(cfg.batch_size).enumerate() {
            let lr = sched.lr(step);
            opt.set_lr(lr);
            let (lv, grads, c) = if data_parallel && chunk.len() >= 2 * MIN_SHARD {
                // Two shards of the batch, one per thread, each with its own tape and its own
                // copy of the BatchNorm statistics (each shard normalizes with its own batch
                // statistics); gradients and running statistics are averaged, weighted by
                // shard size, which makes the loss the whole batch's mean.
                let (a, b) = chunk.split_at(chunk.len() / 2);
                let mut twin = model.clone();
                let mut rng_b = ChaCha8Rng::seed_from_u64(rand::RngCore::next_u64(&mut rng));
                use crate::nn::autograd::serial;
                let (ra, rb) = rayon::join(
                    || serial(|| batch_grads(model, train, a, &frozen_p, &mut rng)),
                    || serial(|| batch_grads(&mut twin, train, b, &frozen_p, &mut rng_b)),
                );
                let (wa, wb) = (
                    a.len() as f32 / chunk.len() as f32,
                    b.len() as f32 / chunk.len() as f32,
                );
                let grads =
                    ra.1.into_iter()
                        .zip(rb.1)
                        .map(|(ga, gb)| ga * wa + gb * wb)
                        .collect();
                for (s, t) in model.bn.iter_mut().zip(&twin.bn) {
                    for (m, n) in s.running_mean.iter_mut().zip(&t.running_mean) {
                        *m = *m * wa + n * wb;
                    }
                    for (v, w) in s.running_var.iter_mut().zip(&t.running_var) {
                        *v = *v * wa + w * wb;
                    }
                }
                (ra.0 * wa + rb.0 * wb, grads, ra.2 + rb.2)
            } else {
                batch_grads(model, train, chunk, &frozen_p, &mut rng)
            };
            if !lv.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch,
                    step: s,
                    value: lv,
                    lr,
                }
                .into());
            }
            correct += c;
            opt.step(&mut model.params, &grads);
            for (i, p) in &keep_p {
                model.params[*i] = p.clone();
            }
            for (i, s) in &keep_bn {
                model.bn[*i] = s.clone();
            }
            loss_sum += lv as f64 * chunk.len() as f64;
            seen += chunk.len();
            step += 1;
            on_step(
                epoch,
                s + 1,
                steps_per_epoch,
                (loss_sum / seen as f64) as f32,
                correct as f32 / seen as f32,
            );
        }
        let (test_loss, test_accuracy, test_mean_iou, test_map50) = if model.arch.grid {
            (
                0.0,
                0.0,
                0.0,
                crate::train::grid_head::evaluate_map(model, test).0,
            )
        } else {
            let (loss, acc, _) = evaluate(model, test, 500);
            let iou = if model.arch.boxes {
                crate::train::loc_head::evaluate_boxes(model, test).1
            } else {
                0.0
            };
            (loss, acc, iou, 0.0)
        };
        let m = EpochMetrics {
            test_mean_iou,
            test_map50,
            epoch,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_accuracy: correct as f32 / seen.max(1) as f32,
            test_loss,
            test_accuracy,
            lr: opt.lr(),
            seconds: t0.elapsed().as_secs_f32(),
        };
        // A loss can stay finite while BatchNorm statistics overflow: nothing non-finite may
        // reach a checkpoint (JSON would write it as null, which no one can load back).
        if let Some(what) = non_finite_state(model) {
            return Err(TrainError::NonFiniteState {
                epoch,
                what,
                lr: opt.lr(),
            }
            .into());
        }
        let state = RunState {
            epochs: epoch,
            step,
            rng_word_pos: rng.get_word_pos().to_string(),
            optimizer: opt.state(),
        };
        on_epoch(model, &m, &state)?;
        history.push(m);
    }
    Ok(history)
}

/// Smallest shard of a batch worth its own thread.
const MIN_SHARD: usize = 8;

/// The mean loss of the images `chunk`, the gradients of every parameter (zeros for frozen
/// ones) and the number of images classified right; BatchNorm running statistics of `model`
/// are updated (training mode).
fn batch_grads(
    model: &mut Model,
    train: &Dataset,
    chunk: &[usize],
    frozen_p: &[usize],
    rng: &mut ChaCha8Rng,
) -> (f32, Vec<Tensor>, usize) {
    let (x, y) = train.batch(chunk);
    let mut g = Graph::new();
    let xv = g.leaf(x, false);
    let pv: Vec<Var> = model
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| g.leaf(p.clone(), !frozen_p.contains(&i)))
        .collect();
    let logits = model.forward(&mut g, xv, &pv, true, rng);
    let loss = if model.arch.grid {
        let objs: Vec<&Vec<(u8, [f32; 4])>> = chunk.iter().map(|&i| &train.objects[i]).collect();
        crate::train::grid_head::grid_loss(&mut g, logits, &objs, train.w, model.arch.classes)
    } else if model.arch.boxes {
        crate::train::loc_head::loc_loss(
            &mut g,
            logits,
            &y,
            &train.box_batch(chunk),
            model.arch.classes,
            train.w as f32,
        )
    } else {
        g.cross_entropy(logits, &y)
    };
    let lv = g.value(loss).iter().next().copied().unwrap_or(f32::NAN);
    let mut correct = 0;
    // Grid detectors have no per-image class: their accuracy column stays 0.
    for (row, &t) in g
        .value(logits)
        .outer_iter()
        .zip(&y)
        .filter(|_| !model.arch.grid)
    {
        let row = row.as_slice().unwrap_or(&[]);
        correct += (argmax_f32(&row[..model.arch.classes.min(row.len())]) == t) as usize;
    }
    g.backward(loss);
    let grads = g.grads_or_zeros(&pv, &model.params);
    (lv, grads, correct)
}

/// [`train`] without progress callbacks (benchmarks, tests, baselines).
pub fn train_silent(
    model: &mut Model,
    train_set: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
) -> anyhow::Result<Vec<EpochMetrics>> {
    train(
        model,
        train_set,
        test,
        cfg,
        |_, _, _, _, _| {},
        |_, _| Ok(()),
    )
}

/// A trained model with what produced it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    pub model: Model,
    pub config: TrainConfig,
    pub history: Vec<EpochMetrics>,
    /// The data it was trained on (absent in checkpoints written before it was recorded).
    #[serde(default)]
    pub trained_on: Option<crate::data::source::TrainedOn>,
    /// Where the run stood when this was saved, so `train --resume` can go on (absent in
    /// checkpoints written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_state: Option<RunState>,
}

pub const CHECKPOINT_FORMAT: &str = "tinymcu-checkpoint/1";

impl Checkpoint {
    /// "checkpoint holds 3 of 10 epochs ..." when the run stopped before its last epoch (an
    /// interrupted `train`), for commands that read it to say.
    pub fn partial_note(&self, path: &Path) -> Option<String> {
        let (done, all) = (self.history.len(), self.config.epochs);
        (done < all).then(|| {
            format!(
                "note: {} holds {done} of {all} epochs (the run stopped early); `train --resume \
                 {}` finishes it",
                path.display(),
                path.display()
            )
        })
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(what) = non_finite_state(&self.model) {
            anyhow::bail!(
                "not writing {}: {what} holds NaN or infinite values",
                path.display()
            );
        }
        // JSON would write a non-finite number as null, which no command could load back.
        if self
            .run_state
            .as_ref()
            .is_some_and(|r| !r.optimizer.is_finite())
        {
            anyhow::bail!(
                "not writing {}: the optimizer's state holds NaN or infinite values (lower the \
                 learning rate)",
                path.display()
            );
        }
        let bytes = serde_json::to_vec(self)?;
        crate::io::write_atomic(path, &bytes)
    }

    pub fn load(path: &Path) -> anyhow::Result<Checkpoint> {
        use anyhow::Context;
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        let ck: Checkpoint = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid checkpoint", path.display()))?;
        if ck.format != CHECKPOINT_FORMAT {
            anyhow::bail!(
                "{}: checkpoint format '{}' (this trainer reads '{CHECKPOINT_FORMAT}')",
                path.display(),
                ck.format
            );
        }
        ck.check_consistent()
            .with_context(|| format!("{}: inconsistent checkpoint", path.display()))?;
        Ok(ck)
    }

    /// The parameters must have exactly the shapes the architecture in the file implies.
    pub fn check_consistent(&self) -> anyhow::Result<()> {
        let fresh = Model::new(self.model.arch.clone(), &mut ChaCha8Rng::seed_from_u64(0))?;
        if fresh.params.len() != self.model.params.len() || fresh.bn.len() != self.model.bn.len() {
            anyhow::bail!(
                "architecture '{}' needs {} parameter tensors and {} batch-norm states, the file has {} and {}",
                self.model.arch.name,
                fresh.params.len(),
                fresh.bn.len(),
                self.model.params.len(),
                self.model.bn.len()
            );
        }
        for (i, (a, b)) in fresh.params.iter().zip(&self.model.params).enumerate() {
            if a.shape() != b.shape() {
                anyhow::bail!(
                    "parameter {i}: architecture '{}' says shape {:?}, the file holds {:?}",
                    self.model.arch.name,
                    a.shape(),
                    b.shape()
                );
            }
            if b.iter().any(|v| !v.is_finite()) {
                anyhow::bail!("parameter {i} holds NaN or infinite values");
            }
        }
        if let Some(what) = non_finite_state(&self.model) {
            anyhow::bail!("{what} holds NaN, infinite or negative values");
        }
        for (i, (a, b)) in fresh.bn.iter().zip(&self.model.bn).enumerate() {
            if a.running_mean.len() != b.running_mean.len()
                || a.running_var.len() != b.running_var.len()
            {
                anyhow::bail!("batch-norm state {i} has the wrong channel count");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::arch::{ArchSpec, LayerSpec};

    /// The optimizer's names read back as the kind they print, and nothing else reads.
    #[test]
    fn optimizer_names_round_trip() {
        for k in OptimizerKind::ALL {
            assert_eq!(k.to_string().parse::<OptimizerKind>(), Ok(k));
        }
        assert_eq!(OptimizerKind::Sgd.to_string(), "sgd");
        assert!("Adam".parse::<OptimizerKind>().is_err());
        assert!("".parse::<OptimizerKind>().is_err());
    }

    fn trained(arch: &ArchSpec, threads: usize) -> Model {
        let (train_set, test) = crate::data::source::DataSource::default().load(10).unwrap();
        let sub = train_set.slice(0..512);
        let mut m = Model::new(arch.clone(), &mut ChaCha8Rng::seed_from_u64(4)).unwrap();
        let cfg = TrainConfig {
            epochs: 1,
            split_batch: true,
            ..TrainConfig::default()
        };
        crate::util::with_threads(threads, || {
            train_silent(&mut m, &sub, &test.slice(0..10), &cfg).unwrap()
        })
        .unwrap();
        m
    }

    /// A run stopped after epoch 1 and resumed from its saved state (model, optimizer,
    /// generator, step) ends bit for bit where the run that never stopped ends, with SGD and
    /// with Adam; a state saved for other parameters is refused.
    #[test]
    fn resumed_runs_end_where_unbroken_runs_end() {
        let (train_set, test) = crate::data::source::DataSource::default().load(10).unwrap();
        let (sub, test) = (train_set.slice(0..256), test.slice(0..10));
        for optimizer in OptimizerKind::ALL {
            let cfg = TrainConfig {
                epochs: 2,
                optimizer,
                lr: if optimizer == OptimizerKind::Adam {
                    0.002
                } else {
                    0.05
                },
                ..TrainConfig::default()
            };
            let fresh = || Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(4));
            let mut whole = fresh().unwrap();
            train_silent(&mut whole, &sub, &test, &cfg).unwrap();
            let mut broken = fresh().unwrap();
            let mut saved = None;
            let stop = train_from(
                &mut broken,
                &sub,
                &test,
                &cfg,
                None,
                |_, _, _, _, _| {},
                |m, _, st| {
                    saved = Some((m.clone(), st.clone()));
                    anyhow::bail!("interrupted")
                },
            );
            assert!(stop.is_err());
            let (mut model, state) = saved.unwrap();
            assert_eq!((state.epochs, state.step), (1, 4));
            let rest = train_from(
                &mut model,
                &sub,
                &test,
                &cfg,
                Some(&state),
                |_, _, _, _, _| {},
                |_, _, _| Ok(()),
            )
            .unwrap();
            assert_eq!(rest.len(), 1, "{optimizer}: one epoch left");
            assert_eq!(model.params, whole.params, "{optimizer}");
            for (a, b) in model.bn.iter().zip(&whole.bn) {
                assert_eq!(a.running_mean, b.running_mean);
                assert_eq!(a.running_var, b.running_var);
            }
            // A state for another parameter list is refused, not half applied.
            let (mut model2, mut state2) = (fresh().unwrap(), state.clone());
            state2.optimizer.buffers.pop();
            let e = train_from(
                &mut model2,
                &sub,
                &test,
                &cfg,
                Some(&state2),
                |_, _, _, _, _| {},
                |_, _, _| Ok(()),
            );
            assert!(
                e.unwrap_err().to_string().contains("parameters"),
                "{optimizer}"
            );
        }
    }

    /// A checkpoint whose optimizer state is not finite is not written (JSON would hold a
    /// null no command could read back).
    #[test]
    fn non_finite_optimizer_state_is_not_saved() {
        let model = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let mut buffers: Vec<Vec<Tensor>> = model.params.iter().map(|p| vec![p.clone()]).collect();
        buffers[0][0].iter_mut().for_each(|v| *v = f32::INFINITY);
        let ck = Checkpoint {
            format: CHECKPOINT_FORMAT.into(),
            model,
            config: TrainConfig::default(),
            history: Vec::new(),
            trained_on: None,
            run_state: Some(RunState {
                optimizer: optim::OptimState { buffers, t: 0 },
                ..RunState::default()
            }),
        };
        let path = std::env::temp_dir().join(format!("nan-state-{}.json", std::process::id()));
        let e = ck.save(&path).unwrap_err().to_string();
        assert!(e.contains("optimizer's state"), "{e}");
        assert!(!path.exists());
    }

    /// Without BatchNorm the two shards' weighted gradients are the whole batch's: eight
    /// steps on two threads land where eight steps on one do, to float rounding.
    #[test]
    fn two_shards_step_like_one_batch() {
        let mut arch = ArchSpec::ref_cnn();
        arch.layers.retain(|l| !matches!(l, LayerSpec::BatchNorm2d));
        let (a, b) = (trained(&arch, 1), trained(&arch, 2));
        for (p, q) in a.params.iter().zip(&b.params) {
            let d = p
                .iter()
                .zip(q)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-4, "max |diff| {d}");
        }
        // And one thread is reproducible bit for bit.
        assert_eq!(a.params, trained(&arch, 1).params);
    }

    /// With BatchNorm each shard normalizes with its own statistics: the running statistics
    /// are the shards' weighted mean, close to one thread's.
    #[test]
    fn two_shards_merge_batchnorm_statistics() {
        let arch = ArchSpec::ref_cnn();
        let (a, b) = (trained(&arch, 1), trained(&arch, 2));
        for (s, t) in a.bn.iter().zip(&b.bn) {
            for (x, y) in s.running_mean.iter().zip(&t.running_mean) {
                assert!((x - y).abs() < 0.05 * (1.0 + x.abs()), "{x} vs {y}");
            }
        }
    }
}
