//! Fine-tuning: start a model from a trained one. Layers are matched by index; a layer is
//! copied (parameters and BatchNorm running statistics) when its kind and every parameter
//! shape match, and otherwise keeps its fresh initialization and is reported by name. Heads
//! are replaced by changing the last layers' shapes and added by appending layers. Freezing is
//! [`crate::train::TrainConfig::frozen_layers`].

use crate::nn::arch::LayerSpec;
use crate::nn::model::Model;

/// What happened to one layer that has parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum LayerInit {
    Copied,
    /// Kind or shape differs from the source layer of the same index.
    Reinitialized(String),
    /// The source has no layer at this index.
    Added,
}

/// Per-layer outcome of [`init_from`], for the layers that have parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    pub layers: Vec<(usize, &'static str, LayerInit)>,
    /// Source layers with parameters past the end of the target (dropped).
    pub dropped: Vec<(usize, &'static str)>,
}

impl InitReport {
    pub fn copied(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.2 == LayerInit::Copied)
            .count()
    }

    /// One line per layer, e.g. `layer 9 (linear): shape [10, 784] in the checkpoint vs
    /// [11, 784] here, re-initialized`.
    pub fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .layers
            .iter()
            .map(|(i, kind, what)| match what {
                LayerInit::Copied => format!("layer {i} ({kind}): copied"),
                LayerInit::Reinitialized(why) => {
                    format!("layer {i} ({kind}): {why}, re-initialized")
                }
                LayerInit::Added => {
                    format!("layer {i} ({kind}): not in the checkpoint, initialized fresh")
                }
            })
            .collect();
        v.extend(
            self.dropped
                .iter()
                .map(|(i, kind)| format!("checkpoint layer {i} ({kind}): no counterpart, dropped")),
        );
        v
    }
}

fn shapes(m: &Model, idx: &[usize]) -> Vec<Vec<usize>> {
    idx.iter().map(|&i| m.params[i].shape().to_vec()).collect()
}

fn has_params(l: &LayerSpec) -> bool {
    matches!(
        l,
        LayerSpec::Conv2d { .. }
            | LayerSpec::DepthwiseConv2d { .. }
            | LayerSpec::Linear { .. }
            | LayerSpec::BatchNorm2d
            | LayerSpec::Residual { .. }
            | LayerSpec::Inception { .. }
    )
}

/// Copies every layer of `source` whose index, kind and parameter shapes match into `target`.
pub fn init_from(target: &mut Model, source: &Model) -> InitReport {
    let (ts, ss) = (target.layer_params(), source.layer_params());
    let mut layers = Vec::new();
    for (i, (l, t)) in target.arch.layers.iter().zip(&ts).enumerate() {
        if !has_params(l) {
            continue;
        }
        let kind = l.kind();
        let Some(sl) = source.arch.layers.get(i) else {
            layers.push((i, kind, LayerInit::Added));
            continue;
        };
        if sl.kind() != kind {
            layers.push((
                i,
                kind,
                LayerInit::Reinitialized(format!("the checkpoint's layer {i} is {}", sl.kind())),
            ));
            continue;
        }
        let (a, b) = (shapes(source, &ss[i].0), shapes(target, &t.0));
        if a != b {
            let fmt = |v: &[Vec<usize>]| {
                v.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(" + ")
            };
            layers.push((
                i,
                kind,
                LayerInit::Reinitialized(format!(
                    "shape {} in the checkpoint vs {} here",
                    fmt(&a),
                    fmt(&b)
                )),
            ));
            continue;
        }
        // Same kind and the same parameter shapes: the BatchNorm states correspond too.
        for (&sp, &tp) in ss[i].0.iter().zip(&t.0) {
            target.params[tp] = source.params[sp].clone();
        }
        for (&sb, &tb) in ss[i].1.iter().zip(&t.1) {
            target.bn[tb] = source.bn[sb].clone();
        }
        layers.push((i, kind, LayerInit::Copied));
    }
    let dropped = source
        .arch
        .layers
        .iter()
        .enumerate()
        .skip(target.arch.layers.len())
        .filter(|(_, l)| has_params(l))
        .map(|(i, l)| (i, l.kind()))
        .collect();
    InitReport { layers, dropped }
}

/// Parameter and BatchNorm-state indices of the given layers (what freezing holds fixed).
pub fn frozen_indices(model: &Model, layers: &[usize]) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    let slots = model.layer_params();
    let (mut params, mut bn) = (Vec::new(), Vec::new());
    for &l in layers {
        let Some((p, b)) = slots.get(l) else {
            anyhow::bail!(
                "cannot freeze layer {l}: architecture '{}' has {} layers",
                model.arch.name,
                slots.len()
            );
        };
        params.extend(p);
        bn.extend(b);
    }
    Ok((params, bn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::arch::ArchSpec;
    use crate::train::{train_silent, TrainConfig};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn eleven_classes() -> ArchSpec {
        let mut a = ArchSpec::ref_cnn();
        a.classes = 11;
        if let Some(LayerSpec::Linear { out_features, .. }) = a.layers.last_mut() {
            *out_features = 11;
        }
        a
    }

    #[test]
    fn matching_layers_are_copied_and_the_new_head_is_reported() {
        let src = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let mut dst = Model::new(eleven_classes(), &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
        let head_before = dst.params[8].clone();
        let r = init_from(&mut dst, &src);
        assert_eq!(r.copied(), 4, "{:?}", r.lines());
        for i in 0..8 {
            assert_eq!(dst.params[i], src.params[i], "parameter {i}");
        }
        assert_eq!(dst.params[8], head_before);
        let lines = r.lines();
        assert_eq!(
            lines.last().unwrap(),
            "layer 9 (linear): shape [10, 784] + [10] in the checkpoint vs [11, 784] + [11] here, re-initialized"
        );
        // An extra layer is "added"; a source layer past the end is "dropped".
        let mut longer = ArchSpec::ref_cnn();
        let n = longer.layers.len();
        longer.layers[n - 1] = LayerSpec::Linear {
            out_features: 32,
            bias: true,
        };
        longer.layers.push(LayerSpec::Relu);
        longer.layers.push(LayerSpec::Linear {
            out_features: 10,
            bias: true,
        });
        let mut dst = Model::new(longer, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        let r = init_from(&mut dst, &src);
        assert!(r
            .lines()
            .iter()
            .any(|l| l.contains("layer 11 (linear): not in")));
        let mut back = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(4)).unwrap();
        let r = init_from(&mut back, &dst);
        assert_eq!(r.copied(), 4);
        assert_eq!(r.dropped, vec![(11, "linear")]);
    }

    /// Blocks carry many parameters and BatchNorm states each: all of them are copied, and
    /// a block whose width differs is re-initialized as a whole.
    #[test]
    fn residual_blocks_are_copied_with_their_batchnorm_states() {
        let mut src =
            Model::new(ArchSpec::tiny_resnet(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        for (k, st) in src.bn.iter_mut().enumerate() {
            st.running_mean.fill(k as f32);
        }
        let mut arch = ArchSpec::tiny_resnet();
        if let Some(LayerSpec::Residual { out_channels, .. }) = arch.layers.get_mut(6) {
            *out_channels = 48;
        }
        if let Some(LayerSpec::Linear { out_features, .. }) = arch.layers.last_mut() {
            *out_features = 11;
        }
        arch.classes = 11;
        let mut dst = Model::new(arch, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
        let report = init_from(&mut dst, &src);
        let outcome = |i: usize| report.layers.iter().find(|l| l.0 == i).map(|l| &l.2);
        for block in [4, 5] {
            assert_eq!(outcome(block), Some(&LayerInit::Copied), "{block}");
            let (sp, sb) = &src.layer_params()[block];
            let (tp, tb) = &dst.layer_params()[block];
            for (a, b) in sp.iter().zip(tp) {
                assert_eq!(src.params[*a], dst.params[*b]);
            }
            for (a, b) in sb.iter().zip(tb) {
                assert_eq!(src.bn[*a].running_mean, dst.bn[*b].running_mean);
            }
        }
        assert!(matches!(outcome(6), Some(LayerInit::Reinitialized(_))));
        assert!(matches!(outcome(8), Some(LayerInit::Reinitialized(_))));
    }

    #[test]
    fn frozen_layers_do_not_change() {
        let (i, l) = crate::data::find_pair(&crate::data::default_data_dir()).unwrap();
        let data = crate::data::load_pair(&i, &l, 10).unwrap().slice(0..256);
        let mut m = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let before = m.clone();
        let cfg = TrainConfig {
            epochs: 1,
            weight_decay: 0.01,
            frozen_layers: (0..4).collect(),
            ..TrainConfig::default()
        };
        train_silent(&mut m, &data, &data.slice(0..10), &cfg).unwrap();
        for p in 0..4 {
            assert_eq!(m.params[p], before.params[p], "frozen parameter {p}");
        }
        assert_eq!(m.bn[0].running_mean, before.bn[0].running_mean);
        assert_ne!(m.bn[1].running_mean, before.bn[1].running_mean);
        for p in 4..m.params.len() {
            assert_ne!(m.params[p], before.params[p], "trained parameter {p}");
        }
        let bad = TrainConfig {
            frozen_layers: vec![10],
            ..cfg
        };
        let e = train_silent(&mut m, &data, &data.slice(0..10), &bad).unwrap_err();
        assert!(e.to_string().contains("cannot freeze layer 10"), "{e}");
    }
}
