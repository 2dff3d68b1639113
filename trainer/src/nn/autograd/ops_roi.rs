//! RoI max pooling (Fast R-CNN, Girshick 2015): each region of interest of an NHWC feature map
//! is divided into a `P x P` grid of bins and each bin max-pooled, so proposals of any size
//! become fixed-size features for one head. The gradient flows to each bin's argmax.
//!
//! Quantization as in the paper's Caffe layer: the region's corners are scaled to the feature
//! map and rounded, the region spans at least one cell, and bin `(py, px)` covers rows
//! `floor(py * h / P) ..< ceil((py + 1) * h / P)` (likewise columns), clipped to the map. A bin
//! that falls wholly outside the map outputs 0 and passes no gradient.

use super::graph::{Backward, GradCtx, Graph, Var};
use super::{slice, Tensor};

/// A region of interest: the image in the batch and its box in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    pub image: usize,
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

/// Feature-map rows or columns `[start, end)` of bin `p` of `bins` over a region.
pub(crate) fn bin_span(
    p: usize,
    bins: usize,
    lo: f32,
    hi: f32,
    scale: f32,
    n: usize,
) -> (usize, usize) {
    let start = (lo * scale).round() as i64;
    let end = (hi * scale).round() as i64;
    let len = (end - start + 1).max(1) as f32;
    let size = len / bins as f32;
    let a = (p as f32 * size).floor() as i64 + start;
    let b = ((p + 1) as f32 * size).ceil() as i64 + start;
    (a.clamp(0, n as i64) as usize, b.clamp(0, n as i64) as usize)
}

/// Flat input offset of each output value's maximum (`usize::MAX`: an empty bin).
struct RoiPoolOp {
    argmax: Vec<usize>,
}

impl Backward for RoiPoolOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        vec![ctx.needs(0).then(|| {
            let mut dx = Tensor::zeros(ctx.input(0).raw_dim());
            let d = dx.as_slice_mut().expect("standard layout");
            for (&at, &g) in self.argmax.iter().zip(slice(&dy)) {
                if let Some(x) = d.get_mut(at) {
                    *x += g;
                }
            }
            dx
        })]
    }
}

impl Graph {
    /// `[R, bins, bins, C]`: each RoI of `x` (`[N, H, W, C]`) max-pooled to `bins x bins`;
    /// `scale` maps input pixels to feature cells (1/16 for a trunk that downsamples 16 times).
    pub fn roi_max_pool(&mut self, x: Var, rois: &[Roi], bins: usize, scale: f32) -> Var {
        let s = self.shape(x);
        assert_eq!(s.len(), 4, "roi_max_pool expects NHWC, got {s:?}");
        assert!(bins >= 1, "roi_max_pool: bins must be >= 1");
        let (n, h, w, c) = (s[0], s[1], s[2], s[3]);
        let xv = slice(self.value(x));
        let mut out = Vec::with_capacity(rois.len() * bins * bins * c);
        let mut argmax = Vec::with_capacity(out.capacity());
        for r in rois {
            assert!(r.image < n, "roi_max_pool: image {} of {n}", r.image);
            for py in 0..bins {
                let (y0, y1) = bin_span(py, bins, r.y0, r.y1, scale, h);
                for px in 0..bins {
                    let (x0, x1) = bin_span(px, bins, r.x0, r.x1, scale, w);
                    for ch in 0..c {
                        let mut best = (f32::NEG_INFINITY, usize::MAX);
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let at = ((r.image * h + iy) * w + ix) * c + ch;
                                if xv[at] > best.0 {
                                    best = (xv[at], at);
                                }
                            }
                        }
                        out.push(if best.1 == usize::MAX { 0.0 } else { best.0 });
                        argmax.push(best.1);
                    }
                }
            }
        }
        let y = super::tensor(&[rois.len(), bins, bins, c], out);
        self.push(y, &[x], RoiPoolOp { argmax })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::autograd::tensor;
    use crate::nn::gradcheck::{gradcheck, test_util::*, Tolerance};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The naive reference: every bin from the definition, with its own loops and no argmax
    /// bookkeeping; returns the output and, for a given output gradient, the input gradient.
    fn reference(
        x: &[f32],
        shape: [usize; 4],
        rois: &[Roi],
        bins: usize,
        scale: f32,
        dy: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let [_, h, w, c] = shape;
        let mut out = Vec::new();
        let mut dx = vec![0f32; x.len()];
        let mut k = 0;
        for r in rois {
            for py in 0..bins {
                for px in 0..bins {
                    for ch in 0..c {
                        // Cells of the bin, from the formula written out in floats.
                        let sy = (r.y0 * scale).round();
                        let ey = (r.y1 * scale).round();
                        let sx = (r.x0 * scale).round();
                        let ex = (r.x1 * scale).round();
                        let bh = (ey - sy + 1.0).max(1.0) / bins as f32;
                        let bw = (ex - sx + 1.0).max(1.0) / bins as f32;
                        let mut best: Option<(f32, usize)> = None;
                        for iy in 0..h {
                            for ix in 0..w {
                                let in_y = iy as f32 >= (py as f32 * bh).floor() + sy
                                    && (iy as f32) < ((py + 1) as f32 * bh).ceil() + sy;
                                let in_x = ix as f32 >= (px as f32 * bw).floor() + sx
                                    && (ix as f32) < ((px + 1) as f32 * bw).ceil() + sx;
                                if in_y && in_x {
                                    let at = ((r.image * h + iy) * w + ix) * c + ch;
                                    if best.is_none_or(|b| x[at] > b.0) {
                                        best = Some((x[at], at));
                                    }
                                }
                            }
                        }
                        out.push(best.map_or(0.0, |b| b.0));
                        if let Some((_, at)) = best {
                            dx[at] += dy[k];
                        }
                        k += 1;
                    }
                }
            }
        }
        (out, dx)
    }

    #[test]
    fn a_2x2_grid_over_a_4x4_map() {
        let mut g = Graph::new();
        let x = g.constant(tensor(&[1, 4, 4, 1], (0..16).map(|v| v as f32).collect()));
        let roi = Roi {
            image: 0,
            x0: 0.0,
            y0: 0.0,
            x1: 3.0,
            y1: 3.0,
        };
        let y = g.roi_max_pool(x, &[roi], 2, 1.0);
        assert_eq!(slice(g.value(y)), &[5.0, 7.0, 13.0, 15.0]);
    }

    /// Tolerance abs 1e-3 + rel 1e-2 (random inputs: no ties within eps).
    #[test]
    fn gradcheck_roi_max_pool() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let ins = [randn(&[2, 6, 5, 3], &mut rng)];
        let rois = [
            Roi {
                image: 1,
                x0: 2.0,
                y0: 1.0,
                x1: 15.0,
                y1: 20.0,
            },
            Roi {
                image: 0,
                x0: 0.0,
                y0: 0.0,
                x1: 4.0,
                y1: 4.0,
            },
        ];
        gradcheck(
            move |g, v| {
                let y = g.roi_max_pool(v[0], &rois, 3, 0.25);
                weighted_sum(g, y, 9)
            },
            &ins,
            1e-3,
            Tolerance {
                abs: 1e-3,
                rel: 1e-2,
            },
        )
        .unwrap();
    }

    proptest! {
        /// Forward values and the routed gradient equal the naive reference, for any RoI
        /// (partly or wholly outside the map included).
        #[test]
        fn matches_the_reference(
            h in 1usize..7, w in 1usize..7, c in 1usize..3, n in 1usize..3, bins in 1usize..4,
            scale in prop_oneof![Just(1.0f32), Just(0.5), Just(0.25)],
            boxes in proptest::collection::vec(
                (0usize..2, -4.0f32..30.0, -4.0f32..30.0, 0.0f32..20.0, 0.0f32..20.0), 1..4),
            seed in 0u64..1000,
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let x = randn(&[n, h, w, c], &mut rng);
            let rois: Vec<Roi> = boxes
                .iter()
                .map(|&(i, x0, y0, bw, bh)| Roi { image: i % n, x0, y0, x1: x0 + bw, y1: y0 + bh })
                .collect();
            let mut g = Graph::new();
            let xv = g.leaf(x.clone(), true);
            let y = g.roi_max_pool(xv, &rois, bins, scale);
            let dy: Vec<f32> = (0..g.value(y).len()).map(|i| (i % 7) as f32 - 3.0).collect();
            let dyv = g.constant(tensor(&[dy.len()], dy.clone()));
            let yf = g.reshape(y, &[dy.len()]);
            let prod = g.mul(yf, dyv);
            let loss = g.sum(prod);
            let got = slice(g.value(y)).to_vec();
            g.backward(loss);
            let dx = g.take_grad(xv).unwrap();
            let (want, want_dx) =
                reference(slice(&x), [n, h, w, c], &rois, bins, scale, &dy);
            prop_assert_eq!(got, want);
            prop_assert_eq!(slice(&dx).to_vec(), want_dx);
        }
    }
}
