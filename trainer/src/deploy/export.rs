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
use crate::deploy::fold::{calibrate, deploy_forward, fold, Deploy, DeployNode, Fused};
use crate::nn::autograd::Tensor;
use crate::nn::model::Model;
use anyhow::{bail, Context};
use runtime::format::{Add, Head, Padding, Pool2d, Shape, TensorSpec};
use runtime::writer::{
    encode_i8s, OwnedConv, OwnedFullyConnected, OwnedLayer, OwnedModel, OwnedNode, OwnedStage,
};
use runtime::{Interpreter, Model as RtModel, QuantParams, Requant};

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

/// A layer's quantized weights: int8 in the float tensor's order (`[O, ...]`), one scale per
/// output channel (`max|w| / 127`; 1 for a channel of zeros) and the int32 biases at scale
/// `s_in * scale`.
#[derive(Debug, Clone)]
pub struct QWeights {
    pub q: Vec<i8>,
    pub scales: Vec<f32>,
    pub bias: Vec<i32>,
}

impl QWeights {
    /// The weights as the blob and TensorFlow Lite store them: a convolution's (OHWI) and a
    /// linear layer's as they are; a depthwise layer's `[C, KH, KW]` as `[KH, KW, C]`.
    pub fn stored(&self, depthwise: bool) -> Vec<u8> {
        if !depthwise {
            return encode_i8s(&self.q);
        }
        let c = self.scales.len();
        let taps = self.q.len() / c.max(1);
        let mut hwc = vec![0u8; self.q.len()];
        for (i, &v) in self.q.iter().enumerate() {
            hwc[(i % taps) * c + i / taps] = v as u8;
        }
        hwc
    }
}

/// Weights `[out, ...]` -> per-output-channel symmetric int8 and int32 biases.
fn quantize_weights(index: usize, w: &Tensor, b: &[f32], s_in: f32) -> anyhow::Result<QWeights> {
    let o = w.shape()[0];
    let per = w.len() / o;
    let flat: Vec<f32> = w.iter().copied().collect();
    let mut q = Vec::with_capacity(flat.len());
    let (mut bias, mut scales) = (Vec::with_capacity(o), Vec::with_capacity(o));
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
        scales.push(s_w);
    }
    Ok(QWeights { q, scales, bias })
}

/// The output stage of a weighted layer: `s_in * scale[c] / out_scale` as a Q31 multiplier
/// and shift per channel (TensorFlow Lite's arithmetic, in `double` from the `float` scales),
/// the zero point and the fused activation's clamp.
///
/// A fully connected layer with one output channel has one scale, which TensorFlow Lite
/// Micro takes as per-tensor quantization, whose product of the two scales is in `float`
/// (the importer's `fc_multiplier`).
fn output_stage(
    index: usize,
    w: &QWeights,
    s_in: f32,
    out_q: QuantParams,
    act: Fused,
    fully_connected: bool,
) -> anyhow::Result<OwnedStage> {
    use crate::deploy::tflite::read::fc_multiplier;
    let mut rq = Vec::with_capacity(w.scales.len());
    let per_channel = !fully_connected || w.scales.len() > 1;
    for (c, &s_w) in w.scales.iter().enumerate() {
        let m = fc_multiplier(s_in, s_w, out_q.scale, per_channel);
        rq.push(Requant::from_real(m).with_context(|| {
            format!(
                "deploy layer {index}, channel {c}: requantization multiplier {m:e} out of range"
            )
        })?);
    }
    let (act_min, act_max) = act.clamp(out_q)?;
    Ok(OwnedStage::new(
        out_q.zero_point as i8,
        act_min,
        act_max,
        &w.bias,
        &rq,
    ))
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

/// The folded, calibrated and quantized network: what the blob and the `.tflite` are both
/// written from. Tensor ids as in [`DeployNode`]; `shapes` and `q` per tensor.
#[derive(Debug, Clone)]
pub struct Quantized {
    pub nodes: Vec<DeployNode>,
    pub shapes: Vec<[usize; 3]>,
    pub q: Vec<QuantParams>,
    /// Per node: the weighted layers' quantized weights.
    pub weights: Vec<Option<QWeights>>,
}

/// Folds, calibrates on `n_calib` images of `calib` and quantizes `model`.
pub fn quantize_graph(model: &Model, calib: &Dataset, n_calib: usize) -> anyhow::Result<Quantized> {
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
    let shapes = tensor_shapes(model.arch.input, &nodes);
    let q = tensor_quants(&nodes, &ranges)?;
    // Every weight array first (a bias out of range is reported before an add's rescale).
    let mut weights = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        weights.push(match &n.op {
            Deploy::Conv { w, b, .. }
            | Deploy::Depthwise { w, b, .. }
            | Deploy::Linear { w, b, .. } => Some(quantize_weights(i, w, b, q[n.inputs[0]].scale)?),
            _ => None,
        });
    }
    Ok(Quantized {
        nodes,
        shapes,
        q,
        weights,
    })
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
    write_quantized(
        &model.arch,
        &quantize_graph(model, calib, n_calib)?,
        rounding,
    )
}

/// The blob of a quantized graph of `arch`, its requantizations rounding as `rounding` says.
pub fn write_quantized(
    arch: &crate::nn::arch::ArchSpec,
    qz: &Quantized,
    rounding: runtime::Rounding,
) -> anyhow::Result<Vec<u8>> {
    let Quantized {
        nodes,
        shapes,
        q,
        weights,
    } = qz;
    let mut quantized = Vec::with_capacity(nodes.len());
    for (i, (n, w)) in nodes.iter().zip(weights).enumerate() {
        let fc = matches!(n.op, Deploy::Linear { .. });
        quantized.push(match (&n.op, w) {
            (
                Deploy::Conv { act, .. }
                | Deploy::Depthwise { act, .. }
                | Deploy::Linear { act, .. },
                Some(w),
            ) => Some((
                w.stored(matches!(n.op, Deploy::Depthwise { .. })),
                output_stage(i, w, q[n.inputs[0]].scale, q[i + 1], *act, fc)?,
            )),
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
                OwnedLayer::DepthwiseConv2d(conv(w, *stride, *pad, weights, output))
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
        labels: String::new(),
    }
    .with_labels(&arch.class_names);
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
        assert_eq!(Fused::None.clamp(q(0.05, -20)).unwrap(), (-128, 127));
        assert_eq!(Fused::Relu.clamp(q(0.05, -20)).unwrap(), (-20, 127));
        // 6 / 0.05 = 120 steps above the zero point -128.
        assert_eq!(Fused::Relu6.clamp(q(0.05, -128)).unwrap(), (-128, -8));
        // 6 / 0.047 = 127.66 -> 128 steps: 0.
        assert_eq!(Fused::Relu6.clamp(q(0.047, -128)).unwrap(), (-128, 0));
        // A range that ends below 6.0: the int8 range ends first.
        assert_eq!(
            Fused::Relu6.clamp(q(4.0 / 255.0, -128)).unwrap(),
            (-128, 127)
        );
    }
}
