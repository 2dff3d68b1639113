//! R-CNN's class-specific bounding-box regression (Girshick et al. 2014, appendix C): a
//! linear map from the classifier trunk's features to `(dx, dy, dw, dh)`, one per class,
//! fitted in closed form by ridge regression (Cholesky on the normal equations).

use crate::data::Dataset;
use crate::nn::autograd::Tensor;
use crate::nn::model::Model;
use serde::{Deserialize, Serialize};

/// Ridge penalty of the box regressors (features are post-ReLU activations, O(1)).
pub const RIDGE_LAMBDA: f64 = 10.0;
/// Digit classes.
const DIGITS: usize = 10;

/// Regression target of truth `g` for window `w`: `(dx, dy, dw, dh)`, centre offsets in window
/// sides and log sizes relative to the side.
pub fn box_target(w: [f32; 4], g: [f32; 4]) -> [f32; 4] {
    let s = w[2] - w[0];
    [
        ((g[0] + g[2]) - (w[0] + w[2])) / 2.0 / s,
        ((g[1] + g[3]) - (w[1] + w[3])) / 2.0 / s,
        ((g[2] - g[0]) / s).max(1e-3).ln(),
        ((g[3] - g[1]) / s).max(1e-3).ln(),
    ]
}

/// Inverse of [`box_target`].
pub fn apply_target(w: [f32; 4], t: [f32; 4]) -> [f32; 4] {
    let s = w[2] - w[0];
    let (cx, cy) = (
        (w[0] + w[2]) / 2.0 + t[0] * s,
        (w[1] + w[3]) / 2.0 + t[1] * s,
    );
    let (bw, bh) = (
        t[2].clamp(-6.0, 2.0).exp() * s,
        t[3].clamp(-6.0, 2.0).exp() * s,
    );
    [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0]
}

/// Eval-mode `(features, logits)` of a batch; features are the input of the last layer.
pub fn features_and_logits(model: &mut Model, x: Tensor) -> (Tensor, Tensor) {
    let feat_layer = model.arch.layers.len().saturating_sub(2);
    let mut fv = None;
    let (g, out) = model.eval_traced(x, |i, v| {
        if i == feat_layer {
            fv = Some(v);
        }
    });
    // Without layers the output is the input itself, which is what the features are then.
    (g.value(fv.unwrap_or(out)).clone(), g.value(out).clone())
}

/// Class-specific linear box regressors: `weights[c]` is `[features + 1][4]` (bias last).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoxRegressor {
    pub features: usize,
    pub weights: Vec<Vec<[f32; 4]>>,
}

impl BoxRegressor {
    pub fn predict(&self, class: usize, feat: &[f32]) -> [f32; 4] {
        let w = &self.weights[class];
        let mut t = w[self.features];
        for (f, row) in feat.iter().zip(w) {
            if *f != 0.0 {
                for k in 0..4 {
                    t[k] += f * row[k];
                }
            }
        }
        t
    }

    /// All-zero regressors (every box is its whole window) for classes without samples.
    pub fn identity(features: usize) -> BoxRegressor {
        BoxRegressor {
            features,
            weights: vec![vec![[0.0; 4]; features + 1]; DIGITS],
        }
    }
}

/// Solves the symmetric positive definite system `a x = b` (in place, Cholesky).
fn cholesky_solve(a: &mut [f64], n: usize, b: &mut [f64], m: usize) {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        let d = d.max(1e-12).sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for c in 0..m {
        for i in 0..n {
            let mut s = b[i * m + c];
            for k in 0..i {
                s -= a[i * n + k] * b[k * m + c];
            }
            b[i * m + c] = s / a[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = b[i * m + c];
            for k in i + 1..n {
                s -= a[k * n + i] * b[k * m + c];
            }
            b[i * m + c] = s / a[i * n + i];
        }
    }
}

/// Ridge regression per class: `min |X w - t|^2 + lambda |w|^2` (bias not penalized).
pub fn fit_regressor(
    model: &mut Model,
    crops: &Dataset,
    samples: &[(usize, [f32; 4], u8)],
) -> BoxRegressor {
    let mut feats: Vec<Vec<f32>> = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(500) {
        let idx: Vec<usize> = chunk.iter().map(|s| s.0).collect();
        let (x, _) = crops.batch(&idx);
        let (f, _) = features_and_logits(model, x);
        let d = f.len() / idx.len().max(1);
        let flat = f.as_slice().expect("standard layout");
        feats.extend(flat.chunks(d).map(|r| r.to_vec()));
    }
    let d = feats.first().map_or(0, |f| f.len());
    let mut reg = BoxRegressor::identity(d);
    let n = d + 1;
    for c in 0..DIGITS {
        let rows: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].2 as usize == c)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let x = ndarray::Array2::from_shape_fn((rows.len(), n), |(r, j)| {
            if j < d {
                feats[rows[r]][j] as f64
            } else {
                1.0
            }
        });
        let t =
            ndarray::Array2::from_shape_fn((rows.len(), 4), |(r, k)| samples[rows[r]].1[k] as f64);
        let mut a = x.t().dot(&x);
        for j in 0..d {
            a[[j, j]] += RIDGE_LAMBDA;
        }
        a[[d, d]] += 1e-6;
        let mut b = x.t().dot(&t);
        let (mut av, mut bv) = (
            a.as_standard_layout().iter().copied().collect::<Vec<_>>(),
            b.as_standard_layout().iter().copied().collect::<Vec<_>>(),
        );
        cholesky_solve(&mut av, n, &mut bv, 4);
        b.iter_mut().zip(&bv).for_each(|(o, v)| *o = *v);
        reg.weights[c] = (0..n)
            .map(|j| [0, 1, 2, 3].map(|k| b[[j, k]] as f32))
            .collect();
    }
    reg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_targets_invert() {
        let w = crate::detect::rcnn::window([0.2, 0.3, 0.4, 0.6]);
        assert!(
            (w[2] - w[0] - 0.3 * crate::detect::rcnn::CONTEXT).abs() < 1e-6
                && (w[3] - w[1] - 0.3 * crate::detect::rcnn::CONTEXT).abs() < 1e-6
        );
        let g = [0.22, 0.28, 0.41, 0.57];
        let b = apply_target(w, box_target(w, g));
        for k in 0..4 {
            assert!((b[k] - g[k]).abs() < 1e-5, "{b:?} vs {g:?}");
        }
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // [[4, 2], [2, 3]] x = [[2, 8], [1, 7]] -> x = [[0.5, 1.25], [0, 1.5]].
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let mut b = vec![2.0, 8.0, 1.0, 7.0];
        cholesky_solve(&mut a, 2, &mut b, 2);
        for (x, want) in b.iter().zip([0.5, 1.25, 0.0, 1.5]) {
            assert!((x - want).abs() < 1e-12, "{b:?}");
        }
    }
}
