//! Stride-1 convolutions as implicit GEMMs on a zero-padded copy of the input, on one
//! thread of a CPU with AVX-512F: no im2col matrix, no col2im.
//!
//! With an image padded to `hp x wp`, output pixel `(oy, ox)` is row `oy * ow + ox` of a
//! product whose left operand has element `(oy * ow + ox, (ky, kx, c))` at
//! `padded[((oy + ky) * wp + ox + kx) * C + c]`: [`gemm_avx512::Lhs`] describes it with a
//! group of `ow` rows per output row and a depth segment of `KW * C` contiguous values per
//! kernel row. The forward is one such product per image, straight into the dense output,
//! so no padding pixel is computed. Backward: `dx` is the convolution of `dy`, padded by
//! `K - 1 - pad`, with the kernel flipped and its channels swapped; `dW^T` is the same view
//! transposed (rows `(ky, kx, c)`, depth the output pixels) times `dy` where it lies,
//! accumulated over the images.

use super::conv_geom::{bias_grad, Geom};
use super::gemm::{pack, Mat};
use super::gemm_avx512::{self, Init, Lhs};
use super::graph::{Backward, GradCtx, Graph, Var};
use super::{pool, tensor, Tensor};

/// The padded grid of a stride-1 convolution with the same padding on every side (`pt`).
impl Geom {
    fn hp(&self) -> usize {
        self.h + 2 * self.pt
    }
    fn wp(&self) -> usize {
        self.w + 2 * self.pt
    }
}

/// Whether [`Graph::conv2d`] takes this path: no empty dimension, a stride of 1, the same
/// padding on every side, a square kernel larger than the padding (so that `dx` is a
/// convolution with padding `K - 1 - pad`), a product that stays on this thread (see [`super::gemm`]) and AVX-512F.
pub(super) fn usable(s: &Geom, mnk: [usize; 3]) -> bool {
    let shape = [s.n, s.h, s.w, s.c, s.o].iter().all(|&d| d > 0)
        && (s.sh, s.sw) == (1, 1)
        && s.same_padding().is_some()
        && s.kh == s.kw
        && s.pt < s.kh
        && s.hp() >= s.kh
        && s.wp() >= s.kw
        && super::gemm::on_this_thread(mnk[0], mnk[1], mnk[2]);
    #[cfg(test)]
    match PATH.with(|p| p.get()) {
        ConvPath::Auto => {}
        ConvPath::Im2col => return false,
        // Forced: on any CPU, with the portable product where AVX-512F is missing.
        ConvPath::DirectPortable | ConvPath::DirectAvx512 => return shape,
    }
    shape && gemm_avx512::available()
}

/// Which convolution path a test thread takes (tests force each one on every CPU).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvPath {
    /// What the CPU and the shapes choose.
    Auto,
    /// im2col + GEMM.
    Im2col,
    /// This path with the scalar product ([`gemm_avx512::gemm_portable`]): any CPU.
    DirectPortable,
    /// This path with the AVX-512 product (only where the CPU has AVX-512F).
    DirectAvx512,
}

#[cfg(test)]
thread_local! {
    pub(super) static PATH: std::cell::Cell<ConvPath> = const { std::cell::Cell::new(ConvPath::Auto) };
    /// Convolutions this thread ran on this path (tests check that they reached it).
    pub(super) static DIRECT_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with the convolutions of this thread on `path` (then back to `Auto`); `None`
/// where the CPU cannot take it (AVX-512 without AVX-512F).
#[cfg(test)]
pub(crate) fn with_conv_path<T>(path: ConvPath, f: impl FnOnce() -> T) -> Option<T> {
    if path == ConvPath::DirectAvx512 && !gemm_avx512::available() {
        return None;
    }
    PATH.with(|p| p.set(path));
    let out = f();
    PATH.with(|p| p.set(ConvPath::Auto));
    Some(out)
}

/// The product of this path: AVX-512 (the only one outside tests, where [`usable`] requires
/// it), or in tests the portable one when forced or on a CPU without AVX-512F.
///
/// # Safety
/// [`gemm_avx512::gemm`]'s contract, but for AVX-512F, which [`usable`] established.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: Lhs,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    #[cfg(test)]
    if PATH.with(|p| p.get()) == ConvPath::DirectPortable || !gemm_avx512::available() {
        // SAFETY: the caller's contract.
        unsafe { gemm_avx512::gemm_portable(m, n, k, a, b, ldb, c, ldc, init) };
        return;
    }
    // SAFETY: the caller's contract; AVX-512F is present (`usable` checked it, and the test
    // branch above took every other case).
    unsafe { gemm_avx512::gemm(m, n, k, a, b, ldb, c, ldc, init) }
}

/// `x [n, h, w, c]` copied into a `[n, h + 2 * q, w + 2 * q, c]` buffer with zeros around
/// each image; every element is written once.
fn pad(x: &[f32], n: usize, h: usize, w: usize, c: usize, q: usize) -> Vec<f32> {
    let (hp, wp) = (h + 2 * q, w + 2 * q);
    let mut p = pool::take(n * hp * wp * c);
    for (img, out) in p.chunks_exact_mut(hp * wp * c).enumerate() {
        let xi = &x[img * h * w * c..(img + 1) * h * w * c];
        let (top, rest) = out.split_at_mut(q * wp * c);
        let (mid, bottom) = rest.split_at_mut(h * wp * c);
        top.fill(0.0);
        bottom.fill(0.0);
        for (row, src) in mid.chunks_exact_mut(wp * c).zip(xi.chunks_exact(w * c)) {
            row[..q * c].fill(0.0);
            row[q * c..(q + w) * c].copy_from_slice(src);
            row[(q + w) * c..].fill(0.0);
        }
    }
    p
}

/// Checks what the implicit products' bounds proofs rely on: `padded` is `s`'s input with
/// `cin` channels padded, the shapes are a stride-1 convolution's (`oh + kh - 1 = hp`,
/// `ow + kw - 1 = wp`, so an image's view ends at its last padded element) and no dimension
/// of the products is empty. Returns `K = kh * kw * cin`.
fn check_implicit(s: &Geom, padded: &[f32], cin: usize, cout: usize) -> usize {
    let (k, hp, wp) = (s.kh * s.kw * cin, s.hp(), s.wp());
    assert_eq!(
        padded.len(),
        s.n * hp * wp * cin,
        "conv2d: padded input size"
    );
    assert!(
        s.n > 0
            && s.oh * s.ow > 0
            && s.oh + s.kh == hp + 1
            && s.ow + s.kw == wp + 1
            && k > 0
            && cout > 0,
        "conv2d: empty product or shapes that are no stride-1 convolution"
    );
    k
}

/// The implicit product `[pixels, K] . b [K, cout]` over `padded` (`cin` channels), written
/// to the dense `[n, oh, ow, cout]` output `out` (with a bias if `bias`): one product
/// per image, whose rows are its output pixels (a group of `ow` rows per output row), so no
/// padding column or row is computed.
fn product(
    padded: &[f32],
    s: &Geom,
    cin: usize,
    b: &[f32],
    cout: usize,
    out: &mut [f32],
    bias: Option<&[f32]>,
) {
    let k = check_implicit(s, padded, cin, cout);
    let (hp, wp, oh, ow) = (s.hp(), s.wp(), s.oh, s.ow);
    assert_eq!(b.len(), k * cout, "conv2d: packed weights");
    assert_eq!(out.len(), s.n * oh * ow * cout, "conv2d: output size");
    assert!(bias.is_none_or(|b| b.len() == cout), "conv2d: bias length");
    let init = bias.map_or(Init::Zero, |b| Init::Bias(b.as_ptr()));
    for (img, y) in out.chunks_exact_mut(oh * ow * cout).enumerate() {
        let a = Lhs {
            // SAFETY: the image's first element, inside `padded` (checked).
            ptr: unsafe { padded.as_ptr().add(img * hp * wp * cin) },
            rs: cin,
            cs: 1,
            seg: s.kw * cin,
            seg_stride: wp * cin,
            group: ow,
            group_stride: wp * cin,
        };
        // SAFETY: AVX-512F is present (`usable`); oh*ow, cout, k > 0; every element the
        // left operand reads is inside the image in `padded` (checked), `b` is k x cout
        // (asserted), as is the bias; `y` is an exclusively borrowed (oh*ow) x cout slice
        // of `out`, which overlaps none of them.
        unsafe {
            gemm(
                oh * ow,
                cout,
                k,
                a,
                b.as_ptr(),
                cout,
                y.as_mut_ptr(),
                cout,
                init,
            );
        }
    }
}

struct DirectConvOp {
    s: Geom,
    has_bias: bool,
    /// The padded input, kept when the weights need a gradient.
    padded: Option<Vec<f32>>,
}

impl Drop for DirectConvOp {
    fn drop(&mut self) {
        if let Some(p) = self.padded.take() {
            pool::give(p);
        }
    }
}

impl Backward for DirectConvOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let s = &self.s;
        let (o, c, k) = (s.o, s.c, s.k());
        let dys = super::slice(&dy);
        let w = super::slice(ctx.input(1));
        let dx = ctx.needs(0).then(|| {
            // dx = conv(dy padded by K - 1 - pad, flipped kernel with swapped channels).
            // `Geom` pads both axes alike: the kernel is square (`usable`).
            let q = s.kh - 1 - s.pt;
            let dyq = pad(dys, s.n, s.oh, s.ow, o, q);
            let mut wf = vec![0.0f32; s.kh * s.kw * o * c];
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    for oo in 0..o {
                        let src = ((oo * s.kh + s.kh - 1 - ky) * s.kw + s.kw - 1 - kx) * c;
                        let dst = ((ky * s.kw + kx) * o + oo) * c;
                        wf[dst..dst + c].copy_from_slice(&w[src..src + c]);
                    }
                }
            }
            let t = Geom {
                h: s.oh,
                w: s.ow,
                c: o,
                o: c,
                oh: s.h,
                ow: s.w,
                pt: q,
                pl: q,
                pb: q,
                pr: q,
                ..*s
            };
            let mut dx = pool::take(s.n * s.h * s.w * c);
            product(&dyq, &t, o, &wf, c, &mut dx, None);
            pool::give(dyq);
            tensor(ctx.input(0).shape(), dx)
        });
        let dw = ctx.needs(1).then(|| {
            // The padded input: kept by the forward, or padded again here (and given back).
            let fresh = self.padded.is_none().then(|| {
                let x = super::slice(ctx.input(0));
                pad(x, s.n, s.h, s.w, c, s.pt)
            });
            let padded = match (&self.padded, &fresh) {
                (Some(p), _) | (None, Some(p)) => p,
                (None, None) => unreachable!("padded above when not kept"),
            };
            check_implicit(s, padded, c, o);
            let (hp, wp, oh, ow) = (s.hp(), s.wp(), s.oh, s.ow);
            assert_eq!(dys.len(), s.n * oh * ow * o, "conv2d: dy size");
            // dW^T [K, O] = the implicit im2col matrix transposed . dy, accumulated over the
            // images: rows (ky, kx, c), a group of kw*c per kernel row; depth the image's
            // output pixels, a segment of ow per output row; dy is read where it is.
            let mut dwt = vec![0.0f32; k * o];
            for (img, dyi) in dys.chunks_exact(oh * ow * o).enumerate() {
                let a = Lhs {
                    // SAFETY: the image's first element, inside `padded` (checked).
                    ptr: unsafe { padded.as_ptr().add(img * hp * wp * c) },
                    rs: 1,
                    cs: c,
                    seg: ow,
                    seg_stride: wp * c,
                    group: s.kw * c,
                    group_stride: wp * c,
                };
                let init = if img == 0 {
                    Init::Zero
                } else {
                    Init::Accumulate
                };
                // SAFETY: AVX-512F is present (`usable`); k, o, oh*ow > 0 (checked); a's
                // element (ky, kx, ci; oy, ox) is at ((ky + oy) * wp + kx + ox) * c + ci,
                // at most hp * wp * c - 1, inside the image (oh + kh - 1 = hp, ow + kw - 1
                // = wp); b is the image's (oh*ow) x o slice of dy; c writes dwt, k x o, a
                // fresh buffer.
                unsafe {
                    gemm(k, o, oh * ow, a, dyi.as_ptr(), o, dwt.as_mut_ptr(), o, init);
                }
            }
            let dw = pack(Mat::new(&dwt, k, o).t());
            if let Some(f) = fresh {
                pool::give(f);
            }
            tensor(ctx.input(1).shape(), dw)
        });
        let mut out = vec![dx, dw];
        if self.has_bias {
            out.push(ctx.needs(2).then(|| bias_grad(dys, o)));
        }
        pool::give_tensor(dy);
        out
    }
}

impl Graph {
    /// [`Graph::conv2d`] for a stride of 1 when [`usable`]: same arguments and result.
    pub(super) fn conv2d_direct(&mut self, x: Var, w: Var, b: Option<Var>, s: Geom) -> Var {
        #[cfg(test)]
        DIRECT_RUNS.with(|r| r.set(r.get() + 1));
        let xs = super::slice(self.value(x));
        let ws = super::slice(self.value(w));
        let (k, o) = (s.k(), s.o);
        // The weights as the right operand, [K, O].
        let wt = pack(Mat::new(ws, o, k).t());
        let padded = pad(xs, s.n, s.h, s.w, s.c, s.pt);
        let bias = b.map(|b| super::slice(self.value(b)));
        let mut y = pool::take(s.n * s.oh * s.ow * o);
        product(&padded, &s, s.c, &wt, o, &mut y, bias);
        let keep = self.requires_grad(w);
        let y = tensor(&[s.n, s.oh, s.ow, o], y);
        let op = DirectConvOp {
            s,
            has_bias: b.is_some(),
            padded: if keep {
                Some(padded)
            } else {
                pool::give(padded);
                None
            },
        };
        match b {
            Some(b) => self.push(y, &[x, w, b], op),
            None => self.push(y, &[x, w], op),
        }
    }
}
