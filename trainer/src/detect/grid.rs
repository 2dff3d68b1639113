//! The grid detector on the device side: the runtime's integer detections as metric
//! predictions. Its training objective, float decoding and evaluation are in
//! `train::grid_head`.

use crate::data::metrics::Pred;

/// The runtime's integer detections of one image as metric predictions (boxes as fractions).
pub fn preds_from_runtime(dets: &runtime::Detections, size: usize, image: usize) -> Vec<Pred> {
    let s = 16.0 * size as f32;
    dets.iter()
        .map(|d| Pred {
            image,
            class: d.class as u8,
            score: d.score as f32,
            bbox: [
                d.bbox.x0 as f32 / s,
                d.bbox.y0 as f32 / s,
                d.bbox.x1 as f32 / s,
                d.bbox.y1 as f32 / s,
            ],
        })
        .collect()
}
