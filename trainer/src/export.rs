//! From a trained float model to the runtime's int8 blob: fold BatchNorm, fuse ReLU and
//! max-pool, calibrate activation ranges, quantize, and write the blob. Every int8 figure is
//! computed by the runtime itself ([`run_int8`]).
//!
//! Quantization scheme (REFERENCES.md, the TFLite int8 scheme):
//! - input: scale 1/255, zero point -128, so a u8 pixel `p` quantizes exactly to `p - 128`;
//! - activations: per-tensor asymmetric int8 from **min/max calibration** over N training images
//!   (range widened to include 0 so real zero is exactly representable);
//! - weights: per-output-channel symmetric int8 in [-127, 127] (`scale = max|w| / 127`);
//! - biases: int32 with scale `input_scale * weight_scale[c]`;
//! - requantization: `input_scale * weight_scale[c] / output_scale` as a Q31 multiplier and
//!   shift, computed once here.

use crate::autograd::{Conv2dParams, Graph, Tensor};
use crate::data::Dataset;
use crate::model::{LayerSpec, Model, Slot};
use anyhow::{bail, Context};
use runtime::format::{
    Conv2d, FullyConnected, Head, Layer, ModelDef, OutputStage, Pool2d, Shape, TensorSpec,
};
use runtime::writer::{encode_i32s, encode_i8s, encode_requants, write_blob};
use runtime::{Interpreter, Model as RtModel, QuantParams, Requant};

/// A layer of the folded float network, in the runtime's terms.
#[derive(Debug, Clone)]
pub enum Deploy {
    /// BatchNorm folded in, ReLU fused as a flag, max-pool fused as `pool`.
    Conv {
        w: Tensor,
        b: Vec<f32>,
        stride: usize,
        pad: usize,
        relu: bool,
        pool: Option<(usize, usize)>,
    },
    MaxPool {
        k: usize,
        s: usize,
    },
    AvgPool {
        k: usize,
        s: usize,
    },
    GlobalAvgPool,
    Linear {
        w: Tensor,
        b: Vec<f32>,
        relu: bool,
    },
}

/// Folds BatchNorm (eval statistics) into the preceding conv, fuses ReLU and a following
/// max-pool, drops dropout and flatten. Fails naming the first layer the device cannot run.
pub fn fold(model: &Model) -> anyhow::Result<Vec<Deploy>> {
    let layers = &model.arch.layers;
    let slots = model.slots();
    let p = &model.params;
    let mut out = Vec::new();
    let mut i = 0;
    let skip_dropout = |mut j: usize| {
        while matches!(layers.get(j), Some(LayerSpec::Dropout { .. })) {
            j += 1;
        }
        j
    };
    while i < layers.len() {
        let here = i;
        match (layers[i], slots[i]) {
            (LayerSpec::Conv2d { stride, padding, out_channels, .. }, Slot::Weights(wi, bi)) => {
                let mut w = p[wi].clone();
                let mut b: Vec<f32> = bi.map_or(vec![0.0; out_channels], |bi| p[bi].iter().copied().collect());
                i += 1;
                if let (Some(LayerSpec::BatchNorm2d), Slot::Norm(gi, be, si)) = (layers.get(i), slots.get(i).copied().unwrap_or(Slot::None)) {
                    let st = &model.bn[si];
                    for c in 0..out_channels {
                        let scale = p[gi][c] / (st.running_var[c] + st.eps).sqrt();
                        w.index_axis_mut(ndarray::Axis(0), c).mapv_inplace(|v| v * scale);
                        b[c] = (b[c] - st.running_mean[c]) * scale + p[be][c];
                    }
                    i += 1;
                }
                i = skip_dropout(i);
                let relu = matches!(layers.get(i), Some(LayerSpec::Relu));
                if relu {
                    i = skip_dropout(i + 1);
                }
                let mut pool = None;
                if let Some(LayerSpec::MaxPool2d { kernel, stride }) = layers.get(i) {
                    pool = Some((*kernel, stride.unwrap_or(*kernel)));
                    i += 1;
                }
                out.push(Deploy::Conv { w, b, stride, pad: padding, relu, pool });
            }
            (LayerSpec::Linear { out_features, .. }, Slot::Weights(wi, bi)) => {
                let b = bi.map_or(vec![0.0; out_features], |bi| p[bi].iter().copied().collect());
                i = skip_dropout(i + 1);
                let relu = matches!(layers.get(i), Some(LayerSpec::Relu));
                if relu {
                    i += 1;
                }
                out.push(Deploy::Linear { w: p[wi].clone(), b, relu });
            }
            (LayerSpec::MaxPool2d { kernel, stride }, _) => {
                out.push(Deploy::MaxPool { k: kernel, s: stride.unwrap_or(kernel) });
                i += 1;
            }
            (LayerSpec::AvgPool2d { kernel, stride }, _) => {
                out.push(Deploy::AvgPool { k: kernel, s: stride.unwrap_or(kernel) });
                i += 1;
            }
            (LayerSpec::GlobalAvgPool, _) => {
                out.push(Deploy::GlobalAvgPool);
                i += 1;
            }
            (LayerSpec::Dropout { .. } | LayerSpec::Flatten, _) => i += 1,
            (l, _) => bail!(
                "layer {here} ({}) cannot run on the device: only relu directly after conv2d/linear (optionally via batch_norm2d) is supported",
                l.kind()
            ),
        }
    }
    Ok(out)
}

/// Float forward of the folded network; returns every deploy layer's output.
pub fn deploy_forward(layers: &[Deploy], x: Tensor) -> Vec<Tensor> {
    let mut g = Graph::new();
    let mut h = g.leaf(x, false);
    let mut outs = Vec::new();
    for l in layers {
        h = match l {
            Deploy::Conv {
                w,
                b,
                stride,
                pad,
                relu,
                pool,
            } => {
                let wv = g.leaf(w.clone(), false);
                let bv = g.leaf(
                    Tensor::from_shape_vec(ndarray::IxDyn(&[b.len()]), b.clone()).expect("bias"),
                    false,
                );
                let mut y = g.conv2d(
                    h,
                    wv,
                    Some(bv),
                    Conv2dParams {
                        stride: *stride,
                        padding: *pad,
                    },
                );
                if *relu {
                    y = g.relu(y);
                }
                if let Some((k, s)) = pool {
                    y = g.max_pool2d(y, *k, *s);
                }
                y
            }
            Deploy::MaxPool { k, s } => g.max_pool2d(h, *k, *s),
            Deploy::AvgPool { k, s } => g.avg_pool2d(h, *k, *s),
            Deploy::GlobalAvgPool => g.global_avg_pool(h),
            Deploy::Linear { w, b, relu } => {
                if g.shape(h).len() > 2 {
                    h = g.flatten(h);
                }
                let wv = g.leaf(w.clone(), false);
                let bv = g.leaf(
                    Tensor::from_shape_vec(ndarray::IxDyn(&[b.len()]), b.clone()).expect("bias"),
                    false,
                );
                let y = g.linear(h, wv, Some(bv));
                if *relu {
                    g.relu(y)
                } else {
                    y
                }
            }
        };
        outs.push(g.value(h).clone());
    }
    outs
}

/// Per-layer output ranges (min, max) over the first `n` images of `data` (min/max method).
pub fn calibrate(layers: &[Deploy], data: &Dataset, n: usize) -> Vec<(f32, f32)> {
    let mut ranges = vec![(0.0f32, 0.0f32); layers.len()];
    let idx: Vec<usize> = (0..n.min(data.len())).collect();
    for chunk in idx.chunks(100) {
        let (x, _) = data.batch(chunk);
        for (r, t) in ranges.iter_mut().zip(deploy_forward(layers, x)) {
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

struct OwnedStage {
    zp: i8,
    act_min: i8,
    bias: Vec<u8>,
    requant: Vec<u8>,
}

fn stage(s: &OwnedStage) -> OutputStage<'_> {
    OutputStage {
        zero_point: s.zp,
        act_min: s.act_min,
        act_max: 127,
        bias: &s.bias,
        requant: &s.requant,
    }
}

struct OwnedLayer {
    kind: Deploy,
    weights: Vec<u8>,
    stage: Option<OwnedStage>,
    in_c: usize,
    in_features: usize,
}

/// Weights `[out, ...]` -> per-output-channel symmetric int8, plus the output stage.
fn quantize_weights(
    index: usize,
    w: &Tensor,
    b: &[f32],
    s_in: f32,
    out_q: QuantParams,
    relu: bool,
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
    let zp = out_q.zero_point as i8;
    let stage = OwnedStage {
        zp,
        act_min: if relu { zp } else { -128 },
        bias: encode_i32s(&bias),
        requant: encode_requants(&rq),
    };
    Ok((encode_i8s(&q), stage))
}

/// Quantizes the folded network and writes the blob (validated by the runtime's own loader).
pub fn quantize(model: &Model, calib: &Dataset, n_calib: usize) -> anyhow::Result<Vec<u8>> {
    let arch = &model.arch;
    let layers = fold(model)?;
    let ranges = calibrate(&layers, calib, n_calib);
    let mut owned = Vec::new();
    let mut q_in = INPUT_QUANT;
    let mut c = arch.input[2];
    let mut feats = arch.input.iter().product::<usize>();
    let mut shape = (arch.input[0], arch.input[1]);
    for (i, (l, &(lo, hi))) in layers.iter().zip(&ranges).enumerate() {
        let (weights, stage, q_out) = match l {
            Deploy::Conv { w, b, relu, .. } | Deploy::Linear { w, b, relu } => {
                let q_out = activation_quant(lo, hi);
                let (wq, st) = quantize_weights(i, w, b, q_in.scale, q_out, *relu)?;
                (wq, Some(st), q_out)
            }
            _ => (Vec::new(), None, q_in),
        };
        owned.push(OwnedLayer {
            kind: l.clone(),
            weights,
            stage,
            in_c: c,
            in_features: feats,
        });
        // Track the shape for the next layer's in_channels / in_features.
        match l {
            Deploy::Conv {
                w,
                stride,
                pad,
                pool,
                ..
            } => {
                let k = w.shape()[1];
                let mut h = (shape.0 + 2 * pad - k) / stride + 1;
                let mut ww = (shape.1 + 2 * pad - k) / stride + 1;
                if let Some((pk, ps)) = pool {
                    h = (h - pk) / ps + 1;
                    ww = (ww - pk) / ps + 1;
                }
                shape = (h, ww);
                c = w.shape()[0];
            }
            Deploy::MaxPool { k, s } | Deploy::AvgPool { k, s } => {
                shape = ((shape.0 - k) / s + 1, (shape.1 - k) / s + 1)
            }
            Deploy::GlobalAvgPool => shape = (1, 1),
            Deploy::Linear { w, .. } => {
                shape = (1, 1);
                c = w.shape()[0];
            }
        }
        feats = shape.0 * shape.1 * c;
        q_in = q_out;
    }
    let mut rt_layers = heapless::Vec::<Layer, { runtime::format::MAX_LAYERS }>::new();
    let mut zp_in = INPUT_QUANT.zero_point as i8;
    for (i, o) in owned.iter().enumerate() {
        let layer = match (&o.kind, &o.stage) {
            (
                Deploy::Conv {
                    w,
                    stride,
                    pad,
                    pool,
                    ..
                },
                Some(s),
            ) => Layer::Conv2d(Conv2d {
                in_channels: o.in_c as u16,
                out_channels: w.shape()[0] as u16,
                kernel_h: w.shape()[1] as u8,
                kernel_w: w.shape()[2] as u8,
                stride: *stride as u8,
                padding: *pad as u8,
                input_zero_point: zp_in,
                output: stage(s),
                weights: &o.weights,
                pool: pool.map(|(k, s)| Pool2d {
                    kernel: k as u8,
                    stride: s as u8,
                }),
            }),
            (Deploy::Linear { w, .. }, Some(s)) => Layer::FullyConnected(FullyConnected {
                in_features: o.in_features as u32,
                out_features: w.shape()[0] as u16,
                input_zero_point: zp_in,
                output: stage(s),
                weights: &o.weights,
            }),
            (Deploy::MaxPool { k, s }, _) => Layer::MaxPool2d(Pool2d {
                kernel: *k as u8,
                stride: *s as u8,
            }),
            (Deploy::AvgPool { k, s }, _) => Layer::AvgPool2d(Pool2d {
                kernel: *k as u8,
                stride: *s as u8,
            }),
            (Deploy::GlobalAvgPool, _) => Layer::GlobalAvgPool,
            _ => bail!("deploy layer {i}: missing output stage"),
        };
        if let Some(s) = &o.stage {
            zp_in = s.zp;
        }
        rt_layers.push(layer).map_err(|_| {
            anyhow::anyhow!("more than {} device layers", runtime::format::MAX_LAYERS)
        })?;
    }
    let out_q = activation_quant(
        ranges.last().map_or(0.0, |r| r.0),
        ranges.last().map_or(0.0, |r| r.1),
    );
    let out_shape = match arch.validate()?.last() {
        Some(crate::model::Act::Map(h, w, c)) => Shape::new(*h as u16, *w as u16, *c as u16),
        _ => Shape::new(1, 1, arch.outputs() as u16),
    };
    let head = if arch.grid {
        // Objectness threshold in the output's int8 domain: the smallest byte at or above it.
        let thr = (crate::detector::OBJ_THRESHOLD / out_q.scale).ceil() + zp_in as f32;
        Head::GridDetector {
            classes: arch.classes as u16,
            cell: arch.cell().context("grid cell")? as u8,
            obj_threshold: thr.clamp(-128.0, 127.0) as i8,
            nms_iou_pct: (crate::detector::NMS_IOU * 100.0).round() as u8,
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
    let def = ModelDef {
        name: &arch.name,
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
                zero_point: zp_in as i32,
            },
        },
        layers: rt_layers,
        head,
    };
    write_blob(&def).map_err(|e| anyhow::anyhow!("the runtime rejects the exported model: {e}"))
}

/// Quantizes one image exactly as the device does: `p / 255` through the model's input params.
pub fn quantize_image(pixels: &[u8], q: QuantParams, out: &mut [i8]) {
    for (o, &p) in out.iter_mut().zip(pixels) {
        *o = q.quantize(p as f32 / 255.0);
    }
}

/// Runs the blob on the host runtime over `data`; returns each image's int8 output.
pub fn run_int8(blob: &[u8], data: &Dataset) -> anyhow::Result<Vec<Vec<i8>>> {
    let m = RtModel::from_bytes(blob).map_err(|e| anyhow::anyhow!("model blob: {e}"))?;
    let mut arena = vec![0u8; m.arena_bytes()];
    let mut it = Interpreter::new(&m, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
    let q = m.def().input.quant;
    let mut outs = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        quantize_image(data.image(i), q, it.input_mut());
        it.invoke();
        outs.push(it.output().to_vec());
    }
    Ok(outs)
}
