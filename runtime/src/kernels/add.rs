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
        Rounding::Double => add_with(a, b, p, out, Rounding::Double),
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
