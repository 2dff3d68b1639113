//! Batch norm, ReLU and a following non-overlapping max-pool as one op: the `conv -> BN ->
//! ReLU -> pool` stage of the plain CNNs makes one pass over the conv output instead of
//! three, keeps neither the normalised nor the rectified map, and in backward never builds
//! the full-size gradient the pool and the ReLU would scatter into and mask.
//!
//! The forward values are bit for bit those of the separate ops (the same arithmetic in the
//! same order); the winner of each window is the same (first in scan order on ties). Backward
//! is the same gradient: after a pool only the winners receive one, so batch norm's sums
//! run over the pooled outputs; their order differs from the separate ops', so the last
//! bits of the result may too.

use super::graph::{Backward, GradCtx, Graph, Var};
use super::lanes::Lanes;
use super::ops_norm::{backward_dense, BatchNormState, NormGrads, NormStats};
use super::ops_pool::{max_windows, PoolGeom};
use super::{pool, pooled, slice, Tensor};

struct BnReluOp {
    stats: NormStats,
    /// The max-pool after the ReLU, if any.
    pool: Option<Pooled>,
}

/// What the backward of the pool needs: its geometry, each output's winner position in its
/// window and the winner's input (pre-normalisation) value.
struct Pooled {
    g: PoolGeom,
    arg: Vec<u8>,
    winner: Vec<f32>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.winner));
    }
}

impl Backward for BnReluOp {
    fn backward(&self, mut dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let out = slice(ctx.output());
        // ReLU's backward in place: the output is positive exactly where the ReLU passed
        // its input (after a pool: where the window's winner was positive).
        for (d, &y) in dy
            .as_slice_mut()
            .expect("standard layout")
            .iter_mut()
            .zip(out)
        {
            *d = if y > 0.0 { *d } else { 0.0 };
        }
        let Some(p) = &self.pool else {
            return backward_dense(&self.stats, dy, ctx);
        };
        let (g, x, dys, c) = (&p.g, slice(ctx.input(0)), slice(&dy), p.g.c);
        // The gradient reaching batch norm's output is the masked `dy` at the winners and 0
        // elsewhere, so its sums run over the pooled outputs and the winners' inputs.
        let lanes = Lanes::new(c);
        let (s_dy, s_dyxm) =
            lanes.sum2(dys, &p.winner, &lanes.tile(&self.stats.mean), |d, x, mu| {
                (d, d * (x - mu))
            });
        let grads = NormGrads::new(&self.stats, &s_dy, &s_dyxm, x.len() / c, ctx);
        let dx = ctx.needs(0).then(|| {
            // dx = a*d + b*x + k: with d = 0 everywhere, then at each winner.
            let (_, b, k) = grads.tiles(&lanes);
            let mut dx = pooled(ctx.input(0).shape());
            let d = dx.as_slice_mut().expect("standard layout");
            lanes.apply(d, x, [&b, &b, &k], |_, x, _, b, k| b * x + k);
            let offset: Vec<usize> = (0..g.k * g.k)
                .map(|t| (t / g.k * g.w + t % g.k) * c)
                .collect();
            let (a, b, k) = (&grads.a[..c], &grads.b[..c], &grads.k[..c]);
            g.for_each_output(|o, base| {
                let outs = dys[o..o + c]
                    .iter()
                    .zip(&p.winner[o..o + c])
                    .zip(&p.arg[o..o + c]);
                for (ch, ((&v, &xw), &t)) in outs.enumerate() {
                    d[base + offset[t as usize] + ch] = a[ch] * v + b[ch] * xw + k[ch];
                }
            });
            dx
        });
        pool::give_tensor(dy);
        vec![dx, grads.dgamma, grads.dbeta]
    }
}

impl Graph {
    /// `relu(batch_norm(x))`, then, with `pool = Some(k)`, a `k`x`k` max-pool of stride `k`:
    /// the same values as [`Graph::batch_norm`], [`Graph::relu`] and [`Graph::max_pool2d`]
    /// in a row (and the same update of the running statistics), as one op.
    pub fn batch_norm_relu(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        state: &mut BatchNormState,
        training: bool,
        pool: Option<usize>,
    ) -> Var {
        let (c, stats, scale, shift) = self.norm_prologue(x, gamma, beta, state, training);
        let xs = slice(self.value(x));
        let relu = |x: f32, a: f32, b: f32| {
            let z = x * a + b;
            if z > 0.0 {
                z
            } else {
                0.0
            }
        };
        let (y, pool) = match pool {
            None => {
                let lanes = Lanes::new(c);
                let (a, b) = (lanes.tile(&scale), lanes.tile(&shift));
                let mut y = pooled(self.shape(x));
                let ys = y.as_slice_mut().expect("standard layout");
                lanes.apply(ys, xs, [&a, &b, &b], |_, x, a, b, _| relu(x, a, b));
                (y, None)
            }
            Some(k) => {
                let g = PoolGeom::new(self.shape(x), k, k);
                let mut y = pooled(&[g.n, g.oh, g.ow, c]);
                let ys = y.as_slice_mut().expect("standard layout");
                let mut winner = pool::take(ys.len());
                let arg = max_windows(&g, xs, ys, Some(&mut winner), |dst, src| {
                    for (((d, &x), &a), &b) in dst.iter_mut().zip(src).zip(&scale).zip(&shift) {
                        *d = relu(x, a, b);
                    }
                });
                (y, Some(Pooled { g, arg, winner }))
            }
        };
        self.push(y, &[x, gamma, beta], BnReluOp { stats, pool })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{gradcheck, test_util::*, Tolerance};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Shapes with even and odd sides (a row and a column no window covers), 1 to 9
    /// channels, pools of 2 and 3 and none.
    const CASES: [(&[usize], Option<usize>); 5] = [
        (&[2, 4, 4, 3], Some(2)),
        (&[3, 5, 7, 2], Some(2)),
        (&[2, 7, 6, 1], Some(3)),
        (&[2, 3, 5, 9], None),
        (&[4, 6, 6, 8], Some(2)),
    ];

    /// Output, running statistics and every gradient of the fused op and of the separate
    /// ops, in training and in eval, on one input.
    fn both(x: &Tensor, pool: Option<usize>, training: bool, seed: u64) -> [Vec<Tensor>; 2] {
        let c = x.shape()[3];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (gamma, beta) = (
            randn(&[c], &mut rng).mapv(|v| v + 1.0),
            randn(&[c], &mut rng),
        );
        [true, false].map(|fused| {
            let mut st = BatchNormState::new(c);
            st.running_mean = (0..c).map(|i| i as f32 * 0.1).collect();
            let mut g = Graph::new();
            let xv = g.leaf(x.clone(), true);
            let (gv, bv) = (g.leaf(gamma.clone(), true), g.leaf(beta.clone(), true));
            let y = if fused {
                g.batch_norm_relu(xv, gv, bv, &mut st, training, pool)
            } else {
                let y = g.batch_norm(xv, gv, bv, &mut st, training);
                let y = g.relu(y);
                match pool {
                    Some(k) => g.max_pool2d(y, k, k),
                    None => y,
                }
            };
            let out = g.value(y).clone();
            let s = weighted_sum(&mut g, y, seed + 1);
            g.backward(s);
            let stats = Tensor::from_shape_vec(
                ndarray::IxDyn(&[2 * c]),
                [st.running_mean, st.running_var].concat(),
            )
            .unwrap();
            let grads = [xv, gv, bv].map(|v| g.take_grad(v).unwrap());
            [vec![out, stats], grads.to_vec()].concat()
        })
    }

    /// The forward (values and running statistics) is bit for bit the separate ops'; the
    /// gradients agree to rounding.
    #[test]
    fn equals_the_separate_ops() {
        let mut rng = ChaCha8Rng::seed_from_u64(40);
        for (i, (shape, pool)) in CASES.into_iter().enumerate() {
            for training in [true, false] {
                let x = randn(shape, &mut rng);
                let [fused, separate] = both(&x, pool, training, 41 + i as u64);
                assert_eq!(fused[..2], separate[..2], "{shape:?} {pool:?} {training}");
                for (which, (f, s)) in fused[2..].iter().zip(&separate[2..]).enumerate() {
                    for (a, b) in f.iter().zip(s.iter()) {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{shape:?} {pool:?} {training} grad {which}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// Gradients w.r.t. x, gamma and beta by finite differences, in training and eval.
    /// Tolerance abs 2e-3 + rel 1e-2, eps 1e-2. Inputs at least 0.1 from zero and 0.2 apart;
    /// in eval gamma is at least 1 and beta within 0.02 of zero, so that no step of 1e-2 in
    /// any input moves a value across the ReLU's kink or changes a window's winner (in
    /// training the normalisation spreads the values out of reach of a step).
    #[test]
    fn gradcheck_batch_norm_relu() {
        let tol = Tolerance {
            abs: 2e-3,
            rel: 1e-2,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        // The last case's values reach ±115: too large for f32 finite differences.
        for (shape, pool) in CASES.into_iter().take(4) {
            let c = shape[3];
            let x = spread(shape, &mut rng);
            for training in [true, false] {
                let (gamma, beta) = if training {
                    (
                        randn(&[c], &mut rng).mapv(|v| v + 1.5),
                        randn(&[c], &mut rng),
                    )
                } else {
                    (
                        randn(&[c], &mut rng).mapv(|v| v.abs() + 1.0),
                        Tensor::from_shape_fn(ndarray::IxDyn(&[c]), |i| {
                            0.02 * (i[0] % 3) as f32 - 0.02
                        }),
                    )
                };
                let ins = [x.clone(), gamma, beta];
                let f = |g: &mut Graph, v: &[Var]| {
                    let mut st = BatchNormState::new(c);
                    let y = g.batch_norm_relu(v[0], v[1], v[2], &mut st, training, pool);
                    weighted_sum(g, y, 43)
                };
                gradcheck(f, &ins, 1e-2, tol)
                    .unwrap_or_else(|e| panic!("{shape:?} {pool:?} {training}: {e}"));
            }
        }
    }
}
