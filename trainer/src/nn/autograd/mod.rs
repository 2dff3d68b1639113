//! Reverse-mode automatic differentiation on a tape of `f32` tensors.
//!
//! Layout conventions (shared with the runtime): activations are **NHWC**, convolution weights
//! are **OHWI** (`[out, kh, kw, in]`), linear weights are `[out, in]`. `flatten` of an NHWC
//! tensor therefore yields features in `H, W, C` order.
//!
//! Every op is a small struct implementing [`Backward`] that saves only what its backward
//! needs (max-pool argmax indices, batch-norm per-channel mean and 1/std, the dropout mask,
//! the im2col matrix of a convolution whose weight needs a gradient); inputs and outputs are
//! read back from the tape instead of being copied. The tape is append-only, so node order is
//! a topological order and [`Graph::backward`] simply walks it in reverse.
//!
//! Typical training step: keep parameters as `Vec<Tensor>` outside the graph, insert them with
//! [`Graph::leaf`] each step, build the forward pass, call [`Graph::backward`], collect grads
//! with [`Graph::take_grad`] and hand them to an optimizer from [`crate::train::optim`].

mod conv_geom;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_avx512;
mod graph;
mod lanes;
mod ops_basic;
mod ops_conv;
#[cfg(target_arch = "x86_64")]
mod ops_conv_direct;
mod ops_depthwise;
mod ops_fused;
mod ops_loss;
mod ops_norm;
mod ops_pool;
mod ops_roi;
mod ops_shape;
mod pool;

pub use conv_geom::Conv2dParams;
pub use gemm::serial;
pub use graph::{Backward, GradCtx, Graph, Var};
pub use ops_norm::BatchNormState;
pub use ops_roi::Roi;
pub use pool::release_cached_buffers;

use ndarray::{ArrayD, Axis, IxDyn};

/// The one tensor type of the trainer: a dynamic-rank, standard-layout `f32` array.
pub type Tensor = ArrayD<f32>;

/// Numpy broadcast of two shapes, or `None` if they are incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Sums `t` down to `shape`, undoing a numpy broadcast (the backward of broadcasting).
pub fn sum_to_shape(t: Tensor, shape: &[usize]) -> Tensor {
    if t.shape() == shape {
        return t;
    }
    let mut t = t;
    // Leading axes that the broadcast prepended.
    while t.ndim() > shape.len() {
        t = t.sum_axis(Axis(0));
    }
    for (ax, &d) in shape.iter().enumerate() {
        if d == 1 && t.shape()[ax] != 1 {
            t = t.sum_axis(Axis(ax)).insert_axis(Axis(ax));
        }
    }
    debug_assert_eq!(t.shape(), shape);
    t.into_shape_with_order(IxDyn(shape))
        .expect("sum_to_shape: shape mismatch")
}

/// A 0-d tensor holding `x` (the shape of every loss).
pub fn scalar(x: f32) -> Tensor {
    ArrayD::from_elem(IxDyn(&[]), x)
}

/// Builds a standard-layout tensor from a shape and a flat row-major vector.
pub fn tensor(shape: &[usize], data: Vec<f32>) -> Tensor {
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("tensor: data length != product of shape")
}

/// Contiguous row-major slice of a tensor produced by this crate.
#[inline]
pub(crate) fn slice(t: &Tensor) -> &[f32] {
    t.as_slice().expect("tensor is not in standard layout")
}

/// A tensor of `shape` whose storage comes from the buffer cache; contents unspecified, the
/// caller overwrites every element.
pub(crate) fn pooled(shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    tensor(shape, pool::take(n))
}

/// A zero tensor of `shape` whose storage comes from the buffer cache.
pub(crate) fn pooled_zeros(shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    tensor(shape, pool::take_zeroed(n))
}

/// `f` applied to every element of `x`, into a cached buffer.
pub(crate) fn map_pooled(x: &Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    let mut out = pool::take(x.len());
    for (o, &v) in out.iter_mut().zip(slice(x)) {
        *o = f(v);
    }
    Tensor::from_shape_vec(x.raw_dim(), out).expect("same length")
}

/// Makes a tensor standard-layout (a no-op for everything the ops produce).
pub(crate) fn standard(t: Tensor) -> Tensor {
    if t.is_standard_layout() {
        t
    } else {
        t.as_standard_layout().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_shapes() {
        assert_eq!(broadcast_shape(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shape(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shape(&[2, 3], &[4]), None);
    }

    #[test]
    fn sum_to_shape_undoes_broadcast() {
        let t = Tensor::ones(IxDyn(&[2, 3, 4]));
        let s = sum_to_shape(t.clone(), &[3, 1]);
        assert_eq!(s.shape(), &[3, 1]);
        assert!(s.iter().all(|&v| v == 8.0));
        let s = sum_to_shape(t, &[]);
        assert_eq!(s.shape(), &[] as &[usize]);
        assert_eq!(s.iter().next().copied(), Some(24.0));
    }

    /// Same seed, same thread: bit-identical parameters after a few training steps through
    /// every kind of op that keeps state (conv im2col, batch-norm statistics, max-pool argmax,
    /// dropout mask), with tensors large enough to go through the buffer cache.
    #[test]
    fn training_is_bit_reproducible() {
        use crate::nn::gradcheck::test_util::randn;
        use crate::train::optim::{Optimizer, SgdConfig};
        use rand::SeedableRng;
        use rand_chacha::ChaCha8Rng;

        fn train() -> Vec<Tensor> {
            let mut rng = ChaCha8Rng::seed_from_u64(99);
            let mut params = vec![
                randn(&[8, 3, 3, 2], &mut rng),
                randn(&[8], &mut rng),
                Tensor::ones(IxDyn(&[8])),
                Tensor::zeros(IxDyn(&[8])),
                randn(&[5, 8 * 8 * 8], &mut rng),
            ];
            let mut bn = BatchNormState::new(8);
            let mut opt = SgdConfig {
                lr: 0.01,
                momentum: 0.9,
                ..Default::default()
            }
            .init();
            for _ in 0..3 {
                let x = randn(&[32, 16, 16, 2], &mut rng);
                let mut g = Graph::new();
                let v: Vec<Var> = params.iter().map(|p| g.leaf(p.clone(), true)).collect();
                let xv = g.constant(x);
                let p1 = Conv2dParams::square(1, 1);
                let h = g.conv2d(xv, v[0], Some(v[1]), p1);
                let h = g.batch_norm(h, v[2], v[3], &mut bn, true);
                let h = g.relu(h);
                let h = g.max_pool2d(h, 2, 2);
                let h = g.dropout(h, 0.2, true, &mut rng);
                let h = g.flatten(h);
                let logits = g.linear(h, v[4], None);
                let loss = g.cross_entropy(logits, &[1; 32]);
                g.backward(loss);
                let grads: Vec<Tensor> = v.iter().map(|&p| g.take_grad(p).unwrap()).collect();
                opt.step(&mut params, &grads);
            }
            params.push(tensor(&[8], bn.running_var.clone()));
            params
        }
        let (a, b) = (train(), train());
        for (x, y) in a.iter().zip(&b) {
            assert!(x
                .iter()
                .zip(y.iter())
                .all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }
}
