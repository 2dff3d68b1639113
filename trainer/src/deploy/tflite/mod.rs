//! The importer behind `trainer import`: a fully-int8 TensorFlow Lite flatbuffer to this
//! project's blob, computing what TensorFlow Lite Micro computes, byte for byte.
//!
//! The file is parsed and verified by the `flatbuffers` crate with code `flatc` generated from
//! TensorFlow Lite's published schema (crate `tflite-schema`). Each operator becomes one of the
//! runtime's layers with the parameters TFLM derives in its `Prepare` functions (the same
//! `double` arithmetic, in the same order), and the blob records [`Rounding::Double`], TFLite's
//! requantization. Anything the runtime cannot compute exactly is an error naming the operator,
//! its index in the graph and what is unsupported; nothing is written then.
//!
//! | TFLite | runtime layer |
//! | --- | --- |
//! | CONV_2D, DEPTHWISE_CONV_2D (+ a PAD before them) | `Conv2d`, `DepthwiseConv2d` |
//! | MAX_POOL_2D, AVERAGE_POOL_2D | `MaxPool2d`, `AvgPool2d` |
//! | FULLY_CONNECTED | `FullyConnected` |
//! | ADD, CONCATENATION (channels) | `Add`, `Concat` |
//! | MEAN (height and width) | `Mean` |
//! | SOFTMAX | `Softmax` |
//! | RESHAPE | none: a flatten is free in NHWC |
//! | QUANTIZE / DEQUANTIZE at the model's edges | the blob's input / output quantization |

use crate::deploy::prune::{prune_dead_channels, settle_dead_channels, PruneReport};
use crate::deploy::tflite::ops::{Converter, Val};
use crate::deploy::tflite::read::{activation, op_name, Graph};
use anyhow::{anyhow, bail, Context};
use runtime::format::{Head, TensorSpec};
use runtime::writer::OwnedModel;
use runtime::Rounding;
use std::collections::HashMap;
use tflite_schema as tfl;

pub mod compare;
pub mod ops;
pub mod read;
pub mod write;

pub use read::MAX_TFLITE_BYTES;

/// Import a `.tflite` file's bytes: the blob, with TensorFlow Lite's rounding, every layer and
/// channel as the file has them.
pub fn import(bytes: &[u8], name: &str) -> anyhow::Result<Vec<u8>> {
    Ok(import_with(bytes, name, false, &[])?.0)
}

/// What [`import_with`] did beyond converting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ImportNotes {
    pub pruned: PruneReport,
    /// Channels whose weights are all zero given the smallest stage with the same output
    /// ([`settle_dead_channels`]).
    pub settled: usize,
}

/// [`import`], then (with `prune`) exact dead-channel elimination
/// ([`crate::deploy::prune`]), and the smallest exact stage for the channels whose weights are
/// all zero ([`settle_dead_channels`]). A changed blob is checked against the converted one
/// on seeded inputs, byte for byte, before it is returned.
pub fn import_with(
    bytes: &[u8],
    name: &str,
    prune: bool,
    labels: &[String],
) -> anyhow::Result<(Vec<u8>, ImportNotes)> {
    let g = Graph::parse(bytes)?;
    let model = convert(&g, name, Rounding::Double)?;
    let model = if labels.is_empty() {
        model
    } else {
        match model.head.classes() {
            Some(n) if n as usize == labels.len() => model.with_labels(labels),
            Some(n) => bail!("{} class names for the model's {n} outputs", labels.len()),
            None => bail!(
                "class names for a model whose output is as long as its input (a \
                 reconstruction, read as values, not classes)"
            ),
        }
    };
    let full = model
        .write()
        .map_err(|e| anyhow!("the runtime refuses the converted model: {e}"))?;
    let (mut out, report) = if prune {
        prune_dead_channels(&model)?
    } else {
        (model, PruneReport::default())
    };
    let settled = settle_dead_channels(&mut out);
    if report.removed == 0 && settled == 0 {
        return Ok((full, ImportNotes::default()));
    }
    let blob = out
        .write()
        .map_err(|e| anyhow!("the runtime refuses the model without its dead channels: {e}"))?;
    same_outputs(&full, &blob, 4).context("dead-channel elimination changed the outputs")?;
    let pruned = if report.removed == 0 {
        PruneReport::default()
    } else {
        report
    };
    Ok((blob, ImportNotes { pruned, settled }))
}

/// Both blobs give the same bytes on `n` seeded random inputs (run by the host runtime and
/// compared as `trainer device` compares host and device: `a` in the "host" place).
pub(crate) fn same_outputs(a: &[u8], b: &[u8], n: usize) -> anyhow::Result<()> {
    use crate::deploy::device::{first_mismatch, host_outputs};
    use rand::{Rng, SeedableRng};
    let len = runtime::Model::from_bytes(a)
        .map_err(|e| anyhow!("{e}"))?
        .input_len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
    let xs: Vec<Vec<i8>> = (0..n)
        .map(|_| (0..len).map(|_| rng.gen()).collect())
        .collect();
    if let Some(m) = first_mismatch(&host_outputs(a, &xs)?, &host_outputs(b, &xs)?) {
        bail!("{m}");
    }
    Ok(())
}

/// The whole graph: the runtime's model definition, not yet validated.
pub(crate) fn convert(g: &Graph, name: &str, rounding: Rounding) -> anyhow::Result<OwnedModel> {
    let sg = g.subgraph();
    let (ins, outs) = (
        sg.inputs.as_deref().unwrap_or(&[]),
        sg.outputs.as_deref().unwrap_or(&[]),
    );
    let ([in_t], [out_t]) = (ins, outs) else {
        bail!(
            "{} inputs and {} outputs: one of each is supported",
            ins.len(),
            outs.len()
        );
    };
    let mut cv = Converter {
        g,
        vals: HashMap::new(),
        layers: Vec::new(),
        monotonic: false,
        shapes: Vec::new(),
        consumers: HashMap::new(),
        aliased: Default::default(),
    };
    for op in g.operators() {
        for &t in op.inputs.as_deref().unwrap_or(&[]) {
            *cv.consumers.entry(t).or_default() += 1;
        }
    }
    *cv.consumers.entry(*out_t).or_default() += 1;
    let ops = g.operators();
    // A float input quantized by the first operator: the model's input is that operator's
    // int8 output (the caller quantizes, as for every blob).
    let mut model_in = *in_t;
    let mut skip_first = false;
    if g.tensor(*in_t)?.t.type_ == tfl::TensorType::FLOAT32 {
        match ops.first() {
            Some(op)
                if g.builtin(op)? == tfl::BuiltinOperator::QUANTIZE
                    && cv.input(op, 0)? == *in_t =>
            {
                model_in = cv.output(op)?;
                skip_first = true;
            }
            _ => bail!("the model input is float32 and not quantized by a first QUANTIZE"),
        }
    }
    let (in_shape, in_q) = activation(&g.tensor(model_in)?).context("model input")?;
    cv.vals.insert(
        model_in,
        Val {
            id: 0,
            shape: in_shape,
            quant: in_q,
            pad: None,
        },
    );
    let mut model_out = *out_t;
    for (i, op) in ops.iter().enumerate().skip(usize::from(skip_first)) {
        let code = g.builtin(op).with_context(|| format!("operator #{i}"))?;
        let name = op_name(code);
        let r = match code {
            tfl::BuiltinOperator::CONV_2D => cv.conv(op, false),
            tfl::BuiltinOperator::DEPTHWISE_CONV_2D => cv.conv(op, true),
            tfl::BuiltinOperator::FULLY_CONNECTED => cv.fully_connected(op),
            tfl::BuiltinOperator::MAX_POOL_2D => cv.pool(op, true),
            tfl::BuiltinOperator::AVERAGE_POOL_2D => cv.pool(op, false),
            tfl::BuiltinOperator::ADD => cv.add(op),
            tfl::BuiltinOperator::CONCATENATION => cv.concat(op),
            tfl::BuiltinOperator::MEAN => cv.mean(op),
            tfl::BuiltinOperator::SOFTMAX => cv.softmax(op),
            tfl::BuiltinOperator::RESHAPE => cv.reshape(op),
            tfl::BuiltinOperator::PAD => cv.pad(op, i),
            tfl::BuiltinOperator::DEQUANTIZE
                if i + 1 == ops.len() && cv.output(op).ok() == Some(*out_t) =>
            {
                model_out = cv.input(op, 0)?;
                Ok(())
            }
            tfl::BuiltinOperator::QUANTIZE | tfl::BuiltinOperator::DEQUANTIZE => {
                Err(anyhow!("supported only at the model's input and output"))
            }
            _ => Err(anyhow!("this operator is not supported")),
        };
        r.with_context(|| format!("operator #{i} {name}"))?;
    }
    let last = cv
        .vals
        .get(&model_out)
        .copied()
        .ok_or_else(|| anyhow!("the model output is not produced by a supported operator"))?;
    if cv.layers.is_empty() || last.id as usize != cv.layers.len() {
        bail!("the model output must be the last operator's output");
    }
    if last.pad.is_some() {
        bail!("the model output is a PAD's output");
    }
    let out_shape = *cv.shapes.last().unwrap_or(&in_shape);
    // An output as long as the input is a reconstruction (MLPerf Tiny's anomaly-detection
    // autoencoder): values, not class logits.
    let head = if out_shape.bytes() == in_shape.bytes() {
        Head::Values {
            outputs: u32::try_from(out_shape.bytes()).context("output too long")?,
        }
    } else {
        Head::Classifier {
            classes: u16::try_from(out_shape.bytes()).context("more than 65535 outputs")?,
        }
    };
    Ok(OwnedModel {
        name: name.to_string(),
        input: TensorSpec {
            shape: in_shape,
            quant: in_q,
        },
        output: TensorSpec {
            shape: out_shape,
            quant: last.quant,
        },
        rounding,
        layers: cv.layers,
        head,
        labels: String::new(),
    })
}
