//! The float side of deployment: BatchNorm folded into the convolutions, activations and
//! max-pools fused, residual and Inception blocks expanded into the runtime's graph, and the
//! folded graph run in float (for calibration and for checking the fold).

use crate::data::Dataset;
use crate::nn::arch::{ConvShape, LayerSpec};
use crate::nn::autograd::{Conv2dParams, Graph, Tensor};
use crate::nn::model::{Model, Slot};
use anyhow::bail;
use runtime::QuantParams;
/// The activation fused into a layer: its output stage's clamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fused {
    None,
    Relu,
    Relu6,
}

impl Fused {
    /// The activation layer at `l`, if it is one.
    fn of(l: Option<&LayerSpec>) -> Fused {
        match l {
            Some(LayerSpec::Relu) => Fused::Relu,
            Some(LayerSpec::Relu6) => Fused::Relu6,
            _ => Fused::None,
        }
    }

    fn apply(self, g: &mut Graph, y: crate::nn::autograd::Var) -> crate::nn::autograd::Var {
        match self {
            Fused::None => y,
            Fused::Relu => g.relu(y),
            Fused::Relu6 => g.relu6(y),
        }
    }

    /// `[act_min, act_max]` of an output quantized with `q`: TensorFlow Lite's
    /// `CalculateActivationRangeQuantized` (the whole int8 range, from the zero point up, or
    /// from the zero point to 6's byte, quantized in `float`), so a `.tflite` of the model
    /// clamps where the blob does.
    pub fn clamp(self, q: QuantParams) -> anyhow::Result<(i8, i8)> {
        crate::deploy::tflite::read::activation_range(self.tflite(), q)
    }

    /// The fused activation as TensorFlow Lite names it.
    pub fn tflite(self) -> tflite_schema::ActivationFunctionType {
        use tflite_schema::ActivationFunctionType as A;
        match self {
            Fused::None => A::NONE,
            Fused::Relu => A::RELU,
            Fused::Relu6 => A::RELU6,
        }
    }
}

/// A layer of the folded float network, in the runtime's terms.
#[derive(Debug, Clone)]
pub enum Deploy {
    /// BatchNorm folded in, ReLU or ReLU6 fused as `act`, max-pool fused as `pool`.
    /// `stride` `[rows, columns]`, `pad` `[top, left, bottom, right]`.
    Conv {
        w: Tensor,
        b: Vec<f32>,
        stride: [usize; 2],
        pad: [usize; 4],
        act: Fused,
        pool: Option<(usize, usize)>,
    },
    /// Depthwise convolution (`w` is `[C, KH, KW, 1]`), BatchNorm folded in, `act` fused.
    Depthwise {
        w: Tensor,
        b: Vec<f32>,
        stride: [usize; 2],
        pad: [usize; 4],
        act: Fused,
    },
    MaxPool {
        k: usize,
        s: usize,
        pad: usize,
    },
    AvgPool {
        k: usize,
        s: usize,
    },
    GlobalAvgPool,
    Linear {
        w: Tensor,
        b: Vec<f32>,
        act: Fused,
    },
    /// Residual add of the node's two inputs, ReLU fused as a flag.
    Add {
        relu: bool,
    },
    /// Channel concatenation of the node's inputs.
    Concat,
}

/// One node of the folded graph. Tensor ids as in the runtime: 0 is the input, `k + 1` the
/// output of node `k`.
#[derive(Debug, Clone)]
pub struct DeployNode {
    pub op: Deploy,
    pub inputs: Vec<usize>,
}

/// `w * gamma / sqrt(var + eps)` per output channel, and the matching bias.
fn fold_bn(
    mut w: Tensor,
    mut b: Vec<f32>,
    gamma: &Tensor,
    beta: &Tensor,
    st: &crate::nn::autograd::BatchNormState,
) -> (Tensor, Vec<f32>) {
    for (c, bc) in b.iter_mut().enumerate() {
        let scale = gamma[c] / (st.running_var[c] + st.eps).sqrt();
        w.index_axis_mut(ndarray::Axis(0), c)
            .mapv_inplace(|v| v * scale);
        *bc = (*bc - st.running_mean[c]) * scale + beta[c];
    }
    (w, b)
}

/// Appends a node reading `inputs`; returns the id of its output tensor.
fn push(nodes: &mut Vec<DeployNode>, op: Deploy, inputs: &[usize]) -> usize {
    nodes.push(DeployNode {
        op,
        inputs: inputs.to_vec(),
    });
    nodes.len()
}

/// Folds BatchNorm (eval statistics) into the preceding conv, fuses ReLU and a following
/// max-pool, drops dropout and flatten, and expands residual and Inception blocks into their
/// convs, pool, add and concat. Fails naming the first layer the device cannot run.
pub fn fold(model: &Model) -> anyhow::Result<Vec<DeployNode>> {
    let layers = &model.arch.layers;
    let slots = model.slots();
    let in_cs = model.in_channels();
    let maps = model.in_maps();
    let p = &model.params;
    let mut out = Vec::new();
    let mut cur = 0usize;
    let mut i = 0;
    let skip_dropout = |mut j: usize| {
        while matches!(layers.get(j), Some(LayerSpec::Dropout { .. })) {
            j += 1;
        }
        j
    };
    // Layer `i`'s weights and bias (`wi`, `bi`) with a BatchNorm after it folded in, the
    // activation after them, and the index of the layer after those.
    let folded = |i: usize, wi: usize, bi: Option<usize>| {
        let mut w = p[wi].clone();
        let mut b: Vec<f32> = bi.map_or(vec![0.0; w.shape()[0]], |bi| {
            p[bi].iter().copied().collect()
        });
        let mut j = i + 1;
        if let (Some(LayerSpec::BatchNorm2d), Slot::Norm(gi, be, si)) =
            (layers.get(j), slots.get(j).copied().unwrap_or(Slot::None))
        {
            (w, b) = fold_bn(w, b, &p[gi], &p[be], &model.bn[si]);
            j += 1;
        }
        j = skip_dropout(j);
        let act = Fused::of(layers.get(j));
        if act != Fused::None {
            j = skip_dropout(j + 1);
        }
        (w, b, act, j)
    };
    while i < layers.len() {
        let here = i;
        match (layers[i], slots[i]) {
            (l @ LayerSpec::Conv2d { .. }, Slot::Weights(wi, bi)) => {
                let Some(ConvShape { stride, pad, .. }) = l.conv_shape(maps[i]) else {
                    bail!("layer {i}: no input map for its convolution");
                };
                let (w, b, act, next) = folded(i, wi, bi);
                i = next;
                let mut pool = None;
                if let Some(LayerSpec::MaxPool2d { kernel, stride }) = layers.get(i) {
                    pool = Some((*kernel, stride.unwrap_or(*kernel)));
                    i += 1;
                }
                cur = push(&mut out, Deploy::Conv { w, b, stride, pad, act, pool }, &[cur]);
            }
            (l @ LayerSpec::DepthwiseConv2d { .. }, Slot::Weights(wi, bi)) => {
                let Some(ConvShape { stride, pad, .. }) = l.conv_shape(maps[i]) else {
                    bail!("layer {i}: no input map for its convolution");
                };
                let (w, b, act, next) = folded(i, wi, bi);
                i = next;
                cur = push(&mut out, Deploy::Depthwise { w, b, stride, pad, act }, &[cur]);
            }
            (LayerSpec::Linear { out_features, .. }, Slot::Weights(wi, bi)) => {
                let b = bi.map_or(vec![0.0; out_features], |bi| p[bi].iter().copied().collect());
                i = skip_dropout(i + 1);
                let act = Fused::of(layers.get(i));
                if act != Fused::None {
                    i += 1;
                }
                cur = push(&mut out, Deploy::Linear { w: p[wi].clone(), b, act }, &[cur]);
            }
            (l @ (LayerSpec::Residual { .. } | LayerSpec::Inception { .. }), slot @ Slot::Block(..)) => {
                let convs = l.block_convs(in_cs[i]);
                let conv = |j: usize, relu: bool| -> Deploy {
                    let (wi, gi, be, si) = slot.block_conv(j).expect("block slot");
                    let bc = convs[j];
                    let (w, b) = fold_bn(p[wi].clone(), vec![0.0; bc.out_c], &p[gi], &p[be], &model.bn[si]);
                    let act = if relu { Fused::Relu } else { Fused::None };
                    Deploy::Conv { w, b, stride: [bc.stride; 2], pad: [bc.padding; 4], act, pool: None }
                };
                let x = cur;
                cur = if matches!(l, LayerSpec::Residual { .. }) {
                    use crate::nn::arch::residual::*;
                    // The projection runs first: its small output outlives the block's first
                    // conv instead of the larger block input.
                    let shortcut = if convs.len() > PROJECTION {
                        push(&mut out, conv(PROJECTION, false), &[x])
                    } else {
                        x
                    };
                    let a = push(&mut out, conv(CONV1, true), &[x]);
                    let a = push(&mut out, conv(CONV2, false), &[a]);
                    push(&mut out, Deploy::Add { relu: true }, &[a, shortcut])
                } else {
                    use crate::nn::arch::inception::*;
                    let b1 = push(&mut out, conv(B1, true), &[x]);
                    let r3 = push(&mut out, conv(B3_REDUCE, true), &[x]);
                    let b3 = push(&mut out, conv(B3, true), &[r3]);
                    let r5 = push(&mut out, conv(B5_REDUCE, true), &[x]);
                    let b5 = push(&mut out, conv(B5, true), &[r5]);
                    let pl = push(&mut out, Deploy::MaxPool { k: 3, s: 1, pad: 1 }, &[x]);
                    let pp = push(&mut out, conv(POOL_PROJ, true), &[pl]);
                    push(&mut out, Deploy::Concat, &[b1, b3, b5, pp])
                };
                i += 1;
            }
            (LayerSpec::MaxPool2d { kernel, stride }, _) => {
                cur = push(&mut out, Deploy::MaxPool { k: kernel, s: stride.unwrap_or(kernel), pad: 0 }, &[cur]);
                i += 1;
            }
            (LayerSpec::AvgPool2d { kernel, stride }, _) => {
                cur = push(&mut out, Deploy::AvgPool { k: kernel, s: stride.unwrap_or(kernel) }, &[cur]);
                i += 1;
            }
            (LayerSpec::GlobalAvgPool, _) => {
                cur = push(&mut out, Deploy::GlobalAvgPool, &[cur]);
                i += 1;
            }
            (LayerSpec::Dropout { .. } | LayerSpec::Flatten, _) => i += 1,
            (l, _) => bail!(
                "layer {here} ({}) cannot run on the device: only relu or relu6 directly after conv2d, depthwise_conv2d or linear (optionally via batch_norm2d) is supported",
                l.kind()
            ),
        }
    }
    Ok(out)
}

fn bias_leaf(g: &mut Graph, b: &[f32]) -> crate::nn::autograd::Var {
    g.leaf(
        Tensor::from_shape_vec(ndarray::IxDyn(&[b.len()]), b.to_vec()).expect("bias"),
        false,
    )
}

/// Float forward of the folded graph; returns every node's output.
pub fn deploy_forward(nodes: &[DeployNode], x: Tensor) -> Vec<Tensor> {
    let mut g = Graph::new();
    let mut t = vec![g.leaf(x, false)];
    for n in nodes {
        let h = t[n.inputs[0]];
        let y = match &n.op {
            Deploy::Conv {
                w,
                b,
                stride,
                pad,
                act,
                pool,
            } => {
                let wv = g.leaf(w.clone(), false);
                let bv = bias_leaf(&mut g, b);
                let y = g.conv2d(
                    h,
                    wv,
                    Some(bv),
                    Conv2dParams {
                        stride: *stride,
                        pad: *pad,
                    },
                );
                let mut y = act.apply(&mut g, y);
                if let Some((k, s)) = pool {
                    y = g.max_pool2d(y, *k, *s);
                }
                y
            }
            Deploy::Depthwise {
                w,
                b,
                stride,
                pad,
                act,
            } => {
                let wv = g.leaf(w.clone(), false);
                let bv = bias_leaf(&mut g, b);
                let p = Conv2dParams {
                    stride: *stride,
                    pad: *pad,
                };
                let y = g.depthwise_conv2d(h, wv, Some(bv), p);
                act.apply(&mut g, y)
            }
            Deploy::MaxPool { k, s, pad } => g.max_pool2d_padded(h, *k, *s, *pad),
            Deploy::AvgPool { k, s } => g.avg_pool2d(h, *k, *s),
            Deploy::GlobalAvgPool => g.global_avg_pool(h),
            Deploy::Linear { w, b, act } => {
                let h = if g.shape(h).len() > 2 {
                    g.flatten(h)
                } else {
                    h
                };
                let wv = g.leaf(w.clone(), false);
                let bv = bias_leaf(&mut g, b);
                let y = g.linear(h, wv, Some(bv));
                act.apply(&mut g, y)
            }
            Deploy::Add { relu } => {
                let y = g.add(h, t[n.inputs[1]]);
                if *relu {
                    g.relu(y)
                } else {
                    y
                }
            }
            Deploy::Concat => {
                let xs: Vec<_> = n.inputs.iter().map(|&i| t[i]).collect();
                g.concat_channels(&xs)
            }
        };
        t.push(y);
    }
    t[1..].iter().map(|&v| g.value(v).clone()).collect()
}

/// Per-node output ranges (min, max) over the first `n` images of `data` (min/max method).
pub fn calibrate(nodes: &[DeployNode], data: &Dataset, n: usize) -> Vec<(f32, f32)> {
    let mut ranges = vec![(0.0f32, 0.0f32); nodes.len()];
    let idx: Vec<usize> = (0..n.min(data.len())).collect();
    for chunk in idx.chunks(100) {
        let (x, _) = data.batch(chunk);
        for (r, t) in ranges.iter_mut().zip(deploy_forward(nodes, x)) {
            for &v in t.iter() {
                r.0 = r.0.min(v);
                r.1 = r.1.max(v);
            }
        }
    }
    ranges
}
