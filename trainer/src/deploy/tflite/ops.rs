//! The operator-by-operator conversion of [`crate::deploy::tflite`]: each TFLite operator to a
//! runtime layer with the parameters TensorFlow Lite Micro computes in its `Prepare`.

use crate::deploy::tflite::read::{
    activation, activation_range, bias, conv_padding, fc_multiplier, int32s, quantize_multiplier,
    same_padding, softmax_params, weights, Graph, Tensor,
};
use anyhow::{anyhow, bail, Context};
use runtime::format::{Add, Mean, Padding, Pool2d, Shape};
use runtime::kernels::AddParams;
use runtime::writer::{OwnedConv, OwnedFullyConnected, OwnedLayer, OwnedNode, OwnedStage};
use runtime::{QuantParams, Requant};
use std::collections::HashMap;
use tflite_schema as tfl;

/// A TFLite tensor as the runtime sees it: which of its tensors holds the bytes (0 the model
/// input, `k + 1` layer `k`'s output), the shape the runtime gives it, its quantization, and a
/// PAD waiting for the convolution that reads it.
#[derive(Clone, Copy)]
pub(crate) struct Val {
    pub id: u8,
    pub shape: Shape,
    pub quant: QuantParams,
    pub pad: Option<(usize, Padding)>,
}

pub(crate) struct Converter<'g> {
    pub g: &'g Graph,
    pub vals: HashMap<i32, Val>,
    /// The layers so far, with their arrays, until the blob is written.
    pub layers: Vec<OwnedNode>,
    /// The last layer is a convolution with no multiplier above one (TFLite's left shift
    /// wraps there, so the requantization is not monotonic and a max-pool cannot move before
    /// it).
    pub monotonic: bool,
    /// Output shape of each layer (its tensor id is the index + 1).
    pub shapes: Vec<Shape>,
    /// How many operators (and the model output) read each TFLite tensor.
    pub consumers: HashMap<i32, usize>,
    /// Values a RESHAPE has given a second name (their readers are not all counted above).
    pub aliased: std::collections::HashSet<u8>,
}

/// Per-channel real multipliers as the runtime's requantizations (TFLite's
/// `QuantizeMultiplier`), each within the range the kernels accept.
fn requants(reals: impl Iterator<Item = f64>) -> anyhow::Result<Vec<Requant>> {
    reals
        .map(|r| {
            quantize_multiplier(r)
                .filter(|q| q.is_valid())
                .ok_or_else(|| anyhow!("requantization multiplier out of range"))
        })
        .collect()
}

impl<'g> Converter<'g> {
    pub fn input(&self, op: &tfl::OperatorT, k: usize) -> anyhow::Result<i32> {
        op.inputs
            .as_deref()
            .and_then(|v| v.get(k))
            .copied()
            .filter(|&t| t >= 0)
            .ok_or_else(|| anyhow!("input {k} is missing"))
    }
    fn optional_input(&self, op: &tfl::OperatorT, k: usize) -> Option<i32> {
        op.inputs
            .as_deref()
            .and_then(|v| v.get(k))
            .copied()
            .filter(|&t| t >= 0)
    }
    pub fn output(&self, op: &tfl::OperatorT) -> anyhow::Result<i32> {
        match op.outputs.as_deref() {
            Some([t]) => Ok(*t),
            _ => bail!("expected exactly one output"),
        }
    }
    fn tensor(&self, t: i32) -> anyhow::Result<Tensor<'g>> {
        self.g.tensor(t)
    }
    /// The value an operator reads: produced earlier, with no PAD pending unless `pad_ok`.
    fn val(&self, t: i32, pad_ok: bool) -> anyhow::Result<Val> {
        let v = *self.vals.get(&t).ok_or_else(|| {
            anyhow!(
                "reads tensor '{}', which no supported operator produced",
                self.g
                    .tensor(t)
                    .map_or("?".into(), |x| x.name().to_string())
            )
        })?;
        if let (Some((at, _)), false) = (v.pad, pad_ok) {
            bail!("reads the output of PAD (#{at}): PAD is supported only before CONV_2D and DEPTHWISE_CONV_2D");
        }
        Ok(v)
    }
    /// The runtime's shape of a value must be the TFLite tensor's (a RESHAPE may have changed
    /// only the TFLite view of the bytes).
    fn same_layout(&self, v: &Val, t: i32) -> anyhow::Result<()> {
        let (shape, _) = activation(&self.tensor(t)?)?;
        if shape != v.shape {
            bail!(
                "reads a reshaped tensor ({}x{}x{} as {}x{}x{}): only a flatten before FULLY_CONNECTED is supported",
                v.shape.h, v.shape.w, v.shape.c, shape.h, shape.w, shape.c
            );
        }
        Ok(())
    }
    fn push(
        &mut self,
        inputs: Vec<u8>,
        layer: OwnedLayer,
        out_t: i32,
        shape: Shape,
    ) -> anyhow::Result<()> {
        let (tshape, quant) = activation(&self.tensor(out_t)?)?;
        if tshape != shape {
            bail!(
                "output shape {}x{}x{} differs from the {}x{}x{} the runtime computes",
                tshape.h,
                tshape.w,
                tshape.c,
                shape.h,
                shape.w,
                shape.c
            );
        }
        let n = self.layers.len();
        if n >= runtime::format::MAX_LAYERS {
            bail!("more than {} layers", runtime::format::MAX_LAYERS);
        }
        self.layers.push(OwnedNode { inputs, layer });
        self.monotonic = false;
        self.shapes.push(shape);
        self.vals.insert(
            out_t,
            Val {
                id: (n + 1) as u8,
                shape,
                quant,
                pad: None,
            },
        );
        Ok(())
    }

    pub fn conv(&mut self, op: &tfl::OperatorT, depthwise: bool) -> anyhow::Result<()> {
        let x_t = self.input(op, 0)?;
        let x = self.val(x_t, true)?;
        if x.pad.is_none() {
            // (A PAD's output is wider than the bytes: `pad` checked its input.)
            self.same_layout(&x, x_t)?;
        }
        let out_t = self.output(op)?;
        let (_, yq) = activation(&self.tensor(out_t)?)?;
        let (padding, sw, sh, act, dil) = match &op.builtin_options {
            tfl::BuiltinOptionsT::Conv2DOptions(o) if !depthwise => (
                o.padding,
                o.stride_w,
                o.stride_h,
                o.fused_activation_function,
                (o.dilation_w_factor, o.dilation_h_factor),
            ),
            tfl::BuiltinOptionsT::DepthwiseConv2DOptions(o)
                if depthwise && o.depth_multiplier > 1 =>
            {
                bail!(
                    "depth multiplier {} is not supported (only 1)",
                    o.depth_multiplier
                )
            }
            tfl::BuiltinOptionsT::DepthwiseConv2DOptions(o) if depthwise => (
                o.padding,
                o.stride_w,
                o.stride_h,
                o.fused_activation_function,
                (o.dilation_w_factor, o.dilation_h_factor),
            ),
            _ => bail!("missing options"),
        };
        if dil != (1, 1) {
            bail!("dilation {}x{} is not supported (only 1)", dil.1, dil.0);
        }
        if !(1..=255).contains(&sw) || !(1..=255).contains(&sh) {
            bail!("strides {sh}x{sw}: only strides of 1..=255 are supported");
        }
        let stride = (sh as usize, sw as usize);
        let w_t = self.tensor(self.input(op, 1)?)?;
        let wd = w_t.dims().to_vec();
        let [o, kh, kw, i] = wd[..] else {
            bail!(
                "weights '{}' have shape {wd:?}, expected 4 dimensions",
                w_t.name()
            );
        };
        let (out_c, qdim) = if depthwise {
            if o != 1 || i as u16 != x.shape.c {
                bail!(
                    "depth multiplier {} is not supported (only 1)",
                    i / (x.shape.c as i32).max(1)
                );
            }
            (i as usize, 3)
        } else {
            if i as u16 != x.shape.c {
                bail!(
                    "weights have {i} input channels, the input has {}",
                    x.shape.c
                );
            }
            (o as usize, 0)
        };
        let (w, w_scales) = weights(&w_t, qdim, out_c)?;
        let b_t = self
            .optional_input(op, 2)
            .map(|t| self.tensor(t))
            .transpose()?;
        let taps = kh as usize * kw as usize * if depthwise { 1 } else { i as usize };
        let b = bias(b_t.as_ref(), out_c, taps)?;
        let in_s = x.quant.scale as f64;
        let out_s = yq.scale as f64;
        // TFLite's PopulateConvolutionQuantizationParams, in double.
        let rq = requants(w_scales.iter().map(|&ws| in_s * ws as f64 / out_s))?;
        let (kh, kw) = (kh as usize, kw as usize);
        let pad = conv_padding(
            padding == tfl::Padding::SAME,
            (x.shape.h as usize, x.shape.w as usize),
            (kh, kw),
            stride,
            x.pad.map(|p| p.1),
        )?;
        let act = activation_range(act, yq)?;
        let monotonic = rq.iter().all(|r| r.is_monotonic(runtime::Rounding::Double));
        let c = OwnedConv {
            in_channels: x.shape.c,
            out_channels: out_c as u16,
            kernel_h: u8::try_from(kh).context("kernel height above 255")?,
            kernel_w: u8::try_from(kw).context("kernel width above 255")?,
            stride_h: sh as u8,
            stride_w: sw as u8,
            padding: pad,
            input_zero_point: x.quant.zero_point as i8,
            output: OwnedStage::new(yq.zero_point as i8, act.0, act.1, &b, &rq),
            weights: w.to_vec(),
            pool: None,
        };
        let conv_len = |n: u16, k: usize, a: u8, b: u8, s: usize| {
            (n as usize + a as usize + b as usize)
                .checked_sub(k)
                .map(|v| v / s + 1)
        };
        let (Some(oh), Some(ow)) = (
            conv_len(x.shape.h, kh, pad.top, pad.bottom, stride.0),
            conv_len(x.shape.w, kw, pad.left, pad.right, stride.1),
        ) else {
            bail!("kernel larger than the padded input");
        };
        let shape = Shape::new(oh as u16, ow as u16, out_c as u16);
        let layer = if depthwise {
            OwnedLayer::DepthwiseConv2d(c)
        } else {
            OwnedLayer::Conv2d(c)
        };
        self.push(vec![x.id], layer, out_t, shape)?;
        self.monotonic = monotonic;
        Ok(())
    }

    pub fn fully_connected(&mut self, op: &tfl::OperatorT) -> anyhow::Result<()> {
        let x_t = self.input(op, 0)?;
        let x = self.val(x_t, false)?;
        let out_t = self.output(op)?;
        let (_, yq) = activation(&self.tensor(out_t)?)?;
        let tfl::BuiltinOptionsT::FullyConnectedOptions(o) = &op.builtin_options else {
            bail!("missing options");
        };
        if o.weights_format != tfl::FullyConnectedOptionsWeightsFormat::DEFAULT {
            bail!("shuffled weights are not supported");
        }
        let w_t = self.tensor(self.input(op, 1)?)?;
        let wd = w_t.dims().to_vec();
        let [n_out, n_in] = wd[..] else {
            bail!(
                "weights '{}' have shape {wd:?}, expected [out, in]",
                w_t.name()
            );
        };
        if n_in as u64 != x.shape.bytes() {
            bail!(
                "weights take {n_in} inputs, the input has {}",
                x.shape.bytes()
            );
        }
        let n_out = usize::try_from(n_out).context("output count")?;
        let (w, w_scales) = weights(&w_t, 0, n_out)?;
        let b_t = self
            .optional_input(op, 2)
            .map(|t| self.tensor(t))
            .transpose()?;
        let b = bias(b_t.as_ref(), n_out, n_in as usize)?;
        let (in_s, out_s) = (x.quant.scale, yq.scale);
        let per_channel = w_t.scales().len() > 1;
        let rq = requants(
            w_scales
                .iter()
                .map(|&ws| fc_multiplier(in_s, ws, out_s, per_channel)),
        )?;
        let act = activation_range(o.fused_activation_function, yq)?;
        let layer = OwnedLayer::FullyConnected(OwnedFullyConnected {
            in_features: n_in as u32,
            out_features: u16::try_from(n_out).context("more than 65535 outputs")?,
            input_zero_point: x.quant.zero_point as i8,
            output: OwnedStage::new(yq.zero_point as i8, act.0, act.1, &b, &rq),
            weights: w.to_vec(),
        });
        self.push(vec![x.id], layer, out_t, Shape::new(1, 1, n_out as u16))
    }

    pub fn pool(&mut self, op: &tfl::OperatorT, max: bool) -> anyhow::Result<()> {
        let x_t = self.input(op, 0)?;
        let x = self.val(x_t, false)?;
        self.same_layout(&x, x_t)?;
        let out_t = self.output(op)?;
        let (_, yq) = activation(&self.tensor(out_t)?)?;
        let tfl::BuiltinOptionsT::Pool2DOptions(o) = &op.builtin_options else {
            bail!("missing options");
        };
        if yq != x.quant {
            bail!("input and output quantization differ");
        }
        let (k, s) = ((o.filter_height, o.filter_width), (o.stride_h, o.stride_w));
        let byte = |v: i32| u8::try_from(v).ok().filter(|&v| v > 0);
        let (Some(kh), Some(kw), Some(sh), Some(sw)) = (byte(k.0), byte(k.1), byte(s.0), byte(s.1))
        else {
            bail!(
                "a {}x{} window with strides {}x{}: each must be 1..=255",
                k.0,
                k.1,
                s.0,
                s.1
            );
        };
        if activation_range(o.fused_activation_function, yq)? != (-128, 127) {
            bail!("a fused activation that clamps is not supported on pooling");
        }
        let p = same_padding(
            o.padding == tfl::Padding::SAME,
            (x.shape.h as usize, x.shape.w as usize),
            (kh as usize, kw as usize),
            (sh as usize, sw as usize),
        );
        if p != Padding::uniform(p.top) {
            bail!("SAME padding {p} is not the same on every side (unsupported for pooling)");
        }
        if !max && p.top != 0 {
            bail!("average pooling with padding is not supported (TFLite averages over the pixels inside; use VALID)");
        }
        let pool = Pool2d {
            kernel_h: kh,
            kernel_w: kw,
            stride_h: sh,
            stride_w: sw,
            padding: p.top,
        };
        if max && p.top >= kh.min(kw) {
            bail!(
                "SAME padding {} is not smaller than the {kh}x{kw} window",
                p.top
            );
        }
        let len = |n: u16, k: u8, s: u8| {
            (n as usize + 2 * p.top as usize)
                .checked_sub(k as usize)
                .map(|v| v / s as usize + 1)
        };
        let (Some(oh), Some(ow)) = (len(x.shape.h, kh, sh), len(x.shape.w, kw, sw)) else {
            bail!("window larger than the input");
        };
        let shape = Shape::new(oh as u16, ow as u16, x.shape.c);
        if max
            && p.top == 0
            && pool.as_square().is_some()
            && self.consumers.get(&x_t) == Some(&1)
            && !self.aliased.contains(&x.id)
        {
            // Fused into the convolution that produced its only input, as this project's own
            // exports are: max-pooling commutes with the (monotonic) requantization and clamp,
            // and the full-resolution output never exists in the arena.
            let n = self.layers.len();
            let last = self.layers.last_mut().map(|l| &mut l.layer);
            if let Some(OwnedLayer::Conv2d(c) | OwnedLayer::DepthwiseConv2d(c)) = last {
                if x.id as usize == n && c.pool.is_none() && self.monotonic {
                    c.pool = Some(pool);
                    let (tshape, _) = activation(&self.tensor(out_t)?)?;
                    if tshape != shape {
                        bail!("output shape differs from the runtime's");
                    }
                    if let Some(last) = self.shapes.last_mut() {
                        *last = shape;
                    }
                    self.vals.insert(out_t, Val { shape, ..x });
                    return Ok(());
                }
            }
        }
        let layer = if max {
            OwnedLayer::MaxPool2d(pool)
        } else {
            OwnedLayer::AvgPool2d(pool)
        };
        self.push(vec![x.id], layer, out_t, shape)
    }

    pub fn add(&mut self, op: &tfl::OperatorT) -> anyhow::Result<()> {
        let (a_t, b_t) = (self.input(op, 0)?, self.input(op, 1)?);
        let (a, b) = (self.val(a_t, false)?, self.val(b_t, false)?);
        self.same_layout(&a, a_t)?;
        self.same_layout(&b, b_t)?;
        if a.shape != b.shape {
            bail!("broadcasting is not supported (shapes differ)");
        }
        let out_t = self.output(op)?;
        let (_, yq) = activation(&self.tensor(out_t)?)?;
        let tfl::BuiltinOptionsT::AddOptions(o) = &op.builtin_options else {
            bail!("missing options");
        };
        let act = activation_range(o.fused_activation_function, yq)?;
        // TFLite's CalculateOpDataAdd: the same double arithmetic as AddParams::from_scales.
        let p = AddParams::from_scales(
            a.quant.scale as f64,
            a.quant.zero_point,
            b.quant.scale as f64,
            b.quant.zero_point,
            yq.scale as f64,
            yq.zero_point,
            act.0 as i32,
            act.1 as i32,
        )
        .ok_or_else(|| anyhow!("rescale multipliers out of range"))?;
        if p.rq_out.to_real() >= 1.0 {
            // TFLM's QuantizeMultiplierSmallerThanOneExp refuses it.
            bail!("output rescale {} is not below 1", p.rq_out.to_real());
        }
        let layer = OwnedLayer::Add(Add {
            input_zero_points: [a.quant.zero_point as i8, b.quant.zero_point as i8],
            zero_point: yq.zero_point as i8,
            act_min: act.0,
            act_max: act.1,
            requant: [p.rq_a, p.rq_b, p.rq_out],
        });
        self.push(vec![a.id, b.id], layer, out_t, a.shape)
    }

    pub fn concat(&mut self, op: &tfl::OperatorT) -> anyhow::Result<()> {
        let out_t = self.output(op)?;
        let (_, yq) = activation(&self.tensor(out_t)?)?;
        let tfl::BuiltinOptionsT::ConcatenationOptions(o) = &op.builtin_options else {
            bail!("missing options");
        };
        let rank = self.tensor(out_t)?.dims().len() as i32;
        if o.axis != -1 && o.axis != rank - 1 {
            bail!("axis {} is not supported (only the channel axis)", o.axis);
        }
        if activation_range(o.fused_activation_function, yq)? != (-128, 127) {
            bail!("a fused activation that clamps is not supported on concatenation");
        }
        let ins = op.inputs.as_deref().unwrap_or(&[]);
        if !(2..=runtime::format::MAX_INPUTS).contains(&ins.len()) {
            bail!(
                "{} inputs: 2 to {} are supported",
                ins.len(),
                runtime::format::MAX_INPUTS
            );
        }
        let mut ids = Vec::new();
        let mut c = 0u32;
        let mut hw = None;
        for &t in ins {
            let v = self.val(t, false)?;
            self.same_layout(&v, t)?;
            if v.quant != yq {
                bail!("an input's scale or zero point differs from the output's (requantizing concatenation is not supported)");
            }
            if *hw.get_or_insert((v.shape.h, v.shape.w)) != (v.shape.h, v.shape.w) {
                bail!("inputs differ in height or width");
            }
            c += v.shape.c as u32;
            ids.push(v.id);
        }
        let (h, w) = hw.unwrap_or((1, 1));
        let c = u16::try_from(c).context("more than 65535 channels")?;
        self.push(ids, OwnedLayer::Concat, out_t, Shape::new(h, w, c))
    }

    pub fn mean(&mut self, op: &tfl::OperatorT) -> anyhow::Result<()> {
        let x_t = self.input(op, 0)?;
        let x = self.val(x_t, false)?;
        self.same_layout(&x, x_t)?;
        if self.tensor(x_t)?.dims().len() != 4 {
            bail!("only a 4-D input is supported");
        }
        let mut axes = int32s(&self.tensor(self.input(op, 1)?)?)?;
        axes.sort_unstable();
        if axes != [1, 2] {
            bail!("axes {axes:?}: only the mean over height and width ([1, 2]) is supported");
        }
        let out_t = self.output(op)?;
        let (_, yq) = activation(&self.tensor(out_t)?)?;
        // TFLM's PrepareMeanOrSumHelper, then QuantizedMeanOrSum's fold of 1/n into the
        // multiplier: shift = min(floor(log2 n), 32, 31 + shift).
        let rq = quantize_multiplier(x.quant.scale as f64 / yq.scale as f64)
            .ok_or_else(|| anyhow!("rescale out of range"))?;
        let n = x.shape.h as i64 * x.shape.w as i64;
        let s = (63 - (n as u64).leading_zeros() as i32)
            .min(32)
            .min(31 + rq.shift);
        let m = ((rq.multiplier as i64) << s) / n;
        let requant = Requant {
            multiplier: i32::try_from(m).context("mean multiplier")?,
            shift: rq.shift - s,
        };
        let layer = OwnedLayer::Mean(Mean {
            input_zero_point: x.quant.zero_point as i8,
            zero_point: yq.zero_point as i8,
            requant,
        });
        self.push(vec![x.id], layer, out_t, Shape::new(1, 1, x.shape.c))
    }

    pub fn softmax(&mut self, op: &tfl::OperatorT) -> anyhow::Result<()> {
        let x_t = self.input(op, 0)?;
        let x = self.val(x_t, false)?;
        self.same_layout(&x, x_t)?;
        let out_t = self.output(op)?;
        let (_, yq) = activation(&self.tensor(out_t)?)?;
        if yq.zero_point != -128 || yq.scale != 1.0 / 256.0 {
            bail!("output quantization must be scale 1/256, zero point -128 (as TFLite requires)");
        }
        let tfl::BuiltinOptionsT::SoftmaxOptions(o) = &op.builtin_options else {
            bail!("missing options");
        };
        let layer = OwnedLayer::Softmax(softmax_params(o.beta, x.quant.scale)?);
        self.push(vec![x.id], layer, out_t, x.shape)
    }

    /// RESHAPE: the bytes stay; the TFLite tensor becomes an alias with its own view.
    pub fn reshape(&mut self, op: &tfl::OperatorT) -> anyhow::Result<()> {
        let x_t = self.input(op, 0)?;
        let x = self.val(x_t, false)?;
        let out_t = self.output(op)?;
        let (shape, q) = activation(&self.tensor(out_t)?)?;
        if q != x.quant || shape.bytes() != x.shape.bytes() {
            bail!("changes the quantization or the element count");
        }
        // Keep the producer's shape: the runtime reads the bytes with it.
        self.aliased.insert(x.id);
        self.vals.insert(out_t, x);
        Ok(())
    }

    /// PAD before a convolution: remembered, and added to the convolution's padding.
    pub fn pad(&mut self, op: &tfl::OperatorT, index: usize) -> anyhow::Result<()> {
        let x_t = self.input(op, 0)?;
        let x = self.val(x_t, false)?;
        self.same_layout(&x, x_t)?;
        if let Some(c) = self.optional_input(op, 2) {
            // TFLM pads with this value; the convolution pads with the zero point.
            let v = self.tensor(c)?;
            let fill = v.data.and_then(|d| (d.len() == 1).then_some(d[0] as i8));
            if fill != Some(x.quant.zero_point as i8) {
                bail!(
                    "a constant fill other than the zero point ({}) is not supported",
                    x.quant.zero_point
                );
            }
        }
        let p = int32s(&self.tensor(self.input(op, 1)?)?)?;
        let [b0, b1, t, bo, l, r, c0, c1] = p[..] else {
            bail!("paddings {p:?}: a [4, 2] constant is expected");
        };
        if [b0, b1, c0, c1] != [0, 0, 0, 0] {
            bail!("padding the batch or channels is not supported");
        }
        let u = |v: i32| u8::try_from(v).map_err(|_| anyhow!("padding {v} outside 0..=255"));
        let out_t = self.output(op)?;
        let (_, q) = activation(&self.tensor(out_t)?)?;
        if q != x.quant {
            bail!("changes the quantization");
        }
        let pad = Padding {
            top: u(t)?,
            left: u(l)?,
            bottom: u(bo)?,
            right: u(r)?,
        };
        let mut v = x;
        v.pad = Some((index, pad));
        self.vals.insert(out_t, v);
        Ok(())
    }
}
