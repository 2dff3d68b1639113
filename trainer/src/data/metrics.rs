//! Detection metrics as the literature computes them: IoU matching, precision/recall,
//! VOC-style all-point interpolated average precision, mAP@0.5 and COCO-style mAP@[.5:.95].

use crate::data::canvas::iou;

/// One predicted box: image index, class, confidence, `[x0, y0, x1, y1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pred {
    pub image: usize,
    pub class: u8,
    pub score: f32,
    pub bbox: [f32; 4],
}

/// All-point interpolated AP of one class: predictions sorted by score (ties keep input
/// order), each matched greedily to the best-IoU unmatched truth of its image at `thr`;
/// AP = sum over recall steps of (delta recall) x (max precision at any recall >= it).
pub fn average_precision(
    preds: &[Pred],
    truths: &[Vec<(u8, [f32; 4])>],
    class: u8,
    thr: f32,
) -> Option<f32> {
    let n_truth: usize = truths
        .iter()
        .map(|t| t.iter().filter(|o| o.0 == class).count())
        .sum();
    if n_truth == 0 {
        return None;
    }
    let mut ps: Vec<&Pred> = preds.iter().filter(|p| p.class == class).collect();
    ps.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut used: Vec<Vec<bool>> = truths.iter().map(|t| vec![false; t.len()]).collect();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve = Vec::with_capacity(ps.len()); // (recall, precision)
    for p in ps {
        let mut best: Option<(usize, f32)> = None;
        for (j, (c, b)) in truths[p.image].iter().enumerate() {
            let v = iou(p.bbox, *b);
            if *c == class && !used[p.image][j] && v >= thr && best.is_none_or(|(_, bv)| v > bv) {
                best = Some((j, v));
            }
        }
        match best {
            Some((j, _)) => {
                used[p.image][j] = true;
                tp += 1;
            }
            None => fp += 1,
        }
        curve.push((tp as f32 / n_truth as f32, tp as f32 / (tp + fp) as f32));
    }
    // Precision envelope from the right, then integrate over recall steps.
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for i in 0..curve.len() {
        let (r, _) = curve[i];
        if r > prev_recall {
            let p = curve[i..].iter().map(|c| c.1).fold(0.0f32, f32::max);
            ap += (r - prev_recall) * p;
            prev_recall = r;
        }
    }
    Some(ap)
}

/// Mean AP over the classes that have at least one truth.
pub fn mean_ap(preds: &[Pred], truths: &[Vec<(u8, [f32; 4])>], classes: usize, thr: f32) -> f32 {
    let aps: Vec<f32> = (0..classes as u8)
        .filter_map(|c| average_precision(preds, truths, c, thr))
        .collect();
    if aps.is_empty() {
        0.0
    } else {
        aps.iter().sum::<f32>() / aps.len() as f32
    }
}

/// COCO-style mAP averaged over IoU thresholds 0.50, 0.55, ..., 0.95.
pub fn mean_ap_coco(preds: &[Pred], truths: &[Vec<(u8, [f32; 4])>], classes: usize) -> f32 {
    (0..10)
        .map(|i| mean_ap(preds, truths, classes, 0.5 + 0.05 * i as f32))
        .sum::<f32>()
        / 10.0
}

/// Index of the largest value (the first on ties; 0 for an empty slice).
pub fn argmax_f32(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(image: usize, class: u8, score: f32, bbox: [f32; 4]) -> Pred {
        Pred {
            image,
            class,
            score,
            bbox,
        }
    }

    /// Worked by hand: two truths; TP (0.9), FP (0.8), TP (0.7). Recall 0.5, 0.5, 1.0 with
    /// precision 1, 1/2, 2/3; envelope 1 then 2/3; AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    #[test]
    fn all_point_ap_hand_example() {
        let a = [0.0, 0.0, 0.5, 0.5];
        let b = [0.5, 0.5, 1.0, 1.0];
        let truths = vec![vec![(3u8, a), (3u8, b)]];
        let preds = [
            p(0, 3, 0.9, a),
            p(0, 3, 0.8, [0.0, 0.5, 0.2, 0.7]),
            p(0, 3, 0.7, b),
        ];
        let ap = average_precision(&preds, &truths, 3, 0.5).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-6, "{ap}");
        // A duplicate of a matched box is a false positive; wrong class does not count.
        let preds = [p(0, 3, 0.9, a), p(0, 3, 0.8, a), p(0, 4, 0.95, b)];
        assert!((average_precision(&preds, &truths, 3, 0.5).unwrap() - 0.5).abs() < 1e-6);
        assert_eq!(average_precision(&preds, &truths, 5, 0.5), None);
        // Perfect predictions: mAP 1 at every threshold.
        let preds = [p(0, 3, 0.9, a), p(0, 3, 0.8, b)];
        assert!((mean_ap_coco(&preds, &truths, 10) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn loose_boxes_lose_coco_map_but_not_voc() {
        let t = [0.0, 0.0, 0.4, 0.4];
        let truths = vec![vec![(1u8, t)]];
        let loose = [p(0, 1, 0.9, [0.0, 0.0, 0.4, 0.52])]; // IoU 0.769
        assert_eq!(mean_ap(&loose, &truths, 10, 0.5), 1.0);
        let coco = mean_ap_coco(&loose, &truths, 10);
        assert!((coco - 0.6).abs() < 1e-6, "{coco}"); // passes thresholds 0.50..0.75
    }
}
