//! R-CNN on the host (Girshick et al., CVPR 2014): selective-search proposals, each warped to
//! the classifier's 28x28 input, an 11-way classifier (10 digits + background) fine-tuned from
//! a digit classifier, class-specific box regression on the trunk's features, per-class NMS.
//!
//! Choices, and where they differ from the paper:
//! - Warping: the tightest *square* around the proposal with context padding (the proposal's
//!   longer side fills 20 of the 28 pixels, as an MNIST digit does), not an anisotropic
//!   stretch: a "1" stretched to a square looks like nothing the digit trunk has seen.
//!   Outside the canvas is black, the canvas background.
//! - Classifier: one softmax network with a background class (the paper's fine-tuned network)
//!   used directly for scores, without the paper's per-class SVMs (its Fast R-CNN successor
//!   also drops them). Labels: IoU >= 0.5 with a truth -> its class, < 0.3 -> background, in
//!   between unused; the truth boxes are positives too.
//! - Box regression as in the paper: a separate class-specific linear regressor per digit on
//!   the trunk's features (the input of the last linear layer), fitted by ridge regression on
//!   proposals with IoU >= 0.6, targets `(dx, dy, dw, dh)`. The targets are relative to the
//!   square window the network sees (centre offset / side, log size / side), not to the
//!   proposal's own width and height, which the warped input does not show.

use crate::data::canvas::iou;
use crate::data::metrics::Pred;
use crate::data::source::DataSource;
use crate::data::Dataset;
use crate::detect::bbox_reg::{
    apply_target, box_target, features_and_logits, fit_regressor, BoxRegressor,
};
use crate::nn::arch::{ArchSpec, LayerSpec};
use crate::nn::autograd::Tensor;
use crate::nn::model::Model;
use crate::train::{train, TrainConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Classifier input side (ref-cnn's).
pub const WARP: usize = 28;
/// Window side / proposal's longer side: the object fills 20 of 28 pixels, like MNIST digits.
pub const CONTEXT: f32 = 28.0 / 20.0;
/// Background class of the 11-way classifier.
pub const BACKGROUND: u8 = 10;
/// Training labels: IoU at or above -> the truth's class; below `BG_IOU` -> background.
pub const FG_IOU: f32 = 0.5;
pub const BG_IOU: f32 = 0.3;
/// Proposals used to fit the box regressors (the paper's 0.6).
pub const REG_IOU: f32 = 0.6;
/// Proposals per image at test time (selective search gives about 64 distinct on average).
pub const TEST_PROPOSALS: usize = 200;
/// Lowest class probability kept as a detection, and the per-class NMS IoU (the paper's 0.3).
pub const MIN_SCORE: f32 = 0.05;
pub const NMS_IOU: f32 = 0.3;
/// Training crops kept per canvas: positives and background proposals, at most.
pub const POS_PER_CANVAS: usize = 8;
pub const BG_PER_CANVAS: usize = 8;
/// Seed of the training crops' sampling (`rcnn` and `compare` use the same crops).
pub const CROP_SEED: u64 = 5;
/// Digit classes.
const DIGITS: usize = 10;

/// The square window (fractions) an R-CNN crop of proposal `p` is taken from.
pub fn window(p: [f32; 4]) -> [f32; 4] {
    let (cx, cy) = ((p[0] + p[2]) / 2.0, (p[1] + p[3]) / 2.0);
    let s = (p[2] - p[0]).max(p[3] - p[1]) * CONTEXT / 2.0;
    [cx - s, cy - s, cx + s, cy + s]
}

/// Bilinear crop of window `win` (fractions, may extend past the image: zero there) of a
/// `size x size` image, resampled to `WARP x WARP`.
pub fn warp(img: &[u8], size: usize, win: [f32; 4]) -> Vec<u8> {
    let f = size as f32;
    let (x0, y0) = (win[0] * f, win[1] * f);
    let (sx, sy) = (
        (win[2] - win[0]) * f / WARP as f32,
        (win[3] - win[1]) * f / WARP as f32,
    );
    let px = |y: isize, x: isize| -> f32 {
        if y < 0 || x < 0 || y >= size as isize || x >= size as isize {
            0.0
        } else {
            img[y as usize * size + x as usize] as f32
        }
    };
    let mut out = vec![0u8; WARP * WARP];
    for y in 0..WARP {
        let fy = y0 + (y as f32 + 0.5) * sy - 0.5;
        let (iy, ty) = (fy.floor() as isize, fy - fy.floor());
        for x in 0..WARP {
            let fx = x0 + (x as f32 + 0.5) * sx - 0.5;
            let (ix, tx) = (fx.floor() as isize, fx - fx.floor());
            let v = (1.0 - ty) * ((1.0 - tx) * px(iy, ix) + tx * px(iy, ix + 1))
                + ty * ((1.0 - tx) * px(iy + 1, ix) + tx * px(iy + 1, ix + 1));
            out[y * WARP + x] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Proposals of every image (`TEST_PROPOSALS` at most), in parallel.
pub fn propose_all(data: &Dataset, max: usize) -> Vec<Vec<[f32; 4]>> {
    use rayon::prelude::*;
    (0..data.len())
        .into_par_iter()
        .map(|i| crate::detect::proposals::selective_search(data.image(i), data.h, data.w, max))
        .collect()
}

/// A labelled training crop's origin: canvas, window, truth box (positives).
#[derive(Debug, Clone, Copy)]
struct Sample {
    window: [f32; 4],
    truth: Option<(u8, [f32; 4])>,
    iou: f32,
}

fn label_proposals(
    props: &[[f32; 4]],
    objects: &[(u8, [f32; 4])],
    rng: &mut ChaCha8Rng,
) -> Vec<Sample> {
    let (mut pos, mut bg) = (Vec::new(), Vec::new());
    let all = props.iter().copied().chain(objects.iter().map(|o| o.1));
    for p in all {
        let best = objects
            .iter()
            .map(|&(c, b)| (iou(p, b), c, b))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let s = |truth, v| Sample {
            window: window(p),
            truth,
            iou: v,
        };
        match best {
            Some((v, c, b)) if v >= FG_IOU => pos.push(s(Some((c, b)), v)),
            Some((v, _, _)) if v < BG_IOU => bg.push(s(None, v)),
            None => bg.push(s(None, 0.0)),
            _ => {}
        }
    }
    pos.shuffle(rng);
    bg.shuffle(rng);
    pos.truncate(POS_PER_CANVAS);
    bg.truncate(BG_PER_CANVAS);
    pos.extend(bg);
    pos
}

/// The R-CNN training crops of detection canvases (labels 0-9 digits, 10 background) and,
/// for the positives at IoU >= [`REG_IOU`], `(crop index, regression target, class)`.
pub fn training_crops(
    canvases: &Dataset,
    proposals: &[Vec<[f32; 4]>],
    seed: u64,
) -> (Dataset, Vec<(usize, [f32; 4], u8)>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut pixels, mut labels, mut reg) = (Vec::new(), Vec::new(), Vec::new());
    for (i, props) in proposals.iter().enumerate() {
        let img = canvases.image(i);
        for s in label_proposals(props, &canvases.objects[i], &mut rng) {
            if let Some((c, b)) = s.truth {
                if s.iou >= REG_IOU {
                    reg.push((labels.len(), box_target(s.window, b), c));
                }
            }
            pixels.extend(warp(img, canvases.w, s.window));
            labels.push(s.truth.map_or(BACKGROUND, |t| t.0));
        }
    }
    let crops = Dataset {
        h: WARP,
        w: WARP,
        c: 1,
        pixels,
        labels,
        boxes: Vec::new(),
        objects: Vec::new(),
        class_names: Vec::new(),
    };
    (crops, reg)
}

/// ref-cnn with an 11-way head (10 digits + background).
pub fn classifier_arch() -> ArchSpec {
    let mut arch = ArchSpec::ref_cnn();
    arch.name = "rcnn-cnn".into();
    arch.classes = 11;
    if let Some(LayerSpec::Linear { out_features, .. }) = arch.layers.last_mut() {
        *out_features = 11;
    }
    arch
}

/// A trained R-CNN: the 11-way classifier and the box regressors on its features.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rcnn {
    pub classifier: Model,
    pub regressor: BoxRegressor,
}

/// Detections of one image and the work it took.
pub struct Detected {
    pub preds: Vec<Pred>,
    pub proposals: usize,
    /// Box regressions evaluated (each `4 x (features + 1)` MACs).
    pub regressions: usize,
}

impl Rcnn {
    /// Warps each proposal, scores it, regresses a box for every digit class reaching
    /// [`MIN_SCORE`], and keeps per-class NMS survivors.
    pub fn detect(
        &mut self,
        img: &[u8],
        size: usize,
        image: usize,
        props: &[[f32; 4]],
    ) -> Detected {
        if props.is_empty() {
            return Detected {
                preds: Vec::new(),
                proposals: 0,
                regressions: 0,
            };
        }
        let wins: Vec<[f32; 4]> = props.iter().map(|&p| window(p)).collect();
        let mut px = Vec::with_capacity(wins.len() * WARP * WARP);
        for &w in &wins {
            px.extend(warp(img, size, w));
        }
        let n = wins.len();
        let x = Tensor::from_shape_vec(
            ndarray::IxDyn(&[n, WARP, WARP, 1]),
            px.iter().map(|&p| p as f32 / 255.0).collect(),
        )
        .expect("batch shape");
        let (f, logits) = features_and_logits(&mut self.classifier, x);
        let d = f.len() / n;
        let (fs, ls) = (
            f.as_slice().expect("standard layout"),
            logits.as_slice().expect("standard layout"),
        );
        let k = ls.len() / n;
        let mut per_class: Vec<Vec<Pred>> = vec![Vec::new(); DIGITS];
        let mut regressions = 0;
        for i in 0..n {
            let row = &ls[i * k..(i + 1) * k];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = row.iter().map(|v| (v - m).exp()).sum();
            for (c, list) in per_class.iter_mut().enumerate() {
                let p = (row[c] - m).exp() / z;
                if p < MIN_SCORE {
                    continue;
                }
                regressions += 1;
                let t = self.regressor.predict(c, &fs[i * d..(i + 1) * d]);
                let b = apply_target(wins[i], t).map(|v| v.clamp(0.0, 1.0));
                list.push(Pred {
                    image,
                    class: c as u8,
                    score: p,
                    bbox: b,
                });
            }
        }
        Detected {
            preds: per_class_nms(per_class, NMS_IOU),
            proposals: n,
            regressions,
        }
    }
}

/// Greedy NMS within each class's list (highest score first, dropping boxes that overlap a
/// kept one by more than `thr`), all classes' survivors together.
pub fn per_class_nms(per_class: Vec<Vec<Pred>>, thr: f32) -> Vec<Pred> {
    let mut preds = Vec::new();
    for mut list in per_class {
        list.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Pred> = Vec::new();
        for c in list {
            if kept.iter().all(|k| iou(k.bbox, c.bbox) <= thr) {
                kept.push(c);
            }
        }
        preds.extend(kept);
    }
    preds
}

/// Detection quality and cost on a set of canvases with precomputed proposals.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RcnnEval {
    pub map50: f32,
    pub map_coco: f32,
    pub proposals_per_image: f32,
    pub macs_per_image: f32,
    /// Classification, regression and NMS only (proposals are timed separately).
    pub ms_per_image: f32,
}

pub fn evaluate(rcnn: &mut Rcnn, data: &Dataset, proposals: &[Vec<[f32; 4]>]) -> RcnnEval {
    let t = std::time::Instant::now();
    let (mut preds, mut props, mut regs) = (Vec::new(), 0usize, 0usize);
    for (i, p) in proposals.iter().enumerate() {
        let d = rcnn.detect(data.image(i), data.w, i, p);
        preds.extend(d.preds);
        props += d.proposals;
        regs += d.regressions;
    }
    let n = data.len().max(1) as f32;
    let clf_macs = rcnn.classifier.arch.macs() as f32;
    let feat = rcnn.regressor.features as f32;
    RcnnEval {
        map50: crate::data::metrics::mean_ap(&preds, &data.objects, DIGITS, 0.5),
        map_coco: crate::data::metrics::mean_ap_coco(&preds, &data.objects, DIGITS),
        proposals_per_image: props as f32 / n,
        macs_per_image: (props as f32 * clf_macs + regs as f32 * 4.0 * (feat + 1.0)) / n,
        ms_per_image: t.elapsed().as_secs_f32() * 1e3 / n,
    }
}

/// How an R-CNN is trained.
#[derive(Debug, Clone)]
pub struct RcnnConfig {
    pub epochs: usize,
    pub lr: f32,
    pub seed: u64,
    /// Leading classifier layers held fixed (with a pretrained trunk).
    pub freeze: usize,
}

impl Default for RcnnConfig {
    fn default() -> Self {
        RcnnConfig {
            epochs: 4,
            lr: 0.05,
            seed: 11,
            freeze: 0,
        }
    }
}

/// Training data of an R-CNN: the crops, the regression samples, held-out crops for the
/// trainer's per-epoch loss.
pub struct RcnnData {
    /// All crops (the regression samples index into these).
    pub crops: Dataset,
    pub train: Dataset,
    pub reg: Vec<(usize, [f32; 4], u8)>,
    pub held_out: Dataset,
}

impl RcnnData {
    pub fn new(canvases: &Dataset, seed: u64) -> RcnnData {
        RcnnData::with_proposals(canvases, &propose_all(canvases, TEST_PROPOSALS), seed)
    }

    /// [`RcnnData::new`] with the canvases' proposals already computed.
    pub fn with_proposals(canvases: &Dataset, props: &[Vec<[f32; 4]>], seed: u64) -> RcnnData {
        let (crops, reg) = training_crops(canvases, props, seed);
        // The last canvases' crops (about 5 %) report the trainer's per-epoch crop accuracy.
        let cut = crops.len() - crops.len() / 20;
        RcnnData {
            train: crops.slice(0..cut),
            held_out: crops.slice(cut..crops.len()),
            crops,
            reg,
        }
    }
}

/// Per-epoch record: mAP on the evaluation canvases after `epoch` epochs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EpochMap {
    pub epoch: usize,
    pub map50: f32,
    pub map_coco: f32,
    pub crop_accuracy: f32,
}

/// Trains the classifier (from `pretrained`'s matching layers when given, else from scratch),
/// fits the regressors, and when `eval` is given scores detection after every epoch.
pub fn train_rcnn(
    data: &RcnnData,
    pretrained: Option<&Model>,
    cfg: &RcnnConfig,
    eval: Option<(&Dataset, &[Vec<[f32; 4]>])>,
    mut on_epoch: impl FnMut(&EpochMap),
) -> anyhow::Result<(Rcnn, Vec<EpochMap>, Vec<String>)> {
    let mut model = Model::new(classifier_arch(), &mut ChaCha8Rng::seed_from_u64(cfg.seed))?;
    let mut init = Vec::new();
    if let Some(src) = pretrained {
        init = crate::train::finetune::init_from(&mut model, src).lines();
    }
    let tc = TrainConfig {
        epochs: cfg.epochs,
        lr: cfg.lr,
        seed: cfg.seed,
        weight_decay: 0.002,
        frozen_layers: (0..cfg.freeze).collect(),
        ..TrainConfig::default()
    };
    let mut curve = Vec::new();
    train(
        &mut model,
        &data.train,
        &data.held_out,
        &tc,
        |_, _, _, _, _| {},
        |m, e| {
            if let Some((set, props)) = eval {
                let mut clf = m.clone();
                let regressor = fit_regressor(&mut clf, &data.crops, &data.reg);
                let mut r = Rcnn {
                    classifier: clf,
                    regressor,
                };
                let ev = evaluate(&mut r, set, props);
                let em = EpochMap {
                    epoch: e.epoch,
                    map50: ev.map50,
                    map_coco: ev.map_coco,
                    crop_accuracy: e.test_accuracy,
                };
                on_epoch(&em);
                curve.push(em);
            }
            Ok(())
        },
    )?;
    let regressor = fit_regressor(&mut model, &data.crops, &data.reg);
    Ok((
        Rcnn {
            classifier: model,
            regressor,
        },
        curve,
        init,
    ))
}

/// ref-cnn trained on the training digits: the classification trunk R-CNN starts from.
pub fn pretrain_digits(data: &DataSource, epochs: usize, seed: u64) -> anyhow::Result<Model> {
    let (train_digits, test_digits) = data.load(10)?;
    let mut m = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(seed))?;
    let cfg = TrainConfig {
        epochs,
        seed,
        weight_decay: 0.002,
        ..TrainConfig::default()
    };
    crate::train::train_silent(&mut m, &train_digits, &test_digits, &cfg)?;
    Ok(m)
}

/// First epoch whose mAP@0.5 reaches `target`.
pub fn epochs_to(curve: &[EpochMap], target: f32) -> Option<usize> {
    curve.iter().find(|e| e.map50 >= target).map(|e| e.epoch)
}

/// mAP@0.5 that "done" asks of R-CNN.
pub const TARGET_MAP50: f32 = 0.85;

/// The training canvases R-CNN learns from: the first `count` of the seeded training set.
pub fn training_canvases(train_digits: &Dataset, count: usize, size: usize) -> Dataset {
    crate::data::canvas::multi_object(
        train_digits,
        count,
        size,
        crate::data::source::CANVAS_SEEDS.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warp_of_the_whole_image_is_the_image_and_outside_is_black() {
        let img: Vec<u8> = (0..WARP * WARP).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(warp(&img, WARP, [0.0, 0.0, 1.0, 1.0]), img);
        assert!(warp(&img, WARP, [1.5, 1.5, 2.5, 2.5])
            .iter()
            .all(|&v| v == 0));
        // The left half of a window starting half an image to the left is black.
        let w = warp(&vec![200u8; WARP * WARP], WARP, [-0.5, 0.0, 0.5, 1.0]);
        assert!(w[WARP * 10 + 3] == 0 && w[WARP * 10 + WARP - 3] == 200);
    }

    #[test]
    fn proposals_are_labelled_by_iou() {
        let truth = [0.1, 0.1, 0.4, 0.4];
        let objs = [(3u8, truth)];
        let props = [
            [0.1, 0.1, 0.4, 0.42], // IoU 0.93: digit
            [0.6, 0.6, 0.9, 0.9],  // IoU 0: background
            [0.1, 0.1, 0.4, 0.25], // IoU 0.5: digit
            [0.1, 0.1, 0.3, 0.3],  // IoU 0.44: unused
        ];
        let s = label_proposals(&props, &objs, &mut ChaCha8Rng::seed_from_u64(1));
        let digits = s.iter().filter(|x| x.truth == Some((3, truth))).count();
        let bg = s.iter().filter(|x| x.truth.is_none()).count();
        assert_eq!(
            (digits, bg),
            (3, 1),
            "the truth box itself is a positive too"
        );
    }

    /// A tiny end-to-end run: a few hundred crops, one epoch; the pipeline yields valid boxes.
    #[test]
    fn tiny_rcnn_detects_something() {
        let (train_digits, test) = crate::data::source::detection_test_set(
            &crate::data::source::DataSource::default(),
            64,
        )
        .unwrap();
        let canvases = training_canvases(&train_digits, 60, 64);
        let data = RcnnData::new(&canvases, 1);
        let positives = data
            .crops
            .labels
            .iter()
            .filter(|&&l| l != BACKGROUND)
            .count();
        assert!(positives > 60, "{positives}");
        let cfg = RcnnConfig {
            epochs: 1,
            ..RcnnConfig::default()
        };
        let (mut r, _, init) = train_rcnn(&data, None, &cfg, None, |_| {}).unwrap();
        assert!(init.is_empty());
        let test = test.slice(0..20);
        let props = propose_all(&test, TEST_PROPOSALS);
        let e = evaluate(&mut r, &test, &props);
        assert!(
            e.proposals_per_image > 10.0 && e.macs_per_image > 0.0,
            "{e:?}"
        );
        let d = r.detect(test.image(0), 64, 0, &props[0]);
        for p in &d.preds {
            assert!(p.bbox[0] <= p.bbox[2] && p.bbox[1] <= p.bbox[3] && p.class < 10);
        }
    }

    /// The done-criterion: fine-tuned R-CNN mAP@0.5 >= 0.85 on the grid detector's
    /// 1,000 test canvases (about a minute in release: `cargo test --release -p trainer
    /// rcnn_reaches -- --ignored`).
    #[test]
    #[ignore]
    fn rcnn_reaches_the_target_map() {
        let a = DataSource::default();
        let (train_digits, test) = crate::data::source::detection_test_set(&a, 64).unwrap();
        let pre = pretrain_digits(&a, 3, 3).unwrap();
        let data = RcnnData::new(
            &training_canvases(&train_digits, crate::data::source::RCNN_CANVASES, 64),
            5,
        );
        let cfg = RcnnConfig {
            epochs: 3,
            ..RcnnConfig::default()
        };
        let (mut r, _, _) = train_rcnn(&data, Some(&pre), &cfg, None, |_| {}).unwrap();
        let e = evaluate(&mut r, &test, &propose_all(&test, TEST_PROPOSALS));
        assert!(e.map50 >= TARGET_MAP50, "{e:?}");
    }
}
