//! Convolution (optionally with a fused max-pool): its geometry, its load-time checks, the
//! entry point and the direct path; the patch path is in [`super::conv_patch`], the depthwise
//! convolution in [`super::depthwise`].
//!
//! `out[oy, ox, oc] = clamp(requant_oc(bias[oc] + sum_{ky,kx,ic} (x[iy, ix, ic] - zp_in) *
//! w[oc, ky, kx, ic]) + zp_out)` with `iy = oy * stride_h + ky - pad_top`. Taps that fall in the
//! padding contribute `(zp_in - zp_in) * w = 0`, so they are skipped rather than read.
//!
//! With a fused pool, each pooled output is the max of the requantized conv outputs in its
//! window. Requantization and the clamp are monotonic, so this is exactly what a separate
//! conv then max-pool computes; the difference is that the conv output is never stored.

use super::as_i8;
use super::conv_base::{dot, ConvGeom};
use super::conv_patch::{conv2d_patch, conv2d_scratch_words};
use super::prepare::{
    check_input_zp, check_len, check_stage, limit, shape, stage, Checked, Operand,
};
use super::Stage;
use super::MAX_TAPS;
use crate::format::{Conv2d, MAX_MACS, MAX_TENSOR_BYTES};
use crate::Error;

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
    let need = conv2d_scratch_words(g, st);
    match scratch.get_mut(..need) {
        Some(s) if need > 0 => conv2d_patch(input, in_zp, weights, g, st, output, s),
        _ => conv2d_direct(input, in_zp, weights, g, st, output),
    }
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

/// A checked convolution or depthwise convolution: what [`super::Step::Conv`] and
/// [`super::Step::Depthwise`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPlan<'a> {
    pub g: ConvGeom,
    pub in_zp: i8,
    /// int8 OHWI (`[1, kh, kw, C]` for a depthwise convolution).
    pub weights: &'a [i8],
    pub stage: Stage<'a>,
}

/// Checks a convolution or depthwise convolution layer against its input (`x`) and resolves
/// its geometry: the kernel above relies on every check here.
pub(crate) fn prepare<'a>(
    li: u16,
    cv: &Conv2d<'a>,
    depthwise: bool,
    x: Operand,
    rounding: crate::quant::Rounding,
) -> Result<Checked<ConvPlan<'a>>, Error> {
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
        stage(&cv.output, rounding, taps),
        cv.input_zero_point,
    );
    Ok(Checked {
        step: ConvPlan {
            g,
            in_zp,
            weights,
            stage,
        },
        out: shape(g.out_h, g.out_w, g.out_c, li)?,
        macs,
        param_bytes,
        out_zp: cv.output.zero_point,
    })
}
