//! Pooling kernels. Pools keep the input's scale and zero point, so no requantization is needed:
//! max-pool is exact, and average pools round the mean half away from zero.

use super::prepare::{shape, Checked, Operand};
use crate::format::Pool2d;
use crate::Error;

/// Geometry of a pooling window of `k_h x k_w` pixels moved by `s_h` rows and `s_w` columns,
/// with `pad` pixels of padding on every side (`pad < k_h` and `pad < k_w`, so every window
/// holds at least one real pixel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub in_h: usize,
    pub in_w: usize,
    pub c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub s_h: usize,
    pub s_w: usize,
    pub pad: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl PoolGeom {
    /// Without padding; `k` and `s` are `(rows, columns)`.
    pub fn new(
        in_h: usize,
        in_w: usize,
        c: usize,
        k: (usize, usize),
        s: (usize, usize),
    ) -> Option<PoolGeom> {
        Self::padded(in_h, in_w, c, k, s, 0)
    }

    pub fn padded(
        in_h: usize,
        in_w: usize,
        c: usize,
        (k_h, k_w): (usize, usize),
        (s_h, s_w): (usize, usize),
        pad: usize,
    ) -> Option<PoolGeom> {
        let pad2 = pad.checked_mul(2)?;
        let (ph, pw) = (in_h.checked_add(pad2)?, in_w.checked_add(pad2)?);
        if k_h == 0 || k_w == 0 || s_h == 0 || s_w == 0 || c == 0 {
            return None;
        }
        if pad >= k_h || pad >= k_w || ph < k_h || pw < k_w {
            return None;
        }
        Some(PoolGeom {
            in_h,
            in_w,
            c,
            k_h,
            k_w,
            s_h,
            s_w,
            pad,
            out_h: (ph - k_h) / s_h + 1,
            out_w: (pw - k_w) / s_w + 1,
        })
    }

    /// Pixels in a window (padding excluded: average pools have none).
    pub fn window_pixels(&self) -> usize {
        self.k_h * self.k_w
    }

    /// The input rows window `o` covers, clipped to the image.
    #[inline(always)]
    fn rows(&self, o: usize) -> (usize, usize) {
        let start = o * self.s_h;
        (
            start.saturating_sub(self.pad),
            (start + self.k_h - self.pad).min(self.in_h),
        )
    }

    /// The input columns window `o` covers, clipped to the image.
    #[inline(always)]
    fn cols(&self, o: usize) -> (usize, usize) {
        let start = o * self.s_w;
        (
            start.saturating_sub(self.pad),
            (start + self.k_w - self.pad).min(self.in_w),
        )
    }
}

/// Max over each window; padded positions never win.
#[inline(never)] // its own function: its own inlining budget and register allocation
pub fn max_pool2d(input: &[i8], g: &PoolGeom, output: &mut [i8]) {
    for oy in 0..g.out_h {
        let (y0, y1) = g.rows(oy);
        for ox in 0..g.out_w {
            let (x0, x1) = g.cols(ox);
            let base = (oy * g.out_w + ox) * g.c;
            let out = &mut output[base..base + g.c];
            out.fill(i8::MIN);
            for iy in y0..y1 {
                let row = iy * g.in_w;
                for px in input[(row + x0) * g.c..(row + x1) * g.c].chunks_exact(g.c) {
                    for (o, &x) in out.iter_mut().zip(px) {
                        if x > *o {
                            *o = x;
                        }
                    }
                }
            }
        }
    }
}

/// `round(sum / count)`, ties away from zero.
#[inline(always)]
fn rounded_mean(sum: i32, count: i32) -> i8 {
    let q = if sum >= 0 {
        (sum + count / 2) / count
    } else {
        (sum - count / 2) / count
    };
    q.clamp(-128, 127) as i8
}

/// Mean over each window (`g.pad` must be 0: validated at load time). Four channels per input
/// word where the window's sums fit halfwords (at most 255 pixels: `255 * 128 < 2^15`): each
/// pixel's word adds into two halfword pairs with SXTAB16, sixteen channels at a time, then
/// each channel's sum is divided with rounding; other channels one at a time.
#[inline(never)] // its own function: its own inlining budget and register allocation
pub fn avg_pool2d(input: &[i8], g: &PoolGeom, output: &mut [i8]) {
    let count = g.window_pixels() as i32;
    let words = if count <= 255 { g.c / 4 } else { 0 };
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let base = (oy * g.out_w + ox) * g.c;
            let Some(out) = output.get_mut(base..base + g.c) else {
                return;
            };
            let corner = (oy * g.s_h * g.in_w + ox * g.s_w) * g.c;
            let mut q = 0;
            while q + 4 <= words {
                window_words::<4>(input, g, corner + 4 * q, count, &mut out[4 * q..]);
                q += 4;
            }
            while q < words {
                window_words::<1>(input, g, corner + 4 * q, count, &mut out[4 * q..]);
                q += 1;
            }
            for (c, o) in out.iter_mut().enumerate().skip(4 * words) {
                let mut sum = 0i32;
                for ky in 0..g.k_h {
                    for kx in 0..g.k_w {
                        let at = corner + (ky * g.in_w + kx) * g.c + c;
                        sum += input.get(at).map_or(0, |&x| x as i32);
                    }
                }
                *o = rounded_mean(sum, count);
            }
        }
    }
}

/// The means of `4 Q` channels of one window whose top-left pixel's first channel is at
/// `at`: per pixel `Q` words, each added into its halfword pairs (channels 0 and 2, 1 and 3).
#[inline(always)]
fn window_words<const Q: usize>(input: &[i8], g: &PoolGeom, at: usize, count: i32, out: &mut [i8]) {
    use super::dsp::{sxtab16, sxtab16_ror8};
    let mut even = [0u32; Q];
    let mut odd = [0u32; Q];
    for ky in 0..g.k_h {
        for kx in 0..g.k_w {
            let px = at + (ky * g.in_w + kx) * g.c;
            let Some(bytes) = input.get(px..px + 4 * Q) else {
                return; // unreachable: the geometry was validated
            };
            for ((e, o), b) in even
                .iter_mut()
                .zip(odd.iter_mut())
                .zip(bytes.chunks_exact(4))
            {
                let w = u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]);
                *e = sxtab16(*e, w);
                *o = sxtab16_ror8(*o, w);
            }
        }
    }
    let half = |v: u32, hi: bool| (if hi { v >> 16 } else { v }) as u16 as i16 as i32;
    for ((o4, &e), &d) in out.chunks_exact_mut(4).zip(&even).zip(&odd) {
        o4[0] = rounded_mean(half(e, false), count);
        o4[1] = rounded_mean(half(d, false), count);
        o4[2] = rounded_mean(half(e, true), count);
        o4[3] = rounded_mean(half(d, true), count);
    }
}

/// `[H, W, C] -> [C]`. The sum is 64-bit: a tensor may hold up to `MAX_TENSOR_BYTES = 2^24`
/// pixels, whose sum (and the rounding term added to it) can reach `2^31` in magnitude.
#[inline(never)] // its own function: its own inlining budget and register allocation
pub fn global_avg_pool(input: &[i8], c_n: usize, output: &mut [i8]) {
    let count = (input.len() / c_n.max(1)).max(1) as i64;
    for (c, o) in output.iter_mut().enumerate().take(c_n) {
        let sum: i64 = input.iter().skip(c).step_by(c_n).map(|&x| x as i64).sum();
        let q = if sum >= 0 {
            (sum + count / 2) / count
        } else {
            (sum - count / 2) / count
        };
        *o = q.clamp(-128, 127) as i8;
    }
}

/// Checks a max or average pool against its input and resolves its geometry.
pub(crate) fn prepare(
    li: u16,
    p: &Pool2d,
    avg: bool,
    x: Operand,
) -> Result<Checked<PoolGeom>, Error> {
    if avg && p.padding != 0 {
        return Err(Error::BadParameter {
            layer: li,
            what: "average pool padding (must be 0)",
        });
    }
    let s = x.shape;
    let (h, w, c) = (s.h as usize, s.w as usize, s.c as usize);
    let g = PoolGeom::padded(
        h,
        w,
        c,
        (p.kernel_h as usize, p.kernel_w as usize),
        (p.stride_h as usize, p.stride_w as usize),
        p.padding as usize,
    )
    .ok_or(Error::BadParameter {
        layer: li,
        what: "pool geometry",
    })?;
    let out = shape(g.out_h, g.out_w, c, li)?;
    Ok(Checked {
        step: g,
        out,
        macs: 0,
        param_bytes: 0,
        out_zp: x.zp,
    })
}

/// Global average pooling: any input within the tensor limit sums exactly in i32 (see
/// [`global_avg_pool`]).
pub(crate) fn prepare_global(li: u16, x: Operand) -> Result<Checked<usize>, Error> {
    let c = x.shape.c as usize;
    Ok(Checked {
        step: c,
        out: shape(1, 1, c, li)?,
        macs: 0,
        param_bytes: 0,
        out_zp: x.zp,
    })
}

/// TensorFlow Lite's int8 `MEAN` over height and width (see [`crate::format::Mean`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanParams {
    pub channels: usize,
    /// `pixels * input_zero_point`, at most `2^23 * 128` in magnitude (validated).
    pub zp_sum: i32,
    pub zero_point: i32,
    pub requant: crate::quant::Requant,
    pub rounding: crate::quant::Rounding,
}

/// `[H, W, C] -> [C]`: `clamp(requant(sum - n * zp_in) + zp_out, -128, 127)`. The sum fits an
/// i32: at most [`MAX_MEAN_PIXELS`] pixels of magnitude at most 128.
#[inline(never)]
pub fn mean(input: &[i8], p: &MeanParams, output: &mut [i8]) {
    let c_n = p.channels.max(1);
    for (c, o) in output.iter_mut().enumerate().take(c_n) {
        let sum: i32 = input.iter().skip(c).step_by(c_n).map(|&x| x as i32).sum();
        let v = p.requant.apply_with(p.rounding, sum - p.zp_sum);
        *o = v.saturating_add(p.zero_point).clamp(-128, 127) as i8;
    }
}

/// Most pixels a mean reduces: `2^23`, so the sum and `n * zp` (each below `2^30`) and their
/// difference fit an i32.
pub const MAX_MEAN_PIXELS: u64 = 1 << 23;

/// Checks a mean: the pixel count, a multiplier in `[0, 2^31)` with a shift in the accepted
/// range (TensorFlow Lite's rescaled multiplier may be below `2^30`), and the input zero point.
pub(crate) fn prepare_mean(
    li: u16,
    m: &crate::format::Mean,
    x: Operand,
    rounding: crate::quant::Rounding,
) -> Result<Checked<MeanParams>, Error> {
    let pixels = x.shape.h as u64 * x.shape.w as u64;
    super::prepare::limit(li, "mean pixels", pixels, MAX_MEAN_PIXELS)?;
    super::prepare::check_input_zp(li, m.input_zero_point, x.zp)?;
    let rq = m.requant;
    if rq.multiplier < 0 || !(crate::quant::MIN_SHIFT..=crate::quant::MAX_SHIFT).contains(&rq.shift)
    {
        return Err(Error::QuantOutOfRange {
            layer: li,
            what: "mean multiplier or shift",
        });
    }
    let c = x.shape.c as usize;
    Ok(Checked {
        step: MeanParams {
            channels: c,
            // pixels <= 2^23 and |zp| <= 128: fits.
            zp_sum: (pixels as i64 * m.input_zero_point as i64) as i32,
            zero_point: m.zero_point as i32,
            requant: rq,
            rounding,
        },
        out: shape(1, 1, c, li)?,
        macs: 0,
        param_bytes: 0,
        out_zp: m.zero_point,
    })
}
