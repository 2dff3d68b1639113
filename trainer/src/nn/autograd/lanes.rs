//! Vectorisable per-channel loops over channel-last data.

/// Per-channel loops over `[rows, c]` data, run as flat loops over blocks of `len` floats
/// (a multiple of `c`, at least 64) against per-lane constants tiled to the block: the
/// compiler vectorises these whatever `c` is, where a loop over 8 or 16 channels would not.
/// Sums keep f32 partials per lane for `FLUSH` blocks, then add them into f64, so they stay
/// accurate over large batches; the order is fixed, so results are deterministic.
pub(crate) struct Lanes {
    c: usize,
    pub len: usize,
}

const FLUSH: usize = 32;

impl Lanes {
    pub fn new(c: usize) -> Self {
        Self {
            c,
            len: c * 64usize.div_ceil(c),
        }
    }

    /// `v` (one value per channel) repeated to the block length.
    pub fn tile(&self, v: &[f32]) -> Vec<f32> {
        (0..self.len).map(|j| v[j % self.c]).collect()
    }

    /// Per-channel sums of `f(x, p)` where `p` is `tile(params)`.
    pub fn sum(&self, x: &[f32], p: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f64> {
        self.sum2(x, x, p, |x, _, p| (f(x, p), 0.0)).0
    }

    /// Per-channel sums of both results of `f(x, y, p)`.
    pub fn sum2(
        &self,
        x: &[f32],
        y: &[f32],
        p: &[f32],
        f: impl Fn(f32, f32, f32) -> (f32, f32),
    ) -> (Vec<f64>, Vec<f64>) {
        let l = self.len;
        let (mut s1, mut s2) = (vec![0.0f64; l], vec![0.0f64; l]);
        let (mut a1, mut a2) = (vec![0.0f32; l], vec![0.0f32; l]);
        let flush = |a1: &mut [f32], a2: &mut [f32], s1: &mut [f64], s2: &mut [f64]| {
            for j in 0..l {
                s1[j] += a1[j] as f64;
                s2[j] += a2[j] as f64;
            }
            a1.fill(0.0);
            a2.fill(0.0);
        };
        let (mut xc, mut yc) = (x.chunks_exact(l), y.chunks_exact(l));
        for (i, (xb, yb)) in (&mut xc).zip(&mut yc).enumerate() {
            for ((((a1, a2), &x), &y), &p) in
                a1.iter_mut().zip(a2.iter_mut()).zip(xb).zip(yb).zip(p)
            {
                let (u, v) = f(x, y, p);
                *a1 += u;
                *a2 += v;
            }
            if i % FLUSH == FLUSH - 1 {
                flush(&mut a1, &mut a2, &mut s1, &mut s2);
            }
        }
        flush(&mut a1, &mut a2, &mut s1, &mut s2);
        for (j, (&x, &y)) in xc.remainder().iter().zip(yc.remainder()).enumerate() {
            let (u, v) = f(x, y, p[j]);
            s1[j] += u as f64;
            s2[j] += v as f64;
        }
        (self.fold(&s1), self.fold(&s2))
    }

    fn fold(&self, lanes: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0f64; self.c];
        for (j, &v) in lanes.iter().enumerate() {
            out[j % self.c] += v;
        }
        out
    }

    /// `out[i] = f(out[i], x[i], a, b, k)` with per-channel `a, b, k` given as tiles.
    pub fn apply(
        &self,
        out: &mut [f32],
        x: &[f32],
        t: [&[f32]; 3],
        f: impl Fn(f32, f32, f32, f32, f32) -> f32,
    ) {
        let l = self.len;
        for (ob, xb) in out.chunks_mut(l).zip(x.chunks(l)) {
            for ((((o, &x), &a), &b), &k) in ob.iter_mut().zip(xb).zip(t[0]).zip(t[1]).zip(t[2]) {
                *o = f(*o, x, a, b, k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_sums_and_apply() {
        for c in [1, 3, 8, 16, 70] {
            let rows = 1000 + c; // not a multiple of the block length
            let x: Vec<f32> = (0..rows * c).map(|i| (i % 97) as f32 * 0.5 - 7.0).collect();
            let lanes = Lanes::new(c);
            assert_eq!(lanes.len % c, 0);
            let p: Vec<f32> = (0..c).map(|ch| ch as f32).collect();
            let (s1, s2) = lanes.sum2(&x, &x, &lanes.tile(&p), |x, y, p| (x, y * p));
            for ch in 0..c {
                let want: f64 = x.iter().skip(ch).step_by(c).map(|&v| v as f64).sum();
                let want2 = want * ch as f64;
                assert!(
                    (s1[ch] - want).abs() < 1e-6 * want.abs().max(1.0),
                    "c={c} ch={ch}"
                );
                assert!((s2[ch] - want2).abs() < 1e-6 * want2.abs().max(1.0));
            }
            let mut out = x.clone();
            let t = lanes.tile(&p);
            lanes.apply(&mut out, &x, [&t, &t, &t], |o, x, a, _, _| o + x * a);
            for (i, (&o, &v)) in out.iter().zip(&x).enumerate() {
                assert_eq!(o, v + v * (i % c) as f32);
            }
        }
    }
}
