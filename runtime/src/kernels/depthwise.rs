//! Depthwise convolution (depth multiplier 1), by blocks of channels.

use super::conv_base::{Block, ConvGeom, CH_BLOCK};
use super::dsp::{dw3x3, dw3x3_taps, dw_tap, pair};
use super::Stage;
use crate::quant::{Prepared, Rounding};

/// Depthwise convolution (channel multiplier 1): weights `[1, kh, kw, C]`, `out_c == in_c`.
/// Without a fused pool, blocks of [`CH_BLOCK`] channels at a time ([`depthwise_blocks`]);
/// with one, channel by channel.
#[inline(never)] // its own function: the interpreter's frame stays as it was
pub fn depthwise_conv2d(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
) {
    if g.pool_k == 1 && g.pool_s == 1 && g.k_h == 3 && g.k_w == 3 && g.in_c.is_multiple_of(4) {
        depthwise_3x3(input, in_zp, weights, g, st, output);
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

/// [`depthwise_blocks`] for 3x3 windows over channels in fours, on the DSP path: per block
/// of [`DW_BLOCK`] channels the taps' weights are sign-extended once, then every window takes four
/// channels per tap word (a whole window in one call of [`dw3x3`], a window the padding clips
/// tap by tap). Its own function: its frame (the pre-extended taps) stays below the stack
/// guard's 1 KiB, as every frame must.
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
    let mut acc = [0i32; DW_BLOCK];
    let mut c0 = 0;
    while c0 < c_n {
        let cb = DW_BLOCK.min(c_n - c0);
        let chs = st.channels().skip(c0).take(cb);
        for ((b, r), (bv, rv)) in bias.iter_mut().zip(rq.iter_mut()).zip(chs) {
            *b = bv;
            *r = Prepared::new(rv, st.rounding);
        }
        for (q, t) in taps.iter_mut().enumerate().take(cb / 4) {
            let Some(w) = dw3x3_taps(weights, c_n, c0 + 4 * q) else {
                return; // unreachable: the weights' length was validated
            };
            *t = w;
        }
        let acc = &mut acc[..cb];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let (iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi) = g.window(oy, ox);
                let at = (oy * g.out_w + ox) * c_n + c0;
                acc.copy_from_slice(&bias[..cb]);
                if ky_lo == 0 && ky_hi == 3 && kx_lo == 0 && kx_hi == 3 {
                    // The whole window is inside: iy0, ix0 >= 0.
                    let xo = (iy0 as usize * g.in_w + ix0 as usize) * c_n + c0;
                    for (q, a4) in acc.chunks_exact_mut(4).enumerate() {
                        let x = input.get(xo + 4 * q..).unwrap_or_default();
                        let a = dw3x3(x, c_n, rs, &taps[q], nzp, [a4[0], a4[1], a4[2], a4[3]]);
                        a4.copy_from_slice(&a);
                    }
                } else {
                    // A window the padding clips: its taps one by one.
                    for ky in ky_lo..ky_hi {
                        let iy = (iy0 + ky as isize) as usize;
                        for kx in kx_lo..kx_hi {
                            let ix = (ix0 + kx as isize) as usize;
                            let xo = (iy * g.in_w + ix) * c_n + c0;
                            let t = 2 * (ky * 3 + kx);
                            for (q, a4) in acc.chunks_exact_mut(4).enumerate() {
                                let x = input.get(xo + 4 * q..).unwrap_or_default();
                                let w = taps[q].get(t..).unwrap_or_default();
                                let a = dw_tap(x, w, nzp, [a4[0], a4[1], a4[2], a4[3]]);
                                a4.copy_from_slice(&a);
                            }
                        }
                    }
                }
                let Some(out) = output.get_mut(at..at + cb) else {
                    return;
                };
                let rq = &rq[..cb];
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
