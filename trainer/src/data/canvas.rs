//! Localization data made from the bundled real MNIST digits: each canvas holds one digit,
//! scaled 0.6-1.2x and placed at random, with its exact tight box. Deterministic for a seed;
//! build training canvases from the training split and test canvases from the test split.

use crate::data::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bilinear resize of a grayscale image (pixel centres aligned, edges clamped).
pub fn resize_bilinear(src: &[u8], sh: usize, sw: usize, dh: usize, dw: usize) -> Vec<u8> {
    let mut out = vec![0u8; dh * dw];
    let (fy, fx) = (sh as f32 / dh as f32, sw as f32 / dw as f32);
    for y in 0..dh {
        let sy = ((y as f32 + 0.5) * fy - 0.5).clamp(0.0, (sh - 1) as f32);
        let (y0, ty) = (sy.floor() as usize, sy - sy.floor());
        let y1 = (y0 + 1).min(sh - 1);
        for x in 0..dw {
            let sx = ((x as f32 + 0.5) * fx - 0.5).clamp(0.0, (sw - 1) as f32);
            let (x0, tx) = (sx.floor() as usize, sx - sx.floor());
            let x1 = (x0 + 1).min(sw - 1);
            let p = |yy: usize, xx: usize| src[yy * sw + xx] as f32;
            let v = (1.0 - ty) * ((1.0 - tx) * p(y0, x0) + tx * p(y0, x1))
                + ty * ((1.0 - tx) * p(y1, x0) + tx * p(y1, x1));
            out[y * dw + x] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Grayscale images resized (bilinear) to `h x w` and, for `c = 3`, the gray value in each of
/// three channels: the bundled digits for an architecture of another input.
pub fn resized(d: &Dataset, h: usize, w: usize, c: usize) -> Dataset {
    let (sh, sw) = (d.h, d.w);
    let mut pixels = Vec::with_capacity(d.len() * h * w * c);
    for img in d.pixels.chunks_exact(sh * sw * d.c) {
        let gray: Vec<u8> = img.iter().step_by(d.c).copied().collect();
        for v in resize_bilinear(&gray, sh, sw, h, w) {
            pixels.extend(std::iter::repeat_n(v, c));
        }
    }
    Dataset {
        h,
        w,
        c,
        pixels,
        labels: d.labels.clone(),
        boxes: Vec::new(),
        objects: Vec::new(),
        class_names: d.class_names.clone(),
    }
}

/// Tight box `(x0, y0, x1, y1)` of the non-zero pixels, exclusive ends; `None` if all zero.
pub fn tight_box(img: &[u8], h: usize, w: usize) -> Option<(usize, usize, usize, usize)> {
    let mut b: Option<(usize, usize, usize, usize)> = None;
    for y in 0..h {
        for x in 0..w {
            if img[y * w + x] > 0 {
                b = Some(match b {
                    None => (x, y, x + 1, y + 1),
                    Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1)),
                });
            }
        }
    }
    b
}

/// `count` canvases of `size x size`, each one digit from `digits` (cycled in a seeded order)
/// scaled by 0.6-1.2 and placed uniformly where it fits. Boxes are the digit's exact tight box.
pub fn single_object(digits: &Dataset, count: usize, size: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order = crate::data::shuffled(digits.len(), &mut rng);
    order.truncate(count.min(digits.len()));
    let mut pixels = vec![0u8; count * size * size];
    let (mut labels, mut boxes) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let d = order[i % order.len()];
        let scale: f32 = rng.gen_range(0.6..=1.2);
        let s = ((digits.h as f32 * scale).round() as usize).clamp(1, size);
        let glyph = resize_bilinear(digits.image(d), digits.h, digits.w, s, s);
        let (oy, ox) = (rng.gen_range(0..=size - s), rng.gen_range(0..=size - s));
        let canvas = &mut pixels[i * size * size..(i + 1) * size * size];
        for y in 0..s {
            canvas[(oy + y) * size + ox..(oy + y) * size + ox + s]
                .copy_from_slice(&glyph[y * s..(y + 1) * s]);
        }
        let (x0, y0, x1, y1) = tight_box(&glyph, s, s).unwrap_or((0, 0, s, s));
        let f = size as f32;
        boxes.push([
            (ox + x0) as f32 / f,
            (oy + y0) as f32 / f,
            (ox + x1) as f32 / f,
            (oy + y1) as f32 / f,
        ]);
        labels.push(digits.labels[d]);
    }
    Dataset {
        h: size,
        w: size,
        c: 1,
        pixels,
        labels,
        boxes,
        objects: Vec::new(),
        class_names: Vec::new(),
    }
}

/// `count` canvases of `size x size` with 1-4 digits each, scaled 0.5-1.0x, placed so that no
/// two boxes overlap by more than IoU 0.1 ("at most slightly"). Pixels of overlapping digits
/// take the maximum. `labels` holds the first object's class; `objects` holds them all.
pub fn multi_object(digits: &Dataset, count: usize, size: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let order = crate::data::shuffled(digits.len(), &mut rng);
    let mut next = 0usize;
    let mut pixels = vec![0u8; count * size * size];
    let (mut labels, mut objects) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let canvas = &mut pixels[i * size * size..(i + 1) * size * size];
        let want = rng.gen_range(1..=4);
        let mut objs: Vec<(u8, [f32; 4])> = Vec::new();
        let mut tries = 0;
        while objs.len() < want && tries < 50 {
            tries += 1;
            let d = order[next % order.len()];
            let scale: f32 = rng.gen_range(0.5..=1.0);
            let s = ((digits.h as f32 * scale).round() as usize).clamp(1, size);
            let (oy, ox) = (rng.gen_range(0..=size - s), rng.gen_range(0..=size - s));
            let glyph = resize_bilinear(digits.image(d), digits.h, digits.w, s, s);
            let Some((x0, y0, x1, y1)) = tight_box(&glyph, s, s) else {
                continue;
            };
            let f = size as f32;
            let b = [
                (ox + x0) as f32 / f,
                (oy + y0) as f32 / f,
                (ox + x1) as f32 / f,
                (oy + y1) as f32 / f,
            ];
            if objs.iter().any(|(_, o)| iou(*o, b) > 0.1) {
                continue;
            }
            next += 1;
            for y in 0..s {
                for x in 0..s {
                    let p = &mut canvas[(oy + y) * size + ox + x];
                    *p = (*p).max(glyph[y * s + x]);
                }
            }
            objs.push((digits.labels[d], b));
        }
        labels.push(objs.first().map_or(0, |o| o.0));
        objects.push(objs);
    }
    Dataset {
        h: size,
        w: size,
        c: 1,
        pixels,
        labels,
        boxes: Vec::new(),
        objects,
        class_names: Vec::new(),
    }
}

/// Intersection over union of two `[x0, y0, x1, y1]` boxes.
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Dataset {
        let (i, l) = crate::data::find_pair(&crate::data::default_data_dir()).unwrap();
        crate::data::load_pair(&i, &l, 10).unwrap().slice(0..200)
    }

    #[test]
    fn canvases_are_deterministic_and_boxes_are_tight() {
        let d = digits();
        let a = single_object(&d, 50, 40, 9);
        let b = single_object(&d, 50, 40, 9);
        assert_eq!(a.pixels, b.pixels);
        assert_ne!(a.pixels, single_object(&d, 50, 40, 10).pixels);
        for i in 0..a.len() {
            let img = a.image(i);
            let (x0, y0, x1, y1) = tight_box(img, 40, 40).unwrap();
            let want = [
                x0 as f32 / 40.0,
                y0 as f32 / 40.0,
                x1 as f32 / 40.0,
                y1 as f32 / 40.0,
            ];
            assert_eq!(
                a.boxes[i], want,
                "canvas {i}: box is the tight box of the whole canvas"
            );
            let side = (x1 - x0).max(y1 - y0);
            assert!((8..=34).contains(&side), "canvas {i}: digit side {side}");
        }
    }

    #[test]
    fn multi_object_canvases_overlap_at_most_slightly() {
        let d = digits();
        let a = multi_object(&d, 100, 64, 4);
        assert_eq!(a.pixels, multi_object(&d, 100, 64, 4).pixels);
        let mut counts = [0usize; 5];
        for objs in &a.objects {
            counts[objs.len()] += 1;
            for (i, (_, x)) in objs.iter().enumerate() {
                for (_, y) in &objs[i + 1..] {
                    assert!(iou(*x, *y) <= 0.1);
                }
            }
        }
        assert_eq!(counts[0], 0, "every canvas has an object");
        assert!(counts[3] + counts[4] > 20, "{counts:?}");
    }

    #[test]
    fn iou_exact_cases() {
        assert_eq!(iou([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]), 1.0);
        assert_eq!(iou([0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]), 0.0);
        assert!((iou([0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]) - 1.0 / 3.0).abs() < 1e-6);
    }
}
