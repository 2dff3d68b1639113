//! An AVX-512 f32 GEMM for the products of a small CNN's training step, used on one thread
//! when the CPU has AVX-512F (the `gemm` crate's AVX-512 kernels need a nightly compiler;
//! on stable it runs 8-lane AVX2 kernels).
//!
//! `c [m, n] = a . b`, `c += a . b` or `c = bias + a . b`, with `a` any strided view with
//! groups of rows and segments of depth ([`Lhs`]: an implicit im2col matrix or its
//! transpose; its elements are broadcast from memory one at a time, so a transposed `dy`
//! costs nothing), `b` row-major with unit column stride and `c` row-major. The register
//! tile is `MR` rows (of one group) by `NV` 16-lane vectors (up to 24 accumulators of the 32
//! registers); a tile with fewer than 8 accumulators keeps 2 or 4 sets of them for
//! alternate depth indices, so its FMAs do not wait on each other. A partial vector at the
//! right edge uses masked loads and stores, which never touch the lanes masked off. The depth
//! is cut in blocks of [`KC`], the rows in panels of [`PANEL`], so a block of `b` and a panel
//! of `a` stay in cache while the tiles sweep them. The order of the sums depends only on the
//! shapes, so results are reproducible.

use std::arch::x86_64::*;

/// Depth of a block: `KC` rows of `b`, at most 64 columns wide, is 64 KiB.
const KC: usize = 256;
/// Rows of `a` per panel.
const PANEL: usize = 96;

/// Whether this CPU runs [`gemm`] (std caches the answer).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// The left operand: element `(i, l)` at
/// `ptr[(i / group) * group_stride + (i % group) * rs + (l / seg) * seg_stride + (l % seg) * cs]`.
///
/// A plain matrix has one group of rows (`group >= m`) and one segment (`seg >= k`)
/// ([`Lhs::plain`]). An implicit im2col matrix has a depth segment per kernel row (`seg = KW * C`
/// contiguous values of an input row, `seg_stride` = one padded row) and a group of rows per
/// output row (`group = OW` pixels, `group_stride` = one padded row), so that the padding
/// columns between two output rows are no rows of the product. Its transpose, for a
/// convolution's `dW^T`, has a group of rows per kernel row and a depth segment per output
/// row.
#[derive(Clone, Copy)]
pub(crate) struct Lhs {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
    pub seg: usize,
    pub seg_stride: usize,
    pub group: usize,
    pub group_stride: usize,
}

impl Lhs {
    /// Element `(i, l)` at `ptr[i * rs + l * cs]`.
    pub(crate) fn plain(ptr: *const f32, rs: usize, cs: usize) -> Lhs {
        Lhs {
            ptr,
            rs,
            cs,
            seg: usize::MAX,
            seg_stride: 0,
            group: usize::MAX,
            group_stride: 0,
        }
    }
}

/// One block of the product: rows `row0..` of `a`, whose depth starts at `a` (the start of
/// the segment holding the block's first depth index, which is `within` into it; a row's
/// offset from there is given by `ars`, `group` and `group_stride`), `kc` rows of `b` from
/// `b`, `nb <= 64` columns of `b` and `c` (from `c`, which is row `row0`); `load` adds to what
/// `c` holds instead of overwriting it; without `load`, a non-null `bias` (`nb` values) is
/// added to each row.
struct Block {
    a: *const f32,
    row0: usize,
    ars: usize,
    group: usize,
    group_stride: usize,
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
    bias: *const f32,
}

/// What [`gemm`] does with `c`.
#[derive(Clone, Copy)]
pub(crate) enum Init {
    /// `c = a . b`
    Zero,
    /// `c += a . b`
    Accumulate,
    /// `c = bias + a . b`, `bias` a row of `n` values (a layer's bias: no pass to fill `c`
    /// with it first, and no reading `c` back).
    Bias(*const f32),
}

/// `c = a . b` (or as `init` says) for `a [m, k]` (see [`Lhs`]), `b [k, n]` with element
/// `(l, j)` at `b[l * ldb + j]`, and `c [m, n]` with element `(i, j)` at `c[i * ldc + j]`.
///
/// # Safety
/// The CPU has AVX-512F ([`available`]); `m, n, k > 0`, `a.seg > 0`, `a.group > 0`; every
/// element named above (and the `n` values of an [`Init::Bias`]) lies inside its allocation;
/// `c` is exclusively borrowed and overlaps neither `a` nor `b` nor the bias.
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
    init: Init,
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
                        a: a.ptr.add(a0),
                        row0: p0,
                        ars: a.rs,
                        group: a.group,
                        group_stride: a.group_stride,
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
                        load: matches!(init, Init::Accumulate) || l0 > 0,
                        bias: match init {
                            Init::Bias(p) if l0 == 0 => p.add(j0),
                            _ => std::ptr::null(),
                        },
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

/// The `m` rows of a block, a group of rows at a time (a plain matrix is one group); in a
/// group, `MR` rows at a time, the rest in one tile of exactly that many rows (so that a
/// product with few rows reads `b` once).
#[target_feature(enable = "avx512f")]
unsafe fn rows<const MR: usize, const NV: usize>(blk: &Block, m: usize) {
    // The group of the next row, its place in it and its offset in `a`.
    let (mut g, mut q) = (blk.row0 / blk.group, blk.row0 % blk.group);
    let mut i = 0;
    while i < m {
        let len = (blk.group - q).min(m - i);
        let off = g * blk.group_stride + q * blk.ars;
        let mut t = 0;
        // SAFETY (each call): the tile's rows are inside the block, at `off + t * ars`.
        unsafe {
            while t + MR <= len {
                run::<MR, NV>(blk, i + t, off + t * blk.ars);
                t += MR;
            }
            let o = off + t * blk.ars;
            match len - t {
                0 => {}
                1 => run::<1, NV>(blk, i + t, o),
                2 => run::<2, NV>(blk, i + t, o),
                3 => run::<3, NV>(blk, i + t, o),
                4 => run::<4, NV>(blk, i + t, o),
                5 => run::<5, NV>(blk, i + t, o),
                6 => run::<6, NV>(blk, i + t, o),
                _ => run::<7, NV>(blk, i + t, o),
            }
        }
        (i, g, q) = (i + len, g + 1, 0);
    }
}

/// A tile, with its depth split over 2 or 4 sets of accumulators when it has fewer than 8
/// (one chain of dependent FMAs per accumulator would wait on the FMA's latency) and the
/// block is deep enough for it to matter.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn run<const MR: usize, const NV: usize>(blk: &Block, i0: usize, off: usize) {
    // SAFETY: the caller's.
    unsafe {
        if MR * NV >= 8 || blk.kc < 32 {
            tile::<MR, NV, 1>(blk, i0, off)
        } else if MR * NV >= 4 {
            tile::<MR, NV, 2>(blk, i0, off)
        } else {
            tile::<MR, NV, 4>(blk, i0, off)
        }
    }
}

/// Rows `i0..i0 + MR` of the block by its `nb` columns (`NV` vectors, the last one masked),
/// the rows at `off + r * ars` in `a`; depth index `l` goes to accumulator set `l % U` while
/// a whole round of `U` remains, the rest to set 0, and the sets are summed in order.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const MR: usize, const NV: usize, const U: usize>(
    blk: &Block,
    i0: usize,
    off: usize,
) {
    let mut masks = [0u16; NV];
    for (v, m) in masks.iter_mut().enumerate() {
        let lanes = blk.nb.saturating_sub(16 * v).min(16);
        *m = ((1u32 << lanes) - 1) as u16;
    }
    let mut acc = [[[_mm512_setzero_ps(); NV]; MR]; U];
    // SAFETY (all the pointer reads and writes below): element (i0 + r, l) of a, row l of b
    // and row i0 + r of c are inside the block; masked-off lanes are not accessed.
    unsafe {
        // The current segment of row i0 and the position in it.
        let (mut sp, mut w) = (blk.a.add(off), blk.within);
        let mut step = |l: usize, acc: &mut [[__m512; NV]; MR]| {
            let bp = blk.b.add(l * blk.ldb);
            let mut bv = [_mm512_setzero_ps(); NV];
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
        };
        let mut l = 0;
        while l + U <= blk.kc {
            for (u, acc) in acc.iter_mut().enumerate() {
                step(l + u, acc);
            }
            l += U;
        }
        while l < blk.kc {
            step(l, &mut acc[0]);
            l += 1;
        }
        for r in 0..MR {
            let cp = blk.c.add((i0 + r) * blk.ldc);
            for v in 0..NV {
                let mut x = acc[0][r][v];
                for set in &acc[1..] {
                    x = _mm512_add_ps(x, set[r][v]);
                }
                if blk.load {
                    x = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], cp.add(16 * v)), x);
                } else if !blk.bias.is_null() {
                    x = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], blk.bias.add(16 * v)), x);
                }
                _mm512_mask_storeu_ps(cp.add(16 * v), masks[v], x);
            }
        }
    }
}

/// [`gemm`] in plain scalar Rust, for tests on any CPU: the same views and `init`, element by
/// element (the sums are in another order, so results agree to rounding, not bit for bit).
///
/// # Safety
/// As [`gemm`], without the AVX-512F requirement.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_portable(
    m: usize,
    n: usize,
    k: usize,
    a: Lhs,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    for i in 0..m {
        let row = (i / a.group) * a.group_stride + (i % a.group) * a.rs;
        for j in 0..n {
            let mut acc = 0.0f32;
            for l in 0..k {
                let at = row + (l / a.seg) * a.seg_stride + (l % a.seg) * a.cs;
                // SAFETY: elements of the views (the caller's contract, as for `gemm`).
                acc += unsafe { *a.ptr.add(at) * *b.add(l * ldb + j) };
            }
            // SAFETY: as above.
            unsafe {
                let out = c.add(i * ldc + j);
                *out = match init {
                    Init::Zero => acc,
                    Init::Accumulate => *out + acc,
                    Init::Bias(bias) => *bias.add(j) + acc,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Left operands with groups of rows and segments of depth (the implicit im2col
        /// views), a bias or accumulation: the naive product of the view, element by element
        /// from the formula of [`Lhs`], within rounding.
        #[test]
        fn grouped_segmented_views_match_naive(
            m in 1usize..100, n in 1usize..70, k in 1usize..600,
            group in 1usize..20, gap in 0usize..4, seg in 1usize..40, seg_gap in 0usize..4,
            rs in 1usize..4, cs in 1usize..3, init in 0u8..3, seed in 0u64..1000,
        ) {
            if !available() {
                eprintln!("grouped_segmented_views_match_naive: skipped, no AVX-512F");
                return Ok(());
            }
            let val = |i: usize| ((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0;
            let lhs = |ptr| Lhs {
                ptr,
                rs,
                cs,
                seg,
                seg_stride: seg * cs + seg_gap,
                group,
                group_stride: group * rs + gap,
            };
            let row = |i: usize| (i / group) * (group * rs + gap) + (i % group) * rs;
            let col = |l: usize| (l / seg) * (seg * cs + seg_gap) + (l % seg) * cs;
            let len = (0..m).map(row).max().unwrap_or(0) + (0..k).map(col).max().unwrap_or(0) + 1;
            // NaNs after the view: a read past its last element shows in the result.
            let av: Vec<f32> = (0..len).map(val).chain([f32::NAN; 64]).collect();
            let bv: Vec<f32> = (0..k * n).map(|i| val(i + 7)).collect();
            let bias: Vec<f32> = (0..n).map(|i| val(i + 11)).collect();
            let mut c: Vec<f32> = (0..m * n).map(|i| val(i + 3)).collect();
            let old = c.clone();
            let mode = match init {
                0 => Init::Zero,
                1 => Init::Accumulate,
                _ => Init::Bias(bias.as_ptr()),
            };
            // SAFETY: the CPU has AVX-512F (checked); m, n, k, seg, group > 0; `av` holds
            // every element of the view (its length is the largest offset + 1), `bv` is
            // k x n, `bias` n values, `c` a separate m x n buffer.
            unsafe {
                gemm(m, n, k, lhs(av.as_ptr()), bv.as_ptr(), n, c.as_mut_ptr(), n, mode);
            }
            for i in 0..m {
                for j in 0..n {
                    let terms = (0..k).map(|l| av[row(i) + col(l)] as f64 * bv[l * n + j] as f64);
                    let (dot, size): (f64, f64) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                    let base = match init {
                        0 => 0.0,
                        1 => old[i * n + j],
                        _ => bias[j],
                    };
                    let want = base + dot as f32;
                    let got = c[i * n + j];
                    // f32 sums of k terms: within a few ulps of their absolute sum per term.
                    let tol = 1e-6 * (size as f32 + base.abs()) * (k as f32).sqrt() + 1e-6;
                    proptest::prop_assert!(
                        (got - want).abs() <= tol,
                        "({}, {}): {} vs {}", i, j, got, want
                    );
                }
            }
        }
    }
}
