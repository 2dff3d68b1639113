//! Integer requantization: the one function every kernel uses to go from an int32 accumulator
//! back to int8, plus the float edges (quantize an input, dequantize an output).
//!
//! A real multiplier `M` (e.g. `input_scale * weight_scale / output_scale`) is stored as a Q31
//! `multiplier` in `[2^30, 2^31)` and a power-of-two `shift`: `M = multiplier * 2^(shift - 31)`.
//!
//! **Rounding: single rounding, half away from zero.** `apply(acc)` computes the exact product
//! `acc * multiplier` in 64 bits and divides by `2^(31 - shift)` once, rounding ties away from
//! zero. TFLite rounds twice (a doubling high multiply, then a rounding shift), which can differ
//! from the exact answer by one LSB at ties; we chose the exactly-rounded result because it is
//! what a naive reference computes, so "fast kernel == reference" is a bit-for-bit statement.
//! The product needs a 32x32->64 multiply (one `SMULL` on Cortex-M4).

use serde::{Deserialize, Serialize};

/// How a model's requantizations round, recorded in the blob ([`crate::ModelDef::rounding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Rounding {
    /// This project's exports: the exact product `acc * multiplier`, rounded once, ties away
    /// from zero ([`Requant::apply`]).
    #[default]
    Single,
    /// TensorFlow Lite's default (its reference kernels, TensorFlow Lite Micro, CMSIS-NN):
    /// `SaturatingRoundingDoublingHighMul` (ties up) then `RoundingDivideByPOT` (ties away
    /// from zero) ([`Requant::apply_double`]). Imported `.tflite` models use it.
    Double,
}

/// Fixed-point multiplier: `real = multiplier * 2^(shift - 31)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Requant {
    /// Q31 mantissa in `[2^30, 2^31)`, or 0 for a channel whose real multiplier is 0.
    pub multiplier: i32,
    /// Power of two, in `[-31, 30]`.
    pub shift: i32,
}

/// Smallest accepted shift: `2^(shift-31)` must keep the total right shift below 63.
pub const MIN_SHIFT: i32 = -31;
/// Largest accepted shift: the total right shift stays at least 1 (rounding needs a half).
pub const MAX_SHIFT: i32 = 30;

impl Requant {
    /// `[m, 2^(e-1), e]` of [`Prepared::double_small`]'s one-multiply form (a right shift `e =
    /// -shift` in `1..=31`), for kernels that requantize in their own code:
    /// `x = (2 acc m + 2^31) >> 32`, then `(x + 2^(e-1) + (x >> 31)) >> e`. `None` for other
    /// shifts, which keep the general form. Only for [`Rounding::Double`] and `|acc| < 2^30`.
    pub fn double_small_parts(self) -> Option<[i32; 3]> {
        (-31..=-1)
            .contains(&self.shift)
            .then(|| [self.multiplier, 1 << (-self.shift - 1), -self.shift])
    }

    /// Encodes a non-negative real multiplier. `None` if it is negative, not finite, or too
    /// large or small for the accepted shift range.
    pub fn from_real(real: f64) -> Option<Requant> {
        if !real.is_finite() || real < 0.0 {
            return None;
        }
        if real == 0.0 {
            return Some(Requant {
                multiplier: 0,
                shift: 0,
            });
        }
        let (mantissa, exp) = libm::frexp(real); // real = mantissa * 2^exp, mantissa in [0.5, 1)
        let mut q = libm::round(mantissa * (1i64 << 31) as f64) as i64;
        let mut shift = exp;
        if q == 1i64 << 31 {
            q /= 2;
            shift += 1;
        }
        if !(MIN_SHIFT..=MAX_SHIFT).contains(&shift) {
            return None;
        }
        Some(Requant {
            multiplier: q as i32,
            shift,
        })
    }

    /// The real number this multiplier stands for.
    pub fn to_real(self) -> f64 {
        self.multiplier as f64 * libm::pow(2.0, (self.shift - 31) as f64)
    }

    /// True if the fields are in the range `apply` is defined for.
    pub fn is_valid(self) -> bool {
        (self.multiplier == 0 || self.multiplier >= 1 << 30)
            && (MIN_SHIFT..=MAX_SHIFT).contains(&self.shift)
    }

    /// `round(acc * real)`, ties away from zero, saturated to i32. Requires `is_valid()`.
    ///
    /// With `p = acc * multiplier` and `t = 31 - shift`, the answer is `floor((p + h) / 2^t)`
    /// for `p >= 0` and `-floor((h - p) / 2^t)` for `p < 0` (`h = 2^(t-1)`). The second equals
    /// `floor((p - 1 + h) / 2^t)`, so both are `(p + (p >> 63) + h) >> t`: branch-free. For the
    /// usual `t >= 33` (multiplier below 1/2) only the high word matters:
    /// `floor((hi * 2^32 + lo + h) / 2^t) = (hi + 2^(t-33)) >> (t - 32)` because `lo < 2^32`
    /// cannot carry past a multiple of `2^(t-32)` once `h` is a multiple of `2^32`. That is a
    /// 32-bit add and shift after one SMULL on a Cortex-M4. The proptest below checks every
    /// path against exact i128 arithmetic.
    #[inline(always)]
    pub fn apply(self, acc: i32) -> i32 {
        let t = (31 - self.shift) as u32; // 1..=62 for valid values
        let p = acc as i64 * self.multiplier as i64; // |p| < 2^62: no overflow
        let r = p + (p >> 63);
        if t >= 33 {
            let hi = (r >> 32) as i32; // |hi| < 2^30
            (hi + (1 << (t - 33))) >> (t - 32)
        } else {
            let q = (r + (1i64 << (t - 1))) >> t;
            q.clamp(i32::MIN as i64, i32::MAX as i64) as i32
        }
    }

    /// Whether requantizing with this multiplier never reverses the order of two
    /// accumulators, so that a max-pool may take the max before it: always with single
    /// rounding (an exact product); with TensorFlow Lite's double rounding only without a left
    /// shift (`shift <= 0`), since its left shift wraps as the C++ does.
    pub fn is_monotonic(self, rounding: Rounding) -> bool {
        rounding == Rounding::Single || self.shift <= 0
    }

    /// TensorFlow Lite's `MultiplyByQuantizedMultiplier(acc, multiplier, shift)` with its
    /// default double rounding: a left shift for `shift > 0` (wrapping, as the C++ does), then
    /// `SaturatingRoundingDoublingHighMul` = `floor((p + 2^30) / 2^31)` for `p = x * m` (its
    /// nudge and truncating division round ties up, for either sign), then
    /// `RoundingDivideByPOT(., -shift)`, ties away from zero. Defined for any multiplier in
    /// `[0, 2^31)` and shift in `[-31, 30]`; the proptest below checks it against a literal
    /// transcription of gemmlowp's code.
    #[inline(always)]
    pub fn apply_double(self, acc: i32) -> i32 {
        let (left, right) = if self.shift > 0 {
            (self.shift as u32, 0)
        } else {
            (0, self.shift.unsigned_abs())
        };
        // The one saturating case of the high multiply (x = m = i32::MIN) needs m < 0, which
        // no valid value has. RoundingDivideByPOT as gemmlowp writes it, in 32 bits: the
        // remainder against half the divisor (one more for a negative dividend, so negative
        // ties go down).
        double_right(acc.wrapping_shl(left.min(31)), self.multiplier, right)
    }

    /// [`apply`](Self::apply) or [`apply_double`](Self::apply_double).
    #[inline(always)]
    pub fn apply_with(self, rounding: Rounding, acc: i32) -> i32 {
        match rounding {
            Rounding::Single => self.apply(acc),
            Rounding::Double => self.apply_double(acc),
        }
    }

    /// [`to_i8`](Self::to_i8) with the model's rounding.
    #[inline(always)]
    pub fn to_i8_with(
        self,
        rounding: Rounding,
        acc: i32,
        zero_point: i32,
        act_min: i32,
        act_max: i32,
    ) -> i8 {
        offset_clamp(self.apply_with(rounding, acc), zero_point, act_min, act_max)
    }

    /// Requantize an accumulator to int8: `clamp(apply(acc) + zero_point, act_min, act_max)`.
    /// The clamp is where a fused ReLU (or ReLU6) lives.
    #[inline(always)]
    pub fn to_i8(self, acc: i32, zero_point: i32, act_min: i32, act_max: i32) -> i8 {
        offset_clamp(self.apply(acc), zero_point, act_min, act_max)
    }
}

/// `clamp(v + zero_point, act_min, act_max)` as int8: the end of every requantization.
#[inline(always)]
fn offset_clamp(v: i32, zero_point: i32, act_min: i32, act_max: i32) -> i8 {
    // max/min rather than clamp: clamp checks min <= max at run time (validated at load).
    v.saturating_add(zero_point).max(act_min).min(act_max) as i8
}

/// `(a * b + 2^31) >> 32`, SMMULR on the DSP extension.
#[inline(always)]
fn rounding_high_mul(a: i32, b: i32) -> i32 {
    ((a as i64 * b as i64 + (1 << 31)) >> 32) as i32
}

/// A [`Requant`] prepared for many accumulators (a kernel's per-channel table): the usual
/// case, a total right shift `t = 31 - shift >= 33`, becomes one 32x32->64 multiply, a
/// round-constant add and a 32-bit shift (see [`Requant::apply`]); other multipliers keep the
/// general path, and so does [`Rounding::Double`]. Same result as `apply` (or `apply_double`),
/// bit for bit. Twelve bytes: the double rounding is a tag on the general path's shift, so the
/// fast path's table is no larger than before it existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prepared {
    multiplier: i32,
    /// `2^(t - 33)` on the fast path; on the general path the original shift, plus
    /// [`DOUBLE_TAG`] for [`Rounding::Double`].
    add: i32,
    /// `t - 32 >= 1` on the fast path; 0 selects the general path.
    shift: u32,
}

/// Added to a general-path shift (in `[-31, 30]`) to mark TensorFlow Lite's double rounding.
const DOUBLE_TAG: i32 = 1 << 8;

impl Prepared {
    /// Requires `rq.is_valid()`. [`Rounding::Double`] always takes the general path.
    #[inline(always)]
    pub fn new(rq: Requant, rounding: Rounding) -> Prepared {
        let t = (31 - rq.shift) as u32;
        match rounding {
            Rounding::Single if t >= 33 => Prepared {
                multiplier: rq.multiplier,
                add: 1 << (t - 33),
                shift: t - 32,
            },
            Rounding::Single => Prepared {
                multiplier: rq.multiplier,
                add: rq.shift,
                shift: 0,
            },
            Rounding::Double => Prepared::double(rq),
        }
    }

    /// [`Rounding::Double`]: the right shift `e = min(-shift, 31)` ready for the kernels' fast
    /// path, or a left shift for the general path, tagged apart. Out of line, so the single
    /// rounding's callers keep their code as it was.
    #[inline(never)]
    pub fn double(rq: Requant) -> Prepared {
        Prepared {
            multiplier: rq.multiplier,
            add: if rq.shift <= 0 {
                DOUBLE_TAG + rq.shift.unsigned_abs().min(31) as i32
            } else {
                2 * DOUBLE_TAG + rq.shift
            },
            shift: 0,
        }
    }

    /// [`Rounding::Double`] for a layer whose accumulators all satisfy `|acc| < 2^30` (its
    /// biases and tap count bound them so: `Stage::small_acc`). With a right shift `e >= 1`
    /// the two roundings become one rounding high multiply of `2 * acc` (exact, as `|2 acc| <
    /// 2^31`: SMMULR on the DSP) and one add-and-shift that rounds half away from zero, equal
    /// bit for bit to [`apply_double`](Self::apply_double) of [`double`](Self::double)'s form,
    /// which other shifts keep. Only for [`apply_double`](Self::apply_double) and
    /// [`to_i8_double`](Self::to_i8_double), and only for such accumulators.
    #[inline(always)]
    pub fn double_small(rq: Requant) -> Prepared {
        match rq.double_small_parts() {
            Some([multiplier, add, shift]) => Prepared {
                multiplier,
                add,
                shift: shift as u32,
            },
            None => Prepared::double(rq),
        }
    }

    /// Equal to `Requant::to_i8_with(Rounding::Double, ..)` of the multiplier it was made from
    /// with [`Rounding::Double`] (a kernel that knows the model's rounding calls this one
    /// directly, inline, instead of [`to_i8`](Self::to_i8)'s out-of-line general path).
    #[inline(always)]
    pub fn to_i8_double(self, acc: i32, zero_point: i32, act_min: i32, act_max: i32) -> i8 {
        offset_clamp(self.apply_double(acc), zero_point, act_min, act_max)
    }

    /// The requantized accumulator of a [`Rounding::Double`] multiplier (equal to
    /// `Requant::apply_double`), inline for the kernels.
    #[inline(always)]
    pub fn apply_double(self, acc: i32) -> i32 {
        if self.shift != 0 {
            // `double_small`'s form: `x = (2 acc m + 2^31) >> 32` is SaturatingRoundingDoubling
            // HighMul's `(acc m + 2^30) >> 31`; `(x + 2^(e-1) - (x < 0)) >> e` is
            // RoundingDivideByPOT (ties away from zero); no term overflows for |acc| < 2^30.
            let x = rounding_high_mul(acc.wrapping_shl(1), self.multiplier);
            return (x + self.add + (x >> 31)) >> self.shift;
        }
        let e = (self.add - DOUBLE_TAG) as u32;
        if e < 32 {
            // SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT(., e) with the
            // shift already clamped at load: the remainder against half the divisor, one
            // more for a negative dividend.
            let p = acc as i64 * self.multiplier as i64;
            let x = ((p + (1 << 30)) >> 31) as i32;
            let mask = ((1u32 << e) - 1) as i32;
            let threshold = (mask >> 1) + (x >> 31 & 1);
            (x >> e) + i32::from(x & mask > threshold)
        } else {
            apply_general(self.multiplier, self.add, acc)
        }
    }

    /// Equal to `Requant::to_i8` of the multiplier it was made from.
    #[inline(always)]
    pub fn to_i8(self, acc: i32, zero_point: i32, act_min: i32, act_max: i32) -> i8 {
        offset_clamp(self.apply(acc), zero_point, act_min, act_max)
    }

    /// Equal to `Requant::apply` of the multiplier it was made from.
    #[inline(always)]
    pub fn apply(self, acc: i32) -> i32 {
        if self.shift != 0 {
            let p = acc as i64 * self.multiplier as i64;
            let hi = ((p + (p >> 63)) >> 32) as i32; // |hi| < 2^30
            (hi + self.add) >> self.shift
        } else {
            apply_general(self.multiplier, self.add, acc)
        }
    }
}

/// [`Requant::apply_double`] for a multiplier below one (`shift <= 0`, no left shift): the
/// doubling high multiply as one 64-bit add and shift, then `RoundingDivideByPOT(., right)`.
#[inline(always)]
fn double_right(acc: i32, multiplier: i32, right: u32) -> i32 {
    let p = acc as i64 * multiplier as i64;
    rounding_divide_by_pot(((p + (1 << 30)) >> 31) as i32, right)
}

/// gemmlowp's `RoundingDivideByPOT(x, e)`, `e` in `0..=31` (larger is taken as 31): `x / 2^e`
/// rounded half away from zero, as gemmlowp writes it, in 32 bits: the remainder against half
/// the divisor, one more for a negative dividend.
#[inline(always)]
pub fn rounding_divide_by_pot(x: i32, e: u32) -> i32 {
    let r = e.min(31);
    let mask = ((1u32 << r) - 1) as i32;
    let threshold = (mask >> 1) + (x >> 31 & 1);
    (x >> r) + i32::from(x & mask > threshold)
}

/// [`Prepared::apply`]'s general path, out of line: the fast path stays small.
#[inline(never)]
fn apply_general(multiplier: i32, add: i32, acc: i32) -> i32 {
    if add >= DOUBLE_TAG + DOUBLE_TAG / 2 {
        Requant {
            multiplier,
            shift: add - 2 * DOUBLE_TAG,
        }
        .apply_double(acc)
    } else if add >= DOUBLE_TAG / 2 {
        // A right shift of at most 31 (the blob's may be larger; gemmlowp clamps it too).
        Requant {
            multiplier,
            shift: DOUBLE_TAG - add,
        }
        .apply_double(acc)
    } else {
        Requant {
            multiplier,
            shift: add,
        }
        .apply(acc)
    }
}

/// Per-tensor affine quantization: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QuantParams {
    pub scale: f32,
    pub zero_point: i32,
}

impl QuantParams {
    /// Float to int8, round half away from zero, saturating.
    pub fn quantize(self, x: f32) -> i8 {
        let q = libm::roundf(x / self.scale) + self.zero_point as f32;
        if q.is_nan() {
            return self.zero_point.clamp(-128, 127) as i8;
        }
        q.clamp(-128.0, 127.0) as i8
    }

    /// int8 to float.
    pub fn dequantize(self, q: i8) -> f32 {
        self.scale * (q as i32 - self.zero_point) as f32
    }

    /// Quantize a whole buffer.
    pub fn quantize_slice(self, src: &[f32], dst: &mut [i8]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = self.quantize(s);
        }
    }

    /// Dequantize a whole buffer.
    pub fn dequantize_slice(self, src: &[i8], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = self.dequantize(s);
        }
    }
}

/// Index of the largest value; the first one wins ties. `None` for an empty slice.
pub fn argmax(values: &[i8]) -> Option<usize> {
    let mut best: Option<(usize, i8)> = None;
    for (i, &v) in values.iter().enumerate() {
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact answers worked out by hand: multiplier 2^30 with shift 0 is exactly 0.5, so every
    /// odd accumulator lands on a tie.
    #[test]
    fn ties_round_half_away_from_zero() {
        let half = Requant {
            multiplier: 1 << 30,
            shift: 0,
        };
        let table: &[(i32, i32)] = &[
            (0, 0),
            (1, 1),   // 0.5 -> 1
            (-1, -1), // -0.5 -> -1
            (2, 1),
            (3, 2),   // 1.5 -> 2
            (-3, -2), // -1.5 -> -2
            (5, 3),   // 2.5 -> 3 (not banker's 2)
            (-5, -3),
            (i32::MAX, 1 << 30),        // 1073741823.5 -> 1073741824
            (i32::MIN, -(1 << 30)),     // exact
            (i32::MIN + 1, -(1 << 30)), // -1073741823.5 -> -1073741824
        ];
        for &(acc, want) in table {
            assert_eq!(half.apply(acc), want, "0.5 * {acc}");
        }
        // 0.25: ties at acc = 2 mod 4, and values just off the tie.
        let quarter = Requant {
            multiplier: 1 << 30,
            shift: -1,
        };
        let table: &[(i32, i32)] = &[(1, 0), (2, 1), (3, 1), (-1, 0), (-2, -1), (-3, -1), (6, 2)];
        for &(acc, want) in table {
            assert_eq!(quarter.apply(acc), want, "0.25 * {acc}");
        }
        // 0.75 = 3 * 2^30 / 2^32: 0.75 * 2 = 1.5 -> 2; 0.75 * -2 = -1.5 -> -2.
        let three_q = Requant {
            multiplier: 3 << 29,
            shift: 0,
        };
        assert_eq!(three_q.apply(2), 2);
        assert_eq!(three_q.apply(-2), -2);
        assert_eq!(three_q.apply(1), 1); // 0.75 -> 1
        assert_eq!(three_q.apply(-1), -1);
        // 0.125 (t = 33, the high-word path): ties at multiples of 4.
        let eighth = Requant {
            multiplier: 1 << 30,
            shift: -2,
        };
        let table: &[(i32, i32)] = &[
            (4, 1),
            (-4, -1),
            (12, 2),
            (-12, -2),
            (3, 0),
            (-3, 0),
            (5, 1),
            (-5, -1),
        ];
        for &(acc, want) in table {
            assert_eq!(eighth.apply(acc), want, "0.125 * {acc}");
        }
        // Smallest multiplier (t = 62): 2^30 * 2^-62 = 2^-32; 2^31 - 1 times it rounds to 0 or 1.
        let tiny = Requant {
            multiplier: 1 << 30,
            shift: -31,
        };
        assert_eq!(tiny.apply(i32::MAX), 0); // 0.49999...
        assert_eq!(tiny.apply(i32::MIN), -1); // -0.5 exactly: away from zero
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let big = Requant {
            multiplier: i32::MAX,
            shift: 30,
        }; // ~2^30
        assert_eq!(big.apply(1 << 20), i32::MAX);
        assert_eq!(big.apply(-(1 << 20)), i32::MIN);
    }

    #[test]
    fn from_real_round_trips() {
        for &r in &[
            1.0e-6,
            0.00392157,
            0.0123,
            0.5,
            0.75,
            0.999_999_99,
            1.0,
            3.3,
            1000.0,
        ] {
            let q = Requant::from_real(r).unwrap();
            assert!(q.is_valid(), "{r}: {q:?}");
            assert!(
                (q.to_real() - r).abs() <= r * 1e-9,
                "{r} -> {}",
                q.to_real()
            );
        }
        assert_eq!(
            Requant::from_real(0.0),
            Some(Requant {
                multiplier: 0,
                shift: 0
            })
        );
        assert_eq!(Requant::from_real(-1.0), None);
        assert_eq!(Requant::from_real(f64::NAN), None);
        assert_eq!(Requant::from_real(1e-30), None);
    }

    #[test]
    fn quantize_edges() {
        let q = QuantParams {
            scale: 1.0 / 255.0,
            zero_point: -128,
        };
        assert_eq!(q.quantize(0.0), -128);
        assert_eq!(q.quantize(1.0), 127);
        assert_eq!(q.quantize(2.0), 127);
        assert_eq!(q.quantize(f32::NAN), -128);
        assert_eq!(q.dequantize(-128), 0.0);
        assert_eq!(argmax(&[1, 5, 5, -3]), Some(1));
        assert_eq!(argmax(&[]), None);
    }

    use crate::kernels::reference::tflite_mbqm;

    /// Ties worked by hand: 0.5 = 2^30 * 2^-31 with shift 0 (only the doubling high multiply
    /// rounds: ties up), and 0.25 with shift -1 (the second rounding: ties away from zero).
    #[test]
    fn double_rounding_ties() {
        let half = Requant {
            multiplier: 1 << 30,
            shift: 0,
        };
        for (acc, want) in [(1, 1), (-1, 0), (3, 2), (-3, -1), (5, 3), (-5, -2)] {
            assert_eq!(half.apply_double(acc), want, "0.5 * {acc}");
            assert_eq!(tflite_mbqm(acc, 1 << 30, 0), want);
        }
        // 0.25 = 2^30 * 2^-31 * 2^-1: the high multiply halves (ties up), then the shift halves
        // again (ties away from zero). 0.25 * 1 = 0.25 comes out 1 (0.5 -> 1, 0.5 -> 1): the
        // double-rounding error the exact answer 0 does not have; -1 gives 0 (-0.5 -> 0).
        let quarter = Requant {
            multiplier: 1 << 30,
            shift: -1,
        };
        for (acc, want) in [(1, 1), (-1, 0), (2, 1), (-2, -1), (3, 1), (-3, -1), (6, 2)] {
            assert_eq!(quarter.apply_double(acc), want, "0.25 * {acc}");
            assert_eq!(tflite_mbqm(acc, 1 << 30, -1), want);
        }
        assert_eq!(quarter.apply(1), 0);
        assert_eq!(half.apply(-1), -1);
    }

    /// `(acc, multiplier, shift)` with `acc * multiplier = odd * 2^(t - 1)`, `t = 31 - shift`:
    /// `acc = odd_a * 2^e` and `multiplier = odd_m * 2^c` in `[2^30, 2^31)` with `e + c = t - 1`.
    fn exact_tie() -> impl proptest::strategy::Strategy<Value = (i32, i32, i32)> {
        use proptest::prelude::*;
        (
            MIN_SHIFT..=MAX_SHIFT,
            0u32..=30,
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
        )
            .prop_filter_map("a tie within i32", |(shift, c, ms, a_s, neg)| {
                let t = (31 - shift) as u32;
                let e = (t - 1).checked_sub(c).filter(|&e| e <= 30)?;
                let lo = 1u64 << (30 - c); // odd_m in [lo, 2 lo)
                let om = (lo + u64::from(ms) % lo) | 1;
                let m = (om << c) as i64;
                let amax = 1u64 << (31 - e); // odd_a < 2^(31 - e): acc fits
                let oa = (u64::from(a_s) % amax) | 1;
                let acc = (oa << e) as i64;
                ((1i64 << 30)..(1i64 << 31)).contains(&m).then_some((
                    if neg { -acc } else { acc } as i32,
                    m as i32,
                    shift,
                ))
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        /// `apply` equals the exactly rounded quotient computed in i128.
        #[test]
        fn apply_matches_i128(acc: i32, m in (1i32 << 30)..=i32::MAX, shift in MIN_SHIFT..=MAX_SHIFT) {
            let r = Requant { multiplier: m, shift };
            proptest::prop_assert_eq!(Prepared::new(r, Rounding::Single).apply(acc), r.apply(acc));
            proptest::prop_assert_eq!(
                Prepared::new(r, Rounding::Double).apply(acc),
                r.apply_double(acc)
            );
            let num = acc as i128 * m as i128;
            let den = 1i128 << (31 - shift);
            let q = num.abs() / den;
            let rem = num.abs() % den;
            let mut q = if 2 * rem >= den { q + 1 } else { q };
            if num < 0 { q = -q; }
            let want = q.clamp(i32::MIN as i128, i32::MAX as i128) as i32;
            proptest::prop_assert_eq!(r.apply(acc), want);
        }

        /// Exact ties, where rounding modes differ and random draws almost never land:
        /// `acc * m = odd * 2^(t - 1)` with `t = 31 - shift`, both signs. Single rounding goes
        /// away from zero (one more in magnitude than the truncated quotient), on every path;
        /// double rounding is TensorFlow Lite's code.
        #[test]
        fn ties_round_as_each_mode_says((acc, m, shift) in exact_tie()) {
            let r = Requant { multiplier: m, shift };
            let t = 31 - shift;
            let num = acc as i128 * m as i128;
            proptest::prop_assert_eq!(num.abs() % (1i128 << t), 1i128 << (t - 1), "not a tie");
            let away = (num.abs() >> t) + 1;
            let want = if num < 0 { -away } else { away };
            let want = want.clamp(i32::MIN as i128, i32::MAX as i128) as i32;
            proptest::prop_assert_eq!(r.apply(acc), want);
            proptest::prop_assert_eq!(Prepared::new(r, Rounding::Single).apply(acc), want);
            proptest::prop_assert_eq!(r.apply_double(acc), tflite_mbqm(acc, m, shift));
            proptest::prop_assert_eq!(
                Prepared::new(r, Rounding::Double).apply(acc),
                tflite_mbqm(acc, m, shift)
            );
            // The kernels' inline path.
            proptest::prop_assert_eq!(
                Prepared::new(r, Rounding::Double).apply_double(acc),
                tflite_mbqm(acc, m, shift)
            );
        }

        /// `apply_double` equals TensorFlow Lite's code for every multiplier `[0, 2^31)` (the
        /// mean's rescaled multipliers go below 2^30) and every shift.
        #[test]
        fn apply_double_matches_tflite(acc: i32, m in 0i32..=i32::MAX, shift in MIN_SHIFT..=MAX_SHIFT) {
            let r = Requant { multiplier: m, shift };
            proptest::prop_assert_eq!(r.apply_double(acc), tflite_mbqm(acc, m, shift));
            let p = Prepared::new(r, Rounding::Double);
            proptest::prop_assert_eq!(p.apply_double(acc), tflite_mbqm(acc, m, shift));
            proptest::prop_assert_eq!(p.apply(acc), tflite_mbqm(acc, m, shift));
        }

        /// `double_small`'s one-multiply form equals TensorFlow Lite's code for every
        /// accumulator it is made for (`|acc| < 2^30`), every multiplier and every shift.
        #[test]
        fn double_small_matches_tflite(
            acc in -(1i32 << 30) + 1..(1i32 << 30),
            m in 0i32..=i32::MAX,
            shift in MIN_SHIFT..=MAX_SHIFT,
        ) {
            let r = Requant { multiplier: m, shift };
            let p = Prepared::double_small(r);
            proptest::prop_assert_eq!(p.apply_double(acc), tflite_mbqm(acc, m, shift));
            proptest::prop_assert_eq!(
                p.to_i8_double(acc, -5, -128, 127),
                r.to_i8_with(Rounding::Double, acc, -5, -128, 127)
            );
        }

        /// Ties of the second rounding (RoundingDivideByPOT), where away-from-zero and
        /// half-up differ: with `m = 2^30` the high multiply gives `x = floor((acc + 1) / 2)`,
        /// so `acc = 2x - 1` and `2x` for `x = odd * 2^(e - 1)`, both signs.
        #[test]
        fn double_small_rounds_ties_as_tflite(
            odd in 0i32..(1 << 8),
            e in 1u32..=21,
            negative: bool,
            lower: bool,
        ) {
            let x = (2 * odd + 1) << (e - 1);
            let x = if negative { -x } else { x };
            let acc = if lower { 2 * x - 1 } else { 2 * x };
            let r = Requant { multiplier: 1 << 30, shift: -(e as i32) };
            proptest::prop_assert_eq!(
                Prepared::double_small(r).apply_double(acc),
                tflite_mbqm(acc, 1 << 30, -(e as i32))
            );
        }
    }
}
