//! Fast R-CNN (Girshick, ICCV 2015) on the detection canvases: the conv trunk runs once per
//! image, each proposal is cut from the shared feature map by RoI max pooling to a fixed 7x7
//! grid, and one head gives 11 class scores (10 digits + background) and class-specific box
//! offsets, trained end to end with the multi-task loss. [`crate::detect::faster_rcnn`] adds
//! the region proposal network on the same feature map.
//!
//! Choices, and where they differ from the paper:
//! - Trunk: ref-cnn's two conv stages (3x3 conv, ReLU, 2x2 max-pool; BatchNorm folded into the
//!   conv), initialized from the trained digit classifier, on the 64x64 canvas: a 16x16x16
//!   feature map, one cell per 4 pixels. The paper's VGG16 has stride 16.
//! - Pooled region: each proposal's R-CNN context window (the square in which the proposal's
//!   longer side fills 20 of 28 pixels), so a 7x7 grid of it looks like the 7x7x16 map the
//!   digit classifier saw at its last layer.
//! - Head: one hidden layer (fc6, 256 units, ReLU; the paper has fc6 and fc7) shared by the
//!   class scores and the box offsets, initialized as the paper's new layers are (Gaussian,
//!   standard deviation 0.01 for the scores and 0.001 for the offsets; He for fc6).
//! - Mini-batches as in the paper: 2 images, 32 RoIs each, at most a quarter of them
//!   foreground (IoU >= 0.5 with a truth, the truth boxes included), the rest background
//!   (IoU in [0.1, 0.5), or below 0.1 when an image has too few). Box targets are the
//!   paper's `(tx, ty, tw, th)` from the proposal to its truth, divided by (0.1, 0.1, 0.2, 0.2).

use crate::data::canvas::iou;
use crate::data::metrics::Pred;
use crate::data::Dataset;
use crate::detect::anchors::{decode, encode};
use crate::detect::rcnn::window;
use crate::nn::autograd::{Conv2dParams, Graph, Roi, Tensor, Var};
use crate::nn::init::{he_normal, normal, zeros};
use crate::nn::model::Model;
use crate::train::optim::{Optimizer, SgdConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Canvas side and trunk stride: a 16x16 feature map.
pub const SIZE: usize = 64;
pub const STRIDE: f32 = 4.0;
/// RoI pooling grid (ref-cnn's last feature map is 7x7).
pub const BINS: usize = 7;
/// Trunk channels and pooled features per RoI.
pub const CHANNELS: usize = 16;
pub const FEATURES: usize = BINS * BINS * CHANNELS;
/// Classes: 10 digits and the background.
pub const CLASSES: usize = 11;
pub const BACKGROUND: usize = 10;
/// RoIs per training image and the largest foreground share.
pub const ROIS_PER_IMAGE: usize = 32;
pub const FG_PER_IMAGE: usize = 8;
pub const IMAGES_PER_BATCH: usize = 2;
/// RoI labels: foreground at or above, background in `[BG_LO, FG_IOU)`.
pub const FG_IOU: f32 = 0.5;
pub const BG_LO: f32 = 0.1;
/// Box-target normalization (the reference implementation's).
pub const BOX_STD: [f32; 4] = [0.1, 0.1, 0.2, 0.2];
/// Detections: lowest class probability kept and the per-class NMS IoU.
pub const MIN_SCORE: f32 = 0.05;
pub const NMS_IOU: f32 = 0.3;

/// Parameter slots (trunk, then the head; a Faster R-CNN appends its RPN's).
pub const CONV1_W: usize = 0;
pub const CONV1_B: usize = 1;
pub const CONV2_W: usize = 2;
pub const CONV2_B: usize = 3;
pub const FC6_W: usize = 4;
pub const FC6_B: usize = 5;
pub const CLS_W: usize = 6;
pub const CLS_B: usize = 7;
pub const BOX_W: usize = 8;
pub const BOX_B: usize = 9;
pub const HEAD_PARAMS: usize = 10;
/// Hidden units of the head.
pub const HIDDEN: usize = 256;

/// Trunk + head parameters (and, for a Faster R-CNN, the RPN's after them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TwoStage {
    pub params: Vec<Tensor>,
}

fn tensor(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_shape_vec(ndarray::IxDyn(shape), v).expect("shape matches data")
}

/// ref-cnn's conv `layer` with the BatchNorm after it folded in: `(weights OHWI, bias)`.
fn folded_conv(m: &Model, layer: usize) -> (Tensor, Tensor) {
    let lp = m.layer_params();
    let (conv, _) = &lp[layer];
    let (bn, st) = &lp[layer + 1];
    let w = &m.params[conv[0]];
    let o = w.shape()[0];
    let b0: Vec<f32> = conv
        .get(1)
        .map_or(vec![0.0; o], |&b| m.params[b].iter().copied().collect());
    let (gamma, beta) = (&m.params[bn[0]], &m.params[bn[1]]);
    let s = &m.bn[st[0]];
    let per = w.len() / o;
    let mut wv: Vec<f32> = w.iter().copied().collect();
    let mut bv = vec![0.0; o];
    for c in 0..o {
        let k = gamma[c] / (s.running_var[c] + s.eps).sqrt();
        for v in &mut wv[c * per..(c + 1) * per] {
            *v *= k;
        }
        bv[c] = (b0[c] - s.running_mean[c]) * k + beta[c];
    }
    (tensor(w.shape(), wv), tensor(&[o], bv))
}

impl TwoStage {
    /// The trunk from a trained ref-cnn digit classifier, the head's new layers drawn from
    /// `seed`.
    pub fn from_classifier(m: &Model, seed: u64) -> anyhow::Result<TwoStage> {
        if m.arch.layers != crate::nn::arch::ArchSpec::ref_cnn().layers {
            anyhow::bail!(
                "Fast R-CNN starts from a ref-cnn digit classifier, not {}",
                m.arch.name
            );
        }
        let (w1, b1) = folded_conv(m, 0);
        let (w2, b2) = folded_conv(m, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Ok(TwoStage {
            params: vec![
                w1,
                b1,
                w2,
                b2,
                he_normal(&[HIDDEN, FEATURES], &mut rng),
                zeros(&[HIDDEN]),
                normal(&[CLASSES, HIDDEN], 0.01, &mut rng),
                zeros(&[CLASSES]),
                normal(&[4 * BACKGROUND, HIDDEN], 0.001, &mut rng),
                zeros(&[4 * BACKGROUND]),
            ],
        })
    }

    /// MACs of the trunk on one canvas.
    pub fn trunk_macs() -> f32 {
        let c1 = (SIZE * SIZE * 8 * 9) as f32;
        let c2 = ((SIZE / 2) * (SIZE / 2) * CHANNELS * 9 * 8) as f32;
        c1 + c2
    }

    /// MACs of the head per RoI.
    pub fn head_macs() -> f32 {
        (FEATURES * HIDDEN + HIDDEN * (CLASSES + 4 * BACKGROUND)) as f32
    }
}

/// The shared feature map `[N, 16, 16, 16]` of a batch of canvases `[N, 64, 64, 1]`.
pub fn trunk(g: &mut Graph, x: Var, p: &[Var]) -> Var {
    let same = Conv2dParams::square(1, 1);
    let h = g.conv2d(x, p[CONV1_W], Some(p[CONV1_B]), same);
    let h = g.relu(h);
    let h = g.max_pool2d(h, 2, 2);
    let h = g.conv2d(h, p[CONV2_W], Some(p[CONV2_B]), same);
    let h = g.relu(h);
    g.max_pool2d(h, 2, 2)
}

/// The RoI of proposal `b` (fractions) of image `image`: its context window, in pixels.
pub fn roi_of(image: usize, b: [f32; 4]) -> Roi {
    let w = window(b);
    let s = SIZE as f32;
    Roi {
        image,
        x0: w[0] * s,
        y0: w[1] * s,
        x1: w[2] * s,
        y1: w[3] * s,
    }
}

/// Class logits `[R, 11]` and box offsets `[R, 40]` of the RoIs of feature map `feat`.
pub fn head(g: &mut Graph, feat: Var, rois: &[Roi], p: &[Var]) -> (Var, Var) {
    let pooled = g.roi_max_pool(feat, rois, BINS, 1.0 / STRIDE);
    let f = g.flatten(pooled);
    let f = g.linear(f, p[FC6_W], Some(p[FC6_B]));
    let f = g.relu(f);
    let cls = g.linear(f, p[CLS_W], Some(p[CLS_B]));
    let bx = g.linear(f, p[BOX_W], Some(p[BOX_B]));
    (cls, bx)
}

/// A canvas batch as the trunk's input.
pub fn images(data: &Dataset, idx: &[usize]) -> Tensor {
    let mut v = Vec::with_capacity(idx.len() * SIZE * SIZE);
    for &i in idx {
        v.extend(data.image(i).iter().map(|&p| p as f32 / 255.0));
    }
    tensor(&[idx.len(), SIZE, SIZE, 1], v)
}

/// A sampled training RoI: its box (fractions), class (10 = background) and, for a
/// foreground RoI, its normalized box target.
#[derive(Debug, Clone, Copy)]
pub struct Sampled {
    pub bbox: [f32; 4],
    pub class: usize,
    pub target: [f32; 4],
}

/// The normalized regression target of `truth` from proposal `p`.
pub fn box_target(p: [f32; 4], truth: [f32; 4]) -> [f32; 4] {
    let t = encode(p, truth);
    [
        t[0] / BOX_STD[0],
        t[1] / BOX_STD[1],
        t[2] / BOX_STD[2],
        t[3] / BOX_STD[3],
    ]
}

/// The box that normalized offsets `t` from box `p` describe (the inverse of
/// [`box_target`]), unclipped; `p` in fractions or pixels alike.
pub fn offsets_box(p: [f32; 4], t: [f32; 4]) -> [f32; 4] {
    let t = [
        t[0] * BOX_STD[0],
        t[1] * BOX_STD[1],
        t[2] * BOX_STD[2],
        t[3] * BOX_STD[3],
    ];
    decode(p, t)
}

/// The box that normalized offsets `t` from proposal `p` describe, clipped to the canvas.
pub fn apply_offsets(p: [f32; 4], t: [f32; 4]) -> [f32; 4] {
    offsets_box(p, t).map(|v| v.clamp(0.0, 1.0))
}

/// The paper's RoI sampling for one image: candidates are the proposals and the truth boxes;
/// at most [`FG_PER_IMAGE`] foreground, background filling up to [`ROIS_PER_IMAGE`].
pub fn sample_rois(
    props: &[[f32; 4]],
    objects: &[(u8, [f32; 4])],
    rng: &mut ChaCha8Rng,
) -> Vec<Sampled> {
    let (mut fg, mut bg, mut low) = (Vec::new(), Vec::new(), Vec::new());
    for p in props.iter().copied().chain(objects.iter().map(|o| o.1)) {
        let best = objects
            .iter()
            .map(|&(c, b)| (iou(p, b), c, b))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((v, c, b)) if v >= FG_IOU => fg.push(Sampled {
                bbox: p,
                class: c as usize,
                target: box_target(p, b),
            }),
            Some((v, _, _)) if v >= BG_LO => bg.push(p),
            _ => low.push(p),
        }
    }
    fg.shuffle(rng);
    bg.shuffle(rng);
    low.shuffle(rng);
    fg.truncate(FG_PER_IMAGE);
    let n_bg = ROIS_PER_IMAGE - fg.len();
    fg.extend(bg.into_iter().chain(low).take(n_bg).map(|bbox| Sampled {
        bbox,
        class: BACKGROUND,
        target: [0.0; 4],
    }));
    fg
}

/// The multi-task loss of sampled RoIs: cross-entropy over the 11 classes plus smooth L1
/// (beta 1) on the true class's four offsets of each foreground RoI, summed over the four and
/// averaged over all RoIs (the paper's `L_cls + [u >= 1] L_loc`, lambda 1).
pub fn head_loss(g: &mut Graph, cls: Var, bx: Var, samples: &[Sampled]) -> Var {
    let labels: Vec<usize> = samples.iter().map(|s| s.class).collect();
    let l_cls = g.cross_entropy(cls, &labels);
    // Targets equal to the prediction (no gradient) everywhere but the true class's columns.
    let cols = 4 * BACKGROUND;
    let mut t: Vec<f32> = g.value(bx).iter().copied().collect();
    for (r, s) in samples.iter().enumerate() {
        if s.class < BACKGROUND {
            t[r * cols + 4 * s.class..r * cols + 4 * s.class + 4].copy_from_slice(&s.target);
        }
    }
    let tv = g.constant(tensor(&[samples.len(), cols], t));
    let l_loc = g.smooth_l1_loss(bx, tv, 1.0);
    let l_loc = g.scale(l_loc, cols as f32);
    g.add(l_cls, l_loc)
}

/// One image's scored RoIs to detections: every digit class reaching [`MIN_SCORE`] gets its
/// own regressed box, then per-class NMS.
pub fn detections(image: usize, props: &[[f32; 4]], logits: &[f32], offsets: &[f32]) -> Vec<Pred> {
    let mut per_class: Vec<Vec<Pred>> = vec![Vec::new(); BACKGROUND];
    for (i, &p) in props.iter().enumerate() {
        let row = &logits[i * CLASSES..(i + 1) * CLASSES];
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = row.iter().map(|v| (v - m).exp()).sum();
        for (c, list) in per_class.iter_mut().enumerate() {
            let score = (row[c] - m).exp() / z;
            if score < MIN_SCORE {
                continue;
            }
            let o = &offsets[i * 4 * BACKGROUND + 4 * c..i * 4 * BACKGROUND + 4 * c + 4];
            list.push(Pred {
                image,
                class: c as u8,
                score,
                bbox: apply_offsets(p, [o[0], o[1], o[2], o[3]]),
            });
        }
    }
    crate::detect::rcnn::per_class_nms(per_class, NMS_IOU)
}

/// Detection quality and cost on the test canvases.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TwoStageEval {
    pub map50: f32,
    pub map_coco: f32,
    pub proposals_per_image: f32,
    pub macs_per_image: f32,
    /// The network, decoding and NMS (selective search, for Fast R-CNN, timed apart).
    pub ms_per_image: f32,
}

/// Per-epoch record.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EpochMap {
    pub epoch: usize,
    pub loss: f32,
    pub map50: f32,
    pub map_coco: f32,
}

/// Fast R-CNN's detections of test canvas `i` from its proposals.
pub fn detect(net: &TwoStage, data: &Dataset, i: usize, props: &[[f32; 4]]) -> Vec<Pred> {
    if props.is_empty() {
        return Vec::new();
    }
    let mut g = Graph::new();
    let x = g.leaf(images(data, &[i]), false);
    let p = g.leaves(&net.params, false);
    let feat = trunk(&mut g, x, &p);
    detect_rois(&mut g, feat, &p, i, props)
}

/// The head on one canvas's feature map `feat` and proposals: its detections, labelled as
/// canvas `image`.
pub fn detect_rois(
    g: &mut Graph,
    feat: Var,
    p: &[Var],
    image: usize,
    props: &[[f32; 4]],
) -> Vec<Pred> {
    let rois: Vec<Roi> = props.iter().map(|&b| roi_of(0, b)).collect();
    let (cls, bx) = head(g, feat, &rois, p);
    detections(
        image,
        props,
        g.value(cls).as_slice().expect("standard layout"),
        g.value(bx).as_slice().expect("standard layout"),
    )
}

/// The figures of detections `preds` on `data`: mAP, proposals per image, MACs (`fixed` per
/// canvas plus the head per proposal) and milliseconds per image since `started`.
pub fn summarize(
    preds: &[Pred],
    data: &Dataset,
    n_props: usize,
    fixed_macs: f32,
    started: std::time::Instant,
) -> TwoStageEval {
    let n = data.len().max(1) as f32;
    let ppi = n_props as f32 / n;
    TwoStageEval {
        map50: crate::data::metrics::mean_ap(preds, &data.objects, BACKGROUND, 0.5),
        map_coco: crate::data::metrics::mean_ap_coco(preds, &data.objects, BACKGROUND),
        proposals_per_image: ppi,
        macs_per_image: fixed_macs + ppi * TwoStage::head_macs(),
        ms_per_image: started.elapsed().as_secs_f32() * 1e3 / n,
    }
}

/// mAP and cost of Fast R-CNN on `data` with precomputed proposals.
pub fn evaluate(net: &TwoStage, data: &Dataset, props: &[Vec<[f32; 4]>]) -> TwoStageEval {
    let t = std::time::Instant::now();
    let mut preds = Vec::new();
    let mut n_props = 0usize;
    for (i, p) in props.iter().enumerate() {
        preds.extend(detect(net, data, i, p));
        n_props += p.len();
    }
    summarize(&preds, data, n_props, TwoStage::trunk_macs(), t)
}

/// How a two-stage detector is trained.
#[derive(Debug, Clone)]
pub struct TwoStageConfig {
    pub epochs: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for TwoStageConfig {
    fn default() -> Self {
        TwoStageConfig {
            epochs: 8,
            lr: 0.01,
            seed: 13,
        }
    }
}

/// SGD (momentum 0.9, weight decay 5e-4, the paper's) with a step to a tenth of the rate
/// for the last epoch; `step(params, batch, rng)` returns the batch loss and gradients,
/// `eval(params)` the test mAP@0.5 and mAP@[.5:.95] after each epoch (when there is a test
/// set), and `on_epoch` sees each epoch's record.
pub fn sgd_epochs(
    net: &mut TwoStage,
    n_images: usize,
    cfg: &TwoStageConfig,
    mut step: impl FnMut(&TwoStage, &[usize], &mut ChaCha8Rng) -> (f32, Vec<Tensor>),
    eval: impl Fn(&TwoStage) -> Option<(f32, f32)>,
    mut on_epoch: impl FnMut(&EpochMap),
) -> anyhow::Result<Vec<EpochMap>> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut opt = SgdConfig {
        lr: cfg.lr,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    }
    .init();
    let mut curve = Vec::new();
    for epoch in 1..=cfg.epochs {
        if epoch == cfg.epochs && cfg.epochs > 1 {
            opt.set_lr(cfg.lr / 10.0);
        }
        let order = crate::data::shuffled(n_images, &mut rng);
        let (mut sum, mut steps) = (0f32, 0usize);
        for batch in order.chunks(IMAGES_PER_BATCH) {
            let (loss, grads) = step(net, batch, &mut rng);
            if !loss.is_finite() {
                anyhow::bail!("epoch {epoch}: the loss is not finite");
            }
            opt.step(&mut net.params, &grads);
            sum += loss;
            steps += 1;
        }
        let (map50, map_coco) = eval(net).unwrap_or((0.0, 0.0));
        let em = EpochMap {
            epoch,
            loss: sum / steps.max(1) as f32,
            map50,
            map_coco,
        };
        on_epoch(&em);
        curve.push(em);
    }
    Ok(curve)
}

/// The gradients of the Fast R-CNN loss on `batch` (images of `data` with proposals `props`).
pub fn fast_step(
    net: &TwoStage,
    data: &Dataset,
    props: &[Vec<[f32; 4]>],
    batch: &[usize],
    rng: &mut ChaCha8Rng,
) -> (f32, Vec<Tensor>) {
    let mut g = Graph::new();
    let x = g.leaf(images(data, batch), false);
    let p = g.leaves(&net.params, true);
    let feat = trunk(&mut g, x, &p);
    let loss = sampled_head_loss(&mut g, feat, &p, data, batch, |_, i| &props[i], rng);
    finish_step(&mut g, loss, &p, &net.params)
}

/// The head's loss on RoIs sampled, per image of `batch` (`k`-th, dataset index `i`), from
/// `props_of(k, i)` and the truths.
pub fn sampled_head_loss<P: AsRef<[[f32; 4]]>>(
    g: &mut Graph,
    feat: Var,
    p: &[Var],
    data: &Dataset,
    batch: &[usize],
    mut props_of: impl FnMut(usize, usize) -> P,
    rng: &mut ChaCha8Rng,
) -> Var {
    let mut rois = Vec::new();
    let mut samples = Vec::new();
    for (k, &i) in batch.iter().enumerate() {
        for s in sample_rois(props_of(k, i).as_ref(), &data.objects[i], rng) {
            rois.push(roi_of(k, s.bbox));
            samples.push(s);
        }
    }
    let (cls, bx) = head(g, feat, &rois, p);
    head_loss(g, cls, bx, &samples)
}

/// A step's loss value and the gradients of the parameters `p` (copies of `params`).
pub fn finish_step(g: &mut Graph, loss: Var, p: &[Var], params: &[Tensor]) -> (f32, Vec<Tensor>) {
    let value = g.value(loss).iter().next().copied().unwrap_or(f32::NAN);
    g.backward(loss);
    (value, g.grads_or_zeros(p, params))
}

/// Trains Fast R-CNN from `net` (see [`TwoStage::from_classifier`]); when `eval` is given,
/// scores detection after every epoch.
pub fn train_fast(
    net: &mut TwoStage,
    data: &Dataset,
    props: &[Vec<[f32; 4]>],
    cfg: &TwoStageConfig,
    eval: Option<(&Dataset, &[Vec<[f32; 4]>])>,
    on_epoch: impl FnMut(&EpochMap),
) -> anyhow::Result<Vec<EpochMap>> {
    sgd_epochs(
        net,
        data.len(),
        cfg,
        |n, batch, rng| fast_step(n, data, props, batch, rng),
        |n| {
            eval.map(|(set, p)| {
                let e = evaluate(n, set, p);
                (e.map50, e.map_coco)
            })
        },
        on_epoch,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets round-trip through the normalization: the box a target describes is the truth.
    #[test]
    fn box_targets_round_trip() {
        let p = [0.2, 0.3, 0.5, 0.7];
        let t = [0.25, 0.28, 0.45, 0.66];
        let b = apply_offsets(p, box_target(p, t));
        for (x, y) in b.iter().zip(t) {
            assert!((x - y).abs() < 1e-5, "{b:?} vs {t:?}");
        }
    }

    /// The paper's sampling: at most 8 foreground of 32, foreground at IoU >= 0.5 with the
    /// truth's class and target, background at IoU < 0.5.
    #[test]
    fn rois_are_sampled_by_iou() {
        let truth = [0.1, 0.1, 0.4, 0.4];
        let objs = [(7u8, truth)];
        let mut props = Vec::new();
        for k in 0..40 {
            let d = k as f32 * 0.01;
            props.push([0.1 + d, 0.1, 0.4 + d, 0.4]);
        }
        let s = sample_rois(&props, &objs, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(s.len(), ROIS_PER_IMAGE);
        let fg: Vec<_> = s.iter().filter(|x| x.class != BACKGROUND).collect();
        assert_eq!(fg.len(), FG_PER_IMAGE);
        for x in &s {
            let v = iou(x.bbox, truth);
            if x.class == BACKGROUND {
                assert!(v < FG_IOU);
            } else {
                assert!(v >= FG_IOU && x.class == 7);
                let b = apply_offsets(x.bbox, x.target);
                assert!(iou(b, truth) > 0.999);
            }
        }
    }
}
