//! From a trained float model to the runtime's int8 blob: fold BatchNorm, fuse ReLU and
//! max-pool, calibrate activation ranges, quantize, and write the blob. Every int8 figure is
//! computed by the runtime itself ([`run_int8`]).
//!
//! Quantization scheme (the TFLite int8 scheme; see bench/PEERS.md):
//! - input: scale 1/255, zero point -128, so a u8 pixel `p` quantizes exactly to `p - 128`;
//! - activations: per-tensor asymmetric int8 from **min/max calibration** over N training images
//!   (range widened to include 0 so real zero is exactly representable);
//! - weights: per-output-channel symmetric int8 in [-127, 127] (`scale = max|w| / 127`);
//! - biases: int32 with scale `input_scale * weight_scale[c]`;
//! - requantization: `input_scale * weight_scale[c] / output_scale` as a Q31 multiplier and
//!   shift, computed once here.

use crate::data::Dataset;
use crate::nn::arch::{ConvShape, LayerSpec};
use crate::nn::autograd::{Conv2dParams, Graph, Tensor};
use crate::nn::model::{Model, Slot};
use anyhow::{bail, Context};
use runtime::format::{Add, Head, Padding, Pool2d, Shape, TensorSpec};
use runtime::writer::{
    encode_i8s, OwnedConv, OwnedFullyConnected, OwnedLayer, OwnedModel, OwnedNode, OwnedStage,
};
use runtime::{Interpreter, Model as RtModel, QuantParams, Requant};

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

    /// `[act_min, act_max]` of an output quantized with `q`: the whole int8 range, from the
    /// zero point up, or from the zero point to 6's byte.
    fn clamp(self, q: QuantParams) -> (i8, i8) {
        let zp = q.zero_point as i8;
        match self {
            Fused::None => (-128, 127),
            Fused::Relu => (zp, 127),
            Fused::Relu6 => {
                let six = (6.0 / q.scale as f64).round() + q.zero_point as f64;
                (zp, six.clamp(q.zero_point as f64, 127.0) as i8)
            }
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

/// Asymmetric int8 parameters covering `[min, max]` (which includes 0).
pub fn activation_quant(min: f32, max: f32) -> QuantParams {
    let span = (max - min).max(1e-8);
    let scale = span / 255.0;
    let zp = (-128.0 - min / scale).round().clamp(-128.0, 127.0) as i32;
    QuantParams {
        scale,
        zero_point: zp,
    }
}

/// The model's input quantization: pixels / 255 with scale 1/255 and zero point -128.
pub const INPUT_QUANT: QuantParams = QuantParams {
    scale: 1.0 / 255.0,
    zero_point: -128,
};

/// Weights `[out, ...]` -> per-output-channel symmetric int8, plus the output stage.
fn quantize_weights(
    index: usize,
    w: &Tensor,
    b: &[f32],
    s_in: f32,
    out_q: QuantParams,
    act: Fused,
) -> anyhow::Result<(Vec<u8>, OwnedStage)> {
    let o = w.shape()[0];
    let per = w.len() / o;
    let flat: Vec<f32> = w.iter().copied().collect();
    let mut q = Vec::with_capacity(flat.len());
    let (mut bias, mut rq) = (Vec::with_capacity(o), Vec::with_capacity(o));
    for c in 0..o {
        let row = &flat[c * per..(c + 1) * per];
        let wmax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s_w = if wmax > 0.0 { wmax / 127.0 } else { 1.0 };
        q.extend(
            row.iter()
                .map(|v| (v / s_w).round().clamp(-127.0, 127.0) as i8),
        );
        let s_acc = s_in as f64 * s_w as f64;
        let bq = (b[c] as f64 / s_acc).round();
        if bq.abs() > runtime::kernels::MAX_BIAS as f64 {
            bail!(
                "deploy layer {index}, channel {c}: bias {} too large for int32 at scale {s_acc:e}",
                b[c]
            );
        }
        bias.push(bq as i32);
        let m = s_acc / out_q.scale as f64;
        rq.push(Requant::from_real(m).with_context(|| {
            format!(
                "deploy layer {index}, channel {c}: requantization multiplier {m:e} out of range"
            )
        })?);
    }
    let (act_min, act_max) = act.clamp(out_q);
    let stage = OwnedStage::new(out_q.zero_point as i8, act_min, act_max, &bias, &rq);
    Ok((encode_i8s(&q), stage))
}

/// `[h, w, c]` of every tensor of the folded graph (input first), read off a float forward of
/// one blank image rather than derived again from each layer's geometry.
fn tensor_shapes(input: [usize; 3], nodes: &[DeployNode]) -> Vec<[usize; 3]> {
    let blank = Tensor::zeros(ndarray::IxDyn(&[1, input[0], input[1], input[2]]));
    let outs = deploy_forward(nodes, blank);
    let shape = |t: &Tensor| match t.shape() {
        &[_, h, w, c] => [h, w, c],
        s => [1, 1, s[1..].iter().product()], // flat: linear or global pool
    };
    std::iter::once(input)
        .chain(outs.iter().map(shape))
        .collect()
}

/// The quantization of every tensor: the input's fixed one, pools pass theirs through, and
/// every other node gets its calibrated range, except that a conv feeding a concat takes the
/// concat's range, so the concat is a plain copy.
fn tensor_quants(nodes: &[DeployNode], ranges: &[(f32, f32)]) -> anyhow::Result<Vec<QuantParams>> {
    let mut q = vec![INPUT_QUANT];
    for (k, n) in nodes.iter().enumerate() {
        let concat = nodes
            .iter()
            .position(|c| matches!(c.op, Deploy::Concat) && c.inputs.contains(&(k + 1)));
        let own = |i: usize| activation_quant(ranges[i].0, ranges[i].1);
        let qk = match n.op {
            Deploy::Conv { .. } | Deploy::Depthwise { .. } | Deploy::Linear { .. } => {
                own(concat.unwrap_or(k))
            }
            Deploy::MaxPool { .. } | Deploy::AvgPool { .. } | Deploy::GlobalAvgPool => {
                q[n.inputs[0]]
            }
            Deploy::Add { .. } | Deploy::Concat => own(k),
        };
        if let Some(c) = concat {
            if qk != own(c) {
                bail!("deploy node {k} feeds concat node {c} but is not a conv: the device concat needs one scale for all its inputs");
            }
        }
        q.push(qk);
    }
    Ok(q)
}

/// Quantizes the folded network and writes the blob (validated by the runtime's own loader).
pub fn quantize(model: &Model, calib: &Dataset, n_calib: usize) -> anyhow::Result<Vec<u8>> {
    quantize_with(model, calib, n_calib, runtime::Rounding::Single)
}

/// [`quantize`] with the blob's requantization rounding: [`runtime::Rounding::Single`]
/// (this project's, one rounding of the 64-bit product) or [`runtime::Rounding::Double`]
/// (TensorFlow Lite's, whose layers the runtime's SSAT loops take: the patch path's six
/// lanes, the depthwise planes and runs, the fully connected triples).
pub fn quantize_with(
    model: &Model,
    calib: &Dataset,
    n_calib: usize,
    rounding: runtime::Rounding,
) -> anyhow::Result<Vec<u8>> {
    let arch = &model.arch;
    let nodes = fold(model)?;
    // Before calibration (the slow part), the limit the device format sets.
    if nodes.len() > runtime::format::MAX_LAYERS {
        anyhow::bail!(
            "{} device layers, at most {} are supported",
            nodes.len(),
            runtime::format::MAX_LAYERS
        );
    }
    if calib.is_empty() || n_calib == 0 {
        anyhow::bail!("calibration needs at least one training image");
    }
    let ranges = calibrate(&nodes, calib, n_calib);
    let shapes = tensor_shapes(arch.input, &nodes);
    let q = tensor_quants(&nodes, &ranges)?;
    // Every weight array first (a bias or multiplier out of range is reported before an
    // add's rescale), then the layers.
    let mut quantized = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        quantized.push(match &n.op {
            Deploy::Conv { w, b, act, .. }
            | Deploy::Depthwise { w, b, act, .. }
            | Deploy::Linear { w, b, act } => Some(quantize_weights(
                i,
                w,
                b,
                q[n.inputs[0]].scale,
                q[i + 1],
                *act,
            )?),
            _ => None,
        });
    }
    let zp = |t: usize| q[t].zero_point as i8;
    let mut layers = Vec::with_capacity(nodes.len());
    for (i, (n, wq)) in nodes.iter().zip(quantized).enumerate() {
        let zp_in = zp(n.inputs[0]);
        let [_, _, in_c] = shapes[n.inputs[0]];
        // A convolution's fields; `w` is `[O, KH, KW, I]` (a depthwise one's `[C, KH, KW, 1]`).
        let conv = |w: &Tensor, [sh, sw]: [usize; 2], [t, l, b, r]: [usize; 4], weights, output| {
            OwnedConv {
                in_channels: in_c as u16,
                out_channels: w.shape()[0] as u16,
                kernel_h: w.shape()[1] as u8,
                kernel_w: w.shape()[2] as u8,
                stride_h: sh as u8,
                stride_w: sw as u8,
                padding: Padding {
                    top: t as u8,
                    left: l as u8,
                    bottom: b as u8,
                    right: r as u8,
                },
                input_zero_point: zp_in,
                output,
                weights,
                pool: None,
            }
        };
        let layer = match (&n.op, wq) {
            (
                Deploy::Conv {
                    w,
                    stride,
                    pad,
                    pool,
                    ..
                },
                Some((weights, output)),
            ) => OwnedLayer::Conv2d(OwnedConv {
                pool: pool.map(|(k, s)| Pool2d::square(k as u8, s as u8, 0)),
                ..conv(w, *stride, *pad, weights, output)
            }),
            (Deploy::Depthwise { w, stride, pad, .. }, Some((weights, output))) => {
                // `[C, KH, KW]` per channel here, `[1, KH, KW, C]` in the blob.
                let (c, taps) = (w.shape()[0], w.shape()[1] * w.shape()[2]);
                let mut hwc = vec![0u8; weights.len()];
                for (i, &v) in weights.iter().enumerate() {
                    hwc[(i % taps) * c + i / taps] = v;
                }
                OwnedLayer::DepthwiseConv2d(conv(w, *stride, *pad, hwc, output))
            }
            (Deploy::Linear { w, .. }, Some((weights, output))) => {
                OwnedLayer::FullyConnected(OwnedFullyConnected {
                    in_features: shapes[n.inputs[0]].iter().product::<usize>() as u32,
                    out_features: w.shape()[0] as u16,
                    input_zero_point: zp_in,
                    output,
                    weights,
                })
            }
            (Deploy::MaxPool { k, s, pad }, _) => {
                OwnedLayer::MaxPool2d(Pool2d::square(*k as u8, *s as u8, *pad as u8))
            }
            (Deploy::AvgPool { k, s }, _) => {
                OwnedLayer::AvgPool2d(Pool2d::square(*k as u8, *s as u8, 0))
            }
            (Deploy::GlobalAvgPool, _) => OwnedLayer::GlobalAvgPool,
            (Deploy::Add { relu }, _) => {
                let (a, b, y) = (q[n.inputs[0]], q[n.inputs[1]], q[i + 1]);
                let act_min = if *relu { y.zero_point } else { -128 };
                let p = runtime::kernels::AddParams::from_scales(
                    a.scale as f64,
                    a.zero_point,
                    b.scale as f64,
                    b.zero_point,
                    y.scale as f64,
                    y.zero_point,
                    act_min,
                    127,
                )
                .with_context(|| format!("deploy node {i}: add rescale out of range"))?;
                OwnedLayer::Add(Add {
                    input_zero_points: [a.zero_point as i8, b.zero_point as i8],
                    zero_point: y.zero_point as i8,
                    act_min: act_min as i8,
                    act_max: 127,
                    requant: [p.rq_a, p.rq_b, p.rq_out],
                })
            }
            (Deploy::Concat, _) => OwnedLayer::Concat,
            _ => bail!("deploy node {i}: missing output stage"),
        };
        let inputs = n.inputs.iter().map(|&t| t as u8).collect();
        layers.push(OwnedNode { inputs, layer });
    }
    let out_q = q[nodes.len()];
    let zp_out = out_q.zero_point as i8;
    let out_shape = match arch.validate()?.last() {
        Some(crate::nn::arch::Act::Map(h, w, c)) => Shape::new(*h as u16, *w as u16, *c as u16),
        _ => Shape::new(1, 1, arch.outputs() as u16),
    };
    let head = if arch.grid {
        // Objectness threshold in the output's int8 domain: the smallest byte at or above it.
        let thr = (crate::train::grid_head::OBJ_THRESHOLD / out_q.scale).ceil() + zp_out as f32;
        Head::GridDetector {
            classes: arch.classes as u16,
            cell: arch.cell().context("grid cell")? as u8,
            obj_threshold: thr.clamp(-128.0, 127.0) as i8,
            nms_iou_pct: (crate::train::grid_head::NMS_IOU * 100.0).round() as u8,
            max_detections: runtime::detect::MAX_DETECTIONS as u8,
        }
    } else if arch.boxes {
        Head::Localizer {
            classes: arch.classes as u16,
        }
    } else {
        Head::Classifier {
            classes: arch.classes as u16,
        }
    };
    let owned = OwnedModel {
        rounding,
        name: arch.name.clone(),
        input: TensorSpec {
            shape: Shape::new(
                arch.input[0] as u16,
                arch.input[1] as u16,
                arch.input[2] as u16,
            ),
            quant: INPUT_QUANT,
        },
        output: TensorSpec {
            shape: out_shape,
            quant: QuantParams {
                scale: out_q.scale,
                zero_point: zp_out as i32,
            },
        },
        layers,
        head,
        labels: arch.class_names.join("\n"),
    };
    owned
        .write()
        .map_err(|e| anyhow::anyhow!("the runtime rejects the exported model: {e}"))
}

/// Quantizes one image exactly as the device does: `p / 255` through the model's input params.
pub fn quantize_image(pixels: &[u8], q: QuantParams, out: &mut [i8]) {
    for (o, &p) in out.iter_mut().zip(pixels) {
        *o = q.quantize(p as f32 / 255.0);
    }
}

/// Runs a loaded model on the host runtime over `data`; returns each image's int8 output.
pub fn run_int8(m: &RtModel, data: &Dataset) -> anyhow::Result<Vec<Vec<i8>>> {
    let mut arena = vec![0u8; m.arena_bytes()];
    let mut it = Interpreter::new(m, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
    let q = m.def().input.quant;
    let mut outs = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        quantize_image(data.image(i), q, it.input_mut());
        it.invoke().map_err(|e| anyhow::anyhow!("{e}"))?;
        outs.push(it.output().to_vec());
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clamp of each fused activation: the whole range, from the zero point (0.0), and
    /// from the zero point to 6.0's byte (`6 / scale + zp`), capped at 127.
    #[test]
    fn fused_activations_clamp_at_zero_and_six() {
        let q = |scale: f32, zero_point: i32| QuantParams { scale, zero_point };
        assert_eq!(Fused::None.clamp(q(0.05, -20)), (-128, 127));
        assert_eq!(Fused::Relu.clamp(q(0.05, -20)), (-20, 127));
        // 6 / 0.05 = 120 steps above the zero point -128.
        assert_eq!(Fused::Relu6.clamp(q(0.05, -128)), (-128, -8));
        // 6 / 0.047 = 127.66 -> 128 steps: 0.
        assert_eq!(Fused::Relu6.clamp(q(0.047, -128)), (-128, 0));
        // A range that ends below 6.0: the int8 range ends first.
        assert_eq!(Fused::Relu6.clamp(q(4.0 / 255.0, -128)), (-128, 127));
    }
}
