//! What the three convolution paths share (the entry and direct path in [`super::conv`], the
//! patch path in [`super::conv_patch`], the depthwise convolution in [`super::depthwise`]): the
//! geometry, the plain dot product, and a block of channels' decoded output stage.

use super::Stage;
use crate::format::Padding;
use crate::quant::Prepared;

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
    pub(super) fn window(
        &self,
        oy: usize,
        ox: usize,
    ) -> (isize, isize, usize, usize, usize, usize) {
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
pub(super) fn dot(x: &[i8], w: &[i8], zp: i32) -> i32 {
    let mut xw = 0i32;
    let mut sw = 0i32;
    for (&a, &b) in x.iter().zip(w) {
        xw += a as i32 * b as i32;
        sw += b as i32;
    }
    xw - zp * sw
}

/// Channels per block of [`super::conv_patch`]'s pooled channels: their biases, prepared multipliers and raw
/// maxima live in small stack arrays.
pub(super) const CH_BLOCK: usize = 16;

/// Decoded output stage of one block of channels.
pub(super) struct Block {
    pub(super) bias: [i32; CH_BLOCK],
    pub(super) rq: [Prepared; CH_BLOCK],
    /// First channel and channel count of the decoded block (`usize::MAX`: none yet).
    pub(super) start: usize,
    pub(super) len: usize,
    pub(super) max: [i32; CH_BLOCK],
}

impl Block {
    pub(super) fn new() -> Block {
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
    pub(super) fn load(&mut self, st: &Stage, start: usize, len: usize) {
        if self.start == start && self.len == len {
            return;
        }
        let chs = st.channels().skip(start).take(len.min(CH_BLOCK));
        for ((b, r), (bias, rq)) in self.bias.iter_mut().zip(self.rq.iter_mut()).zip(chs) {
            *b = bias;
            *r = st.prepare(rq);
        }
        self.start = start;
        self.len = len;
    }
}

/// The pooled channels' requantization of one block with TensorFlow Lite's rounding.
#[inline(never)]
pub(super) fn requant_double(
    block: &mut [i8],
    max: &[i32],
    rq: &[Prepared],
    st: &Stage,
    first: bool,
) {
    for ((o, &mi), &rq) in block.iter_mut().zip(max).zip(rq) {
        let v = rq.to_i8_double(mi, st.zero_point, st.act_min, st.act_max);
        if first || v > *o {
            *o = v;
        }
    }
}
