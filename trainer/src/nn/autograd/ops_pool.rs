//! Pooling over NHWC tensors: max (saves argmax indices), average, global average.
//! No padding; output size `(H - kernel) / stride + 1`.

use ndarray::IxDyn;

use super::graph::{Backward, GradCtx, Graph, Var};
use super::{pool, pooled, pooled_zeros, slice, Tensor};

#[derive(Clone, Copy, Debug)]
pub(super) struct PoolGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub k: usize,
    pub s: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    pub fn new(shape: &[usize], k: usize, s: usize) -> Self {
        assert_eq!(shape.len(), 4, "pooling expects NHWC, got {shape:?}");
        assert!(k >= 1 && s >= 1, "pooling kernel and stride must be >= 1");
        let (h, w) = (shape[1], shape[2]);
        assert!(
            h >= k && w >= k,
            "pool kernel {k} larger than input {h}x{w}"
        );
        Self {
            n: shape[0],
            h,
            w,
            c: shape[3],
            k,
            s,
            oh: (h - k) / s + 1,
            ow: (w - k) / s + 1,
        }
    }
    pub fn out_shape(&self) -> IxDyn {
        IxDyn(&[self.n, self.oh, self.ow, self.c])
    }
    /// Calls `f(out_offset, in_offset)` for each output pixel, with the offsets of its first
    /// channel and of its window's first element, in output order.
    pub fn for_each_output(&self, mut f: impl FnMut(usize, usize)) {
        let mut o = 0;
        for n in 0..self.n {
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    f(
                        o,
                        ((n * self.h + oy * self.s) * self.w + ox * self.s) * self.c,
                    );
                    o += self.c;
                }
            }
        }
    }

    /// Calls `f(out_offset, in_offsets_of_window)` for each output pixel; offsets are of the
    /// first channel, windows are visited in (ky, kx) scan order.
    fn for_each_window(&self, mut f: impl FnMut(usize, &[usize])) {
        let mut win = vec![0usize; self.k * self.k];
        let mut out = 0;
        for n in 0..self.n {
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    for ky in 0..self.k {
                        for kx in 0..self.k {
                            let (iy, ix) = (oy * self.s + ky, ox * self.s + kx);
                            win[ky * self.k + kx] = ((n * self.h + iy) * self.w + ix) * self.c;
                        }
                    }
                    f(out, &win);
                    out += self.c;
                }
            }
        }
    }
}

struct MaxPoolOp {
    g: PoolGeom,
    /// For each output element, the position of the winner inside its window
    /// (`ky * kernel + kx`): a byte instead of a 4- or 8-byte input index.
    argmax: Vec<u8>,
}

impl Backward for MaxPoolOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let g = self.g;
        let mut dx = pooled_zeros(ctx.input(0).shape());
        let d = dx.as_slice_mut().expect("standard layout");
        let (dys, mut o) = (slice(&dy), 0);
        // Offset of each window position from the window's first element.
        let offset: Vec<usize> = (0..g.k * g.k)
            .map(|t| (t / g.k * g.w + t % g.k) * g.c)
            .collect();
        for n in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let base = ((n * g.h + oy * g.s) * g.w + ox * g.s) * g.c;
                    let (a, dyo) = (&self.argmax[o..o + g.c], &dys[o..o + g.c]);
                    for (ch, (&t, &v)) in a.iter().zip(dyo).enumerate() {
                        d[base + offset[t as usize] + ch] += v;
                    }
                    o += g.c;
                }
            }
        }
        pool::give_tensor(dy);
        vec![Some(dx)]
    }
}

/// Max pooling of `f(x)`: `ys` gets, per window and channel, the largest of the window's
/// values mapped by `f(dst, src)` (one pixel's `c` channels at a time), and the result is
/// each output's winner position in its window (`ky * kernel + kx`, first in scan order on
/// ties). With `keep`, it also gets each winner's input value (before `f`).
pub(super) fn max_windows(
    g: &PoolGeom,
    xs: &[f32],
    ys: &mut [f32],
    keep: Option<&mut [f32]>,
    f: impl Fn(&mut [f32], &[f32]),
) -> Vec<u8> {
    assert!(g.k * g.k <= 256, "max_pool2d: kernel {} too large", g.k);
    // The usual channel counts as constants: the per-pixel loops then compile to a few
    // vector instructions with no bounds checks.
    match g.c {
        8 => scan::<8>(g, xs, ys, keep, f),
        16 => scan::<16>(g, xs, ys, keep, f),
        32 => scan::<32>(g, xs, ys, keep, f),
        64 => scan::<64>(g, xs, ys, keep, f),
        _ => scan::<0>(g, xs, ys, keep, f),
    }
}

/// [`max_windows`] with `C` channels (`0`: `g.c`, not known at compile time).
fn scan<const C: usize>(
    g: &PoolGeom,
    xs: &[f32],
    ys: &mut [f32],
    mut keep: Option<&mut [f32]>,
    f: impl Fn(&mut [f32], &[f32]),
) -> Vec<u8> {
    let c = if C == 0 { g.c } else { C };
    let mut arg = vec![0u8; ys.len()];
    // Winner positions as u32 while scanning: same lane width as f32, so the compare and
    // the selects vectorise; narrowed to bytes once per output pixel.
    let (mut pos, mut cand, mut raw) = (vec![0u32; c], vec![0.0f32; c], vec![0.0f32; c]);
    let (pos, cand, raw) = (&mut pos[..c], &mut cand[..c], &mut raw[..c]);
    let mut o = 0;
    for n in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let base = ((n * g.h + oy * g.s) * g.w + ox * g.s) * c;
                let yo = &mut ys[o..o + c];
                let x0 = &xs[base..base + c];
                f(yo, x0);
                raw.copy_from_slice(x0);
                pos.fill(0);
                for t in 1..g.k * g.k {
                    let (ky, kx) = (t / g.k, t % g.k);
                    let i = base + (ky * g.w + kx) * c;
                    let xt = &xs[i..i + c];
                    f(cand, xt);
                    // Strictly greater: ties keep the earlier position.
                    // Branch-free blends: an `if` here compiles to a conditional store,
                    // which neither vectorises nor predicts well on random data.
                    let sel = |m: u32, old: f32, new: f32| {
                        f32::from_bits((old.to_bits() & !m) | (new.to_bits() & m))
                    };
                    for (((b, p), r), (&v, &xv)) in yo
                        .iter_mut()
                        .zip(pos.iter_mut())
                        .zip(raw.iter_mut())
                        .zip(cand.iter().zip(xt))
                    {
                        let m = ((v > *b) as u32).wrapping_neg();
                        *b = sel(m, *b, v);
                        *r = sel(m, *r, xv);
                        *p = (*p & !m) | (t as u32 & m);
                    }
                }
                for (a, &p) in arg[o..o + c].iter_mut().zip(pos.iter()) {
                    *a = p as u8;
                }
                if let Some(keep) = keep.as_deref_mut() {
                    keep[o..o + c].copy_from_slice(raw);
                }
                o += c;
            }
        }
    }
    arg
}

struct AvgPoolOp {
    g: PoolGeom,
}

impl Backward for AvgPoolOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let g = self.g;
        let inv = 1.0 / (g.k * g.k) as f32;
        let mut dx = pooled_zeros(ctx.input(0).shape());
        let d = dx.as_slice_mut().expect("standard layout");
        let dys = slice(&dy);
        g.for_each_window(|o, win| {
            for &i in win {
                for (dst, &src) in d[i..i + g.c].iter_mut().zip(&dys[o..o + g.c]) {
                    *dst += src * inv;
                }
            }
        });
        pool::give_tensor(dy);
        vec![Some(dx)]
    }
}

/// Spatial padding of an NHWC tensor with a constant; backward keeps the interior gradient.
struct PadOp {
    pad: usize,
}

impl Backward for PadOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let s = ctx.input(0).shape();
        let (n, h, w, c, p) = (s[0], s[1], s[2], s[3], self.pad);
        let (pw, ph) = (w + 2 * p, h + 2 * p);
        let d = slice(&dy);
        let mut dx = Vec::with_capacity(n * h * w * c);
        for img in 0..n {
            for y in 0..h {
                let row = ((img * ph + y + p) * pw + p) * c;
                dx.extend_from_slice(&d[row..row + w * c]);
            }
        }
        vec![Some(
            Tensor::from_shape_vec(ctx.input(0).raw_dim(), dx).expect("shape"),
        )]
    }
}

struct GlobalAvgPoolOp;

impl Backward for GlobalAvgPoolOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let s = ctx.input(0).shape();
        let (hw, c) = (s[1] * s[2], s[3]);
        let inv = 1.0 / hw as f32;
        let mut dx = Vec::with_capacity(s.iter().product());
        for row in slice(&dy).chunks_exact(c) {
            for _ in 0..hw {
                dx.extend(row.iter().map(|&v| v * inv));
            }
        }
        vec![Some(
            Tensor::from_shape_vec(ctx.input(0).raw_dim(), dx).expect("shape"),
        )]
    }
}

impl Graph {
    /// Max pooling (NHWC, square `kernel`, `stride`, no padding). Saves the argmax of each
    /// output for backward; on ties the first element in (ky, kx) scan order wins and gets the
    /// whole gradient.
    pub fn max_pool2d(&mut self, x: Var, kernel: usize, stride: usize) -> Var {
        let g = PoolGeom::new(self.shape(x), kernel, stride);
        let mut y = pooled(&[g.n, g.oh, g.ow, g.c]);
        let ys = y.as_slice_mut().expect("standard layout");
        let argmax = max_windows(&g, slice(self.value(x)), ys, None, |dst, src| {
            dst.copy_from_slice(src)
        });
        self.push(y, &[x], MaxPoolOp { g, argmax })
    }

    /// Pads H and W of an NHWC tensor by `pad` on every side with `value`.
    pub fn pad_spatial(&mut self, x: Var, pad: usize, value: f32) -> Var {
        let s = self.shape(x).to_vec();
        assert_eq!(s.len(), 4, "pad_spatial expects NHWC, got {s:?}");
        let (n, h, w, c) = (s[0], s[1], s[2], s[3]);
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let xs = slice(self.value(x));
        let mut y = vec![value; n * ph * pw * c];
        for img in 0..n {
            for r in 0..h {
                let src = ((img * h + r) * w) * c;
                let dst = ((img * ph + r + pad) * pw + pad) * c;
                y[dst..dst + w * c].copy_from_slice(&xs[src..src + w * c]);
            }
        }
        let y = Tensor::from_shape_vec(IxDyn(&[n, ph, pw, c]), y).expect("shape");
        self.push(y, &[x], PadOp { pad })
    }

    /// Max pooling with `pad` pixels of padding that never win (padded with `-inf`), as in
    /// Inception's 3x3 stride-1 "same" pool branch.
    pub fn max_pool2d_padded(&mut self, x: Var, kernel: usize, stride: usize, pad: usize) -> Var {
        if pad == 0 {
            return self.max_pool2d(x, kernel, stride);
        }
        assert!(pad < kernel, "max_pool2d: padding {pad} >= kernel {kernel}");
        let p = self.pad_spatial(x, pad, f32::NEG_INFINITY);
        self.max_pool2d(p, kernel, stride)
    }

    /// Average pooling (NHWC, square `kernel`, `stride`, no padding).
    pub fn avg_pool2d(&mut self, x: Var, kernel: usize, stride: usize) -> Var {
        let g = PoolGeom::new(self.shape(x), kernel, stride);
        let xs = slice(self.value(x));
        let inv = 1.0 / (kernel * kernel) as f32;
        let mut y = pool::take_zeroed(g.n * g.oh * g.ow * g.c);
        g.for_each_window(|o, win| {
            let yo = &mut y[o..o + g.c];
            for &i in win {
                for (d, &v) in yo.iter_mut().zip(&xs[i..i + g.c]) {
                    *d += v;
                }
            }
            for d in yo {
                *d *= inv;
            }
        });
        let y = Tensor::from_shape_vec(g.out_shape(), y).expect("shape");
        self.push(y, &[x], AvgPoolOp { g })
    }

    /// Mean over H and W: `[N, H, W, C] -> [N, C]`.
    pub fn global_avg_pool(&mut self, x: Var) -> Var {
        let s = self.shape(x);
        assert_eq!(s.len(), 4, "global_avg_pool expects NHWC, got {s:?}");
        let (n, hw, c) = (s[0], s[1] * s[2], s[3]);
        let xs = slice(self.value(x));
        let mut y = vec![0.0f32; n * c];
        for (img, out) in xs.chunks_exact(hw * c).zip(y.chunks_exact_mut(c)) {
            let mut acc = vec![0.0f64; c];
            for px in img.chunks_exact(c) {
                for (a, &v) in acc.iter_mut().zip(px) {
                    *a += v as f64;
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = (a / hw as f64) as f32;
            }
        }
        let y = Tensor::from_shape_vec(IxDyn(&[n, c]), y).expect("shape");
        self.push(y, &[x], GlobalAvgPoolOp)
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
    fn max_pool_forward_and_tie_rule() {
        // One 2x2 window per channel; channel 1 is a tie between scan positions 1 and 2.
        let x = tensor(&[1, 2, 2, 2], vec![1.0, 0.0, 4.0, 5.0, 3.0, 5.0, 2.0, 1.0]);
        let mut g = Graph::new();
        let xv = g.leaf(x, true);
        let y = g.max_pool2d(xv, 2, 2);
        assert_eq!(slice(g.value(y)), &[4.0, 5.0]);
        let s = g.sum(y);
        g.backward(s);
        assert_eq!(
            slice(g.grad(xv).unwrap()),
            &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn avg_and_global_pool_forward() {
        let x = tensor(&[1, 2, 4, 1], (0..8).map(|v| v as f32).collect());
        let mut g = Graph::new();
        let xv = g.constant(x);
        let a = g.avg_pool2d(xv, 2, 2);
        assert_eq!(slice(g.value(a)), &[2.5, 4.5]);
        let gp = g.global_avg_pool(xv);
        assert_eq!(g.shape(gp), &[1, 1]);
        assert_eq!(slice(g.value(gp)), &[3.5]);
    }

    /// Distinct inputs (>= 0.2 apart) so no window has a near-tie. Covers kernel 2 stride 2,
    /// overlapping kernel 3 stride 1, and a non-square input. Tolerance abs 1e-3 + rel 1e-2.
    #[test]
    fn gradcheck_max_pool() {
        let mut rng = ChaCha8Rng::seed_from_u64(20);
        for (shape, k, s) in [
            (&[2, 4, 4, 3][..], 2, 2),
            (&[1, 5, 4, 2], 3, 1),
            (&[1, 5, 7, 2], 2, 2),
        ] {
            let x = spread(shape, &mut rng);
            gradcheck(
                |g, v| {
                    let y = g.max_pool2d(v[0], k, s);
                    weighted_sum(g, y, 21)
                },
                &[x],
                1e-2,
                TOL,
            )
            .unwrap();
        }
    }

    /// Padded max-pool: edge windows ignore the padding, even when every real value is
    /// negative (a zero pad would win there). Tolerance abs 1e-3 + rel 1e-2.
    #[test]
    fn padded_max_pool_ignores_padding_and_gradchecks() {
        let x = tensor(&[1, 2, 2, 1], vec![-4.0, -3.0, -2.0, -1.0]);
        let mut g = Graph::new();
        let xv = g.constant(x);
        let y = g.max_pool2d_padded(xv, 3, 1, 1);
        assert_eq!(g.shape(y), &[1, 2, 2, 1]);
        assert_eq!(slice(g.value(y)), &[-1.0, -1.0, -1.0, -1.0]);
        let mut rng = ChaCha8Rng::seed_from_u64(25);
        for (shape, k, s, p) in [(&[2, 4, 4, 3][..], 3, 1, 1), (&[1, 5, 4, 2], 3, 2, 1)] {
            let x = spread(shape, &mut rng);
            gradcheck(
                |g, v| {
                    let y = g.max_pool2d_padded(v[0], k, s, p);
                    weighted_sum(g, y, 26)
                },
                &[x],
                1e-2,
                TOL,
            )
            .unwrap();
        }
    }

    /// Tolerance abs 1e-3 + rel 1e-2.
    #[test]
    fn gradcheck_avg_and_global_pool() {
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        for (shape, k, s) in [
            (&[2, 4, 4, 3][..], 2, 2),
            (&[1, 5, 4, 2], 3, 1),
            (&[1, 5, 7, 2], 2, 2),
        ] {
            let x = randn(shape, &mut rng);
            gradcheck(
                |g, v| {
                    let y = g.avg_pool2d(v[0], k, s);
                    weighted_sum(g, y, 23)
                },
                std::slice::from_ref(&x),
                1e-2,
                TOL,
            )
            .unwrap();
            gradcheck(
                |g, v| {
                    let y = g.global_avg_pool(v[0]);
                    weighted_sum(g, y, 24)
                },
                &[x],
                1e-2,
                TOL,
            )
            .unwrap();
        }
    }
}
