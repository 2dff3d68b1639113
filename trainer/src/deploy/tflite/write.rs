//! A trained model as a fully-int8 TensorFlow Lite flatbuffer: the calibrated, quantized graph
//! of [`crate::deploy::export::quantize_graph`] written as the operators TensorFlow Lite uses
//! for each layer (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, MAX_POOL_2D,
//! AVERAGE_POOL_2D, ADD, CONCATENATION; PAD where a padding is neither SAME nor VALID), int8
//! input and output, per-channel symmetric int8 weights, int32 biases. The blob `export
//! --rounding tflite` writes from the same graph computes what TensorFlow Lite Micro computes
//! on this file; `trainer export --format tflite` checks it by importing the file back.

use crate::deploy::export::{QWeights, Quantized};
use crate::deploy::fold::{Deploy, Fused};
use crate::deploy::tflite::read::same_padding;
use anyhow::{bail, Context};
use runtime::writer::encode_i32s;
use runtime::QuantParams;
use tflite_schema as tfl;

/// The flatbuffer under construction: tensors, their buffers, operators and the operator
/// codes they use.
#[derive(Default)]
struct Writer {
    tensors: Vec<tfl::TensorT>,
    buffers: Vec<tfl::BufferT>,
    ops: Vec<tfl::OperatorT>,
    codes: Vec<tfl::BuiltinOperator>,
}

/// A generated struct (non-exhaustive): its default with the fields given.
macro_rules! with {
    ($t:ty { $($f:ident : $v:expr),* $(,)? }) => {{
        let mut x = <$t>::default();
        $(x.$f = $v;)*
        x
    }};
}

fn quant(scales: Vec<f32>, zero_points: Vec<i64>, dim: i32) -> Box<tfl::QuantizationParametersT> {
    Box::new(with!(tfl::QuantizationParametersT {
        scale: Some(scales),
        zero_point: Some(zero_points),
        quantized_dimension: dim
    }))
}

fn dims(shape: &[usize]) -> anyhow::Result<Vec<i32>> {
    shape
        .iter()
        .map(|&d| i32::try_from(d).context("dimension above i32"))
        .collect()
}

impl Writer {
    fn tensor(
        &mut self,
        name: String,
        shape: &[usize],
        type_: tfl::TensorType,
        data: Option<Vec<u8>>,
        q: Box<tfl::QuantizationParametersT>,
    ) -> anyhow::Result<i32> {
        let buffer = match data {
            Some(d) => {
                self.buffers.push(with!(tfl::BufferT { data: Some(d) }));
                self.buffers.len() - 1
            }
            None => 0,
        };
        self.tensors.push(with!(tfl::TensorT {
            shape: Some(dims(shape)?),
            type_: type_,
            buffer: buffer as u32,
            name: Some(name),
            quantization: Some(q)
        }));
        Ok(self.tensors.len() as i32 - 1)
    }

    /// An int8 activation tensor.
    fn activation(&mut self, name: String, shape: &[usize], q: QuantParams) -> anyhow::Result<i32> {
        let zp = vec![q.zero_point as i64];
        self.tensor(
            name,
            shape,
            tfl::TensorType::INT8,
            None,
            quant(vec![q.scale], zp, 0),
        )
    }

    /// A layer's weights (per-channel scales along `dim`: 0, or 3 for a depthwise kernel
    /// stored `[1, KH, KW, C]`) and int32 biases at scale `s_in * scale[c]`; returns their
    /// tensor indices.
    fn weights(
        &mut self,
        k: usize,
        w: &QWeights,
        shape: &[usize],
        dim: i32,
        s_in: f32,
    ) -> anyhow::Result<(i32, i32)> {
        let zeros = vec![0i64; w.scales.len()];
        let wq = quant(w.scales.clone(), zeros.clone(), dim);
        let wt = self.tensor(
            format!("layer{k}/weights"),
            shape,
            tfl::TensorType::INT8,
            Some(w.stored(dim == 3)),
            wq,
        )?;
        let bias_scales = w.scales.iter().map(|&s| s_in * s).collect();
        let bias = encode_i32s(&w.bias);
        let bq = quant(bias_scales, zeros, 0);
        let n = [w.bias.len()];
        let bt = self.tensor(
            format!("layer{k}/bias"),
            &n,
            tfl::TensorType::INT32,
            Some(bias),
            bq,
        )?;
        Ok((wt, bt))
    }

    fn op(
        &mut self,
        code: tfl::BuiltinOperator,
        inputs: Vec<i32>,
        output: i32,
        options: tfl::BuiltinOptionsT,
    ) {
        let index = match self.codes.iter().position(|&c| c == code) {
            Some(i) => i,
            None => {
                self.codes.push(code);
                self.codes.len() - 1
            }
        };
        self.ops.push(with!(tfl::OperatorT {
            opcode_index: index as u32,
            inputs: Some(inputs),
            outputs: Some(vec![output]),
            builtin_options: options
        }));
    }

    /// A convolution's input with its padding: SAME or VALID where one of them is the padding,
    /// else a PAD (filled with the zero point) and VALID.
    fn padded(
        &mut self,
        k: usize,
        x: i32,
        [h, w, c]: [usize; 3],
        (kernel, [sh, sw], [t, l, b, r]): Window,
        q: QuantParams,
    ) -> anyhow::Result<(i32, tfl::Padding)> {
        if [t, l, b, r] == [0; 4] {
            return Ok((x, tfl::Padding::VALID));
        }
        if same_sides((h, w), kernel, (sh, sw)) == [t, l, b, r] {
            return Ok((x, tfl::Padding::SAME));
        }
        let pads = encode_i32s(&[0, 0, t as i32, b as i32, l as i32, r as i32, 0, 0]);
        let pq = quant(Vec::new(), Vec::new(), 0);
        let pt = self.tensor(
            format!("layer{k}/paddings"),
            &[4, 2],
            tfl::TensorType::INT32,
            Some(pads),
            pq,
        )?;
        let shape = [1, h + t + b, w + l + r, c];
        let y = self.activation(format!("layer{k}/padded"), &shape, q)?;
        let options = tfl::BuiltinOptionsT::PadOptions(Box::default());
        self.op(tfl::BuiltinOperator::PAD, vec![x, pt], y, options);
        Ok((y, tfl::Padding::VALID))
    }
}

/// TensorFlow's SAME padding `[top, left, bottom, right]` of a window over an `h x w` input.
fn same_sides(hw: (usize, usize), kernel: (usize, usize), stride: (usize, usize)) -> [usize; 4] {
    let p = same_padding(true, hw, kernel, stride);
    [p.top, p.left, p.bottom, p.right].map(usize::from)
}

/// A convolution's window: kernel `(rows, columns)`, stride `[rows, columns]` and padding
/// `[top, left, bottom, right]`.
type Window = ((usize, usize), [usize; 2], [usize; 4]);

fn pool(
    padding: tfl::Padding,
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
) -> tfl::BuiltinOptionsT {
    tfl::BuiltinOptionsT::Pool2DOptions(Box::new(with!(tfl::Pool2DOptionsT {
        padding: padding,
        stride_h: sh as i32,
        stride_w: sw as i32,
        filter_height: kh as i32,
        filter_width: kw as i32,
        fused_activation_function: tfl::ActivationFunctionType::NONE
    })))
}

/// The `.tflite` bytes of `qz`, a model of input `[h, w, c]` named `name`.
pub fn write_tflite(name: &str, input: [usize; 3], qz: &Quantized) -> anyhow::Result<Vec<u8>> {
    let mut wr = Writer {
        buffers: vec![tfl::BufferT::default()], // buffer 0: empty, for activations
        ..Writer::default()
    };
    let (shapes, q) = (&qz.shapes, &qz.q);
    // A tensor of the folded graph (0 the input, k + 1 node k's output) -> its flatbuffer index.
    let mut at = vec![wr.activation("input".into(), &[1, input[0], input[1], input[2]], q[0])?];
    for (k, (n, w)) in qz.nodes.iter().zip(&qz.weights).enumerate() {
        let x = at[n.inputs[0]];
        let in_shape = shapes[n.inputs[0]];
        let [oh, ow, oc] = shapes[k + 1];
        let (s_in, yq) = (q[n.inputs[0]].scale, q[k + 1]);
        let out_name = format!("layer{k}/output");
        let map = [1, oh, ow, oc];
        let y = match (&n.op, w) {
            (
                Deploy::Conv {
                    w: wf,
                    stride,
                    pad,
                    act,
                    pool: mp,
                    ..
                },
                Some(qw),
            ) => {
                let [o, kh, kw, i] = [0, 1, 2, 3].map(|d| wf.shape()[d]);
                let (xp, padding) =
                    wr.padded(k, x, in_shape, ((kh, kw), *stride, *pad), q[n.inputs[0]])?;
                let (wt, bt) = wr.weights(k, qw, &[o, kh, kw, i], 0, s_in)?;
                // A fused max-pool is TensorFlow Lite's own operator after the convolution.
                let c = match mp {
                    Some(_) => {
                        let [h, wd, _] = in_shape;
                        let [t, l, b, r] = *pad;
                        let oh = (h + t + b - kh) / stride[0] + 1;
                        let ow = (wd + l + r - kw) / stride[1] + 1;
                        wr.activation(format!("layer{k}/conv"), &[1, oh, ow, o], yq)?
                    }
                    None => wr.activation(out_name.clone(), &map, yq)?,
                };
                let options =
                    tfl::BuiltinOptionsT::Conv2DOptions(Box::new(with!(tfl::Conv2DOptionsT {
                        padding: padding,
                        stride_h: stride[0] as i32,
                        stride_w: stride[1] as i32,
                        fused_activation_function: act.tflite(),
                        dilation_h_factor: 1,
                        dilation_w_factor: 1
                    })));
                wr.op(tfl::BuiltinOperator::CONV_2D, vec![xp, wt, bt], c, options);
                match mp {
                    Some((pk, ps)) => {
                        let y = wr.activation(out_name, &map, yq)?;
                        let options = pool(tfl::Padding::VALID, (*pk, *pk), (*ps, *ps));
                        wr.op(tfl::BuiltinOperator::MAX_POOL_2D, vec![c], y, options);
                        y
                    }
                    None => c,
                }
            }
            (
                Deploy::Depthwise {
                    w: wf,
                    stride,
                    pad,
                    act,
                    ..
                },
                Some(qw),
            ) => {
                let [c, kh, kw] = [0, 1, 2].map(|d| wf.shape()[d]);
                let (xp, padding) =
                    wr.padded(k, x, in_shape, ((kh, kw), *stride, *pad), q[n.inputs[0]])?;
                let (wt, bt) = wr.weights(k, qw, &[1, kh, kw, c], 3, s_in)?;
                let y = wr.activation(out_name, &map, yq)?;
                let o = with!(tfl::DepthwiseConv2DOptionsT {
                    padding: padding,
                    stride_h: stride[0] as i32,
                    stride_w: stride[1] as i32,
                    depth_multiplier: 1,
                    fused_activation_function: act.tflite(),
                    dilation_h_factor: 1,
                    dilation_w_factor: 1
                });
                let options = tfl::BuiltinOptionsT::DepthwiseConv2DOptions(Box::new(o));
                wr.op(
                    tfl::BuiltinOperator::DEPTHWISE_CONV_2D,
                    vec![xp, wt, bt],
                    y,
                    options,
                );
                y
            }
            (Deploy::Linear { w: wf, act, .. }, Some(qw)) => {
                let [o, i] = [wf.shape()[0], wf.len() / wf.shape()[0]];
                let (wt, bt) = wr.weights(k, qw, &[o, i], 0, s_in)?;
                let y = wr.activation(out_name, &[1, o], yq)?;
                let o = with!(tfl::FullyConnectedOptionsT {
                    fused_activation_function: act.tflite()
                });
                let options = tfl::BuiltinOptionsT::FullyConnectedOptions(Box::new(o));
                wr.op(
                    tfl::BuiltinOperator::FULLY_CONNECTED,
                    vec![x, wt, bt],
                    y,
                    options,
                );
                y
            }
            (Deploy::MaxPool { k: pk, s, pad }, _) => {
                let (h, wd) = (in_shape[0], in_shape[1]);
                let padding = if *pad == 0 {
                    tfl::Padding::VALID
                } else {
                    if same_sides((h, wd), (*pk, *pk), (*s, *s)) != [*pad; 4] {
                        bail!(
                            "deploy node {k}: a {pk}x{pk} max-pool with padding {pad} is neither \
                             SAME nor VALID, which TensorFlow Lite's pools know"
                        );
                    }
                    tfl::Padding::SAME
                };
                let y = wr.activation(out_name, &map, yq)?;
                wr.op(
                    tfl::BuiltinOperator::MAX_POOL_2D,
                    vec![x],
                    y,
                    pool(padding, (*pk, *pk), (*s, *s)),
                );
                y
            }
            (Deploy::AvgPool { k: pk, s }, _) => {
                let y = wr.activation(out_name, &map, yq)?;
                let options = pool(tfl::Padding::VALID, (*pk, *pk), (*s, *s));
                wr.op(tfl::BuiltinOperator::AVERAGE_POOL_2D, vec![x], y, options);
                y
            }
            (Deploy::GlobalAvgPool, _) => {
                // The whole map as one window: TensorFlow Lite's average pool rounds as the
                // runtime's global pool does (half away from zero).
                let y = wr.activation(out_name, &[1, 1, 1, oc], yq)?;
                let options = pool(tfl::Padding::VALID, (in_shape[0], in_shape[1]), (1, 1));
                wr.op(tfl::BuiltinOperator::AVERAGE_POOL_2D, vec![x], y, options);
                y
            }
            (Deploy::Add { relu }, _) => {
                let y = wr.activation(out_name, &map, yq)?;
                let act = if *relu { Fused::Relu } else { Fused::None };
                let o = with!(tfl::AddOptionsT {
                    fused_activation_function: act.tflite(),
                    pot_scale_int16: true
                });
                let options = tfl::BuiltinOptionsT::AddOptions(Box::new(o));
                wr.op(
                    tfl::BuiltinOperator::ADD,
                    vec![x, at[n.inputs[1]]],
                    y,
                    options,
                );
                y
            }
            (Deploy::Concat, _) => {
                let y = wr.activation(out_name, &map, yq)?;
                let o = with!(tfl::ConcatenationOptionsT {
                    axis: 3,
                    fused_activation_function: tfl::ActivationFunctionType::NONE
                });
                let options = tfl::BuiltinOptionsT::ConcatenationOptions(Box::new(o));
                let inputs = n.inputs.iter().map(|&t| at[t]).collect();
                wr.op(tfl::BuiltinOperator::CONCATENATION, inputs, y, options);
                y
            }
            _ => bail!("deploy node {k}: a weighted layer without its weights"),
        };
        at.push(y);
    }
    let output = *at.last().context("no layers")?;
    let codes = wr
        .codes
        .iter()
        .map(|&c| {
            with!(tfl::OperatorCodeT {
                deprecated_builtin_code: c.0.min(127) as i8,
                builtin_code: c,
                version: 1
            })
        })
        .collect();
    let subgraph = with!(tfl::SubGraphT {
        tensors: Some(wr.tensors),
        inputs: Some(vec![0]),
        outputs: Some(vec![output]),
        operators: Some(wr.ops),
        name: Some("main".into())
    });
    let model = with!(tfl::ModelT {
        version: 3,
        operator_codes: Some(codes),
        subgraphs: Some(vec![subgraph]),
        description: Some(format!("{name}: exported by tinymcu's trainer")),
        buffers: Some(wr.buffers)
    });
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let root = model.pack(&mut fbb);
    tfl::finish_model_buffer(&mut fbb, root);
    Ok(fbb.finished_data().to_vec())
}
