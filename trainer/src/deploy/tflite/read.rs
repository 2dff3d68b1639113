//! Reading a `.tflite` file: the verified flatbuffer, its tensors, and TensorFlow Lite's own
//! formulas for multipliers, activation clamps and SAME padding.

use anyhow::{anyhow, bail};
use runtime::format::{Padding, Shape, Softmax};
use runtime::{QuantParams, Requant};
use tflite_schema as tfl;

/// Most bytes a `.tflite` file may have (the verifier's table and depth limits also apply).
pub const MAX_TFLITE_BYTES: usize = 64 << 20;

/// A tensor of the graph as the importer uses it.
pub(crate) struct Tensor<'m> {
    pub t: &'m tfl::TensorT,
    pub data: Option<&'m [u8]>,
}

impl Tensor<'_> {
    pub fn name(&self) -> &str {
        self.t.name.as_deref().unwrap_or("?")
    }
    pub fn dims(&self) -> &[i32] {
        self.t.shape.as_deref().unwrap_or(&[])
    }
    pub fn scales(&self) -> &[f32] {
        self.t
            .quantization
            .as_ref()
            .and_then(|q| q.scale.as_deref())
            .unwrap_or(&[])
    }
    pub fn zero_points(&self) -> &[i64] {
        self.t
            .quantization
            .as_ref()
            .and_then(|q| q.zero_point.as_deref())
            .unwrap_or(&[])
    }
    pub fn quantized_dimension(&self) -> i32 {
        self.t
            .quantization
            .as_ref()
            .map_or(0, |q| q.quantized_dimension)
    }
    pub fn type_name(&self) -> &'static str {
        self.t.type_.variant_name().unwrap_or("unknown type")
    }
}

/// The model, its one subgraph and the buffers, unpacked once.
pub(crate) struct Graph {
    pub model: tfl::ModelT,
}

impl Graph {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Graph> {
        if bytes.len() > MAX_TFLITE_BYTES {
            bail!(
                "{} bytes: larger than the {} MiB this importer reads",
                bytes.len(),
                MAX_TFLITE_BYTES >> 20
            );
        }
        if bytes.len() < 8 || &bytes[4..8] != b"TFL3" {
            bail!("not a TensorFlow Lite flatbuffer (no \"TFL3\" identifier at offset 4)");
        }
        // What the verifier may walk, scaled to the file: a table takes at least 4 bytes, and
        // the object API copies every table once per reference, so a file that references
        // one large table many times would unpack to far more than its size (1 MB of file to
        // 983 MB of memory, found by review). A converter's file shares nothing: its
        // apparent size is its size.
        let opts = flatbuffers::VerifierOptions {
            max_tables: bytes.len() / 4 + 64,
            max_apparent_size: bytes.len().saturating_mul(2).saturating_add(1 << 16),
            ..Default::default()
        };
        let model = tfl::root_as_model_with_opts(&opts, bytes)
            .map_err(|e| anyhow!("not a valid TensorFlow Lite flatbuffer: {e}"))?;
        let model = model.unpack();
        if model.version != 3 {
            bail!(
                "schema version {} (this importer reads version 3)",
                model.version
            );
        }
        let n = model.subgraphs.as_ref().map_or(0, |s| s.len());
        if n != 1 {
            bail!("{n} subgraphs: only single-subgraph models are supported");
        }
        Ok(Graph { model })
    }

    pub fn subgraph(&self) -> &tfl::SubGraphT {
        &self.model.subgraphs.as_ref().expect("checked in parse")[0]
    }

    pub fn operators(&self) -> &[tfl::OperatorT] {
        self.subgraph().operators.as_deref().unwrap_or(&[])
    }

    pub fn tensor(&self, index: i32) -> anyhow::Result<Tensor<'_>> {
        let tensors = self.subgraph().tensors.as_deref().unwrap_or(&[]);
        let t = usize::try_from(index)
            .ok()
            .and_then(|i| tensors.get(i))
            .ok_or_else(|| {
                anyhow!(
                    "tensor index {index} out of range ({} tensors)",
                    tensors.len()
                )
            })?;
        let buffers = self.model.buffers.as_deref().unwrap_or(&[]);
        let b = buffers.get(t.buffer as usize);
        if b.is_some_and(|b| b.offset > 1 || b.size > 0) {
            bail!(
                "tensor '{}' keeps its data outside the flatbuffer (offset/size buffers are not supported)",
                t.name.as_deref().unwrap_or("?")
            );
        }
        let data = b.and_then(|b| b.data.as_deref()).filter(|d| !d.is_empty());
        Ok(Tensor { t, data })
    }

    /// The builtin operator of `op` (TFLite's `GetBuiltinCode`: the larger of the deprecated
    /// int8 field and the new one), or an error for a custom operator.
    pub fn builtin(&self, op: &tfl::OperatorT) -> anyhow::Result<tfl::BuiltinOperator> {
        let codes = self.model.operator_codes.as_deref().unwrap_or(&[]);
        let c = codes
            .get(op.opcode_index as usize)
            .ok_or_else(|| anyhow!("operator code index {} out of range", op.opcode_index))?;
        let code = (c.deprecated_builtin_code as i32).max(c.builtin_code.0);
        if code == tfl::BuiltinOperator::CUSTOM.0 {
            bail!(
                "custom operator '{}' is not supported",
                c.custom_code.as_deref().unwrap_or("?")
            );
        }
        Ok(tfl::BuiltinOperator(code))
    }
}

/// The name of a builtin operator, as in TensorFlow Lite's schema.
pub(crate) fn op_name(op: tfl::BuiltinOperator) -> String {
    op.variant_name()
        .map_or_else(|| format!("operator code {}", op.0), str::to_string)
}

/// TensorFlow Lite's `QuantizeMultiplier`: `frexp`, round half away from zero, renormalize
/// `2^31`, and a shift below -31 flushed to multiplier 0. `None` above the runtime's shift range.
pub(crate) fn quantize_multiplier(real: f64) -> Option<Requant> {
    if let Some(r) = Requant::from_real(real) {
        return Some(r);
    }
    // from_real refuses only non-finite, negative and out-of-range values: TFLite flushes the
    // tiny ones to 0.
    (real.is_finite() && real > 0.0 && real < 1.0).then_some(Requant {
        multiplier: 0,
        shift: 0,
    })
}

/// TFLite's `Quantize(scale, zero_point, f)` for the activation clamps: in `float`; an error
/// where TFLite's overflow check fails.
fn quantize_f32(scale: f32, zero_point: i32, f: f32) -> anyhow::Result<i32> {
    let t = (f / scale).round();
    if !(t >= i32::MIN as f32 && t <= i32::MAX as f32) {
        bail!("activation bound {f} / scale {scale} overflows int32");
    }
    (t as i32)
        .checked_add(zero_point)
        .ok_or_else(|| anyhow!("activation bound {f} / scale {scale} overflows int32"))
}

/// TFLite's `CalculateActivationRangeQuantized` for int8 outputs.
pub(crate) fn activation_range(
    act: tfl::ActivationFunctionType,
    q: QuantParams,
) -> anyhow::Result<(i8, i8)> {
    let (s, zp) = (q.scale, q.zero_point);
    let (lo, hi) = match act {
        tfl::ActivationFunctionType::NONE => (-128, 127),
        tfl::ActivationFunctionType::RELU => (quantize_f32(s, zp, 0.0)?.max(-128), 127),
        tfl::ActivationFunctionType::RELU6 => (
            quantize_f32(s, zp, 0.0)?.max(-128),
            quantize_f32(s, zp, 6.0)?.min(127),
        ),
        tfl::ActivationFunctionType::RELU_N1_TO_1 => (
            quantize_f32(s, zp, -1.0)?.max(-128),
            quantize_f32(s, zp, 1.0)?.min(127),
        ),
        other => bail!(
            "fused activation {} is not supported",
            other.variant_name().unwrap_or("?")
        ),
    };
    if lo > hi {
        bail!("fused activation range [{lo}, {hi}] is empty");
    }
    Ok((lo.clamp(-128, 127) as i8, hi.clamp(-128, 127) as i8))
}

/// An int8 activation tensor's shape (batch 1, rank 1 to 4, as height, width, channels) and
/// per-tensor quantization.
pub(crate) fn activation(t: &Tensor) -> anyhow::Result<(Shape, QuantParams)> {
    if t.t.type_ != tfl::TensorType::INT8 {
        bail!(
            "tensor '{}' is {}: only int8 activations are supported",
            t.name(),
            t.type_name()
        );
    }
    // Converters write -1 for the batch in `shape_signature` (a Keras model's `None`); TFLite
    // Micro runs the static `shape`, batch 1. Any other unknown dimension is a dynamic shape.
    if t.t
        .shape_signature
        .as_deref()
        .is_some_and(|s| s.iter().skip(1).any(|&d| d < 0) || s.first().is_some_and(|&b| b < -1))
    {
        bail!("tensor '{}' has a dynamic shape", t.name());
    }
    let d = t.dims();
    let dims = match d {
        [n] => [1, 1, *n],
        [b, n] if *b == 1 => [1, 1, *n],
        [b, h, c] if *b == 1 => [1, *h, *c],
        [b, h, w, c] if *b == 1 => [*h, *w, *c],
        _ => bail!(
            "tensor '{}' has shape {d:?}: batch 1 and rank 1 to 4 are supported",
            t.name()
        ),
    };
    let fit = |v: i32| u16::try_from(v).ok().filter(|&v| v > 0);
    let (Some(h), Some(w), Some(c)) = (fit(dims[0]), fit(dims[1]), fit(dims[2])) else {
        bail!(
            "tensor '{}' has shape {d:?}: each dimension must be 1..=65535",
            t.name()
        );
    };
    let (scales, zps) = (t.scales(), t.zero_points());
    if scales.len() != 1 || zps.len() != 1 {
        bail!(
            "tensor '{}' has {} scales: activations must be quantized per tensor",
            t.name(),
            scales.len()
        );
    }
    let zp = zps[0];
    if !((-128..=127).contains(&zp) && scales[0].is_finite() && scales[0] > 0.0) {
        bail!(
            "tensor '{}' has scale {} and zero point {zp}: not a valid int8 quantization",
            t.name(),
            scales[0]
        );
    }
    Ok((
        Shape::new(h, w, c),
        QuantParams {
            scale: scales[0],
            zero_point: zp as i32,
        },
    ))
}

/// Constant int8 weights with symmetric (zero point 0) scales: one per tensor, or one per
/// slice of `dim` (`channels` of them).
pub(crate) fn weights<'m>(
    t: &Tensor<'m>,
    dim: i32,
    channels: usize,
) -> anyhow::Result<(&'m [u8], Vec<f32>)> {
    if t.t.type_ != tfl::TensorType::INT8 {
        bail!(
            "weights '{}' are {}: only int8 weights are supported",
            t.name(),
            t.type_name()
        );
    }
    let data = t
        .data
        .ok_or_else(|| anyhow!("weights '{}' are not a constant", t.name()))?;
    // Each dimension at least 1 and the product checked: negative dimensions (an even number
    // of them has a positive product) and products beyond i64 are not shapes.
    let n = t.dims().iter().try_fold(1i64, |n, &d| {
        (d >= 1).then(|| n.checked_mul(d as i64)).flatten()
    });
    if n != Some(data.len() as i64) {
        bail!(
            "weights '{}': shape {:?} but {} bytes",
            t.name(),
            t.dims(),
            data.len()
        );
    }
    let (scales, zps) = (t.scales(), t.zero_points());
    if zps.iter().any(|&z| z != 0) {
        bail!(
            "weights '{}' are not symmetric (a zero point is not 0)",
            t.name()
        );
    }
    let scales = match scales.len() {
        1 => vec![scales[0]; channels],
        k if k == channels && t.quantized_dimension() == dim => scales.to_vec(),
        k => bail!(
            "weights '{}' have {k} scales on dimension {}: expected 1, or {channels} on dimension {dim}",
            t.name(),
            t.quantized_dimension()
        ),
    };
    if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        bail!(
            "weights '{}' have a scale that is not finite and positive",
            t.name()
        );
    }
    Ok((data, scales))
}

/// Little-endian int32 values of a constant buffer.
fn le_i32s(data: &[u8]) -> Vec<i32> {
    data.chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A constant int32 bias of `n` values (zeros when the operator has none), each within what
/// the runtime accepts for `taps` terms per accumulator ([`runtime::kernels::max_bias`]).
pub(crate) fn bias(t: Option<&Tensor>, n: usize, taps: usize) -> anyhow::Result<Vec<i32>> {
    let Some(t) = t else {
        return Ok(vec![0; n]);
    };
    if t.t.type_ != tfl::TensorType::INT32 {
        bail!(
            "bias '{}' is {}: only int32 biases are supported",
            t.name(),
            t.type_name()
        );
    }
    let data = t
        .data
        .ok_or_else(|| anyhow!("bias '{}' is not a constant", t.name()))?;
    if data.len() != 4 * n {
        bail!("bias '{}': {} bytes for {n} channels", t.name(), data.len());
    }
    let v = le_i32s(data);
    let bound = runtime::kernels::max_bias(taps);
    if let Some(b) = v.iter().find(|b| b.unsigned_abs() > bound.unsigned_abs()) {
        bail!(
            "bias '{}' has the value {b}, beyond +-{bound}: with {taps} terms per sum, the int32 accumulator could overflow",
            t.name()
        );
    }
    Ok(v)
}

/// A constant int32 vector (axes, paddings).
pub(crate) fn int32s(t: &Tensor) -> anyhow::Result<Vec<i32>> {
    if t.t.type_ != tfl::TensorType::INT32 {
        bail!("'{}' is {}, expected int32", t.name(), t.type_name());
    }
    let data = t
        .data
        .ok_or_else(|| anyhow!("'{}' is not a constant", t.name()))?;
    Ok(le_i32s(data))
}

/// TFLite's padding for `SAME` (`ComputePaddingHeightWidth`): the output is
/// `ceil(in / stride)`, the total padding `(out - 1) * stride + k - in` (at least 0) with the
/// odd pixel after. `VALID` pads nothing.
pub(crate) fn same_padding(
    same: bool,
    (in_h, in_w): (usize, usize),
    (k_h, k_w): (usize, usize),
    (s_h, s_w): (usize, usize),
) -> Padding {
    if !same {
        return Padding::default();
    }
    let total = |n: usize, k: usize, s: usize| {
        let out = n.div_ceil(s.max(1));
        (out.saturating_sub(1).saturating_mul(s).saturating_add(k)).saturating_sub(n)
    };
    let (th, tw) = (total(in_h, k_h, s_h), total(in_w, k_w, s_w));
    let b = |v: usize| v.min(255) as u8;
    Padding {
        top: b(th / 2),
        left: b(tw / 2),
        bottom: b(th - th / 2),
        right: b(tw - tw / 2),
    }
}

/// A convolution's padding: a PAD before it (`pre`) widens its input, and TFLite computes
/// SAME padding on the widened size; the two add up.
pub(crate) fn conv_padding(
    same: bool,
    (in_h, in_w): (usize, usize),
    k: (usize, usize),
    stride: (usize, usize),
    pre: Option<Padding>,
) -> anyhow::Result<Padding> {
    let p = pre.unwrap_or_default();
    let (h, w) = (
        in_h + p.top as usize + p.bottom as usize,
        in_w + p.left as usize + p.right as usize,
    );
    let s = same_padding(same, (h, w), k, stride);
    let add = |a: u8, b: u8| a.checked_add(b).ok_or_else(|| anyhow!("padding above 255"));
    Ok(Padding {
        top: add(s.top, p.top)?,
        left: add(s.left, p.left)?,
        bottom: add(s.bottom, p.bottom)?,
        right: add(s.right, p.right)?,
    })
}

/// FULLY_CONNECTED's real multiplier as TFLM derives it: per channel as a convolution's (a
/// product in `double`); per tensor through `GetQuantizedConvolutionMultipler`, whose product
/// of the two scales is in `float` (with or without a bias).
pub(crate) fn fc_multiplier(in_s: f32, w_s: f32, out_s: f32, per_channel: bool) -> f64 {
    if per_channel {
        in_s as f64 * w_s as f64 / out_s as f64
    } else {
        (in_s * w_s) as f64 / out_s as f64
    }
}

/// SOFTMAX's parameters: `PreprocessSoftmaxScaling(beta, input_scale, 5)` and
/// `-CalculateInputRadius(5, left_shift)`. Input differences are never below -255, so a
/// radius beyond 255 is stored as 255 (the same comparisons, a bound the runtime accepts).
pub(crate) fn softmax_params(beta: f32, in_scale: f32) -> anyhow::Result<Softmax> {
    let real = (beta as f64 * in_scale as f64 * (1u64 << 26) as f64).min((1u64 << 31) as f64 - 1.0);
    if real <= 1.0 {
        bail!("beta * input scale too small ({real} <= 1 after scaling)");
    }
    let rq = quantize_multiplier(real)
        .filter(|r| r.shift >= 0)
        .ok_or_else(|| anyhow!("beta * input scale out of range"))?;
    let radius = (31.0 * (1u64 << 26) as f64 / (1u64 << rq.shift) as f64).floor();
    Ok(Softmax {
        input_multiplier: rq.multiplier,
        input_left_shift: rq.shift,
        diff_min: -(radius.min(255.0) as i32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TFLite's SAME padding, worked by hand: 96 wide, k 3, stride 2 -> 48 out, 1 pixel of
    /// padding in total, after; stride 1 pads 1 on both sides; 7 wide, stride 2: 4 out,
    /// (3 * 2 + 3) - 7 = 2, one each side.
    #[test]
    fn same_padding_matches_tflite() {
        let p = same_padding(true, (96, 96), (3, 3), (2, 2));
        assert_eq!((p.top, p.left, p.bottom, p.right), (0, 0, 1, 1));
        assert_eq!(
            same_padding(true, (28, 28), (3, 3), (1, 1)),
            Padding::uniform(1)
        );
        assert_eq!(
            same_padding(true, (7, 7), (3, 3), (2, 2)),
            Padding::uniform(1)
        );
        assert_eq!(
            same_padding(false, (7, 7), (3, 3), (2, 2)),
            Padding::uniform(0)
        );
        // 2x2 pool, stride 2, even input: no padding.
        assert_eq!(
            same_padding(true, (32, 32), (2, 2), (2, 2)),
            Padding::uniform(0)
        );
        // Keyword spotting's first convolution: 49x10, a 10x4 kernel, stride 2: 25x5 out,
        // (24 * 2 + 10) - 49 = 9 rows (4 above, 5 below) and (4 * 2 + 4) - 10 = 2 columns.
        let p = same_padding(true, (49, 10), (10, 4), (2, 2));
        assert_eq!((p.top, p.left, p.bottom, p.right), (4, 1, 5, 1));
        // Unequal strides: rows by 2, columns by 1.
        let p = same_padding(true, (49, 10), (3, 3), (2, 1));
        assert_eq!((p.top, p.left, p.bottom, p.right), (1, 1, 1, 1));
    }

    /// A PAD of one row and column after a 7x7 input, then a 3x3 SAME convolution of stride
    /// 2: TFLite pads the 8x8 result by 0 above and 1 below (computed on the padded size), so
    /// the total is 0 above and 2 below (the review found 1 and 2, one row off).
    #[test]
    fn same_padding_after_a_pad_uses_the_padded_size() {
        let pre = Padding {
            top: 0,
            left: 0,
            bottom: 1,
            right: 1,
        };
        let p = conv_padding(true, (7, 7), (3, 3), (2, 2), Some(pre)).unwrap();
        assert_eq!((p.top, p.left, p.bottom, p.right), (0, 0, 2, 2));
        assert_eq!(
            conv_padding(false, (7, 7), (3, 3), (2, 2), Some(pre)).unwrap(),
            pre
        );
    }

    /// Per-tensor FULLY_CONNECTED multiplies the scales in float: these scales give
    /// 1313434526, not the double product's 1313434581 (which rounds -77852 one apart).
    #[test]
    fn per_tensor_fc_multiplier_is_float() {
        let r = quantize_multiplier(fc_multiplier(0.0884782, 0.001_720_414, 0.254_853_52, false))
            .unwrap();
        assert_eq!((r.multiplier, r.shift), (1_313_434_526, -10));
        let d = quantize_multiplier(fc_multiplier(0.0884782, 0.001_720_414, 0.254_853_52, true))
            .unwrap();
        assert_eq!((d.multiplier, d.shift), (1_313_434_581, -10));
    }

    /// A softmax over logits of scale 0.05 (beta 1): the radius is far beyond 255, stored as
    /// 255, which the runtime accepts.
    #[test]
    fn softmax_radius_is_bounded() {
        let s = softmax_params(1.0, 0.05).unwrap();
        assert_eq!(s.diff_min, -255);
        assert!(s.input_left_shift >= 0);
    }

    /// QuantizeMultiplier: 0.5 -> (2^30, 0); 1/3 -> round(2^31 * 2/3) with shift -1; a tiny
    /// multiplier flushes to 0 as TFLite's does (shift < -31).
    #[test]
    fn quantize_multiplier_matches_tflite() {
        let r = quantize_multiplier(0.5).unwrap();
        assert_eq!((r.multiplier, r.shift), (1 << 30, 0));
        let r = quantize_multiplier(1.0 / 3.0).unwrap();
        assert_eq!((r.multiplier, r.shift), (1_431_655_765, -1));
        let r = quantize_multiplier(1e-12).unwrap();
        assert_eq!((r.multiplier, r.shift), (0, 0));
        assert!(quantize_multiplier(f64::NAN).is_none());
    }

    /// The activation clamps in float, as TFLite's: ReLU6 with scale 6/255 and zero point
    /// -128 tops out at -128 + 255 = 127.
    #[test]
    fn activation_ranges() {
        let q = QuantParams {
            scale: 6.0 / 255.0,
            zero_point: -128,
        };
        assert_eq!(
            activation_range(tfl::ActivationFunctionType::RELU6, q).unwrap(),
            (-128, 127)
        );
        let q = QuantParams {
            scale: 0.05,
            zero_point: -10,
        };
        assert_eq!(
            activation_range(tfl::ActivationFunctionType::RELU6, q).unwrap(),
            (-10, 110)
        );
        assert_eq!(
            activation_range(tfl::ActivationFunctionType::RELU, q).unwrap(),
            (-10, 127)
        );
        assert!(activation_range(tfl::ActivationFunctionType::TANH, q).is_err());
    }
}
