//! The four Cortex-M DSP-extension instructions the int8 kernels are built from, and a Rust
//! model of each for every other target.
//!
//! The kernels are written once, in terms of these functions, so host tests run exactly the
//! data layout and the pairing of lanes the device runs; only these four bodies differ. Each
//! model is checked against its definition in the Armv7-M Architecture Reference Manual by the
//! tests below (and, on the device, by the host-vs-QEMU parity tests).
//!
//! A word holding two signed halfwords is written `(lo, hi)`.

/// `SXTB16 x`: sign-extend bytes 0 and 2 of `x` to the halfword pair `(x0, x2)`.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    imp::sxtb16(x)
}

/// `SXTB16 x, ROR #8`: sign-extend bytes 1 and 3 of `x` to the halfword pair `(x1, x3)`.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    imp::sxtb16_ror8(x)
}

/// `SXTAB16 a, x`: `a + (x0, x2)` halfword-wise (each lane wrapping to 16 bits; the kernels
/// only add an int8 to a negated zero point, `|x - zp| <= 255`).
#[inline(always)]
pub fn sxtab16(a: u32, x: u32) -> u32 {
    imp::sxtab16(a, x)
}

/// `SXTAB16 a, x, ROR #8`: `a + (x1, x3)` halfword-wise.
#[inline(always)]
pub fn sxtab16_ror8(a: u32, x: u32) -> u32 {
    imp::sxtab16_ror8(a, x)
}

/// Four dot products sharing their weights: for each of the whole weight words `w[g]` (four
/// int8 taps, read unaligned) and each lane `l`, with `p = &patch[8 g + 2 l..]`:
/// `acc[l] += SMLAD(p[0], SXTB16(w[g])) + SMLAD(p[1], SXTB16(w[g] ROR 8))`, the patch layout
/// of `conv`'s gather (the four lanes interleaved per group). On the device this is one
/// hand-scheduled loop, two groups per iteration: 16 instructions per 16 MACs. Taps past the
/// last whole word are the caller's.
#[inline(always)]
pub fn dot4(patch: &[u32], w: &[i8], acc: [i32; 4]) -> [i32; 4] {
    let groups = (w.len() / 4).min(patch.len() / 8);
    if groups == 0 {
        return acc;
    }
    imp::dot4(patch, w, groups, acc)
}

/// `max` over the four lanes of [`dot4`] started from `bias`: the raw accumulator of a 2x2
/// max-pool window (one requantization after it gives the pooled byte).
#[inline(always)]
pub fn dot4_max(patch: &[u32], w: &[i8], bias: i32) -> i32 {
    let groups = (w.len() / 4).min(patch.len() / 8);
    if groups == 0 {
        return bias;
    }
    imp::dot4_max(patch, w, groups, bias)
}

/// Two dot products sharing their input: for each whole input word `x[g]` (four int8, read
/// unaligned), `xe = SXTAB16(nzp, x)`, `xo = SXTAB16(nzp, x ROR 8)` (the input minus its zero
/// point, with `nzp = pair(-zp)`), then for each row `r`:
/// `acc[r] += SMLAD(xe, SXTB16(w_r[g])) + SMLAD(xo, SXTB16(w_r[g] ROR 8))`.
/// On the device one hand-scheduled loop: 15 instructions per 8 MACs. Inputs past the last
/// whole word are the caller's.
#[inline(always)]
pub fn fc2(x: &[i8], w0: &[i8], w1: &[i8], nzp: u32, acc: [i32; 2]) -> [i32; 2] {
    let groups = (x.len() / 4).min(w0.len() / 4).min(w1.len() / 4);
    if groups == 0 {
        return acc;
    }
    imp::fc2(x, w0, w1, groups, nzp, acc)
}

/// [`fc2`] for three consecutive rows of a row-major matrix: `w` starts at row 0 and holds
/// rows 0, 1, 2 at `w[0..]`, `w[stride..]`, `w[2 * stride..]`. 20 instructions per 12 MACs.
#[inline(always)]
pub fn fc3(x: &[i8], w: &[i8], stride: usize, nzp: u32, acc: [i32; 3]) -> [i32; 3] {
    let groups = (x.len() / 4).min(stride / 4);
    // `w.len() >= 2 * stride + 4 * groups` without computing `2 * stride`, which wraps on a
    // 32-bit target for a caller's huge stride (`4 * groups <= x.len()` cannot).
    let fits = stride <= w.len() / 2 && w.len() - 2 * stride >= 4 * groups;
    if groups == 0 || !fits {
        return acc;
    }
    imp::fc3(x, w, stride, groups, nzp, acc)
}

/// Taps of a 3x3 depthwise window, pre-extended per group of four channels: for tap `t`
/// (`ky * 3 + kx`), `w[2 t] = SXTB16(word)` (channels 0 and 2) and `w[2 t + 1] =
/// SXTB16(word ROR 8)` (channels 1 and 3), `word` the tap's four weight bytes.
pub type Dw3Taps = [u32; 18];

/// The four-channel weight word of each tap (`weights` `[3, 3, cn]`, channels `c..c + 4`),
/// pre-extended for [`dw3x3`]: window tap `t` takes the weights at `offsets[t] + c` (a kernel
/// tap's `(3 ky + kx) * cn`), or zero where it is `None` (a tap the padding clips). `None` if
/// `weights` is too short.
#[inline(always)]
pub fn dw3x3_taps(weights: &[i8], c: usize, offsets: &[Option<usize>; 9]) -> Option<Dw3Taps> {
    let mut out = [0u32; 18];
    for (pair, off) in out.chunks_exact_mut(2).zip(offsets) {
        if let Some(at) = off {
            let at = at.checked_add(c)?;
            let b = weights.get(at..at.checked_add(4)?)?;
            let word = u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]);
            pair[0] = sxtb16(word);
            pair[1] = sxtb16_ror8(word);
        }
    }
    Some(out)
}

/// One 3x3 depthwise window for four channels: `acc[j] += sum over taps (x[tap][j] - zp) *
/// w[tap][j]`, with `x` at the window's top-left pixel's channel `c` (the taps at `x[ky * rs +
/// kx * cn..]`, four bytes each, read unaligned), `nzp = pair(-zp)` and `w` from
/// [`dw3x3_taps`]. Per tap one input word, two SXTAB16 (input minus zero point, channels 0/2
/// and 1/3), two weight words and four SMLAxy: 83 instructions per 36 MACs on the device. A
/// slice too short for the window leaves `acc` unchanged (unreachable for a validated
/// geometry).
#[inline(always)]
pub fn dw3x3(x: &[i8], cn: usize, rs: usize, w: &Dw3Taps, nzp: u32, acc: [i32; 4]) -> [i32; 4] {
    let need = rs
        .checked_mul(2)
        .and_then(|v| v.checked_add(cn.checked_mul(2)?))
        .and_then(|v| v.checked_add(4));
    match need {
        Some(n) if x.len() >= n => imp::dw3x3(x, cn, rs, w, nzp, acc),
        _ => acc,
    }
}

/// `SADD16 a, b`: halfword-wise add, each lane wrapping to 16 bits. The kernels only add values
/// whose sum fits (an int8 minus a zero point: `|x - zp| <= 255`). The kernels reach it through
/// `sxtab16`; the tests call it directly.
#[cfg(test)]
#[inline(always)]
pub fn sadd16(a: u32, b: u32) -> u32 {
    imp::sadd16(a, b)
}

/// `SMLAD a, b, acc`: `acc + a.lo * b.lo + a.hi * b.hi` (signed halfwords). Validation bounds
/// every accumulator below 2^31 (see [`super::MAX_TAPS`]), so it never saturates or wraps.
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    imp::smlad(a, b, acc)
}

/// The halfword pair `(v, v)`.
#[inline(always)]
pub fn pair(v: i16) -> u32 {
    let h = v as u16 as u32;
    h | (h << 16)
}

/// The halfword pair `(lo, hi)`.
#[inline(always)]
pub fn pack(lo: i16, hi: i16) -> u32 {
    (lo as u16 as u32) | ((hi as u16 as u32) << 16)
}

/// One step of three fully connected rows: four inputs (`[{xp}]`, post-incremented) loaded
/// and offset by the zero point (`{nzp}`) with two SXTAB16, then for rows 1, 2 and 0 (at
/// `[{wp}, {s}]`, `[{wp}, {s}, lsl #1]` and `[{wp}]`, post-incremented) one weight word, two
/// SXTB16 and two SMLAD into `{a1}`, `{a2}`, `{a0}`: 19 instructions per 12 MACs. Shared by
/// [`fc3`] and the fully connected triples loop.
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[rustfmt::skip]
macro_rules! fc3_step {
    () => {
        concat!(
            "ldr {x}, [{xp}], #4\n",
            "sxtab16 {xe}, {nzp}, {x}\n",
            "sxtab16 {xo}, {nzp}, {x}, ror #8\n",
            "ldr {x}, [{wp}, {s}]\n",
            "sxtb16 {t}, {x}\n",
            "smlad {a1}, {xe}, {t}, {a1}\n",
            "sxtb16 {t}, {x}, ror #8\n",
            "smlad {a1}, {xo}, {t}, {a1}\n",
            "ldr {x}, [{wp}, {s}, lsl #1]\n",
            "sxtb16 {t}, {x}\n",
            "smlad {a2}, {xe}, {t}, {a2}\n",
            "sxtb16 {t}, {x}, ror #8\n",
            "smlad {a2}, {xo}, {t}, {a2}\n",
            "ldr {x}, [{wp}], #4\n",
            "sxtb16 {t}, {x}\n",
            "smlad {a0}, {xe}, {t}, {a0}\n",
            "sxtb16 {t}, {x}, ror #8\n",
            "smlad {a0}, {xo}, {t}, {a0}\n",
        )
    };
}
#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
pub(crate) use fc3_step;

#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[allow(unsafe_code)]
mod imp {
    /// One group of four taps for the four lanes: one weight word, two SXTB16, four LDRD and
    /// eight SMLAD (the lanes' words interleaved per group: 8, 16, 24 and 0 bytes ahead).
    macro_rules! dot4_group {
        () => {
            "ldr {w}, [{wp}], #4
             sxtb16 {we}, {w}
             sxtb16 {wo}, {w}, ror #8
             ldrd {w}, {p}, [{pp}, #8]
             smlad {a1}, {w}, {we}, {a1}
             smlad {a1}, {p}, {wo}, {a1}
             ldrd {w}, {p}, [{pp}, #16]
             smlad {a2}, {w}, {we}, {a2}
             smlad {a2}, {p}, {wo}, {a2}
             ldrd {w}, {p}, [{pp}, #24]
             smlad {a3}, {w}, {we}, {a3}
             smlad {a3}, {p}, {wo}, {a3}
             ldrd {w}, {p}, [{pp}], #32
             smlad {a0}, {w}, {we}, {a0}
             smlad {a0}, {p}, {wo}, {a0}"
        };
    }

    /// The whole loop over `{n}` groups, two per iteration (an odd count runs one first).
    macro_rules! dot4_loop {
        () => {
            concat!(
                "lsrs {n}, {n}, #1\n",
                "bcc 3f\n",
                dot4_group!(),
                "\ncmp {n}, #0\n",
                "beq 4f\n",
                "3:\n",
                dot4_group!(),
                "\n",
                dot4_group!(),
                "\nsubs {n}, {n}, #1\n",
                "bne 3b\n",
                "4:"
            )
        };
    }

    // SAFETY (every block): register arithmetic only, no memory access, no stack use, no flags
    // read (SMLAD may set Q, which nothing reads).
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x,
                options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x,
                options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    #[inline(always)]
    pub fn sxtab16(a: u32, x: u32) -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("sxtab16 {r}, {a}, {x}", r = lateout(reg) r, a = in(reg) a, x = in(reg) x,
                options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    #[inline(always)]
    pub fn sxtab16_ror8(a: u32, x: u32) -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("sxtab16 {r}, {a}, {x}, ror #8", r = lateout(reg) r, a = in(reg) a,
                x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    /// `groups >= 1`, `patch.len() >= 8 * groups`, `w.len() >= 4 * groups` (checked by the
    /// caller): the loop reads exactly those words.
    #[inline(always)]
    pub fn dot4(patch: &[u32], w: &[i8], groups: usize, acc: [i32; 4]) -> [i32; 4] {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: reads `4 * groups` bytes from `w` (LDR, unaligned allowed on Armv7-M) and
        // the first `8 * groups` words of `patch` (LDRD, word-aligned as a `u32` slice); the
        // caller's bounds hold both; no writes.
        unsafe {
            core::arch::asm!(
                dot4_loop!(),
                w = out(reg) _,
                we = out(reg) _,
                wo = out(reg) _,
                p = out(reg) _,
                wp = inout(reg) w.as_ptr() => _,
                pp = inout(reg) patch.as_ptr() => _,
                n = inout(reg) groups => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                options(readonly, nostack),
            );
        }
        [a0, a1, a2, a3]
    }
    /// As [`dot4`], then the maximum of the four accumulators, in one block.
    #[inline(always)]
    pub fn dot4_max(patch: &[u32], w: &[i8], groups: usize, bias: i32) -> i32 {
        let m: i32;
        // SAFETY: as `dot4`.
        unsafe {
            core::arch::asm!(
                "mov {a1}, {a0}",
                "mov {a2}, {a0}",
                "mov {a3}, {a0}",
                dot4_loop!(),
                "cmp {a0}, {a1}",
                "it lt",
                "movlt {a0}, {a1}",
                "cmp {a0}, {a2}",
                "it lt",
                "movlt {a0}, {a2}",
                "cmp {a0}, {a3}",
                "it lt",
                "movlt {a0}, {a3}",
                w = out(reg) _,
                we = out(reg) _,
                wo = out(reg) _,
                p = out(reg) _,
                wp = inout(reg) w.as_ptr() => _,
                pp = inout(reg) patch.as_ptr() => _,
                n = inout(reg) groups => _,
                a0 = inout(reg) bias => m,
                a1 = out(reg) _,
                a2 = out(reg) _,
                a3 = out(reg) _,
                options(readonly, nostack),
            );
        }
        m
    }
    /// `x` at least `2 * rs + 2 * cn + 4` bytes (checked by the caller).
    #[inline(always)]
    pub fn dw3x3(
        x: &[i8],
        cn: usize,
        rs: usize,
        w: &super::Dw3Taps,
        nzp: u32,
        acc: [i32; 4],
    ) -> [i32; 4] {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: reads four bytes at `ky * rs + kx * cn` of `x` for ky, kx in 0..3 (LDR,
        // unaligned allowed on Armv7E-M and Armv8-M Mainline), within the caller's bound, and
        // the 18 words of `w`; no writes, no stack.
        unsafe {
            core::arch::asm!(
                "ldr {x}, [{xp}]",
                "sxtab16 {t}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "ldr {w}, [{wp}, #0]",
                "smlabb {a0}, {t}, {w}, {a0}",
                "smlatt {a2}, {t}, {w}, {a2}",
                "ldr {w}, [{wp}, #4]",
                "smlabb {a1}, {x}, {w}, {a1}",
                "smlatt {a3}, {x}, {w}, {a3}",
                "ldr {x}, [{xp}, {cn}]",
                "sxtab16 {t}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "ldr {w}, [{wp}, #8]",
                "smlabb {a0}, {t}, {w}, {a0}",
                "smlatt {a2}, {t}, {w}, {a2}",
                "ldr {w}, [{wp}, #12]",
                "smlabb {a1}, {x}, {w}, {a1}",
                "smlatt {a3}, {x}, {w}, {a3}",
                "ldr {x}, [{xp}, {cn}, lsl #1]",
                "sxtab16 {t}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "ldr {w}, [{wp}, #16]",
                "smlabb {a0}, {t}, {w}, {a0}",
                "smlatt {a2}, {t}, {w}, {a2}",
                "ldr {w}, [{wp}, #20]",
                "smlabb {a1}, {x}, {w}, {a1}",
                "smlatt {a3}, {x}, {w}, {a3}",
                "add {xp}, {xp}, {rs}",
                "ldr {x}, [{xp}]",
                "sxtab16 {t}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "ldr {w}, [{wp}, #24]",
                "smlabb {a0}, {t}, {w}, {a0}",
                "smlatt {a2}, {t}, {w}, {a2}",
                "ldr {w}, [{wp}, #28]",
                "smlabb {a1}, {x}, {w}, {a1}",
                "smlatt {a3}, {x}, {w}, {a3}",
                "ldr {x}, [{xp}, {cn}]",
                "sxtab16 {t}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "ldr {w}, [{wp}, #32]",
                "smlabb {a0}, {t}, {w}, {a0}",
                "smlatt {a2}, {t}, {w}, {a2}",
                "ldr {w}, [{wp}, #36]",
                "smlabb {a1}, {x}, {w}, {a1}",
                "smlatt {a3}, {x}, {w}, {a3}",
                "ldr {x}, [{xp}, {cn}, lsl #1]",
                "sxtab16 {t}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "ldr {w}, [{wp}, #40]",
                "smlabb {a0}, {t}, {w}, {a0}",
                "smlatt {a2}, {t}, {w}, {a2}",
                "ldr {w}, [{wp}, #44]",
                "smlabb {a1}, {x}, {w}, {a1}",
                "smlatt {a3}, {x}, {w}, {a3}",
                "add {xp}, {xp}, {rs}",
                "ldr {x}, [{xp}]",
                "sxtab16 {t}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "ldr {w}, [{wp}, #48]",
                "smlabb {a0}, {t}, {w}, {a0}",
                "smlatt {a2}, {t}, {w}, {a2}",
                "ldr {w}, [{wp}, #52]",
                "smlabb {a1}, {x}, {w}, {a1}",
                "smlatt {a3}, {x}, {w}, {a3}",
                "ldr {x}, [{xp}, {cn}]",
                "sxtab16 {t}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "ldr {w}, [{wp}, #56]",
                "smlabb {a0}, {t}, {w}, {a0}",
                "smlatt {a2}, {t}, {w}, {a2}",
                "ldr {w}, [{wp}, #60]",
                "smlabb {a1}, {x}, {w}, {a1}",
                "smlatt {a3}, {x}, {w}, {a3}",
                "ldr {x}, [{xp}, {cn}, lsl #1]",
                "sxtab16 {t}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "ldr {w}, [{wp}, #64]",
                "smlabb {a0}, {t}, {w}, {a0}",
                "smlatt {a2}, {t}, {w}, {a2}",
                "ldr {w}, [{wp}, #68]",
                "smlabb {a1}, {x}, {w}, {a1}",
                "smlatt {a3}, {x}, {w}, {a3}",
                x = out(reg) _,
                t = out(reg) _,
                w = out(reg) _,
                xp = inout(reg) x.as_ptr() => _,
                wp = in(reg) w.as_ptr(),
                cn = in(reg) cn,
                rs = in(reg) rs,
                nzp = in(reg) nzp,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                options(readonly, nostack),
            );
        }
        [a0, a1, a2, a3]
    }
    /// `groups >= 1`, `x` at least `4 * groups` bytes, `w` at least `2 * stride + 4 * groups`
    /// (checked by the caller).
    #[inline(always)]
    pub fn fc3(
        x: &[i8],
        w: &[i8],
        stride: usize,
        groups: usize,
        nzp: u32,
        acc: [i32; 3],
    ) -> [i32; 3] {
        let [mut a0, mut a1, mut a2] = acc;
        // SAFETY: reads `4 * groups` bytes of `x` and of `w` at offsets 0, `stride` and
        // `2 * stride` (LDR, unaligned allowed on Armv7-M); the caller's bounds hold.
        unsafe {
            core::arch::asm!(
                "2:",
                fc3_step!(),
                "subs {n}, {n}, #1",
                "bne 2b",
                x = out(reg) _,
                xe = out(reg) _,
                xo = out(reg) _,
                t = out(reg) _,
                xp = inout(reg) x.as_ptr() => _,
                wp = inout(reg) w.as_ptr() => _,
                s = in(reg) stride,
                n = inout(reg) groups => _,
                nzp = in(reg) nzp,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                options(readonly, nostack),
            );
        }
        [a0, a1, a2]
    }
    /// `groups >= 1`, each slice at least `4 * groups` bytes (checked by the caller).
    #[inline(always)]
    pub fn fc2(x: &[i8], w0: &[i8], w1: &[i8], groups: usize, nzp: u32, acc: [i32; 2]) -> [i32; 2] {
        let [mut a0, mut a1] = acc;
        // SAFETY: reads `4 * groups` bytes from each slice (LDR, unaligned allowed on Armv7-M);
        // the caller's bounds hold; no writes, no stack.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {x}, [{xp}], #4",
                "sxtab16 {xe}, {nzp}, {x}",
                "sxtab16 {xo}, {nzp}, {x}, ror #8",
                "ldr {x}, [{w0p}], #4",
                "sxtb16 {t}, {x}",
                "smlad {a0}, {xe}, {t}, {a0}",
                "sxtb16 {t}, {x}, ror #8",
                "smlad {a0}, {xo}, {t}, {a0}",
                "ldr {x}, [{w1p}], #4",
                "sxtb16 {t}, {x}",
                "smlad {a1}, {xe}, {t}, {a1}",
                "sxtb16 {t}, {x}, ror #8",
                "smlad {a1}, {xo}, {t}, {a1}",
                "subs {n}, {n}, #1",
                "bne 2b",
                x = out(reg) _,
                xe = out(reg) _,
                xo = out(reg) _,
                t = out(reg) _,
                xp = inout(reg) x.as_ptr() => _,
                w0p = inout(reg) w0.as_ptr() => _,
                w1p = inout(reg) w1.as_ptr() => _,
                n = inout(reg) groups => _,
                nzp = in(reg) nzp,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                options(readonly, nostack),
            );
        }
        [a0, a1]
    }
    #[cfg(test)] // the kernels use SXTAB16, which adds as it extends
    #[inline(always)]
    pub fn sadd16(a: u32, b: u32) -> u32 {
        let r: u32;
        // SADD16 sets the GE flags (not NZCV); nothing reads them.
        unsafe {
            core::arch::asm!("sadd16 {r}, {a}, {b}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
                options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let r: i32;
        unsafe {
            core::arch::asm!("smlad {r}, {a}, {b}, {acc}", r = lateout(reg) r, a = in(reg) a,
                b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
}

#[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
mod imp {
    #[inline(always)]
    fn lo(x: u32) -> i32 {
        x as u16 as i16 as i32
    }
    #[inline(always)]
    fn hi(x: u32) -> i32 {
        (x >> 16) as u16 as i16 as i32
    }
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        super::pack(x as u8 as i8 as i16, (x >> 16) as u8 as i8 as i16)
    }
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        sxtb16(x.rotate_right(8))
    }
    #[inline(always)]
    pub fn sadd16(a: u32, b: u32) -> u32 {
        super::pack((lo(a) + lo(b)) as i16, (hi(a) + hi(b)) as i16)
    }
    #[inline(always)]
    pub fn sxtab16(a: u32, x: u32) -> u32 {
        sadd16(a, sxtb16(x))
    }
    #[inline(always)]
    pub fn sxtab16_ror8(a: u32, x: u32) -> u32 {
        sadd16(a, sxtb16_ror8(x))
    }
    #[inline(always)]
    pub fn fc3(
        x: &[i8],
        w: &[i8],
        stride: usize,
        groups: usize,
        nzp: u32,
        acc: [i32; 3],
    ) -> [i32; 3] {
        let [a0, a1] = fc2(x, w, &w[stride..], groups, nzp, [acc[0], acc[1]]);
        let [a2, _] = fc2(
            x,
            &w[2 * stride..],
            &w[2 * stride..],
            groups,
            nzp,
            [acc[2], 0],
        );
        [a0, a1, a2]
    }
    #[inline(always)]
    pub fn dot4_max(patch: &[u32], w: &[i8], groups: usize, bias: i32) -> i32 {
        let a = dot4(patch, w, groups, [bias; 4]);
        a[0].max(a[1]).max(a[2]).max(a[3])
    }
    #[inline(always)]
    pub fn fc2(
        x: &[i8],
        w0: &[i8],
        w1: &[i8],
        groups: usize,
        nzp: u32,
        mut acc: [i32; 2],
    ) -> [i32; 2] {
        let word = |b: &[i8]| u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]);
        let rows = w0.chunks_exact(4).zip(w1.chunks_exact(4));
        for (x4, (u, v)) in x.chunks_exact(4).zip(rows).take(groups) {
            let x = word(x4);
            let (xe, xo) = (sxtab16(nzp, x), sxtab16_ror8(nzp, x));
            for (a, w) in acc.iter_mut().zip([word(u), word(v)]) {
                *a = smlad(xo, sxtb16_ror8(w), smlad(xe, sxtb16(w), *a));
            }
        }
        acc
    }
    /// The device's pairing: SXTAB16 of the input word and SMLABB / SMLATT with the
    /// pre-extended weights (`x` long enough, checked by the caller).
    #[inline(always)]
    pub fn dw3x3(
        x: &[i8],
        cn: usize,
        rs: usize,
        w: &super::Dw3Taps,
        nzp: u32,
        mut acc: [i32; 4],
    ) -> [i32; 4] {
        for (t, wt) in w.chunks_exact(2).enumerate() {
            let at = (t / 3) * rs + (t % 3) * cn;
            let b = &x[at..at + 4];
            let word = u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]);
            let (xe, xo) = (sxtab16(nzp, word), sxtab16_ror8(nzp, word));
            acc[0] += lo(xe) * lo(wt[0]);
            acc[2] += hi(xe) * hi(wt[0]);
            acc[1] += lo(xo) * lo(wt[1]);
            acc[3] += hi(xo) * hi(wt[1]);
        }
        acc
    }
    #[inline(always)]
    pub fn dot4(patch: &[u32], w: &[i8], groups: usize, mut acc: [i32; 4]) -> [i32; 4] {
        for (p, w4) in patch.chunks_exact(8).zip(w.chunks_exact(4)).take(groups) {
            let ww = u32::from_le_bytes([w4[0] as u8, w4[1] as u8, w4[2] as u8, w4[3] as u8]);
            let (we, wo) = (sxtb16(ww), sxtb16_ror8(ww));
            for (a, pl) in acc.iter_mut().zip(p.chunks_exact(2)) {
                *a = smlad(pl[1], wo, smlad(pl[0], we, *a));
            }
        }
        acc
    }
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        // Plain `+`: an accumulator past i32 would be a validation bug, and host builds check
        // overflow, so the tests would catch it.
        acc + (lo(a) * lo(b) + hi(a) * hi(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked out from the instruction definitions (Armv7-M ARM A7.7.183, A7.7.109,
    /// A7.7.122), independent of the model's code.
    #[test]
    fn instructions_match_their_definitions() {
        // bytes (LE) 0x80 0x7f 0x01 0xff: x0 = -128, x1 = 127, x2 = 1, x3 = -1
        let x = 0xff01_7f80u32;
        assert_eq!(sxtb16(x), 0x0001_ff80); // (-128, 1)
        assert_eq!(sxtb16_ror8(x), 0xffff_007f); // (127, -1)
        assert_eq!(sadd16(pack(-128, 1), pack(-127, 254)), pack(-255, 255));
        assert_eq!(
            smlad(pack(-255, 255), pack(-128, 127), 7),
            7 + 255 * 128 + 255 * 127
        );
        assert_eq!(pair(-3), 0xfffd_fffd);
        assert_eq!(sxtab16(pair(128), x), pack(0, 129));
        assert_eq!(sxtab16_ror8(pair(-127), x), pack(0, -128));
        // dot4: lane l of group g pairs words 8g + 2l, 8g + 2l + 1 with (w0, w2), (w1, w3).
        let w = [1i8, 2, 3, 4, -1, -2, -3, -4];
        let mut patch = [0u32; 16];
        for (i, p) in patch.iter_mut().enumerate() {
            *p = pack(i as i16 % 100, 7 * i as i16 % 90);
        }
        let want: [i32; 4] = core::array::from_fn(|l| {
            (0..2)
                .map(|g| {
                    let (e, o) = (patch[8 * g + 2 * l], patch[8 * g + 2 * l + 1]);
                    let lo = |v: u32| v as u16 as i16 as i32;
                    let hi = |v: u32| (v >> 16) as u16 as i16 as i32;
                    let ws = &w[4 * g..4 * g + 4];
                    lo(e) * ws[0] as i32
                        + hi(e) * ws[2] as i32
                        + lo(o) * ws[1] as i32
                        + hi(o) * ws[3] as i32
                })
                .sum::<i32>()
                + l as i32
        });
        assert_eq!(dot4(&patch, &w, [0, 1, 2, 3]), want);
    }
}
