//! An AVX-512 f32 GEMM for the products of a small CNN's training step, used on one thread
//! when the CPU has AVX-512F (the `gemm` crate's AVX-512 kernels need a nightly compiler;
//! on stable it runs 8-lane AVX2 kernels).
//!
//! `c [m, n] = a . b` or `c += a . b`, with `a` any strided view (its elements are broadcast
//! from memory one at a time, so a transposed `dy` costs nothing), `b` row-major with unit
//! column stride and `c` row-major. The register tile is `MR` rows by `NV` 16-lane vectors
//! (up to 24 accumulators of the 32 registers); a partial vector at the right edge uses
//! masked loads and stores, which never touch the lanes masked off. The depth is cut in
//! blocks of [`KC`], the rows in panels of [`PANEL`], so a block of `b` and a panel of `a`
//! stay in cache while the tiles sweep them. The order of the sums depends only on the
//! shapes, so results are reproducible.

use std::arch::x86_64::*;

/// Depth of a block: `KC` rows of `b`, at most 64 columns wide, is 64 KiB.
const KC: usize = 256;
/// Rows of `a` per panel (a multiple of every `MR`).
const PANEL: usize = 96;

/// Whether this CPU runs [`gemm`] (std caches the answer).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// The left operand: element `(i, l)` at `ptr[i * rs + (l / seg) * seg_stride + (l % seg) * cs]`.
/// A plain matrix has one segment (`seg >= k`); an implicit im2col matrix has one per kernel
/// row (`seg = KW * C` contiguous values of an input row, `seg_stride` = one padded row).
#[derive(Clone, Copy)]
pub(crate) struct Lhs {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
    pub seg: usize,
    pub seg_stride: usize,
}

/// One block of the product: rows of `a` from `a` (the start of the segment holding the
/// block's first depth index, which is `within` into it), `kc` rows of `b` from `b`,
/// `nb <= 64` columns of `b` and `c`; `load` adds to what `c` holds instead of overwriting it.
struct Block {
    a: *const f32,
    ars: usize,
    acs: usize,
    seg: usize,
    seg_stride: usize,
    within: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    kc: usize,
    nb: usize,
    load: bool,
}

/// `c = a . b` (or `c += a . b` with `accumulate`) for `a [m, k]` (see [`Lhs`]), `b [k, n]`
/// with element `(l, j)` at `b[l * ldb + j]`, and `c [m, n]` with element `(i, j)` at
/// `c[i * ldc + j]`.
///
/// # Safety
/// The CPU has AVX-512F ([`available`]); `m, n, k > 0`, `a.seg > 0`; every element named
/// above lies inside its allocation; `c` is exclusively borrowed and overlaps neither `a`
/// nor `b`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: Lhs,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut l0 = 0;
    while l0 < k {
        let kc = KC.min(k - l0);
        let a0 = (l0 / a.seg) * a.seg_stride;
        let mut p0 = 0;
        while p0 < m {
            let pm = PANEL.min(m - p0);
            let mut j0 = 0;
            while j0 < n {
                let nb = 64.min(n - j0);
                // SAFETY: offsets of elements inside the views (the caller's contract).
                let blk = unsafe {
                    Block {
                        a: a.ptr.add(p0 * a.rs + a0),
                        ars: a.rs,
                        acs: a.cs,
                        seg: a.seg,
                        seg_stride: a.seg_stride,
                        within: l0 % a.seg,
                        b: b.add(l0 * ldb + j0),
                        ldb,
                        c: c.add(p0 * ldc + j0),
                        ldc,
                        kc,
                        nb,
                        load: accumulate || l0 > 0,
                    }
                };
                // SAFETY: as for this function; `pm` rows and `nb` columns are inside.
                unsafe {
                    match nb.div_ceil(16) {
                        1 => rows::<8, 1>(&blk, pm),
                        2 => rows::<8, 2>(&blk, pm),
                        3 => rows::<8, 3>(&blk, pm),
                        _ => rows::<6, 4>(&blk, pm),
                    }
                }
                j0 += 64;
            }
            p0 += pm;
        }
        l0 += kc;
    }
}

/// The `m` rows of a block, `MR` at a time, the rest in one tile of exactly that many rows
/// (so that a product with few rows reads `b` once).
#[target_feature(enable = "avx512f")]
unsafe fn rows<const MR: usize, const NV: usize>(blk: &Block, m: usize) {
    let mut i = 0;
    // SAFETY (each call): the tile's rows are inside the block.
    unsafe {
        while i + MR <= m {
            tile::<MR, NV>(blk, i);
            i += MR;
        }
        match m - i {
            0 => {}
            1 => tile::<1, NV>(blk, i),
            2 => tile::<2, NV>(blk, i),
            3 => tile::<3, NV>(blk, i),
            4 => tile::<4, NV>(blk, i),
            5 => tile::<5, NV>(blk, i),
            6 => tile::<6, NV>(blk, i),
            _ => tile::<7, NV>(blk, i),
        }
    }
}

/// Rows `i0..i0 + MR` by the block's `nb` columns (`NV` vectors, the last one masked).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const MR: usize, const NV: usize>(blk: &Block, i0: usize) {
    let mut masks = [0u16; NV];
    for (v, m) in masks.iter_mut().enumerate() {
        let lanes = blk.nb.saturating_sub(16 * v).min(16);
        *m = ((1u32 << lanes) - 1) as u16;
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut bv = [_mm512_setzero_ps(); NV];
    // SAFETY (all the pointer reads and writes below): element (i0 + r, l) of a, row l of b
    // and row i0 + r of c are inside the block; masked-off lanes are not accessed.
    unsafe {
        // The current segment of row i0 and the position in it.
        let (mut sp, mut w) = (blk.a.add(i0 * blk.ars), blk.within);
        for l in 0..blk.kc {
            let bp = blk.b.add(l * blk.ldb);
            for v in 0..NV {
                bv[v] = _mm512_maskz_loadu_ps(masks[v], bp.add(16 * v));
            }
            let al = sp.add(w * blk.acs);
            w += 1;
            if w == blk.seg {
                (sp, w) = (sp.wrapping_add(blk.seg_stride), 0);
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*al.add(r * blk.ars));
                for v in 0..NV {
                    acc[v] = _mm512_fmadd_ps(av, bv[v], acc[v]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let cp = blk.c.add((i0 + r) * blk.ldc);
            for v in 0..NV {
                let mut x = acc[v];
                if blk.load {
                    x = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], cp.add(16 * v)), x);
                }
                _mm512_mask_storeu_ps(cp.add(16 * v), masks[v], x);
            }
        }
    }
}
