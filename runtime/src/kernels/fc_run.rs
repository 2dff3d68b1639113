//! The fully connected layer's rows in threes for stages in [`Stage::ssat_form`]: each pass
//! takes three rows' biases, their dot products with the input (every four inputs loaded and
//! sign-extended once for the three rows) and their requantization, in one loop on the device
//! (the DSP extension's instructions) and in Rust ([`super::dsp::fc3`] and
//! [`super::ssat_requant`]) elsewhere.
//!
//! [`Stage::ssat_form`]: super::Stage::ssat_form

/// What the device loop walks: the input's start and end, the bias, requantization and output
/// addresses of the next triple, the end of the triples' outputs and the output zero point.
/// Set by [`triples`] from checked slices; the device code reads the fields at fixed offsets
/// (asserted below).
#[repr(C)]
#[derive(Debug)]
struct FcWalk {
    x: usize,
    x_end: usize,
    bias: usize,
    requant: usize,
    out: usize,
    out_end: usize,
    zp: i32,
}

#[cfg(target_arch = "arm")]
const _: () = {
    assert!(core::mem::offset_of!(FcWalk, bias) == 8);
    assert!(core::mem::offset_of!(FcWalk, out) == 16);
    assert!(core::mem::offset_of!(FcWalk, zp) == 24);
};

/// Rows `0..3 k` of a fully connected layer, `k` the most triples that leave no single row
/// (the caller takes the rest in twos): `input` whole words (`len % 4 == 0`, at least one),
/// `nzp = pair(-zp_in)`, `weights` `[out, in]`, the stage's bias and requantization bytes
/// (every channel in the SSAT form) and output zero point. Returns the rows written: 0, and
/// nothing written, if a slice is too short (unreachable for a validated layer).
#[inline(always)]
pub fn triples(
    input: &[i8],
    nzp: u32,
    weights: &[i8],
    (bias, requant, zp): (&[u8], &[u8], i32),
    output: &mut [i8],
) -> usize {
    let (n_in, n_out) = (input.len(), output.len());
    let k = if n_out % 3 == 1 && n_out >= 4 {
        n_out / 3 - 1
    } else {
        n_out / 3
    };
    let rows = 3 * k;
    let fits = n_in >= 4
        && n_in.is_multiple_of(4)
        && rows >= 3
        && n_in.checked_mul(rows).is_some_and(|n| n <= weights.len())
        && 4 * rows <= bias.len()
        && 8 * rows <= requant.len()
        && (-128..=127).contains(&zp);
    if !fits {
        return 0;
    }
    let mut walk = FcWalk {
        x: input.as_ptr() as usize,
        x_end: input.as_ptr().wrapping_add(n_in) as usize,
        bias: bias.as_ptr() as usize,
        requant: requant.as_ptr() as usize,
        out: output.as_ptr() as usize,
        out_end: output.as_ptr().wrapping_add(rows) as usize,
        zp,
    };
    imp::triples(
        input,
        nzp,
        weights,
        (bias, requant),
        &mut output[..rows],
        &mut walk,
    );
    rows
}

#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[allow(unsafe_code)]
mod imp {
    use super::super::dsp::fc3_step;

    /// Row `$i` of the triple, its sum in `$a`: the channel's multiplier and shift from the
    /// walk's requantization address, `(SMMLAR(2 acc, m, 2^(e-1)) + (acc >> 31)) >> e`
    /// ([`super::super::ssat_requant`]), plus the zero point, SSAT, stored at the walk's output
    /// address + `$i`.
    #[rustfmt::skip]
    macro_rules! row {
        ($a:literal, $i:literal) => {
            concat!(
                "ldr {t}, [{prm}, #12]\n",
                "ldr {x}, [{t}]\n",
                "ldr {xe}, [{t}, #4]\n",
                "add {t}, {t}, #8\n",
                "str {t}, [{prm}, #12]\n",
                "rsb {xe}, {xe}, #0\n",
                "mov {t}, #1\n",
                "lsl {t}, {t}, {xe}\n",
                "asr {t}, {t}, #1\n",
                "lsl {", $a, "}, {", $a, "}, #1\n",
                "smmlar {xo}, {", $a, "}, {x}, {t}\n",
                "add {", $a, "}, {xo}, {", $a, "}, asr #31\n",
                "asr {", $a, "}, {", $a, "}, {xe}\n",
                "ldr {t}, [{prm}, #24]\n",
                "add {", $a, "}, {", $a, "}, {t}\n",
                "ssat {", $a, "}, #8, {", $a, "}\n",
                "ldr {t}, [{prm}, #16]\n",
                "strb {", $a, "}, [{t}, #", $i, "]\n",
            )
        };
    }

    /// The caller checked every bound; `walk` holds the slices' addresses.
    #[inline(always)]
    pub fn triples(
        input: &[i8],
        nzp: u32,
        weights: &[i8],
        _stage: (&[u8], &[u8]),
        _output: &mut [i8],
        walk: &mut super::FcWalk,
    ) {
        // SAFETY: per triple `j < k`: reads the input's words (LDR, unaligned allowed on
        // Armv7E-M and Armv8-M Mainline), the words of rows `3 j..3 j + 3` of `weights` (at
        // `wp`, `wp + n_in`, `wp + 2 n_in`), three bias words and three requantization word
        // pairs, and writes three output bytes: all within the slices the caller checked.
        // Updates the walk's addresses.
        unsafe {
            core::arch::asm!(
                "1:",
                "ldr {xp}, [{prm}, #0]",
                "ldr {t}, [{prm}, #8]",
                "ldr {a0}, [{t}]",
                "ldr {a1}, [{t}, #4]",
                "ldr {a2}, [{t}, #8]",
                "add {t}, {t}, #12",
                "str {t}, [{prm}, #8]",
                "2:",
                fc3_step!(),
                "ldr {t}, [{prm}, #4]",
                "cmp {xp}, {t}",
                "bne 2b",
                // `wp` is at row 1's start; the next triple starts two rows on.
                "add {wp}, {wp}, {s}, lsl #1",
                row!("a0", "0"),
                row!("a1", "1"),
                row!("a2", "2"),
                "ldr {t}, [{prm}, #16]",
                "add {t}, {t}, #3",
                "str {t}, [{prm}, #16]",
                "ldr {x}, [{prm}, #20]",
                "cmp {t}, {x}",
                "bne 1b",
                x = out(reg) _,
                xe = out(reg) _,
                xo = out(reg) _,
                t = out(reg) _,
                xp = out(reg) _,
                a0 = out(reg) _,
                a1 = out(reg) _,
                a2 = out(reg) _,
                wp = inout(reg) weights.as_ptr() => _,
                s = in(reg) input.len(),
                nzp = in(reg) nzp,
                prm = in(reg) walk as *mut super::FcWalk,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
mod imp {
    use super::super::dsp::fc3;
    use super::super::ssat_requant;

    /// The device loop in Rust (the caller checked every bound).
    pub fn triples(
        input: &[i8],
        nzp: u32,
        weights: &[i8],
        (bias, requant): (&[u8], &[u8]),
        output: &mut [i8],
        walk: &mut super::FcWalk,
    ) {
        let word =
            |b: &[u8], at: usize| i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let n_in = input.len();
        for (j, out) in output.chunks_exact_mut(3).enumerate() {
            let r = 3 * j;
            let b = [
                word(bias, 4 * r),
                word(bias, 4 * r + 4),
                word(bias, 4 * r + 8),
            ];
            let acc = fc3(input, &weights[r * n_in..], n_in, nzp, b);
            for (i, (o, a)) in out.iter_mut().zip(acc).enumerate() {
                let (m, e) = (word(requant, 8 * (r + i)), -word(requant, 8 * (r + i) + 4));
                let parts = if m == 0 {
                    [0, 1, 1]
                } else {
                    [m, 1 << (e - 1), e]
                };
                *o = ssat_requant(a, parts, walk.zp);
            }
        }
    }
}
