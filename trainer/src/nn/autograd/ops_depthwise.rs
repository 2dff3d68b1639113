//! Depthwise 2-D convolution with depth multiplier 1 (PyTorch's `groups = channels`) over
//! NHWC: each channel convolved with its own kernel, zero padding on every side. Direct loops
//! both ways: a depthwise layer has `kh * kw` MACs per output against `kh * kw * C` for a full
//! convolution, so no GEMM is worth its packing. The kernel is used transposed to `[KH, KW,
//! C]`, so every inner loop runs over contiguous channels.

use super::conv_geom::{bias_grad, Conv2dParams, Geom};
use super::graph::{Backward, GradCtx, Graph, Var};
use super::{pool, pooled_zeros, slice, tensor, Tensor};

/// Shapes of one depthwise convolution: a convolution's of one input channel (its checks),
/// with the input's `C` channels (`g.o == g.c == C`).
fn geom(x: &[usize], w: &[usize], p: Conv2dParams) -> Geom {
    assert!(
        x.len() == 4 && w.len() == 4 && w[0] == x[3],
        "depthwise_conv2d: x must be NHWC and w [C, KH, KW, 1] with C = x's, got {x:?} and {w:?}"
    );
    Geom {
        c: x[3],
        ..Geom::new(&[x[0], x[1], x[2], 1], w, p)
    }
}

impl Geom {
    /// Calls `f(out, inp, tap)` for every output pixel and kernel tap whose input pixel lies
    /// inside the image: `out` and `inp` the offsets of the pixels' first channel, `tap` the
    /// offset of the tap's first channel in the transposed kernel.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        self.for_each_output(|out, taps| {
            for &(inp, tap) in taps {
                f(out, inp, tap);
            }
        });
    }

    /// Calls `f(out, taps)` for every output pixel with its taps whose input pixel lies inside
    /// the image, `(inp, tap)` offsets as [`Self::for_each_tap`] gives them, in its order.
    fn for_each_output(&self, mut f: impl FnMut(usize, &[(usize, usize)])) {
        let mut taps = Vec::with_capacity(self.kh * self.kw);
        let mut out = 0;
        for n in 0..self.n {
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    taps.clear();
                    for ky in 0..self.kh {
                        let iy = (oy * self.sh + ky).wrapping_sub(self.pt);
                        if iy >= self.h {
                            continue;
                        }
                        for kx in 0..self.kw {
                            let ix = (ox * self.sw + kx).wrapping_sub(self.pl);
                            if ix >= self.w {
                                continue;
                            }
                            let inp = ((n * self.h + iy) * self.w + ix) * self.c;
                            taps.push((inp, (ky * self.kw + kx) * self.c));
                        }
                    }
                    f(out, &taps);
                    out += self.c;
                }
            }
        }
    }
}

/// Channels per register block of the fused loops: one AVX-512 register of f32.
const LANES: usize = 16;

/// `acc[j] += a[j] * b[j]` over a block (fixed length: one vector register).
#[inline(always)]
fn fma_block(acc: &mut [f32; LANES], a: &[f32], b: &[f32]) {
    let (a, b): (&[f32; LANES], &[f32; LANES]) = match (a.try_into(), b.try_into()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => unreachable!("blocks are LANES long"),
    };
    for j in 0..LANES {
        acc[j] += a[j] * b[j];
    }
}

/// `acc[j] += a[j] * b[j]` over a shorter tail.
#[inline(always)]
fn fma_tail(acc: &mut [f32], a: &[f32], b: &[f32]) {
    for ((y, &a), &b) in acc.iter_mut().zip(a).zip(b) {
        *y += a * b;
    }
}

/// `y[o..o + c] (starting from its bias) += x * w` over the taps of each output pixel, a
/// register block of channels at a time across all its taps: the same additions in the same
/// order as tap by tap into `y`, without storing `y` between taps.
fn forward(g: &Geom, xs: &[f32], wt: &[f32], y: &mut [f32]) {
    let c = g.c;
    g.for_each_output(|o, taps| {
        let mut c0 = 0;
        while c0 + LANES <= c {
            let mut acc = [0f32; LANES];
            acc.copy_from_slice(&y[o + c0..o + c0 + LANES]);
            for &(i, t) in taps {
                fma_block(
                    &mut acc,
                    &xs[i + c0..i + c0 + LANES],
                    &wt[t + c0..t + c0 + LANES],
                );
            }
            y[o + c0..o + c0 + LANES].copy_from_slice(&acc);
            c0 += LANES;
        }
        if c0 < c {
            let acc = &mut y[o + c0..o + c];
            for &(i, t) in taps {
                fma_tail(acc, &xs[i + c0..i + c], &wt[t + c0..t + c]);
            }
        }
    });
}

/// `[C, KH, KW, 1]` -> `[KH, KW, C]` (and back with `back`).
fn transpose(w: &[f32], c: usize, taps: usize, back: bool) -> Vec<f32> {
    let mut t = vec![0.0; c * taps];
    for ch in 0..c {
        for k in 0..taps {
            if back {
                t[ch * taps + k] = w[k * c + ch];
            } else {
                t[k * c + ch] = w[ch * taps + k];
            }
        }
    }
    t
}

struct DepthwiseOp {
    g: Geom,
    has_bias: bool,
    /// The kernel as `[KH, KW, C]`.
    wt: Vec<f32>,
}

impl Backward for DepthwiseOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let (g, c) = (self.g, self.g.c);
        let dys = slice(&dy);
        let dx = ctx.needs(0).then(|| {
            let mut dx = pooled_zeros(ctx.input(0).shape());
            let d = dx.as_slice_mut().expect("standard layout");
            g.for_each_tap(|o, i, t| {
                let (d, dy, w) = (&mut d[i..i + c], &dys[o..o + c], &self.wt[t..t + c]);
                for ((d, &dy), &w) in d.iter_mut().zip(dy).zip(w) {
                    *d += dy * w;
                }
            });
            dx
        });
        let dw = ctx.needs(1).then(|| {
            let xs = slice(ctx.input(0));
            let mut dwt = vec![0.0f32; self.wt.len()];
            g.for_each_tap(|o, i, t| {
                let (d, dy, x) = (&mut dwt[t..t + c], &dys[o..o + c], &xs[i..i + c]);
                for ((d, &dy), &x) in d.iter_mut().zip(dy).zip(x) {
                    *d += dy * x;
                }
            });
            tensor(&[c, g.kh, g.kw, 1], transpose(&dwt, c, g.kh * g.kw, true))
        });
        let mut out = vec![dx, dw];
        if self.has_bias {
            out.push(ctx.needs(2).then(|| bias_grad(dys, c)));
        }
        pool::give_tensor(dy);
        out
    }
}

impl Graph {
    /// Depthwise 2-D convolution (cross-correlation, depth multiplier 1): `x [N, H, W, C]`,
    /// `w [C, KH, KW, 1]` (channel `c`'s kernel first, as a convolution's OHWI with one input
    /// channel), optional `b [C]`, zero padding `p.padding` on every side. Output `[N, OH, OW,
    /// C]` with `OH = (H + 2*pad - KH) / stride + 1`.
    pub fn depthwise_conv2d(&mut self, x: Var, w: Var, b: Option<Var>, p: Conv2dParams) -> Var {
        let g = geom(self.shape(x), self.shape(w), p);
        let c = g.c;
        let wt = transpose(slice(self.value(w)), c, g.kh * g.kw, false);
        let mut y = vec![0.0f32; g.n * g.oh * g.ow * c];
        if let Some(b) = b {
            let bs = slice(self.value(b));
            assert_eq!(
                bs.len(),
                c,
                "depthwise_conv2d: bias has {} entries, expected {c}",
                bs.len()
            );
            for row in y.chunks_exact_mut(c) {
                row.copy_from_slice(bs);
            }
        }
        forward(&g, slice(self.value(x)), &wt, &mut y);
        let y = tensor(&[g.n, g.oh, g.ow, c], y);
        let op = DepthwiseOp {
            g,
            has_bias: b.is_some(),
            wt,
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

    /// The definition, loop by loop in f64: output channel `c` reads only input channel `c`.
    fn depthwise_ref(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: Conv2dParams) -> Tensor {
        let (n, h, wd, c) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (kh, kw) = (w.shape()[1], w.shape()[2]);
        let ([sh, sw], [pt, pl, pb, pr]) = (p.stride, p.pad);
        let oh = (h + pt + pb - kh) / sh + 1;
        let ow = (wd + pl + pr - kw) / sw + 1;
        let mut y = Tensor::zeros(ndarray::IxDyn(&[n, oh, ow, c]));
        for i in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut acc = b.map_or(0.0, |b| b[[ch]] as f64);
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky) as isize - pt as isize;
                                let ix = (ox * sw + kx) as isize - pl as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[[i, iy as usize, ix as usize, ch]] as f64;
                                acc += xv * w[[ch, ky, kx, 0]] as f64;
                            }
                        }
                        y[[i, oy, ox, ch]] = acc as f32;
                    }
                }
            }
        }
        y
    }

    /// Strides `[rows, columns]`, padding `[top, left, bottom, right]`: TensorFlow's SAME at
    /// stride 2 pads one side only.
    /// Input shape, kernel, strides and padding of one case.
    type Case = ([usize; 4], [usize; 2], [usize; 2], [usize; 4]);
    const CASES: [Case; 7] = [
        ([2, 6, 5, 3], [3, 3], [1, 1], [1; 4]),
        ([1, 7, 7, 4], [3, 3], [2, 2], [1; 4]),
        ([2, 9, 4, 2], [5, 2], [1, 1], [0; 4]),
        ([1, 10, 4, 5], [10, 4], [2, 2], [2; 4]),
        ([1, 3, 3, 1], [3, 3], [1, 1], [0; 4]),
        ([1, 8, 6, 3], [3, 3], [2, 2], [0, 0, 1, 1]),
        ([2, 7, 5, 2], [3, 2], [2, 1], [1, 0, 2, 1]),
    ];

    #[test]
    fn matches_the_definition() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (xs, [kh, kw], stride, padding) in CASES {
            let c = xs[3];
            let x = randn(&xs, &mut rng);
            let w = randn(&[c, kh, kw, 1], &mut rng);
            let b = randn(&[c], &mut rng);
            let p = Conv2dParams {
                stride,
                pad: padding,
            };
            for bias in [None, Some(&b)] {
                let mut g = Graph::new();
                let (xv, wv) = (g.leaf(x.clone(), false), g.leaf(w.clone(), false));
                let bv = bias.map(|b| g.leaf(b.clone(), false));
                let y = g.depthwise_conv2d(xv, wv, bv, p);
                let want = depthwise_ref(&x, &w, bias, p);
                assert_eq!(g.shape(y), want.shape(), "{xs:?} k{kh}x{kw}");
                for (a, e) in slice(g.value(y)).iter().zip(want.iter()) {
                    assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{a} vs {e}");
                }
            }
        }
    }

    /// Input, kernel and bias gradients against central differences, on every case above
    /// (strides, one-sided clipping at the padding, non-square kernels). Tolerance abs 1e-3 +
    /// rel 1e-2.
    #[test]
    fn gradcheck_depthwise_conv2d() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for (xs, [kh, kw], stride, padding) in CASES {
            let c = xs[3];
            let x = randn(&xs, &mut rng);
            let w = randn(&[c, kh, kw, 1], &mut rng);
            let b = randn(&[c], &mut rng);
            let p = Conv2dParams {
                stride,
                pad: padding,
            };
            gradcheck(
                |g, v| {
                    let y = g.depthwise_conv2d(v[0], v[1], Some(v[2]), p);
                    weighted_sum(g, y, 5)
                },
                &[x, w, b],
                1e-2,
                Tolerance {
                    abs: 1e-3,
                    rel: 1e-2,
                },
            )
            .unwrap_or_else(|e| panic!("{xs:?} k{kh}x{kw} s{stride:?} p{padding:?}: {e:?}"));
        }
    }

    /// The register-blocked forward adds the same products in the same order as tap by tap
    /// into the output: equal bit for bit (channel counts below, at and past a block, and
    /// clipped windows), so training results do not move.
    #[test]
    fn blocked_forward_is_bit_identical_to_tap_by_tap() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (shape, k, s, pad) in [
            ([2, 7, 6, 5], [3, 3], [1, 1], [1; 4]),
            ([1, 9, 5, 16], [3, 3], [2, 2], [0, 0, 1, 1]),
            ([2, 6, 6, 37], [5, 3], [1, 2], [2, 1, 2, 1]),
        ] {
            let x = randn(&shape, &mut rng);
            let c = shape[3];
            let w = randn(&[c, k[0], k[1], 1], &mut rng);
            let p = Conv2dParams { stride: s, pad };
            let g = geom(x.shape(), w.shape(), p);
            let wt = transpose(slice(&w), c, g.kh * g.kw, false);
            let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.1 - 1.0).collect();
            let mut want = vec![0.0f32; g.n * g.oh * g.ow * c];
            for row in want.chunks_exact_mut(c) {
                row.copy_from_slice(&bias);
            }
            let mut got = want.clone();
            let xs = slice(&x);
            g.for_each_tap(|o, i, t| {
                for j in 0..c {
                    want[o + j] += xs[i + j] * wt[t + j];
                }
            });
            forward(&g, xs, &wt, &mut got);
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{shape:?}");
        }
    }
}
