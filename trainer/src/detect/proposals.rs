//! Region proposals by selective search (Uijlings et al., IJCV 2013) on grayscale images:
//! Felzenszwalb-Huttenlocher graph segmentation gives the initial regions, hierarchical
//! grouping merges the most similar pair of adjacent regions until one is left, and every
//! region ever formed is a proposal. Several strategies (segmentation scale `k` x similarity
//! combination) diversify the proposals; their boxes are ranked as in the paper (position in
//! the hierarchy times a seeded random number), deduplicated and capped.
//!
//! The paper diversifies over colour spaces as well; these images have one channel, so the
//! diversification here is over `k` and over the similarity measures only.

use crate::data::canvas::iou;
use crate::data::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Gaussian smoothing before segmentation (the paper's and FH's 0.8).
pub const SIGMA: f32 = 0.8;
/// Segments smaller than this (pixels) are merged into a neighbour after segmentation.
pub const MIN_SIZE: usize = 5;
/// Segmentation scales: larger `k` prefers larger segments.
pub const SCALES: [f32; 4] = [50.0, 100.0, 200.0, 400.0];
/// Intensity histogram bins (the paper's 25 per channel).
const COLOUR_BINS: usize = 25;
/// Texture: 8 gradient orientations x 10 response bins (the paper's SIFT-like measure).
const ORIENTATIONS: usize = 8;
const TEXTURE_BINS: usize = 10;

/// Which similarities a grouping strategy adds up (each in [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub colour: bool,
    pub texture: bool,
    pub size: bool,
    pub fill: bool,
}

impl Similarity {
    /// Colour + texture + size + fill and texture + size + fill: the paper's "fast" pair.
    pub const STRATEGIES: [Similarity; 2] = [
        Similarity {
            colour: true,
            texture: true,
            size: true,
            fill: true,
        },
        Similarity {
            colour: false,
            texture: true,
            size: true,
            fill: true,
        },
    ];
}

/// Disjoint-set forest with union by rank and path halving; tracks component sizes.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<usize>,
    rank: Vec<u8>,
    size: Vec<usize>,
}

impl UnionFind {
    pub fn new(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n).collect(),
            rank: vec![0; n],
            size: vec![1; n],
        }
    }

    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Joins the sets of two roots; returns the new root.
    pub fn union_roots(&mut self, a: usize, b: usize) -> usize {
        if a == b {
            return a;
        }
        let (big, small) = if self.rank[a] >= self.rank[b] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[small] = big;
        self.size[big] += self.size[small];
        if self.rank[big] == self.rank[small] {
            self.rank[big] += 1;
        }
        big
    }

    pub fn size(&mut self, x: usize) -> usize {
        let r = self.find(x);
        self.size[r]
    }
}

/// Separable Gaussian blur (radius ceil(4 sigma), edges clamped).
fn smooth(img: &[u8], h: usize, w: usize, sigma: f32) -> Vec<f32> {
    let r = (4.0 * sigma).ceil() as isize;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    let mut tmp = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = (-r..=r)
                .map(|d| k[(d + r) as usize] * img[y * w + clamp(x as isize + d, w)] as f32)
                .sum();
        }
    }
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (-r..=r)
                .map(|d| k[(d + r) as usize] * tmp[clamp(y as isize + d, h) * w + x])
                .sum();
        }
    }
    out
}

/// Felzenszwalb-Huttenlocher segmentation of a grayscale image: 8-neighbour graph on the
/// smoothed image with weights |I(p) - I(q)|, edges in increasing weight; two components
/// merge when the edge is no heavier than either one's internal difference plus `k / |C|`;
/// then components under `min_size` pixels are merged along the remaining edges.
/// Returns a label per pixel, `0..regions`, and the region count.
pub fn segment(img: &[u8], h: usize, w: usize, k: f32, min_size: usize) -> (Vec<usize>, usize) {
    let s = smooth(img, h, w, SIGMA);
    let mut edges: Vec<(f32, usize, usize)> = Vec::with_capacity(4 * h * w);
    for y in 0..h {
        for x in 0..w {
            let a = y * w + x;
            let mut add = |yy: usize, xx: usize| {
                let b = yy * w + xx;
                edges.push(((s[a] - s[b]).abs(), a, b));
            };
            if x + 1 < w {
                add(y, x + 1);
            }
            if y + 1 < h {
                add(y + 1, x);
                if x + 1 < w {
                    add(y + 1, x + 1);
                }
                if x > 0 {
                    add(y + 1, x - 1);
                }
            }
        }
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut uf = UnionFind::new(h * w);
    let mut threshold = vec![k; h * w];
    for &(wt, a, b) in &edges {
        let (ra, rb) = (uf.find(a), uf.find(b));
        if ra != rb && wt <= threshold[ra] && wt <= threshold[rb] {
            let r = uf.union_roots(ra, rb);
            threshold[r] = wt + k / uf.size[r] as f32;
        }
    }
    for &(_, a, b) in &edges {
        let (ra, rb) = (uf.find(a), uf.find(b));
        if ra != rb && (uf.size[ra] < min_size || uf.size[rb] < min_size) {
            uf.union_roots(ra, rb);
        }
    }
    let mut id = vec![usize::MAX; h * w];
    let mut labels = vec![0; h * w];
    let mut n = 0;
    for (p, l) in labels.iter_mut().enumerate() {
        let r = uf.find(p);
        if id[r] == usize::MAX {
            id[r] = n;
            n += 1;
        }
        *l = id[r];
    }
    (labels, n)
}

/// A region of the grouping hierarchy.
#[derive(Debug, Clone)]
struct Region {
    size: usize,
    /// Pixel box, inclusive ends.
    bbox: [usize; 4],
    colour: Vec<f32>,
    texture: Vec<f32>,
}

fn normalize(v: &mut [f32]) {
    let s: f32 = v.iter().sum();
    if s > 0.0 {
        v.iter_mut().for_each(|x| *x /= s);
    }
}

fn intersection(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x.min(*y)).sum()
}

fn union_box(a: [usize; 4], b: [usize; 4]) -> [usize; 4] {
    [
        a[0].min(b[0]),
        a[1].min(b[1]),
        a[2].max(b[2]),
        a[3].max(b[3]),
    ]
}

fn box_area(b: [usize; 4]) -> usize {
    (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
}

fn similarity(a: &Region, b: &Region, sim: Similarity, image_size: usize) -> f32 {
    let im = image_size as f32;
    let mut s = 0.0;
    if sim.colour {
        s += intersection(&a.colour, &b.colour);
    }
    if sim.texture {
        s += intersection(&a.texture, &b.texture);
    }
    if sim.size {
        s += 1.0 - (a.size + b.size) as f32 / im;
    }
    if sim.fill {
        let bb = box_area(union_box(a.bbox, b.bbox));
        s += 1.0 - (bb as f32 - a.size as f32 - b.size as f32) / im;
    }
    s
}

/// Per-pixel texture features: for each of 8 orientations the half-wave rectified
/// directional derivative of the smoothed image (Sobel), binned into 10 levels of the image's
/// largest response. Returns `(orientation, bin)` per pixel and orientation.
fn texture_bins(img: &[u8], h: usize, w: usize) -> Vec<[u8; ORIENTATIONS]> {
    let s = smooth(img, h, w, 1.0);
    let at = |y: isize, x: isize| {
        s[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize]
    };
    let mut resp = vec![[0f32; ORIENTATIONS]; h * w];
    let mut max = 1e-6f32;
    for y in 0..h as isize {
        for x in 0..w as isize {
            let gx = (at(y - 1, x + 1) + 2.0 * at(y, x + 1) + at(y + 1, x + 1))
                - (at(y - 1, x - 1) + 2.0 * at(y, x - 1) + at(y + 1, x - 1));
            let gy = (at(y + 1, x - 1) + 2.0 * at(y + 1, x) + at(y + 1, x + 1))
                - (at(y - 1, x - 1) + 2.0 * at(y - 1, x) + at(y - 1, x + 1));
            let r = &mut resp[y as usize * w + x as usize];
            for (o, v) in r.iter_mut().enumerate() {
                let t = o as f32 * std::f32::consts::TAU / ORIENTATIONS as f32;
                *v = (gx * t.cos() + gy * t.sin()).max(0.0);
                max = max.max(*v);
            }
        }
    }
    resp.iter()
        .map(|r| r.map(|v| ((v / max * TEXTURE_BINS as f32) as usize).min(TEXTURE_BINS - 1) as u8))
        .collect()
}

/// Hierarchical grouping of one segmentation: returns the pixel boxes (inclusive) of every
/// region formed, with its hierarchy position (1 = the last region formed, the whole image).
fn group(
    img: &[u8],
    tex: &[[u8; ORIENTATIONS]],
    labels: &[usize],
    n: usize,
    h: usize,
    w: usize,
    sim: Similarity,
) -> Vec<([usize; 4], usize)> {
    let mut regions: Vec<Region> = (0..n)
        .map(|_| Region {
            size: 0,
            bbox: [usize::MAX, usize::MAX, 0, 0],
            colour: vec![0.0; COLOUR_BINS],
            texture: vec![0.0; ORIENTATIONS * TEXTURE_BINS],
        })
        .collect();
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            let r = &mut regions[labels[p]];
            r.size += 1;
            r.bbox = union_box(r.bbox, [x, y, x, y]);
            r.colour[img[p] as usize * COLOUR_BINS / 256] += 1.0;
            for (o, &b) in tex[p].iter().enumerate() {
                r.texture[o * TEXTURE_BINS + b as usize] += 1.0;
            }
        }
    }
    for r in &mut regions {
        normalize(&mut r.colour);
        normalize(&mut r.texture);
    }
    // Adjacency of the initial regions (4-neighbour pixel contacts).
    let mut pairs = std::collections::BTreeSet::new();
    for y in 0..h {
        for x in 0..w {
            let a = labels[y * w + x];
            for (yy, xx) in [(y, x + 1), (y + 1, x)] {
                if yy < h && xx < w {
                    let b = labels[yy * w + xx];
                    if a != b {
                        pairs.insert((a.min(b), a.max(b)));
                    }
                }
            }
        }
    }
    let mut sims: Vec<(f32, usize, usize)> = pairs
        .iter()
        .map(|&(a, b)| (similarity(&regions[a], &regions[b], sim, h * w), a, b))
        .collect();
    let mut alive = vec![true; n];
    let mut order: Vec<usize> = (0..n).collect(); // creation order of region ids
    while let Some(best) = (0..sims.len()).max_by(|&i, &j| sims[i].0.total_cmp(&sims[j].0)) {
        let (_, a, b) = sims[best];
        let (ra, rb) = (&regions[a], &regions[b]);
        let size = ra.size + rb.size;
        let mix = |x: &[f32], y: &[f32]| -> Vec<f32> {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p * ra.size as f32 + q * rb.size as f32) / size as f32)
                .collect()
        };
        let merged = Region {
            size,
            bbox: union_box(ra.bbox, rb.bbox),
            colour: mix(&ra.colour, &rb.colour),
            texture: mix(&ra.texture, &rb.texture),
        };
        let id = regions.len();
        regions.push(merged);
        alive.push(true);
        alive[a] = false;
        alive[b] = false;
        order.push(id);
        let mut neighbours: Vec<usize> = sims
            .iter()
            .filter(|s| s.1 == a || s.1 == b || s.2 == a || s.2 == b)
            .map(|s| if s.1 == a || s.1 == b { s.2 } else { s.1 })
            .filter(|&r| r != a && r != b && alive[r])
            .collect();
        neighbours.sort_unstable();
        neighbours.dedup();
        sims.retain(|s| s.1 != a && s.1 != b && s.2 != a && s.2 != b);
        for r in neighbours {
            sims.push((similarity(&regions[r], &regions[id], sim, h * w), r, id));
        }
    }
    let total = order.len();
    order
        .iter()
        .enumerate()
        .map(|(i, &id)| (regions[id].bbox, total - i))
        .collect()
}

/// Selective search on one grayscale image: up to `max_props` distinct boxes as fractions
/// `[x0, y0, x1, y1]` (exclusive ends, the convention of the data's boxes), best-ranked first.
/// Deterministic: the ranking's random numbers come from a fixed seed.
pub fn selective_search(img: &[u8], h: usize, w: usize, max_props: usize) -> Vec<[f32; 4]> {
    let tex = texture_bins(img, h, w);
    let mut rng = ChaCha8Rng::seed_from_u64(0x5e1ec7);
    let mut ranked: Vec<(f32, [usize; 4])> = Vec::new();
    for &k in &SCALES {
        let (labels, n) = segment(img, h, w, k, MIN_SIZE);
        for sim in Similarity::STRATEGIES {
            for (b, pos) in group(img, &tex, &labels, n, h, w, sim) {
                ranked.push((pos as f32 * rng.gen::<f32>(), b));
            }
        }
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut seen = std::collections::HashSet::new();
    let (fw, fh) = (w as f32, h as f32);
    ranked
        .into_iter()
        .filter(|(_, b)| seen.insert(*b))
        .take(max_props)
        .map(|(_, b)| {
            [
                b[0] as f32 / fw,
                b[1] as f32 / fh,
                (b[2] + 1) as f32 / fw,
                (b[3] + 1) as f32 / fh,
            ]
        })
        .collect()
}

/// Proposal quality on a detection set: for each count in `counts`, the fraction of truth
/// boxes with a proposal among the first `count` at IoU >= 0.5. Also returns the mean number
/// of proposals per image at the largest count.
pub fn recall_curve(data: &Dataset, counts: &[usize]) -> (Vec<(usize, f32)>, f32) {
    use rayon::prelude::*;
    let max = counts.iter().copied().max().unwrap_or(0);
    let per_image: Vec<(Vec<usize>, usize)> = (0..data.len())
        .into_par_iter()
        .map(|i| {
            let props = selective_search(data.image(i), data.h, data.w, max);
            let ranks = data.objects[i]
                .iter()
                .map(|(_, t)| {
                    props
                        .iter()
                        .position(|p| iou(*p, *t) >= 0.5)
                        .unwrap_or(usize::MAX)
                })
                .collect();
            (ranks, props.len())
        })
        .collect();
    let truths: usize = per_image.iter().map(|r| r.0.len()).sum();
    let curve = counts
        .iter()
        .map(|&c| {
            let found = per_image
                .iter()
                .flat_map(|r| &r.0)
                .filter(|&&r| r < c)
                .count();
            (c, found as f32 / truths.max(1) as f32)
        })
        .collect();
    let mean_props = per_image.iter().map(|r| r.1).sum::<usize>() as f32 / data.len().max(1) as f32;
    (curve, mean_props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_find_joins_and_counts() {
        let mut uf = UnionFind::new(6);
        let r = uf.union_roots(0, 1);
        assert_eq!(uf.find(0), uf.find(1));
        assert_eq!(uf.size(1), 2);
        let r2 = uf.find(2);
        uf.union_roots(r, r2);
        let (a, b) = (uf.find(3), uf.find(4));
        uf.union_roots(a, b);
        assert_eq!(uf.size(2), 3);
        assert_eq!(uf.size(4), 2);
        assert_ne!(uf.find(0), uf.find(3));
        assert_eq!(uf.size(5), 1);
        let (a, b) = (uf.find(0), uf.find(4));
        uf.union_roots(a, b);
        assert_eq!(uf.size(3), 5);
        assert_eq!(uf.find(1), uf.find(3));
    }

    #[test]
    fn constant_image_is_one_region() {
        for v in [0u8, 77, 255] {
            let (labels, n) = segment(&vec![v; 32 * 24], 24, 32, 100.0, MIN_SIZE);
            assert_eq!(n, 1, "value {v}");
            assert!(labels.iter().all(|&l| l == 0));
        }
    }

    fn two_squares() -> (Vec<u8>, [f32; 4], [f32; 4]) {
        let mut img = vec![0u8; 64 * 64];
        for y in 8..20 {
            for x in 6..22 {
                img[y * 64 + x] = 220;
            }
        }
        for y in 34..58 {
            for x in 38..56 {
                img[y * 64 + x] = 180;
            }
        }
        let a = [6.0 / 64.0, 8.0 / 64.0, 22.0 / 64.0, 20.0 / 64.0];
        let b = [38.0 / 64.0, 34.0 / 64.0, 56.0 / 64.0, 58.0 / 64.0];
        (img, a, b)
    }

    #[test]
    fn segmentation_separates_squares_from_background() {
        let (img, _, _) = two_squares();
        let (labels, n) = segment(&img, 64, 64, 100.0, MIN_SIZE);
        assert!(n >= 3, "{n} regions");
        let (bg, s1, s2) = (labels[0], labels[14 * 64 + 14], labels[46 * 64 + 46]);
        assert!(bg != s1 && bg != s2 && s1 != s2);
    }

    #[test]
    fn both_squares_are_proposed() {
        let (img, a, b) = two_squares();
        let props = selective_search(&img, 64, 64, 50);
        assert!(!props.is_empty() && props.len() <= 50);
        for t in [a, b] {
            let best = props.iter().map(|p| iou(*p, t)).fold(0.0, f32::max);
            assert!(best > 0.9, "best IoU {best} for {t:?}");
        }
        // Deterministic, and distinct boxes only.
        assert_eq!(props, selective_search(&img, 64, 64, 50));
        for (i, p) in props.iter().enumerate() {
            assert!(!props[..i].contains(p));
        }
    }

    /// Done-criterion of the issue on the detection test set itself (about 3 s in release).
    #[test]
    fn recall_on_the_detection_test_canvases() {
        let (_, test) = crate::data::source::detection_test_set(
            &crate::data::source::DataSource::default(),
            64,
        )
        .unwrap();
        assert_eq!(test.len(), 1000);
        let (curve, mean) = recall_curve(&test, &[10, 200]);
        assert!(curve[1].1 >= 0.95, "{curve:?}");
        assert!(curve[0].1 <= curve[1].1);
        assert!(mean <= 200.0);
    }
}
