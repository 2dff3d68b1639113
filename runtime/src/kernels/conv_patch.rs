//! The convolution's patch path: the receptive fields of four outputs gathered into
//! `x - zp_in` halfword pairs in the arena's scratch, then every weight word loaded and
//! sign-extended once for all four (the Cortex-M DSP extension's SXTB16 and SMLAD).

use super::conv_base::{requant_double, Block, ConvGeom, CH_BLOCK};
use super::dsp::{dot4, dot4_max, pair, smlad, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8};
use super::gather::{copy_rows, gather_words};
use super::patch_run::{patch_channels, LANES as RUN_LANES};
use super::Stage;
use crate::quant::Rounding;

/// Conv outputs computed together: each weight word is loaded and sign-extended once for
/// `LANES` receptive fields (the pixels of one pooling window, or neighbouring outputs);
/// the SSAT channel loop takes [`RUN_LANES`].
const LANES: usize = 4;
/// Most taps (`kh * kw * in_c`) the patch path takes; larger kernels take the direct path,
/// which needs no scratch.
pub const PATCH_MAX_TAPS: usize = 1024;

/// Scratch `conv2d` needs for this layer, in 4-byte words (0 for the direct path): the
/// patches (`2 * lanes * ceil(taps / 4)` words, [`patch_lanes`]) and, when `in_c % 4 != 0`,
/// a receptive field's bytes (`ceil(taps / 4) + 1`). The model plans it in the arena, live
/// only while its layer runs.
///
/// Strides that differ between rows and columns take the direct path: the patch path's gather
/// holds one stride (a second one cost 1.5 % of ref-cnn's instructions in register pressure).
pub fn conv2d_scratch_words(g: &ConvGeom, st: &Stage) -> usize {
    if g.k_h * g.k_w * g.in_c > PATCH_MAX_TAPS || g.stride_h != g.stride_w {
        return 0;
    }
    scratch_layout(g, patch_lanes(g, st)).iter().sum()
}

/// The patches' lanes: [`RUN_LANES`] for an unpooled layer the SSAT channel loop can take
/// (on any core, so that the arena does not depend on it; cores without the DSP extension
/// use four of them), otherwise [`LANES`].
fn patch_lanes(g: &ConvGeom, st: &Stage) -> usize {
    if g.pool_k > 1 || g.pool_s > 1 || !st.ssat_layer(31) {
        LANES
    } else {
        RUN_LANES
    }
}

/// Words of each part of the patch path's scratch, in order: the patches of `lanes` lanes and
/// the receptive field's bytes (only when `in_c % 4 != 0`).
fn scratch_layout(g: &ConvGeom, lanes: usize) -> [usize; 2] {
    let groups = (g.k_h * g.k_w * g.in_c).div_ceil(4);
    let bytes = if g.in_c.is_multiple_of(4) {
        0
    } else {
        groups + 1
    };
    [2 * lanes * groups, bytes]
}

/// The patch path. `scratch` is `[patches | receptive field bytes]`; with `L` lanes, group
/// `t` of lane `l` is patch words `2 L t + 2 l` and `2 L t + 2 l + 1` (the lanes interleaved
/// per group, so the dot-product loop walks one pointer).
#[inline(never)] // its own function: its own inlining budget and register allocation
pub(super) fn conv2d_patch(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    let taps = g.k_h * g.k_w * g.in_c;
    let [patch_words, _] = scratch_layout(g, patch_lanes(g, st));
    let (patch, temp) = scratch.split_at_mut(patch_words.min(scratch.len()));
    let nzp = pair(-(in_zp as i16));
    if g.pool_k > 1 || g.pool_s > 1 {
        pooled(input, nzp, in_zp, g, patch, temp, weights, taps, st, output);
    } else {
        unpooled(input, nzp, in_zp, g, patch, temp, weights, taps, st, output);
    }
}

/// The patch path with a fused max-pool (see [`conv2d_patch`]). Its own function: its code
/// and registers do not depend on the unpooled path beside it.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn pooled(
    input: &[i8],
    nzp: u32,
    in_zp: i32,
    g: &ConvGeom,
    patch: &mut [u32],
    temp: &mut [u32],
    weights: &[i8],
    taps: usize,
    st: &Stage,
    output: &mut [i8],
) {
    let out_c = g.out_c;
    // Fused max-pool: the lanes are the window's conv outputs, max-reduced before one
    // requantization. A window of more than four outputs takes several passes; lanes past
    // the window's end repeat its first output (harmless under max).
    let n = g.pool_k * g.pool_k;
    let mut blk = Block::new();
    for py in 0..g.out_h {
        for px in 0..g.out_w {
            let base = (py * g.out_w + px) * out_c;
            let Some(out) = output.get_mut(base..base + out_c) else {
                return;
            };
            let mut q = 0;
            while q < n {
                for lane in 0..LANES {
                    let k = if q + lane < n { q + lane } else { q };
                    let (oy, ox) = (py * g.pool_s + k / g.pool_k, px * g.pool_s + k % g.pool_k);
                    gather(input, nzp, in_zp, g, oy, ox, patch, (lane, LANES), temp);
                }
                pooled_channels(patch, weights, taps, st, out, q == 0, &mut blk);
                q += LANES;
            }
        }
    }
}

/// The patch path without a pool: the lanes are consecutive outputs in raster order, six for
/// the SSAT channel loop (when the layer has six outputs), four otherwise. Its own function,
/// so the pooled path's code and registers stay as they were.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn unpooled(
    input: &[i8],
    nzp: u32,
    in_zp: i32,
    g: &ConvGeom,
    patch: &mut [u32],
    temp: &mut [u32],
    weights: &[i8],
    taps: usize,
    st: &Stage,
    output: &mut [i8],
) {
    let out_c = g.out_c;
    let n = g.out_h * g.out_w;
    // The SSAT requantization: one loop over the channels that requantizes as it goes.
    let run = st.ssat_form(31) && n >= RUN_LANES;
    let lanes = if run { RUN_LANES } else { LANES };
    let stage = (st.bias, st.requant, st.zero_point);
    let mut q = 0;
    while q < n {
        if run && n - q < lanes {
            // The last outputs on the SSAT path: the six ending at `n`, some of them again
            // (the same bytes; the output does not overlap the input).
            q = n - lanes;
        }
        let k_n = lanes.min(n - q);
        for lane in 0..lanes {
            let k = q + lane.min(k_n - 1);
            gather(
                input,
                nzp,
                in_zp,
                g,
                k / g.out_w,
                k % g.out_w,
                patch,
                (lane, lanes),
                temp,
            );
        }
        let out = output.get_mut(q * out_c..).unwrap_or_default();
        if run {
            // `false` only for slices too short, unreachable for a validated layer.
            if !patch_channels(patch, (weights, taps), stage, out, out_c) {
                return;
            }
        } else {
            unpooled_channels(patch, (weights, taps), st, out, (out_c, k_n));
        }
        q += lanes;
    }
}

/// Every output channel of one pass of the unpooled path outside the SSAT loop: `k_n` lanes
/// written at `out[lane * out_c + oc]`. Its own function: the gather's registers beside it
/// cost the portable cores about 20 instructions a channel.
#[inline(never)]
fn unpooled_channels(
    patch: &[u32],
    (weights, taps): (&[i8], usize),
    st: &Stage,
    out: &mut [i8],
    (out_c, k_n): (usize, usize),
) {
    let double = st.rounding == Rounding::Double;
    let mut chs = st.channels();
    for oc in 0..out_c {
        let Some((bias, rq)) = chs.next() else {
            break;
        };
        let acc = dot_lanes(patch, weights, oc * taps, taps, bias);
        if double {
            // TensorFlow Lite's rounding: decoded once for the four lanes, inline.
            let p = st.prepare_double(rq);
            for (lane, &a) in acc.iter().enumerate().take(k_n) {
                if let Some(o) = out.get_mut(lane * out_c + oc) {
                    *o = p.to_i8_double(a, st.zero_point, st.act_min, st.act_max);
                }
            }
            continue;
        }
        for (lane, &a) in acc.iter().enumerate().take(k_n) {
            if let Some(o) = out.get_mut(lane * out_c + oc) {
                *o = st.finish(a, rq);
            }
        }
    }
}

/// One pass of four lanes of a pooling window, every output channel: per block of channels,
/// first the raw maxima (the dot-product loop keeps few values live), then their
/// requantization in a second, register-light loop. `first` assigns, otherwise the pooled byte
/// is a running max.
#[inline(always)]
fn pooled_channels(
    patch: &[u32],
    weights: &[i8],
    taps: usize,
    st: &Stage,
    out: &mut [i8],
    first: bool,
    blk: &mut Block,
) {
    let padded = taps.div_ceil(4) * 4;
    let mut at = 0;
    for (bi, block) in out.chunks_mut(CH_BLOCK).enumerate() {
        blk.load(st, bi * CH_BLOCK, block.len());
        for (mi, &bias) in blk.max.iter_mut().zip(&blk.bias).take(block.len()) {
            *mi = match weights.get(at..at + padded) {
                Some(wp) => dot4_max(patch, wp, bias),
                None => {
                    let a = dot_lanes(patch, weights, at, taps, bias);
                    a[0].max(a[1]).max(a[2]).max(a[3])
                }
            };
            at += taps;
        }
        // The choice of rounding is made once per block; TensorFlow Lite's has its own loop,
        // out of line, so this one stays as small as it was.
        if st.rounding == Rounding::Double {
            requant_double(block, &blk.max, &blk.rq, st, first);
            continue;
        }
        for ((o, &mi), &rq) in block.iter_mut().zip(&blk.max).zip(&blk.rq) {
            let v = st.finish_prepared(mi, rq);
            if first || v > *o {
                *o = v;
            }
        }
    }
}

/// Fills lane `lane` of `lanes` of the patches with `x - zp` over the receptive field of conv
/// output `(oy, ox)`: 0 for taps in the padding and for the last group's pad taps.
///
/// Group `t` (taps `4t..4t+4`, OHWI order ky, kx, ic) of the lane is the words `(v0, v2)` and
/// `(v1, v3)` at `2 lanes t + 2 lane`, which pair with `SXTB16(w)` = `(w0, w2)` and
/// `SXTB16(w ROR 8)` = `(w1, w3)` of its weight word. `temp` holds a contiguous patch for
/// fields that cross the padding.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gather(
    input: &[i8],
    nzp: u32,
    zp: i32,
    g: &ConvGeom,
    oy: usize,
    ox: usize,
    patch: &mut [u32],
    (lane, lanes): (usize, usize),
    temp: &mut [u32],
) {
    // One stride for both axes: conv2d_scratch_words sends unequal strides to the direct path.
    let iy0 = (oy * g.stride_h) as isize - g.pad_top as isize;
    let ix0 = (ox * g.stride_h) as isize - g.pad_left as isize;
    let row_in = |ky: usize| {
        let iy = iy0 + ky as isize;
        iy >= 0 && (iy as usize) < g.in_h
    };
    let inside =
        iy0 >= 0 && ix0 >= 0 && iy0 as usize + g.k_h <= g.in_h && ix0 as usize + g.k_w <= g.in_w;
    if g.in_c.is_multiple_of(4) {
        if inside {
            // A kernel row's pixels are contiguous in the input: its words in one loop
            // (one load and two SXTAB16 a word).
            let at = (iy0 as usize * g.in_w + ix0 as usize) * g.in_c;
            let win = input.get(at..).unwrap_or_default();
            let row_words = g.k_w * g.in_c / 4;
            for ky in 0..g.k_h {
                let src = win.get(ky * g.in_w * g.in_c..).unwrap_or_default();
                let first = 2 * lanes * ky * row_words + 2 * lane;
                let dst = patch.get_mut(first..).unwrap_or_default();
                gather_words(src, row_words, (dst, lanes), nzp);
            }
            return;
        }
        // Zeros the compiler cannot see as constants: it would otherwise turn the short
        // padding fills into memset calls that cost more than the stores.
        let zero = core::hint::black_box(0u32);
        // The lane's two words of each group, in order.
        let mut slots = patch
            .chunks_exact_mut(2 * lanes)
            .map(|grp| &mut grp[2 * lane..2 * lane + 2]);
        // Whole groups per pixel: one word load and two SXTAB16 per four taps.
        for ky in 0..g.k_h {
            for kx in 0..g.k_w {
                let ix = ix0 + kx as isize;
                let inside = row_in(ky) && ix >= 0 && (ix as usize) < g.in_w;
                let px = if inside {
                    let at = ((iy0 + ky as isize) as usize * g.in_w + ix as usize) * g.in_c;
                    input.get(at..at + g.in_c)
                } else {
                    None
                };
                match px {
                    Some(px) => {
                        for (x4, d) in px.chunks_exact(4).zip(&mut slots) {
                            put_word(d, nzp, x4);
                        }
                    }
                    None => {
                        for d in (&mut slots).take(g.in_c / 4) {
                            d[0] = zero;
                            d[1] = zero;
                        }
                    }
                }
            }
        }
        return;
    }
    // Any channel count: each kernel row's bytes (contiguous in the input) into `temp`, the
    // zero point where the row or some of its columns lie in the padding and for the last
    // group's pad taps, then a word at a time as for four channels (the zero point becomes
    // 0).
    let row = g.k_w * g.in_c;
    let taps = g.k_h * row;
    let groups = taps.div_ceil(4);
    let Some(temp) = temp.get_mut(..groups + 1) else {
        return;
    };
    let stride = g.in_w * g.in_c;
    let row_words = row.div_ceil(4);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(temp);
    let corner = (iy0 * g.in_w as isize + ix0) * g.in_c as isize;
    let span = (g.k_h - 1) * stride + 4 * row_words;
    let field = match (inside, usize::try_from(corner)) {
        (true, Ok(at)) => input.get(at..at + span),
        _ => None,
    };
    if let Some(field) = field {
        // Inside the image: whole words, each row's last one reading up to three bytes past
        // it (overwritten by the next row, or the pad taps set below; `temp` has a word of
        // room).
        copy_rows(
            field,
            (stride, g.k_h, row_words),
            bytemuck::cast_slice_mut(bytes),
            row,
        );
    } else {
        let zpb = zp as u8;
        // The kernel columns inside the image, `kx_lo..kx_hi`.
        let kx_lo = ((-ix0).max(0) as usize).min(g.k_w);
        let kx_hi = (g.in_w as isize - ix0).clamp(kx_lo as isize, g.k_w as isize) as usize;
        let (lo, hi) = (kx_lo * g.in_c, kx_hi * g.in_c);
        let body = bytes.get_mut(..taps).unwrap_or_default();
        for (ky, dst) in body.chunks_exact_mut(row).enumerate() {
            let src = if row_in(ky) && lo < hi {
                let at = (corner + (ky * stride + lo) as isize) as usize;
                input.get(at..at + (hi - lo))
            } else {
                None
            };
            match (src, dst.get_mut(lo..hi)) {
                (Some(src), Some(mid)) => {
                    mid.copy_from_slice(bytemuck::cast_slice(src));
                    dst[..lo].fill(zpb);
                    dst[hi..].fill(zpb);
                }
                _ => dst.fill(zpb),
            }
        }
    }
    // The last group's pad taps: the zero point.
    let used = taps % 4;
    if let (1.., Some(last)) = (used, temp.get_mut(groups - 1)) {
        let keep = (1u32 << (8 * used)) - 1;
        *last = (*last & keep) | ((u32::from(zp as u8) * 0x0101_0101) & !keep);
    }
    let words: &[i8] = bytemuck::cast_slice(&temp[..groups]);
    gather_words(
        words,
        groups,
        (patch.get_mut(2 * lane..).unwrap_or_default(), lanes),
        nzp,
    );
}

/// One group of four input bytes into a lane's two words: `x - zp` with two SXTAB16
/// (`nzp = pair(-zp)`), `(x0, x2)` and `(x1, x3)`.
#[inline(always)]
fn put_word(d: &mut [u32], nzp: u32, x4: &[i8]) {
    let x = u32::from_le_bytes([x4[0] as u8, x4[1] as u8, x4[2] as u8, x4[3] as u8]);
    d[0] = sxtab16(nzp, x);
    d[1] = sxtab16_ror8(nzp, x);
}

/// `bias + sum patch * w` for each of the four lanes, `w = weights[at..at + taps]`: per four
/// taps one weight word, two SXTB16 and two SMLAD per lane.
///
/// When `taps` is not a multiple of 4, the last group's weight word is read whole whenever
/// the weights extend that far (every channel but the last): its extra bytes belong to the next
/// channel, but they meet the patch's pad taps, which are 0. The last channel's tail is built
/// from its own bytes.
#[inline(always)]
fn dot_lanes(patch: &[u32], weights: &[i8], at: usize, taps: usize, bias: i32) -> [i32; 4] {
    if let Some(wp) = weights.get(at..at + taps.div_ceil(4) * 4) {
        return dot4(patch, wp, [bias; 4]);
    }
    let w = weights.get(at..at + taps).unwrap_or_default();
    let full = w.len() / 4;
    let mut acc = dot4(patch, w, [bias; 4]);
    let tail = w.get(full * 4..).unwrap_or_default();
    if !tail.is_empty() {
        let mut ww = 0u32;
        for (i, &s) in tail.iter().enumerate().take(3) {
            ww |= (s as u8 as u32) << (8 * i);
        }
        let (we, wo) = (sxtb16(ww), sxtb16_ror8(ww));
        if let Some(p) = patch.get(8 * full..8 * full + 8) {
            for (a, pl) in acc.iter_mut().zip(p.chunks_exact(2)) {
                *a = smlad(pl[1], wo, smlad(pl[0], we, *a));
            }
        }
    }
    acc
}
