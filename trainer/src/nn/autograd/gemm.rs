//! Safe single-threaded f32 GEMM on strided views, for the conv and linear ops.
//!
//! Backed by the `gemm` crate rather than ndarray's `matrixmultiply`: on the skinny shapes of
//! a small CNN (K = 9 for a 3x3 conv of a grayscale image, N = 8 output channels) it was 2-3x
//! faster on this machine (runtime-dispatched AVX2/AVX-512 kernels, and no packing for small
//! operands), e.g. 0.23 ms vs 0.71 ms for `[50176 x 9] . [9 x 8]`. On one thread (the
//! default) `Parallelism::None`: the summation order then depends only on the shapes and the
//! CPU, so runs are bit-reproducible. Inside a rayon pool of more threads (`--threads N`),
//! large products are split across the pool.

thread_local! {
    /// Set while this thread computes one shard of a data-parallel step: the other threads
    /// are busy with the other shards, so its products stay on it.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every product on the calling thread (see [`SERIAL`]); the flag is restored
/// even if `f` unwinds.
pub fn serial<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// Rayon inside a multi-thread pool for products big enough to amortize the split.
fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k >= 1 << 22 && !SERIAL.with(|s| s.get()) {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// Whether a product of this size runs on the calling thread (not split across the pool).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn on_this_thread(m: usize, n: usize, k: usize) -> bool {
    matches!(parallelism(m, n, k), gemm::Parallelism::None)
}

/// The elements of `m`, row-major and contiguous.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn pack(m: Mat<'_>) -> Vec<f32> {
    (0..m.rows)
        .flat_map(|i| (0..m.cols).map(move |j| m.data[i * m.rs + j * m.cs]))
        .collect()
}

/// A read-only matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `[rows, cols]`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, as a view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1)
                .checked_mul(self.rs)
                .zip((self.cols - 1).checked_mul(self.cs))
                .and_then(|(r, c)| r.checked_add(c));
            assert!(
                last.is_some_and(|l| l < self.data.len()),
                "gemm: view exceeds its buffer"
            );
        }
        assert!(self.rs <= isize::MAX as usize && self.cs <= isize::MAX as usize);
    }
}

/// `c = a . b` (`accumulate == false`, the old contents of `c` are not read) or
/// `c += a . b`, with `c` row-major `[a.rows, b.cols]`. On one thread and a CPU with
/// AVX-512F, [`super::gemm_avx512`] computes it; otherwise the `gemm` crate.
pub(crate) fn gemm(a: Mat<'_>, b: Mat<'_>, c: &mut [f32], accumulate: bool) {
    gemm_on(a, b, c, accumulate, true)
}

/// [`gemm`], with the AVX-512 kernel allowed or not.
fn gemm_on(a: Mat<'_>, b: Mat<'_>, c: &mut [f32], accumulate: bool, avx512: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(
        b.rows, k,
        "gemm: inner dimensions differ ({k} vs {})",
        b.rows
    );
    assert_eq!(c.len(), m * n, "gemm: output buffer has the wrong size");
    a.check();
    b.check();
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let par = parallelism(m, n, k);
    #[cfg(target_arch = "x86_64")]
    {
        // The kernel wants b with unit column stride: a transposed b (a conv's or a linear
        // layer's weights in the forward) is copied, which is small beside the product only when
        // a has many rows; with few (a linear layer on a handful of RoIs) the crate does better.
        let worth = b.cs == 1 || m >= 256;
        if avx512
            && worth
            && matches!(par, gemm::Parallelism::None)
            && super::gemm_avx512::available()
        {
            let packed: Vec<f32>;
            let (bp, ldb) = if b.cs == 1 {
                (b.data.as_ptr(), b.rs)
            } else {
                packed = pack(b);
                (packed.as_ptr(), n)
            };
            // SAFETY: the CPU has AVX-512F (checked); m, n, k > 0 (checked above); every
            // element of the views lies inside its slice (`check`), `packed` is k x n, and `c`
            // is an exclusively borrowed m x n buffer (length checked), so it overlaps neither.
            unsafe {
                let lhs = super::gemm_avx512::Lhs::plain(a.data.as_ptr(), a.rs, a.cs);
                let init = if accumulate {
                    super::gemm_avx512::Init::Accumulate
                } else {
                    super::gemm_avx512::Init::Zero
                };
                super::gemm_avx512::gemm(m, n, k, lhs, bp, ldb, c.as_mut_ptr(), n, init);
            }
            return;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = avx512;
    // SAFETY: every element the kernel reads, `a.data[i*rs + j*cs]` for i < rows, j < cols,
    // lies inside its slice (checked above), and likewise for b; `c` is an exclusively
    // borrowed, row-major m x n buffer (length checked), so its elements do not alias each
    // other or the inputs. The crate's `alpha` scales the old dst and `beta` the product.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0.0f64;
                for l in 0..a.cols {
                    s += (a.data[i * a.rs + l * a.cs] * b.data[l * b.rs + j * b.cs]) as f64;
                }
                c[i * b.cols + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..20).map(|i| (i as f32 * 0.11).cos()).collect();
        for avx512 in [false, true] {
            for (am, bm) in [
                (Mat::new(&a, 7, 5), Mat::new(&b, 5, 4)),
                (Mat::new(&a, 5, 7).t(), Mat::new(&b, 4, 5).t()),
            ] {
                let want = naive(am, bm);
                let mut c = vec![f32::NAN; 28];
                gemm_on(am, bm, &mut c, false, avx512);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-5, "{x} vs {y}");
                }
                gemm_on(am, bm, &mut c, true, avx512);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - 2.0 * y).abs() < 1e-5);
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Every tile shape of the AVX-512 kernel (1 to 4 vectors, full and partial, full
        /// and remainder rows), depths across its block size, either operand transposed,
        /// accumulating or not: the naive product within rounding.
        #[test]
        fn any_shape_matches_naive(
            m in 1usize..300, n in 1usize..140, k in 1usize..600,
            ta: bool, tb: bool, accumulate: bool, seed in 0u64..1000,
        ) {
            let val = |i: usize| ((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0;
            let (av, bv): (Vec<f32>, Vec<f32>) = ((0..m * k).map(val).collect(), (0..k * n).map(|i| val(i + 7)).collect());
            let am = if ta { Mat::new(&av, k, m).t() } else { Mat::new(&av, m, k) };
            let bm = if tb { Mat::new(&bv, n, k).t() } else { Mat::new(&bv, k, n) };
            let want = naive(am, bm);
            let mut c: Vec<f32> = (0..m * n).map(|i| val(i + 3)).collect();
            let old = c.clone();
            gemm_on(am, bm, &mut c, accumulate, true);
            for ((x, y), o) in c.iter().zip(&want).zip(&old) {
                let y = if accumulate { y + o } else { *y };
                proptest::prop_assert!((x - y).abs() < 1e-4 * k as f32, "{} vs {}", x, y);
            }
        }
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn rejects_out_of_bounds_views() {
        let a = vec![0.0; 10];
        let mut c = vec![0.0; 4];
        gemm(Mat::new(&a, 2, 6), Mat::new(&a, 6, 2), &mut c, false);
    }
}
