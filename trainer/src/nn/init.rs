//! Weight initialisers. All randomness comes from the caller's seeded `ChaCha8Rng`.
//!
//! Fans follow the layouts of the trainer: linear `[out, in]`, conv OHWI `[out, kh, kw, in]`,
//! so `fan_in = kh*kw*in` and `fan_out = out*kh*kw` (PyTorch's definition).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Normal, Uniform};
use serde::{Deserialize, Serialize};

use crate::nn::autograd::{tensor, Tensor};

/// How to fill a weight tensor; part of layer configs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Init {
    /// Kaiming normal, fan_in mode, gain sqrt(2): the default for ReLU networks.
    HeNormal,
    /// Glorot uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
    XavierUniform,
    /// All zeros: right for biases, wrong for weights (see the symmetry test below).
    Zeros,
    /// Every element equal to the value: shows the symmetry problem with non-zero gradients.
    Constant(f32),
}

impl Init {
    pub fn init(self, shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
        match self {
            Init::HeNormal => he_normal(shape, rng),
            Init::XavierUniform => xavier_uniform(shape, rng),
            Init::Zeros => zeros(shape),
            Init::Constant(c) => constant(shape, c),
        }
    }
}

/// `(fan_in, fan_out)` of a weight `[out, in]` or `[out, kh, kw, in]` (any rank >= 2: the
/// first axis is out, the last is in, the middle ones are the receptive field).
pub fn fans(shape: &[usize]) -> (usize, usize) {
    assert!(
        shape.len() >= 2,
        "fans of a weight needs rank >= 2, got {shape:?}"
    );
    let field: usize = shape[1..shape.len() - 1].iter().product();
    (field * shape[shape.len() - 1], field * shape[0])
}

/// Kaiming/He normal: N(0, 2 / fan_in).
pub fn he_normal(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let (fan_in, _) = fans(shape);
    normal(shape, (2.0 / fan_in as f32).sqrt(), rng)
}

/// N(0, std^2), e.g. the small Gaussians new detection layers start from.
pub fn normal(shape: &[usize], std: f32, rng: &mut ChaCha8Rng) -> Tensor {
    let d = Normal::new(0.0f32, std).expect("finite std");
    let n = shape.iter().product();
    tensor(shape, (0..n).map(|_| rng.sample(d)).collect())
}

/// Xavier/Glorot uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
pub fn xavier_uniform(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let (fan_in, fan_out) = fans(shape);
    let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
    let d = Uniform::new_inclusive(-a, a);
    let n = shape.iter().product();
    tensor(shape, (0..n).map(|_| rng.sample(d)).collect())
}

/// Zeros (biases, batch-norm beta).
pub fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(ndarray::IxDyn(shape))
}

/// Every element `c` (batch-norm gamma = 1).
pub fn constant(shape: &[usize], c: f32) -> Tensor {
    Tensor::from_elem(ndarray::IxDyn(shape), c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::autograd::Graph;
    use crate::nn::gradcheck::test_util::randn;
    use crate::train::optim::{Optimizer, SgdConfig};
    use rand::SeedableRng;

    #[test]
    fn fans_and_scales() {
        assert_eq!(fans(&[10, 784]), (784, 10));
        assert_eq!(fans(&[16, 3, 3, 8]), (72, 144));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let w = he_normal(&[64, 3, 3, 32], &mut rng);
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std - (2.0f32 / 288.0).sqrt()).abs() < 0.005, "{std}");
        let w = xavier_uniform(&[30, 20], &mut rng);
        let a = (6.0f32 / 50.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= a) && w.iter().any(|v| v.abs() > 0.9 * a));
    }

    #[test]
    fn same_seed_same_weights() {
        let a = he_normal(&[8, 3, 3, 1], &mut ChaCha8Rng::seed_from_u64(7));
        let b = he_normal(&[8, 3, 3, 1], &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(a, b);
    }

    const SIZES: [usize; 4] = [4, 8, 8, 3];

    /// Trains the MLP 4 -> 8 -> 8 -> 3 (ReLU, zero biases, cross-entropy) with plain SGD for
    /// `steps` full-batch steps on fixed random data; returns the weights and the losses.
    fn train_mlp(init: Init, steps: usize) -> (Vec<Tensor>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = randn(&[32, 4], &mut rng);
        let y: Vec<usize> = (0..32).map(|_| rng.gen_range(0..3)).collect();
        let mut params = Vec::new();
        for l in 0..3 {
            params.push(init.init(&[SIZES[l + 1], SIZES[l]], &mut rng));
            params.push(zeros(&[SIZES[l + 1]]));
        }
        let mut opt = SgdConfig {
            lr: 0.1,
            ..Default::default()
        }
        .init();
        let mut losses = Vec::new();
        for _ in 0..steps {
            let mut g = Graph::new();
            let vars: Vec<_> = params.iter().map(|p| g.leaf(p.clone(), true)).collect();
            let mut h = g.constant(x.clone());
            for l in 0..3 {
                h = g.linear(h, vars[2 * l], Some(vars[2 * l + 1]));
                if l < 2 {
                    h = g.relu(h);
                }
            }
            let loss = g.cross_entropy(h, &y);
            losses.push(g.value(loss)[[]]);
            g.backward(loss);
            let grads: Vec<Tensor> = vars.iter().map(|&v| g.take_grad(v).unwrap()).collect();
            opt.step(&mut params, &grads);
        }
        (params, losses)
    }

    fn rows_identical(w: &Tensor) -> bool {
        let r0 = w.index_axis(ndarray::Axis(0), 0);
        w.outer_iter()
            .all(|r| r.iter().zip(r0.iter()).all(|(a, b)| (a - b).abs() <= 1e-7))
    }

    /// Why weights must not start equal ("zeros" in the product sense means any constant):
    /// every hidden unit of a layer computes the same function, receives the same gradient,
    /// and so stays a copy of its neighbours forever — the layer has the capacity of a single
    /// unit. With exact zeros and ReLU it is worse still: the hidden activations are 0, relu'(0)
    /// is 0, so the hidden weights get exactly zero gradient and never move (only the output
    /// bias learns). With a non-zero constant the weights do move, but the rows (hidden units)
    /// stay identical. He and Xavier break the symmetry: rows differ and the loss falls.
    #[test]
    fn constant_init_keeps_hidden_units_identical() {
        let (w, losses) = train_mlp(Init::Zeros, 30);
        assert!(
            w[0].iter().all(|&v| v == 0.0),
            "zero hidden weights never move"
        );
        assert!(w[2].iter().all(|&v| v == 0.0));
        assert!(
            losses[29] <= losses[0],
            "only the output bias learns (class frequencies)"
        );

        let (w, _) = train_mlp(Init::Constant(0.3), 30);
        assert!(
            w[0].iter().any(|&v| (v - 0.3).abs() > 1e-3),
            "weights moved"
        );
        assert!(
            rows_identical(&w[0]),
            "layer-1 hidden units stayed identical"
        );
        assert!(
            rows_identical(&w[2]),
            "layer-2 hidden units stayed identical"
        );

        for init in [Init::HeNormal, Init::XavierUniform] {
            let (w, losses) = train_mlp(init, 30);
            assert!(!rows_identical(&w[0]) && !rows_identical(&w[2]), "{init:?}");
            assert!(
                losses[29] < 0.9 * losses[0],
                "{init:?}: {} -> {}",
                losses[0],
                losses[29]
            );
        }
    }
}
