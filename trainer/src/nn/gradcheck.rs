//! Finite-difference gradient checking.
//!
//! The function is evaluated in f32 (the only precision the ops have); the central
//! difference `(f(x+h) - f(x-h)) / (2h)` is formed in f64 from the two f32 results, using the
//! step actually representable in f32. With eps ~ 1e-2 the truncation error is O(eps^2) and
//! the f32 rounding error about `ulp(f) / eps`, so tolerances of ~1e-3 absolute plus ~1e-2
//! relative are what a correct backward meets; each test states the one it uses.

use rand::Rng;
use rand_distr::StandardNormal;
use thiserror::Error;

use crate::nn::autograd::{Graph, Tensor, Var};

/// Passes when `|analytic - numeric| <= abs + rel * max(|analytic|, |numeric|)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum GradcheckError {
    #[error("the checked function must return a one-element tensor, got shape {shape:?}")]
    NotScalar { shape: Vec<usize> },
    #[error(
        "input {input}, element {index:?}: analytic {analytic:.6e} vs numeric {numeric:.6e} \
         (|diff| {diff:.3e} > abs {abs:e} + rel {rel:e} * max)"
    )]
    Mismatch {
        input: usize,
        index: Vec<usize>,
        analytic: f64,
        numeric: f64,
        diff: f64,
        abs: f64,
        rel: f64,
    },
}

fn eval(f: &impl Fn(&mut Graph, &[Var]) -> Var, inputs: &[Tensor]) -> f64 {
    let mut g = Graph::new();
    let vars: Vec<Var> = inputs.iter().map(|t| g.leaf(t.clone(), false)).collect();
    let out = f(&mut g, &vars);
    g.value(out).iter().next().copied().expect("checked scalar") as f64
}

/// Compares the gradients `backward` computes for every element of every input with central
/// differences of step `eps`. `f` builds a scalar from leaves for `inputs` (in order). An
/// input that receives no gradient is treated as having gradient zero.
pub fn gradcheck(
    f: impl Fn(&mut Graph, &[Var]) -> Var,
    inputs: &[Tensor],
    eps: f32,
    tol: Tolerance,
) -> Result<(), GradcheckError> {
    let mut g = Graph::new();
    let vars: Vec<Var> = inputs.iter().map(|t| g.leaf(t.clone(), true)).collect();
    let out = f(&mut g, &vars);
    if g.value(out).len() != 1 {
        return Err(GradcheckError::NotScalar {
            shape: g.shape(out).to_vec(),
        });
    }
    g.backward(out);
    let analytic: Vec<Option<Tensor>> = vars.iter().map(|&v| g.take_grad(v)).collect();
    drop(g);

    let mut probe = inputs.to_vec();
    for (i, input) in inputs.iter().enumerate() {
        for (index, &x0) in input.indexed_iter() {
            let (xp, xm) = (x0 + eps, x0 - eps);
            probe[i][&index] = xp;
            let fp = eval(&f, &probe);
            probe[i][&index] = xm;
            let fm = eval(&f, &probe);
            probe[i][&index] = x0;
            let numeric = (fp - fm) / (xp as f64 - xm as f64);
            let a = analytic[i].as_ref().map_or(0.0, |t| t[&index] as f64);
            let diff = (a - numeric).abs();
            if diff.is_nan() || diff > tol.abs + tol.rel * a.abs().max(numeric.abs()) {
                return Err(GradcheckError::Mismatch {
                    input: i,
                    index: ndarray::Dimension::slice(&index).to_vec(),
                    analytic: a,
                    numeric,
                    diff,
                    abs: tol.abs,
                    rel: tol.rel,
                });
            }
        }
    }
    Ok(())
}

/// Inputs for gradient checks and small experiments.
pub mod test_util {
    use super::*;
    use crate::nn::autograd::tensor;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Standard-normal tensor.
    pub fn randn<R: Rng + ?Sized>(shape: &[usize], rng: &mut R) -> Tensor {
        let n = shape.iter().product();
        tensor(shape, (0..n).map(|_| rng.sample(StandardNormal)).collect())
    }

    /// Distinct values `±0.1, ±0.3, ±0.5, ...` (every pair at least 0.2 apart, every value
    /// at least 0.1 from zero) in random order: no max/relu tie or kink is within a
    /// finite-difference step of 1e-2.
    pub fn spread<R: Rng + ?Sized>(shape: &[usize], rng: &mut R) -> Tensor {
        let n: usize = shape.iter().product();
        let mut v: Vec<f32> = (0..n)
            .map(|i| (i as f32 - n as f32 / 2.0) * 0.2 + 0.1)
            .collect();
        v.shuffle(rng);
        tensor(shape, v)
    }

    /// `sum(y * r)` with a fixed standard-normal `r` drawn from `seed`: a scalar whose gradient
    /// w.r.t. `y` is a generic direction (a plain sum would hide errors, e.g. batch norm's
    /// output always sums to `N * beta`).
    pub fn weighted_sum(g: &mut Graph, y: Var, seed: u64) -> Var {
        let r = randn(g.shape(y), &mut ChaCha8Rng::seed_from_u64(seed));
        let r = g.constant(r);
        let p = g.mul(y, r);
        g.sum(p)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::nn::autograd::{BatchNormState, Conv2dParams};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Correct but for a missing factor of 2: the checker must say where.
    struct BrokenSquare;
    impl crate::nn::autograd::Backward for BrokenSquare {
        fn backward(
            &self,
            dy: Tensor,
            ctx: &crate::nn::autograd::GradCtx<'_>,
        ) -> Vec<Option<Tensor>> {
            vec![Some(dy * ctx.input(0))]
        }
    }

    #[test]
    fn reports_a_wrong_backward() {
        let f = |g: &mut Graph, v: &[Var]| {
            let y = g.value(v[0]).mapv(|x| x * x);
            let y = g.push(y, &[v[0]], BrokenSquare);
            g.sum(y)
        };
        let x = crate::nn::autograd::tensor(&[3], vec![1.0, 2.0, 3.0]);
        let err = gradcheck(
            f,
            &[x],
            1e-2,
            Tolerance {
                abs: 1e-3,
                rel: 1e-2,
            },
        )
        .unwrap_err();
        match err {
            GradcheckError::Mismatch {
                input: 0,
                index,
                analytic,
                numeric,
                ..
            } => {
                assert_eq!(index, vec![0]);
                assert!((analytic - 1.0).abs() < 1e-6 && (numeric - 2.0).abs() < 1e-3);
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn rejects_non_scalar() {
        let x = crate::nn::autograd::tensor(&[2], vec![1.0, 2.0]);
        let r = gradcheck(
            |g, v| g.relu(v[0]),
            &[x],
            1e-2,
            Tolerance {
                abs: 1e-3,
                rel: 1e-2,
            },
        );
        assert_eq!(r, Err(GradcheckError::NotScalar { shape: vec![2] }));
    }

    /// conv3x3(pad 1) -> BN(train) -> ReLU -> maxpool2 -> flatten -> linear -> cross-entropy,
    /// checked w.r.t. the input and every parameter. eps 1e-3 (smaller than in the op tests:
    /// a network has relu and max kinks we cannot steer away from, and a small step crosses
    /// fewer of them). Tolerance abs 2e-3 + rel 2e-2.
    #[test]
    fn gradcheck_tiny_cnn() {
        let mut rng = ChaCha8Rng::seed_from_u64(50);
        let ins = [
            randn(&[2, 6, 6, 2], &mut rng),
            randn(&[3, 3, 3, 2], &mut rng).mapv(|v| v * 0.5),
            randn(&[3], &mut rng),
            randn(&[3], &mut rng).mapv(|v| 1.0 + 0.2 * v),
            randn(&[3], &mut rng),
            randn(&[4, 27], &mut rng).mapv(|v| v * 0.3),
            randn(&[4], &mut rng),
        ];
        let f = |g: &mut Graph, v: &[Var]| {
            let mut st = BatchNormState::new(3);
            let h = g.conv2d(v[0], v[1], Some(v[2]), Conv2dParams::square(1, 1));
            let h = g.batch_norm(h, v[3], v[4], &mut st, true);
            let h = g.relu(h);
            let h = g.max_pool2d(h, 2, 2);
            let h = g.flatten(h);
            let logits = g.linear(h, v[5], Some(v[6]));
            g.cross_entropy(logits, &[1, 3])
        };
        gradcheck(
            f,
            &ins,
            1e-3,
            Tolerance {
                abs: 2e-3,
                rel: 2e-2,
            },
        )
        .unwrap();
    }

    /// A residual block: relu(bn(conv(relu(bn(conv(x))))) + x) -> global avg pool -> linear
    /// -> cross-entropy, the shortcut being a plain `add`. eps 1e-3, tolerance abs 2e-3 +
    /// rel 2e-2 (as for the tiny CNN).
    #[test]
    fn gradcheck_residual_block() {
        let mut rng = ChaCha8Rng::seed_from_u64(51);
        let c = 3;
        let ins = [
            randn(&[2, 4, 4, c], &mut rng),
            randn(&[c, 3, 3, c], &mut rng).mapv(|v| v * 0.4),
            randn(&[c], &mut rng).mapv(|v| 1.0 + 0.2 * v),
            randn(&[c], &mut rng),
            randn(&[c, 3, 3, c], &mut rng).mapv(|v| v * 0.4),
            randn(&[c], &mut rng).mapv(|v| 1.0 + 0.2 * v),
            randn(&[c], &mut rng),
            randn(&[5, c], &mut rng),
        ];
        let f = |g: &mut Graph, v: &[Var]| {
            let p = Conv2dParams::square(1, 1);
            let (mut s1, mut s2) = (BatchNormState::new(c), BatchNormState::new(c));
            let h = g.conv2d(v[0], v[1], None, p);
            let h = g.batch_norm(h, v[2], v[3], &mut s1, true);
            let h = g.relu(h);
            let h = g.conv2d(h, v[4], None, p);
            let h = g.batch_norm(h, v[5], v[6], &mut s2, true);
            let h = g.add(h, v[0]);
            let h = g.relu(h);
            let h = g.global_avg_pool(h);
            let logits = g.linear(h, v[7], None);
            g.cross_entropy(logits, &[4, 0])
        };
        gradcheck(
            f,
            &ins,
            1e-3,
            Tolerance {
                abs: 2e-3,
                rel: 2e-2,
            },
        )
        .unwrap();
    }
}
