//! Residual add of two int8 tensors with different scales (the TFLite scheme, single rounding).
//!
//! Both inputs are brought to a common fixed-point scale before adding:
//! `a' = requant_a((a - zp_a) << 20)`, `b' = requant_b((b - zp_b) << 20)` with
//! `M_a = s_a / (2 max(s_a, s_b))`, `M_b = s_b / (2 max(s_a, s_b))`, then
//! `out = clamp(requant_out(a' + b') + zp_out)` with `M_out = 2 max(s_a, s_b) / (2^20 s_out)`.
//! No overflow: `|x - zp| <= 255`, so `(x - zp) << 20 < 2^28`; `M_a, M_b <= 1/2`, so
//! `|a' + b'| < 2^28`.

use super::prepare::{check_input_zp, Checked, Operand};
use crate::format::Add;
use crate::Error;

use crate::quant::{Requant, Rounding};

/// Bits of headroom the inputs are shifted by before rescaling.
pub const ADD_LEFT_SHIFT: u32 = 20;

/// Precomputed parameters of one add (computed once, at export or load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddParams {
    pub zp_a: i32,
    pub zp_b: i32,
    pub zp_out: i32,
    pub rq_a: Requant,
    pub rq_b: Requant,
    pub rq_out: Requant,
    pub act_min: i32,
    pub act_max: i32,
    /// The model's rounding.
    pub rounding: Rounding,
}

impl AddParams {
    /// From the three tensors' scales and zero points; `None` if a multiplier is unencodable.
    #[allow(clippy::too_many_arguments)]
    pub fn from_scales(
        s_a: f64,
        zp_a: i32,
        s_b: f64,
        zp_b: i32,
        s_out: f64,
        zp_out: i32,
        act_min: i32,
        act_max: i32,
    ) -> Option<AddParams> {
        let twice_max = 2.0 * s_a.max(s_b);
        Some(AddParams {
            zp_a,
            zp_b,
            zp_out,
            rq_a: Requant::from_real(s_a / twice_max)?,
            rq_b: Requant::from_real(s_b / twice_max)?,
            rq_out: Requant::from_real(twice_max / ((1u64 << ADD_LEFT_SHIFT) as f64 * s_out))?,
            act_min,
            act_max,
            rounding: Rounding::Single,
        })
    }
}

impl AddParams {
    /// From a validated [`crate::format::Add`] layer.
    pub fn from_layer(a: &crate::format::Add, rounding: Rounding) -> AddParams {
        AddParams {
            zp_a: a.input_zero_points[0] as i32,
            zp_b: a.input_zero_points[1] as i32,
            zp_out: a.zero_point as i32,
            rq_a: a.requant[0],
            rq_b: a.requant[1],
            rq_out: a.requant[2],
            act_min: a.act_min as i32,
            act_max: a.act_max as i32,
            rounding,
        }
    }
}

/// True if `rq` stands for a real multiplier of at most 1/2 (the add's overflow bound).
pub fn at_most_half(rq: Requant) -> bool {
    rq.is_valid() && (rq.shift < 0 || (rq.shift == 0 && rq.multiplier <= 1 << 30))
}

/// `out[i] = a[i] + b[i]` in real terms, requantized to the output's scale.
#[inline(never)]
pub fn add(a: &[i8], b: &[i8], p: &AddParams, out: &mut [i8]) {
    match p.rounding {
        Rounding::Single => add_with(a, b, p, out, Rounding::Single),
        Rounding::Double => {
            if let Some(f) = DoubleSmall::new(p) {
                f.add(a, b, out);
            } else {
                add_with(a, b, p, out, Rounding::Double)
            }
        }
    }
}

/// TensorFlow Lite's add in the one-multiply form of its double rounding (see
/// [`crate::quant::Requant::double_small_parts`]), exact because every term is small: an
/// input's `(x - zp) << 20` is below 2^28 and the rescaled sum below 2^28 (input multipliers
/// of at most 1/2), so each SaturatingRoundingDoublingHighMul is one rounding high multiply
/// of the doubled value (SMMULR). Taken when the input multipliers are not 0 and shift right
/// by `0..=31`, and the output shifts right by `1..=22` (its zero point then rides in the
/// rounding constant); otherwise the general path. The device loop reads the fields at fixed
/// offsets (asserted below).
#[repr(C)]
#[derive(Debug, PartialEq, Eq)]
struct DoubleSmall {
    a: Side,
    b: Side,
    m: i32,
    add: i32,
    e: i32,
    act_min: i32,
    act_max: i32,
}

#[cfg(target_arch = "arm")]
const _: () = {
    assert!(core::mem::offset_of!(DoubleSmall, b) == 20);
    assert!(core::mem::offset_of!(DoubleSmall, m) == 40);
    assert!(core::mem::offset_of!(DoubleSmall, e) == 48);
    assert!(core::mem::offset_of!(DoubleSmall, act_max) == 56);
};

/// One input's rescale of `x`: `xs = (x << 21) - (zp << 21)` (twice `(x - zp) << 20`), then
/// `(xs m + 2^31) >> 32 + 2^(e-1) - (xs < 0)` shifted right by `e` (no rounding terms for
/// `e = 0`). The sign of the high product is the sign of `xs`: `|xs| >= 2^21` and `m >= 2^30`
/// keep a nonzero product away from 0.
#[repr(C)]
#[derive(Debug, PartialEq, Eq)]
struct Side {
    k: i32,
    m: i32,
    add: i32,
    mask: i32,
    e: i32,
}

impl Side {
    fn new(zp: i32, rq: Requant) -> Option<Side> {
        let e = rq.shift.checked_neg().filter(|e| (0..=31).contains(e))?;
        if rq.multiplier < 1 << 30 || !(-128..=127).contains(&zp) {
            return None;
        }
        Some(Side {
            k: zp << (ADD_LEFT_SHIFT + 1),
            m: rq.multiplier,
            add: if e > 0 { 1 << (e - 1) } else { 0 },
            mask: if e > 0 { -1 } else { 0 },
            e,
        })
    }

    #[inline(always)]
    fn apply(&self, x: i8) -> i32 {
        let xs = ((x as i32) << (ADD_LEFT_SHIFT + 1)) - self.k;
        let t = self.add + ((xs >> 31) & self.mask);
        (high_mul(xs, self.m) + t) >> self.e
    }
}

/// `(a b + 2^31) >> 32`: SMMULR on the DSP extension.
#[inline(always)]
fn high_mul(a: i32, b: i32) -> i32 {
    ((a as i64 * b as i64 + (1 << 31)) >> 32) as i32
}

impl DoubleSmall {
    fn new(p: &AddParams) -> Option<DoubleSmall> {
        let e = p
            .rq_out
            .shift
            .checked_neg()
            .filter(|e| (1..=22).contains(e))?;
        if !(-128..=127).contains(&p.zp_out) {
            return None;
        }
        Some(DoubleSmall {
            a: Side::new(p.zp_a, p.rq_a)?,
            b: Side::new(p.zp_b, p.rq_b)?,
            m: p.rq_out.multiplier,
            add: (1 << (e - 1)) + (p.zp_out << e),
            e,
            act_min: p.act_min,
            act_max: p.act_max,
        })
    }

    /// The rescaled sum `s` (`|s| < 2^28`) to the output byte.
    #[inline(always)]
    fn finish(&self, s: i32) -> i8 {
        let t = high_mul(s << 1, self.m);
        let v = (t + self.add + (t >> 31)) >> self.e;
        v.max(self.act_min).min(self.act_max) as i8
    }

    fn add(&self, a: &[i8], b: &[i8], out: &mut [i8]) {
        let n = out.len().min(a.len()).min(b.len());
        let (a, b, out) = (&a[..n], &b[..n], &mut out[..n]);
        if n > 0 && (self.act_min, self.act_max) == (-128, 127) {
            imp::add_full_range(a, b, self, out);
            return;
        }
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = self.finish(self.a.apply(x) + self.b.apply(y));
        }
    }
}

#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[allow(unsafe_code)]
mod imp {
    /// One input's rescale of the byte at `[{$p}]` (post-incremented) into `{$v}`, with its
    /// [`super::Side`] at `[{prm}, #$o]`.
    #[rustfmt::skip]
    macro_rules! side {
        ($p:literal, $v:literal, $o0:literal, $o8:literal, $o16:literal) => {
            concat!(
                "ldrsb {", $v, "}, [{", $p, "}], #1\n",
                "ldrd {k}, {m}, [{prm}, #", $o0, "]\n",
                "rsb {", $v, "}, {k}, {", $v, "}, lsl #21\n",
                "ldrd {k}, {t}, [{prm}, #", $o8, "]\n",
                "and {t}, {t}, {", $v, "}, asr #31\n",
                "add {t}, {t}, {k}\n",
                "smmlar {", $v, "}, {", $v, "}, {m}, {t}\n",
                "ldr {k}, [{prm}, #", $o16, "]\n",
                "asr {", $v, "}, {", $v, "}, {k}\n",
            )
        };
    }

    /// `out[i]` for `i < n` (`n >= 1`, every slice `n` long), clamp the whole int8 range:
    /// both rescales, the sum's rescale (SMMULR, SMMLAR with the zero point in the rounding
    /// constant) and SSAT, about 30 instructions an element.
    pub fn add_full_range(a: &[i8], b: &[i8], p: &super::DoubleSmall, out: &mut [i8]) {
        let end = out.as_mut_ptr().wrapping_add(out.len());
        // SAFETY: reads `a[i]`, `b[i]` and writes `out[i]` for `i < out.len()`, which the
        // caller made the length of all three (and at least 1); reads `p`.
        unsafe {
            core::arch::asm!(
                "2:",
                side!("pa", "va", "0", "8", "16"),
                side!("pb", "vb", "20", "28", "36"),
                "add {va}, {va}, {vb}",
                "lsl {va}, {va}, #1",
                "ldrd {m}, {t}, [{prm}, #40]",
                "smmulr {vb}, {va}, {m}",
                "smmlar {va}, {va}, {m}, {t}",
                "add {va}, {va}, {vb}, asr #31",
                "ldr {k}, [{prm}, #48]",
                "asr {va}, {va}, {k}",
                "ssat {va}, #8, {va}",
                "strb {va}, [{po}], #1",
                "cmp {po}, {end}",
                "bne 2b",
                va = out(reg) _,
                vb = out(reg) _,
                k = out(reg) _,
                m = out(reg) _,
                t = out(reg) _,
                pa = inout(reg) a.as_ptr() => _,
                pb = inout(reg) b.as_ptr() => _,
                po = inout(reg) out.as_mut_ptr() => _,
                end = in(reg) end,
                prm = in(reg) p as *const super::DoubleSmall,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
mod imp {
    /// The device loop's model.
    pub fn add_full_range(a: &[i8], b: &[i8], p: &super::DoubleSmall, out: &mut [i8]) {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = p.finish(p.a.apply(x) + p.b.apply(y));
        }
    }
}

/// One loop per rounding (`r` is a constant in each call after inlining).
#[inline(always)]
fn add_with(a: &[i8], b: &[i8], p: &AddParams, out: &mut [i8], r: Rounding) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        let xa = p.rq_a.apply_with(r, (x as i32 - p.zp_a) << ADD_LEFT_SHIFT);
        let yb = p.rq_b.apply_with(r, (y as i32 - p.zp_b) << ADD_LEFT_SHIFT);
        *o = p
            .rq_out
            .to_i8_with(r, xa + yb, p.zp_out, p.act_min, p.act_max);
    }
}

/// Checks a residual add of `x` and `y`: same shapes, zero points as produced, input rescales
/// of at most 1/2 (the headroom [`add`] relies on) and a valid output rescale.
pub(crate) fn prepare(
    li: u16,
    a: &Add,
    x: Operand,
    y: Operand,
    rounding: Rounding,
) -> Result<Checked<AddParams>, Error> {
    if y.shape != x.shape {
        return Err(Error::ShapeMismatch {
            layer: li,
            expected: x.shape.dims(),
            found: y.shape.dims(),
        });
    }
    check_input_zp(li, a.input_zero_points[0], x.zp)?;
    check_input_zp(li, a.input_zero_points[1], y.zp)?;
    if !at_most_half(a.requant[0]) || !at_most_half(a.requant[1]) || !a.requant[2].is_valid() {
        return Err(Error::QuantOutOfRange {
            layer: li,
            what: "add rescale (inputs at most 1/2, output valid)",
        });
    }
    if a.act_min > a.act_max {
        return Err(Error::QuantOutOfRange {
            layer: li,
            what: "activation clamp (min > max)",
        });
    }
    Ok(Checked {
        step: AddParams::from_layer(a, rounding),
        out: x.shape,
        macs: 0,
        param_bytes: 0,
        out_zp: a.zero_point,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn multiplier() -> impl Strategy<Value = i32> {
        prop_oneof![1 => Just(1 << 30), 3 => (1i32 << 30)..=i32::MAX]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// An input's rescale is TensorFlow Lite's, for every byte: exact multiples of 2^19
        /// with `m = 2^30` make the ties of the second rounding (`e = 20`: `x - zp` odd).
        #[test]
        fn side_rescale_is_tflites(
            m in multiplier(),
            e in prop_oneof![Just(0), Just(20), 0i32..=31],
            zp: i8,
        ) {
            let rq = Requant { multiplier: m, shift: -e };
            let side = Side::new(zp as i32, rq).unwrap();
            for x in i8::MIN..=i8::MAX {
                let want = rq.apply_double((x as i32 - zp as i32) << ADD_LEFT_SHIFT);
                prop_assert_eq!(side.apply(x), want, "x {}", x);
            }
        }

        /// The sum's rescale is TensorFlow Lite's plus the zero point, clamped: `m = 2^30`
        /// and even sums make ties of both signs.
        #[test]
        fn sum_rescale_is_tflites(
            s in -(1i32 << 28) + 1..(1 << 28),
            tie in any::<bool>(),
            m in multiplier(),
            e in 1i32..=22,
            zp: i8,
            (lo, hi) in (any::<i8>(), any::<i8>()),
        ) {
            let (lo, hi) = (lo.min(hi) as i32, lo.max(hi) as i32);
            let s = if tie { ((s >> (e + 1)) * 2 + 1) << e } else { s };
            let half = Requant { multiplier: 1 << 30, shift: 0 };
            let p = AddParams {
                zp_a: 0,
                zp_b: 0,
                zp_out: zp as i32,
                rq_a: half,
                rq_b: half,
                rq_out: Requant { multiplier: m, shift: -e },
                act_min: lo,
                act_max: hi,
                rounding: Rounding::Double,
            };
            let f = DoubleSmall::new(&p).unwrap();
            let want = p.rq_out.to_i8_with(Rounding::Double, s, zp as i32, lo, hi);
            prop_assert_eq!(f.finish(s), want);
        }
    }
}
