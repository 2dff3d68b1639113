//! TensorFlow Lite's int8 softmax over channels, in gemmlowp fixed point, bit for bit (the
//! reference kernel TensorFlow Lite Micro runs; CMSIS-NN's `arm_softmax_s8` computes the same).
//!
//! Per pixel: differences from the row maximum are scaled by `beta * input_scale` into Q5.26,
//! `exp` of each (a degree-4 polynomial on `[-1/4, 0)` and a barrel of `exp(-2^k)` factors),
//! their sum in Q12.19, its reciprocal by Newton-Raphson, and each output
//! `exp * reciprocal / 2^(bits over unit + 23) - 128` (output scale 1/256, zero point -128).

use super::prepare::{shape, Checked, Operand};
use crate::format::Softmax;
use crate::quant::rounding_divide_by_pot as div_pow2;
use crate::Error;

/// Most channels: the sum of `exp` (each at most 1.0 = 2^19 in Q12.19) stays below 2^28, so
/// the output exponent stays at most 31, as TFLite checks (it stops on more).
pub const MAX_SOFTMAX_CHANNELS: usize = 511;

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: `round((a * b) / 2^31)`, ties up; the one
/// overflow (`i32::MIN * i32::MIN`) saturates.
#[inline(always)]
fn mul_sat(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    (((a as i64 * b as i64) + (1 << 30)) >> 31) as i32
}

/// gemmlowp's `SaturatingRoundingMultiplyByPOT<e>` for `e > 0`: a saturating left shift.
#[inline(always)]
fn mul_pow2(x: i32, e: u32) -> i32 {
    let threshold = (1i32 << (31 - e)) - 1;
    if x > threshold {
        i32::MAX
    } else if x < -threshold {
        i32::MIN
    } else {
        x << e
    }
}

/// `exp(a)` for `a <= 0` in Q5.26, result in Q0.31 (gemmlowp's `exp_on_negative_values`).
fn exp_on_negative_values(a: i32) -> i32 {
    const QUARTER: i32 = 1 << 24;
    let a_mod_quarter_minus_quarter = (a & (QUARTER - 1)) - QUARTER;
    let remainder = a_mod_quarter_minus_quarter.wrapping_sub(a);
    // exp on [-1/4, 0): Rescale to Q0.31 (a saturating << 5 that cannot saturate here), then
    // exp(-1/8) * (1 + x + x^2/2 + x^3/6 + x^4/24) around -1/8.
    let x = (a_mod_quarter_minus_quarter << 5) + (1 << 28);
    let x2 = mul_sat(x, x);
    let x3 = mul_sat(x2, x);
    let x4 = mul_sat(x2, x2);
    let x4_over_4 = div_pow2(x4, 2);
    let poly = div_pow2(mul_sat(x4_over_4 + x3, 715_827_883) + x2, 1);
    const EXP_MINUS_ONE_EIGHTH: i32 = 1_895_147_668;
    let mut result = EXP_MINUS_ONE_EIGHTH + mul_sat(EXP_MINUS_ONE_EIGHTH, x + poly);
    // exp(-2^k) for k = -2..=4, applied for each bit of the whole quarters.
    const BARREL: [i32; 7] = [
        1_672_461_947,
        1_302_514_674,
        790_015_084,
        290_630_308,
        39_332_535,
        720_401,
        242,
    ];
    for (k, &m) in BARREL.iter().enumerate() {
        if remainder & (1 << (24 + k)) != 0 {
            result = mul_sat(result, m);
        }
    }
    if a == 0 {
        i32::MAX
    } else {
        result
    }
}

/// `1 / (1 + x)` for `x` in `[0, 1)` in Q0.31 (gemmlowp's `one_over_one_plus_x_for_x_in_0_1`):
/// three Newton-Raphson steps in Q2.29 from 48/17 - 32/17 d.
fn one_over_one_plus_x(a: i32) -> i32 {
    let sum = a as i64 + i32::MAX as i64;
    let half_denominator = ((sum + if sum >= 0 { 1 } else { -1 }) / 2) as i32;
    let mut x = 1_515_870_810i32.wrapping_add(mul_sat(half_denominator, -1_010_580_540));
    const ONE_Q2_29: i32 = 1 << 29;
    for _ in 0..3 {
        let e = ONE_Q2_29.wrapping_sub(mul_sat(half_denominator, x));
        x = x.wrapping_add(mul_pow2(mul_sat(x, e), 2));
    }
    mul_pow2(x, 1)
}

/// Softmax of each pixel's `channels` values (`input.len()` is a multiple of `channels`).
#[inline(never)]
pub fn softmax(input: &[i8], channels: usize, p: &Softmax, output: &mut [i8]) {
    let left = p.input_left_shift as u32;
    let rescale = |diff: i32| mul_sat(diff << left, p.input_multiplier);
    for (x, y) in input
        .chunks_exact(channels.max(1))
        .zip(output.chunks_exact_mut(channels.max(1)))
    {
        let max = x.iter().copied().max().unwrap_or(0) as i32;
        let mut sum = 0i32;
        for &v in x {
            let diff = v as i32 - max;
            if diff >= p.diff_min {
                sum = sum.wrapping_add(div_pow2(exp_on_negative_values(rescale(diff)), 12));
            }
        }
        // GetReciprocal(sum, 12 integer bits): sum >= 1.0 (the maximum's exp), so the
        // leading-zero count is at most 12 and, with at most 511 channels, at least 4: the
        // exponent below lies in 23..=31.
        let headroom_plus_one = (sum as u32).leading_zeros();
        let bits_over_unit = 12 - headroom_plus_one as i32;
        let shifted_sum_minus_one =
            ((sum as u32) << headroom_plus_one).wrapping_sub(1 << 31) as i32;
        let scale = one_over_one_plus_x(shifted_sum_minus_one);
        let exponent = (bits_over_unit + 23).clamp(0, 31) as u32;
        for (o, &v) in y.iter_mut().zip(x) {
            let diff = v as i32 - max;
            *o = if diff >= p.diff_min {
                let e = exp_on_negative_values(rescale(diff));
                let out = div_pow2(mul_sat(scale, e), exponent) - 128;
                out.clamp(-128, 127) as i8
            } else {
                -128
            };
        }
    }
}

/// Checks a softmax: at most [`MAX_SOFTMAX_CHANNELS`] channels, a multiplier and left shift
/// that cannot overflow on any difference that reaches them.
pub(crate) fn prepare(li: u16, s: &Softmax, x: Operand) -> Result<Checked<Softmax>, Error> {
    let c = x.shape.c as usize;
    if c > MAX_SOFTMAX_CHANNELS {
        return Err(Error::BadParameter {
            layer: li,
            what: "softmax channels (> 511)",
        });
    }
    let shift_ok = (0..=31).contains(&s.input_left_shift);
    // Every difference used is in [diff_min, 0]: shifted left it must fit an i32.
    let fits = shift_ok
        && s.diff_min <= 0
        && s.diff_min >= -255
        && ((-(s.diff_min as i64)) << s.input_left_shift) <= i32::MAX as i64;
    if s.input_multiplier < 0 || !fits {
        return Err(Error::QuantOutOfRange {
            layer: li,
            what: "softmax multiplier, left shift or diff_min",
        });
    }
    Ok(Checked {
        step: *s,
        out: shape(x.shape.h as usize, x.shape.w as usize, c, li)?,
        macs: 0,
        param_bytes: 0,
        out_zp: -128,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp` and `1 / (1 + x)` against floating point: the fixed-point algorithms are accurate
    /// to a few units in the last place of Q0.31 scaled down (this would catch a wrong
    /// constant or shift, not a rounding difference: the fixtures check those).
    #[test]
    fn fixed_point_functions_track_floats() {
        for i in 0..=200 {
            let a = -(i as f64) * 0.05; // 0 down to -10
            let raw = (a * (1u64 << 26) as f64) as i32;
            let got = exp_on_negative_values(raw) as f64 / 2f64.powi(31);
            assert!((got - a.exp()).abs() < 1e-6, "exp({a}) = {got}");
        }
        for i in 0..100 {
            let x = i as f64 / 100.0;
            let raw = (x * 2f64.powi(31)) as i32;
            let got = one_over_one_plus_x(raw) as f64 / 2f64.powi(31);
            assert!((got - 1.0 / (1.0 + x)).abs() < 1e-6, "1/(1+{x}) = {got}");
        }
    }

    /// Equal inputs share the probability: four channels give 1/4 = 64/256, i.e. -64.
    #[test]
    fn uniform_row() {
        let p = Softmax {
            input_multiplier: 1 << 30,
            input_left_shift: 20,
            diff_min: -31,
        };
        let mut y = [0i8; 4];
        softmax(&[5, 5, 5, 5], 4, &p, &mut y);
        assert_eq!(y, [-64; 4]);
        // One dominant logit far beyond diff_min takes everything: 255/256 saturates at 127.
        softmax(&[100, -100, -100, -100], 4, &p, &mut y);
        assert_eq!(y, [127, -128, -128, -128]);
    }
}
