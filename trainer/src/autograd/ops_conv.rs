//! 2-D convolution, NHWC activations and OHWI weights, as im2col + one GEMM.
//!
//! With `x [N, H, W, C]` and `w [O, KH, KW, C]`, the im2col matrix has one row per output
//! pixel (`M = N*OH*OW` rows) holding that pixel's receptive field in `(ky, kx, c)` order
//! (`K = KH*KW*C` columns) — the same order as a row of `w` viewed as `[O, K]`. Then
//! `y [M, O] = cols . w^T + b` is already NHWC. Backward: `dw = dy^T . cols`,
//! `dcols = dy . w`, scattered back by col2im, `db = column sums of dy`.
//!
//! A 1x1 convolution with stride 1 and no padding skips im2col: `cols` is `x` itself.

use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2};
use serde::{Deserialize, Serialize};

use super::graph::{Backward, GradCtx, Graph, Var};
use super::{slice, Tensor};

/// Stride and symmetric zero padding of a convolution (same for both spatial axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dParams {
    pub stride: usize,
    pub padding: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
        }
    }
}

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    pad: usize,
}

impl Geom {
    fn new(x: &[usize], w: &[usize], p: Conv2dParams) -> Self {
        assert_eq!(x.len(), 4, "conv2d: x must be NHWC, got {x:?}");
        assert_eq!(w.len(), 4, "conv2d: w must be OHWI, got {w:?}");
        assert_eq!(
            x[3], w[3],
            "conv2d: x has {} channels, w expects {}",
            x[3], w[3]
        );
        assert!(p.stride >= 1, "conv2d: stride must be >= 1");
        let (h, wd, kh, kw) = (x[1] + 2 * p.padding, x[2] + 2 * p.padding, w[1], w[2]);
        assert!(
            h >= kh && wd >= kw,
            "conv2d: kernel {kh}x{kw} larger than padded input {h}x{wd}"
        );
        Self {
            n: x[0],
            h: x[1],
            w: x[2],
            c: x[3],
            o: w[0],
            kh,
            kw,
            oh: (h - kh) / p.stride + 1,
            ow: (wd - kw) / p.stride + 1,
            stride: p.stride,
            pad: p.padding,
        }
    }
    fn m(&self) -> usize {
        self.n * self.oh * self.ow
    }
    fn k(&self) -> usize {
        self.kh * self.kw * self.c
    }
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// For output column `ox`, the range of `kx` whose input column is inside the image, and
    /// the input column of `kx = 0` (may be negative).
    #[inline]
    fn kx_range(&self, ox: usize) -> (usize, usize, isize) {
        let ix0 = (ox * self.stride) as isize - self.pad as isize;
        let lo = (-ix0).max(0) as usize;
        let hi = ((self.w as isize - ix0).max(0) as usize).min(self.kw);
        (lo.min(hi), hi, ix0)
    }
}

/// Writes the im2col matrix `[M, K]` of `x` into `cols` (every element is overwritten).
fn im2col(x: &[f32], g: &Geom, cols: &mut [f32]) {
    let (k, c, row) = (g.k(), g.c, g.kw * g.c);
    debug_assert_eq!(cols.len(), g.m() * k);
    let mut rows = cols.chunks_exact_mut(k);
    for n in 0..g.n {
        let img = &x[n * g.h * g.w * c..(n + 1) * g.h * g.w * c];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let dst = rows.next().expect("M rows");
                let (lo, hi, ix0) = g.kx_range(ox);
                for ky in 0..g.kh {
                    let d = &mut dst[ky * row..(ky + 1) * row];
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        d.fill(0.0);
                        continue;
                    }
                    // The kx window is contiguous in an NHWC row whatever the stride.
                    let src0 = (iy as usize * g.w) as isize + ix0 + lo as isize;
                    let src = &img[src0 as usize * c..][..(hi - lo) * c];
                    d[..lo * c].fill(0.0);
                    d[lo * c..hi * c].copy_from_slice(src);
                    d[hi * c..].fill(0.0);
                }
            }
        }
    }
}

/// Adds the im2col-shaped gradient `dcols [M, K]` back into `dx` (NHWC, pre-zeroed).
fn col2im(dcols: &[f32], g: &Geom, dx: &mut [f32]) {
    let (k, c, row) = (g.k(), g.c, g.kw * g.c);
    let mut rows = dcols.chunks_exact(k);
    for n in 0..g.n {
        let img = &mut dx[n * g.h * g.w * c..(n + 1) * g.h * g.w * c];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let src = rows.next().expect("M rows");
                let (lo, hi, ix0) = g.kx_range(ox);
                for ky in 0..g.kh {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        continue;
                    }
                    let s = &src[ky * row + lo * c..ky * row + hi * c];
                    let d0 = (iy as usize * g.w) as isize + ix0 + lo as isize;
                    let d = &mut img[d0 as usize * c..][..(hi - lo) * c];
                    for (d, s) in d.iter_mut().zip(s) {
                        *d += s;
                    }
                }
            }
        }
    }
}

fn mat(data: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((rows, cols), data).expect("matrix shape")
}

fn mat_mut(data: &mut [f32], rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((rows, cols), data).expect("matrix shape")
}

struct Conv2dOp {
    g: Geom,
    has_bias: bool,
    /// im2col of the input, kept only when the weight needs a gradient and the conv is not
    /// pointwise (then the input itself is the matrix).
    cols: Option<Vec<f32>>,
}

impl Backward for Conv2dOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let g = &self.g;
        let (m, k, o) = (g.m(), g.k(), g.o);
        let dy2 = mat(slice(&dy), m, o);
        let w2 = mat(slice(ctx.input(1)), o, k);

        let dx = ctx.needs(0).then(|| {
            let mut dx = Tensor::zeros(ctx.input(0).raw_dim());
            let dxs = dx.as_slice_mut().expect("standard layout");
            if g.pointwise() {
                general_mat_mul(1.0, &dy2, &w2, 0.0, &mut mat_mut(dxs, m, k));
            } else {
                let mut dcols = vec![0.0f32; m * k];
                general_mat_mul(1.0, &dy2, &w2, 0.0, &mut mat_mut(&mut dcols, m, k));
                col2im(&dcols, g, dxs);
            }
            dx
        });

        let dw = ctx.needs(1).then(|| {
            let cols = match &self.cols {
                Some(c) => mat(c, m, k),
                None => mat(slice(ctx.input(0)), m, k),
            };
            let mut dw = Tensor::zeros(ctx.input(1).raw_dim());
            let dws = dw.as_slice_mut().expect("standard layout");
            general_mat_mul(1.0, &dy2.t(), &cols, 0.0, &mut mat_mut(dws, o, k));
            dw
        });

        let mut out = vec![dx, dw];
        if self.has_bias {
            out.push(ctx.needs(2).then(|| {
                let mut acc = vec![0.0f64; o];
                for row in slice(&dy).chunks_exact(o) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += v as f64;
                    }
                }
                Tensor::from_shape_vec(
                    ctx.input(2).raw_dim(),
                    acc.iter().map(|&a| a as f32).collect(),
                )
                .expect("bias shape")
            }));
        }
        out
    }
}

impl Graph {
    /// 2-D convolution (cross-correlation, as in PyTorch): `x [N, H, W, C]` (NHWC),
    /// `w [O, KH, KW, C]` (OHWI), optional `b [O]`, zero padding `p.padding` on every side.
    /// Output `[N, OH, OW, O]` with `OH = (H + 2*pad - KH) / stride + 1`.
    pub fn conv2d(&mut self, x: Var, w: Var, b: Option<Var>, p: Conv2dParams) -> Var {
        let g = Geom::new(self.shape(x), self.shape(w), p);
        let (m, k, o) = (g.m(), g.k(), g.o);
        let mut y = vec![0.0f32; m * o];
        let beta = match b {
            Some(b) => {
                let bv = slice(self.value(b));
                assert_eq!(
                    bv.len(),
                    o,
                    "conv2d: bias has {} entries, expected {o}",
                    bv.len()
                );
                for row in y.chunks_exact_mut(o) {
                    row.copy_from_slice(bv);
                }
                1.0
            }
            None => 0.0,
        };
        let w2 = mat(slice(self.value(w)), o, k);
        let cols = if g.pointwise() {
            let x2 = mat(slice(self.value(x)), m, k);
            general_mat_mul(1.0, &x2, &w2.t(), beta, &mut mat_mut(&mut y, m, o));
            None
        } else {
            let mut cols = vec![0.0f32; m * k];
            im2col(slice(self.value(x)), &g, &mut cols);
            general_mat_mul(
                1.0,
                &mat(&cols, m, k),
                &w2.t(),
                beta,
                &mut mat_mut(&mut y, m, o),
            );
            self.requires_grad(w).then_some(cols)
        };
        let y = Tensor::from_shape_vec(ndarray::IxDyn(&[g.n, g.oh, g.ow, o]), y).expect("shape");
        let op = Conv2dOp {
            g,
            has_bias: b.is_some(),
            cols,
        };
        match b {
            Some(b) => self.push(y, &[x, w, b], op),
            None => self.push(y, &[x, w], op),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{gradcheck, test_util::*, Tolerance};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Direct 7-loop convolution, the obviously-correct reference.
    fn conv_ref(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: Conv2dParams) -> Tensor {
        let g = Geom::new(x.shape(), w.shape(), p);
        let mut y = Tensor::zeros(ndarray::IxDyn(&[g.n, g.oh, g.ow, g.o]));
        for n in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for o in 0..g.o {
                        let mut acc = b.map_or(0.0, |b| b[[o]] as f64);
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                for c in 0..g.c {
                                    acc += (x[[n, iy as usize, ix as usize, c]] * w[[o, ky, kx, c]])
                                        as f64;
                                }
                            }
                        }
                        y[[n, oy, ox, o]] = acc as f32;
                    }
                }
            }
        }
        y
    }

    const CASES: [(&[usize], &[usize], Conv2dParams); 7] = [
        (
            &[2, 5, 5, 3],
            &[4, 3, 3, 3],
            Conv2dParams {
                stride: 1,
                padding: 1,
            },
        ),
        (
            &[2, 5, 5, 3],
            &[4, 3, 3, 3],
            Conv2dParams {
                stride: 1,
                padding: 0,
            },
        ),
        (
            &[1, 7, 6, 2],
            &[3, 3, 3, 2],
            Conv2dParams {
                stride: 2,
                padding: 1,
            },
        ),
        (
            &[1, 6, 9, 2],
            &[2, 3, 3, 2],
            Conv2dParams {
                stride: 2,
                padding: 0,
            },
        ),
        (
            &[2, 4, 5, 3],
            &[5, 1, 1, 3],
            Conv2dParams {
                stride: 1,
                padding: 0,
            },
        ),
        (
            &[2, 5, 4, 3],
            &[2, 1, 1, 3],
            Conv2dParams {
                stride: 2,
                padding: 0,
            },
        ),
        (
            &[1, 5, 7, 2],
            &[3, 2, 3, 2],
            Conv2dParams {
                stride: 1,
                padding: 1,
            },
        ),
    ];

    #[test]
    fn matches_direct_convolution() {
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        for (xs, ws, p) in CASES {
            let (x, w, b) = (
                randn(xs, &mut rng),
                randn(ws, &mut rng),
                randn(&ws[..1], &mut rng),
            );
            let mut g = Graph::new();
            let (xv, wv, bv) = (
                g.constant(x.clone()),
                g.constant(w.clone()),
                g.constant(b.clone()),
            );
            let y = g.conv2d(xv, wv, Some(bv), p);
            let r = conv_ref(&x, &w, Some(&b), p);
            assert_eq!(g.shape(y), r.shape());
            for (a, e) in g.value(y).iter().zip(r.iter()) {
                assert!((a - e).abs() < 1e-5, "{a} vs {e} for {xs:?} {ws:?} {p:?}");
            }
        }
    }

    #[test]
    fn padding_is_zero() {
        let mut g = Graph::new();
        let x = g.constant(Tensor::ones(ndarray::IxDyn(&[1, 2, 2, 1])));
        let w = g.constant(Tensor::ones(ndarray::IxDyn(&[1, 3, 3, 1])));
        let y = g.conv2d(
            x,
            w,
            None,
            Conv2dParams {
                stride: 1,
                padding: 1,
            },
        );
        assert_eq!(slice(g.value(y)), &[4.0, 4.0, 4.0, 4.0]);
    }

    /// Every case above (stride 1 and 2, padding 0 and 1, 1x1, 3x3, 2x3 kernels, non-square
    /// inputs), with and without bias, gradients w.r.t. x, w and b.
    /// Tolerance abs 2e-3 + rel 1e-2, eps 1e-2.
    #[test]
    fn gradcheck_conv2d() {
        let tol = Tolerance {
            abs: 2e-3,
            rel: 1e-2,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (xs, ws, p) in CASES {
            let ins = [
                randn(xs, &mut rng),
                randn(ws, &mut rng),
                randn(&ws[..1], &mut rng),
            ];
            gradcheck(
                |g, v| {
                    let y = g.conv2d(v[0], v[1], Some(v[2]), p);
                    weighted_sum(g, y, 12)
                },
                &ins,
                1e-2,
                tol,
            )
            .unwrap_or_else(|e| panic!("{xs:?} {ws:?} {p:?}: {e}"));
            gradcheck(
                |g, v| {
                    let y = g.conv2d(v[0], v[1], None, p);
                    weighted_sum(g, y, 13)
                },
                &ins[..2],
                1e-2,
                tol,
            )
            .unwrap_or_else(|e| panic!("{xs:?} {ws:?} {p:?}: {e}"));
        }
    }

    #[test]
    fn no_input_grad_for_first_layer() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let mut g = Graph::new();
        let x = g.constant(randn(&[1, 4, 4, 1], &mut rng));
        let w = g.leaf(randn(&[2, 3, 3, 1], &mut rng), true);
        let y = g.conv2d(
            x,
            w,
            None,
            Conv2dParams {
                stride: 1,
                padding: 1,
            },
        );
        let s = g.sum(y);
        g.backward(s);
        assert!(g.grad(x).is_none());
        assert_eq!(g.grad(w).unwrap().shape(), &[2, 3, 3, 1]);
    }
}
