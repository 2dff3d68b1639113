//! Receptive fields into the patch path's scratch: kernel rows made contiguous
//! ([`copy_rows`]) and input words sign-extended into one lane of the patch
//! ([`gather_words`]), in a loop of the DSP extension's instructions on the device and a Rust
//! model of it elsewhere (the host tests check the model, the QEMU parity tests the loop).

/// `n` consecutive input words into one lane of a patch of `lanes` lanes (4 or 6): word `i`
/// of `x` (four int8, read unaligned) becomes `dst[s i] = SXTAB16(nzp, x)` and `dst[s i + 1]
/// = SXTAB16(nzp, x ROR 8)` (the lane's two words of group `i`, groups `s = 2 lanes` words
/// apart), `nzp = pair(-zp)`. On the device one loop of six instructions a word. Nothing
/// written if `x` or `dst` is too short, or `lanes` is neither (unreachable for the patch
/// path's geometry).
#[inline(always)]
pub fn gather_words(x: &[i8], n: usize, (dst, lanes): (&mut [u32], usize), nzp: u32) {
    let fits = n >= 1
        && n.checked_mul(4).is_some_and(|b| b <= x.len())
        && (n - 1)
            .checked_mul(2 * lanes)
            .is_some_and(|w| w + 2 <= dst.len());
    match (fits, lanes) {
        (true, 4) => imp::gather_words::<8>(x, n, dst, nzp),
        (true, 6) => imp::gather_words::<12>(x, n, dst, nzp),
        _ => {}
    }
}

/// `rows` kernel rows of a receptive field made contiguous: `words` words from `x` at `r *
/// stride` to `dst` at `r * row` for each row `r`, in order (a row's last word may carry up to
/// three bytes past it, which the next row's first word overwrites). On the device a loop of
/// four instructions a word. Nothing copied if `x` or `dst` is too short (unreachable for the
/// patch path's geometry).
#[inline(always)]
pub fn copy_rows(
    x: &[i8],
    (stride, rows, words): (usize, usize, usize),
    dst: &mut [i8],
    row: usize,
) {
    let span = |step: usize| {
        (rows.checked_sub(1)?)
            .checked_mul(step)?
            .checked_add(words.checked_mul(4)?)
    };
    let fits = words >= 1
        && span(stride).is_some_and(|n| n <= x.len())
        && span(row).is_some_and(|n| n <= dst.len());
    if fits {
        imp::copy_rows(x, (stride, rows, words), dst, row);
    }
}

#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[allow(unsafe_code)]
mod imp {
    /// `n >= 1` words of `x` and `S (n - 1) + 2` words of `dst` (checked by the caller).
    #[inline(always)]
    pub fn gather_words<const S: usize>(x: &[i8], n: usize, dst: &mut [u32], nzp: u32) {
        // SAFETY: reads `4 n` bytes of `x` (LDR, unaligned allowed on Armv7E-M and Armv8-M
        // Mainline) and writes words `S i` and `S i + 1` of `dst` for `i < n` (STRD, `dst` is
        // a word-aligned `u32` slice): within the bounds the caller checked. No stack.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {x}, [{xp}], #4",
                "sxtab16 {e}, {nzp}, {x}",
                "sxtab16 {x}, {nzp}, {x}, ror #8",
                "strd {e}, {x}, [{dp}], #{step}",
                "subs {n}, {n}, #1",
                "bne 2b",
                step = const 4 * S,
                x = out(reg) _,
                e = out(reg) _,
                xp = inout(reg) x.as_ptr() => _,
                dp = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) n => _,
                nzp = in(reg) nzp,
                options(nostack),
            );
        }
    }

    /// Bounds checked by the caller (`rows, words >= 1`).
    #[inline(always)]
    pub fn copy_rows(
        x: &[i8],
        (stride, rows, words): (usize, usize, usize),
        dst: &mut [i8],
        row: usize,
    ) {
        // SAFETY: reads `words` words at `x + r * stride` and writes them at `dst + r * row`
        // for `r < rows` (LDR and STR, unaligned allowed on Armv7E-M and Armv8-M Mainline):
        // within the spans the caller checked. No stack.
        unsafe {
            core::arch::asm!(
                "2:",
                "mov {n}, {words}",
                "mov {s}, {xp}",
                "mov {d}, {dp}",
                "3:",
                "ldr {t}, [{s}], #4",
                "str {t}, [{d}], #4",
                "subs {n}, {n}, #1",
                "bne 3b",
                "add {xp}, {xp}, {stride}",
                "add {dp}, {dp}, {row}",
                "subs {rows}, {rows}, #1",
                "bne 2b",
                n = out(reg) _,
                s = out(reg) _,
                d = out(reg) _,
                t = out(reg) _,
                xp = inout(reg) x.as_ptr() => _,
                dp = inout(reg) dst.as_mut_ptr() => _,
                rows = inout(reg) rows => _,
                words = in(reg) words,
                stride = in(reg) stride,
                row = in(reg) row,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
mod imp {
    /// The device loop's model (the caller checked the lengths).
    #[inline(always)]
    pub fn gather_words<const S: usize>(x: &[i8], n: usize, dst: &mut [u32], nzp: u32) {
        use super::super::dsp::{sxtab16, sxtab16_ror8};
        for (i, b) in x.chunks_exact(4).take(n).enumerate() {
            let w = u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]);
            dst[S * i] = sxtab16(nzp, w);
            dst[S * i + 1] = sxtab16_ror8(nzp, w);
        }
    }
    /// The device loop's model (the caller checked the lengths).
    #[inline(always)]
    pub fn copy_rows(
        x: &[i8],
        (stride, rows, words): (usize, usize, usize),
        dst: &mut [i8],
        row: usize,
    ) {
        for r in 0..rows {
            let src = x.get(r * stride..r * stride + 4 * words);
            let to = dst.get_mut(r * row..r * row + 4 * words);
            if let (Some(src), Some(to)) = (src, to) {
                to.copy_from_slice(src);
            }
        }
    }
}
