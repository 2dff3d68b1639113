//! Elementwise gates with numpy broadcasting (add, sub, mul, maximum, scale), relu, relu6, dropout.

use ndarray::{IxDyn, Zip};
use rand::Rng;

use super::graph::{Backward, GradCtx, Graph, Var};
use super::{broadcast_shape, map_pooled, pool, pooled, slice, sum_to_shape, Tensor};

/// Applies `f` elementwise over the numpy broadcast of `a` and `b`.
fn broadcast_map(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Tensor {
    if a.shape() == b.shape() {
        let mut out = pooled(a.shape());
        let o = out.as_slice_mut().expect("standard layout");
        for ((o, &x), &y) in o.iter_mut().zip(slice(a)).zip(slice(b)) {
            *o = f(x, y);
        }
        return out;
    }
    let shape = broadcast_shape(a.shape(), b.shape()).unwrap_or_else(|| {
        panic!(
            "shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        )
    });
    let av = a.broadcast(IxDyn(&shape)).expect("broadcast");
    let bv = b.broadcast(IxDyn(&shape)).expect("broadcast");
    let mut out = Tensor::zeros(IxDyn(&shape));
    Zip::from(&mut out)
        .and(&av)
        .and(&bv)
        .for_each(|o, &x, &y| *o = f(x, y));
    out
}

/// `dy * g(a, b)` over the broadcast shape of `dy`, summed back to `a`'s shape.
fn grad_through(
    dy: &Tensor,
    a: &Tensor,
    b: &Tensor,
    target: &[usize],
    g: impl Fn(f32, f32) -> f32,
) -> Tensor {
    if a.shape() == dy.shape() && b.shape() == dy.shape() {
        let mut out = pooled(dy.shape());
        let o = out.as_slice_mut().expect("standard layout");
        for (((o, &d), &x), &y) in o.iter_mut().zip(slice(dy)).zip(slice(a)).zip(slice(b)) {
            *o = d * g(x, y);
        }
        return out;
    }
    let av = a.broadcast(dy.raw_dim()).expect("broadcast");
    let bv = b.broadcast(dy.raw_dim()).expect("broadcast");
    let mut out = Tensor::zeros(dy.raw_dim());
    Zip::from(&mut out)
        .and(dy)
        .and(&av)
        .and(&bv)
        .for_each(|o, &d, &x, &y| *o = d * g(x, y));
    sum_to_shape(out, target)
}

struct AddOp {
    sign_b: f32,
}

impl Backward for AddOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let gb = ctx.needs(1).then(|| {
            let g = sum_to_shape(dy.clone(), ctx.input(1).shape());
            if self.sign_b < 0.0 {
                -g
            } else {
                g
            }
        });
        let ga = ctx.needs(0).then(|| sum_to_shape(dy, ctx.input(0).shape()));
        vec![ga, gb]
    }
}

struct MulOp;

impl Backward for MulOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let (a, b) = (ctx.input(0), ctx.input(1));
        let ga = ctx
            .needs(0)
            .then(|| grad_through(&dy, a, b, a.shape(), |_, y| y));
        let gb = ctx
            .needs(1)
            .then(|| grad_through(&dy, a, b, b.shape(), |x, _| x));
        pool::give_tensor(dy);
        vec![ga, gb]
    }
}

struct MaximumOp;

impl Backward for MaximumOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        // Ties split the gradient evenly (as torch.maximum does), so max(a, a) has gradient 1.
        let share = |x: f32, y: f32| {
            if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        };
        let (a, b) = (ctx.input(0), ctx.input(1));
        let ga = ctx
            .needs(0)
            .then(|| grad_through(&dy, a, b, a.shape(), share));
        let gb = ctx
            .needs(1)
            .then(|| grad_through(&dy, a, b, b.shape(), |x, y| share(y, x)));
        pool::give_tensor(dy);
        vec![ga, gb]
    }
}

struct ScaleOp(f32);

impl Backward for ScaleOp {
    fn backward(&self, mut dy: Tensor, _: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        dy.mapv_inplace(|d| d * self.0);
        vec![Some(dy)]
    }
}

struct ReluOp;

impl Backward for ReluOp {
    fn backward(&self, mut dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        // relu'(0) = 0, as in PyTorch; the output tells where the input was positive.
        let y = slice(ctx.output());
        let d = dy.as_slice_mut().expect("standard layout");
        for (d, &y) in d.iter_mut().zip(y) {
            // A select, not a branch: vectorises, and the sign pattern is random.
            *d = if y > 0.0 { *d } else { 0.0 };
        }
        vec![Some(dy)]
    }
}

struct Relu6Op;

impl Backward for Relu6Op {
    fn backward(&self, mut dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        // Flat at both ends, as in PyTorch (the derivative at 0 and at 6 is 0).
        let y = slice(ctx.output());
        let d = dy.as_slice_mut().expect("standard layout");
        for (d, &y) in d.iter_mut().zip(y) {
            *d = if y > 0.0 && y < 6.0 { *d } else { 0.0 };
        }
        vec![Some(dy)]
    }
}

struct DropoutOp {
    /// 0 where dropped, 1/(1-p) where kept: the forward multiplier, reused as is in backward.
    mask: Vec<f32>,
}

impl Drop for DropoutOp {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.mask));
    }
}

impl Backward for DropoutOp {
    fn backward(&self, mut dy: Tensor, _: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let d = dy.as_slice_mut().expect("standard layout");
        for (d, &m) in d.iter_mut().zip(&self.mask) {
            *d *= m;
        }
        vec![Some(dy)]
    }
}

impl Graph {
    /// `a + b` with numpy broadcasting. A residual connection is `add(block_out, shortcut)`:
    /// the gradient flows unchanged into both branches.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let y = broadcast_map(self.value(a), self.value(b), |x, y| x + y);
        self.push(y, &[a, b], AddOp { sign_b: 1.0 })
    }

    /// `a - b` with numpy broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        let y = broadcast_map(self.value(a), self.value(b), |x, y| x - y);
        self.push(y, &[a, b], AddOp { sign_b: -1.0 })
    }

    /// `a * b` elementwise with numpy broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        let y = broadcast_map(self.value(a), self.value(b), |x, y| x * y);
        self.push(y, &[a, b], MulOp)
    }

    /// Elementwise `max(a, b)` with broadcasting. The gradient goes to the larger input; at a
    /// tie it is split evenly (0.5 each), as `torch.maximum` does.
    pub fn maximum(&mut self, a: Var, b: Var) -> Var {
        let y = broadcast_map(self.value(a), self.value(b), f32::max);
        self.push(y, &[a, b], MaximumOp)
    }

    /// `c * x` for a constant `c`.
    pub fn scale(&mut self, x: Var, c: f32) -> Var {
        let y = map_pooled(self.value(x), |v| v * c);
        self.push(y, &[x], ScaleOp(c))
    }

    /// `max(x, 0)`; the derivative at 0 is taken as 0.
    pub fn relu(&mut self, x: Var) -> Var {
        let y = map_pooled(self.value(x), |v| if v > 0.0 { v } else { 0.0 });
        self.push(y, &[x], ReluOp)
    }

    /// `min(max(x, 0), 6)`, MobileNet's activation: its bounded range quantizes well.
    pub fn relu6(&mut self, x: Var) -> Var {
        let y = map_pooled(self.value(x), |v| v.clamp(0.0, 6.0));
        self.push(y, &[x], Relu6Op)
    }

    /// Inverted dropout: in training each element is zeroed with probability `p` and the
    /// survivors are scaled by `1/(1-p)`; backward applies the same mask. Identity (returns
    /// `x` itself) when not training or `p == 0`.
    pub fn dropout<R: Rng + ?Sized>(&mut self, x: Var, p: f32, training: bool, rng: &mut R) -> Var {
        assert!(
            (0.0..1.0).contains(&p),
            "dropout p must be in [0, 1), got {p}"
        );
        if !training || p == 0.0 {
            return x;
        }
        let keep = 1.0 / (1.0 - p);
        let xv = self.value(x);
        let mut mask = pool::take(xv.len());
        // One 32-bit draw per element, drawn 256 at a time (the generator's block refill,
        // not a call per element): dropped when below p * 2^32, a probability exact to 2^-32.
        let below = (p as f64 * 4_294_967_296.0) as u64;
        let mut bits = [0u32; 256];
        for block in mask.chunks_mut(256) {
            let bits = &mut bits[..block.len()];
            rng.fill(bits);
            for (m, &b) in block.iter_mut().zip(bits.iter()) {
                *m = if (b as u64) < below { 0.0 } else { keep };
            }
        }
        let mut y = pooled(xv.shape());
        let ys = y.as_slice_mut().expect("standard layout");
        for ((o, &v), &m) in ys.iter_mut().zip(slice(xv)).zip(&mask) {
            *o = v * m;
        }
        self.push(y, &[x], DropoutOp { mask })
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

    /// Tolerance: abs 1e-3 + rel 1e-2, eps 1e-2 (f32 forward, f64 differences).
    #[test]
    fn gradcheck_add_sub_mul_broadcasting() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (sa, sb) in [
            (&[2, 3][..], &[2, 3][..]),
            (&[2, 3, 4], &[4]),
            (&[3, 1], &[1, 4]),
            (&[2, 3], &[]),
        ] {
            let ins = [randn(sa, &mut rng), randn(sb, &mut rng)];
            gradcheck(
                |g, v| {
                    let y = g.add(v[0], v[1]);
                    weighted_sum(g, y, 7)
                },
                &ins,
                1e-2,
                TOL,
            )
            .unwrap();
            gradcheck(
                |g, v| {
                    let y = g.sub(v[0], v[1]);
                    weighted_sum(g, y, 8)
                },
                &ins,
                1e-2,
                TOL,
            )
            .unwrap();
            gradcheck(
                |g, v| {
                    let y = g.mul(v[0], v[1]);
                    weighted_sum(g, y, 9)
                },
                &ins,
                1e-2,
                TOL,
            )
            .unwrap();
        }
    }

    /// Inputs are kept >= 0.1 apart so no difference crosses a tie. Tolerance abs 1e-3 + rel 1e-2.
    #[test]
    fn gradcheck_maximum_broadcasting() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let a = spread(&[2, 3, 4], &mut rng);
        let b = spread(&[4], &mut rng).mapv(|v| v + 0.05);
        gradcheck(
            |g, v| {
                let y = g.maximum(v[0], v[1]);
                weighted_sum(g, y, 1)
            },
            &[a, b],
            1e-2,
            TOL,
        )
        .unwrap();
    }

    #[test]
    fn maximum_tie_splits_gradient() {
        let mut g = Graph::new();
        let a = g.leaf(tensor(&[3], vec![1.0, 2.0, 3.0]), true);
        let b = g.leaf(tensor(&[3], vec![1.0, 5.0, 0.0]), true);
        let m = g.maximum(a, b);
        let s = g.sum(m);
        g.backward(s);
        assert_eq!(slice(g.grad(a).unwrap()), &[0.5, 0.0, 1.0]);
        assert_eq!(slice(g.grad(b).unwrap()), &[0.5, 1.0, 0.0]);
    }

    /// Inputs kept >= 0.1 away from the kink at 0. Tolerance abs 1e-3 + rel 1e-2.
    #[test]
    fn gradcheck_relu() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let x = spread(&[4, 5], &mut rng);
        gradcheck(
            |g, v| {
                let y = g.relu(v[0]);
                weighted_sum(g, y, 4)
            },
            &[x],
            1e-2,
            TOL,
        )
        .unwrap();
    }

    /// Inputs kept away from the kinks at 0 and 6, on both sides of each. Tolerance abs 1e-3
    /// + rel 1e-2.
    #[test]
    fn relu6_clamps_and_gradcheck() {
        let mut g = Graph::new();
        let x = g.leaf(tensor(&[4], vec![-1.0, 3.0, 6.5, 0.5]), false);
        let y = g.relu6(x);
        assert_eq!(slice(g.value(y)), &[0.0, 3.0, 6.0, 0.5]);
        let x = tensor(
            &[2, 5],
            vec![-2.0, -0.3, 0.4, 2.5, 5.7, 6.3, 9.0, 1.1, -4.0, 3.3],
        );
        gradcheck(
            |g, v| {
                let y = g.relu6(v[0]);
                weighted_sum(g, y, 4)
            },
            &[x],
            1e-2,
            TOL,
        )
        .unwrap();
    }

    /// The closure reseeds its RNG, so every evaluation draws the same mask. Tolerance abs
    /// 1e-3 + rel 1e-2.
    #[test]
    fn gradcheck_dropout_fixed_mask() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let x = randn(&[4, 6], &mut rng);
        let f = |g: &mut Graph, v: &[Var]| {
            let mut r = ChaCha8Rng::seed_from_u64(42);
            let y = g.dropout(v[0], 0.3, true, &mut r);
            weighted_sum(g, y, 8)
        };
        gradcheck(f, &[x], 1e-2, TOL).unwrap();
    }

    #[test]
    fn dropout_scales_survivors_and_is_identity_in_eval() {
        let mut g = Graph::new();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x = g.leaf(Tensor::ones(IxDyn(&[1000])), true);
        let y = g.dropout(x, 0.25, true, &mut rng);
        let v = slice(g.value(y)).to_vec();
        assert!(v.iter().all(|&e| e == 0.0 || (e - 1.0 / 0.75).abs() < 1e-6));
        let dropped = v.iter().filter(|&&e| e == 0.0).count();
        assert!((200..300).contains(&dropped), "dropped {dropped}");
        let s = g.sum(y);
        g.backward(s);
        assert_eq!(
            slice(g.grad(x).unwrap()),
            &v[..],
            "backward uses the forward mask"
        );
        assert_eq!(g.dropout(x, 0.25, false, &mut rng), x);
    }
}
