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

/// Words between the four lanes' patches in [`dot4`]'s scratch.
pub const DOT4_LANE_WORDS: usize = 64;

/// Four dot products sharing their weights: for each of the whole weight words `w[g]` (four
/// int8 taps, read unaligned) and each lane `l`, with `p = &patch[64 l + 2 g..]`:
/// `acc[l] += SMLAD(p[0], SXTB16(w[g])) + SMLAD(p[1], SXTB16(w[g] ROR 8))`, the patch layout
/// of `conv`'s gather. On the device this is one hand-scheduled loop: 17 instructions per 16
/// MACs. Taps past the last whole word are the caller's.
#[inline(always)]
pub fn dot4(patch: &[u32; 4 * DOT4_LANE_WORDS], w: &[i8], acc: [i32; 4]) -> [i32; 4] {
    let groups = (w.len() / 4).min(DOT4_LANE_WORDS / 2);
    if groups == 0 {
        return acc;
    }
    imp::dot4(patch, w, groups, acc)
}

/// `SADD16 a, b`: halfword-wise add, each lane wrapping to 16 bits. The kernels only add values
/// whose sum fits (an int8 minus a zero point: `|x - zp| <= 255`).
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

#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[allow(unsafe_code)]
mod imp {
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
    pub fn dot4(patch: &[u32; 256], w: &[i8], groups: usize, acc: [i32; 4]) -> [i32; 4] {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: reads `4 * groups` bytes from `w` (LDR, unaligned allowed on Armv7-M) and
        // words `64 l + 2 g, + 1` (l < 4, g < groups <= 32) of `patch` (LDRD, word-aligned as
        // a `u32` array, lanes 256 bytes apart); the caller's bounds hold both; no writes.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {we}, {w}",
                "sxtb16 {wo}, {w}, ror #8",
                "ldrd {w}, {p}, [{pp}, #256]",
                "smlad {a1}, {w}, {we}, {a1}",
                "smlad {a1}, {p}, {wo}, {a1}",
                "ldrd {w}, {p}, [{pp}, #512]",
                "smlad {a2}, {w}, {we}, {a2}",
                "smlad {a2}, {p}, {wo}, {a2}",
                "ldrd {w}, {p}, [{pp}, #768]",
                "smlad {a3}, {w}, {we}, {a3}",
                "smlad {a3}, {p}, {wo}, {a3}",
                "ldrd {w}, {p}, [{pp}], #8",
                "smlad {a0}, {w}, {we}, {a0}",
                "smlad {a0}, {p}, {wo}, {a0}",
                "subs {n}, {n}, #1",
                "bne 2b",
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
    pub fn dot4(patch: &[u32; 256], w: &[i8], groups: usize, mut acc: [i32; 4]) -> [i32; 4] {
        for (g, w4) in w.chunks_exact(4).take(groups).enumerate() {
            let ww = u32::from_le_bytes([w4[0] as u8, w4[1] as u8, w4[2] as u8, w4[3] as u8]);
            let (we, wo) = (sxtb16(ww), sxtb16_ror8(ww));
            for (l, a) in acc.iter_mut().enumerate() {
                let p = &patch[64 * l + 2 * g..];
                *a = smlad(p[1], wo, smlad(p[0], we, *a));
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
        let mut patch = [0u32; 256];
        for (i, p) in patch.iter_mut().enumerate() {
            *p = pack(i as i16 % 100, 7 * i as i16 % 90);
        }
        let want: [i32; 4] = core::array::from_fn(|l| {
            (0..2)
                .map(|g| {
                    let (e, o) = (patch[64 * l + 2 * g], patch[64 * l + 2 * g + 1]);
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
