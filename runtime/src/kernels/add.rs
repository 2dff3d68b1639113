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
/// rounding constant); otherwise the general path. With the whole int8 range as clamp and one
/// input rescaled by exactly 1/2, [`HalfAdd`]'s device loop.
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

/// One input's rescale of `x`: `xs = (x << 21) - (zp << 21)` (twice `(x - zp) << 20`), then
/// `(xs m + 2^31) >> 32 + 2^(e-1) - (xs < 0)` shifted right by `e` (no rounding terms for
/// `e = 0`). The sign of the high product is the sign of `xs`: `|xs| >= 2^21` and `m >= 2^30`
/// keep a nonzero product away from 0.
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

    /// The rescale by exactly 1/2: `apply(x)` is `(x - zp) << 19` (`(xs 2^30 + 2^31) >> 32` of
    /// a multiple of 2^21 is `xs / 4`).
    fn is_half(&self) -> bool {
        (self.m, self.e) == (1 << 30, 0)
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
        let mut done = 0;
        if (self.act_min, self.act_max) == (-128, 127) {
            // The input rescaled by exactly 1/2 first (the add is symmetric).
            let half = match (self.a.is_half(), self.b.is_half()) {
                (true, _) => HalfAdd::new(&self.a, &self.b, self).map(|h| (h, a, b)),
                (false, true) => HalfAdd::new(&self.b, &self.a, self).map(|h| (h, b, a)),
                _ => None,
            };
            if let Some((mut h, x, y)) = half {
                done = n - n % 4;
                if done > 0 {
                    imp::half_add(&x[..done], &y[..done], &mut h, &mut out[..done]);
                }
            }
        }
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b).skip(done) {
            *o = self.finish(self.a.apply(x) + self.b.apply(y));
        }
    }
}

/// The add when one input's rescale is exactly 1/2 (multiplier 2^30, shift 0: the larger
/// input scale always has it, `s / (2 max(s_a, s_b))`), where TensorFlow Lite's
/// SaturatingRoundingDoublingHighMul of `(x - zp) << 20` is exactly `(x - zp) << 19` (no
/// rounding, [`Side::is_half`]); the other input's rescale as [`Side`] with a right shift of at
/// least 1, the output's as [`DoubleSmall`] but rounding by the sum's sign (the same byte:
/// the high product has the sum's sign or is 0, where both give the zero point). The device
/// loop takes four elements a pass and reads the fields at fixed offsets (asserted below).
#[repr(C)]
#[derive(Debug, PartialEq, Eq)]
struct HalfAdd {
    /// The exact input's zero point `<< 19`.
    k: i32,
    /// The other input's `[k, m, 2^(e-1), e]`.
    y: [i32; 4],
    /// The output's `[m, 2^(e-1) + (zp << e), e]`.
    out: [i32; 3],
    /// Set by the device loop's caller: the other input's and the output's byte offsets from
    /// the exact input, and the exact input's end.
    y_off: isize,
    out_off: isize,
    end: usize,
}

#[cfg(target_arch = "arm")]
const _: () = {
    assert!(core::mem::offset_of!(HalfAdd, y) == 4);
    assert!(core::mem::offset_of!(HalfAdd, out) == 20);
    assert!(core::mem::offset_of!(HalfAdd, y_off) == 32);
    assert!(core::mem::offset_of!(HalfAdd, out_off) == 36);
    assert!(core::mem::offset_of!(HalfAdd, end) == 40);
};

impl HalfAdd {
    /// `half` the exact side, `other` the other; `None` if `other` shifts by 0.
    fn new(half: &Side, other: &Side, p: &DoubleSmall) -> Option<HalfAdd> {
        (other.e >= 1).then_some(HalfAdd {
            k: half.k >> 2,
            y: [other.k, other.m, other.add, other.e],
            out: [p.m, p.add, p.e],
            y_off: 0,
            out_off: 0,
            end: 0,
        })
    }

    /// The other input's rescale as the device loop computes it: `(SMMLAR(ys, m, 2^(e-1)) +
    /// (ys >> 31)) >> e`, `ys = (y << 21) - (zp << 21)`.
    #[inline(always)]
    #[cfg_attr(all(target_arch = "arm", target_feature = "dsp"), allow(dead_code))]
    fn other(&self, y: i8) -> i32 {
        let [k, m, add, e] = self.y;
        let ys = ((y as i32) << (ADD_LEFT_SHIFT + 1)) - k;
        (high_mul(ys, m) + add + (ys >> 31)) >> e
    }

    /// The device loop's arithmetic for one element: `x` the exact input's byte.
    #[inline(always)]
    #[cfg_attr(all(target_arch = "arm", target_feature = "dsp"), allow(dead_code))]
    fn element(&self, x: i8, y: i8) -> i8 {
        let s = (((x as i32) << (ADD_LEFT_SHIFT - 1)) - self.k + self.other(y)) << 1;
        let [m, add, e] = self.out;
        let v = (high_mul(s, m) + add + (s >> 31)) >> e;
        v.clamp(-128, 127) as i8
    }
}

#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[allow(unsafe_code)]
mod imp {
    /// Element `$i` of the other input (its word in `{w}`) rescaled and added to `{$s}`.
    #[rustfmt::skip]
    macro_rules! other {
        ($s:literal, $ror:literal) => {
            concat!(
                "sxtb {v}, {w}", $ror, "\n",
                "rsb {v}, {k}, {v}, lsl #21\n",
                "smmlar {t}, {v}, {m}, {ad}\n",
                "add {t}, {t}, {v}, asr #31\n",
                "asr {t}, {t}, {e}\n",
                "add {", $s, "}, {", $s, "}, {t}\n",
            )
        };
    }

    /// The sum in `{$s}` to its output byte (SSAT), the zero point in the rounding constant.
    #[rustfmt::skip]
    macro_rules! finish {
        ($s:literal) => {
            concat!(
                "lsl {", $s, "}, {", $s, "}, #1\n",
                "smmlar {t}, {", $s, "}, {m}, {ad}\n",
                "add {", $s, "}, {t}, {", $s, "}, asr #31\n",
                "asr {", $s, "}, {", $s, "}, {e}\n",
                "ssat {", $s, "}, #8, {", $s, "}\n",
            )
        };
    }

    /// [`super::HalfAdd`] over `x`, `y` and `out`, all the same length, a multiple of 4 and
    /// at least 4: four elements a pass, 71 instructions.
    pub fn half_add(x: &[i8], y: &[i8], p: &mut super::HalfAdd, out: &mut [i8]) {
        let base = x.as_ptr();
        p.y_off = (y.as_ptr() as isize).wrapping_sub(base as isize);
        p.out_off = (out.as_mut_ptr() as isize).wrapping_sub(base as isize);
        p.end = base.wrapping_add(x.len()) as usize;
        // SAFETY: reads the words at `x + 4 i` and `y + 4 i` (LDR, unaligned allowed on
        // Armv7E-M and Armv8-M Mainline) and writes the bytes `out + 4 i + j` (j < 4) for
        // `4 i < x.len()`, which the caller made the length of all three; reads `p`. No stack.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {w}, [{px}]",
                "ldr {k}, [{prm}]",
                "sxtb {v}, {w}",
                "rsb {s0}, {k}, {v}, lsl #19",
                "sxtb {v}, {w}, ror #8",
                "rsb {s1}, {k}, {v}, lsl #19",
                "sxtb {v}, {w}, ror #16",
                "rsb {s2}, {k}, {v}, lsl #19",
                "sxtb {v}, {w}, ror #24",
                "rsb {s3}, {k}, {v}, lsl #19",
                "ldr {v}, [{prm}, #32]",
                "ldr {w}, [{px}, {v}]",
                "ldrd {k}, {m}, [{prm}, #4]",
                "ldrd {ad}, {e}, [{prm}, #12]",
                other!("s0", ""),
                other!("s1", ", ror #8"),
                other!("s2", ", ror #16"),
                other!("s3", ", ror #24"),
                "ldrd {m}, {ad}, [{prm}, #20]",
                "ldr {e}, [{prm}, #28]",
                finish!("s0"),
                finish!("s1"),
                finish!("s2"),
                finish!("s3"),
                "ldr {v}, [{prm}, #36]",
                "add {v}, {v}, {px}",
                "strb {s0}, [{v}]",
                "strb {s1}, [{v}, #1]",
                "strb {s2}, [{v}, #2]",
                "strb {s3}, [{v}, #3]",
                "add {px}, {px}, #4",
                "ldr {v}, [{prm}, #40]",
                "cmp {px}, {v}",
                "bne 2b",
                w = out(reg) _,
                k = out(reg) _,
                m = out(reg) _,
                ad = out(reg) _,
                e = out(reg) _,
                v = out(reg) _,
                t = out(reg) _,
                s0 = out(reg) _,
                s1 = out(reg) _,
                s2 = out(reg) _,
                s3 = out(reg) _,
                px = inout(reg) base => _,
                prm = in(reg) p as *const super::HalfAdd,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
mod imp {
    /// The device loop's model.
    pub fn half_add(x: &[i8], y: &[i8], p: &mut super::HalfAdd, out: &mut [i8]) {
        for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
            *o = p.element(a, b);
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
            // The same rescale as the non-exact input of the four-a-pass loop (`e >= 1`).
            let half = Side::new(0, Requant { multiplier: 1 << 30, shift: 0 }).unwrap();
            let out = DoubleSmall { a: Side::new(0, rq).unwrap(), b: half, m: 1 << 30, add: 1, e: 1, act_min: -128, act_max: 127 };
            let other = HalfAdd::new(&out.b, &side, &out);
            for x in i8::MIN..=i8::MAX {
                let want = rq.apply_double((x as i32 - zp as i32) << ADD_LEFT_SHIFT);
                prop_assert_eq!(side.apply(x), want, "x {}", x);
                if let Some(h) = &other {
                    prop_assert_eq!(h.other(x), want, "x {} (four-a-pass loop)", x);
                }
            }
        }

        /// The add with one input rescaled by exactly 1/2 (the larger input scale; either
        /// input), the device's four-a-pass loop or its model plus the Rust tail, is
        /// TensorFlow Lite's for every byte of both inputs: scale ratios that are powers of two
        /// make the other input's rescale end on ties.
        #[test]
        fn half_add_is_tflites(
            s_other in prop_oneof![0.02f64..=1.0, (1i32..=21).prop_map(|k| 0.5f64.powi(k))],
            zp_a: i8,
            zp_b: i8,
            zp_out: i8,
            s_out in 0.05f64..4.0,
            swap: bool,
            tail in 0usize..4,
        ) {
            let (s_a, s_b, zp_a, zp_b) = if swap {
                (s_other, 1.0, zp_b, zp_a)
            } else {
                (1.0, s_other, zp_a, zp_b)
            };
            let (zp_a, zp_b, zp_out) = (zp_a as i32, zp_b as i32, zp_out as i32);
            let mut p = AddParams::from_scales(s_a, zp_a, s_b, zp_b, s_out, zp_out, -128, 127)
                .unwrap();
            p.rounding = Rounding::Double;
            let f = DoubleSmall::new(&p);
            prop_assume!(f.as_ref().is_some_and(|f| f.a.is_half() != f.b.is_half()));
            let n = 2 * 256 + tail;
            let a: Vec<i8> = (0..n).map(|i| i as u8 as i8).collect();
            let b: Vec<i8> = (0..n).map(|i| (i * 167 + 89) as u8 as i8).collect();
            let mut out = vec![0i8; n];
            add(&a, &b, &p, &mut out);
            let mut want = vec![0i8; n];
            add_with(&a, &b, &p, &mut want, Rounding::Double);
            prop_assert_eq!(out, want);
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
