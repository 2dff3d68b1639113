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
pub(crate) mod conv_base;
pub(crate) mod conv_patch;
pub(crate) mod depthwise;
pub(crate) mod dsp;
pub(crate) mod dw3_run;
pub(crate) mod dw_plane;
pub(crate) mod fc;
pub(crate) mod fc_run;
pub(crate) mod gather;
pub(crate) mod patch_run;
pub(crate) mod pool;
pub(crate) mod prepare;
#[cfg(any(test, feature = "std"))]
pub mod reference;
pub(crate) mod softmax;
pub(crate) mod step;

pub use add::{add, at_most_half, AddParams, ADD_LEFT_SHIFT};
pub use concat::concat_channels;
pub use conv::{conv2d, ConvPlan};
pub use conv_base::ConvGeom;
pub use conv_patch::{conv2d_scratch_words, PATCH_MAX_TAPS};
pub use depthwise::depthwise_conv2d;
pub use fc::{fully_connected, FcPlan};
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d, mean, MeanParams, PoolGeom};
pub use softmax::{softmax, MAX_SOFTMAX_CHANNELS};
pub use step::{Step, WORK_PER_OUTPUT};

/// int8 view of blob or arena bytes.
pub(crate) fn as_i8(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(b)
}

pub use crate::format::{decode_channel, Channels};
use crate::quant::{Prepared, Requant, Rounding};

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

/// The largest right shift `e` of the depthwise runs' [`Stage::ssat_form`]: the output zero
/// point `zp` rides in the rounding constant, `(x + 2^(e-1) + (zp << e) + (acc >> 31)) >> e`,
/// which stays below 2^31 for `|x| < 2^30` and `|zp| 2^e <= 2^29`.
pub const SSAT_MAX_SHIFT: i32 = 22;

/// An accumulator requantized in the SSAT form ([`Stage::ssat_form`]) with `[m, add, e]`
/// from [`Stage::ssat_parts`] (`|acc| < 2^30`): `x = (2 acc m + 2^31) >> 32`, `(x + add + (acc
/// >> 31)) >> e`, plus the output zero point `zp`, saturated to int8. The Rust form of what the
/// DSP loops do in their own code (`SMMLAR` gives `x + add` in one instruction).
///
/// TensorFlow Lite rounds with the sign of `x`; the sign of `acc` is the same byte: a valid
/// multiplier is not negative, so `x` has the sign of `acc` or is 0, and for `x = 0` both
/// `(add - 1) >> e` and `add >> e` are 0 (`add = 2^(e-1)`, or that plus `zp 2^e`).
#[inline(always)]
pub fn ssat_requant(acc: i32, [m, add, e]: [i32; 3], zp: i32) -> i8 {
    let x = ((acc.wrapping_mul(2) as i64 * m as i64 + (1 << 31)) >> 32) as i32;
    (((x + add + (acc >> 31)) >> e) + zp).clamp(-128, 127) as i8
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
    /// Every accumulator of the layer satisfies `|acc| < 2^30` ([`small_acc`]), so
    /// [`Rounding::Double`] takes [`Prepared::double_small`]'s one-multiply form. Private:
    /// only [`Stage::new`] (or the loader) sets it, from the biases themselves.
    pub(crate) small_acc: bool,
}

/// Whether every accumulator of a layer with these biases (i32 LE) and `taps` terms each
/// satisfies `|acc| < 2^30`: `max |bias| + taps * 255 * 128` (the largest `|x - zp|` times the
/// largest `|w|`) below it.
pub fn small_acc(bias: &[u8], taps: usize) -> bool {
    let max_bias = bias
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]).unsigned_abs() as u64)
        .max()
        .unwrap_or(0);
    let terms = (taps as u64).saturating_mul(255 * 128);
    max_bias.saturating_add(terms) < 1 << 30
}

impl<'a> Stage<'a> {
    /// A stage over a layer's bias bytes (i32 LE per channel) and requantization bytes with
    /// `taps` terms per accumulator.
    pub fn new(
        bias: &'a [u8],
        requant: &'a [u8],
        (zero_point, act_min, act_max): (i32, i32, i32),
        rounding: Rounding,
        taps: usize,
    ) -> Stage<'a> {
        Stage {
            bias,
            requant,
            zero_point,
            act_min,
            act_max,
            rounding,
            small_acc: small_acc(bias, taps),
        }
    }
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

    /// `rq` prepared for many accumulators of this layer, in the model's rounding.
    #[inline(always)]
    pub fn prepare(&self, rq: Requant) -> Prepared {
        match self.rounding {
            Rounding::Single => Prepared::new(rq, Rounding::Single),
            Rounding::Double => self.prepare_double(rq),
        }
    }

    /// [`prepare`](Self::prepare) for [`Rounding::Double`]: the one-multiply form when the
    /// layer's accumulators allow it (inline; the general form is out of line).
    #[inline(always)]
    pub fn prepare_double(&self, rq: Requant) -> Prepared {
        if self.small_acc {
            Prepared::double_small(rq)
        } else {
            Prepared::double(rq)
        }
    }

    /// `[m, 2^(e-1), e]` of `rq` in the SSAT form's terms when this layer takes the
    /// one-multiply requantization (TensorFlow Lite's rounding, small accumulators): its
    /// parts ([`Requant::double_small_parts`], a right shift `e` in `1..=31`). A zero
    /// multiplier has them only with such a shift: the patch loop derives its parts from the
    /// stored shift, and with `e = 0` its rounding by the accumulator's sign would give the
    /// zero point minus one for negative sums.
    #[inline(always)]
    pub fn ssat_parts(&self, rq: Requant) -> Option<[i32; 3]> {
        if self.rounding != Rounding::Double || !self.small_acc {
            return None;
        }
        rq.double_small_parts()
    }

    /// Whether every channel of this layer takes the SSAT form of the one-multiply
    /// requantization that the DSP loops which requantize in their own code use ([`dw3_run`]
    /// with `max_shift` [`SSAT_MAX_SHIFT`], [`patch_run`] with 31): [`ssat_parts`] with a
    /// right shift up to `max_shift`, and the whole int8 range as clamp, so SSAT #8 is the
    /// clamp (TensorFlow Lite's fused ReLU at zero point -128 is that). Not on the Arm cores
    /// without the DSP extension (M0, M0+, M3), whose kernels keep their smaller frames;
    /// hosts take it, so the tests check the loops' Rust models.
    ///
    /// [`ssat_parts`]: Self::ssat_parts
    pub fn ssat_form(&self, max_shift: i32) -> bool {
        let dsp_or_host = !cfg!(target_arch = "arm") || cfg!(target_feature = "dsp");
        dsp_or_host && self.ssat_layer(max_shift)
    }

    /// [`ssat_form`](Self::ssat_form) on any target: what the layer's numbers allow, for
    /// facts that must not depend on the core, such as the scratch it plans.
    pub fn ssat_layer(&self, max_shift: i32) -> bool {
        (self.act_min, self.act_max) == (-128, 127)
            && self
                .channels()
                .all(|(_, rq)| self.ssat_parts(rq).is_some_and(|[_, _, e]| e <= max_shift))
    }

    /// [`finish`](Self::finish) with a multiplier prepared once for many accumulators.
    #[inline(always)]
    pub fn finish_prepared(&self, acc: i32, rq: crate::quant::Prepared) -> i8 {
        rq.to_i8(acc, self.zero_point, self.act_min, self.act_max)
    }
}
