//! Naive references: i64 accumulators, explicit padding checks, exact rational rounding in i128,
//! no fusion and no algebraic tricks. The fast kernels must equal these bit for bit.

use super::{ConvGeom, PoolGeom, Stage};

/// round(acc * m / 2^(31 - shift)), ties away from zero, computed exactly.
pub fn requant(acc: i64, m: i32, shift: i32) -> i64 {
    let num = acc as i128 * m as i128;
    let den = 1i128 << (31 - shift);
    let mut q = num.abs() / den;
    if 2 * (num.abs() % den) >= den {
        q += 1;
    }
    if num < 0 {
        q = -q;
    }
    q.clamp(i32::MIN as i128, i32::MAX as i128) as i64
}

/// gemmlowp's and TensorFlow Lite's `MultiplyByQuantizedMultiplier` (double rounding),
/// transcribed literally: C++ integer division truncates toward zero, as Rust's does.
pub fn tflite_mbqm(x: i32, m: i32, shift: i32) -> i32 {
    fn srdhm(a: i32, b: i32) -> i32 {
        if a == b && a == i32::MIN {
            return i32::MAX;
        }
        let ab = a as i64 * b as i64;
        let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
        ((ab + nudge) / (1i64 << 31)) as i32
    }
    fn rdbpot(x: i32, e: i32) -> i32 {
        let mask = ((1i64 << e) - 1) as i32;
        let rem = x & mask;
        let threshold = (mask >> 1) + i32::from(x < 0);
        (x >> e) + i32::from(rem > threshold)
    }
    let left = if shift > 0 { shift } else { 0 };
    let right = if shift > 0 { 0 } else { -shift };
    rdbpot(
        srdhm(x.wrapping_mul(1i32.wrapping_shl(left as u32)), m),
        right,
    )
}

/// [`requant`] or [`tflite_mbqm`], as the model's rounding says.
pub fn requant_with(r: crate::quant::Rounding, acc: i64, m: i32, shift: i32) -> i64 {
    match r {
        crate::quant::Rounding::Single => requant(acc, m, shift),
        crate::quant::Rounding::Double => tflite_mbqm(acc as i32, m, shift) as i64,
    }
}

fn finish(st: &Stage, c: usize, acc: i64) -> i8 {
    let (_, rq) = st.channel(c);
    let v = requant_with(st.rounding, acc, rq.multiplier, rq.shift) + st.zero_point as i64;
    v.clamp(st.act_min as i64, st.act_max as i64) as i8
}

fn bias(st: &Stage, c: usize) -> i64 {
    st.channel(c).0 as i64
}

/// Full-resolution convolution, then a separate max-pool when the geometry has one.
pub fn conv2d(
    input: &[i8],
    zp: i32,
    w: &[i8],
    g: &ConvGeom,
    st: &Stage,
    depthwise: bool,
) -> Vec<i8> {
    let mut conv = vec![0i8; g.conv_h * g.conv_w * g.out_c];
    for oy in 0..g.conv_h {
        for ox in 0..g.conv_w {
            for oc in 0..g.out_c {
                let mut acc = bias(st, oc);
                for ky in 0..g.k_h {
                    for kx in 0..g.k_w {
                        let iy = (oy * g.stride_h + ky) as i64 - g.pad_top as i64;
                        let ix = (ox * g.stride_w + kx) as i64 - g.pad_left as i64;
                        let inside = iy >= 0 && ix >= 0 && iy < g.in_h as i64 && ix < g.in_w as i64;
                        let chans = if depthwise { oc..oc + 1 } else { 0..g.in_c };
                        for ic in chans {
                            // Padding holds the input zero point, i.e. real zero.
                            let x = if inside {
                                input[((iy as usize) * g.in_w + ix as usize) * g.in_c + ic] as i64
                            } else {
                                zp as i64
                            };
                            let wi = if depthwise {
                                (ky * g.k_w + kx) * g.in_c + ic
                            } else {
                                ((oc * g.k_h + ky) * g.k_w + kx) * g.in_c + ic
                            };
                            acc += (x - zp as i64) * w[wi] as i64;
                        }
                    }
                }
                conv[(oy * g.conv_w + ox) * g.out_c + oc] = finish(st, oc, acc);
            }
        }
    }
    if g.pool_k == 1 && g.pool_s == 1 {
        return conv;
    }
    match PoolGeom::new(
        g.conv_h,
        g.conv_w,
        g.out_c,
        (g.pool_k, g.pool_k),
        (g.pool_s, g.pool_s),
    ) {
        Some(pg) => max_pool2d(&conv, &pg),
        None => conv, // unreachable: ConvGeom::new checked the pool fits
    }
}

pub fn max_pool2d(input: &[i8], g: &PoolGeom) -> Vec<i8> {
    let mut out = vec![0i8; g.out_h * g.out_w * g.c];
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for c in 0..g.c {
                let mut m = i8::MIN;
                for ky in 0..g.k_h {
                    for kx in 0..g.k_w {
                        let iy = (oy * g.s_h + ky) as i64 - g.pad as i64;
                        let ix = (ox * g.s_w + kx) as i64 - g.pad as i64;
                        if iy < 0 || ix < 0 || iy >= g.in_h as i64 || ix >= g.in_w as i64 {
                            continue; // padding never wins
                        }
                        m = m.max(input[(iy as usize * g.in_w + ix as usize) * g.c + c]);
                    }
                }
                out[(oy * g.out_w + ox) * g.c + c] = m;
            }
        }
    }
    out
}

fn mean_away(sum: i64, n: i64) -> i8 {
    // Exact: compare twice the remainder with the divisor.
    let q = sum.abs() / n;
    let q = if 2 * (sum.abs() % n) >= n { q + 1 } else { q };
    (if sum < 0 { -q } else { q }).clamp(-128, 127) as i8
}

pub fn avg_pool2d(input: &[i8], g: &PoolGeom) -> Vec<i8> {
    let mut out = vec![0i8; g.out_h * g.out_w * g.c];
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for c in 0..g.c {
                let mut s = 0i64;
                for ky in 0..g.k_h {
                    for kx in 0..g.k_w {
                        s += input[((oy * g.s_h + ky) * g.in_w + ox * g.s_w + kx) * g.c + c] as i64;
                    }
                }
                out[(oy * g.out_w + ox) * g.c + c] = mean_away(s, (g.k_h * g.k_w) as i64);
            }
        }
    }
    out
}

pub fn global_avg_pool(input: &[i8], c_n: usize) -> Vec<i8> {
    let n = (input.len() / c_n) as i64;
    (0..c_n)
        .map(|c| mean_away((0..n as usize).map(|p| input[p * c_n + c] as i64).sum(), n))
        .collect()
}

pub fn fully_connected(input: &[i8], zp: i32, w: &[i8], st: &Stage, out_n: usize) -> Vec<i8> {
    (0..out_n)
        .map(|o| {
            let mut acc = bias(st, o);
            for (i, &x) in input.iter().enumerate() {
                acc += (x as i64 - zp as i64) * w[o * input.len() + i] as i64;
            }
            finish(st, o, acc)
        })
        .collect()
}

/// Residual add with the same integer semantics, in i64/i128 with no shortcuts.
pub fn add(a: &[i8], b: &[i8], p: &super::AddParams) -> Vec<i8> {
    let sh = super::ADD_LEFT_SHIFT;
    let rq =
        |acc: i64, q: crate::quant::Requant| requant_with(p.rounding, acc, q.multiplier, q.shift);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let xa = rq((x as i64 - p.zp_a as i64) << sh, p.rq_a);
            let yb = rq((y as i64 - p.zp_b as i64) << sh, p.rq_b);
            let v = rq(xa + yb, p.rq_out) + p.zp_out as i64;
            v.clamp(p.act_min as i64, p.act_max as i64) as i8
        })
        .collect()
}

/// TensorFlow Lite's mean: the exact sum in i64, then the model's requantization.
pub fn mean(input: &[i8], p: &super::MeanParams) -> Vec<i8> {
    let c_n = p.channels;
    let n = input.len() / c_n;
    (0..c_n)
        .map(|c| {
            let sum: i64 = (0..n).map(|px| input[px * c_n + c] as i64).sum();
            let v = requant_with(
                p.rounding,
                sum - p.zp_sum as i64,
                p.requant.multiplier,
                p.requant.shift,
            );
            (v + p.zero_point as i64).clamp(-128, 127) as i8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::quant::Requant;
    use proptest::prelude::*;

    /// A layer's output stage as a blob holds it: per-channel biases and multipliers, the
    /// zero point, the clamp and the model's rounding.
    #[derive(Debug, Clone)]
    struct StageCase {
        bias: Vec<u8>,
        rq: Vec<u8>,
        zp: i8,
        lo: i8,
        hi: i8,
        rounding: crate::quant::Rounding,
    }

    impl StageCase {
        /// The first `n` channels as a kernel's [`Stage`] with `taps` terms per accumulator.
        fn stage(&self, n: usize, taps: usize) -> Stage<'_> {
            Stage {
                small_acc: super::super::small_acc(&self.bias[..4 * n], taps),
                bias: &self.bias[..4 * n],
                requant: &self.rq[..8 * n],
                zero_point: self.zp as i32,
                act_min: self.lo as i32,
                act_max: self.hi as i32,
                rounding: self.rounding,
            }
        }

        /// Shifts above 0 cut to 0 under TensorFlow Lite's rounding, whose left shift wraps
        /// and so is not monotonic: the loader refuses such a stage before a fused pool.
        fn monotonic(mut self) -> StageCase {
            if self.rounding == crate::quant::Rounding::Double {
                for ch in self.rq.chunks_exact_mut(8) {
                    let shift = i32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
                    ch[4..].copy_from_slice(&shift.min(0).to_le_bytes());
                }
            }
            self
        }
    }

    /// Random output stages of `n` channels: biases mostly small (in half the cases all of
    /// them), sometimes up to the bound
    /// every layer accepts; every valid multiplier (0, or [2^30, 2^31)) over the whole shift
    /// range (above 0 included), weighted towards the shifts real layers use (-14..-4); both
    /// roundings; clamps of the whole range, a ReLU at the zero point, or any `lo <= hi`
    /// (ReLU6 and narrower).
    fn stage_bytes(n: usize) -> impl Strategy<Value = StageCase> {
        (
            proptest::collection::vec(
                prop_oneof![9 => -20_000i32..20_000, 1 => -MAX_BIAS..=MAX_BIAS],
                n,
            ),
            proptest::collection::vec(
                (
                    prop_oneof![9 => (1i32 << 30)..=i32::MAX, 1 => Just(0)],
                    prop_oneof![3 => -14i32..-4, 1 => crate::quant::MIN_SHIFT..=crate::quant::MAX_SHIFT],
                ),
                n,
            ),
            any::<i8>(),
            (0u8..4, any::<i8>(), any::<i8>()),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(b, r, zp, (clamp, a, c), double, all_small)| {
                // Half the cases keep every bias small, so that wide layers also take the
                // kernels' small-accumulator requantization (`Stage::small_acc`).
                let bias = b
                    .iter()
                    .map(|&v| if all_small { v % 20_000 } else { v })
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                let rq = r
                    .iter()
                    .flat_map(|&(m, s)| {
                        let q = Requant {
                            multiplier: m,
                            shift: s,
                        };
                        let mut v = q.multiplier.to_le_bytes().to_vec();
                        v.extend(q.shift.to_le_bytes());
                        v
                    })
                    .collect();
                let (lo, hi) = match clamp {
                    0 => (-128, 127),
                    1 => (zp, 127),
                    _ => (a.min(c), a.max(c)),
                };
                let rounding = if double {
                    crate::quant::Rounding::Double
                } else {
                    crate::quant::Rounding::Single
                };
                StageCase {
                    bias,
                    rq,
                    zp,
                    lo,
                    hi,
                    rounding,
                }
            })
    }

    fn stage<'a>(bias: &'a [u8], rq: &'a [u8], zp: i8, relu: bool) -> Stage<'a> {
        Stage {
            small_acc: false,
            bias,
            requant: rq,
            zero_point: zp as i32,
            act_min: if relu { zp as i32 } else { -128 },
            act_max: 127,
            rounding: crate::quant::Rounding::Single,
        }
    }

    #[derive(Debug, Clone)]
    struct ConvCase {
        g: ConvGeom,
        x: Vec<i8>,
        w: Vec<i8>,
        zp: i8,
    }

    fn conv_case(depthwise: bool) -> impl Strategy<Value = ConvCase> {
        (
            1usize..9,
            1usize..9,
            1usize..6,
            1usize..6,
            1usize..4,
            1usize..4,
            (1usize..3, 1usize..3),
            0usize..3,
            0usize..4,
        )
            .prop_filter_map(
                "valid geometry",
                move |(h, w, ic, oc, kh, kw, s, p, pool)| {
                    let oc = if depthwise { ic } else { oc };
                    let pool = match pool {
                        0 => None,
                        1 => Some((2, 2)),
                        2 => Some((2, 1)),
                        // Nine conv outputs per window: more than one pass of four lanes.
                        _ => Some((3, 2)),
                    };
                    ConvGeom::new(
                        h,
                        w,
                        ic,
                        oc,
                        kh,
                        kw,
                        s,
                        crate::format::Padding::uniform(p.min(kh.max(kw) - 1) as u8),
                        pool,
                    )
                },
            )
            .prop_flat_map(move |g| {
                let wn = if depthwise {
                    g.k_h * g.k_w * g.in_c
                } else {
                    g.out_c * g.k_h * g.k_w * g.in_c
                };
                (
                    Just(g),
                    proptest::collection::vec(any::<i8>(), g.input_len()),
                    proptest::collection::vec(any::<i8>(), wn),
                    any::<i8>(),
                )
            })
            .prop_map(|(g, x, w, zp)| ConvCase { g, x, w, zp })
    }

    /// Convolutions of any tap count (a last partial weight word or none): the patch path's
    /// channel loop when the stage is in the SSAT form.
    fn patch_case() -> impl Strategy<Value = ConvCase> {
        (
            (1usize..9, 1usize..9),
            (1usize..17, 1usize..20),
            (1usize..4, 1usize..4),
            1usize..3,
            0usize..3,
        )
            .prop_filter_map("valid geometry", |((h, w), (ic, oc), (kh, kw), s, p)| {
                let pad = crate::format::Padding::uniform(p.min(kh.max(kw) - 1) as u8);
                ConvGeom::new(h, w, ic, oc, kh, kw, (s, s), pad, None)
            })
            .prop_flat_map(|g| {
                (
                    Just(g),
                    proptest::collection::vec(any::<i8>(), g.input_len()),
                    proptest::collection::vec(any::<i8>(), g.out_c * g.k_h * g.k_w * g.in_c),
                    any::<i8>(),
                )
            })
            .prop_map(|(g, x, w, zp)| ConvCase { g, x, w, zp })
    }

    /// `s` made into what TensorFlow Lite writes: its rounding, small biases, right shifts up
    /// to [`super::super::SSAT_MAX_SHIFT`], the whole int8 range as clamp.
    fn tflite_stage(mut s: StageCase, shifts: &[i32]) -> StageCase {
        s.rounding = crate::quant::Rounding::Double;
        (s.lo, s.hi) = (-128, 127);
        let channels = s.bias.chunks_exact_mut(4).zip(s.rq.chunks_exact_mut(8));
        for ((b, ch), &e) in channels.zip(shifts) {
            let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) % 20_000;
            b.copy_from_slice(&v.to_le_bytes());
            ch[4..].copy_from_slice(&e.to_le_bytes());
        }
        s
    }

    /// Depthwise 3x3 over channels in fours (the DSP path's windows, one or several groups and
    /// blocks of 16 channels), stride 1 or 2, padding 0 or 1 (border windows take the generic
    /// loop), no pool.
    fn dw3x3_case() -> impl Strategy<Value = ConvCase> {
        (
            1usize..10,
            1usize..10,
            1usize..10,
            1usize..3,
            1usize..3,
            [0u8..3, 0u8..3, 0u8..3, 0u8..3],
        )
            .prop_filter_map("valid geometry", |(h, w, groups, sh, sw, [t, l, b, r])| {
                let c = 4 * groups;
                // Any padding on each side, as TensorFlow's SAME pads (one-sided when the
                // stride leaves one row over), and inputs smaller than the window.
                let pad = crate::format::Padding {
                    top: t,
                    left: l,
                    bottom: b,
                    right: r,
                };
                ConvGeom::new(h, w, c, c, 3, 3, (sh, sw), pad, None)
            })
            .prop_flat_map(|g| {
                (
                    Just(g),
                    proptest::collection::vec(any::<i8>(), g.input_len()),
                    proptest::collection::vec(any::<i8>(), 9 * g.in_c),
                    any::<i8>(),
                )
            })
            .prop_map(|(g, x, w, zp)| ConvCase { g, x, w, zp })
    }

    /// Depthwise 3x3 stride 1 with at least four output rows (what the channel planes take):
    /// any channel count, any padding on each side.
    fn plane_case() -> impl Strategy<Value = ConvCase> {
        (
            2usize..12,
            1usize..8,
            1usize..12,
            [0u8..3, 0u8..3, 0u8..3, 0u8..3],
        )
            .prop_filter_map("four output rows", |(h, w, c, [t, l, b, r])| {
                let pad = crate::format::Padding {
                    top: t,
                    left: l,
                    bottom: b,
                    right: r,
                };
                ConvGeom::new(h, w, c, c, 3, 3, (1, 1), pad, None).filter(|g| g.out_h >= 4)
            })
            .prop_flat_map(|g| {
                (
                    Just(g),
                    proptest::collection::vec(any::<i8>(), g.input_len()),
                    proptest::collection::vec(any::<i8>(), 9 * g.in_c),
                    any::<i8>(),
                )
            })
            .prop_map(|(g, x, w, zp)| ConvCase { g, x, w, zp })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// TensorFlow Lite's 3x3 stride-1 layers on small maps take the channel planes
        /// (`depthwise_plane` says so) and equal the reference.
        #[test]
        fn depthwise_planes_match_reference(
            c in plane_case(),
            s in stage_bytes(12),
            shifts in proptest::collection::vec(-22i32..=-1, 12),
        ) {
            let s = tflite_stage(s, &shifts);
            let st = s.stage(c.g.out_c, c.g.k_h * c.g.k_w);
            let words = crate::kernels::dw_plane::plane_scratch_words(&c.g, &st);
            prop_assert!(words > 0);
            let mut scratch = vec![0u32; words];
            let mut out = vec![0i8; c.g.output_len()];
            prop_assert!(crate::kernels::dw_plane::depthwise_plane(
                &c.x, c.zp as i32, &c.w, &c.g, &st, &mut out, &mut scratch
            ));
            prop_assert_eq!(out, super::conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, true));
        }

        #[test]
        fn conv2d_matches_reference(c in conv_case(false), s in stage_bytes(8)) {
            // A fused pool needs a monotonic requantization (the loader's rule).
            let s = if c.g.pool_k > 1 || c.g.pool_s > 1 { s.monotonic() } else { s };
            let st = s.stage(c.g.out_c, c.g.k_h * c.g.k_w * c.g.in_c);
            let mut out = vec![0i8; c.g.output_len()];
            let want = super::conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, false);
            let mut scratch = vec![0u32; conv2d_scratch_words(&c.g, &st)];
            conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, &mut out, &mut scratch);
            prop_assert_eq!(&out, &want);
        }

        #[test]
        fn depthwise_matches_reference(c in conv_case(true), s in stage_bytes(8)) {
            let s = if c.g.pool_k > 1 || c.g.pool_s > 1 { s.monotonic() } else { s };
            let st = s.stage(c.g.out_c, c.g.k_h * c.g.k_w);
            let mut out = vec![0i8; c.g.output_len()];
            depthwise_conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, &mut out, &mut []);
            prop_assert_eq!(out, super::conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, true));
        }

        #[test]
        fn depthwise_3x3_in_fours_matches_reference(c in dw3x3_case(), s in stage_bytes(36)) {
            let st = s.stage(c.g.out_c, c.g.k_h * c.g.k_w);
            let mut out = vec![0i8; c.g.output_len()];
            depthwise_conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, &mut out, &mut []);
            prop_assert_eq!(out, super::conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, true));
        }

        /// The layers TensorFlow Lite writes (its rounding, small biases, shifts up to the
        /// runs' limit, the whole int8 range as clamp) take the runs path every time.
        #[test]
        fn depthwise_3x3_runs_match_reference(
            c in dw3x3_case(),
            s in stage_bytes(36),
            shifts in proptest::collection::vec(-22i32..=-1, 36),
        ) {
            let s = tflite_stage(s, &shifts);
            let st = s.stage(c.g.out_c, c.g.k_h * c.g.k_w);
            prop_assert!(st.ssat_form(crate::kernels::SSAT_MAX_SHIFT));
            let mut out = vec![0i8; c.g.output_len()];
            depthwise_conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, &mut out, &mut []);
            prop_assert_eq!(out, super::conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, true));
        }

        /// The patch path's channel loop (every stage TensorFlow Lite writes takes it).
        #[test]
        fn patch_channel_loop_matches_reference(
            c in patch_case(),
            s in stage_bytes(20),
            shifts in proptest::collection::vec(-31i32..=-1, 20),
        ) {
            let s = tflite_stage(s, &shifts);
            let st = s.stage(c.g.out_c, c.g.k_h * c.g.k_w * c.g.in_c);
            prop_assert!(st.ssat_form(31));
            let want = super::conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, false);
            let mut out = vec![0i8; c.g.output_len()];
            let mut scratch = vec![0u32; conv2d_scratch_words(&c.g, &st)];
            conv2d(&c.x, c.zp as i32, &c.w, &c.g, &st, &mut out, &mut scratch);
            prop_assert_eq!(&out, &want);
        }

        #[test]
        fn fc_matches_reference(
            x in proptest::collection::vec(any::<i8>(), 1..300),
            out_n in 1usize..12,
            zp: i8,
            wpool in proptest::collection::vec(any::<i8>(), 12 * 300),
            s in stage_bytes(12),
        ) {
            let st = s.stage(out_n, x.len());
            let w = &wpool[..out_n * x.len()];
            let mut out = vec![0i8; out_n];
            fully_connected(&x, zp as i32, w, &st, &mut out);
            prop_assert_eq!(out, super::fully_connected(&x, zp as i32, w, &st, out_n));
        }

        #[test]
        fn pools_match_reference(
            (h, w, c) in (1usize..10, 1usize..10, prop_oneof![1usize..5, 5usize..40]),
            (k, s) in ((1usize..4, 1usize..4), (1usize..4, 1usize..4)),
            seed in proptest::collection::vec(any::<i8>(), 9 * 9 * 40),
        ) {
            if let Some(g) = PoolGeom::new(h, w, c, k, s) {
                let x = &seed[..h * w * c];
                let mut out = vec![0i8; g.out_h * g.out_w * c];
                max_pool2d(x, &g, &mut out);
                prop_assert_eq!(&out, &super::max_pool2d(x, &g));
                for pad in 1..k.0.min(k.1) {
                    let pg = PoolGeom::padded(h, w, c, k, s, pad).unwrap();
                    let mut pout = vec![0i8; pg.out_h * pg.out_w * c];
                    max_pool2d(x, &pg, &mut pout);
                    prop_assert_eq!(&pout, &super::max_pool2d(x, &pg));
                }
                avg_pool2d(x, &g, &mut out);
                prop_assert_eq!(&out, &super::avg_pool2d(x, &g));
                let mut gap = vec![0i8; c];
                global_avg_pool(x, c, &mut gap);
                prop_assert_eq!(gap, super::global_avg_pool(x, c));
            }
        }
    }

    /// Kernels too large for four patches take the one-lane patch path (144 and 135 taps), and
    /// those too large for one patch the direct path (576 taps); with and without a fused pool
    /// and with -128 weights, all must agree with the reference.
    /// Kernels of 135 to 576 taps take the patch path with a large scratch; over
    /// PATCH_MAX_TAPS (1,152 taps here) and with a scratch too small (none) the direct path;
    /// with and without a fused pool and with -128 weights, all must agree with the reference.
    #[test]
    fn large_kernels_and_missing_scratch_match() {
        for (in_c, pool) in [
            (16, Some((2, 2))),
            (15, None),
            (64, Some((2, 2))),
            (64, None),
            (60, Some((3, 2))),
            (128, Some((2, 2))),
            (127, None),
        ] {
            large_kernel_case(in_c, pool);
        }
    }

    /// The public depthwise kernel with a geometry no blob can carry (its fields set by hand,
    /// sizes past 2^32 per axis) and empty slices: nothing to do, no panic (the plane path
    /// multiplied the plane's sides before checking them).
    #[test]
    fn depthwise_with_absurd_geometry_does_not_panic() {
        let big = 1usize << 33;
        let g = ConvGeom {
            in_h: big,
            in_w: big,
            in_c: 3,
            out_c: 3,
            k_h: 3,
            k_w: 3,
            stride_h: 1,
            pad_top: 1,
            pad_left: 1,
            conv_h: big,
            conv_w: big,
            pool_k: 1,
            pool_s: 1,
            out_h: big,
            out_w: big,
            stride_w: 1,
        };
        let st = stage(&[], &[], 0, false);
        depthwise_conv2d(&[], 0, &[], &g, &st, &mut [], &mut [0u32; 4]);
    }

    /// A zero multiplier with shift 0 (what `Requant::from_real(0.0)` encodes) under
    /// TensorFlow Lite's rounding: every output is the zero point. The patch loop derives its
    /// rounding from the stored shift, where `e = 0` would round negative sums to the zero
    /// point minus one, so such a layer must stay off it (it took it before).
    #[test]
    fn zero_multiplier_with_shift_zero_gives_the_zero_point() {
        let g = ConvGeom::new(
            3,
            4,
            4,
            2,
            1,
            1,
            (1, 1),
            crate::format::Padding::uniform(0),
            None,
        )
        .unwrap();
        let x: Vec<i8> = (0..g.input_len()).map(|i| (i as i8) - 20).collect();
        let w = [3i8, 1, 2, 5, -4, 7, 1, 1];
        let bias: Vec<u8> = [-500i32, 40].iter().flat_map(|v| v.to_le_bytes()).collect();
        let rq: Vec<u8> = [(0i32, 0i32), (1 << 30, -9)]
            .iter()
            .flat_map(|&(m, s)| m.to_le_bytes().into_iter().chain(s.to_le_bytes()))
            .collect();
        let st = Stage {
            rounding: crate::quant::Rounding::Double,
            small_acc: true,
            ..stage(&bias, &rq, 5, false)
        };
        assert!(!st.ssat_form(31));
        let want = super::conv2d(&x, 2, &w, &g, &st, false);
        assert!(want.iter().step_by(2).all(|&v| v == 5));
        let mut out = vec![0i8; g.output_len()];
        let mut scratch = vec![0u32; conv2d_scratch_words(&g, &st)];
        conv2d(&x, 2, &w, &g, &st, &mut out, &mut scratch);
        assert_eq!(out, want);
    }

    fn large_kernel_case(in_c: usize, pool: Option<(usize, usize)>) {
        let g = ConvGeom::new(
            5,
            4,
            in_c,
            3,
            3,
            3,
            (1, 1),
            crate::format::Padding::uniform(1),
            pool,
        )
        .unwrap();
        assert!(g.k_h * g.k_w * g.in_c > 128);
        let x: Vec<i8> = (0..g.input_len())
            .map(|i| (i * 73 % 256) as u8 as i8)
            .collect();
        let w: Vec<i8> = (0..3 * 9 * in_c)
            .map(|i| ((i * 29 % 256) as i32 - 128) as i8)
            .collect();
        let bias: Vec<u8> = [5i32, -7, 1000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let rq: Vec<u8> = [0.0002f64, 0.0003, 0.0001]
            .iter()
            .flat_map(|&r| {
                let q = Requant::from_real(r).unwrap();
                q.multiplier
                    .to_le_bytes()
                    .into_iter()
                    .chain(q.shift.to_le_bytes())
            })
            .collect();
        let st = stage(&bias, &rq, -3, false);
        assert_eq!(
            conv2d_scratch_words(&g, &st) == 0,
            g.k_h * g.k_w * g.in_c > PATCH_MAX_TAPS
        );
        let want = super::conv2d(&x, 9, &w, &g, &st, false);
        let mut out = vec![0i8; g.output_len()];
        let mut scratch = vec![0u32; conv2d_scratch_words(&g, &st)];
        conv2d(&x, 9, &w, &g, &st, &mut out, &mut scratch);
        assert_eq!(out, want, "in_c {in_c}, pool {pool:?}");
        out.fill(0);
        conv2d(&x, 9, &w, &g, &st, &mut out, &mut []);
        assert_eq!(out, want, "no scratch: in_c {in_c}, pool {pool:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Bit-exact against the reference, and within one output step of the real sum.
        #[test]
        fn add_matches_reference_and_real_arithmetic(
            x in proptest::collection::vec(any::<i8>(), 1..64),
            y_seed in proptest::collection::vec(any::<i8>(), 64),
            (sa, sb, so) in (0.001f64..0.5, 0.001f64..0.5, 0.002f64..1.0),
            (za, zb, zo) in (any::<i8>(), any::<i8>(), any::<i8>()),
        ) {
            let y = &y_seed[..x.len()];
            let p = AddParams::from_scales(sa, za as i32, sb, zb as i32, so, zo as i32, -128, 127).unwrap();
            let mut out = vec![0i8; x.len()];
            add(&x, y, &p, &mut out);
            prop_assert_eq!(&out, &super::add(&x, y, &p));
            for i in 0..x.len() {
                let real = sa * (x[i] as f64 - za as f64) + sb * (y[i] as f64 - zb as f64);
                let want = (real / so).round() + zo as f64;
                if (-127.0..=126.0).contains(&want) {
                    prop_assert!((out[i] as f64 - want).abs() <= 1.0, "{} vs {}", out[i], want);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// TensorFlow Lite's rounding (the one-multiply form when its shifts allow, else the
        /// general one), equal scales among the cases (an input multiplier of exactly 1/2,
        /// no shift), any clamp.
        #[test]
        fn tflite_add_matches_reference(
            x in proptest::collection::vec(any::<i8>(), 1..64),
            y_seed in proptest::collection::vec(any::<i8>(), 64),
            (sa, sb, so) in (0.001f64..0.5, 0.001f64..0.5, 0.0001f64..1.0),
            same in any::<bool>(),
            (za, zb, zo) in (any::<i8>(), any::<i8>(), any::<i8>()),
            (lo, hi) in (any::<i8>(), any::<i8>()),
        ) {
            let y = &y_seed[..x.len()];
            let sb = if same { sa } else { sb };
            let (lo, hi) = (lo.min(hi) as i32, lo.max(hi) as i32);
            let p = AddParams::from_scales(sa, za as i32, sb, zb as i32, so, zo as i32, lo, hi);
            let Some(mut p) = p else { return Ok(()) };
            p.rounding = crate::quant::Rounding::Double;
            let mut out = vec![0i8; x.len()];
            add(&x, y, &p, &mut out);
            prop_assert_eq!(&out, &super::add(&x, y, &p));
        }
    }

    /// Windows past 255 pixels (whose sums leave halfwords) and of exactly 255, all -128 or
    /// all 127 (the extreme sums), over channels in words and a tail.
    #[test]
    fn large_average_windows_match_reference() {
        for (h, w) in [(15, 17), (16, 17), (25, 5)] {
            for fill in [-128i8, 127, 3] {
                let c = 22;
                let x: Vec<i8> = (0..h * w * c)
                    .map(|i| {
                        if fill == 3 {
                            (i * 7 % 256) as u8 as i8
                        } else {
                            fill
                        }
                    })
                    .collect();
                let g = PoolGeom::new(h, w, c, (h, w), (h, w)).unwrap();
                let mut out = vec![0i8; c];
                avg_pool2d(&x, &g, &mut out);
                assert_eq!(out, super::avg_pool2d(&x, &g), "{h}x{w} fill {fill}");
            }
        }
    }

    #[test]
    fn average_ties_round_away_from_zero() {
        // Exact answers: means 0.5, -0.5, 1.5, -1.5, 0.25.
        let g = PoolGeom::new(1, 2, 1, (1, 1), (1, 1)).unwrap();
        let _ = g;
        let cases: &[(&[i8], i8)] = &[
            (&[0, 1], 1),
            (&[0, -1], -1),
            (&[1, 2], 2),
            (&[-1, -2], -2),
            (&[127, 127], 127),
            (&[-128, -127], -128),
        ];
        for &(x, want) in cases {
            let mut out = [0i8; 1];
            global_avg_pool(x, 1, &mut out);
            assert_eq!(out[0], want, "{x:?}");
        }
        let mut out = [0i8; 1];
        global_avg_pool(&[0, 0, 0, 1], 1, &mut out);
        assert_eq!(out[0], 0, "0.25 rounds down");
    }
}
