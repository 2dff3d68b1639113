//! Fully connected layer: `y[o] = clamp(requant_o(b[o] + sum_i (x[i] - zp_in) * w[o, i]) + zp_out)`.
//!
//! Three (or two) output rows per pass ([`super::dsp::fc3`], [`super::dsp::fc2`]): every four
//! inputs are loaded once and sign-extended minus the zero point with two SXTAB16 (`x - zp`
//! fits a halfword), then each row spends one weight word, two SXTB16 and two SMLAD on them.
//! Hosts run the same code through the Rust models in [`super::dsp`].

use super::as_i8;
use super::prepare::{check_input_zp, check_len, check_stage, shape, stage, Checked, Operand};
use super::MAX_TAPS;
use crate::format::FullyConnected;
use crate::Error;

use super::dsp::{fc2, fc3, pair};
use super::fc_run::triples;
use super::{ssat_requant, Stage};

/// `weights` is `[out, in]` row-major; `input.len()` is `in`, `output.len()` is `out`.
#[inline(never)] // its own function: its own inlining budget and register allocation
pub fn fully_connected(input: &[i8], in_zp: i32, weights: &[i8], st: &Stage, output: &mut [i8]) {
    let n_in = input.len();
    if n_in == 0 {
        return;
    }
    let nzp = pair(-(in_zp as i16));
    let full = n_in / 4 * 4;
    let x_tail = &input[full..];
    // The inputs past the last whole word, one at a time.
    let tail = |a: i32, row: usize| -> i32 {
        let mut a = a;
        let w = weights
            .get(row * n_in + full..(row + 1) * n_in)
            .unwrap_or_default();
        for (&x, &u) in x_tail.iter().zip(w) {
            a += (x as i32 - in_zp) * u as i32;
        }
        a
    };
    if full == n_in && st.ssat_form(31) {
        return fc_ssat(input, nzp, weights, st, output);
    }
    let mut chs = st.channels();
    let mut outs = output.iter_mut();
    let mut row = 0;
    loop {
        let rest = outs.len();
        // Triples while they leave no single row behind (10 rows: 3 + 3 + 2 + 2).
        let k = if rest >= 3 && rest != 4 {
            3
        } else {
            rest.min(2)
        };
        if k == 0 {
            return;
        }
        let mut ch = [(
            0i32,
            crate::quant::Requant {
                multiplier: 0,
                shift: 0,
            },
        ); 3];
        for c in ch.iter_mut().take(k) {
            let Some(next) = chs.next() else {
                return;
            };
            *c = next;
        }
        let w = weights.get(row * n_in..).unwrap_or_default();
        let acc = if k == 3 {
            fc3(input, w, n_in, nzp, [ch[0].0, ch[1].0, ch[2].0])
        } else {
            let w1 = if k == 2 {
                w.get(n_in..).unwrap_or_default()
            } else {
                w
            };
            let [a0, a1] = fc2(input, w, w1, nzp, [ch[0].0, ch[1].0]);
            [a0, a1, 0]
        };
        for (&a, c) in acc.iter().zip(&ch).take(k) {
            let Some(y) = outs.next() else {
                return;
            };
            *y = st.finish(tail(a, row), c.1);
            row += 1;
        }
    }
}

/// [`fully_connected`] for whole input words and a stage in the SSAT form (TensorFlow Lite's
/// layers): rows in threes in one loop ([`triples`]), then the rest in twos (or threes where
/// the loop refused), each row's sum requantized inline ([`ssat_requant`]).
#[inline(always)]
fn fc_ssat(input: &[i8], nzp: u32, weights: &[i8], st: &Stage, output: &mut [i8]) {
    let n_in = input.len();
    let zp = st.zero_point;
    let mut row = triples(input, nzp, weights, (st.bias, st.requant, zp), output);
    let mut chs = st.channels().skip(row);
    let mut part = || {
        // Every row has a channel and every channel the form (checked by the caller).
        chs.next()
            .and_then(|(b, rq)| Some((b, st.ssat_parts(rq)?)))
            .unwrap_or((0, [0, 1, 1]))
    };
    let n_out = output.len();
    while row < n_out {
        let w = weights.get(row * n_in..).unwrap_or_default();
        if n_out - row >= 3 && n_out - row != 4 {
            let [(b0, p0), (b1, p1), (b2, p2)] = [part(), part(), part()];
            let [a0, a1, a2] = fc3(input, w, n_in, nzp, [b0, b1, b2]);
            if let Some(o) = output.get_mut(row..row + 3) {
                o[0] = ssat_requant(a0, p0, zp);
                o[1] = ssat_requant(a1, p1, zp);
                o[2] = ssat_requant(a2, p2, zp);
            }
            row += 3;
        } else {
            let k = (n_out - row).min(2);
            let [(b0, p0), (b1, p1)] = [part(), if k == 2 { part() } else { (0, [0, 1, 1]) }];
            let w1 = if k == 2 {
                w.get(n_in..).unwrap_or_default()
            } else {
                w
            };
            let [a0, a1] = fc2(input, w, w1, nzp, [b0, b1]);
            if let Some(o) = output.get_mut(row..row + k) {
                o[0] = ssat_requant(a0, p0, zp);
                if let Some(o1) = o.get_mut(1) {
                    *o1 = ssat_requant(a1, p1, zp);
                }
            }
            row += k;
        }
    }
}

/// A checked fully connected layer: what [`super::Step::FullyConnected`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FcPlan<'a> {
    pub in_features: usize,
    pub out_features: usize,
    pub in_zp: i8,
    /// int8 `[out, in]`.
    pub weights: &'a [i8],
    pub stage: Stage<'a>,
}

/// Checks a fully connected layer against its (flattened) input.
pub(crate) fn prepare<'a>(
    li: u16,
    fc: &FullyConnected<'a>,
    x: Operand,
    rounding: crate::quant::Rounding,
) -> Result<Checked<FcPlan<'a>>, Error> {
    let cur = x.shape;
    let n_in = cur.len();
    if fc.in_features as u64 != cur.bytes() {
        return Err(Error::ShapeMismatch {
            layer: li,
            expected: cur.dims(),
            found: [1, 1, fc.in_features.min(u16::MAX as u32) as u16],
        });
    }
    if n_in > MAX_TAPS {
        return Err(Error::BadParameter {
            layer: li,
            what: "in_features (> 16384)",
        });
    }
    let n_out = fc.out_features as usize;
    if n_out == 0 {
        return Err(Error::BadParameter {
            layer: li,
            what: "out_features",
        });
    }
    // n_in <= 2^14, n_out < 2^16: fits 32 bits.
    check_len(li, "weights", fc.weights.len(), n_in * n_out)?;
    check_input_zp(li, fc.input_zero_point, x.zp)?;
    let param_bytes = n_in * n_out + check_stage(li, &fc.output, n_out, n_in)?;
    Ok(Checked {
        step: FcPlan {
            in_features: n_in,
            out_features: n_out,
            in_zp: fc.input_zero_point,
            weights: as_i8(fc.weights),
            stage: stage(&fc.output, rounding, n_in),
        },
        out: shape(1, 1, n_out, li)?,
        macs: (n_in * n_out) as u64,
        param_bytes,
        out_zp: fc.output.zero_point,
    })
}
