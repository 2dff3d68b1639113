//! Convolution (optionally with a fused max-pool) and depthwise convolution.
//!
//! `out[oy, ox, oc] = clamp(requant_oc(bias[oc] + sum_{ky,kx,ic} (x[iy, ix, ic] - zp_in) *
//! w[oc, ky, kx, ic]) + zp_out)` with `iy = oy * stride + ky - pad`. Taps that fall in the
//! padding contribute `(zp_in - zp_in) * w = 0`, so they are skipped rather than read.
//!
//! With a fused pool, each pooled output is the max of the requantized conv outputs in its
//! window. Requantization and the clamp are monotonic, so this is exactly what a separate
//! conv then max-pool computes; the difference is that the conv output is never stored.

use super::Stage;

/// Geometry of a convolution, validated once at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride: usize,
    pub pad: usize,
    /// Convolution output size, before the fused pool.
    pub conv_h: usize,
    pub conv_w: usize,
    /// Fused max-pool window and stride; 1 and 1 when there is none.
    pub pool_k: usize,
    pub pool_s: usize,
    /// Final output size.
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeom {
    /// `None` when the numbers do not describe a valid convolution.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_h: usize,
        in_w: usize,
        in_c: usize,
        out_c: usize,
        k_h: usize,
        k_w: usize,
        stride: usize,
        pad: usize,
        pool: Option<(usize, usize)>,
    ) -> Option<ConvGeom> {
        if in_h == 0 || in_w == 0 || in_c == 0 || out_c == 0 || k_h == 0 || k_w == 0 {
            return None;
        }
        if stride == 0 || pad >= k_h.max(k_w) && pad > 0 {
            return None;
        }
        let ph = in_h.checked_add(2 * pad)?;
        let pw = in_w.checked_add(2 * pad)?;
        if ph < k_h || pw < k_w {
            return None;
        }
        let conv_h = (ph - k_h) / stride + 1;
        let conv_w = (pw - k_w) / stride + 1;
        let (pool_k, pool_s) = pool.unwrap_or((1, 1));
        if pool_k == 0 || pool_s == 0 || conv_h < pool_k || conv_w < pool_k {
            return None;
        }
        Some(ConvGeom {
            in_h,
            in_w,
            in_c,
            out_c,
            k_h,
            k_w,
            stride,
            pad,
            conv_h,
            conv_w,
            pool_k,
            pool_s,
            out_h: (conv_h - pool_k) / pool_s + 1,
            out_w: (conv_w - pool_k) / pool_s + 1,
        })
    }

    pub fn input_len(&self) -> usize {
        self.in_h * self.in_w * self.in_c
    }
    pub fn output_len(&self) -> usize {
        self.out_h * self.out_w * self.out_c
    }
    /// Multiply-accumulates of a regular convolution with this geometry.
    pub fn macs(&self) -> usize {
        self.conv_h * self.conv_w * self.out_c * self.k_h * self.k_w * self.in_c
    }

    /// The kernel taps of conv output `(oy, ox)` that land inside the input:
    /// `(iy0, ix0, ky_lo..ky_hi, kx_lo..kx_hi)` where `iy = iy0 + ky`.
    #[inline(always)]
    fn window(&self, oy: usize, ox: usize) -> (isize, isize, usize, usize, usize, usize) {
        let iy0 = (oy * self.stride) as isize - self.pad as isize;
        let ix0 = (ox * self.stride) as isize - self.pad as isize;
        let ky_lo = (-iy0).max(0) as usize;
        let kx_lo = (-ix0).max(0) as usize;
        // A window entirely inside the padding has an empty range (hi == lo).
        let ky_hi = ((self.in_h as isize - iy0).clamp(0, self.k_h as isize) as usize).max(ky_lo);
        let kx_hi = ((self.in_w as isize - ix0).clamp(0, self.k_w as isize) as usize).max(kx_lo);
        (iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi)
    }
}

/// `sum (x - zp) * w`, written as `sum x*w - zp * sum w` so both sums vectorize.
#[inline(always)]
fn dot(x: &[i8], w: &[i8], zp: i32) -> i32 {
    let mut xw = 0i32;
    let mut sw = 0i32;
    for (&a, &b) in x.iter().zip(w) {
        xw += a as i32 * b as i32;
        sw += b as i32;
    }
    xw - zp * sw
}

/// Most taps (`kh * kw * in_c`) the patch path handles: its scratch is `PATCH_MAX` i16 on
/// the stack (1 KiB). Larger kernels take the direct path.
pub const PATCH_MAX: usize = 512;

/// Regular convolution, NHWC input, OHWI weights, optional fused max-pool.
///
/// For each conv output position the receptive field is gathered once into a small i16
/// patch holding `x - zp_in` (0 in the padding), then every output channel is a plain dot
/// product of the patch with its weight row. On Cortex-M4 that dot product runs on the DSP
/// extension (SXTB16 + SMLAD, two multiply-accumulates per instruction); elsewhere it is
/// portable Rust that the compiler vectorizes. Integer sums do not depend on order, so every
/// path gives the same bits (the proptests compare them with the naive reference).
pub fn conv2d(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
) {
    conv2d_patch::<DSP>(input, in_zp, weights, g, st, output)
}

/// True where the Cortex-M DSP extension (SXTB16, SMLAD) is available.
const DSP: bool = cfg!(all(target_arch = "arm", target_feature = "dsp"));

/// The patch path with the DSP (`true`) or natural (`false`) patch layout. Public to the
/// crate so host tests run the device's layout too, through a Rust model of its dot product.
pub(crate) fn conv2d_patch<const P: bool>(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
) {
    let taps = g.k_h * g.k_w * g.in_c;
    if taps > PATCH_MAX {
        return conv2d_direct(input, in_zp, weights, g, st, output);
    }
    let mut scratch = [0u32; PATCH_MAX / 2];
    let patch: &mut [i16] = bytemuck::cast_slice_mut(&mut scratch[..]);
    let patch = &mut patch[..taps];
    for py in 0..g.out_h {
        for px in 0..g.out_w {
            let base = (py * g.out_w + px) * g.out_c;
            let out = &mut output[base..base + g.out_c];
            out.fill(i8::MIN);
            for dy in 0..g.pool_k {
                for dx in 0..g.pool_k {
                    let (oy, ox) = (py * g.pool_s + dy, px * g.pool_s + dx);
                    gather::<P>(input, in_zp, g, oy, ox, patch);
                    let rows = weights.chunks_exact(taps).zip(st.channels());
                    for (o, (w, (bias, rq))) in out.iter_mut().zip(rows) {
                        let acc = if P {
                            dot_dsp(patch, w)
                        } else {
                            dot_natural(patch, w)
                        };
                        let v = st.finish(bias + acc, rq);
                        if v > *o {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}

/// Position of tap `i` in the patch. In the DSP layout each full group of four taps is
/// stored as `t0 t2 t1 t3`, so that the halfword pairs line up with `SXTB16(w)` = `(w0, w2)`
/// and `SXTB16(w ROR 8)` = `(w1, w3)`. The tail (fewer than four) keeps its natural order.
#[inline(always)]
fn slot<const P: bool>(i: usize, taps: usize) -> usize {
    if P && i < taps & !3 {
        (i & !3) | [0, 2, 1, 3][i & 3]
    } else {
        i
    }
}

/// Fills `patch` with `x - zp` over the receptive field of conv output `(oy, ox)`, in OHWI
/// tap order (ky, kx, ic) permuted by [`slot`], with 0 (real zero) for taps in the padding.
#[inline(always)]
fn gather<const P: bool>(
    input: &[i8],
    zp: i32,
    g: &ConvGeom,
    oy: usize,
    ox: usize,
    patch: &mut [i16],
) {
    let taps = patch.len();
    let iy0 = (oy * g.stride) as isize - g.pad as isize;
    let ix0 = (ox * g.stride) as isize - g.pad as isize;
    // When in_c is a multiple of 4 every pixel fills whole groups, so the permutation can be
    // applied per chunk of four instead of per element.
    let grouped = g.in_c.is_multiple_of(4);
    let order = if P { [0, 2, 1, 3] } else { [0, 1, 2, 3] };
    let mut t = 0;
    for ky in 0..g.k_h {
        let iy = iy0 + ky as isize;
        for kx in 0..g.k_w {
            let ix = ix0 + kx as isize;
            let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.in_h && (ix as usize) < g.in_w;
            let at = if inside {
                (iy as usize * g.in_w + ix as usize) * g.in_c
            } else {
                0
            };
            if grouped {
                let dst = &mut patch[t..t + g.in_c];
                if inside {
                    let src = &input[at..at + g.in_c];
                    for (d, x) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                        d.copy_from_slice(&order.map(|i| (x[i] as i32 - zp) as i16));
                    }
                } else {
                    dst.fill(0);
                }
            } else {
                for i in 0..g.in_c {
                    let v = if inside {
                        (input[at + i] as i32 - zp) as i16
                    } else {
                        0
                    };
                    patch[slot::<P>(t + i, taps)] = v;
                }
            }
            t += g.in_c;
        }
    }
}

/// `sum patch[i] * w[i]` for the natural layout (the compiler vectorizes it).
#[inline(always)]
fn dot_natural(patch: &[i16], w: &[i8]) -> i32 {
    patch
        .iter()
        .zip(w)
        .map(|(&p, &w)| p as i32 * w as i32)
        .sum()
}

/// The DSP-layout dot product's tail: taps past the last full group, natural order.
#[inline(always)]
fn dot_tail(patch: &[i16], w: &[i8], full: usize) -> i32 {
    dot_natural(&patch[full..], &w[full..])
}

/// The DSP-layout dot product on a Cortex-M4: per four taps one word load of weights, two
/// SXTB16, two word loads of the patch and two SMLAD (two multiply-accumulates each).
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[inline(always)]
#[allow(unsafe_code)]
fn dot_dsp(patch: &[i16], w: &[i8]) -> i32 {
    let full = patch.len() & !3;
    let mut acc = 0i32;
    for (p4, w4) in patch[..full].chunks_exact(4).zip(w[..full].chunks_exact(4)) {
        let p02 = (p4[0] as u16 as u32) | ((p4[1] as u16 as u32) << 16);
        let p13 = (p4[2] as u16 as u32) | ((p4[3] as u16 as u32) << 16);
        let ww = u32::from_le_bytes([w4[0] as u8, w4[1] as u8, w4[2] as u8, w4[3] as u8]);
        // SAFETY: register arithmetic only: no memory access, no stack use.
        unsafe {
            core::arch::asm!(
                "sxtb16 {we}, {w}",
                "sxtb16 {wo}, {w}, ror #8",
                "smlad {acc}, {p02}, {we}, {acc}",
                "smlad {acc}, {p13}, {wo}, {acc}",
                w = in(reg) ww,
                we = out(reg) _,
                wo = out(reg) _,
                p02 = in(reg) p02,
                p13 = in(reg) p13,
                acc = inout(reg) acc,
                options(pure, nomem, nostack),
            );
        }
    }
    acc + dot_tail(patch, w, full)
}

/// A Rust model of the device's DSP dot product (same pairing of patch halfwords with
/// SXTB16 lanes), so host tests exercise the device's patch layout.
#[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
fn dot_dsp(patch: &[i16], w: &[i8]) -> i32 {
    let full = patch.len() & !3;
    let mut acc = 0i32;
    for (p4, w4) in patch[..full].chunks_exact(4).zip(w[..full].chunks_exact(4)) {
        // SXTB16(w) = (w0, w2) pairs with (p4[0], p4[1]); SXTB16(w ROR 8) = (w1, w3) with
        // (p4[2], p4[3]).
        acc += p4[0] as i32 * w4[0] as i32 + p4[1] as i32 * w4[2] as i32;
        acc += p4[2] as i32 * w4[1] as i32 + p4[3] as i32 * w4[3] as i32;
    }
    acc + dot_tail(patch, w, full)
}

/// Convolution straight from the input, for kernels too large for the patch scratch.
fn conv2d_direct(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
) {
    let taps = g.k_h * g.k_w * g.in_c;
    let row = g.in_w * g.in_c;
    for py in 0..g.out_h {
        for px in 0..g.out_w {
            let base = (py * g.out_w + px) * g.out_c;
            let out = &mut output[base..base + g.out_c];
            out.fill(i8::MIN);
            for dy in 0..g.pool_k {
                for dx in 0..g.pool_k {
                    let (iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi) =
                        g.window(py * g.pool_s + dy, px * g.pool_s + dx);
                    let seg = (kx_hi - kx_lo) * g.in_c;
                    for (oc, o) in out.iter_mut().enumerate() {
                        let (bias, rq) = st.channel(oc);
                        let w = &weights[oc * taps..(oc + 1) * taps];
                        let mut acc = bias;
                        let rows = if seg == 0 { 0..0 } else { ky_lo..ky_hi };
                        for ky in rows {
                            let iy = (iy0 + ky as isize) as usize;
                            let xs = iy * row + (ix0 + kx_lo as isize) as usize * g.in_c;
                            let ws = (ky * g.k_w + kx_lo) * g.in_c;
                            acc += dot(&input[xs..xs + seg], &w[ws..ws + seg], in_zp);
                        }
                        let v = st.finish(acc, rq);
                        if v > *o {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}

/// Depthwise convolution (channel multiplier 1): weights `[1, kh, kw, C]`, `out_c == in_c`.
pub fn depthwise_conv2d(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
) {
    let c_n = g.in_c;
    for py in 0..g.out_h {
        for px in 0..g.out_w {
            let base = (py * g.out_w + px) * c_n;
            let out = &mut output[base..base + c_n];
            out.fill(i8::MIN);
            for dy in 0..g.pool_k {
                for dx in 0..g.pool_k {
                    let (iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi) =
                        g.window(py * g.pool_s + dy, px * g.pool_s + dx);
                    for (c, o) in out.iter_mut().enumerate() {
                        let (bias, rq) = st.channel(c);
                        let mut acc = bias;
                        for ky in ky_lo..ky_hi {
                            let iy = (iy0 + ky as isize) as usize;
                            for kx in kx_lo..kx_hi {
                                let ix = (ix0 + kx as isize) as usize;
                                let x = input[(iy * g.in_w + ix) * c_n + c] as i32;
                                let w = weights[(ky * g.k_w + kx) * c_n + c] as i32;
                                acc += (x - in_zp) * w;
                            }
                        }
                        let v = st.finish(acc, rq);
                        if v > *o {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}
