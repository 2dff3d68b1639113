//! The host baseline the grid detector is compared with: a sliding-window classifier (ref-cnn
//! with an 11th "background" class) run over every window of several sizes, then NMS. It shows
//! what the small single-pass detector buys in multiply-accumulates.

use crate::data::canvas::{iou, resize_bilinear};
use crate::data::metrics::Pred;
use crate::data::Dataset;
use crate::nn::arch::ArchSpec;
use crate::nn::model::Model;
use crate::train::{train_silent, TrainConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Window sides (pixels) and the stride between windows.
pub const WINDOWS: [usize; 4] = [16, 22, 28, 34];
pub const STRIDE: usize = 4;
/// Background class index of the window classifier.
pub const BACKGROUND: u8 = 10;
/// Class-agnostic NMS IoU for window detections.
pub const NMS_IOU: f32 = 0.3;
/// Lowest digit probability a window must reach.
pub const MIN_SCORE: f32 = 0.5;

/// Every window `(x, y, side)` of a `size x size` canvas.
pub fn windows(size: usize) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for &s in &WINDOWS {
        for y in (0..=size - s).step_by(STRIDE) {
            for x in (0..=size - s).step_by(STRIDE) {
                v.push((x, y, s));
            }
        }
    }
    v
}

fn crop(img: &[u8], size: usize, x: usize, y: usize, s: usize) -> Vec<u8> {
    let mut c = vec![0u8; s * s];
    for r in 0..s {
        c[r * s..(r + 1) * s].copy_from_slice(&img[(y + r) * size + x..(y + r) * size + x + s]);
    }
    resize_bilinear(&c, s, s, 28, 28)
}

/// 28x28 training crops from detection canvases: each object in a square window 1.0-1.3x its
/// longer side, labelled with its digit, and two background windows per canvas that overlap no
/// object by more than IoU 0.2.
pub fn crops(data: &Dataset, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let size = data.w;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..data.len() {
        let img = data.image(i);
        for &(c, b) in &data.objects[i] {
            let (cx, cy) = (
                (b[0] + b[2]) / 2.0 * size as f32,
                (b[1] + b[3]) / 2.0 * size as f32,
            );
            let side = ((b[2] - b[0]).max(b[3] - b[1]) * size as f32 * rng.gen_range(1.0..1.3))
                .round() as usize;
            let s = side.clamp(8, size);
            let x = (cx - s as f32 / 2.0).round().clamp(0.0, (size - s) as f32) as usize;
            let y = (cy - s as f32 / 2.0).round().clamp(0.0, (size - s) as f32) as usize;
            pixels.extend(crop(img, size, x, y, s));
            labels.push(c);
        }
        let mut added = 0;
        for _ in 0..20 {
            if added == 2 {
                break;
            }
            let s = rng.gen_range(12..=40usize.min(size));
            let (x, y) = (rng.gen_range(0..=size - s), rng.gen_range(0..=size - s));
            let f = size as f32;
            let w = [
                x as f32 / f,
                y as f32 / f,
                (x + s) as f32 / f,
                (y + s) as f32 / f,
            ];
            if data.objects[i].iter().all(|(_, b)| iou(w, *b) <= 0.2) {
                pixels.extend(crop(img, size, x, y, s));
                labels.push(BACKGROUND);
                added += 1;
            }
        }
    }
    Dataset {
        h: 28,
        w: 28,
        c: 1,
        pixels,
        labels,
        boxes: Vec::new(),
        objects: Vec::new(),
        class_names: Vec::new(),
    }
}

/// ref-cnn with 11 outputs, trained on [`crops`] of the training canvases.
pub fn train_classifier(
    train_canvases: &Dataset,
    epochs: usize,
    seed: u64,
) -> anyhow::Result<Model> {
    let mut arch = ArchSpec::ref_cnn();
    arch.name = "window-cnn".into();
    arch.classes = 11;
    if let Some(crate::nn::arch::LayerSpec::Linear { out_features, .. }) = arch.layers.last_mut() {
        *out_features = 11;
    }
    let data = crops(train_canvases, seed);
    let n_test = data.len() / 10;
    let (tr, te) = (
        data.slice(0..data.len() - n_test),
        data.slice(data.len() - n_test..data.len()),
    );
    let mut model = Model::new(arch, &mut ChaCha8Rng::seed_from_u64(seed))?;
    let cfg = TrainConfig {
        epochs,
        seed,
        ..TrainConfig::default()
    };
    train_silent(&mut model, &tr, &te, &cfg)?;
    Ok(model)
}

/// Sliding-window detections of every image: windows whose best digit probability reaches
/// [`MIN_SCORE`] (and beats background), class-agnostic NMS. A window's box is the tight box of
/// its bright pixels (> 64), the cheap stand-in for the box regression of the R-CNN family.
pub fn detect(model: &mut Model, data: &Dataset) -> Vec<Vec<Pred>> {
    let size = data.w;
    let wins = windows(size);
    let mut all = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        let img = data.image(i);
        let mut px = Vec::with_capacity(wins.len() * 784);
        for &(x, y, s) in &wins {
            px.extend(crop(img, size, x, y, s));
        }
        let batch = Dataset {
            h: 28,
            w: 28,
            c: 1,
            pixels: px,
            labels: vec![0; wins.len()],
            boxes: Vec::new(),
            objects: Vec::new(),
            class_names: Vec::new(),
        };
        let (x, _) = batch.batch(&(0..wins.len()).collect::<Vec<_>>());
        let logits = model.predict(x);
        let mut cands = Vec::new();
        for (row, &(x, y, s)) in logits.outer_iter().zip(&wins) {
            let r: Vec<f32> = row.iter().copied().collect();
            let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = r.iter().map(|v| (v - m).exp()).sum();
            let best = crate::data::metrics::argmax_f32(&r[..BACKGROUND as usize]);
            let p = (r[best] - m).exp() / z;
            if p >= MIN_SCORE {
                let f = size as f32;
                let mut win = vec![0u8; s * s];
                for r in 0..s {
                    for c in 0..s {
                        win[r * s + c] = if img[(y + r) * size + x + c] > 64 {
                            255
                        } else {
                            0
                        };
                    }
                }
                let (x0, y0, x1, y1) =
                    crate::data::canvas::tight_box(&win, s, s).unwrap_or((0, 0, s, s));
                let bbox = [
                    (x + x0) as f32 / f,
                    (y + y0) as f32 / f,
                    (x + x1) as f32 / f,
                    (y + y1) as f32 / f,
                ];
                cands.push(Pred {
                    image: i,
                    class: best as u8,
                    score: p,
                    bbox,
                });
            }
        }
        cands.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Pred> = Vec::new();
        for c in cands {
            if kept.iter().all(|k| iou(k.bbox, c.bbox) <= NMS_IOU) {
                kept.push(c);
            }
        }
        all.push(kept);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_count_and_crops() {
        assert_eq!(windows(64).len(), 13 * 13 + 11 * 11 + 10 * 10 + 8 * 8);
        let (i, l) = crate::data::find_pair(&crate::data::default_data_dir()).unwrap();
        let digits = crate::data::load_pair(&i, &l, 10).unwrap().slice(0..100);
        let canv = crate::data::canvas::multi_object(&digits, 20, 64, 3);
        let c = crops(&canv, 1);
        let objects: usize = canv.objects.iter().map(|o| o.len()).sum();
        assert_eq!(
            c.labels.iter().filter(|&&l| l != BACKGROUND).count(),
            objects
        );
        assert!(c.labels.iter().filter(|&&l| l == BACKGROUND).count() >= 20);
        assert_eq!(c.pixels.len(), c.len() * 784);
    }
}
