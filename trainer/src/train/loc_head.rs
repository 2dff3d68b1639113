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
use crate::nn::autograd::{scalar, Backward, GradCtx, Graph, Tensor, Var};
use crate::nn::model::Model;

/// Weight of the box loss (in pixels) against cross-entropy.
pub const BOX_WEIGHT: f32 = 0.125;
/// Smooth-L1 transition point: one pixel.
pub const BOX_BETA: f32 = 1.0;

/// A loss whose gradient w.r.t. its single input was computed during the forward pass
/// (localization and grid-detection losses); backward only scales it by the incoming gradient.
struct PrecomputedGradOp {
    dout: Vec<f32>,
}

impl Backward for PrecomputedGradOp {
    fn backward(&self, dy: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>> {
        let s = dy.iter().next().copied().unwrap_or(1.0);
        let g: Vec<f32> = self.dout.iter().map(|&v| v * s).collect();
        vec![ctx.needs(0).then(|| {
            Tensor::from_shape_vec(ctx.input(0).raw_dim(), g).expect("loss gradient shape")
        })]
    }
}

/// Puts a scalar loss of `out` with its precomputed gradient `dout` on the tape.
pub(crate) fn push_loss(g: &mut Graph, out: Var, loss: f32, dout: Vec<f32>) -> Var {
    g.push(scalar(loss), &[out], PrecomputedGradOp { dout })
}

/// Smooth-L1 (Huber) of an error and its derivative, PyTorch's definition.
pub(crate) fn smooth_l1(e: f32, beta: f32) -> (f32, f32) {
    if e.abs() < beta {
        (0.5 * e * e / beta, e / beta)
    } else {
        (e.abs() - 0.5 * beta, e.signum())
    }
}

/// `mean_n CE(out[n, ..C], label[n]) + w * mean_{n,k} smoothL1(out[n, C + k] - size * box[n, k])`
/// with `boxes` in fractions of the input and `size` the input side in pixels.
pub fn loc_loss(
    g: &mut Graph,
    out: Var,
    labels: &[usize],
    boxes: &Tensor,
    classes: usize,
    size: f32,
) -> Var {
    let o = g.value(out);
    let (n, width) = (o.shape()[0], o.shape()[1]);
    assert_eq!(
        width,
        classes + 4,
        "localization output must be classes + 4 wide"
    );
    let rows = o.as_slice().expect("standard layout");
    let bx = boxes.as_slice().expect("standard layout");
    let mut dout = vec![0f32; n * width];
    let mut loss = 0f64;
    for i in 0..n {
        let r = &rows[i * width..(i + 1) * width];
        let d = &mut dout[i * width..(i + 1) * width];
        let m = r[..classes]
            .iter()
            .cloned()
            .fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = r[..classes].iter().map(|v| (v - m).exp()).sum();
        loss += (m + z.ln() - r[labels[i]]) as f64 / n as f64;
        for c in 0..classes {
            d[c] = ((r[c] - m).exp() / z - (c == labels[i]) as u8 as f32) / n as f32;
        }
        for k in 0..4 {
            let e = r[classes + k] - size * bx[i * 4 + k];
            let (l, dl) = smooth_l1(e, BOX_BETA);
            loss += (BOX_WEIGHT * l) as f64 / (4 * n) as f64;
            d[classes + k] = BOX_WEIGHT * dl / (4 * n) as f32;
        }
    }
    push_loss(g, out, loss as f32, dout)
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
}
