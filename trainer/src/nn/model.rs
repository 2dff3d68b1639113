//! Models: an architecture with its parameters (trained) and BatchNorm state, and the forward
//! pass on the tape.

use crate::nn::arch::{inception, residual, Act, ArchError, ArchSpec, LayerSpec};
use crate::nn::autograd::{BatchNormState, Conv2dParams, Graph, Tensor, Var};
use crate::nn::init::Init;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Where a layer's parameters and state live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Slot {
    None,
    /// Weight index, optional bias index.
    Weights(usize, Option<usize>),
    /// gamma, beta parameter indices and the BatchNorm state index.
    Norm(usize, usize, usize),
    /// A block: its `block_convs` in order, each with three parameters (weight, gamma, beta)
    /// from the first index and one BatchNorm state from the second.
    Block(usize, usize),
}

impl Slot {
    /// `(weight, gamma, beta, bn state)` of conv `j` of a block.
    pub fn block_conv(self, j: usize) -> Option<(usize, usize, usize, usize)> {
        match self {
            Slot::Block(p, b) => Some((p + 3 * j, p + 3 * j + 1, p + 3 * j + 2, b + j)),
            _ => None,
        }
    }
}

/// A model: architecture, parameters (trained) and BatchNorm running statistics (state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub arch: ArchSpec,
    pub params: Vec<Tensor>,
    pub bn: Vec<BatchNormState>,
}

impl Model {
    /// He-normal weights (the nets are ReLU nets), zero biases, BatchNorm gamma 1 and beta 0.
    pub fn new(arch: ArchSpec, rng: &mut ChaCha8Rng) -> Result<Model, ArchError> {
        Self::with_init(arch, Init::HeNormal, rng)
    }

    pub fn with_init(arch: ArchSpec, init: Init, rng: &mut ChaCha8Rng) -> Result<Model, ArchError> {
        let shapes = arch.validate()?;
        let mut params = Vec::new();
        let mut bn = Vec::new();
        let mut in_c = arch.input[2];
        let mut flat = 0;
        for (l, s) in arch.layers.iter().zip(&shapes) {
            match *l {
                LayerSpec::Conv2d {
                    out_channels,
                    kernel,
                    bias,
                    ..
                } => {
                    let [kh, kw] = kernel.hw();
                    params.push(init.init(&[out_channels, kh, kw, in_c], rng));
                    if bias {
                        params.push(Tensor::zeros(ndarray::IxDyn(&[out_channels])));
                    }
                }
                LayerSpec::DepthwiseConv2d { kernel, bias, .. } => {
                    let [kh, kw] = kernel.hw();
                    params.push(init.init(&[in_c, kh, kw, 1], rng));
                    if bias {
                        params.push(Tensor::zeros(ndarray::IxDyn(&[in_c])));
                    }
                }
                LayerSpec::BatchNorm2d => {
                    params.push(Tensor::ones(ndarray::IxDyn(&[in_c])));
                    params.push(Tensor::zeros(ndarray::IxDyn(&[in_c])));
                    bn.push(BatchNormState::new(in_c));
                }
                LayerSpec::Linear { out_features, bias } => {
                    params.push(init.init(&[out_features, flat], rng));
                    if bias {
                        params.push(Tensor::zeros(ndarray::IxDyn(&[out_features])));
                    }
                }
                LayerSpec::Residual { .. } | LayerSpec::Inception { .. } => {
                    for bc in l.block_convs(in_c) {
                        let shape = [bc.out_c, bc.kernel, bc.kernel, bc.in_c];
                        params.push(init.init(&shape, rng));
                        params.push(Tensor::ones(ndarray::IxDyn(&[bc.out_c])));
                        params.push(Tensor::zeros(ndarray::IxDyn(&[bc.out_c])));
                        bn.push(BatchNormState::new(bc.out_c));
                    }
                }
                _ => {}
            }
            match *s {
                Act::Map(_, _, c) => in_c = c,
                Act::Flat(n) => flat = n,
            }
        }
        Ok(Model { arch, params, bn })
    }

    pub(crate) fn slots(&self) -> Vec<Slot> {
        let (mut p, mut b) = (0, 0);
        let in_cs = self.in_channels();
        self.arch
            .layers
            .iter()
            .zip(in_cs)
            .map(|(l, in_c)| match *l {
                LayerSpec::Residual { .. } | LayerSpec::Inception { .. } => {
                    let n = l.block_convs(in_c).len();
                    let s = Slot::Block(p, b);
                    p += 3 * n;
                    b += n;
                    s
                }
                LayerSpec::Conv2d { bias, .. }
                | LayerSpec::DepthwiseConv2d { bias, .. }
                | LayerSpec::Linear { bias, .. } => {
                    let s = Slot::Weights(p, bias.then_some(p + 1));
                    p += 1 + bias as usize;
                    s
                }
                LayerSpec::BatchNorm2d => {
                    let s = Slot::Norm(p, p + 1, b);
                    p += 2;
                    b += 1;
                    s
                }
                _ => Slot::None,
            })
            .collect()
    }

    /// Per layer: the indices of its parameters and of its BatchNorm states.
    pub fn layer_params(&self) -> Vec<(Vec<usize>, Vec<usize>)> {
        let in_cs = self.in_channels();
        self.slots()
            .into_iter()
            .zip(self.arch.layers.iter().zip(in_cs))
            .map(|(s, (l, in_c))| match s {
                Slot::None => (vec![], vec![]),
                Slot::Weights(w, b) => (std::iter::once(w).chain(b).collect(), vec![]),
                Slot::Norm(g, b, st) => (vec![g, b], vec![st]),
                Slot::Block(p, b) => {
                    let n = l.block_convs(in_c).len();
                    ((p..p + 3 * n).collect(), (b..b + n).collect())
                }
            })
            .collect()
    }

    /// Channels each layer reads (0 for a flat input).
    /// Each layer's input map `(h, w)` (`(0, 0)` after a flatten, and for every layer of an
    /// architecture that does not validate).
    pub fn in_maps(&self) -> Vec<(usize, usize)> {
        let shapes = self.arch.validate().unwrap_or_default();
        let [h, w, _] = self.arch.input;
        let mut v = Vec::with_capacity(self.arch.layers.len());
        let mut cur = (h, w);
        for s in shapes.iter().take(self.arch.layers.len()) {
            v.push(cur);
            cur = match *s {
                Act::Map(h, w, _) => (h, w),
                Act::Flat(_) => (0, 0),
            };
        }
        v.resize(self.arch.layers.len(), (0, 0));
        v
    }

    pub fn in_channels(&self) -> Vec<usize> {
        let shapes = self.arch.validate().unwrap_or_default();
        let mut c = self.arch.input[2];
        let mut v = Vec::with_capacity(self.arch.layers.len());
        for s in shapes.iter().take(self.arch.layers.len()) {
            v.push(c);
            c = match *s {
                Act::Map(_, _, c) => c,
                Act::Flat(_) => 0,
            };
        }
        v.resize(self.arch.layers.len(), 0);
        v
    }

    pub fn param_count(&self) -> usize {
        self.params.iter().map(|p| p.len()).sum()
    }

    /// Builds the forward pass on `g`. `params` are the graph leaves of `self.params` (same
    /// order). Training mode uses batch statistics (and updates the running ones) and dropout.
    pub fn forward(
        &mut self,
        g: &mut Graph,
        x: Var,
        params: &[Var],
        training: bool,
        rng: &mut ChaCha8Rng,
    ) -> Var {
        self.build(g, x, params, training, rng, true, |_, _| {})
    }

    /// [`Model::forward`], calling `on_layer(index, output)` after every layer.
    pub fn forward_traced(
        &mut self,
        g: &mut Graph,
        x: Var,
        params: &[Var],
        training: bool,
        rng: &mut ChaCha8Rng,
        on_layer: impl FnMut(usize, Var),
    ) -> Var {
        self.build(g, x, params, training, rng, false, on_layer)
    }

    /// The forward pass. With `fuse`, each `BatchNorm2d -> Relu [-> MaxPool2d]` run of
    /// layers (the pool with its stride equal to its kernel) is one
    /// [`Graph::batch_norm_relu`], with the same values, and `on_layer` sees only the
    /// run's last layer.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &mut self,
        g: &mut Graph,
        x: Var,
        params: &[Var],
        training: bool,
        rng: &mut ChaCha8Rng,
        fuse: bool,
        mut on_layer: impl FnMut(usize, Var),
    ) -> Var {
        let slots = self.slots();
        let mut h = x;
        let mut skip = 0;
        for (i, (l, slot)) in self.arch.layers.iter().zip(slots).enumerate() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            h = match (*l, slot) {
                (LayerSpec::Conv2d { .. }, Slot::Weights(w, b)) => {
                    let p = conv_params(l, g.shape(h));
                    g.conv2d(h, params[w], b.map(|b| params[b]), p)
                }
                (LayerSpec::DepthwiseConv2d { .. }, Slot::Weights(w, b)) => {
                    let p = conv_params(l, g.shape(h));
                    g.depthwise_conv2d(h, params[w], b.map(|b| params[b]), p)
                }
                (LayerSpec::BatchNorm2d, Slot::Norm(gm, bt, s)) => {
                    let (gm, bt, st) = (params[gm], params[bt], &mut self.bn[s]);
                    match relu_pool_after(&self.arch.layers[i + 1..]).filter(|_| fuse) {
                        Some(pool) => {
                            skip = 1 + pool.is_some() as usize;
                            g.batch_norm_relu(h, gm, bt, st, training, pool)
                        }
                        None => g.batch_norm(h, gm, bt, st, training),
                    }
                }
                (LayerSpec::Relu, _) => g.relu(h),
                (LayerSpec::Relu6, _) => g.relu6(h),
                (LayerSpec::MaxPool2d { kernel, stride }, _) => {
                    g.max_pool2d(h, kernel, stride.unwrap_or(kernel))
                }
                (LayerSpec::AvgPool2d { kernel, stride }, _) => {
                    g.avg_pool2d(h, kernel, stride.unwrap_or(kernel))
                }
                (LayerSpec::GlobalAvgPool, _) => g.global_avg_pool(h),
                (LayerSpec::Dropout { p }, _) => g.dropout(h, p, training, rng),
                (LayerSpec::Flatten, _) => g.flatten(h),
                (LayerSpec::Linear { .. }, Slot::Weights(w, b)) => {
                    g.linear(h, params[w], b.map(|b| params[b]))
                }
                (LayerSpec::Residual { .. } | LayerSpec::Inception { .. }, Slot::Block(..)) => {
                    let convs = l.block_convs(g.shape(h)[3]);
                    let bn = &mut self.bn;
                    let mut cbr = |g: &mut Graph, x: Var, j: usize, relu: bool| {
                        let (w, gm, bt, st) = slot.block_conv(j).expect("block slot");
                        let bc = convs[j];
                        let y = g.conv2d(
                            x,
                            params[w],
                            None,
                            Conv2dParams::square(bc.stride, bc.padding),
                        );
                        let (gm, bt, st) = (params[gm], params[bt], &mut bn[st]);
                        match (relu, fuse) {
                            (true, true) => g.batch_norm_relu(y, gm, bt, st, training, None),
                            (true, false) => {
                                let y = g.batch_norm(y, gm, bt, st, training);
                                g.relu(y)
                            }
                            (false, _) => g.batch_norm(y, gm, bt, st, training),
                        }
                    };
                    if matches!(l, LayerSpec::Residual { .. }) {
                        use residual::*;
                        let a = cbr(g, h, CONV1, true);
                        let a = cbr(g, a, CONV2, false);
                        let shortcut = if convs.len() > PROJECTION {
                            cbr(g, h, PROJECTION, false)
                        } else {
                            h
                        };
                        let y = g.add(a, shortcut);
                        g.relu(y)
                    } else {
                        use inception::*;
                        let b1 = cbr(g, h, B1, true);
                        let b3 = cbr(g, h, B3_REDUCE, true);
                        let b3 = cbr(g, b3, B3, true);
                        let b5 = cbr(g, h, B5_REDUCE, true);
                        let b5 = cbr(g, b5, B5, true);
                        let p = g.max_pool2d_padded(h, 3, 1, 1);
                        let p = cbr(g, p, POOL_PROJ, true);
                        g.concat_channels(&[b1, b3, b5, p])
                    }
                }
                _ => unreachable!("slots are derived from the same layer list"),
            };
            on_layer(i + skip, h);
        }
        h
    }

    /// Eval-mode forward of a batch on a fresh graph without gradients; `on_layer(index,
    /// output)` as in [`Model::forward_traced`]. Returns the graph and the output variable.
    pub fn eval_traced(&mut self, x: Tensor, on_layer: impl FnMut(usize, Var)) -> (Graph, Var) {
        self.eval_with(x, false, on_layer)
    }

    fn eval_with(
        &mut self,
        x: Tensor,
        fuse: bool,
        on_layer: impl FnMut(usize, Var),
    ) -> (Graph, Var) {
        let mut g = Graph::new();
        let xv = g.leaf(x, false);
        let pv = g.leaves(&self.params, false);
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let out = self.build(&mut g, xv, &pv, false, &mut rng, fuse, on_layer);
        (g, out)
    }

    /// Eval-mode output of every layer for a batch: `(layer index, output)`.
    pub fn trace(&mut self, x: Tensor) -> Vec<(usize, Tensor)> {
        let mut outs = Vec::new();
        let (g, _) = self.eval_traced(x, |i, v| outs.push((i, v)));
        outs.into_iter()
            .map(|(i, v)| (i, g.value(v).clone()))
            .collect()
    }

    /// Eval-mode logits `[n, classes]` for a batch, without gradients.
    pub fn predict(&mut self, x: Tensor) -> Tensor {
        let (g, out) = self.eval_with(x, true, |_, _| {});
        g.value(out).clone()
    }
}

/// Whether the layers after a batch norm let [`Model::forward`] fuse it: `Some(pool)` when a
/// ReLU follows, with `pool = Some(k)` if a `k`x`k` max-pool of stride `k` follows that.
fn relu_pool_after(next: &[LayerSpec]) -> Option<Option<usize>> {
    match next {
        [LayerSpec::Relu, LayerSpec::MaxPool2d { kernel, stride }, ..]
            if stride.unwrap_or(*kernel) == *kernel =>
        {
            Some(Some(*kernel))
        }
        [LayerSpec::Relu, ..] => Some(None),
        _ => None,
    }
}

/// The graph's parameters of convolution layer `l` for an NHWC input of shape `x`.
fn conv_params(l: &LayerSpec, x: &[usize]) -> Conv2dParams {
    let hw = (
        x.get(1).copied().unwrap_or(0),
        x.get(2).copied().unwrap_or(0),
    );
    let c = l.conv_shape(hw).expect("a convolution layer");
    Conv2dParams {
        stride: c.stride,
        pad: c.pad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::arch::{Padding, Pair};
    use rand::SeedableRng;

    #[test]
    fn ref_cnn_has_9146_parameters() {
        let m = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(
            m.param_count(),
            9146,
            "the reference count includes BN gamma and beta"
        );
    }

    /// A depthwise layer keeps the channel count, holds `C * k * k` weights as `[C, k, k, 1]`
    /// plus `C` biases, counts `k * k` MACs per output, takes a BatchNorm after it and not
    /// after its ReLU6, and is refused when its kernel passes the padded input.
    #[test]
    fn depthwise_layers_validate_like_convolutions() {
        let text = r#"
            name = "dw"
            input = [8, 8, 3]
            classes = 2
            [[layers]]
            type = "depthwise_conv2d"
            kernel = 3
            stride = 2
            padding = 1
            [[layers]]
            type = "batch_norm2d"
            [[layers]]
            type = "relu6"
            [[layers]]
            type = "global_avg_pool"
            [[layers]]
            type = "linear"
            out_features = 2
        "#;
        let arch: ArchSpec = toml::from_str(text).unwrap();
        assert_eq!(arch.validate().unwrap()[0], Act::Map(4, 4, 3));
        assert_eq!(arch.macs(), 4 * 4 * 3 * 9 + 3 * 2);
        let m = Model::new(arch.clone(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(m.params[0].shape(), &[3, 3, 3, 1]);
        // Weights, bias, BN gamma and beta, linear weights and bias.
        assert_eq!(m.param_count(), 27 + 3 + 6 + 6 + 2);
        let mut bad = arch.clone();
        bad.layers.swap(1, 2);
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("layer 2 (batch_norm2d)"), "{e}");
        let mut bad = arch;
        bad.layers[0] = LayerSpec::DepthwiseConv2d {
            kernel: Pair::One(11),
            stride: Pair::One(1),
            padding: Padding::Sides(1),
            bias: true,
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.contains("layer 0 (depthwise_conv2d)") && e.contains("larger"),
            "{e}"
        );
    }

    #[test]
    fn toml_round_trip_and_errors_name_the_layer() {
        let text = toml::to_string(&ArchSpec::ref_cnn()).unwrap();
        let back: ArchSpec = toml::from_str(&text).unwrap();
        assert_eq!(back, ArchSpec::ref_cnn());
        let mut bad = ArchSpec::ref_cnn();
        bad.layers.remove(8); // flatten
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.contains("layer 8 (linear)") && e.contains("flatten"),
            "{e}"
        );
        let mut bad = ArchSpec::ref_cnn();
        bad.layers.insert(3, LayerSpec::BatchNorm2d);
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("layer 3 (batch_norm2d)"), "{e}");
        let mut bad = ArchSpec::ref_cnn();
        bad.layers.push(LayerSpec::MaxPool2d {
            kernel: 2,
            stride: None,
        });
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("layer 10 (max_pool2d)"), "{e}");
        let e = toml::from_str::<ArchSpec>(
            "name='x'\ninput=[28,28,1]\nclasses=10\n[[layers]]\ntype='conv3d'\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("conv3d"), "{e}");
    }

    /// A residual block with a stride-2 projection shortcut, and separately an Inception
    /// module, each run through `Model::forward` (training-mode BN), then GAP -> linear ->
    /// cross-entropy; checked w.r.t. the input and every parameter. eps 1e-3, tolerance abs
    /// 2e-3 + rel 2e-2 (as for the whole-network checks in gradcheck.rs). Stacking both in one
    /// net puts post-ReLU zeros into the Inception max-pool, whose ties and kinks a finite
    /// difference cannot follow, so each block is checked on its own.
    #[test]
    fn gradcheck_residual_and_inception_blocks() {
        use crate::nn::gradcheck::{gradcheck, test_util::randn, Tolerance};
        let blocks = [
            LayerSpec::Residual {
                out_channels: 3,
                stride: 2,
            },
            LayerSpec::Inception {
                b1: 2,
                b3_reduce: 2,
                b3: 2,
                b5_reduce: 1,
                b5: 2,
                pool_proj: 1,
            },
        ];
        for (block, convs) in blocks.into_iter().zip([3, 6]) {
            let arch = ArchSpec {
                name: "block".into(),
                input: [6, 6, 2],
                classes: 3,
                layers: vec![
                    block,
                    LayerSpec::GlobalAvgPool,
                    LayerSpec::Linear {
                        out_features: 3,
                        bias: true,
                    },
                ],
                boxes: false,
                grid: false,
                class_names: Vec::new(),
            };
            let mut rng = ChaCha8Rng::seed_from_u64(52);
            let model = Model::new(arch, &mut rng).unwrap();
            assert_eq!(model.bn.len(), convs, "{block:?}");
            let mut ins = vec![randn(&[2, 6, 6, 2], &mut rng)];
            // Perturb gamma/beta away from 1/0 so every parameter matters.
            ins.extend(model.params.iter().map(|p| {
                let noise = randn(p.shape(), &mut rng);
                p + &noise.mapv(|v| 0.2 * v)
            }));
            let f = |g: &mut Graph, v: &[Var]| {
                let mut m = model.clone();
                let mut r = ChaCha8Rng::seed_from_u64(0);
                let logits = m.forward(g, v[0], &v[1..], true, &mut r);
                g.cross_entropy(logits, &[2, 0])
            };
            let tol = Tolerance {
                abs: 2e-3,
                rel: 2e-2,
            };
            gradcheck(f, &ins, 1e-3, tol).unwrap_or_else(|e| panic!("{block:?}: {e:?}"));
        }
    }

    #[test]
    fn builtin_graph_models_are_small() {
        for arch in [ArchSpec::tiny_resnet(), ArchSpec::tiny_inception()] {
            let m = Model::new(arch.clone(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
            let n = m.param_count();
            assert!(n < 50_000, "{}: {n} parameters", arch.name);
            let y = m
                .clone()
                .predict(Tensor::zeros(ndarray::IxDyn(&[2, 28, 28, 1])));
            assert_eq!(y.shape(), &[2, 10]);
        }
    }

    #[test]
    fn predict_shape() {
        let mut m = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let y = m.predict(Tensor::zeros(ndarray::IxDyn(&[3, 28, 28, 1])));
        assert_eq!(y.shape(), &[3, 10]);
    }

    /// The fused forward (training and eval) gives every built-in model the same outputs
    /// and running statistics as the layer-by-layer one, bit for bit, and the same gradients
    /// to rounding; trace still reports every layer.
    #[test]
    fn fused_forward_equals_layer_by_layer() {
        use crate::nn::gradcheck::test_util::randn;
        for name in [
            "ref-cnn",
            "loc-cnn",
            "grid-det",
            "tiny-resnet",
            "tiny-inception",
            "ds-cnn",
            "resnet-8",
            "mobilenet-v1",
        ] {
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let arch = ArchSpec::builtin(name).unwrap();
            let [h, w, c] = arch.input;
            let model = Model::new(arch, &mut rng).unwrap();
            let x = randn(&[3, h, w, c], &mut rng);
            let run = |fuse: bool| {
                let mut m = model.clone();
                let mut g = Graph::new();
                let xv = g.leaf(x.clone(), false);
                let pv = g.leaves(&m.params, true);
                let mut r = ChaCha8Rng::seed_from_u64(6);
                let y = m.build(&mut g, xv, &pv, true, &mut r, fuse, |_, _| {});
                let out = g.value(y).clone();
                let s = g.sum(y);
                g.backward(s);
                let grads = g.grads_or_zeros(&pv, &m.params);
                let eval = m.predict(x.clone());
                (out, m.bn, grads, eval)
            };
            let (fused, plain) = (run(true), run(false));
            assert_eq!(fused.0, plain.0, "{name}: training output");
            assert_eq!(fused.1, plain.1, "{name}: running statistics");
            assert_eq!(fused.3, plain.3, "{name}: eval output");
            // Conv biases before a batch norm have a gradient of zero but for rounding: the
            // floor is relative to the largest gradient of the model.
            let top = plain
                .2
                .iter()
                .flat_map(|t| t.iter())
                .fold(0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in fused.2.iter().zip(&plain.2).enumerate() {
                let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (u, v) in a.iter().zip(b.iter()) {
                    let tol = 1e-4 * scale + 1e-5 * top;
                    assert!((u - v).abs() <= tol, "{name} param {i}: {u} vs {v}");
                }
            }
            let layers = model.clone().trace(x.clone()).len();
            assert_eq!(
                layers,
                model.arch.layers.len(),
                "{name}: trace sees every layer"
            );
        }
    }
}
