//! int8 kernels: int8 in, int8 out, int32 accumulators, per-channel requantization through
//! [`crate::quant::Requant`]. Layouts: activations NHWC (batch 1), conv weights OHWI.
//!
//! **Why the int32 accumulator cannot overflow:** every term is `(x - zp_in) * w` with
//! `|x - zp_in| <= 255` and `|w| <= 128` (a blob may hold -128), so `|term| <= 32,640`; a
//! kernel that sums `x * w` and `zp_in * w` apart has partial sums of at most `16,384` per
//! term each. Model validation limits a kernel's taps (`kh * kw * in_c`, or `in_features`) to
//! [`MAX_TAPS`] = 16,384 and each bias to [`max_bias`]`(taps) = 2^31 - 1 - taps * 32,768`, so
//! the bias plus any partial sum stays within `i32`. Converters write such biases: MLPerf
//! Tiny's visual wake words model has `2^30 + 128` on output channels whose weights are all
//! zero.
//!
//! Each kernel has a naive i64 reference in [`reference`] (test and `std` builds) and a
//! proptest that compares the two bit for bit; the fuzz targets compare whole models.

pub(crate) mod add;
pub(crate) mod concat;
pub(crate) mod conv;
pub mod dsp;
pub(crate) mod fc;
pub(crate) mod pool;
pub(crate) mod prepare;
#[cfg(any(test, feature = "std"))]
pub mod reference;
pub(crate) mod softmax;

pub use add::{add, at_most_half, AddParams, ADD_LEFT_SHIFT};
pub use concat::concat_channels;
pub use conv::{conv2d, conv2d_scratch_words, depthwise_conv2d, ConvGeom, PATCH_MAX_TAPS};
pub use fc::fully_connected;
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d, mean, MeanParams, PoolGeom};
pub use softmax::{softmax, MAX_SOFTMAX_CHANNELS};

use crate::format::REQUANT_BYTES;
use crate::quant::{Requant, Rounding};

/// Most multiply-accumulates feeding one accumulator (see the module doc).
pub const MAX_TAPS: usize = 16_384;
/// A bias magnitude every layer accepts (`max_bias(MAX_TAPS)` is larger); this project's
/// exporter stays below it.
pub const MAX_BIAS: i32 = 1 << 30;

/// Largest bias magnitude of a layer with `taps` terms per accumulator (`taps <= MAX_TAPS`;
/// more saturates to 0): with it, `bias + sum` cannot leave `i32` (see the module doc).
pub const fn max_bias(taps: usize) -> i32 {
    if taps > MAX_TAPS {
        return 0;
    }
    (i32::MAX as i64 - taps as i64 * 32_768) as i32
}

/// Bias, requantization, zero point and clamp of one layer, read from the blob's byte arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage<'a> {
    pub bias: &'a [u8],
    pub requant: &'a [u8],
    pub zero_point: i32,
    pub act_min: i32,
    pub act_max: i32,
    /// The model's rounding.
    pub rounding: Rounding,
}

impl Stage<'_> {
    /// Bias and multiplier of output channel `c` (validated to exist at load time).
    #[inline(always)]
    pub fn channel(&self, c: usize) -> (i32, Requant) {
        decode_channel(
            &self.bias[4 * c..4 * c + 4],
            &self.requant[8 * c..8 * c + 8],
        )
    }

    /// `(bias, multiplier)` of every output channel in order, without per-channel bounds checks.
    #[inline(always)]
    pub fn channels(&self) -> Channels<'_> {
        Channels::new(self.bias, self.requant)
    }

    #[inline(always)]
    pub fn finish(&self, acc: i32, rq: Requant) -> i8 {
        rq.to_i8_with(
            self.rounding,
            acc,
            self.zero_point,
            self.act_min,
            self.act_max,
        )
    }

    /// [`finish`](Self::finish) with a multiplier prepared once for many accumulators.
    #[inline(always)]
    pub fn finish_prepared(&self, acc: i32, rq: crate::quant::Prepared) -> i8 {
        rq.to_i8(acc, self.zero_point, self.act_min, self.act_max)
    }
}

/// Iterator over `(bias, multiplier)` per output channel (see [`Stage::channels`]). A plain
/// struct rather than a `map` over a `zip`: the compiler inlines it into the kernels.
#[derive(Clone)]
pub struct Channels<'a> {
    bias: core::slice::ChunksExact<'a, u8>,
    requant: core::slice::ChunksExact<'a, u8>,
}

impl<'a> Channels<'a> {
    /// Over a layer's bias bytes (i32 LE per channel) and requantization bytes
    /// ([`REQUANT_BYTES`] per channel); stops at the shorter.
    pub fn new(bias: &'a [u8], requant: &'a [u8]) -> Channels<'a> {
        Channels {
            bias: bias.chunks_exact(4),
            requant: requant.chunks_exact(REQUANT_BYTES),
        }
    }
}

/// The one reader of the blob's per-channel bytes: bias `b` (i32 LE) and requantization `r`
/// (multiplier i32 LE, shift i32 LE). Slices shorter than 4 and 8 bytes read as zeros.
#[inline(always)]
pub fn decode_channel(b: &[u8], r: &[u8]) -> (i32, Requant) {
    let word = |x: &[u8], at: usize| {
        let mut w = [0u8; 4];
        if let Some(v) = x.get(at..at + 4) {
            w.copy_from_slice(v);
        }
        i32::from_le_bytes(w)
    };
    (
        word(b, 0),
        Requant {
            multiplier: word(r, 0),
            shift: word(r, 4),
        },
    )
}

impl Iterator for Channels<'_> {
    type Item = (i32, Requant);
    #[inline(always)]
    fn next(&mut self) -> Option<(i32, Requant)> {
        let b = self.bias.next()?;
        let r = self.requant.next()?;
        Some(decode_channel(b, r))
    }
}
