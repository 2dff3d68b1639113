//! Load-time checks shared by the kernels' `prepare` functions (TFLM's Prepare): each kernel
//! module validates its own layer kind beside the code that relies on the checks, and returns
//! a [`Checked`] plan of its own type, which [`super::Step::prepare`] wraps; the loader
//! (`model::analyze_with`) does the wiring, the limits and the arena plan.

use super::{max_bias, Stage};
use crate::format::{OutputStage, Shape, REQUANT_BYTES};
use crate::Error;

/// A tensor a layer reads: its shape and zero point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand {
    pub shape: Shape,
    pub zp: i8,
}

/// A checked layer: the kernel's plan (`T`) and what the analysis records of it.
pub(crate) struct Checked<T> {
    pub step: T,
    pub out: Shape,
    /// Multiply-accumulates (at most `MAX_MACS`).
    pub macs: u64,
    /// Bytes of weights, biases and requantization parameters.
    pub param_bytes: usize,
    pub out_zp: i8,
}

impl<T> Checked<T> {
    /// The same facts with the plan wrapped (in a [`super::Step`]).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Checked<U> {
        Checked {
            step: f(self.step),
            out: self.out,
            macs: self.macs,
            param_bytes: self.param_bytes,
            out_zp: self.out_zp,
        }
    }
}

pub(crate) fn shape(h: usize, w: usize, c: usize, layer: u16) -> Result<Shape, Error> {
    let fit = |v: usize| u16::try_from(v).ok().filter(|&v| v > 0);
    match (fit(h), fit(w), fit(c)) {
        (Some(h), Some(w), Some(c)) => Ok(Shape { h, w, c }),
        _ => Err(Error::BadParameter {
            layer,
            what: "output shape (each dimension 1..=65535)",
        }),
    }
}

pub(crate) fn check_len(
    layer: u16,
    what: &'static str,
    found: usize,
    expected: usize,
) -> Result<(), Error> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::ArrayLength {
            layer,
            what,
            expected,
            found,
        })
    }
}

/// Checks a layer's output stage; `taps` is the number of terms per accumulator (at most
/// [`super::MAX_TAPS`]), which bounds the bias (see [`max_bias`]).
pub(crate) fn check_stage(
    layer: u16,
    st: &OutputStage,
    channels: usize,
    taps: usize,
) -> Result<usize, Error> {
    let bound = max_bias(taps);
    check_len(layer, "bias", st.bias.len(), channels * 4)?;
    check_len(
        layer,
        "requantization",
        st.requant.len(),
        channels * REQUANT_BYTES,
    )?;
    for (b, q) in st.channels() {
        if !(-bound..=bound).contains(&b) {
            return Err(Error::QuantOutOfRange {
                layer,
                what: "bias",
            });
        }
        if !q.is_valid() {
            return Err(Error::QuantOutOfRange {
                layer,
                what: "requantization multiplier or shift",
            });
        }
    }
    if st.act_min > st.act_max {
        return Err(Error::QuantOutOfRange {
            layer,
            what: "activation clamp (min > max)",
        });
    }
    Ok(st.bias.len() + st.requant.len())
}

/// The kernels' view of a checked output stage with `taps` terms per accumulator.
pub(crate) fn stage<'a>(
    o: &OutputStage<'a>,
    rounding: crate::quant::Rounding,
    taps: usize,
) -> Stage<'a> {
    let clamp = (o.act_min as i32, o.act_max as i32);
    Stage::new(
        o.bias,
        o.requant,
        (o.zero_point as i32, clamp.0, clamp.1),
        rounding,
        taps,
    )
}

/// `value <= limit`, or [`Error::LimitExceeded`].
pub(crate) fn limit(layer: u16, what: &'static str, value: u64, limit: u64) -> Result<(), Error> {
    if value <= limit {
        Ok(())
    } else {
        Err(Error::LimitExceeded {
            layer,
            what,
            value,
            limit,
        })
    }
}

pub(crate) fn check_input_zp(layer: u16, declared: i8, producer: i8) -> Result<(), Error> {
    if declared == producer {
        Ok(())
    } else {
        Err(Error::QuantOutOfRange {
            layer,
            what: "input zero point (differs from the producer's)",
        })
    }
}
