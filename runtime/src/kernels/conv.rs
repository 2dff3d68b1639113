//! Convolution (optionally with a fused max-pool) and depthwise convolution.
//!
//! `out[oy, ox, oc] = clamp(requant_oc(bias[oc] + sum_{ky,kx,ic} (x[iy, ix, ic] - zp_in) *
//! w[oc, ky, kx, ic]) + zp_out)` with `iy = oy * stride_h + ky - pad_top`. Taps that fall in the
//! padding contribute `(zp_in - zp_in) * w = 0`, so they are skipped rather than read.
//!
//! With a fused pool, each pooled output is the max of the requantized conv outputs in its
//! window. Requantization and the clamp are monotonic, so this is exactly what a separate
//! conv then max-pool computes; the difference is that the conv output is never stored.

use super::prepare::{
    check_input_zp, check_len, check_stage, limit, shape, stage, Checked, Operand,
};
use super::MAX_TAPS;
use crate::format::{Conv2d, Padding, MAX_MACS, MAX_TENSOR_BYTES};
use crate::model::{as_i8, Step};
use crate::Error;

use super::dsp::{dot4, dot4_max, pack, pair, smlad, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8};
use super::Stage;
use crate::quant::{Prepared, Rounding};

/// Geometry of a convolution, validated once at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    /// Zero rows above and columns left of the input (those below and right only set the
    /// output size).
    pub pad_top: usize,
    pub pad_left: usize,
    /// Convolution output size, before the fused pool.
    pub conv_h: usize,
    pub conv_w: usize,
    /// Fused max-pool window and stride; 1 and 1 when there is none.
    pub pool_k: usize,
    pub pool_s: usize,
    /// Final output size.
    pub out_h: usize,
    pub out_w: usize,
    /// Column stride (last: a field the patch path does not read).
    pub stride_w: usize,
}

impl ConvGeom {
    /// `None` when the numbers do not describe a valid convolution. `stride` is
    /// `(rows, columns)`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_h: usize,
        in_w: usize,
        in_c: usize,
        out_c: usize,
        k_h: usize,
        k_w: usize,
        (stride_h, stride_w): (usize, usize),
        pad: Padding,
        pool: Option<(usize, usize)>,
    ) -> Option<ConvGeom> {
        if in_h == 0 || in_w == 0 || in_c == 0 || out_c == 0 || k_h == 0 || k_w == 0 {
            return None;
        }
        let k = k_h.max(k_w);
        let sides = [pad.top, pad.left, pad.bottom, pad.right];
        if stride_h == 0 || stride_w == 0 || sides.iter().any(|&p| p as usize >= k && p > 0) {
            return None;
        }
        let ph = in_h + pad.top as usize + pad.bottom as usize;
        let pw = in_w + pad.left as usize + pad.right as usize;
        if ph < k_h || pw < k_w {
            return None;
        }
        let conv_h = (ph - k_h) / stride_h + 1;
        let conv_w = (pw - k_w) / stride_w + 1;
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
            stride_h,
            stride_w,
            pad_top: pad.top as usize,
            pad_left: pad.left as usize,
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
    /// Multiply-accumulates of a regular convolution with this geometry, exact in 64 bits
    /// (each factor is below 2^16 and the taps below 2^14, so no overflow).
    pub fn macs(&self) -> u64 {
        [self.conv_w, self.out_c, self.k_h * self.k_w * self.in_c]
            .iter()
            .fold(self.conv_h as u64, |a, &f| a.saturating_mul(f as u64))
    }

    /// The kernel taps of conv output `(oy, ox)` that land inside the input:
    /// `(iy0, ix0, ky_lo..ky_hi, kx_lo..kx_hi)` where `iy = iy0 + ky`.
    #[inline(always)]
    fn window(&self, oy: usize, ox: usize) -> (isize, isize, usize, usize, usize, usize) {
        let iy0 = (oy * self.stride_h) as isize - self.pad_top as isize;
        let ix0 = (ox * self.stride_w) as isize - self.pad_left as isize;
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

/// Conv outputs computed together: each weight word is loaded and sign-extended once for
/// `LANES` receptive fields (the pixels of one pooling window, or neighbouring outputs).
const LANES: usize = 4;
/// Most taps (`kh * kw * in_c`) the patch path takes; larger kernels take the direct path,
/// which needs no scratch.
pub const PATCH_MAX_TAPS: usize = 1024;

/// Scratch `conv2d` needs for this geometry, in 4-byte words (0 for the direct path): the four
/// patches (`8 * ceil(taps / 4)` words), the tap-offset table (`ceil(taps / 2)`) and a
/// contiguous patch for receptive fields that cross the padding (`2 * ceil(taps / 4)`). The model plans it in
/// the arena, live only while its layer runs.
///
/// Strides that differ between rows and columns take the direct path: the patch path's gather
/// holds one stride (a second one cost 1.5 % of ref-cnn's instructions in register pressure).
pub fn conv2d_scratch_words(g: &ConvGeom) -> usize {
    if g.k_h * g.k_w * g.in_c > PATCH_MAX_TAPS || g.stride_h != g.stride_w {
        return 0;
    }
    scratch_layout(g).iter().sum()
}

/// Words of each part of the patch path's scratch, in order: the four patches, the tap-offset
/// table, the (ky, kx) table (only when taps go one at a time, `in_c % 4 != 0`) and the
/// contiguous patch.
fn scratch_layout(g: &ConvGeom) -> [usize; 4] {
    let taps = g.k_h * g.k_w * g.in_c;
    let groups = taps.div_ceil(4);
    let kykx = if g.in_c.is_multiple_of(4) {
        0
    } else {
        taps.div_ceil(2)
    };
    [2 * LANES * groups, taps.div_ceil(2), kykx, 2 * groups]
}

/// Regular convolution, NHWC input, OHWI weights, optional fused max-pool; `scratch` holds at
/// least [`conv2d_scratch_words`] words (with less it takes the direct path).
///
/// The receptive fields of four conv outputs (a 2x2 pooling window, or four neighbouring
/// outputs) are gathered into patches of `x - zp_in` halfword pairs (0 in the padding), laid
/// out for the Cortex-M DSP extension; then each output channel loads every weight word once,
/// sign-extends it with two SXTB16 and feeds all four patches with SMLAD (two MACs each). With
/// a fused max-pool, the window's raw accumulators are reduced with `max` before a single
/// requantization: requantization (non-negative multiplier) and the clamp are monotonic, so
/// this is the same byte as pooling the requantized outputs. Hosts run the same code through
/// the Rust models in [`super::dsp`]; the proptests compare it with the naive i64 reference.
pub fn conv2d(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    let need = conv2d_scratch_words(g);
    match scratch.get_mut(..need) {
        Some(s) if need > 0 => conv2d_patch(input, in_zp, weights, g, st, output, s),
        _ => conv2d_direct(input, in_zp, weights, g, st, output),
    }
}

/// The patch path. `scratch` is `[patches | offsets | contiguous patch]`; group `t` of lane `l`
/// is patch words `8 t + 2 l` and `8 t + 2 l + 1` (the four lanes interleaved per group, so
/// the dot-product loop walks one pointer).
#[inline(never)] // its own function: its own inlining budget and register allocation
fn conv2d_patch(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    let taps = g.k_h * g.k_w * g.in_c;
    let [patch_words, offs_words, kykx_words, _] = scratch_layout(g);
    let (patch, rest) = scratch.split_at_mut(patch_words.min(scratch.len()));
    let (offs_w, rest) = rest.split_at_mut(offs_words.min(rest.len()));
    let (kykx_w, temp) = rest.split_at_mut(kykx_words.min(rest.len()));
    let nzp = pair(-(in_zp as i16));
    let out_c = g.out_c;
    // Receptive fields wholly inside the image are gathered through a table of each tap's
    // offset from the field's corner (per tap, or per group of four when in_c % 4 == 0).
    let offs_all: &mut [u16] = bytemuck::cast_slice_mut(offs_w);
    let span = ((g.k_h - 1) * g.in_w + g.k_w) * g.in_c;
    let use_offs = span <= u16::MAX as usize && offs_all.len() >= taps;
    let kykx_all: &mut [[u8; 2]] = bytemuck::cast_slice_mut(kykx_w);
    let use_kykx = kykx_all.len() >= taps && g.k_h <= 255 && g.k_w <= 255;
    if use_offs {
        let mut t = offs_all.iter_mut();
        let mut p = kykx_all.iter_mut();
        for ky in 0..g.k_h {
            for kx in 0..g.k_w {
                for ic in 0..g.in_c {
                    if let Some(o) = t.next() {
                        *o = ((ky * g.in_w + kx) * g.in_c + ic) as u16;
                    }
                    if let Some(q) = p.next() {
                        *q = [ky as u8, kx as u8];
                    }
                }
            }
        }
    }
    let kykx = if use_offs && use_kykx {
        kykx_all.get(..taps)
    } else {
        None
    };
    let offs = if use_offs { offs_all.get(..taps) } else { None };
    let patch: &mut [u32] = patch;
    if g.pool_k > 1 || g.pool_s > 1 {
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
                        gather(input, nzp, in_zp, g, oy, ox, patch, lane, offs, kykx, temp);
                    }
                    pooled_channels(patch, weights, taps, st, out, q == 0, &mut blk);
                    q += LANES;
                }
            }
        }
    } else {
        // No pool: the lanes are four consecutive outputs in raster order.
        let n = g.out_h * g.out_w;
        let mut q = 0;
        while q < n {
            let k_n = LANES.min(n - q);
            for lane in 0..LANES {
                let k = q + lane.min(k_n - 1);
                gather(
                    input,
                    nzp,
                    in_zp,
                    g,
                    k / g.out_w,
                    k % g.out_w,
                    patch,
                    lane,
                    offs,
                    kykx,
                    temp,
                );
            }
            let mut chs = st.channels();
            for oc in 0..out_c {
                let Some((bias, rq)) = chs.next() else {
                    break;
                };
                let acc = dot_lanes(patch, weights, oc * taps, taps, bias);
                for (lane, &a) in acc.iter().enumerate().take(k_n) {
                    if let Some(o) = output.get_mut((q + lane) * out_c + oc) {
                        *o = st.finish(a, rq);
                    }
                }
            }
            q += LANES;
        }
    }
}

/// Channels per block of [`pooled_channels`]: their biases, prepared multipliers and raw
/// maxima live in small stack arrays.
const CH_BLOCK: usize = 16;

/// Decoded output stage of one block of channels.
struct Block {
    bias: [i32; CH_BLOCK],
    rq: [Prepared; CH_BLOCK],
    /// First channel and channel count of the decoded block (`usize::MAX`: none yet).
    start: usize,
    len: usize,
    max: [i32; CH_BLOCK],
}

impl Block {
    fn new() -> Block {
        Block {
            bias: [0; CH_BLOCK],
            rq: [Prepared::default(); CH_BLOCK],
            start: usize::MAX,
            len: 0,
            max: [0; CH_BLOCK],
        }
    }

    /// Decodes channels `start..start + len` unless they are the ones already held.
    #[inline(always)]
    fn load(&mut self, st: &Stage, start: usize, len: usize) {
        if self.start == start && self.len == len {
            return;
        }
        let chs = st.channels().skip(start).take(len.min(CH_BLOCK));
        for ((b, r), (bias, rq)) in self.bias.iter_mut().zip(self.rq.iter_mut()).zip(chs) {
            *b = bias;
            *r = Prepared::new(rq, st.rounding);
        }
        self.start = start;
        self.len = len;
    }
}

/// [`pooled_channels`]' requantization of one block with TensorFlow Lite's rounding.
#[inline(never)]
fn requant_double(block: &mut [i8], max: &[i32], rq: &[Prepared], st: &Stage, first: bool) {
    for ((o, &mi), &rq) in block.iter_mut().zip(max).zip(rq) {
        let v = rq.to_i8_double(mi, st.zero_point, st.act_min, st.act_max);
        if first || v > *o {
            *o = v;
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

/// Fills lane `lane` of the patches with `x - zp` over the receptive field of conv output
/// `(oy, ox)`: 0 for taps in the padding and for the last group's pad taps.
///
/// Group `t` (taps `4t..4t+4`, OHWI order ky, kx, ic) of the lane is the words `(v0, v2)` and
/// `(v1, v3)` at `8 t + 2 lane`, which pair with `SXTB16(w)` = `(w0, w2)` and
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
    lane: usize,
    offs: Option<&[u16]>,
    kykx: Option<&[[u8; 2]]>,
    temp: &mut [u32],
) {
    // One stride for both axes: conv2d_scratch_words sends unequal strides to the direct path.
    let iy0 = (oy * g.stride_h) as isize - g.pad_top as isize;
    let ix0 = (ox * g.stride_h) as isize - g.pad_left as isize;
    // Zeros the compiler cannot see as constants: it would otherwise turn the short padding
    // fills into memset calls that cost more than the stores.
    let zero = core::hint::black_box(0u32);
    let zero16 = zero as i16;
    // The lane's two words of each group, in order.
    let mut slots = patch
        .chunks_exact_mut(2 * LANES)
        .map(|grp| &mut grp[2 * lane..2 * lane + 2]);
    let inside =
        iy0 >= 0 && ix0 >= 0 && iy0 as usize + g.k_h <= g.in_h && ix0 as usize + g.k_w <= g.in_w;
    if let (Some(offs), true) = (offs, inside) {
        let at = (iy0 as usize * g.in_w + ix0 as usize) * g.in_c;
        let win = input.get(at..).unwrap_or_default();
        if g.in_c.is_multiple_of(4) {
            // A group never straddles two pixels: one word load and two SXTAB16.
            for (o, d) in offs.chunks_exact(4).zip(&mut slots) {
                let o = o[0] as usize;
                if let Some(x4) = win.get(o..o + 4) {
                    put_word(d, nzp, x4);
                }
            }
            return;
        }
        let zp = zp as i16;
        let v = |o: u16| win.get(o as usize).map_or(0, |&x| x as i16 - zp);
        let mut groups = offs.chunks_exact(4);
        for (o, d) in (&mut groups).zip(&mut slots) {
            put4(d, [v(o[0]), v(o[1]), v(o[2]), v(o[3])]);
        }
        let rest = groups.remainder();
        if !rest.is_empty() {
            let mut t = [0i16; 4];
            for (t, &o) in t.iter_mut().zip(rest) {
                *t = v(o);
            }
            if let Some(d) = slots.next() {
                put4(d, t);
            }
        }
        return;
    }
    if let (Some(offs), Some(kykx)) = (offs, kykx) {
        // Across the padding, taps one at a time: the table gives each tap's offset from the
        // field's corner (which may lie outside the image) and its (ky, kx); a tap reads the
        // input only when its row and column are inside.
        let ky_lo = (-iy0).max(0) as usize;
        let kx_lo = (-ix0).max(0) as usize;
        let ky_n =
            ((g.in_h as isize - iy0).clamp(0, g.k_h as isize) as usize).saturating_sub(ky_lo);
        let kx_n =
            ((g.in_w as isize - ix0).clamp(0, g.k_w as isize) as usize).saturating_sub(kx_lo);
        let base = (iy0 * g.in_w as isize + ix0) * g.in_c as isize;
        let zp = zp as i16;
        let v = |o: u16, p: [u8; 2]| -> i16 {
            let inside = (p[0] as usize).wrapping_sub(ky_lo) < ky_n
                && (p[1] as usize).wrapping_sub(kx_lo) < kx_n;
            if !inside {
                return zero16;
            }
            let at = base + o as isize;
            input.get(at as usize).map_or(0, |&x| x as i16 - zp)
        };
        let mut groups = offs.chunks_exact(4).zip(kykx.chunks_exact(4));
        for ((o, p), d) in (&mut groups).zip(&mut slots) {
            put4(
                d,
                [v(o[0], p[0]), v(o[1], p[1]), v(o[2], p[2]), v(o[3], p[3])],
            );
        }
        let rest = taps_rest(offs, kykx);
        if !rest.0.is_empty() {
            let mut t = [0i16; 4];
            for (t, (&o, &p)) in t.iter_mut().zip(rest.0.iter().zip(rest.1)) {
                *t = v(o, p);
            }
            if let Some(d) = slots.next() {
                put4(d, t);
            }
        }
        return;
    }
    if g.in_c.is_multiple_of(4) {
        // Whole groups per pixel: one word load and two SXTAB16 per four taps.
        for ky in 0..g.k_h {
            let iy = iy0 + ky as isize;
            let row_in = iy >= 0 && (iy as usize) < g.in_h;
            for kx in 0..g.k_w {
                let ix = ix0 + kx as isize;
                let inside = row_in && ix >= 0 && (ix as usize) < g.in_w;
                let px = if inside {
                    let at = (iy as usize * g.in_w + ix as usize) * g.in_c;
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
    // Any channel count: the taps in natural order as halfwords in `temp` (little-endian
    // words hold `(v0, v1)`, `(v2, v3)`), then each group's two words swapped into its slot.
    let taps = g.k_h * g.k_w * g.in_c;
    let words = taps.div_ceil(4) * 2;
    let Some(temp) = temp.get_mut(..words) else {
        return;
    };
    {
        let zp = zp as i16;
        let halves: &mut [i16] = bytemuck::cast_slice_mut(temp);
        let mut pos = 0;
        for ky in 0..g.k_h {
            let iy = iy0 + ky as isize;
            let row_in = iy >= 0 && (iy as usize) < g.in_h;
            for kx in 0..g.k_w {
                let ix = ix0 + kx as isize;
                let inside = row_in && ix >= 0 && (ix as usize) < g.in_w;
                let px = if inside {
                    let at = (iy as usize * g.in_w + ix as usize) * g.in_c;
                    input.get(at..at + g.in_c)
                } else {
                    None
                };
                if let Some(d) = halves.get_mut(pos..pos + g.in_c) {
                    match px {
                        Some(px) => {
                            for (d, &x) in d.iter_mut().zip(px) {
                                *d = x as i16 - zp;
                            }
                        }
                        None => {
                            for d in d.iter_mut() {
                                *d = zero16;
                            }
                        }
                    }
                }
                pos += g.in_c;
            }
        }
        for d in halves.iter_mut().skip(pos) {
            *d = zero16;
        }
    }
    for (t, d) in temp.chunks_exact(2).zip(&mut slots) {
        let (a, b) = (t[0], t[1]);
        d[0] = (a & 0xffff) | (b << 16);
        d[1] = (a >> 16) | (b & 0xffff_0000);
    }
}

/// One group of four input bytes into a lane's two words: `x - zp` with two SXTAB16
/// (`nzp = pair(-zp)`), `(x0, x2)` and `(x1, x3)`.
#[inline(always)]
fn put_word(d: &mut [u32], nzp: u32, x4: &[i8]) {
    let x = u32::from_le_bytes([x4[0] as u8, x4[1] as u8, x4[2] as u8, x4[3] as u8]);
    d[0] = sxtab16(nzp, x);
    d[1] = sxtab16_ror8(nzp, x);
}

/// Four tap values `v` into a lane's two words of a group: `(v0, v2)`, `(v1, v3)`.
#[inline(always)]
fn put4(d: &mut [u32], v: [i16; 4]) {
    d[0] = pack(v[0], v[2]);
    d[1] = pack(v[1], v[3]);
}

/// The taps past the last whole group of four: offsets and (ky, kx).
#[inline(always)]
fn taps_rest<'x>(offs: &'x [u16], kykx: &'x [[u8; 2]]) -> (&'x [u16], &'x [[u8; 2]]) {
    let full = offs.len() / 4 * 4;
    (
        offs.get(full..).unwrap_or_default(),
        kykx.get(full..).unwrap_or_default(),
    )
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

/// Convolution straight from the input, for kernels too large for the patch scratch.
#[inline(never)] // its own function: its own inlining budget and register allocation
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
    if g.pool_k == 1 && g.pool_s == 1 {
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
                let at = (oy * g.out_w + ox) * c_n + c0;
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

/// Checks a convolution or depthwise convolution layer against its input (`x`) and resolves
/// its geometry: the kernel above relies on every check here.
pub(crate) fn prepare<'a>(
    li: u16,
    cv: &Conv2d<'a>,
    depthwise: bool,
    x: Operand,
    rounding: crate::quant::Rounding,
) -> Result<Checked<'a>, Error> {
    let cur = x.shape;
    let (h, w, c) = (cur.h as usize, cur.w as usize, cur.c as usize);
    if cv.in_channels != cur.c {
        return Err(Error::ShapeMismatch {
            layer: li,
            expected: cur.dims(),
            found: [cur.h, cur.w, cv.in_channels],
        });
    }
    if depthwise && cv.out_channels != cv.in_channels {
        return Err(Error::BadParameter {
            layer: li,
            what: "depthwise out_channels != in_channels",
        });
    }
    let pool = match cv.pool.map(|p| p.as_square()) {
        None => None,
        Some(Some((k, s))) => Some((k as usize, s as usize)),
        Some(None) => {
            return Err(Error::BadParameter {
                layer: li,
                what: "fused pool (must be square with equal strides)",
            })
        }
    };
    let g = ConvGeom::new(
        h,
        w,
        c,
        cv.out_channels as usize,
        cv.kernel_h as usize,
        cv.kernel_w as usize,
        (cv.stride_h as usize, cv.stride_w as usize),
        cv.padding,
        pool,
    )
    .ok_or(Error::BadParameter {
        layer: li,
        what: "convolution geometry",
    })?;
    let taps = g.k_h * g.k_w * if depthwise { 1 } else { c };
    if taps > MAX_TAPS {
        return Err(Error::BadParameter {
            layer: li,
            what: "kernel taps (> 16384)",
        });
    }
    let macs = if depthwise {
        g.macs() / c as u64
    } else {
        g.macs()
    };
    limit(li, "multiply-accumulates", macs, MAX_MACS)?;
    limit(
        li,
        "output tensor bytes",
        g.out_h as u64 * g.out_w as u64 * g.out_c as u64,
        MAX_TENSOR_BYTES,
    )?;
    // taps <= 2^14 and out_c < 2^16: fits 32 bits.
    let wn = if depthwise {
        g.k_h * g.k_w * c
    } else {
        g.out_c * taps
    };
    check_len(li, "weights", cv.weights.len(), wn)?;
    check_input_zp(li, cv.input_zero_point, x.zp)?;
    if cv.pool.is_some_and(|p| p.padding != 0) {
        return Err(Error::BadParameter {
            layer: li,
            what: "fused pool padding (must be 0)",
        });
    }
    let param_bytes = wn + check_stage(li, &cv.output, g.out_c, taps)?;
    // The fused pool takes the max of raw accumulators and requantizes once: exact only for a
    // monotonic requantization. TensorFlow Lite's left shift (shift > 0) wraps as its C++
    // does, so that one is not (TFLite itself never fuses a pool; the importer does not).
    if cv.pool.is_some() && cv.output.channels().any(|(_, q)| !q.is_monotonic(rounding)) {
        return Err(Error::BadParameter {
            layer: li,
            what: "fused pool after a left-shifting TensorFlow Lite requantization",
        });
    }
    let (weights, stage, in_zp) = (
        as_i8(cv.weights),
        stage(&cv.output, rounding),
        cv.input_zero_point,
    );
    let step = if depthwise {
        Step::Depthwise {
            g,
            in_zp,
            weights,
            stage,
        }
    } else {
        Step::Conv {
            g,
            in_zp,
            weights,
            stage,
        }
    };
    Ok(Checked {
        step,
        out: shape(g.out_h, g.out_w, g.out_c, li)?,
        macs,
        param_bytes,
        out_zp: cv.output.zero_point,
    })
}
