//! Localization: one object per image, a class head and a box head sharing the conv trunk.
//! The last layer outputs `[logits (C) | box (4)]`; the loss is cross-entropy on the logits
//! plus a weighted smooth-L1 on the box.
//!
//! The box is regressed in **input pixels** (0..40 on a 40x40 canvas), not in fractions: the
//! int8 output tensor has one scale for logits and box together, and logits span about
//! +-20, so fractions (0..1) would get only a handful of int8 steps. In pixels the box shares
//! the logits' range and keeps a resolution of about a quarter pixel.

use crate::data::canvas::iou;
use crate::data::metrics::argmax_f32;
use crate::data::Dataset;
use crate::nn::autograd::{Graph, Tensor, Var};
use crate::nn::model::Model;

/// Weight of the box loss (in pixels) against cross-entropy.
pub const BOX_WEIGHT: f32 = 0.125;
/// Smooth-L1 transition point: one pixel.
pub const BOX_BETA: f32 = 1.0;

/// `mean_n CE(out[n, ..C], label[n]) + w * mean_{n,k} smoothL1(out[n, C + k] - size * box[n, k])`
/// with `boxes` in fractions of the input and `size` the input side in pixels, on the tape:
/// the class columns through `cross_entropy`, the box columns through `smooth_l1_loss`.
pub fn loc_loss(
    g: &mut Graph,
    out: Var,
    labels: &[usize],
    boxes: &Tensor,
    classes: usize,
    size: f32,
) -> Var {
    let s = g.shape(out);
    let (n, width) = (s[0], s[1]);
    assert_eq!(
        width,
        classes + 4,
        "localization output must be classes + 4 wide"
    );
    let rows: Vec<usize> = (0..n).collect();
    let logits = g.gather(out, &rows, 0..classes);
    let ce = g.cross_entropy(logits, labels);
    let pred = g.gather(out, &rows, classes..classes + 4);
    let target = g.constant(boxes.mapv(|v| v * size));
    let l1 = g.smooth_l1_loss(pred, target, BOX_BETA);
    let l1 = g.scale(l1, BOX_WEIGHT);
    g.add(ce, l1)
}

/// Classification accuracy and mean IoU of the predicted boxes (float model, eval mode).
pub fn evaluate_boxes(model: &mut Model, data: &Dataset) -> (f32, f32) {
    let c = model.arch.classes;
    let (mut correct, mut iou_sum) = (0usize, 0f64);
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(500) {
        let (x, y) = data.batch(chunk);
        let out = model.predict(x);
        for ((row, &t), &i) in out.outer_iter().zip(&y).zip(chunk) {
            let r: Vec<f32> = row.iter().copied().collect();
            correct += (argmax_f32(&r[..c]) == t) as usize;
            let f = data.w as f32;
            iou_sum += iou(
                [r[c] / f, r[c + 1] / f, r[c + 2] / f, r[c + 3] / f],
                data.boxes[i],
            ) as f64;
        }
    }
    let n = data.len().max(1);
    (correct as f32 / n as f32, (iou_sum / n as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{gradcheck, Tolerance};

    /// Tolerance: abs 2e-3 + rel 1e-2, eps 1e-3; box errors kept away from the smooth-L1 kink.
    #[test]
    fn loc_loss_gradient() {
        let out: Vec<f32> = (0..2 * 14)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.1)
            .collect();
        let out = Tensor::from_shape_vec(ndarray::IxDyn(&[2, 14]), out).unwrap();
        let boxes = Tensor::from_shape_vec(
            ndarray::IxDyn(&[2, 4]),
            vec![0.3, -0.2, 0.011, 0.5, 0.0, 0.9, -0.7, 0.2],
        )
        .unwrap();
        let r = gradcheck(
            move |g, v| loc_loss(g, v[0], &[3, 7], &boxes, 10, 2.0),
            &[out],
            1e-3,
            Tolerance {
                abs: 2e-3,
                rel: 1e-2,
            },
        );
        assert!(r.is_ok(), "{r:?}");
    }

    /// The tape's value equals the formula written out: mean CE over images plus `BOX_WEIGHT`
    /// times the mean smooth-L1 over the 4 box numbers of every image.
    #[test]
    fn loc_loss_value_is_the_formula() {
        let (classes, size) = (3usize, 10.0f32);
        let out = vec![
            0.5, -1.0, 2.0, 3.0, 4.0, 5.5, 9.0, //
            -0.2, 0.1, 0.3, 1.0, 1.2, 8.0, 7.0,
        ];
        let labels = [2usize, 0];
        let boxes = [0.2f32, 0.3, 0.6, 0.9, 0.1, 0.1, 0.9, 0.75];
        let mut want = 0f64;
        for i in 0..2 {
            let r = &out[i * 7..(i + 1) * 7];
            let lse = r[..classes]
                .iter()
                .map(|v| (*v as f64).exp())
                .sum::<f64>()
                .ln();
            want += (lse - r[labels[i]] as f64) / 2.0;
            for k in 0..4 {
                let e = (r[classes + k] - size * boxes[i * 4 + k]) as f64;
                let l = if e.abs() < 1.0 {
                    0.5 * e * e
                } else {
                    e.abs() - 0.5
                };
                want += BOX_WEIGHT as f64 * l / 8.0;
            }
        }
        let mut g = Graph::new();
        let o = g.constant(crate::nn::autograd::tensor(&[2, 7], out));
        let b = crate::nn::autograd::tensor(&[2, 4], boxes.to_vec());
        let l = loc_loss(&mut g, o, &labels, &b, classes, size);
        let got = g.value(l).iter().next().copied().unwrap() as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
