//! The 3x3 stride-1 depthwise kernel by channel planes, for layers in [`Stage::ssat_form`]
//! on small maps (keyword spotting's 25x5): one channel's input at a time as halfwords,
//! padded with its zero point, column by column in the scratch, so that two vertically adjacent
//! taps are one halfword pair and a column of four outputs takes eight SMLAxy per kernel
//! column. No clipped windows: the padding is in the plane. A loop in the DSP extension's
//! instructions on the device (and the plane's fill), a Rust model of it elsewhere (the host tests check the model
//! against the reference, the QEMU parity tests the loop against the host).
//!
//! [`Stage::ssat_form`]: super::Stage::ssat_form

use super::conv_base::ConvGeom;
use super::dsp::pack;
use super::{Stage, SSAT_MAX_SHIFT};

/// Largest plane (halfwords: `(out_h + 2) * (out_w + 2)`) this path takes; larger maps keep
/// the runs of [`super::dw3_run`], which need no scratch.
const PLANE_MAX: usize = 1024;

/// Output rows a pass of the loop computes (one column of them).
const ROWS: usize = 4;

/// Whether [`depthwise_plane`] takes this layer: a 3x3 kernel, stride 1, no pool, at least
/// [`ROWS`] output rows, a plane of at most [`PLANE_MAX`] halfwords and every channel in the
/// SSAT form with the zero point in the rounding constant (on any core: the arena must not
/// depend on it).
fn takes(g: &ConvGeom, st: &Stage) -> bool {
    (g.k_h, g.k_w, g.stride_h, g.stride_w, g.pool_k, g.pool_s) == (3, 3, 1, 1, 1, 1)
        && g.out_h >= ROWS
        && (g.out_h.saturating_add(2)).saturating_mul(g.out_w.saturating_add(2)) <= PLANE_MAX
        && st.ssat_layer(SSAT_MAX_SHIFT)
}

/// Scratch words [`depthwise_plane`] needs for this layer (0: it does not take it).
pub fn plane_scratch_words(g: &ConvGeom, st: &Stage) -> usize {
    if takes(g, st) {
        ((g.out_h + 2) * (g.out_w + 2)).div_ceil(2)
    } else {
        0
    }
}

/// One channel's numbers for the loop: per kernel column `kx` the doubled weights as pairs
/// `(2 w[0][kx], 2 w[1][kx])` and `(2 w[1][kx], 2 w[2][kx])`, the bias with the input zero
/// point's share folded in and doubled, `2 (bias - zp * sum w)` (the plane holds the raw
/// input, so the sums are `2 acc`, wrapping on the way and exact at the end), the SSAT form's `[m, add + (zp << e), e]`, the
/// plane's column stride and the output's row stride in bytes, and the end of the current
/// run (set per call). The device code reads the fields at fixed offsets (asserted below).
#[repr(C)]
#[derive(Debug, Default)]
struct Plane {
    w: [u32; 6],
    bias: i32,
    rq: [i32; 3],
    col: usize,
    row: usize,
    end: usize,
}

#[cfg(target_arch = "arm")]
const _: () = {
    assert!(core::mem::offset_of!(Plane, bias) == 24);
    assert!(core::mem::offset_of!(Plane, rq) == 28);
    assert!(core::mem::offset_of!(Plane, col) == 40);
    assert!(core::mem::offset_of!(Plane, row) == 44);
    assert!(core::mem::offset_of!(Plane, end) == 48);
};

/// The layer by channel planes when it [`takes`] it and `scratch` holds the plane; `false`
/// (nothing written) otherwise, and for a geometry or slices that do not fit (unreachable for
/// a validated layer). Out of line: inlined, its frame added to the depthwise runs' and took
/// visual wake words past the 2 KiB stack budget on the M55.
#[inline(never)]
pub fn depthwise_plane(
    input: &[i8],
    in_zp: i32,
    weights: &[i8],
    g: &ConvGeom,
    st: &Stage,
    output: &mut [i8],
    scratch: &mut [u32],
) -> bool {
    if !takes(g, st) || !st.ssat_form(SSAT_MAX_SHIFT) {
        return false;
    }
    // `takes` bounds the plane, so `hp * wp` is at most PLANE_MAX; every other size is
    // checked (a caller of the public kernel may pass any geometry).
    let (hp, wp) = (g.out_h + 2, g.out_w + 2);
    let c_n = g.in_c;
    let size = |a: usize, b: usize, c: usize| a.checked_mul(b)?.checked_mul(c);
    let fits = g.in_h.checked_add(g.pad_top).is_some_and(|v| v <= hp)
        && g.in_w.checked_add(g.pad_left).is_some_and(|v| v <= wp)
        && g.out_c == c_n
        && c_n.checked_mul(9).is_some_and(|n| n <= weights.len())
        && size(g.in_h, g.in_w, c_n).is_some_and(|n| n <= input.len())
        && size(g.out_h, g.out_w, c_n).is_some_and(|n| n <= output.len())
        && c_n.checked_mul(4).is_some_and(|n| n <= st.bias.len())
        && c_n.checked_mul(8).is_some_and(|n| n <= st.requant.len())
        && (-128..=127).contains(&st.zero_point);
    let plane: &mut [u16] = bytemuck::cast_slice_mut(scratch);
    let Some(plane) = plane.get_mut(..hp * wp).filter(|_| fits) else {
        return false;
    };
    // The padding stays the zero point for every channel.
    plane.fill(in_zp as i16 as u16);
    let mut p = Plane {
        col: 2 * hp,
        row: g.out_w * c_n,
        ..Plane::default()
    };
    for (c, (bias, rq)) in st.channels().enumerate().take(c_n) {
        let Some([m, add, e]) = st.ssat_parts(rq) else {
            return false; // unreachable: `takes` checked every channel
        };
        p.rq = [m, add + (st.zero_point << e), e];
        let mut sum = 0i32;
        for kx in 0..3 {
            let w = |ky: usize| weights[(3 * ky + kx) * c_n + c] as i16;
            sum += (w(0) + w(1) + w(2)) as i32;
            p.w[2 * kx] = pack(2 * w(0), 2 * w(1));
            p.w[2 * kx + 1] = pack(2 * w(1), 2 * w(2));
        }
        p.bias = bias.wrapping_sub(in_zp.wrapping_mul(sum)).wrapping_mul(2);
        // The channel's input, column by column.
        for x in 0..g.in_w {
            let col = (x + g.pad_left) * hp + g.pad_top;
            imp::fill(
                &input[x * c_n + c..],
                g.in_w * c_n,
                &mut plane[col..col + g.in_h],
            );
        }
        for x in 0..g.out_w {
            let col = &plane[x * hp..];
            let out = x * c_n + c;
            let full = g.out_h / ROWS;
            imp::columns(col, 0, full, output, out, &mut p);
            if !g.out_h.is_multiple_of(ROWS) {
                // The last four rows, some of them again (the same bytes).
                let y = g.out_h - ROWS;
                imp::columns(col, y, 1, output, out + y * p.row, &mut p);
            }
        }
    }
    true
}

#[cfg(all(target_arch = "arm", target_feature = "dsp"))]
#[allow(unsafe_code)]
mod imp {
    /// One kernel column: the plane words at `{p}` (rows `y..y + 6` of the column), the
    /// weight pairs at `[{prm}, #$w]`, eight multiplies.
    #[rustfmt::skip]
    macro_rules! kcol {
        ($w:literal) => {
            concat!(
                "ldr {i0}, [{p}]\n",
                "ldr {i1}, [{p}, #4]\n",
                "ldr {i2}, [{p}, #8]\n",
                "ldrd {wa}, {wb}, [{prm}, #", $w, "]\n",
                "smlad {a0}, {i0}, {wa}, {a0}\n",
                "smlabt {a0}, {i1}, {wb}, {a0}\n",
                "smlatb {a1}, {i0}, {wa}, {a1}\n",
                "smlad {a1}, {i1}, {wb}, {a1}\n",
                "smlad {a2}, {i1}, {wa}, {a2}\n",
                "smlabt {a2}, {i2}, {wb}, {a2}\n",
                "smlatb {a3}, {i1}, {wa}, {a3}\n",
                "smlad {a3}, {i2}, {wb}, {a3}\n",
            )
        };
    }

    /// Accumulator `$a` (`2 acc`) with `m` in `{i0}`, the rounding constant (zero point in
    /// it) in `{i1}` and `e` in `{i2}`, SSAT.
    #[rustfmt::skip]
    macro_rules! lane {
        ($a:literal) => {
            concat!(
                "smmlar {wa}, {", $a, "}, {i0}, {i1}\n",
                "add {", $a, "}, {wa}, {", $a, "}, asr #31\n",
                "asr {", $a, "}, {", $a, "}, {i2}\n",
                "ssat {", $a, "}, #8, {", $a, "}\n",
            )
        };
    }

    /// `dst[i] = src[i * stride]` sign-extended, `dst` at least one long (the caller checked
    /// `src` holds `(dst.len() - 1) * stride + 1` bytes): two a pass, 3.5 instructions each.
    pub fn fill(src: &[i8], stride: usize, dst: &mut [u16]) {
        // SAFETY: reads the bytes `i * stride` of `src` and writes the halfwords `i` of `dst`
        // for `i < dst.len()` (STR of two, unaligned allowed on Armv7E-M and Armv8-M
        // Mainline), within the bounds the caller checked. No stack.
        unsafe {
            core::arch::asm!(
                "subs {n}, {n}, #2",
                "blt 3f",
                "2:",
                "ldrsb {a}, [{p}]",
                "ldrsb {b}, [{p}, {s}]",
                "add {p}, {p}, {s}, lsl #1",
                "pkhbt {a}, {a}, {b}, lsl #16",
                "str {a}, [{q}], #4",
                "subs {n}, {n}, #2",
                "bge 2b",
                "3:",
                "adds {n}, {n}, #2",
                "beq 4f",
                "ldrsb {a}, [{p}]",
                "strh {a}, [{q}]",
                "4:",
                a = out(reg) _,
                b = out(reg) _,
                p = inout(reg) src.as_ptr() => _,
                q = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) dst.len() => _,
                s = in(reg) stride,
                options(nostack),
            );
        }
    }

    /// `n >= 1` passes of four rows down output column `col` from row `y`: the plane's column
    /// at `col` (its three kernel columns `p.col` bytes apart), the outputs at `out + r *
    /// p.row` of `output`. The caller checked the geometry; about 72 instructions a pass.
    pub fn columns(
        col: &[u16],
        y: usize,
        n: usize,
        output: &mut [i8],
        out: usize,
        p: &mut super::Plane,
    ) {
        let start = col.as_ptr().wrapping_add(y);
        p.end = start.wrapping_add(4 * n) as usize;
        // SAFETY: pass `k < n` reads the halfwords `y + 4 k .. y + 4 k + 6` of the three
        // plane columns (LDR, unaligned allowed on Armv7E-M and Armv8-M Mainline) and writes
        // the bytes `out + (4 k + r) * p.row` (r < 4) of `output`: rows `y + 4 k + r` below
        // `out_h`, within the plane and the output the caller checked. Reads `p`. No stack.
        unsafe {
            core::arch::asm!(
                "ldr {t}, [{prm}, #40]",
                "2:",
                "ldr {a0}, [{prm}, #24]",
                "mov {a1}, {a0}",
                "mov {a2}, {a0}",
                "mov {a3}, {a0}",
                kcol!("0"),
                "add {p}, {p}, {t}",
                kcol!("8"),
                "add {p}, {p}, {t}",
                kcol!("16"),
                "sub {p}, {p}, {t}, lsl #1",
                "add {p}, {p}, #8",
                "ldrd {i0}, {i1}, [{prm}, #28]",
                "ldr {i2}, [{prm}, #36]",
                lane!("a0"),
                lane!("a1"),
                lane!("a2"),
                lane!("a3"),
                "ldr {wb}, [{prm}, #44]",
                "strb {a0}, [{op}]",
                "strb {a1}, [{op}, {wb}]",
                "add {op}, {op}, {wb}, lsl #1",
                "strb {a2}, [{op}]",
                "strb {a3}, [{op}, {wb}]",
                "add {op}, {op}, {wb}, lsl #1",
                "ldr {wa}, [{prm}, #48]",
                "cmp {p}, {wa}",
                "bne 2b",
                a0 = out(reg) _,
                a1 = out(reg) _,
                a2 = out(reg) _,
                a3 = out(reg) _,
                i0 = out(reg) _,
                i1 = out(reg) _,
                i2 = out(reg) _,
                wa = out(reg) _,
                wb = out(reg) _,
                t = out(reg) _,
                p = inout(reg) start => _,
                op = inout(reg) output.as_mut_ptr().wrapping_add(out) => _,
                prm = in(reg) p as *const super::Plane,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "arm", target_feature = "dsp")))]
mod imp {
    use super::super::dsp::smlad;

    /// `dst[i] = src[i * stride]` sign-extended.
    pub fn fill(src: &[i8], stride: usize, dst: &mut [u16]) {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = src[i * stride] as i16 as u16;
        }
    }

    /// The device loop: the same pairs, products and requantization.
    pub fn columns(
        col: &[u16],
        y: usize,
        n: usize,
        output: &mut [i8],
        out: usize,
        p: &mut super::Plane,
    ) {
        let hp = p.col / 2;
        let word = |k: usize| u32::from(col[k]) | (u32::from(col[k + 1]) << 16);
        let lo = |v: u32| v as u16 as i16 as i32;
        let hi = |v: u32| (v >> 16) as u16 as i16 as i32;
        for pass in 0..n {
            let y0 = y + 4 * pass;
            let mut a = [p.bias; 4];
            for kx in 0..3 {
                let (wa, wb) = (p.w[2 * kx], p.w[2 * kx + 1]);
                let [i0, i1, i2] = [0, 2, 4].map(|d| word(kx * hp + y0 + d));
                a[0] = smlad(i0, wa, a[0]).wrapping_add(lo(i1) * hi(wb));
                a[1] = a[1].wrapping_add(hi(i0) * lo(wa));
                a[1] = smlad(i1, wb, a[1]);
                a[2] = smlad(i1, wa, a[2]).wrapping_add(lo(i2) * hi(wb));
                a[3] = a[3].wrapping_add(hi(i1) * lo(wa));
                a[3] = smlad(i2, wb, a[3]);
            }
            let [m, add, e] = p.rq;
            for (r, &acc) in a.iter().enumerate() {
                let x = ((acc as i64 * m as i64 + (1 << 31)) >> 32) as i32;
                let v = (x.wrapping_add(add).wrapping_add(acc >> 31)) >> e;
                output[out + (4 * pass + r) * p.row] = v.clamp(-128, 127) as i8;
            }
        }
    }
}
