//! The grid detector: per cell `[objectness, cx, cy, w, h, class logits...]` (NHWC channels).
//! An object belongs to the cell holding its box centre; that cell learns objectness 1, the
//! class, and the box as centre offset from the cell corner and size, in input pixels (the
//! int8 output shares one scale, see `loc_head`). Other cells learn objectness 0.

use crate::data::canvas::iou;
use crate::data::metrics::Pred;
use crate::data::Dataset;
use crate::nn::autograd::{Graph, Tensor, Var};
use crate::nn::model::Model;

/// Weight of a negative cell's objectness loss (most cells are empty).
pub const NOOBJ_WEIGHT: f32 = 0.5;
/// Weight of the box loss (smooth-L1 in pixels, beta 1).
pub const BOX_WEIGHT: f32 = 0.1;
/// Objectness logit above which a cell reports an object (sigmoid 0.27).
pub const OBJ_THRESHOLD: f32 = -1.0;
/// Non-maximum suppression IoU.
pub const NMS_IOU: f32 = 0.5;

/// Per-cell training target of one image.
#[derive(Debug, Clone, Copy)]
struct CellTarget {
    class: usize,
    /// cx, cy from the cell corner; w, h; all in pixels.
    bbox: [f32; 4],
}

fn targets(
    objects: &[(u8, [f32; 4])],
    size: f32,
    grid: usize,
    cell: f32,
) -> Vec<Option<CellTarget>> {
    let mut t = vec![None; grid * grid];
    for &(c, b) in objects {
        let (x0, y0, x1, y1) = (b[0] * size, b[1] * size, b[2] * size, b[3] * size);
        let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        let (gx, gy) = (
            ((cx / cell) as usize).min(grid - 1),
            ((cy / cell) as usize).min(grid - 1),
        );
        let slot = &mut t[gy * grid + gx];
        if slot.is_none() {
            *slot = Some(CellTarget {
                class: c as usize,
                bbox: [
                    cx - gx as f32 * cell,
                    cy - gy as f32 * cell,
                    x1 - x0,
                    y1 - y0,
                ],
            });
        }
    }
    t
}

/// `(1/N) sum_images [ sum_cells w * BCE(obj) + sum_objects (CE(class) + BOX_WEIGHT * sum_k
/// smoothL1(box_k)) ]` over an output `[N, G, G, 5 + classes]`, on the tape: the cells an
/// object belongs to and the empty ones are gathered apart, and each term is the tape's own
/// loss (`bce_with_logits`, `cross_entropy`, `smooth_l1_loss`, all means) scaled back to a sum
/// over cells divided by `N`.
pub fn grid_loss(
    g: &mut Graph,
    out: Var,
    objects: &[&Vec<(u8, [f32; 4])>],
    size: usize,
    classes: usize,
) -> Var {
    let s = g.shape(out);
    let (n, grid, ch) = (s[0], s[1], s[3]);
    assert_eq!(
        ch,
        5 + classes,
        "grid output must have 5 + classes channels"
    );
    let cell = size as f32 / grid as f32;
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let (mut class, mut bbox) = (Vec::new(), Vec::new());
    for (i, objs) in objects.iter().enumerate().take(n) {
        for (k, tk) in targets(objs, size as f32, grid, cell).iter().enumerate() {
            let row = i * grid * grid + k;
            match tk {
                Some(t) => {
                    pos.push(row);
                    class.push(t.class);
                    bbox.extend_from_slice(&t.bbox);
                }
                None => neg.push(row),
            }
        }
    }
    let inv_n = 1.0 / n as f32;
    let mut terms = Vec::new();
    if !neg.is_empty() {
        let x = g.gather(out, &neg, 0..1);
        let t = g.constant(Tensor::zeros(ndarray::IxDyn(&[neg.len(), 1])));
        let l = g.bce_with_logits(x, t);
        terms.push(g.scale(l, NOOBJ_WEIGHT * neg.len() as f32 * inv_n));
    }
    if !pos.is_empty() {
        let p = pos.len();
        let x = g.gather(out, &pos, 0..1);
        let t = g.constant(Tensor::ones(ndarray::IxDyn(&[p, 1])));
        let l = g.bce_with_logits(x, t);
        terms.push(g.scale(l, p as f32 * inv_n));
        let logits = g.gather(out, &pos, 5..ch);
        let l = g.cross_entropy(logits, &class);
        terms.push(g.scale(l, p as f32 * inv_n));
        let b = g.gather(out, &pos, 1..5);
        let t = g.constant(crate::nn::autograd::tensor(&[p, 4], bbox));
        let l = g.smooth_l1_loss(b, t, 1.0);
        terms.push(g.scale(l, BOX_WEIGHT * 4.0 * p as f32 * inv_n));
    }
    let mut loss = terms[0];
    for &t in &terms[1..] {
        loss = g.add(loss, t);
    }
    loss
}

/// Float decoding of one image's grid output `[G * G * (5 + C)]`: cells whose objectness
/// logit reaches [`OBJ_THRESHOLD`], ranked by that logit, class-agnostic NMS at [`NMS_IOU`].
/// Boxes as fractions of the input. The runtime's integer decoder follows the same rules.
pub fn decode(out: &[f32], grid: usize, classes: usize, size: usize, image: usize) -> Vec<Pred> {
    let ch = 5 + classes;
    let cell = size as f32 / grid as f32;
    let f = size as f32;
    let mut cands: Vec<Pred> = Vec::new();
    for k in 0..grid * grid {
        let r = &out[k * ch..(k + 1) * ch];
        if r[0] < OBJ_THRESHOLD {
            continue;
        }
        let (gx, gy) = ((k % grid) as f32 * cell, (k / grid) as f32 * cell);
        let (cx, cy, w, h) = (gx + r[1], gy + r[2], r[3].max(0.0), r[4].max(0.0));
        let class = crate::data::metrics::argmax_f32(&r[5..]) as u8;
        let b = [
            (cx - w / 2.0) / f,
            (cy - h / 2.0) / f,
            (cx + w / 2.0) / f,
            (cy + h / 2.0) / f,
        ]
        .map(|v| v.clamp(0.0, 1.0));
        cands.push(Pred {
            image,
            class,
            score: r[0],
            bbox: b,
        });
    }
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Pred> = Vec::new();
    for c in cands {
        if kept.iter().all(|k| iou(k.bbox, c.bbox) <= NMS_IOU) {
            kept.push(c);
        }
    }
    kept
}

/// The float model's decoded detections on every image of a detection set.
pub fn predict_all(model: &mut Model, data: &Dataset) -> Vec<Pred> {
    let classes = model.arch.classes;
    let mut preds = Vec::new();
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(200) {
        let (x, _) = data.batch(chunk);
        let out = model.predict(x);
        let grid = out.shape()[1];
        for (row, &i) in out.outer_iter().zip(chunk) {
            let r: Vec<f32> = row.iter().copied().collect();
            preds.extend(decode(&r, grid, classes, data.w, i));
        }
    }
    preds
}

/// mAP@0.5 and mAP@[.5:.95] of the float model on a detection set.
pub fn evaluate_map(model: &mut Model, data: &Dataset) -> (f32, f32) {
    let classes = model.arch.classes;
    let preds = predict_all(model, data);
    (
        crate::data::metrics::mean_ap(&preds, &data.objects, classes, 0.5),
        crate::data::metrics::mean_ap_coco(&preds, &data.objects, classes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::autograd::Tensor;
    use crate::nn::gradcheck::{gradcheck, Tolerance};

    /// Tolerance abs 2e-3 + rel 1e-2 at eps 1e-3; box errors are away from the smooth-L1 kink.
    #[test]
    fn grid_loss_gradient() {
        let (grid, classes) = (2usize, 3usize);
        let n = 2 * grid * grid * (5 + classes);
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 53 % 23) as f32 - 11.0) * 0.15)
            .collect();
        let out = Tensor::from_shape_vec(ndarray::IxDyn(&[2, grid, grid, 5 + classes]), v).unwrap();
        let objs = [
            vec![(1u8, [0.1, 0.1, 0.4, 0.3])],
            vec![(2u8, [0.5, 0.6, 0.9, 0.95]), (0u8, [0.05, 0.55, 0.3, 0.9])],
        ];
        let r = gradcheck(
            move |g, x| {
                let o: Vec<&Vec<(u8, [f32; 4])>> = objs.iter().collect();
                grid_loss(g, x[0], &o, 4, classes)
            },
            &[out],
            1e-3,
            Tolerance {
                abs: 2e-3,
                rel: 1e-2,
            },
        );
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn decode_inverts_targets() {
        // One object; a perfect output decodes to its box.
        let (grid, classes, size) = (8usize, 10usize, 64usize);
        let b = [10.0 / 64.0, 20.0 / 64.0, 30.0 / 64.0, 44.0 / 64.0];
        let t = targets(&[(7, b)], 64.0, grid, 8.0);
        let mut out = vec![-5.0f32; grid * grid * (5 + classes)];
        for (k, tk) in t.iter().enumerate() {
            if let Some(tc) = tk {
                let r = &mut out[k * 15..(k + 1) * 15];
                r[0] = 4.0;
                r[1..5].copy_from_slice(&tc.bbox);
                r[5 + 7] = 3.0;
            }
        }
        let p = decode(&out, grid, classes, size, 0);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].class, 7);
        for j in 0..4 {
            assert!(
                (p[0].bbox[j] - b[j]).abs() < 1e-6,
                "{:?} vs {b:?}",
                p[0].bbox
            );
        }
    }

    /// The tape's value equals the formula written out cell by cell.
    #[test]
    fn grid_loss_value_is_the_formula() {
        let (grid, classes, size) = (2usize, 2usize, 8usize);
        let ch = 5 + classes;
        let v: Vec<f32> = (0..grid * grid * ch)
            .map(|i| ((i * 29 % 13) as f32 - 6.0) * 0.3)
            .collect();
        let objs = vec![(1u8, [0.1, 0.1, 0.4, 0.3])];
        let t = targets(&objs, size as f32, grid, size as f32 / grid as f32);
        let mut want = 0f64;
        for (k, tk) in t.iter().enumerate() {
            let r: Vec<f64> = v[k * ch..(k + 1) * ch].iter().map(|&x| x as f64).collect();
            let y = tk.is_some() as u8 as f64;
            let w = if tk.is_some() {
                1.0
            } else {
                NOOBJ_WEIGHT as f64
            };
            want += w * (r[0].max(0.0) - r[0] * y + (-r[0].abs()).exp().ln_1p());
            if let Some(tc) = tk {
                let lse = r[5..].iter().map(|x| x.exp()).sum::<f64>().ln();
                want += lse - r[5 + tc.class];
                for j in 0..4 {
                    let e = r[1 + j] - tc.bbox[j] as f64;
                    let l = if e.abs() < 1.0 {
                        0.5 * e * e
                    } else {
                        e.abs() - 0.5
                    };
                    want += BOX_WEIGHT as f64 * l;
                }
            }
        }
        let mut g = Graph::new();
        let o =
            g.constant(Tensor::from_shape_vec(ndarray::IxDyn(&[1, grid, grid, ch]), v).unwrap());
        let l = grid_loss(&mut g, o, &[&objs], size, classes);
        let got = g.value(l).iter().next().copied().unwrap() as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
