//! Matrix products (matmul, linear), shape ops (reshape, flatten, concat_channels, gather)
//! and full reductions (sum, mean).

use ndarray::{ArrayView2, Axis, Ix2};

use super::gemm::{gemm, Mat};
use super::graph::{Backward, GradCtx, Graph, Var};
use super::{pooled, scalar, slice, standard, Tensor};

fn view2(t: &Tensor) -> ArrayView2<'_, f32> {
    t.view()
        .into_dimensionality::<Ix2>()
        .expect("expected a 2-D tensor")
}

/// Rows `rows` of the input viewed as `[R, K]`, columns `cols`; the gradient is added back
/// into those places (a row may be taken more than once).
struct GatherOp {
    rows: Vec<usize>,
    cols: std::ops::Range<usize>,
    k: usize,
}

impl Backward for GatherOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        vec![ctx.needs(0).then(|| {
            let mut dx = Tensor::zeros(ctx.input(0).raw_dim());
            let d = dx.as_slice_mut().expect("standard layout");
            let w = self.cols.len();
            for (o, &r) in slice(&dy).chunks_exact(w.max(1)).zip(&self.rows) {
                let at = r * self.k + self.cols.start;
                for (x, &v) in d[at..at + w].iter_mut().zip(o) {
                    *x += v;
                }
            }
            dx
        })]
    }
}

struct MatMulOp;

impl Backward for MatMulOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let dy = view2(&dy);
        let (a, b) = (view2(ctx.input(0)), view2(ctx.input(1)));
        let ga = ctx.needs(0).then(|| dy.dot(&b.t()).into_dyn());
        let gb = ctx.needs(1).then(|| a.t().dot(&dy).into_dyn());
        vec![ga, gb]
    }
}

struct LinearOp {
    has_bias: bool,
}

impl Backward for LinearOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let (x, w) = (ctx.input(0), ctx.input(1));
        let (n, i, o) = (x.shape()[0], x.shape()[1], w.shape()[0]);
        let (dy2, x2, w2) = (
            Mat::new(slice(&dy), n, o),
            Mat::new(slice(x), n, i),
            Mat::new(slice(w), o, i),
        );
        let mut out = vec![
            ctx.needs(0).then(|| {
                let mut dx = pooled(&[n, i]);
                gemm(dy2, w2, dx.as_slice_mut().expect("standard layout"), false);
                dx
            }),
            ctx.needs(1).then(|| {
                let mut dw = Tensor::zeros(w.raw_dim());
                gemm(
                    dy2.t(),
                    x2,
                    dw.as_slice_mut().expect("standard layout"),
                    false,
                );
                dw
            }),
        ];
        if self.has_bias {
            out.push(
                ctx.needs(2)
                    .then(|| view2(&dy).sum_axis(Axis(0)).into_dyn()),
            );
        }
        out
    }
}

struct ReshapeOp;

impl Backward for ReshapeOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let g = standard(dy).into_shape_with_order(ctx.input(0).raw_dim());
        vec![Some(g.expect("reshape back"))]
    }
}

struct ConcatOp {
    widths: Vec<usize>,
}

impl Backward for ConcatOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let total: usize = self.widths.iter().sum();
        let d = slice(&dy);
        let mut offset = 0;
        let mut out = Vec::with_capacity(self.widths.len());
        for (i, &w) in self.widths.iter().enumerate() {
            if ctx.needs(i) {
                let mut g = Vec::with_capacity(d.len() / total * w);
                for row in d.chunks_exact(total) {
                    g.extend_from_slice(&row[offset..offset + w]);
                }
                out.push(Some(
                    Tensor::from_shape_vec(ctx.input(i).raw_dim(), g).expect("shape"),
                ));
            } else {
                out.push(None);
            }
            offset += w;
        }
        out
    }
}

struct SumOp {
    scale: f32,
}

impl Backward for SumOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let d = dy.iter().next().copied().expect("scalar") * self.scale;
        vec![Some(Tensor::from_elem(ctx.input(0).raw_dim(), d))]
    }
}

impl Graph {
    /// 2-D matrix product `[m, k] x [k, n] -> [m, n]`.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        let y = view2(self.value(a)).dot(&view2(self.value(b))).into_dyn();
        self.push(y, &[a, b], MatMulOp)
    }

    /// Fully connected layer: `x [N, in] . w^T + b`, with `w [out, in]` and `b [out]`.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Var {
        let (xs, ws) = (self.shape(x), self.shape(w));
        assert!(
            xs.len() == 2 && ws.len() == 2,
            "linear: x and w must be 2-D, got {xs:?} and {ws:?}"
        );
        assert_eq!(
            xs[1], ws[1],
            "linear: x has {} features, w expects {}",
            xs[1], ws[1]
        );
        let (n, i, o) = (xs[0], xs[1], ws[0]);
        let mut y = pooled(&[n, o]);
        let ys = y.as_slice_mut().expect("standard layout");
        if let Some(b) = b {
            let bv = slice(self.value(b));
            assert_eq!(bv.len(), o, "linear: bias length");
            for row in ys.chunks_exact_mut(o) {
                row.copy_from_slice(bv);
            }
        }
        let (x2, w2) = (
            Mat::new(slice(self.value(x)), n, i),
            Mat::new(slice(self.value(w)), o, i),
        );
        gemm(x2, w2.t(), ys, b.is_some());
        match b {
            Some(b) => self.push(y, &[x, w, b], LinearOp { has_bias: true }),
            None => self.push(y, &[x, w], LinearOp { has_bias: false }),
        }
    }

    /// Same data, new shape (row-major; element count must match).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let xv = self.value(x);
        let n: usize = shape.iter().product();
        assert_eq!(n, xv.len(), "reshape {:?} -> {shape:?}", xv.shape());
        let mut y = pooled(shape);
        y.as_slice_mut()
            .expect("standard layout")
            .copy_from_slice(slice(xv));
        self.push(y, &[x], ReshapeOp)
    }

    /// `[N, ...] -> [N, prod(...)]`. For NHWC input the features come out in H, W, C order.
    pub fn flatten(&mut self, x: Var) -> Var {
        let s = self.shape(x);
        let (n, rest) = (s[0], s[1..].iter().product::<usize>());
        self.reshape(x, &[n, rest])
    }

    /// Concatenates along the last (channel) axis; all other dimensions must agree.
    pub fn concat_channels(&mut self, xs: &[Var]) -> Var {
        assert!(!xs.is_empty(), "concat_channels of nothing");
        let lead = self.shape(xs[0]);
        let lead = lead[..lead.len() - 1].to_vec();
        let widths: Vec<usize> = xs
            .iter()
            .map(|&v| {
                let s = self.shape(v);
                assert_eq!(
                    &s[..s.len() - 1],
                    &lead[..],
                    "concat_channels: leading dims differ"
                );
                s[s.len() - 1]
            })
            .collect();
        let total: usize = widths.iter().sum();
        let rows: usize = lead.iter().product();
        let mut out = Vec::with_capacity(rows * total);
        for r in 0..rows {
            for (&v, &w) in xs.iter().zip(&widths) {
                out.extend_from_slice(&slice(self.value(v))[r * w..(r + 1) * w]);
            }
        }
        let mut shape = lead;
        shape.push(total);
        self.push(super::tensor(&shape, out), xs, ConcatOp { widths })
    }

    /// Rows `rows` and columns `cols` of `x` viewed as `[R, K]` (`K` its last axis, `R` the
    /// product of the others): a `[rows.len(), cols.len()]` tensor. Picks the cells and channels
    /// a loss looks at (a detector's positive cells, a localizer's box columns).
    pub fn gather(&mut self, x: Var, rows: &[usize], cols: std::ops::Range<usize>) -> Var {
        let s = self.shape(x);
        let k = s.last().copied().unwrap_or(1);
        let r: usize = s[..s.len().saturating_sub(1)].iter().product();
        assert!(cols.end <= k, "gather: columns {cols:?} of {k}");
        let xv = slice(self.value(x));
        let mut out = Vec::with_capacity(rows.len() * cols.len());
        for &row in rows {
            assert!(row < r, "gather: row {row} of {r}");
            out.extend_from_slice(&xv[row * k + cols.start..row * k + cols.end]);
        }
        let y = super::tensor(&[rows.len(), cols.len()], out);
        self.push(
            y,
            &[x],
            GatherOp {
                rows: rows.to_vec(),
                cols,
                k,
            },
        )
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum(&mut self, x: Var) -> Var {
        let s = slice(self.value(x)).iter().map(|&v| v as f64).sum::<f64>();
        self.push(scalar(s as f32), &[x], SumOp { scale: 1.0 })
    }

    /// Mean of all elements, as a 0-d tensor.
    pub fn mean(&mut self, x: Var) -> Var {
        let n = self.value(x).len();
        let s = slice(self.value(x)).iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        self.push(
            scalar(s as f32),
            &[x],
            SumOp {
                scale: 1.0 / n as f32,
            },
        )
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

    #[test]
    fn forward_values() {
        let mut g = Graph::new();
        let a = g.constant(tensor(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        let b = g.constant(tensor(&[2], vec![10.0, 20.0]));
        let c = g.add(a, b);
        assert_eq!(slice(g.value(c)), &[11.0, 22.0, 13.0, 24.0]);
        let m = g.matmul(a, a);
        assert_eq!(slice(g.value(m)), &[7.0, 10.0, 15.0, 22.0]);
        let w = g.constant(tensor(&[1, 2], vec![1.0, -1.0]));
        let bias = g.constant(tensor(&[1], vec![0.5]));
        let l = g.linear(a, w, Some(bias));
        assert_eq!(slice(g.value(l)), &[-0.5, -0.5]);
        let cat = g.concat_channels(&[a, a]);
        assert_eq!(
            slice(g.value(cat)),
            &[1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]
        );
    }

    #[test]
    fn gather_picks_rows_and_columns() {
        let mut g = Graph::new();
        let x = g.constant(tensor(&[2, 2, 3], (0..12).map(|v| v as f32).collect()));
        let y = g.gather(x, &[3, 0, 3], 1..3);
        assert_eq!(g.shape(y), vec![3, 2]);
        assert_eq!(slice(g.value(y)), &[10.0, 11.0, 1.0, 2.0, 10.0, 11.0]);
    }

    /// Tolerance abs 1e-3 + rel 1e-2; a repeated row checks that gradients add up.
    #[test]
    fn gradcheck_gather() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let ins = [randn(&[2, 3, 4], &mut rng)];
        gradcheck(
            |g, v| {
                let y = g.gather(v[0], &[5, 1, 5, 2], 1..4);
                weighted_sum(g, y, 7)
            },
            &ins,
            1e-2,
            TOL,
        )
        .unwrap();
    }

    /// Tolerance abs 1e-3 + rel 1e-2.
    #[test]
    fn gradcheck_matmul_linear_scale() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let ins = [randn(&[3, 4], &mut rng), randn(&[4, 5], &mut rng)];
        gradcheck(
            |g, v| {
                let y = g.matmul(v[0], v[1]);
                weighted_sum(g, y, 2)
            },
            &ins,
            1e-2,
            TOL,
        )
        .unwrap();
        let ins = [
            randn(&[3, 4], &mut rng),
            randn(&[5, 4], &mut rng),
            randn(&[5], &mut rng),
        ];
        gradcheck(
            |g, v| {
                let y = g.linear(v[0], v[1], Some(v[2]));
                weighted_sum(g, y, 3)
            },
            &ins,
            1e-2,
            TOL,
        )
        .unwrap();
        gradcheck(
            |g, v| {
                let y = g.linear(v[0], v[1], None);
                weighted_sum(g, y, 3)
            },
            &ins[..2],
            1e-2,
            TOL,
        )
        .unwrap();
        gradcheck(
            |g, v| {
                let y = g.scale(v[0], -1.5);
                weighted_sum(g, y, 3)
            },
            &ins[..1],
            1e-2,
            TOL,
        )
        .unwrap();
    }

    /// Tolerance abs 1e-3 + rel 1e-2.
    #[test]
    fn gradcheck_reshape_flatten_concat_sum_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x = randn(&[2, 3, 2, 2], &mut rng);
        let y = randn(&[2, 3, 2, 3], &mut rng);
        gradcheck(
            |g, v| {
                let r = g.reshape(v[0], &[6, 4]);
                weighted_sum(g, r, 5)
            },
            std::slice::from_ref(&x),
            1e-2,
            TOL,
        )
        .unwrap();
        gradcheck(
            |g, v| {
                let r = g.flatten(v[0]);
                weighted_sum(g, r, 6)
            },
            std::slice::from_ref(&x),
            1e-2,
            TOL,
        )
        .unwrap();
        gradcheck(
            |g, v| {
                let r = g.concat_channels(&[v[0], v[1], v[0]]);
                weighted_sum(g, r, 7)
            },
            &[x.clone(), y],
            1e-2,
            TOL,
        )
        .unwrap();
        gradcheck(|g, v| g.sum(v[0]), std::slice::from_ref(&x), 1e-2, TOL).unwrap();
        gradcheck(
            |g, v| {
                let s = g.mul(v[0], v[0]);
                g.mean(s)
            },
            &[x],
            1e-2,
            TOL,
        )
        .unwrap();
    }
}
