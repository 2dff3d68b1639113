//! Channel concatenation of NHWC tensors that share height, width, scale and zero point: a copy,
//! no arithmetic (the exporter gives every branch the concat's quantization).

use super::prepare::{check_input_zp, shape, Checked, Operand};
use crate::Error;

/// `out[p, :] = [a[p, :], b[p, :], ...]` for every pixel `p`; `parts[i]` holds `pixels * c_i`
/// values and `out` holds `pixels * sum(c_i)`.
#[inline(never)] // its own function: its own inlining budget and register allocation
pub fn concat_channels(parts: &[&[i8]], pixels: usize, out: &mut [i8]) {
    if pixels == 0 {
        return;
    }
    let out_c = out.len() / pixels;
    let mut at = 0;
    for part in parts {
        let c = part.len() / pixels;
        for (dst, src) in out.chunks_exact_mut(out_c).zip(part.chunks_exact(c.max(1))) {
            if let Some(d) = dst.get_mut(at..at + c) {
                d.copy_from_slice(src);
            }
        }
        at += c;
    }
}

/// Checks a channel concatenation: every input (the first is `x`) has `x`'s height, width and
/// zero point.
pub(crate) fn prepare(
    li: u16,
    inputs: impl Iterator<Item = Operand>,
    x: Operand,
) -> Result<Checked<usize>, Error> {
    let cur = x.shape;
    let mut channels = 0usize;
    for o in inputs {
        let s = o.shape;
        if (s.h, s.w) != (cur.h, cur.w) {
            return Err(Error::ShapeMismatch {
                layer: li,
                expected: cur.dims(),
                found: s.dims(),
            });
        }
        check_input_zp(li, o.zp, x.zp)?;
        channels += s.c as usize;
    }
    let (h, w) = (cur.h as usize, cur.w as usize);
    Ok(Checked {
        step: h * w, // pixels: h * w <= the input's bytes
        out: shape(h, w, channels, li)?,
        macs: 0,
        param_bytes: 0,
        out_zp: x.zp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_channels_per_pixel() {
        // 2 pixels; a has 1 channel, b has 2.
        let a = [1i8, 2];
        let b = [10i8, 11, 20, 21];
        let mut out = [0i8; 6];
        concat_channels(&[&a, &b], 2, &mut out);
        assert_eq!(out, [1, 10, 11, 2, 20, 21]);
    }
}
