//! The patch path's channel loop for layers in [`Stage::ssat_form`]: six gathered receptive
//! fields times every output channel, each channel's six sums requantized and stored as
//! they come (one loop on the device, in the DSP extension's instructions; a Rust model of it
//! for every other target, which the host tests check against the reference and the QEMU
//! parity tests check against the device).
//!
//! [`Stage::ssat_form`]: super::Stage::ssat_form

/// What [`patch_channels`]'s device loop reads besides the patch and the weights: addresses
/// it walks, the groups left for the first pass (the loop takes four groups per pass, the
/// first pass `groups % 4` of them when that is not 0), the output zero point and channel
/// count, and how far each channel's last word reads into the next channel's weights. Set by [`patch_channels`] from checked slices; the device code reads the
/// fields at fixed offsets (asserted below).
#[repr(C)]
#[derive(Debug, Default)]
struct Walk {
    patch: usize,
    lead: usize,
    patch_end: usize,
    bias: usize,
    requant: usize,
    zp: i32,
    out_c: usize,
    out_end: usize,
    pad: usize,
}

#[cfg(target_arch = "arm")]
const _: () = {
    assert!(core::mem::offset_of!(Walk, lead) == 4);
    assert!(core::mem::offset_of!(Walk, bias) == 12);
    assert!(core::mem::offset_of!(Walk, zp) == 20);
    assert!(core::mem::offset_of!(Walk, out_end) == 28);
    assert!(core::mem::offset_of!(Walk, pad) == 32);
};

/// The receptive fields the loop takes together (the patch's lanes).
pub const LANES: usize = 6;

/// Every output channel `oc < out_c` for the six lanes of `patch` (`ceil(taps / 4)` groups
/// of four taps, the lanes interleaved per group as the patch path's gather writes them, the
/// last group's pad taps zero): the sum starts from the bias (i32 LE at `bias[4 oc..]`), takes
/// the weights at `weights[oc * taps..]` a word at a time (SXTB16 and SMLAD, each word read
/// once for the six lanes; a last word's bytes past the channel's taps meet the patch's
/// zeros), and is requantized with `requant[8 oc..]` (`[m, shift]` i32 LE, every channel in
/// [`Stage::ssat_form`]: `e = -shift` in `1..=31`) into lane `l`'s byte at
/// `out[l * out_c + oc]`. On the device 21.5 instructions per 24 MACs plus about 74 per
/// channel; when the last channel's last word would read past `weights`, that channel is
/// computed in Rust. `false` and nothing written if a slice is too short (unreachable for a
/// validated layer).
///
/// [`Stage::ssat_form`]: super::Stage::ssat_form
#[inline(always)]
pub fn patch_channels(
    patch: &[u32],
    (weights, taps): (&[i8], usize),
    (bias, requant, zp): (&[u8], &[u8], i32),
    out: &mut [i8],
    out_c: usize,
) -> bool {
    let groups = taps.div_ceil(4);
    let fits = groups >= 1
        && out_c >= 1
        && groups
            .checked_mul(2 * LANES)
            .is_some_and(|n| n <= patch.len())
        && taps.checked_mul(out_c).is_some_and(|n| n <= weights.len())
        && out_c.checked_mul(4).is_some_and(|n| n <= bias.len())
        && out_c.checked_mul(LANES).is_some_and(|n| n <= out.len())
        && out_c.checked_mul(8).is_some_and(|n| n <= requant.len())
        && (-128..=127).contains(&zp);
    if !fits {
        return false;
    }
    // The leading channels whose last word lies within `weights` go through the device loop;
    // the others (the last one or, for fewer than three taps, a few) through a copy with
    // room for the last word (or, past `TAIL_MAX` taps, through Rust).
    let whole = whole_channels(weights.len(), taps, out_c);
    // The walk over `n` channels from `ch`, writing from `out`.
    let walk = |ch: usize, n: usize, out: &[i8]| Walk {
        patch: patch.as_ptr() as usize,
        lead: groups % 4,
        patch_end: patch.as_ptr().wrapping_add(2 * LANES * groups) as usize,
        bias: bias.as_ptr().wrapping_add(4 * ch) as usize,
        requant: requant.as_ptr().wrapping_add(8 * ch) as usize,
        zp,
        out_c,
        out_end: out.as_ptr().wrapping_add(n) as usize,
        pad: 4 * groups - taps,
    };
    if whole > 0 {
        let mut w = walk(0, whole, out);
        imp::patch_channels(patch, (weights, taps), (bias, requant), out, &mut w);
    }
    for oc in whole..out_c {
        // Within `weights` (`fits` checked `taps * out_c` against its length): never the
        // empty default. A `let ... else` here cost image classification 10,600 instructions
        // through the loop's inlining.
        let last = weights.get(oc * taps..(oc + 1) * taps).unwrap_or_default();
        let mut copy = [0i8; TAIL_MAX.next_multiple_of(4)];
        match copy.get_mut(..taps) {
            Some(c) => {
                c.copy_from_slice(last);
                let out = out.get_mut(oc..).unwrap_or_default();
                let mut w = walk(oc, 1, out);
                let stage = (&bias[4 * oc..], &requant[8 * oc..]);
                imp::patch_channels(patch, (&copy, taps), stage, out, &mut w);
            }
            None => {
                let stage = (&bias[4 * oc..], &requant[8 * oc..], zp);
                for (l, v) in channel(patch, last, stage).into_iter().enumerate() {
                    out[l * out_c + oc] = v;
                }
            }
        }
    }
    true
}

/// How many leading channels of `taps` taps each (at most `out_c`) have their words, `4
/// ceil(taps / 4)` bytes from `oc * taps`, within `len` bytes of weights.
#[inline(always)]
fn whole_channels(len: usize, taps: usize, out_c: usize) -> usize {
    let span = 4 * taps.div_ceil(4);
    // The usual cases first: every channel, or all but the last (three taps or more).
    let all_but = |n: usize| n.checked_mul(taps).and_then(|v| v.checked_add(span));
    if all_but(out_c.saturating_sub(1)).is_some_and(|end| end <= len) {
        return out_c;
    }
    if taps >= 3 && all_but(out_c.saturating_sub(2)).is_some_and(|end| end <= len) {
        return out_c - 1;
    }
    match (len.checked_sub(span), taps) {
        (Some(rest), 1..) => (rest / taps + 1).min(out_c),
        _ => 0,
    }
}

/// The most taps of a channel [`patch_channels`] copies to the stack when its last word would
/// read past the weights (first layers: 3x3x3 = 27, 5x5x3 = 75).
const TAIL_MAX: usize = 124;

/// One channel's six output bytes, as the device loop computes them: `w` the channel's
/// taps (a last partial word zero-filled), `bias` and `requant` from its first byte.
fn channel(patch: &[u32], w: &[i8], (bias, requant, zp): (&[u8], &[u8], i32)) -> [i8; LANES] {
    use super::dsp::{smlad, sxtb16, sxtb16_ror8};
    let word = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut acc = [word(bias); LANES];
    for (g, w4) in w.chunks(4).enumerate() {
        let mut b = [0u8; 4];
        for (d, &s) in b.iter_mut().zip(w4) {
            *d = s as u8;
        }
        let ww = u32::from_le_bytes(b);
        let (we, wo) = (sxtb16(ww), sxtb16_ror8(ww));
        for (l, a) in acc.iter_mut().enumerate() {
            let p = &patch[2 * LANES * g + 2 * l..];
            // SMLAD wraps: only the final sum is bounded.
            let lo = smlad(p[0], we, 0);
            let hi = smlad(p[1], wo, 0);
            *a = a.wrapping_add(lo).wrapping_add(hi);
        }
    }
    // The parts as the device derives them from the raw shift (`e = -shift`, `2^e` by LSL,
    // halved by LSR): for the shifts the loader accepts (`e` in `-30..=31`) this computes what
    // the device does (past 31 the device's ASR would fill with the sign, not wrap).
    let (m, e) = (word(requant), word(&requant[4..]).wrapping_neg());
    let half = 1u32.checked_shl(e as u32).unwrap_or(0) >> 1;
    acc.map(|a| super::ssat_requant(a, [m, half as i32, e & 31], zp))
}

#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[allow(unsafe_code)]
mod imp {
    /// One group of four taps for the six lanes: one weight word, two SXTB16, six LDRD and
    /// twelve SMLAD (lane `l`'s words at `8 l` bytes into the group).
    macro_rules! group {
        () => {
            "ldr {w}, [{wp}], #4
             sxtb16 {we}, {w}
             sxtb16 {w}, {w}, ror #8
             ldrd {x}, {y}, [{pp}, #8]
             smlad {a1}, {x}, {we}, {a1}
             smlad {a1}, {y}, {w}, {a1}
             ldrd {x}, {y}, [{pp}, #16]
             smlad {a2}, {x}, {we}, {a2}
             smlad {a2}, {y}, {w}, {a2}
             ldrd {x}, {y}, [{pp}, #24]
             smlad {a3}, {x}, {we}, {a3}
             smlad {a3}, {y}, {w}, {a3}
             ldrd {x}, {y}, [{pp}, #32]
             smlad {a4}, {x}, {we}, {a4}
             smlad {a4}, {y}, {w}, {a4}
             ldrd {x}, {y}, [{pp}, #40]
             smlad {a5}, {x}, {we}, {a5}
             smlad {a5}, {y}, {w}, {a5}
             ldrd {x}, {y}, [{pp}], #48
             smlad {a0}, {x}, {we}, {a0}
             smlad {a0}, {y}, {w}, {a0}"
        };
    }

    /// Lane accumulator `$a` (`acc`) requantized with `m` in `{w}`, the rounding constant in
    /// `{x}` and `e` in `{we}`: `(SMMLAR(2 acc, m, x) + (acc >> 31)) >> e`
    /// ([`super::super::ssat_requant`]), plus the zero point in `{pp}` when `zp` is given
    /// (otherwise `{x}` holds it), SSAT.
    #[rustfmt::skip]
    macro_rules! lane {
        ($a:literal $(, $zp:ident)?) => {
            concat!(
                "lsl {", $a, "}, {", $a, "}, #1\n",
                "smmlar {y}, {", $a, "}, {w}, {x}\n",
                "add {", $a, "}, {y}, {", $a, "}, asr #31\n",
                "asr {", $a, "}, {", $a, "}, {we}\n",
                $(lane!(@$zp $a),)?
                "ssat {", $a, "}, #8, {", $a, "}\n",
            )
        };
        (@zp $a:literal) => { concat!("add {", $a, "}, {", $a, "}, {pp}\n") };
    }

    /// The six lanes (`zp`: each adds the zero point).
    #[rustfmt::skip]
    macro_rules! lanes {
        ($($zp:ident)?) => {
            concat!(
                lane!("a0" $(, $zp)?), lane!("a1" $(, $zp)?), lane!("a2" $(, $zp)?),
                lane!("a3" $(, $zp)?), lane!("a4" $(, $zp)?), lane!("a5" $(, $zp)?),
            )
        };
    }

    /// The caller checked every bound; `walk` holds the addresses of the slices.
    #[inline(always)]
    pub fn patch_channels(
        _patch: &[u32],
        (weights, _taps): (&[i8], usize),
        _stage: (&[u8], &[u8]),
        out: &mut [i8],
        walk: &mut super::Walk,
    ) {
        // SAFETY: per channel `oc` below the walk's end: reads the `12 groups` patch words
        // (LDRD, the scratch is word-aligned), `4 groups` weight bytes at `oc * taps` (the
        // caller checked the last channel's words fit), the bias word and the two
        // requantization words (LDR, unaligned allowed on Armv7E-M and Armv8-M Mainline), and
        // writes the bytes `l * out_c + oc` (l < 6) of `out`: all within the slices the caller
        // checked. Updates `walk`'s bias and requantization addresses. Eight bytes of stack
        // (the walk's and the output's addresses), given back at the end.
        unsafe {
            core::arch::asm!(
                "strd {a4}, {a5}, [sp, #-8]!",
                "1:",
                "ldr {x}, [sp]",
                "ldr {y}, [{x}, #12]",
                "ldr {a0}, [{y}], #4",
                "str {y}, [{x}, #12]",
                "mov {a1}, {a0}",
                "mov {a2}, {a0}",
                "mov {a3}, {a0}",
                "mov {a4}, {a0}",
                "mov {a5}, {a0}",
                "ldr {pp}, [{x}, #0]",
                // Four groups a pass; the first pass enters where `groups % 4` are left.
                "ldr {y}, [{x}, #4]",
                "cmp {y}, #0",
                "beq 2f",
                "cmp {y}, #2",
                "beq 4f",
                "bhi 3f",
                "b 5f",
                "2:",
                group!(),
                "3:",
                group!(),
                "4:",
                group!(),
                "5:",
                group!(),
                "cmp {pp}, {pe}",
                "bne 2b",
                // The next channel's taps start `pad` bytes before the last word's end.
                "ldr {pp}, [sp]",
                "ldr {x}, [{pp}, #32]",
                "sub {wp}, {wp}, {x}",
                // The channel's multiplier, shift and rounding constant `2^(e-1)`.
                "ldr {x}, [{pp}, #16]",
                "ldr {w}, [{x}], #4",
                "ldr {we}, [{x}], #4",
                "str {x}, [{pp}, #16]",
                "rsb {we}, {we}, #0",
                "mov {y}, #1",
                "lsl {y}, {y}, {we}",
                "lsr {x}, {y}, #1",
                "ldr {pp}, [{pp}, #20]",
                // Up to a shift of 22 the zero point rides in the rounding constant
                // (`|x| + 2^21 + 2^29 < 2^31`); past it, each lane adds it.
                "cmp {we}, #22",
                "bhi 6f",
                "mla {x}, {pp}, {y}, {x}",
                lanes!(),
                "b 7f",
                "6:",
                lanes!(zp),
                "7:",
                // Lane `l`'s byte at `op + l * out_c`.
                "ldrd {x}, {y}, [sp]",
                "ldr {pp}, [{x}, #24]",
                "strb {a0}, [{y}]",
                "strb {a1}, [{y}, {pp}]",
                "add {w}, {y}, {pp}, lsl #1",
                "strb {a2}, [{w}]",
                "strb {a3}, [{w}, {pp}]",
                "strb {a4}, [{w}, {pp}, lsl #1]",
                "add {w}, {w}, {pp}",
                "strb {a5}, [{w}, {pp}, lsl #1]",
                "add {y}, {y}, #1",
                "str {y}, [sp, #4]",
                "ldr {w}, [{x}, #28]",
                "cmp {y}, {w}",
                "bne 1b",
                "add sp, sp, #8",
                w = out(reg) _,
                x = out(reg) _,
                y = out(reg) _,
                we = out(reg) _,
                a0 = out(reg) _,
                a1 = out(reg) _,
                a2 = out(reg) _,
                a3 = out(reg) _,
                a4 = inout(reg) walk as *mut super::Walk => _,
                a5 = inout(reg) out.as_mut_ptr() => _,
                pp = out(reg) _,
                wp = inout(reg) weights.as_ptr() => _,
                pe = in(reg) walk.patch_end,
            );
        }
    }
}

#[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
mod imp {
    /// The device's loop in Rust (the caller checked every bound), a channel at a time.
    pub fn patch_channels(
        patch: &[u32],
        (weights, taps): (&[i8], usize),
        (bias, requant): (&[u8], &[u8]),
        out: &mut [i8],
        walk: &mut super::Walk,
    ) {
        let (out_c, zp) = (walk.out_c, walk.zp);
        let whole = walk.out_end - out.as_ptr() as usize;
        for oc in 0..whole {
            let w = &weights[oc * taps..(oc + 1) * taps];
            let stage = (&bias[4 * oc..], &requant[8 * oc..], zp);
            for (l, v) in super::channel(patch, w, stage).into_iter().enumerate() {
                out[l * out_c + oc] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::whole_channels;

    /// Every channel the device loop takes reads its last word within the weights, and it
    /// takes all such channels: with fewer than three taps a word spans more than one channel
    /// past the end (a 1x1 convolution of one input channel read two bytes past its weights
    /// when only the last channel was left out).
    #[test]
    fn the_device_loop_reads_only_within_the_weights() {
        for taps in 1usize..40 {
            let span = 4 * taps.div_ceil(4);
            for out_c in 1..12 {
                let len = taps * out_c;
                let whole = whole_channels(len, taps, out_c);
                for oc in 0..whole {
                    assert!(oc * taps + span <= len, "taps {taps} out_c {out_c} oc {oc}");
                }
                assert!(
                    whole == out_c || whole * taps + span > len,
                    "taps {taps} out_c {out_c}"
                );
            }
        }
    }
}
