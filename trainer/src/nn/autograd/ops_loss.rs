//! Losses. Each returns a 0-d tensor: the mean over all elements (or over the batch for
//! cross-entropy), with PyTorch's definitions and default `reduction="mean"`.

use super::graph::{Backward, GradCtx, Graph, Var};
use super::{scalar, slice, Tensor};

struct CrossEntropyOp {
    /// softmax(logits) with 1 subtracted at each target: the gradient before the 1/N scale.
    dlogits: Vec<f32>,
    n: usize,
}

impl Backward for CrossEntropyOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let s = dy.iter().next().copied().expect("scalar") / self.n as f32;
        let g: Vec<f32> = self.dlogits.iter().map(|&v| v * s).collect();
        vec![Some(
            Tensor::from_shape_vec(ctx.input(0).raw_dim(), g).expect("shape"),
        )]
    }
}

/// A mean-reduced loss whose elementwise derivative w.r.t. the prediction is `dpred` and
/// w.r.t. the target is `dtarget_sign * dpred` (true of mse and smooth L1), or a separate
/// vector (bce). Saves the per-element derivative only.
struct PairLossOp {
    dpred: Vec<f32>,
    dtarget: Option<Vec<f32>>,
}

impl Backward for PairLossOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let s = dy.iter().next().copied().expect("scalar") / self.dpred.len() as f32;
        let make = |d: &[f32], sign: f32| {
            let g: Vec<f32> = d.iter().map(|&v| v * s * sign).collect();
            Tensor::from_shape_vec(ctx.input(0).raw_dim(), g).expect("shape")
        };
        let dp = ctx.needs(0).then(|| make(&self.dpred, 1.0));
        let dt = ctx.needs(1).then(|| match &self.dtarget {
            Some(d) => make(d, 1.0),
            None => make(&self.dpred, -1.0),
        });
        vec![dp, dt]
    }
}

impl Graph {
    /// Mean over the batch of `-log softmax(logits)[target]`, `logits [N, C]`. Stable: the
    /// row maximum is subtracted before exponentiating.
    pub fn cross_entropy(&mut self, logits: Var, targets: &[usize]) -> Var {
        let s = self.shape(logits);
        assert_eq!(
            s.len(),
            2,
            "cross_entropy: logits must be [N, C], got {s:?}"
        );
        let (n, c) = (s[0], s[1]);
        assert_eq!(
            targets.len(),
            n,
            "cross_entropy: {} targets for {n} rows",
            targets.len()
        );
        let mut loss = 0.0f64;
        let mut dl = Vec::with_capacity(n * c);
        for (row, &t) in slice(self.value(logits)).chunks_exact(c).zip(targets) {
            assert!(
                t < c,
                "cross_entropy: target {t} out of range for {c} classes"
            );
            let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = row.iter().map(|&v| ((v - mx) as f64).exp()).sum();
            let lse = mx as f64 + z.ln();
            loss += lse - row[t] as f64;
            dl.extend(row.iter().map(|&v| (v as f64 - lse).exp() as f32));
            let base = dl.len() - c;
            dl[base + t] -= 1.0;
        }
        let y = scalar((loss / n as f64) as f32);
        self.push(y, &[logits], CrossEntropyOp { dlogits: dl, n })
    }

    /// `mean((pred - target)^2)`.
    pub fn mse_loss(&mut self, pred: Var, target: Var) -> Var {
        let (p, t) = self.loss_pair(pred, target, "mse_loss");
        let mut sum = 0.0f64;
        let d: Vec<f32> = p
            .iter()
            .zip(t)
            .map(|(&p, &t)| {
                let e = p - t;
                sum += (e * e) as f64;
                2.0 * e
            })
            .collect();
        let y = scalar((sum / d.len() as f64) as f32);
        self.push(
            y,
            &[pred, target],
            PairLossOp {
                dpred: d,
                dtarget: None,
            },
        )
    }

    /// PyTorch's smooth L1 (Huber divided by beta): per element with `d = pred - target`,
    /// `0.5 * d^2 / beta` if `|d| < beta`, else `|d| - 0.5 * beta`; mean over elements.
    /// `beta == 0` is plain L1.
    pub fn smooth_l1_loss(&mut self, pred: Var, target: Var, beta: f32) -> Var {
        assert!(beta >= 0.0, "smooth_l1_loss: beta must be >= 0");
        let (p, t) = self.loss_pair(pred, target, "smooth_l1_loss");
        let mut sum = 0.0f64;
        let d: Vec<f32> = p
            .iter()
            .zip(t)
            .map(|(&p, &t)| {
                let e = p - t;
                if e.abs() < beta {
                    sum += (0.5 * e * e / beta) as f64;
                    e / beta
                } else {
                    sum += (e.abs() - 0.5 * beta) as f64;
                    // PyTorch's sign: 0 at 0 (Rust's signum of 0.0 is 1), so a target equal
                    // to the prediction passes no gradient at beta 0 either.
                    if e == 0.0 {
                        0.0
                    } else {
                        e.signum()
                    }
                }
            })
            .collect();
        let y = scalar((sum / d.len() as f64) as f32);
        self.push(
            y,
            &[pred, target],
            PairLossOp {
                dpred: d,
                dtarget: None,
            },
        )
    }

    /// Binary cross-entropy on logits, `mean(max(x, 0) - x*t + log(1 + exp(-|x|)))`, which
    /// never exponentiates a positive number. Targets may be soft (any value in [0, 1]).
    pub fn bce_with_logits(&mut self, logits: Var, target: Var) -> Var {
        let (x, t) = self.loss_pair(logits, target, "bce_with_logits");
        let mut sum = 0.0f64;
        let mut dt = Vec::with_capacity(x.len());
        let dx: Vec<f32> = x
            .iter()
            .zip(t)
            .map(|(&x, &t)| {
                let (x64, t64) = (x as f64, t as f64);
                sum += x64.max(0.0) - x64 * t64 + (-x64.abs()).exp().ln_1p();
                dt.push(-x);
                (1.0 / (1.0 + (-x64).exp()) - t64) as f32
            })
            .collect();
        let y = scalar((sum / dx.len() as f64) as f32);
        self.push(
            y,
            &[logits, target],
            PairLossOp {
                dpred: dx,
                dtarget: Some(dt),
            },
        )
    }

    fn loss_pair(&self, a: Var, b: Var, name: &str) -> (&[f32], &[f32]) {
        assert_eq!(
            self.shape(a),
            self.shape(b),
            "{name}: prediction and target shapes differ"
        );
        (slice(self.value(a)), slice(self.value(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::autograd::tensor;
    use crate::nn::gradcheck::{gradcheck, test_util::*, Tolerance};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const TOL: Tolerance = Tolerance {
        abs: 1e-3,
        rel: 1e-2,
    };

    fn value(g: &Graph, v: Var) -> f32 {
        g.value(v).iter().next().copied().unwrap()
    }

    #[test]
    fn loss_values() {
        let mut g = Graph::new();
        let l = g.constant(tensor(&[2, 3], vec![1.0, 2.0, 3.0, 1000.0, 0.0, -1000.0]));
        let ce = g.cross_entropy(l, &[2, 0]);
        let row0 = -(3.0f64 - (1f64.exp() + 2f64.exp() + 3f64.exp()).ln());
        assert!(
            (value(&g, ce) as f64 - row0 / 2.0).abs() < 1e-6,
            "stable with huge logits"
        );

        let p = g.constant(tensor(&[4], vec![0.0, 1.0, 2.0, -3.0]));
        let t = g.constant(tensor(&[4], vec![0.0, 0.5, 0.0, 0.0]));
        let mse = g.mse_loss(p, t);
        assert!((value(&g, mse) - (0.25 + 4.0 + 9.0) / 4.0).abs() < 1e-6);
        let sl1 = g.smooth_l1_loss(p, t, 1.0);
        assert!((value(&g, sl1) - (0.125 + 1.5 + 2.5) / 4.0).abs() < 1e-6);
        let l1 = g.smooth_l1_loss(p, t, 0.0);
        assert!((value(&g, l1) - 5.5 / 4.0).abs() < 1e-6);

        let x = g.constant(tensor(&[3], vec![0.0, 100.0, -100.0]));
        let y = g.constant(tensor(&[3], vec![1.0, 1.0, 1.0]));
        let bce = g.bce_with_logits(x, y);
        assert!((value(&g, bce) - (2f32.ln() + 0.0 + 100.0) / 3.0).abs() < 1e-4);
    }

    /// Tolerance abs 1e-3 + rel 1e-2, eps 1e-2.
    #[test]
    fn gradcheck_cross_entropy() {
        let mut rng = ChaCha8Rng::seed_from_u64(40);
        let x = randn(&[5, 4], &mut rng).mapv(|v| 3.0 * v);
        gradcheck(
            |g, v| g.cross_entropy(v[0], &[0, 3, 1, 1, 2]),
            &[x],
            1e-2,
            TOL,
        )
        .unwrap();
    }

    /// Gradients w.r.t. both prediction and target. Smooth L1 inputs keep every |d| at least
    /// 0.05 away from beta, the kink. Tolerance abs 1e-3 + rel 1e-2.
    #[test]
    fn gradcheck_regression_losses() {
        let mut rng = ChaCha8Rng::seed_from_u64(41);
        let ins = [randn(&[3, 4], &mut rng), randn(&[3, 4], &mut rng)];
        gradcheck(|g, v| g.mse_loss(v[0], v[1]), &ins, 1e-2, TOL).unwrap();
        let p = tensor(&[6], vec![0.1, -0.3, 2.0, -1.7, 0.55, 3.0]);
        let t = tensor(&[6], vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.2]);
        gradcheck(
            |g, v| g.smooth_l1_loss(v[0], v[1], 0.5),
            &[p.clone(), t.clone()],
            1e-2,
            TOL,
        )
        .unwrap();
        gradcheck(|g, v| g.smooth_l1_loss(v[0], v[1], 0.0), &[p, t], 1e-2, TOL).unwrap();
    }

    /// Soft targets in (0, 1) so the target gradient is exercised too. Tolerance abs 1e-3 +
    /// rel 1e-2.
    #[test]
    fn gradcheck_bce_with_logits() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let x = randn(&[2, 5], &mut rng).mapv(|v| 4.0 * v);
        let t = randn(&[2, 5], &mut rng).mapv(|v| 1.0 / (1.0 + (-v).exp()));
        gradcheck(|g, v| g.bce_with_logits(v[0], v[1]), &[x, t], 1e-2, TOL).unwrap();
    }

    /// At beta 0 (plain L1) an element whose prediction equals its target passes no
    /// gradient, as in PyTorch (`sign(0) = 0`); others pass +-1 / n.
    #[test]
    fn smooth_l1_at_beta_zero_has_zero_gradient_at_zero() {
        let mut g = Graph::new();
        let p = g.leaf(
            crate::nn::autograd::tensor(&[3], vec![1.0, 2.0, -1.0]),
            true,
        );
        let t = g.constant(crate::nn::autograd::tensor(&[3], vec![1.0, 0.0, 0.0]));
        let l = g.smooth_l1_loss(p, t, 0.0);
        g.backward(l);
        let d: Vec<f32> = g.grad(p).unwrap().iter().copied().collect();
        assert_eq!(d, vec![0.0, 1.0 / 3.0, -1.0 / 3.0]);
    }
}
