//! 2-D convolution, NHWC activations and OHWI weights, as im2col + one GEMM.
//!
//! With `x [N, H, W, C]` and `w [O, KH, KW, C]`, the im2col matrix has one row per output
//! pixel (`M = N*OH*OW` rows) holding that pixel's receptive field in `(ky, kx, c)` order
//! (`K = KH*KW*C` columns) — the same order as a row of `w` viewed as `[O, K]`. Then
//! `y [M, O] = cols . w^T + b` is already NHWC. Backward: `dw = dy^T . cols`,
//! `dcols = dy . w`, scattered back by col2im, `db = column sums of dy`.
//!
//! A 1x1 convolution with stride 1 and no padding skips im2col: `cols` is `x` itself.

use super::conv_geom::{bias_grad, Conv2dParams, Geom};
use super::gemm::{gemm, Mat};
use super::graph::{Backward, GradCtx, Graph, Var};
use super::{pool, pooled, pooled_zeros, slice, Tensor};

/// Copies `count` segments of `len` floats, segment `i` from `src[i * step..]` to
/// `dst[i * k..]`. Small fixed lengths get a monomorphised loop, so a segment is a few moves
/// rather than a memcpy call (a 3x3 conv of a 1-channel image has 3-float segments).
fn strided_copy(dst: &mut [f32], k: usize, src: &[f32], step: usize, count: usize, len: usize) {
    fn fixed<const L: usize>(dst: &mut [f32], k: usize, src: &[f32], step: usize, count: usize) {
        for i in 0..count {
            let s: &[f32; L] = src[i * step..i * step + L].try_into().expect("L floats");
            let d: &mut [f32; L] = (&mut dst[i * k..i * k + L]).try_into().expect("L floats");
            *d = *s;
        }
    }
    match len {
        1 => fixed::<1>(dst, k, src, step, count),
        2 => fixed::<2>(dst, k, src, step, count),
        3 => fixed::<3>(dst, k, src, step, count),
        4 => fixed::<4>(dst, k, src, step, count),
        6 => fixed::<6>(dst, k, src, step, count),
        8 => fixed::<8>(dst, k, src, step, count),
        9 => fixed::<9>(dst, k, src, step, count),
        12 => fixed::<12>(dst, k, src, step, count),
        16 => fixed::<16>(dst, k, src, step, count),
        24 => fixed::<24>(dst, k, src, step, count),
        32 => fixed::<32>(dst, k, src, step, count),
        48 => fixed::<48>(dst, k, src, step, count),
        64 => fixed::<64>(dst, k, src, step, count),
        96 => fixed::<96>(dst, k, src, step, count),
        _ => {
            for i in 0..count {
                dst[i * k..i * k + len].copy_from_slice(&src[i * step..i * step + len]);
            }
        }
    }
}

/// `dst[i * step..][..len] += src[i * k..][..len]` for `i < count` (col2im's inner loop).
fn strided_add(dst: &mut [f32], step: usize, src: &[f32], k: usize, count: usize, len: usize) {
    fn fixed<const L: usize>(dst: &mut [f32], step: usize, src: &[f32], k: usize, count: usize) {
        for i in 0..count {
            let s: &[f32; L] = src[i * k..i * k + L].try_into().expect("L floats");
            let d: &mut [f32; L] = (&mut dst[i * step..i * step + L])
                .try_into()
                .expect("L floats");
            for j in 0..L {
                d[j] += s[j];
            }
        }
    }
    match len {
        3 => fixed::<3>(dst, step, src, k, count),
        8 => fixed::<8>(dst, step, src, k, count),
        24 => fixed::<24>(dst, step, src, k, count),
        48 => fixed::<48>(dst, step, src, k, count),
        96 => fixed::<96>(dst, step, src, k, count),
        _ => {
            for i in 0..count {
                let d = &mut dst[i * step..i * step + len];
                for (d, s) in d.iter_mut().zip(&src[i * k..i * k + len]) {
                    *d += s;
                }
            }
        }
    }
}

/// Writes the im2col matrix `[M, K]` of `x` into `cols` (every element is overwritten).
/// Works one input row at a time: the row is copied into a zero-padded buffer, from which
/// each output column's `KW * C` window is one contiguous segment, whatever the stride.
fn im2col(x: &[f32], g: &Geom, cols: &mut [f32]) {
    let (k, c, seg) = (g.k(), g.c, g.kw * g.c);
    debug_assert_eq!(cols.len(), g.m() * k);
    let mut prow = vec![0.0f32; g.padded_row()];
    let zeros = vec![0.0f32; seg];
    for (r, block) in cols.chunks_exact_mut(g.ow * k).enumerate() {
        let (n, oy) = (r / g.oh, r % g.oh);
        for ky in 0..g.kh {
            let dst = &mut block[ky * seg..];
            let iy = (oy * g.sh + ky) as isize - g.pt as isize;
            if iy < 0 || iy >= g.h as isize {
                strided_copy(dst, k, &zeros, 0, g.ow, seg);
                continue;
            }
            let start = (n * g.h + iy as usize) * g.w * c;
            prow[g.pl * c..(g.pl + g.w) * c].copy_from_slice(&x[start..start + g.w * c]);
            strided_copy(dst, k, &prow, g.sw * c, g.ow, seg);
        }
    }
}

/// Adds the im2col-shaped gradient `dcols [M, K]` back into `dx` (NHWC, pre-zeroed), one
/// input row at a time through a padded accumulation buffer.
fn col2im(dcols: &[f32], g: &Geom, dx: &mut [f32]) {
    let (k, c, seg) = (g.k(), g.c, g.kw * g.c);
    let mut prow = vec![0.0f32; g.padded_row()];
    for (r, block) in dcols.chunks_exact(g.ow * k).enumerate() {
        let (n, oy) = (r / g.oh, r % g.oh);
        for ky in 0..g.kh {
            let iy = (oy * g.sh + ky) as isize - g.pt as isize;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            prow.fill(0.0);
            strided_add(&mut prow, g.sw * c, &block[ky * seg..], k, g.ow, seg);
            let start = (n * g.h + iy as usize) * g.w * c;
            let d = &mut dx[start..start + g.w * c];
            for (d, s) in d.iter_mut().zip(&prow[g.pl * c..]) {
                *d += s;
            }
        }
    }
}

struct Conv2dOp {
    g: Geom,
    has_bias: bool,
    /// im2col of the input, kept only when the weight needs a gradient and the conv is not
    /// pointwise (then the input itself is the matrix).
    cols: Option<Vec<f32>>,
}

impl Drop for Conv2dOp {
    fn drop(&mut self) {
        if let Some(c) = self.cols.take() {
            pool::give(c);
        }
    }
}

impl Backward for Conv2dOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let g = &self.g;
        let (m, k, o) = (g.m(), g.k(), g.o);
        let dy2 = Mat::new(slice(&dy), m, o);
        let w2 = Mat::new(slice(ctx.input(1)), o, k);

        let dx = ctx.needs(0).then(|| {
            if g.pointwise() {
                let mut dx = pooled(ctx.input(0).shape());
                gemm(dy2, w2, dx.as_slice_mut().expect("standard layout"), false);
                dx
            } else {
                let mut dcols = pool::take(m * k);
                gemm(dy2, w2, &mut dcols, false);
                let mut dx = pooled_zeros(ctx.input(0).shape());
                col2im(&dcols, g, dx.as_slice_mut().expect("standard layout"));
                pool::give(dcols);
                dx
            }
        });

        let dw = ctx.needs(1).then(|| {
            let cols = match &self.cols {
                Some(c) => Mat::new(c, m, k),
                None => Mat::new(slice(ctx.input(0)), m, k),
            };
            let mut dw = Tensor::zeros(ctx.input(1).raw_dim());
            gemm(
                dy2.t(),
                cols,
                dw.as_slice_mut().expect("standard layout"),
                false,
            );
            dw
        });

        let mut out = vec![dx, dw];
        if self.has_bias {
            out.push(ctx.needs(2).then(|| bias_grad(slice(&dy), o)));
        }
        pool::give_tensor(dy);
        out
    }
}

impl Graph {
    /// 2-D convolution (cross-correlation, as in PyTorch): `x [N, H, W, C]` (NHWC),
    /// `w [O, KH, KW, C]` (OHWI), optional `b [O]`, zero padding `p.pad` (top, left,
    /// bottom, right). Output `[N, OH, OW, O]` with `OH = (H + top + bottom - KH) / stride_h
    /// + 1`.
    pub fn conv2d(&mut self, x: Var, w: Var, b: Option<Var>, p: Conv2dParams) -> Var {
        let g = Geom::new(self.shape(x), self.shape(w), p);
        let (m, k, o) = (g.m(), g.k(), g.o);
        if let Some(b) = b {
            let n = self.value(b).len();
            assert_eq!(n, o, "conv2d: bias has {n} entries, expected {o}");
        }
        #[cfg(target_arch = "x86_64")]
        if !g.pointwise() && super::ops_conv_direct::usable(&g, [m, o, k]) {
            return self.conv2d_direct(x, w, b, g);
        }
        let mut y = pool::take(m * o);
        // With a bias the output starts as the bias and the GEMM accumulates onto it;
        // without, the GEMM overwrites the (stale) buffer.
        if let Some(b) = b {
            for row in y.chunks_exact_mut(o) {
                row.copy_from_slice(slice(self.value(b)));
            }
        }
        let w2 = Mat::new(slice(self.value(w)), o, k);
        let cols = if g.pointwise() {
            gemm(
                Mat::new(slice(self.value(x)), m, k),
                w2.t(),
                &mut y,
                b.is_some(),
            );
            None
        } else {
            let mut cols = pool::take(m * k);
            im2col(slice(self.value(x)), &g, &mut cols);
            gemm(Mat::new(&cols, m, k), w2.t(), &mut y, b.is_some());
            if self.requires_grad(w) {
                Some(cols)
            } else {
                pool::give(cols);
                None
            }
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
    use crate::nn::gradcheck::{gradcheck, test_util::*, Tolerance};
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
                                let iy = (oy * g.sh + ky) as isize - g.pt as isize;
                                let ix = (ox * g.sw + kx) as isize - g.pl as isize;
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
                stride: [1; 2],
                pad: [1; 4],
            },
        ),
        (
            &[2, 5, 5, 3],
            &[4, 3, 3, 3],
            Conv2dParams {
                stride: [1; 2],
                pad: [0; 4],
            },
        ),
        (
            &[1, 7, 6, 2],
            &[3, 3, 3, 2],
            Conv2dParams {
                stride: [2; 2],
                pad: [1; 4],
            },
        ),
        (
            &[1, 6, 9, 2],
            &[2, 3, 3, 2],
            Conv2dParams {
                stride: [2; 2],
                pad: [0; 4],
            },
        ),
        (
            &[2, 4, 5, 3],
            &[5, 1, 1, 3],
            Conv2dParams {
                stride: [1; 2],
                pad: [0; 4],
            },
        ),
        (
            &[2, 5, 4, 3],
            &[2, 1, 1, 3],
            Conv2dParams {
                stride: [2; 2],
                pad: [0; 4],
            },
        ),
        (
            &[1, 5, 7, 2],
            &[3, 2, 3, 2],
            Conv2dParams {
                stride: [1; 2],
                pad: [1; 4],
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
        let y = g.conv2d(x, w, None, Conv2dParams::square(1, 1));
        assert_eq!(slice(g.value(y)), &[4.0, 4.0, 4.0, 4.0]);
    }

    /// Every case above (stride 1 and 2, padding 0 and 1, 1x1, 3x3, 2x3 kernels, non-square
    /// inputs), with and without bias, gradients w.r.t. x, w and b.
    /// Tolerance abs 2e-3 + rel 1e-2, eps 1e-2.
    #[test]
    fn gradcheck_conv2d() {
        // Every backward on every CPU: the im2col path, and (x86-64) the implicit-GEMM path
        // with its portable product and, where the CPU has AVX-512F, its AVX-512 one; the
        // stride-1 cases must reach the implicit path when it is forced.
        gradcheck_conv2d_cases();
        #[cfg(target_arch = "x86_64")]
        {
            use crate::nn::autograd::ops_conv_direct::{with_conv_path, ConvPath, DIRECT_RUNS};
            for path in [
                ConvPath::Im2col,
                ConvPath::DirectPortable,
                ConvPath::DirectAvx512,
            ] {
                let before = DIRECT_RUNS.with(|r| r.get());
                let ran = with_conv_path(path, || {
                    crate::nn::autograd::gemm::serial(gradcheck_conv2d_cases)
                });
                let direct = DIRECT_RUNS.with(|r| r.get()) - before;
                match (path, ran) {
                    (ConvPath::Im2col, _) => assert_eq!(direct, 0),
                    (_, Some(())) => assert!(direct > 0, "{path:?}: no case took it"),
                    (_, None) => eprintln!("gradcheck_conv2d: {path:?} needs AVX-512F"),
                }
            }
        }
    }

    fn gradcheck_conv2d_cases() {
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
        let xv = randn(&[1, 4, 4, 1], &mut rng);
        let xs: Vec<f32> = xv.iter().copied().collect();
        let x = g.constant(xv);
        let w = g.leaf(randn(&[2, 3, 3, 1], &mut rng), true);
        let y = g.conv2d(x, w, None, Conv2dParams::square(1, 1));
        let s = g.sum(y);
        g.backward(s);
        assert!(g.grad(x).is_none());
        let dw = g.grad(w).unwrap();
        assert_eq!(dw.shape(), &[2, 3, 3, 1]);
        // d(sum y)/dW[o, ky, kx] is the sum of the input under tap (ky, kx) over the 4x4
        // outputs (padding 1), the same for both output channels.
        for o in 0..2 {
            for ky in 0..3 {
                for kx in 0..3 {
                    let mut want = 0.0f32;
                    for oy in 0..4usize {
                        for ox in 0..4usize {
                            let (iy, ix) = ((oy + ky).wrapping_sub(1), (ox + kx).wrapping_sub(1));
                            if iy < 4 && ix < 4 {
                                want += xs[iy * 4 + ix];
                            }
                        }
                    }
                    let got = dw[[o, ky, kx, 0]];
                    assert!(
                        (got - want).abs() < 1e-4,
                        "dW[{o}, {ky}, {kx}] {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Shapes big enough for the buffer cache (the small cases above never touch it): stale
    /// contents of reused buffers must not leak into results. Runs input A, then B, then A
    /// again; both A runs must agree bit for bit and match the direct convolution.
    #[test]
    fn reused_buffers_do_not_leak() {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let p = Conv2dParams::square(1, 1);
        let w = randn(&[8, 3, 3, 8], &mut rng);
        let (xa, xb) = (
            randn(&[2, 20, 20, 8], &mut rng),
            randn(&[2, 20, 20, 8], &mut rng),
        );
        let run = |x: &Tensor, bias: bool| {
            let mut g = Graph::new();
            let (xv, wv) = (g.leaf(x.clone(), true), g.leaf(w.clone(), true));
            let b = bias.then(|| g.leaf(Tensor::ones(ndarray::IxDyn(&[8])), true));
            let y = g.conv2d(xv, wv, b, p);
            let yv = g.value(y).clone();
            let s = weighted_sum(&mut g, y, 16);
            g.backward(s);
            (yv, g.take_grad(xv).unwrap(), g.take_grad(wv).unwrap())
        };
        for bias in [false, true] {
            let first = run(&xa, bias);
            let _ = run(&xb, bias);
            let again = run(&xa, bias);
            assert_eq!(first, again, "bias {bias}");
            let ones = Tensor::ones(ndarray::IxDyn(&[8]));
            let want = conv_ref(&xa, &w, bias.then_some(&ones), p);
            for (a, e) in first.0.iter().zip(want.iter()) {
                assert!((a - e).abs() < 1e-4, "{a} vs {e}");
            }
        }
    }

    /// Stride-1 square kernels, which the implicit-GEMM path takes on a CPU with AVX-512F
    /// (the test checks that each case reached it): the forward matches the direct loops,
    /// the gradients match the im2col path's (and both are checked by finite differences
    /// above and the adjoint property below). The cases include one input channel (a first
    /// layer), images of more than 256 output pixels (dW's depth blocks then start inside an
    /// output row), an output one pixel wide and an even kernel.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn implicit_gemm_path_matches_im2col() {
        use crate::nn::autograd::ops_conv_direct::{with_conv_path, ConvPath};
        // The portable product on every CPU, and the AVX-512 one where there is AVX-512F.
        implicit_gemm_cases(ConvPath::DirectPortable);
        if with_conv_path(ConvPath::DirectAvx512, || ()).is_some() {
            implicit_gemm_cases(ConvPath::DirectAvx512);
        } else {
            eprintln!("implicit_gemm_path_matches_im2col: no AVX-512F, the portable product only");
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn implicit_gemm_cases(direct_path: crate::nn::autograd::ops_conv_direct::ConvPath) {
        use crate::nn::autograd::ops_conv_direct::{with_conv_path, ConvPath, DIRECT_RUNS};
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let cases: [(&[usize], &[usize], usize); 9] = [
            (&[2, 6, 5, 8], &[4, 3, 3, 8], 1),
            (&[1, 7, 7, 9], &[3, 3, 3, 9], 0),
            (&[2, 5, 6, 16], &[17, 3, 3, 16], 2),
            (&[1, 6, 6, 8], &[5, 5, 5, 8], 2),
            (&[3, 9, 8, 33], &[70, 3, 3, 33], 1),
            (&[2, 28, 28, 1], &[8, 3, 3, 1], 1),
            (&[2, 12, 12, 1], &[6, 5, 5, 1], 2),
            (&[2, 6, 1, 4], &[3, 3, 3, 4], 1),
            (&[2, 5, 5, 3], &[4, 2, 2, 3], 1),
        ];
        for (xs, ws, pad) in cases {
            let before = DIRECT_RUNS.with(|r| r.get());
            let p = Conv2dParams::square(1, pad);
            let (x, w, b) = (
                randn(xs, &mut rng),
                randn(ws, &mut rng),
                randn(&ws[..1], &mut rng),
            );
            // On this thread: a product the pool would split takes the im2col path.
            let run = |path: ConvPath| {
                let go = || {
                    let mut g = Graph::new();
                    let (xv, wv, bv) = (
                        g.leaf(x.clone(), true),
                        g.leaf(w.clone(), true),
                        g.leaf(b.clone(), true),
                    );
                    let y = g.conv2d(xv, wv, Some(bv), p);
                    let yv = g.value(y).clone();
                    let s = weighted_sum(&mut g, y, 18);
                    g.backward(s);
                    [
                        yv,
                        g.take_grad(xv).unwrap(),
                        g.take_grad(wv).unwrap(),
                        g.take_grad(bv).unwrap(),
                    ]
                };
                with_conv_path(path, || crate::nn::autograd::gemm::serial(go)).unwrap()
            };
            let direct = run(direct_path);
            assert_eq!(
                DIRECT_RUNS.with(|r| r.get()),
                before + 1,
                "{xs:?} {ws:?} did not take the implicit-GEMM path"
            );
            let im2col = run(ConvPath::Im2col);
            let want = conv_ref(&x, &w, Some(&b), p);
            for (a, e) in direct[0].iter().zip(want.iter()) {
                assert!((a - e).abs() < 1e-4, "{xs:?} {ws:?}: {a} vs {e}");
            }
            for (i, (d, m)) in direct.iter().zip(&im2col).enumerate() {
                assert_eq!(d.shape(), m.shape());
                for (a, e) in d.iter().zip(m.iter()) {
                    assert!(
                        (a - e).abs() < 1e-4 * (1.0 + e.abs()),
                        "{xs:?} {ws:?} #{i}: {a} vs {e}"
                    );
                }
            }
        }
    }

    /// Regression: an empty batch took the implicit-GEMM path, whose backward computed its
    /// row count as `(n - 1) * ...` and overflowed. Empty in, empty out, zero gradients.
    #[test]
    fn empty_batch_has_empty_output_and_zero_gradients() {
        let mut rng = ChaCha8Rng::seed_from_u64(19);
        let mut g = Graph::new();
        let x = g.leaf(Tensor::zeros(ndarray::IxDyn(&[0, 6, 6, 8])), true);
        let w = g.leaf(randn(&[4, 3, 3, 8], &mut rng), true);
        let p = Conv2dParams::square(1, 1);
        let y = g.conv2d(x, w, None, p);
        assert_eq!(g.shape(y), &[0, 6, 6, 4]);
        let s = g.sum(y);
        g.backward(s);
        assert!(g.grad(w).is_none_or(|d| d.iter().all(|&v| v == 0.0)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any shape, kernel, strides per axis and padding per side: the forward matches the
        /// direct loops, and the backward is the adjoint of the (bilinear) forward:
        /// `sum(dy * conv(x, w)) == sum(dx * x) == sum(dw * w)`.
        #[test]
        fn forward_matches_reference_and_backward_is_adjoint(
            n in 1usize..3, h in 1usize..9, wd in 1usize..9, c in 1usize..12, o in 1usize..5,
            kh in 1usize..4, kw in 1usize..4, stride in [1usize..4, 1usize..4],
            pad in [0usize..3, 0usize..3, 0usize..3, 0usize..3], seed in 0u64..1000,
        ) {
            proptest::prop_assume!(h + pad[0] + pad[2] >= kh && wd + pad[1] + pad[3] >= kw);
            let p = Conv2dParams { stride, pad };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (x, w) = (randn(&[n, h, wd, c], &mut rng), randn(&[o, kh, kw, c], &mut rng));
            let mut g = Graph::new();
            let (xv, wv) = (g.leaf(x.clone(), true), g.leaf(w.clone(), true));
            let y = g.conv2d(xv, wv, None, p);
            let want = conv_ref(&x, &w, None, p);
            proptest::prop_assert_eq!(g.shape(y), want.shape());
            for (a, e) in g.value(y).iter().zip(want.iter()) {
                proptest::prop_assert!((a - e).abs() < 1e-4, "{} vs {}", a, e);
            }
            let dy = randn(g.shape(y), &mut rng);
            let dot = |a: &Tensor, b: &Tensor| a.iter().zip(b.iter()).map(|(&u, &v)| (u * v) as f64).sum::<f64>();
            let lhs = dot(&dy, g.value(y));
            let dyv = g.constant(dy);
            let prod = g.mul(y, dyv);
            let s = g.sum(prod);
            g.backward(s);
            let (dx, dw) = (g.grad(xv).unwrap(), g.grad(wv).unwrap());
            let tol = 1e-3 * (1.0 + lhs.abs());
            proptest::prop_assert!((dot(dx, &x) - lhs).abs() < tol, "dx: {} vs {}", dot(dx, &x), lhs);
            proptest::prop_assert!((dot(dw, &w) - lhs).abs() < tol, "dw: {} vs {}", dot(dw, &w), lhs);
        }
    }
}
