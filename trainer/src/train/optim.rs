//! Optimisers over parameters kept outside the graph as `Vec<Tensor>`, and learning-rate
//! schedules.
//!
//! A training step: insert each parameter as a leaf, run forward and `backward`, take the
//! grads in the same order, call `opt.step(&mut params, &grads)`; set the learning rate from
//! an [`LrScheduler`] with `opt.set_lr(sched.lr(step))` beforehand if desired. State (momentum
//! buffers, Adam moments) is matched to parameters by position and created on the first step.
//!
//! Weight decay in both optimisers is L2-style: `weight_decay * param` is added to the
//! gradient before the update (PyTorch's `SGD`/`Adam` `weight_decay`, not `AdamW`), and it
//! applies to every tensor passed in; pass biases and batch-norm parameters in a separate
//! optimiser with `weight_decay: 0.0` if they should not decay.

use serde::{Deserialize, Serialize};

use crate::nn::autograd::Tensor;

pub trait Optimizer {
    /// Updates `params` in place from `grads` (same order and shapes every call).
    fn step(&mut self, params: &mut [Tensor], grads: &[Tensor]);
    fn lr(&self) -> f32;
    fn set_lr(&mut self, lr: f32);
    /// The state the next step builds on (momentum buffers, Adam moments and step count).
    fn state(&self) -> OptimState;
    /// Continues from a saved [`Optimizer::state`] of the same kind over `params`.
    fn restore(&mut self, s: OptimState, params: &[Tensor]) -> anyhow::Result<()>;
}

/// An optimizer's state between steps, saved in a checkpoint so `train --resume` goes on
/// exactly: SGD's velocity buffers, or Adam's first and second moments then its step count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OptimState {
    /// Per parameter: SGD one buffer (`[v]`), Adam two (`[m, v]`); empty before the first
    /// step.
    pub buffers: Vec<Vec<Tensor>>,
    /// Adam's step count (0 for SGD).
    pub t: i32,
}

impl OptimState {
    /// Every buffer value finite (what a checkpoint can hold and a run can go on from).
    pub fn is_finite(&self) -> bool {
        self.buffers
            .iter()
            .flatten()
            .all(|t| t.iter().all(|v| v.is_finite()))
    }
}

/// `s`'s buffers as `per` tensors per parameter, each shaped like its parameter.
fn unpack(s: OptimState, per: usize, params: &[Tensor]) -> anyhow::Result<Vec<Vec<Tensor>>> {
    if s.buffers.is_empty() {
        return Ok(vec![Vec::new(); per]);
    }
    if !s.is_finite() {
        anyhow::bail!("optimizer state holds NaN or infinite values");
    }
    if s.buffers.len() != params.len() {
        anyhow::bail!(
            "optimizer state for {} parameters, the model has {}",
            s.buffers.len(),
            params.len()
        );
    }
    let mut out = vec![Vec::with_capacity(params.len()); per];
    for (b, p) in s.buffers.into_iter().zip(params) {
        if b.len() != per || b.iter().any(|t| t.shape() != p.shape()) {
            anyhow::bail!("optimizer state does not match the parameters' shapes");
        }
        for (k, t) in b.into_iter().enumerate() {
            out[k].push(t);
        }
    }
    Ok(out)
}

/// Plain or momentum SGD, PyTorch semantics (dampening 0):
/// `g = grad + wd*p; v = momentum*v + g; p -= lr * (nesterov ? g + momentum*v : v)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.01,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl SgdConfig {
    pub fn init(self) -> Sgd {
        Sgd {
            config: self,
            velocity: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sgd {
    pub config: SgdConfig,
    velocity: Vec<Tensor>,
}

fn check_lens(params: &[Tensor], grads: &[Tensor], state: &[Tensor]) {
    assert_eq!(
        params.len(),
        grads.len(),
        "optimizer: {} params but {} grads",
        params.len(),
        grads.len()
    );
    assert!(
        state.is_empty() || state.len() == params.len(),
        "optimizer: parameter count changed from {} to {}",
        state.len(),
        params.len()
    );
    for (p, g) in params.iter().zip(grads) {
        assert_eq!(
            p.shape(),
            g.shape(),
            "optimizer: grad shape differs from its param"
        );
    }
}

fn zeros_like(params: &[Tensor]) -> Vec<Tensor> {
    params.iter().map(|p| Tensor::zeros(p.raw_dim())).collect()
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [Tensor], grads: &[Tensor]) {
        check_lens(params, grads, &self.velocity);
        let SgdConfig {
            lr,
            momentum,
            weight_decay: wd,
            nesterov,
        } = self.config;
        let first = self.velocity.is_empty();
        if first && momentum != 0.0 {
            self.velocity = zeros_like(params);
        }
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let p = p.as_slice_mut().expect("standard layout");
            let g = g.as_slice().expect("standard layout");
            if momentum == 0.0 {
                for (p, &g) in p.iter_mut().zip(g) {
                    *p -= lr * (g + wd * *p);
                }
                continue;
            }
            let v = self.velocity[i].as_slice_mut().expect("standard layout");
            for ((p, &g), v) in p.iter_mut().zip(g).zip(v.iter_mut()) {
                let d = g + wd * *p;
                // PyTorch starts the buffer at the first gradient, not at momentum * 0 + g;
                // the two agree because the buffer starts at zero.
                *v = momentum * *v + d;
                *p -= lr * if nesterov { d + momentum * *v } else { *v };
            }
        }
    }
    fn lr(&self) -> f32 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }
    fn state(&self) -> OptimState {
        OptimState {
            buffers: self.velocity.iter().map(|v| vec![v.clone()]).collect(),
            t: 0,
        }
    }
    fn restore(&mut self, s: OptimState, params: &[Tensor]) -> anyhow::Result<()> {
        let mut b = unpack(s, 1, params)?;
        self.velocity = b.pop().unwrap_or_default();
        Ok(())
    }
}

/// Adam (Kingma & Ba) with bias correction, PyTorch semantics:
/// `g = grad + wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
///  p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    pub fn init(self) -> Adam {
        Adam {
            config: self,
            m: Vec::new(),
            v: Vec::new(),
            t: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Adam {
    pub config: AdamConfig,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut [Tensor], grads: &[Tensor]) {
        check_lens(params, grads, &self.m);
        if self.m.is_empty() {
            self.m = zeros_like(params);
            self.v = zeros_like(params);
        }
        self.t += 1;
        let AdamConfig {
            lr,
            beta1: b1,
            beta2: b2,
            eps,
            weight_decay: wd,
        } = self.config;
        let bc1 = 1.0 - (b1 as f64).powi(self.t);
        let bc2 = 1.0 - (b2 as f64).powi(self.t);
        let step = (lr as f64 / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let p = p.as_slice_mut().expect("standard layout");
            let g = g.as_slice().expect("standard layout");
            let m = self.m[i].as_slice_mut().expect("standard layout");
            let v = self.v[i].as_slice_mut().expect("standard layout");
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let d = g + wd * *p;
                *m = b1 * *m + (1.0 - b1) * d;
                *v = b2 * *v + (1.0 - b2) * d * d;
                *p -= step * *m / (v.sqrt() * inv_sqrt_bc2 + eps);
            }
        }
    }
    fn lr(&self) -> f32 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }
    fn state(&self) -> OptimState {
        OptimState {
            buffers: self
                .m
                .iter()
                .zip(&self.v)
                .map(|(m, v)| vec![m.clone(), v.clone()])
                .collect(),
            t: self.t,
        }
    }
    fn restore(&mut self, s: OptimState, params: &[Tensor]) -> anyhow::Result<()> {
        if s.t < 0 || (s.t == 0) != s.buffers.is_empty() {
            anyhow::bail!(
                "Adam state: step count {} with {} buffers",
                s.t,
                s.buffers.len()
            );
        }
        let t = s.t;
        let mut b = unpack(s, 2, params)?;
        self.v = b.pop().unwrap_or_default();
        self.m = b.pop().unwrap_or_default();
        self.t = t;
        Ok(())
    }
}

/// Shape of the learning rate after warmup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LrSchedule {
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        every: usize,
        gamma: f32,
    },
    /// Half-cosine from the base rate down to `min_lr`, reached at `total_steps` (counted
    /// from 0 including warmup) and held after.
    Cosine {
        total_steps: usize,
        min_lr: f32,
    },
}

/// Learning rate as a function of the step count (optimizer steps or epochs: whatever the
/// caller counts). With `warmup_steps > 0` the rate rises linearly, `base_lr * (s+1)/warmup`,
/// for the first `warmup_steps` steps; the schedule then runs on `s - warmup_steps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrScheduler {
    pub base_lr: f32,
    pub schedule: LrSchedule,
    pub warmup_steps: usize,
}

impl LrScheduler {
    pub fn lr(&self, step: usize) -> f32 {
        let w = self.warmup_steps;
        if step < w {
            return self.base_lr * (step + 1) as f32 / w as f32;
        }
        let s = step - w;
        match self.schedule {
            LrSchedule::Constant => self.base_lr,
            LrSchedule::Step { every, gamma } => {
                self.base_lr * gamma.powi((s / every.max(1)) as i32)
            }
            LrSchedule::Cosine {
                total_steps,
                min_lr,
            } => {
                let span = total_steps.saturating_sub(w).max(1);
                let t = s.min(span) as f64 / span as f64;
                let c = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                (min_lr as f64 + (self.base_lr - min_lr) as f64 * c) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::autograd::{scalar, tensor};

    /// f(p) = 0.5 * sum(a_i * p_i^2), gradient a_i * p_i, minimum at 0.
    fn quad_grad(p: &Tensor) -> Tensor {
        let a = tensor(&[3], vec![1.0, 4.0, 0.5]);
        &a * p
    }

    fn run(opt: &mut dyn Optimizer, steps: usize) -> Tensor {
        let mut params = vec![tensor(&[3], vec![3.0, -2.0, 5.0])];
        for _ in 0..steps {
            let g = vec![quad_grad(&params[0])];
            opt.step(&mut params, &g);
        }
        params.pop().unwrap()
    }

    #[test]
    fn sgd_converges_on_a_quadratic() {
        for cfg in [
            SgdConfig {
                lr: 0.2,
                ..Default::default()
            },
            SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                ..Default::default()
            },
            SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                nesterov: true,
                ..Default::default()
            },
        ] {
            let p = run(&mut cfg.clone().init(), 300);
            assert!(p.iter().all(|v| v.abs() < 1e-3), "{cfg:?}: {p:?}");
        }
    }

    #[test]
    fn sgd_matches_hand_computed_momentum_and_decay() {
        let mut opt = SgdConfig {
            lr: 0.1,
            momentum: 0.5,
            weight_decay: 0.1,
            nesterov: false,
        }
        .init();
        let mut p = vec![scalar(1.0)];
        opt.step(&mut p, &[scalar(2.0)]); // d = 2.1, v = 2.1, p = 1 - 0.21
        assert!((p[0][[]] - 0.79).abs() < 1e-6);
        opt.step(&mut p, &[scalar(2.0)]); // d = 2.079, v = 1.05 + 2.079, p -= 0.3129
        assert!((p[0][[]] - (0.79 - 0.3129)).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_is_lr_in_magnitude_and_converges() {
        let mut opt = AdamConfig {
            lr: 0.01,
            ..Default::default()
        }
        .init();
        let mut p = vec![tensor(&[3], vec![1.0, -1.0, 2.0])];
        opt.step(&mut p, &[tensor(&[3], vec![0.3, -20.0, 1e-3])]);
        for (after, before) in p[0].iter().zip([1.0f32, -1.0, 2.0]) {
            let moved = (before - after).abs();
            assert!((moved - 0.01).abs() < 1e-4, "moved {moved}");
        }
        let p = run(
            &mut AdamConfig {
                lr: 0.05,
                ..Default::default()
            }
            .init(),
            2000,
        );
        assert!(p.iter().all(|v| v.abs() < 1e-2), "{p:?}");
    }

    #[test]
    fn schedules() {
        let s = |schedule, warmup_steps| LrScheduler {
            base_lr: 1.0,
            schedule,
            warmup_steps,
        };
        let c = s(LrSchedule::Constant, 0);
        assert_eq!((c.lr(0), c.lr(1000)), (1.0, 1.0));
        let st = s(
            LrSchedule::Step {
                every: 10,
                gamma: 0.5,
            },
            0,
        );
        assert_eq!((st.lr(9), st.lr(10), st.lr(25)), (1.0, 0.5, 0.25));
        let cos = s(
            LrSchedule::Cosine {
                total_steps: 100,
                min_lr: 0.1,
            },
            0,
        );
        assert_eq!(cos.lr(0), 1.0);
        assert!((cos.lr(50) - 0.55).abs() < 1e-6);
        assert!((cos.lr(100) - 0.1).abs() < 1e-6 && (cos.lr(500) - 0.1).abs() < 1e-6);
        let w = s(
            LrSchedule::Cosine {
                total_steps: 110,
                min_lr: 0.0,
            },
            10,
        );
        assert_eq!((w.lr(0), w.lr(4), w.lr(9)), (0.1, 0.5, 1.0));
        assert_eq!(w.lr(10), 1.0);
        assert!((w.lr(60) - 0.5).abs() < 1e-6 && w.lr(110).abs() < 1e-6);
    }
}
