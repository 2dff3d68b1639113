//! The 3x3 depthwise kernel's inner loop for four channels, with its requantization: the
//! layout it reads ([`Dw3Run`], [`Dw3Window`]), the device loop in the DSP extension's
//! instructions and a Rust model of it for every other target (the host tests run the model;
//! the QEMU parity tests check the device loop against the host).

use super::dsp::{pack, Dw3Taps};
use super::SSAT_MAX_SHIFT;

/// What [`dw3x3_run`] reads besides the input, for four channels and one placement of the
/// 3x3 window (the taps the padding leaves, [`Dw3Run::place`]): per tap the weights doubled
/// and pre-extended
/// (`taps[2 t] = (2 w0, 2 w2)`, `taps[2 t + 1] = (2 w1, 2 w3)`), and per channel the bias with
/// the input zero point folded in and doubled, `2 (bias - zp * sum of the taps' weights)`, so
/// the kernel multiplies raw input bytes and its sums are `2 acc` of the reference's `acc`
/// (wrapping on the way, exact at the end). Then [`Requant::double_small_parts`]'s form per
/// channel, `[m, add + (zp << e), e]`: with the output zero point `zp` in the rounding
/// constant, the shift gives the offset result, exact for `e <= 22` ([`SSAT_MAX_SHIFT`]),
/// and SSAT #8 clamps it, so the layer's clamp must be the whole int8 range. The last nine
/// fields are the geometry, set by [`dw3x3_run`]. The device code reads the fields at fixed offsets (asserted below).
///
/// [`Requant::double_small_parts`]: crate::quant::Requant::double_small_parts
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Dw3Run {
    taps: [u32; 18],
    bias: [i32; 4],
    rq: [[i32; 3]; 4],
    cn: usize,
    rs: usize,
    back: isize,
    ostep: usize,
    end: usize,
    rows: usize,
    xrow: isize,
    oadj: isize,
    orow: usize,
}

#[cfg(target_arch = "arm")]
const _: () = {
    assert!(core::mem::offset_of!(Dw3Run, bias) == 72);
    assert!(core::mem::offset_of!(Dw3Run, rq) == 88);
    assert!(core::mem::offset_of!(Dw3Run, cn) == 136);
    assert!(core::mem::offset_of!(Dw3Run, end) == 152);
    assert!(core::mem::offset_of!(Dw3Run, orow) == 168);
};

impl Dw3Run {
    /// The four channels' `[m, add, e]` and the output zero point `zp`, once per group.
    /// `false` (and `self` unchanged) if a shift is outside `1..=SSAT_MAX_SHIFT` or `zp` is
    /// not an int8.
    pub fn set_requant(&mut self, rq: [[i32; 3]; 4], zp: i32) -> bool {
        let fits = |&[_, _, e]: &[i32; 3]| (1..=SSAT_MAX_SHIFT).contains(&e);
        if !rq.iter().all(fits) || !(-128..=127).contains(&zp) {
            return false;
        }
        for (o, [m, add, e]) in self.rq.iter_mut().zip(rq) {
            *o = [m, add + (zp << e), e];
        }
        true
    }

    /// `whole`'s channels for a window the padding clips: window tap `(r, c)` takes kernel
    /// tap `(rows[r], cols[c])`, or none where either is 3 (or more); the biases give back the
    /// input zero point's share of every kernel tap left out. Out of line: its frame is not
    /// the kernel's.
    #[inline(never)]
    pub fn place(&mut self, whole: &Dw3Window, (rows, cols): ([u8; 3], [u8; 3]), in_zp: i32) {
        let mut used = 0u32;
        for (t, pair) in self.taps.chunks_exact_mut(2).enumerate() {
            let (r, c) = (rows[t / 3] as usize, cols[t % 3] as usize);
            let k = if r < 3 && c < 3 { 3 * r + c } else { 9 };
            let (e, o) = match whole.taps.get(2 * k..2 * k + 2) {
                Some(w) => {
                    used |= 1 << k;
                    (w[0], w[1])
                }
                None => (0, 0),
            };
            pair[0] = e;
            pair[1] = o;
        }
        self.bias = whole.bias;
        // The left-out taps' doubled weights, summed per channel (channels 0, 1, 2, 3).
        let mut unused = !used & 0x1ff;
        if unused == 0 {
            return;
        }
        let mut sums = [0i32; 4];
        while unused != 0 {
            let k = unused.trailing_zeros() as usize;
            unused &= unused - 1;
            if let Some(w) = whole.taps.get(2 * k..2 * k + 2) {
                sums[0] += lo16(w[0]);
                sums[1] += lo16(w[1]);
                sums[2] += hi16(w[0]);
                sums[3] += hi16(w[1]);
            }
        }
        for (b, s) in self.bias.iter_mut().zip(sums) {
            *b = b.wrapping_add(in_zp.wrapping_mul(s));
        }
    }
}

/// The whole 3x3 window of four channels for [`Dw3Run::place`]: the taps doubled and
/// pre-extended, the biases with the input zero point folded in and doubled.
#[derive(Clone, Copy, Debug)]
pub struct Dw3Window {
    taps: Dw3Taps,
    bias: [i32; 4],
}

impl Dw3Window {
    /// Channels `c..c + 4` of 3x3 depthwise `weights` (`[3, 3, cn]`), with `bias` per
    /// channel and `in_zp` the input's zero point. `None` if `weights` is too short.
    #[inline(never)]
    pub fn new(
        weights: &[i8],
        (c, cn): (usize, usize),
        bias: [i32; 4],
        in_zp: i32,
    ) -> Option<Dw3Window> {
        let mut win = Dw3Window {
            taps: [0; 18],
            bias: [0; 4],
        };
        let mut sums = [0i32; 4];
        for (k, pair) in win.taps.chunks_exact_mut(2).enumerate() {
            let at = k.checked_mul(cn)?.checked_add(c)?;
            let b = weights.get(at..at.checked_add(4)?)?;
            let d = |j: usize| 2 * b[j] as i16;
            pair[0] = pack(d(0), d(2));
            pair[1] = pack(d(1), d(3));
            for (s, &w) in sums.iter_mut().zip(b) {
                *s += w as i32;
            }
        }
        for ((o, b), s) in win.bias.iter_mut().zip(bias).zip(sums) {
            *o = b.wrapping_sub(in_zp.wrapping_mul(s)).wrapping_mul(2);
        }
        Some(win)
    }
}

/// The low halfword of `v`, signed.
#[inline(always)]
fn lo16(v: u32) -> i32 {
    v as u16 as i16 as i32
}

/// The high halfword of `v`, signed.
#[inline(always)]
fn hi16(v: u32) -> i32 {
    (v >> 16) as u16 as i16 as i32
}

/// A block of 3x3 depthwise windows for the four channels of `p`, `rows` rows of `n`:
/// window `i` of row `r` has its top-left input at `x0 + r * xrow + i * xstep` (the window's
/// rows `rs` bytes apart, columns `cn`) and writes its four output bytes at `o0 + r * orow +
/// i * ostep`. Each window's sums go straight to their requantization: on the device one loop
/// of 9 taps (one input word, two SXTB16, two weight words and four SMLAxy each) and four
/// requantizations (SMMULR, SMMLAR, an add, a shift and SSAT), about 124 instructions per 36
/// MACs. Returns `false` and writes nothing if the block does not fit
/// `input` or `out` (unreachable for a validated geometry).
#[inline(always)]
pub fn dw3x3_run(
    input: &[i8],
    (x0, xstep, xrow): (usize, usize, usize),
    (n, rows): (usize, usize),
    (cn, rs): (usize, usize),
    out: &mut [i8],
    (o0, ostep, orow): (usize, usize, usize),
    p: &mut Dw3Run,
) -> bool {
    // The last window's offset plus `tail`: every other window's lies below it.
    let last = |start: usize, step: usize, row: usize, tail: usize| {
        step.checked_mul(n.checked_sub(1)?)?
            .checked_add(row.checked_mul(rows.checked_sub(1)?)?)?
            .checked_add(start)?
            .checked_add(tail)
    };
    let tail = rs
        .checked_mul(2)
        .and_then(|v| v.checked_add(cn.checked_mul(2)?))
        .and_then(|v| v.checked_add(4));
    let x_end = tail.and_then(|t| last(x0, xstep, xrow, t));
    let o_end = last(o0, ostep, orow, 4);
    let (Some(x_end), Some(o_end)) = (x_end, o_end) else {
        return false;
    };
    if x_end > input.len() || o_end > out.len() {
        return false;
    }
    // Within `isize`: every offset is below a slice's length.
    p.cn = cn;
    p.rs = rs;
    p.back = xstep as isize - 2 * rs as isize;
    p.ostep = ostep;
    p.rows = rows;
    p.xrow = xrow as isize - (n * xstep) as isize;
    p.oadj = orow as isize - (n * ostep) as isize;
    p.orow = orow;
    imp::dw3x3_run(input, x0, n, out, o0, p);
    true
}

#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[allow(unsafe_code)]
mod imp {
    /// One tap of [`dw3x3_run`]'s window: the input word at `$addr`, the doubled weights at
    /// `[{p}, #$w0]` (channels 0 and 2) and `[{p}, #$w1]` (1 and 3).
    #[rustfmt::skip]
    macro_rules! dw_tap {
        ($addr:literal, $w0:literal, $w1:literal) => {
            concat!(
                "ldr {x}, ", $addr, "\n",
                "sxtb16 {t}, {x}\n",
                "sxtb16 {x}, {x}, ror #8\n",
                "ldr {w}, [{p}, #", $w0, "]\n",
                "smlabb {a0}, {t}, {w}, {a0}\n",
                "smlatt {a2}, {t}, {w}, {a2}\n",
                "ldr {w}, [{p}, #", $w1, "]\n",
                "smlabb {a1}, {x}, {w}, {a1}\n",
                "smlatt {a3}, {x}, {w}, {a3}\n",
            )
        };
    }

    /// The requantization of accumulator `$a` (`2 acc`) with `[m, add, e]` at `[{p}, #$rq]`:
    /// `(SMMLAR(2 acc, m, add) + (acc >> 31)) >> e` ([`super::super::ssat_requant`]; the zero
    /// point is in `add`),
    /// saturated to int8 and stored at `[{op}, #$i]`.
    #[rustfmt::skip]
    macro_rules! dw_lane {
        ($a:literal, $rq:literal, $e:literal, $i:literal) => {
            concat!(
                "ldrd {x}, {t}, [{p}, #", $rq, "]\n",
                "smmlar {w}, {", $a, "}, {x}, {t}\n",
                "add {", $a, "}, {w}, {", $a, "}, asr #31\n",
                "ldr {x}, [{p}, #", $e, "]\n",
                "asr {", $a, "}, {", $a, "}, {x}\n",
                "ssat {", $a, "}, #8, {", $a, "}\n",
                "strb {", $a, "}, [{op}, #", $i, "]\n",
            )
        };
    }

    /// The caller checked that every window's reads and writes fit and `n >= 1`.
    #[inline(always)]
    pub fn dw3x3_run(
        input: &[i8],
        x0: usize,
        n: usize,
        out: &mut [i8],
        o0: usize,
        p: &mut super::Dw3Run,
    ) {
        let op = out.as_mut_ptr().wrapping_add(o0);
        p.end = op.wrapping_add(n.wrapping_mul(p.ostep)) as usize;
        // SAFETY: window `i < n` of row `r < rows` reads four bytes at `x0 + r * xrow + i *
        // xstep + ky * rs + kx * cn` of `input` (ky, kx < 3; LDR, unaligned allowed on
        // Armv7E-M and Armv8-M Mainline) and writes four bytes at `o0 + r * orow + i * ostep`
        // of `out`, all within the bounds the caller checked; reads `p` and updates its row
        // end and row count. No stack.
        unsafe {
            core::arch::asm!(
                "ldr {cn}, [{p}, #136]",
                "ldr {rs}, [{p}, #140]",
                "2:",
                "ldrd {a0}, {a1}, [{p}, #72]",
                "ldrd {a2}, {a3}, [{p}, #80]",
                dw_tap!("[{xp}]", "0", "4"),
                dw_tap!("[{xp}, {cn}]", "8", "12"),
                dw_tap!("[{xp}, {cn}, lsl #1]", "16", "20"),
                "add {xp}, {xp}, {rs}",
                dw_tap!("[{xp}]", "24", "28"),
                dw_tap!("[{xp}, {cn}]", "32", "36"),
                dw_tap!("[{xp}, {cn}, lsl #1]", "40", "44"),
                "add {xp}, {xp}, {rs}",
                dw_tap!("[{xp}]", "48", "52"),
                dw_tap!("[{xp}, {cn}]", "56", "60"),
                dw_tap!("[{xp}, {cn}, lsl #1]", "64", "68"),
                "ldr {w}, [{p}, #144]",
                "add {xp}, {xp}, {w}",
                dw_lane!("a0", "88", "96", "0"),
                dw_lane!("a1", "100", "108", "1"),
                dw_lane!("a2", "112", "120", "2"),
                dw_lane!("a3", "124", "132", "3"),
                "ldr {w}, [{p}, #148]",
                "add {op}, {op}, {w}",
                "ldr {w}, [{p}, #152]",
                "cmp {op}, {w}",
                "bne 2b",
                // The next row: its first window and its end.
                "ldr {w}, [{p}, #160]",
                "add {xp}, {xp}, {w}",
                "ldr {w}, [{p}, #164]",
                "add {op}, {op}, {w}",
                "ldr {w}, [{p}, #152]",
                "ldr {x}, [{p}, #168]",
                "add {w}, {w}, {x}",
                "str {w}, [{p}, #152]",
                "ldr {w}, [{p}, #156]",
                "subs {w}, {w}, #1",
                "str {w}, [{p}, #156]",
                "bne 2b",
                x = out(reg) _,
                t = out(reg) _,
                w = out(reg) _,
                cn = out(reg) _,
                rs = out(reg) _,
                a0 = out(reg) _,
                a1 = out(reg) _,
                a2 = out(reg) _,
                a3 = out(reg) _,
                xp = inout(reg) input.as_ptr().wrapping_add(x0) => _,
                op = inout(reg) op => _,
                p = in(reg) p as *mut super::Dw3Run,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
mod imp {
    use super::super::dsp::{sxtb16, sxtb16_ror8};
    use super::{hi16 as hi, lo16 as lo};

    /// The device's loop: raw input bytes times the doubled weights from the folded biases
    /// (wrapping as SMLAxy does), then each channel's `[m, add, e]`.
    pub fn dw3x3_run(
        input: &[i8],
        x0: usize,
        n: usize,
        out: &mut [i8],
        o0: usize,
        p: &mut super::Dw3Run,
    ) {
        let xstep = (p.back + 2 * p.rs as isize) as usize;
        for w in 0..p.rows * n {
            let (r, i) = (w / n, w % n);
            let xrow = (p.xrow + (n * xstep) as isize) as usize;
            let xb = x0 + r * xrow + i * xstep;
            let mut acc = p.bias;
            for (t, wt) in p.taps.chunks_exact(2).enumerate() {
                let at = xb + (t / 3) * p.rs + (t % 3) * p.cn;
                let b = &input[at..at + 4];
                let word = u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]);
                let (xe, xo) = (sxtb16(word), sxtb16_ror8(word));
                let mac = |a: i32, x: i32, w: i32| a.wrapping_add(x * w);
                acc[0] = mac(acc[0], lo(xe), lo(wt[0]));
                acc[2] = mac(acc[2], hi(xe), hi(wt[0]));
                acc[1] = mac(acc[1], lo(xo), lo(wt[1]));
                acc[3] = mac(acc[3], hi(xo), hi(wt[1]));
            }
            let ob = o0 + r * p.orow + i * p.ostep;
            for ((o, a), [m, add, e]) in out[ob..ob + 4].iter_mut().zip(acc).zip(p.rq) {
                let x = ((a as i64 * m as i64 + (1 << 31)) >> 32) as i32;
                let v = (x.wrapping_add(add).wrapping_add(a >> 31)) >> e;
                *o = v.clamp(-128, 127) as i8;
            }
        }
    }
}
