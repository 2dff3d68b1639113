//! Batch normalisation over every axis but the last (channel) axis, as PyTorch's
//! `BatchNorm2d` on NHWC data (or `BatchNorm1d` on `[N, C]`).

use serde::{Deserialize, Serialize};

use super::graph::{Backward, GradCtx, Graph, Var};
use super::lanes::Lanes;
use super::{pooled, slice, Tensor};

/// Running statistics of one batch-norm layer. This is state, not parameters: it is updated
/// by the forward pass in training mode and never receives a gradient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNormState {
    pub running_mean: Vec<f32>,
    /// Unbiased (n-1) estimate, as PyTorch keeps it.
    pub running_var: Vec<f32>,
    /// Weight of the new batch statistic: `running = (1 - momentum) * running + momentum * batch`.
    pub momentum: f32,
    pub eps: f32,
}

impl BatchNormState {
    /// Mean 0, variance 1, momentum 0.1, eps 1e-5 (PyTorch defaults).
    pub fn new(channels: usize) -> Self {
        Self {
            running_mean: vec![0.0; channels],
            running_var: vec![1.0; channels],
            momentum: 0.1,
            eps: 1e-5,
        }
    }
}

/// Saves the per-channel mean and 1/std used in the forward pass; `x_hat` is recomputed
/// from the input in backward rather than stored.
struct BatchNormOp(NormStats);

impl std::ops::Deref for BatchNormOp {
    type Target = NormStats;
    fn deref(&self) -> &NormStats {
        &self.0
    }
}

impl Backward for BatchNormOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        backward_dense(self, dy, ctx)
    }
}

/// Batch norm's backward from the gradient of its whole output, computed in place in `dy`.
pub(super) fn backward_dense(
    st: &NormStats,
    mut dy: Tensor,
    ctx: &GradCtx<'_>,
) -> Vec<Option<Tensor>> {
    let x = slice(ctx.input(0));
    let c = st.mean.len();
    let lanes = Lanes::new(c);
    // sum(dy) and sum(dy * (x - mean)), the latter scaled to sum(dy * x_hat) by NormGrads.
    let (s_dy, s_dyxm) = lanes.sum2(slice(&dy), x, &lanes.tile(&st.mean), |d, x, mu| {
        (d, d * (x - mu))
    });
    let grads = NormGrads::new(st, &s_dy, &s_dyxm, x.len() / c, ctx);
    let dx = ctx.needs(0).then(|| {
        let (a, b, k) = grads.tiles(&lanes);
        let d = dy.as_slice_mut().expect("standard layout");
        lanes.apply(d, x, [&a, &b, &k], |d, x, a, b, k| a * d + b * x + k);
        dy
    });
    vec![dx, grads.dgamma, grads.dbeta]
}

/// What batch norm's backward needs from the forward: the statistics that normalised.
pub(super) struct NormStats {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    /// Training mode: the statistics depend on x, which adds the two mean terms to dx.
    pub training: bool,
}

/// Batch norm's gradients once the per-channel sums `sum(dy)` and `sum(dy * (x - mean))`
/// over the `m` values of each channel are known: `dgamma`, `dbeta`, and `dx = a*dy + b*x + k`
/// per channel, where in training `dx = a/M * (M*dy - sum(dy) - x_hat*sum(dy*x_hat))`
/// expanded in x (eval: `b = k = 0`).
pub(super) struct NormGrads {
    pub dgamma: Option<Tensor>,
    pub dbeta: Option<Tensor>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub k: Vec<f32>,
}

impl NormGrads {
    pub fn new(st: &NormStats, s_dy: &[f64], s_dyxm: &[f64], m: usize, ctx: &GradCtx<'_>) -> Self {
        let gamma = slice(ctx.input(1));
        let c = gamma.len();
        let m = m as f64;
        let s_dyxh: Vec<f64> = s_dyxm
            .iter()
            .zip(&st.inv_std)
            .map(|(&s, &is)| s * is as f64)
            .collect();
        let to_tensor = |v: &[f64], like: &Tensor| {
            Tensor::from_shape_vec(like.raw_dim(), v.iter().map(|&v| v as f32).collect())
                .expect("shape")
        };
        let (mut a, mut b, mut k) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
        for ch in 0..c {
            let (is, mu) = (st.inv_std[ch] as f64, st.mean[ch] as f64);
            let a64 = gamma[ch] as f64 * is;
            a[ch] = a64 as f32;
            if st.training {
                let bb = -a64 * s_dyxh[ch] * is / m;
                b[ch] = bb as f32;
                k[ch] = (-a64 * s_dy[ch] / m - bb * mu) as f32;
            }
        }
        Self {
            dgamma: ctx.needs(1).then(|| to_tensor(&s_dyxh, ctx.input(1))),
            dbeta: ctx.needs(2).then(|| to_tensor(s_dy, ctx.input(2))),
            a,
            b,
            k,
        }
    }

    /// `a`, `b` and `k` tiled to the block length of `lanes`.
    pub fn tiles(&self, lanes: &Lanes) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        (
            lanes.tile(&self.a),
            lanes.tile(&self.b),
            lanes.tile(&self.k),
        )
    }
}

/// The statistics that normalise `xs` (`[rows, c]`): the batch's in training (biased
/// variance, two passes so there is no cancellation), which also update the running
/// statistics (`momentum`, unbiased variance) as PyTorch does; the running ones in eval.
fn norm_stats(xs: &[f32], c: usize, state: &mut BatchNormState, training: bool) -> NormStats {
    assert_eq!(
        state.running_mean.len(),
        c,
        "batch_norm: state has the wrong channel count"
    );
    let rows = xs.len() / c;
    let lanes = Lanes::new(c);
    let (mean, inv_std) = if training {
        assert!(
            rows > 1,
            "batch_norm in training needs more than one value per channel"
        );
        let zeros = vec![0.0f32; lanes.len];
        let mean: Vec<f64> = lanes
            .sum(xs, &zeros, |x, _| x)
            .iter()
            .map(|s| s / rows as f64)
            .collect();
        let mean32: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
        let var = lanes.sum(xs, &lanes.tile(&mean32), |x, mu| (x - mu) * (x - mu));
        let var: Vec<f64> = var.iter().map(|s| s / rows as f64).collect();
        let mom = state.momentum as f64;
        let unbias = rows as f64 / (rows - 1) as f64;
        for ch in 0..c {
            let rm = &mut state.running_mean[ch];
            *rm = ((1.0 - mom) * *rm as f64 + mom * mean[ch]) as f32;
            let rv = &mut state.running_var[ch];
            *rv = ((1.0 - mom) * *rv as f64 + mom * var[ch] * unbias) as f32;
        }
        let inv = var
            .iter()
            .map(|&v| (1.0 / (v + state.eps as f64).sqrt()) as f32);
        (mean32, inv.collect())
    } else {
        let eps = state.eps as f64;
        let inv = state
            .running_var
            .iter()
            .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32);
        (state.running_mean.clone(), inv.collect::<Vec<f32>>())
    };
    NormStats {
        mean,
        inv_std,
        training,
    }
}

impl NormStats {
    /// `y = x * scale + shift` per channel, with `gamma` and `beta`.
    pub fn affine(&self, gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = (0..gamma.len())
            .map(|ch| gamma[ch] * self.inv_std[ch])
            .collect();
        let shift: Vec<f32> = (0..gamma.len())
            .map(|ch| beta[ch] - self.mean[ch] * scale[ch])
            .collect();
        (scale, shift)
    }
}

impl Graph {
    /// What batch norm and [`Graph::batch_norm_relu`] start with: the channel count (checked
    /// against gamma and beta), the statistics that normalise `x` (running ones updated in
    /// training) and the per-channel `scale` and `shift` of `y = x * scale + shift`.
    pub(super) fn norm_prologue(
        &self,
        x: Var,
        gamma: Var,
        beta: Var,
        state: &mut BatchNormState,
        training: bool,
    ) -> (usize, NormStats, Vec<f32>, Vec<f32>) {
        let c = *self.shape(x).last().expect("batch_norm of a 0-d tensor");
        assert_eq!(self.value(gamma).len(), c, "batch_norm: gamma length");
        assert_eq!(self.value(beta).len(), c, "batch_norm: beta length");
        let stats = norm_stats(slice(self.value(x)), c, state, training);
        let (scale, shift) = stats.affine(slice(self.value(gamma)), slice(self.value(beta)));
        (c, stats, scale, shift)
    }
}

impl Graph {
    /// Batch norm over all axes but the last: `y = gamma * (x - mean) / sqrt(var + eps) + beta`
    /// with `gamma, beta [C]`. Training: batch statistics (biased variance) normalise, and the
    /// running statistics are updated (`momentum`, unbiased variance), as PyTorch does.
    /// Eval: the running statistics normalise and `state` is not touched.
    pub fn batch_norm(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        state: &mut BatchNormState,
        training: bool,
    ) -> Var {
        let (c, stats, scale, shift) = self.norm_prologue(x, gamma, beta, state, training);
        let xs = slice(self.value(x));
        let lanes = Lanes::new(c);
        let mut y = pooled(self.shape(x));
        let (scale, shift, zero) = (lanes.tile(&scale), lanes.tile(&shift), vec![0.0; lanes.len]);
        let ys = y.as_slice_mut().expect("standard layout");
        lanes.apply(ys, xs, [&scale, &shift, &zero], |_, x, a, b, _| x * a + b);
        self.push(y, &[x, gamma, beta], BatchNormOp(stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::autograd::tensor;
    use crate::nn::gradcheck::{gradcheck, test_util::*, Tolerance};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn training_normalises_and_updates_running_stats() {
        // Channel 0: 1, 3 -> mean 2, biased var 1, unbiased var 2. Channel 1: constant 5.
        let mut g = Graph::new();
        let x = g.constant(tensor(&[2, 2], vec![1.0, 5.0, 3.0, 5.0]));
        let gamma = g.constant(tensor(&[2], vec![1.0, 1.0]));
        let beta = g.constant(tensor(&[2], vec![0.0, 0.5]));
        let mut st = BatchNormState::new(2);
        let y = g.batch_norm(x, gamma, beta, &mut st, true);
        let v = slice(g.value(y));
        assert!(
            (v[0] + 1.0).abs() < 1e-4 && (v[2] - 1.0).abs() < 1e-4,
            "{v:?}"
        );
        assert_eq!((v[1], v[3]), (0.5, 0.5));
        assert!((st.running_mean[0] - 0.2).abs() < 1e-6 && (st.running_mean[1] - 0.5).abs() < 1e-6);
        assert!((st.running_var[0] - (0.9 + 0.1 * 2.0)).abs() < 1e-6);
        assert!((st.running_var[1] - 0.9).abs() < 1e-6);
        // Eval uses the running statistics and leaves them alone.
        let before = st.clone();
        let y = g.batch_norm(x, gamma, beta, &mut st, false);
        let expect = (1.0 - 0.2) / (1.1f32 + 1e-5).sqrt();
        assert!((slice(g.value(y))[0] - expect).abs() < 1e-5);
        assert_eq!(st, before);
    }

    /// Gradients w.r.t. x, gamma and beta in training mode (batch statistics), NHWC input
    /// and a 2-D input. Tolerance abs 2e-3 + rel 1e-2, eps 1e-2.
    #[test]
    fn gradcheck_batch_norm_training() {
        let tol = Tolerance {
            abs: 2e-3,
            rel: 1e-2,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(30);
        for shape in [&[2, 3, 3, 4][..], &[6, 3]] {
            let c = shape[shape.len() - 1];
            let ins = [
                randn(shape, &mut rng),
                randn(&[c], &mut rng).mapv(|v| v + 1.5),
                randn(&[c], &mut rng),
            ];
            let f = |g: &mut Graph, v: &[Var]| {
                let mut st = BatchNormState::new(c);
                let y = g.batch_norm(v[0], v[1], v[2], &mut st, true);
                weighted_sum(g, y, 31)
            };
            gradcheck(f, &ins, 1e-2, tol).unwrap();
        }
    }

    /// Eval mode with non-trivial running statistics. Tolerance abs 1e-3 + rel 1e-2.
    #[test]
    fn gradcheck_batch_norm_eval() {
        let tol = Tolerance {
            abs: 1e-3,
            rel: 1e-2,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(32);
        let ins = [
            randn(&[2, 3, 2, 3], &mut rng),
            randn(&[3], &mut rng),
            randn(&[3], &mut rng),
        ];
        let f = |g: &mut Graph, v: &[Var]| {
            let mut st = BatchNormState::new(3);
            st.running_mean = vec![0.3, -0.2, 0.1];
            st.running_var = vec![0.5, 2.0, 1.3];
            let y = g.batch_norm(v[0], v[1], v[2], &mut st, false);
            weighted_sum(g, y, 33)
        };
        gradcheck(f, &ins, 1e-2, tol).unwrap();
    }
}
