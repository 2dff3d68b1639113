//! Convolution (optionally with a fused max-pool) and depthwise convolution.
//!
//! `out[oy, ox, oc] = clamp(requant_oc(bias[oc] + sum_{ky,kx,ic} (x[iy, ix, ic] - zp_in) *
//! w[oc, ky, kx, ic]) + zp_out)` with `iy = oy * stride + ky - pad`. Taps that fall in the
//! padding contribute `(zp_in - zp_in) * w = 0`, so they are skipped rather than read.
//!
//! With a fused pool, each pooled output is the max of the requantized conv outputs in its
//! window. Requantization and the clamp are monotonic, so this is exactly what a separate
//! conv then max-pool computes; the difference is that the conv output is never stored.

use super::Stage;

/// Geometry of a convolution, validated once at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride: usize,
    pub pad: usize,
    /// Convolution output size, before the fused pool.
    pub conv_h: usize,
    pub conv_w: usize,
    /// Fused max-pool window and stride; 1 and 1 when there is none.
    pub pool_k: usize,
    pub pool_s: usize,
    /// Final output size.
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeom {
    /// `None` when the numbers do not describe a valid convolution.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_h: usize,
        in_w: usize,
        in_c: usize,
        out_c: usize,
        k_h: usize,
        k_w: usize,
        stride: usize,
        pad: usize,
        pool: Option<(usize, usize)>,
    ) -> Option<ConvGeom> {
        if in_h == 0 || in_w == 0 || in_c == 0 || out_c == 0 || k_h == 0 || k_w == 0 {
            return None;
        }
        if stride == 0 || pad >= k_h.max(k_w) && pad > 0 {
            return None;
        }
        let ph = in_h.checked_add(2 * pad)?;
        let pw = in_w.checked_add(2 * pad)?;
        if ph < k_h || pw < k_w {
            return None;
        }
        let conv_h = (ph - k_h) / stride + 1;
        let conv_w = (pw - k_w) / stride + 1;
        let (pool_k, pool_s) = pool.unwrap_or((1, 1));
        if pool_k == 0 || pool_s == 0 || conv_h < pool_k || conv_w < pool_k {
            return None;
        }
        Some(ConvGeom {
            in_h,
            in_w,
            in_c,
            out_c,
            k_h,
            k_w,
            stride,
            pad,
            conv_h,
            conv_w,
            pool_k,
            pool_s,
            out_h: (conv_h - pool_k) / pool_s + 1,
            out_w: (conv_w - pool_k) / pool_s + 1,
        })
    }

    pub fn input_len(&self) -> usize {
        self.in_h * self.in_w * self.in_c
    }
    pub fn output_len(&self) -> usize {
        self.out_h * self.out_w * self.out_c
    }
    /// Multiply-accumulates of a regular convolution with this geometry.
    pub fn macs(&self) -> usize {
        self.conv_h * self.conv_w * self.out_c * self.k_h * self.k_w * self.in_c
    }

    /// The kernel taps of conv output `(oy, ox)` that land inside the input:
    /// `(iy0, ix0, ky_lo..ky_hi, kx_lo..kx_hi)` where `iy = iy0 + ky`.
    #[inline(always)]
    fn window(&self, oy: usize, ox: usize) -> (isize, isize, usize, usize, usize, usize) {
        let iy0 = (oy * self.stride) as isize - self.pad as isize;
        let ix0 = (ox * self.stride) as isize - self.pad as isize;
        let ky_lo = (-iy0).max(0) as usize;
        let kx_lo = (-ix0).max(0) as usize;
        // A window entirely inside the padding has an empty range (hi == lo).
        let ky_hi = ((self.in_h as isize - iy0).clamp(0, self.k_h as isize) as usize).max(ky_lo);
        let kx_hi = ((self.in_w as isize - ix0).clamp(0, self.k_w as isize) as usize).max(kx_lo);
        (iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi)
    }
}

/// `sum (x - zp) * w`, written as `sum x*w - zp * sum w` so both sums vectorize.
#[inline(always)]
fn dot(x: &[i8], w: &[i8], zp: i32) -> i32 {
    let mut xw = 0i32;
    let mut sw = 0i32;
    for (&a, &b) in x.iter().zip(w) {
        xw += a as i32 * b as i32;
        sw += b as i32;
    }
    xw - zp * sw
}

/// Regular convolution, NHWC input, OHWI weights, optional fused max-pool.
pub fn conv2d(
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

/// Depthwise convolution (channel multiplier 1): weights `[1, kh, kw, C]`, `out_c == in_c`.
pub fn depthwise_conv2d(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
) {
    let c_n = g.in_c;
    for py in 0..g.out_h {
        for px in 0..g.out_w {
            let base = (py * g.out_w + px) * c_n;
            let out = &mut output[base..base + c_n];
            out.fill(i8::MIN);
            for dy in 0..g.pool_k {
                for dx in 0..g.pool_k {
                    let (iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi) =
                        g.window(py * g.pool_s + dy, px * g.pool_s + dx);
                    for (c, o) in out.iter_mut().enumerate() {
                        let (bias, rq) = st.channel(c);
                        let mut acc = bias;
                        for ky in ky_lo..ky_hi {
                            let iy = (iy0 + ky as isize) as usize;
                            for kx in kx_lo..kx_hi {
                                let ix = (ix0 + kx as isize) as usize;
                                let x = input[(iy * g.in_w + ix) * c_n + c] as i32;
                                let w = weights[(ky * g.k_w + kx) * c_n + c] as i32;
                                acc += (x - in_zp) * w;
                            }
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
