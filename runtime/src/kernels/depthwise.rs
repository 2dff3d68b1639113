//! Depthwise convolution (depth multiplier 1), by blocks of channels.

use super::conv_base::{Block, ConvGeom, CH_BLOCK};
use super::dsp::{dw3x3, dw3x3_taps, pair};
use super::dw3_run::{dw3x3_run, Dw3Run, Dw3Window};
use super::dw_plane::depthwise_plane;
use super::Stage;
use crate::quant::{Prepared, Rounding};

/// Depthwise convolution (channel multiplier 1): weights `[1, kh, kw, C]`, `out_c == in_c`.
/// 3x3 stride 1 on small maps in the SSAT form by channel planes in `scratch`
/// ([`depthwise_plane`], [`plane_scratch_words`]); other 3x3 layers by runs of windows;
/// without a fused pool, blocks of [`CH_BLOCK`] channels at a time ([`depthwise_blocks`]);
/// with one, channel by channel.
///
/// [`plane_scratch_words`]: super::dw_plane::plane_scratch_words
#[inline(never)] // its own function: the interpreter's frame stays as it was
pub fn depthwise_conv2d(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    if depthwise_plane(input, in_zp, weights, g, st, output, scratch) {
        return;
    }
    let dw3 = g.k_h == 3 && g.k_w == 3 && g.in_h >= 3 && g.in_w >= 3;
    if g.pool_k == 1 && g.pool_s == 1 && dw3 && g.in_c.is_multiple_of(4) {
        if st.ssat_form(super::SSAT_MAX_SHIFT) {
            depthwise_3x3_runs(input, in_zp, weights, g, st, output);
        } else {
            depthwise_3x3(input, in_zp, weights, g, st, output);
        }
    } else if g.pool_k == 1 && g.pool_s == 1 {
        depthwise_blocks(input, in_zp, weights, g, st, output);
    } else {
        depthwise_pooled(input, in_zp, weights, g, st, output);
    }
}

/// Depthwise convolution without a pool, for a block of channels at a time: their biases
/// and multipliers are decoded once per block (not once per output), the accumulators of an
/// output pixel's channels sit side by side and every tap adds a contiguous run of input
/// channels times the same run of weights. Each product is `(x - zp_in) * w` as in the
/// reference, so the sums are the same integers.
#[inline(never)] // its own function: its own inlining budget and register allocation
fn depthwise_blocks(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
) {
    let c_n = g.in_c;
    let double = st.rounding == Rounding::Double;
    let mut blk = Block::new();
    let mut acc = [0i32; CH_BLOCK];
    let mut c0 = 0;
    while c0 < c_n {
        let cb = CH_BLOCK.min(c_n - c0);
        blk.load(st, c0, cb);
        let acc = &mut acc[..cb];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let (iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi) = g.window(oy, ox);
                let at = (oy * g.out_w + ox) * c_n + c0;
                acc.copy_from_slice(&blk.bias[..cb]);
                for ky in ky_lo..ky_hi {
                    let iy = (iy0 + ky as isize) as usize;
                    for kx in kx_lo..kx_hi {
                        let ix = (ix0 + kx as isize) as usize;
                        let xo = (iy * g.in_w + ix) * c_n + c0;
                        let wo = (ky * g.k_w + kx) * c_n + c0;
                        let (Some(xs), Some(ws)) =
                            (input.get(xo..xo + cb), weights.get(wo..wo + cb))
                        else {
                            return; // unreachable for a validated geometry
                        };
                        for ((a, &x), &w) in acc.iter_mut().zip(xs).zip(ws) {
                            *a += (x as i32 - in_zp) * w as i32;
                        }
                    }
                }
                let Some(out) = output.get_mut(at..at + cb) else {
                    return;
                };
                let rq = &blk.rq[..cb];
                if double {
                    for ((o, &a), &q) in out.iter_mut().zip(acc.iter()).zip(rq) {
                        *o = q.to_i8_double(a, st.zero_point, st.act_min, st.act_max);
                    }
                } else {
                    for ((o, &a), &q) in out.iter_mut().zip(acc.iter()).zip(rq) {
                        *o = st.finish_prepared(a, q);
                    }
                }
            }
        }
        c0 += cb;
    }
}

/// Channels per block of [`depthwise_3x3`]: eight keep its frame (the pre-extended taps, the
/// block's biases and multipliers) well below the stack guard's 1 KiB.
const DW_BLOCK: usize = 8;

/// Where a 3x3 window's rows (or columns) sit along one axis: it reads the three input rows
/// from `base`, and its weight row `r` is kernel row `r + d` when that lies in `lo..hi` (the
/// rows the padding leaves), else zero. An unclipped window has `d = 0` and `lo..hi = 0..3`;
/// a clipped one reads the nearest three rows inside the image and zeroes the taps it must
/// skip, so every window is one whole-window call.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Axis {
    d: isize,
    lo: usize,
    hi: usize,
}

impl Axis {
    /// Output `o` along an axis of `n >= 3` input rows with stride `s` and padding `p`.
    #[inline(always)]
    fn at(o: usize, s: usize, p: usize, n: usize) -> (Axis, usize) {
        let i0 = (o * s) as isize - p as isize;
        let lo = (-i0).max(0) as usize;
        let hi = ((n as isize - i0).clamp(0, 3) as usize).max(lo);
        let base = i0.clamp(0, n as isize - 3);
        (
            Axis {
                d: base - i0,
                lo,
                hi,
            },
            base as usize,
        )
    }

    /// The kernel row weight row `r` takes, if any.
    #[inline(always)]
    fn tap(self, r: usize) -> Option<usize> {
        let k = r as isize + self.d;
        (k >= self.lo as isize && k < self.hi as isize).then_some(k as usize)
    }

    /// The end of the run of outputs from `o` that share `o`'s placement.
    fn run_end(o: usize, out: usize, s: usize, p: usize, n: usize) -> usize {
        let first = Axis::at(o, s, p, n).0;
        let mut e = o + 1;
        while e < out && Axis::at(e, s, p, n).0 == first {
            e += 1;
        }
        e
    }
}

/// [`depthwise_blocks`] for 3x3 windows over channels in fours on an input of at least 3x3,
/// on the DSP path. Per block of [`DW_BLOCK`] channels and per run of windows the padding
/// clips alike (the inside, each edge, each corner: [`Axis`]), the taps' weights are
/// sign-extended once, zero where the padding clips; then every window takes four channels
/// per tap word in one call of [`dw3x3`]. Its own function: its frame (the pre-extended
/// taps) stays below the stack guard's 1 KiB, as every frame must.
#[inline(never)]
fn depthwise_3x3(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
) {
    let c_n = g.in_c;
    let double = st.rounding == Rounding::Double;
    let nzp = pair((-in_zp) as i16);
    let rs = g.in_w * c_n;
    let mut taps = [[0u32; 18]; DW_BLOCK / 4];
    let mut bias = [0i32; DW_BLOCK];
    let mut rq = [Prepared::default(); DW_BLOCK];
    let (sy, py, ny) = (g.stride_h, g.pad_top, g.in_h);
    let (sx, px, nx) = (g.stride_w, g.pad_left, g.in_w);
    let mut c0 = 0;
    while c0 < c_n {
        let cb = DW_BLOCK.min(c_n - c0);
        let chs = st.channels().skip(c0).take(cb);
        for ((b, r), (bv, rv)) in bias.iter_mut().zip(rq.iter_mut()).zip(chs) {
            *b = bv;
            *r = st.prepare(rv);
        }
        let mut oy = 0;
        while oy < g.out_h {
            let oy_end = Axis::run_end(oy, g.out_h, sy, py, ny);
            let ay = Axis::at(oy, sy, py, ny).0;
            let mut ox = 0;
            while ox < g.out_w {
                let ox_end = Axis::run_end(ox, g.out_w, sx, px, nx);
                let ax = Axis::at(ox, sx, px, nx).0;
                // Where each window tap's weights start (a kernel tap's), if anywhere.
                let mut offsets = [None; 9];
                for (t, o) in offsets.iter_mut().enumerate() {
                    if let (Some(ky), Some(kx)) = (ay.tap(t / 3), ax.tap(t % 3)) {
                        *o = Some((3 * ky + kx) * c_n);
                    }
                }
                for (q, t) in taps.iter_mut().enumerate().take(cb / 4) {
                    let Some(w) = dw3x3_taps(weights, c0 + 4 * q, &offsets) else {
                        return; // unreachable: the weights' length was validated
                    };
                    *t = w;
                }
                // Within a run the placement is fixed, so the first input row and column
                // step with the stride.
                let (iy_run, ix_run) = (Axis::at(oy, sy, py, ny).1, Axis::at(ox, sx, px, nx).1);
                for y in oy..oy_end {
                    let iy = iy_run + (y - oy) * sy;
                    for x in ox..ox_end {
                        let ix = ix_run + (x - ox) * sx;
                        let xo = (iy * g.in_w + ix) * c_n + c0;
                        let at = (y * g.out_w + x) * c_n + c0;
                        let (Some(xs), Some(out)) = (input.get(xo..), output.get_mut(at..at + cb))
                        else {
                            return; // unreachable for a validated geometry
                        };
                        // Four channels at a time: the window's sums start from the biases
                        // and go straight to their requantization.
                        let groups = out.chunks_exact_mut(4).zip(bias.chunks_exact(4));
                        for (q, ((o4, b4), r4)) in groups.zip(rq.chunks_exact(4)).enumerate() {
                            let x4 = xs.get(4 * q..).unwrap_or_default();
                            let a = dw3x3(x4, c_n, rs, &taps[q], nzp, [b4[0], b4[1], b4[2], b4[3]]);
                            if double {
                                for ((o, &a), &r) in o4.iter_mut().zip(&a).zip(r4) {
                                    *o = r.to_i8_double(a, st.zero_point, st.act_min, st.act_max);
                                }
                            } else {
                                for ((o, &a), &r) in o4.iter_mut().zip(&a).zip(r4) {
                                    *o = st.finish_prepared(a, r);
                                }
                            }
                        }
                    }
                }
                ox = ox_end;
            }
            oy = oy_end;
        }
        c0 += cb;
    }
}

/// [`depthwise_3x3`] for layers in [`Stage::ssat_form`] (TensorFlow Lite's rounding, small
/// accumulators, the whole int8 range): per four
/// channels and per run of windows the padding clips alike, the taps, folded biases and
/// multipliers are set up once ([`Dw3Run`]), then each row of the run is one call of
/// [`dw3x3_run`], which requantizes and stores as it goes.
#[inline(never)]
fn depthwise_3x3_runs(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
) {
    let c_n = g.in_c;
    let rs = g.in_w * c_n;
    let (Some(ys), Some(xs)) = (
        Runs::new(g.out_h, g.stride_h, g.pad_top, g.in_h),
        Runs::new(g.out_w, g.stride_w, g.pad_left, g.in_w),
    ) else {
        return depthwise_3x3(input, in_zp, weights, g, st, output);
    };
    let mut run = Dw3Run::default();
    let mut c0 = 0;
    while c0 + 4 <= c_n {
        let mut bias = [0i32; 4];
        let mut rq = [[0i32; 3]; 4];
        for ((b, r), (bv, rv)) in bias
            .iter_mut()
            .zip(rq.iter_mut())
            .zip(st.channels().skip(c0))
        {
            *b = bv;
            let Some(parts) = st.ssat_parts(rv) else {
                return; // unreachable: the caller checked every channel
            };
            *r = parts;
        }
        let whole = Dw3Window::new(weights, (c0, c_n), bias, in_zp);
        let (Some(whole), true) = (whole, run.set_requant(rq, st.zero_point)) else {
            return; // unreachable: the weights' length and the shifts were checked
        };
        for ry in ys.as_slice() {
            for rx in xs.as_slice() {
                run.place(&whole, (ry.taps, rx.taps), in_zp);
                let (oy, oy_end, iy) = (ry.first as usize, ry.end as usize, ry.input as usize);
                let (ox, ox_end, ix) = (rx.first as usize, rx.end as usize, rx.input as usize);
                let x0 = (iy * g.in_w + ix) * c_n + c0;
                let o0 = (oy * g.out_w + ox) * c_n + c0;
                let (xs, os) = (
                    (x0, g.stride_w * c_n, g.stride_h * rs),
                    (o0, c_n, g.out_w * c_n),
                );
                let block = (ox_end - ox, oy_end - oy);
                if !dw3x3_run(input, xs, block, (c_n, rs), output, os, &mut run) {
                    return; // unreachable for a validated geometry
                }
            }
        }
        c0 += 4;
    }
}

/// The runs of outputs along one axis that place the 3x3 window alike ([`Axis`]): the inside
/// and each clipped edge, up to [`Runs::MAX`] (more only for an axis shorter than its
/// padding, left to [`depthwise_3x3`]). Compact, as the kernel's frame holds two.
struct Runs {
    runs: [Run; Runs::MAX],
    len: usize,
}

/// Outputs `first..end` along an axis, their placement and the first one's first input row.
#[derive(Clone, Copy)]
struct Run {
    first: u16,
    end: u16,
    input: u16,
    /// The kernel row each window row takes ([`Axis::tap`]), or 3 for none.
    taps: [u8; 3],
}

impl Runs {
    const MAX: usize = 5;

    /// `None` if the axis has more than [`Runs::MAX`] runs or a dimension past `u16`.
    fn new(out: usize, s: usize, p: usize, n: usize) -> Option<Runs> {
        let zero = Run {
            first: 0,
            end: 0,
            input: 0,
            taps: [3; 3],
        };
        let mut r = Runs {
            runs: [zero; Runs::MAX],
            len: 0,
        };
        let mut o = 0;
        while o < out {
            let end = Axis::run_end(o, out, s, p, n);
            let (a, i) = Axis::at(o, s, p, n);
            *r.runs.get_mut(r.len)? = Run {
                first: o.try_into().ok()?,
                end: end.try_into().ok()?,
                input: i.try_into().ok()?,
                taps: [0, 1, 2].map(|r| a.tap(r).map_or(3, |k| k as u8)),
            };
            r.len += 1;
            o = end;
        }
        Some(r)
    }

    fn as_slice(&self) -> &[Run] {
        &self.runs[..self.len]
    }
}

/// Depthwise convolution with a fused max-pool: each window's conv outputs, requantized, then
/// the max (the order of the reference; any requantization).
#[inline(never)] // its own function: its own inlining budget and register allocation
fn depthwise_pooled(
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
