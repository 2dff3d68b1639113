//! Fully connected layer: `y[o] = clamp(requant_o(b[o] + sum_i (x[i] - zp_in) * w[o, i]) + zp_out)`.
//!
//! Two output rows per pass: every four inputs are loaded once, sign-extended with two SXTB16
//! and shifted by the zero point with two SADD16 (`x - zp` fits a halfword), then each row
//! spends one weight word, two SXTB16 and two SMLAD on them. Hosts run the same code through
//! the models in [`super::dsp`].

use super::dsp::{pair, sadd16, smlad, sxtb16, sxtb16_ror8};
use super::Stage;

#[inline(always)]
fn word(b: &[i8]) -> u32 {
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

/// `weights` is `[out, in]` row-major; `input.len()` is `in`, `output.len()` is `out`.
#[inline(never)] // its own function: its own inlining budget and register allocation
pub fn fully_connected(input: &[i8], in_zp: i32, weights: &[i8], st: &Stage, output: &mut [i8]) {
    let n_in = input.len();
    if n_in == 0 {
        return;
    }
    let nzp = pair(-(in_zp as i16));
    let full = n_in / 4 * 4;
    let (x_main, x_tail) = input.split_at(full);
    let mut rows = weights.chunks_exact(n_in).zip(st.channels());
    let mut outs = output.iter_mut();
    loop {
        let (Some((w0, (b0, r0))), Some(y0)) = (rows.next(), outs.next()) else {
            return;
        };
        match (rows.next(), outs.next()) {
            (Some((w1, (b1, r1))), Some(y1)) => {
                let (mut a0, mut a1) = (b0, b1);
                let pairs = x_main
                    .chunks_exact(4)
                    .zip(w0.chunks_exact(4).zip(w1.chunks_exact(4)));
                for (x4, (w04, w14)) in pairs {
                    let x = word(x4);
                    let (xe, xo) = (sadd16(sxtb16(x), nzp), sadd16(sxtb16_ror8(x), nzp));
                    let (u, v) = (word(w04), word(w14));
                    a0 = smlad(xo, sxtb16_ror8(u), smlad(xe, sxtb16(u), a0));
                    a1 = smlad(xo, sxtb16_ror8(v), smlad(xe, sxtb16(v), a1));
                }
                for (&x, (&u, &v)) in x_tail.iter().zip(w0[full..].iter().zip(&w1[full..])) {
                    let d = x as i32 - in_zp;
                    a0 += d * u as i32;
                    a1 += d * v as i32;
                }
                *y0 = st.finish(a0, r0);
                *y1 = st.finish(a1, r1);
            }
            _ => {
                let mut a0 = b0;
                for (x4, w4) in x_main.chunks_exact(4).zip(w0.chunks_exact(4)) {
                    let x = word(x4);
                    let (xe, xo) = (sadd16(sxtb16(x), nzp), sadd16(sxtb16_ror8(x), nzp));
                    let u = word(w4);
                    a0 = smlad(xo, sxtb16_ror8(u), smlad(xe, sxtb16(u), a0));
                }
                for (&x, &u) in x_tail.iter().zip(&w0[full..]) {
                    a0 += (x as i32 - in_zp) * u as i32;
                }
                *y0 = st.finish(a0, r0);
                return;
            }
        }
    }
}
