//! `trainer import` on hostile `.tflite` files: it must never panic, never build a blob the
//! runtime refuses, and every blob it builds must run.
//!
//! The first input byte picks a mode:
//! - even: the rest is the file, as bytes (the verifier, the identifier and size checks; seeded
//!   with real files, so libFuzzer's byte mutations start from valid flatbuffers);
//! - odd: the rest is a list of decisions that mutate a real model through the flatbuffer
//!   object API (a dimension, a quantization, a tensor type, a buffer, an operator's tensors,
//!   its code or options, the graph's inputs and outputs, the operator order), which is then
//!   written back as a valid flatbuffer, so the mutations reach the converter's checks instead
//!   of stopping at the verifier.
//!
//! Run from `trainer/` (`cargo install cargo-fuzz`; the corpus is git-ignored, the seeds are
//! written by `scripts/fuzz-import.sh`, which runs the whole campaign):
//! `cargo +nightly fuzz run -O -a -s none import fuzz/corpus fuzz/seeds -- -runs=10000000`
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tflite_schema as tfl;

/// Real models: TFLite converter output for the project's fixtures (plain convolutions and
/// pools, depthwise, a residual add, a concatenation) and MLPerf Tiny's keyword spotting.
static FILES: [&[u8]; 5] = [
    include_bytes!("../../tests/fixtures/tflite/ref-cnn.tflite"),
    include_bytes!("../../tests/fixtures/tflite/mobilenet.tflite"),
    include_bytes!("../../tests/fixtures/tflite/residual.tflite"),
    include_bytes!("../../tests/fixtures/tflite/concat.tflite"),
    include_bytes!("../../tests/fixtures/mlperf/kws_ref_model.tflite"),
];

fn models() -> &'static [tfl::ModelT] {
    static MODELS: OnceLock<Vec<tfl::ModelT>> = OnceLock::new();
    MODELS.get_or_init(|| {
        FILES
            .iter()
            .map(|b| tfl::root_as_model(b).expect("a fixture").unpack())
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check(rest);
    } else if let Ok(bytes) = mutated(rest) {
        check(&bytes);
    }
});

/// The properties: import (with dead-channel elimination, as `trainer import` runs it)
/// returns an error or a blob, and never because elimination changed the outputs; a blob
/// loads and runs.
fn check(bytes: &[u8]) {
    let blob = match trainer::deploy::tflite::import_with(bytes, "fuzz", true) {
        Ok((blob, _)) => blob,
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!msg.contains("changed the outputs"), "{msg}");
            return;
        }
    };
    let model = runtime::Model::from_bytes(&blob).expect("an imported blob loads");
    // Big models run in the test suite; here, breadth.
    if model.arena_bytes() > 1 << 18 || model.macs() > 400_000 {
        return;
    }
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut it = runtime::Interpreter::new(&model, &mut arena).expect("its planned arena fits");
    for (i, x) in it.input_mut().iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(37) as i8;
    }
    it.invoke().expect("an imported model runs");
}

fn mutated(rest: &[u8]) -> Result<Vec<u8>> {
    let mut u = Unstructured::new(rest);
    let mut m = models()[u.choose_index(FILES.len())?].clone();
    for _ in 0..u.int_in_range(1..=4u8)? {
        mutate(&mut u, &mut m)?;
    }
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let root = m.pack(&mut fbb);
    tfl::finish_model_buffer(&mut fbb, root);
    Ok(fbb.finished_data().to_vec())
}

/// A value that is usually interesting for a dimension, index or field.
fn int(u: &mut Unstructured) -> Result<i32> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => 0,
        1 => 1,
        2 => -1,
        3 => i32::MAX,
        4 => i32::MIN,
        5 => u.int_in_range(2..=16)?,
        6 => u.int_in_range(-16..=-2)?,
        7 => 1 << u.int_in_range(8..=30)?,
        8 => u.int_in_range(17..=300)?,
        _ => u.arbitrary()?,
    })
}

fn float(u: &mut Unstructured) -> Result<f32> {
    Ok(match u.int_in_range(0..=8u8)? {
        0 => 0.0,
        1 => -1.0,
        2 => f32::NAN,
        3 => f32::INFINITY,
        4 => f32::MIN_POSITIVE,
        5 => f32::MAX,
        6 => 1e-9,
        7 => u.int_in_range(1..=1000)? as f32 * 1e-3,
        _ => u.arbitrary()?,
    })
}

fn pick<'a, T>(u: &mut Unstructured, v: &'a mut Option<Vec<T>>) -> Result<Option<&'a mut T>> {
    match v.as_mut() {
        Some(v) if !v.is_empty() => {
            let i = u.choose_index(v.len())?;
            Ok(v.get_mut(i))
        }
        _ => Ok(None),
    }
}

/// Change, add or remove one entry of a list of tensor indices or dimensions.
fn edit_list(u: &mut Unstructured, v: &mut Option<Vec<i32>>) -> Result<()> {
    let list = v.get_or_insert_with(Vec::new);
    match u.int_in_range(0..=3u8)? {
        0 if !list.is_empty() => {
            let i = u.choose_index(list.len())?;
            list.remove(i);
        }
        1 => list.push(int(u)?),
        _ if !list.is_empty() => {
            let i = u.choose_index(list.len())?;
            list[i] = int(u)?;
        }
        _ => {}
    }
    Ok(())
}

const CODES: [tfl::BuiltinOperator; 14] = [
    tfl::BuiltinOperator::CONV_2D,
    tfl::BuiltinOperator::DEPTHWISE_CONV_2D,
    tfl::BuiltinOperator::FULLY_CONNECTED,
    tfl::BuiltinOperator::MAX_POOL_2D,
    tfl::BuiltinOperator::AVERAGE_POOL_2D,
    tfl::BuiltinOperator::ADD,
    tfl::BuiltinOperator::CONCATENATION,
    tfl::BuiltinOperator::MEAN,
    tfl::BuiltinOperator::SOFTMAX,
    tfl::BuiltinOperator::RESHAPE,
    tfl::BuiltinOperator::PAD,
    tfl::BuiltinOperator::QUANTIZE,
    tfl::BuiltinOperator::DEQUANTIZE,
    tfl::BuiltinOperator::CUSTOM,
];

fn activation(u: &mut Unstructured) -> Result<tfl::ActivationFunctionType> {
    Ok(tfl::ActivationFunctionType(u.int_in_range(-1..=6)?))
}

fn padding(u: &mut Unstructured) -> Result<tfl::Padding> {
    Ok(tfl::Padding(u.int_in_range(-1..=2)?))
}

/// One mutation of the model's structure or numbers.
fn mutate(u: &mut Unstructured, m: &mut tfl::ModelT) -> Result<()> {
    let n_tensors = m.subgraphs.as_ref().map_or(0, |s| {
        s.first()
            .and_then(|g| g.tensors.as_ref())
            .map_or(0, |t| t.len())
    });
    let Some(sg) = m.subgraphs.as_mut().and_then(|s| s.first_mut()) else {
        return Ok(());
    };
    match u.int_in_range(0..=12u8)? {
        // A tensor's shape.
        0 | 1 => {
            if let Some(t) = pick(u, &mut sg.tensors)? {
                edit_list(u, &mut t.shape)?;
                if u.ratio(1, 4)? {
                    t.shape_signature = None;
                }
            }
        }
        // Its quantization: scales, zero points, their counts, the channel axis.
        2 | 3 => {
            if let Some(t) = pick(u, &mut sg.tensors)? {
                let q = t.quantization.get_or_insert_with(Default::default);
                match u.int_in_range(0..=4u8)? {
                    0 => {
                        if let Some(s) = pick(u, &mut q.scale)? {
                            *s = float(u)?;
                        }
                    }
                    1 => {
                        if let Some(z) = pick(u, &mut q.zero_point)? {
                            *z = i64::from(int(u)?);
                        }
                    }
                    2 => {
                        let n = u.int_in_range(0..=3usize)?;
                        q.scale.get_or_insert_with(Vec::new).truncate(n);
                    }
                    3 => q.quantized_dimension = int(u)?,
                    _ => t.quantization = None,
                }
            }
        }
        // Its type, or which buffer holds it.
        4 => {
            if let Some(t) = pick(u, &mut sg.tensors)? {
                if u.arbitrary()? {
                    t.type_ = tfl::TensorType(u.int_in_range(-1..=20)?);
                } else {
                    t.buffer = u.int_in_range(0..=n_tensors as u32 + 2)?;
                }
            }
        }
        // A buffer's bytes: shorter, longer, or one byte changed.
        5 => {
            if let Some(b) = pick(u, &mut m.buffers)? {
                let data = b.data.get_or_insert_with(Vec::new);
                match u.int_in_range(0..=2u8)? {
                    0 => data.truncate(u.int_in_range(0..=data.len())?),
                    1 => data.extend(std::iter::repeat_n(0x7f, u.int_in_range(1..=64)?)),
                    _ if !data.is_empty() => {
                        let i = u.choose_index(data.len())?;
                        data[i] = u.arbitrary()?;
                    }
                    _ => {}
                }
            }
        }
        // An operator's input or output tensors.
        6 | 7 => {
            if let Some(op) = pick(u, &mut sg.operators)? {
                if u.arbitrary()? {
                    edit_list(u, &mut op.inputs)?;
                } else {
                    edit_list(u, &mut op.outputs)?;
                }
            }
        }
        // An operator's code.
        8 => {
            if u.arbitrary()? {
                if let Some(op) = pick(u, &mut sg.operators)? {
                    op.opcode_index = u.int_in_range(0..=8)?;
                }
            } else if let Some(c) = pick(u, &mut m.operator_codes)? {
                let code = *u.choose(&CODES)?;
                c.builtin_code = code;
                c.deprecated_builtin_code = code.0.min(127) as i8;
            }
        }
        // An operator's options.
        9 | 10 => {
            if let Some(op) = pick(u, &mut sg.operators)? {
                options(u, &mut op.builtin_options)?;
            }
        }
        // The graph's inputs and outputs.
        11 => {
            if u.arbitrary()? {
                edit_list(u, &mut sg.inputs)?;
            } else {
                edit_list(u, &mut sg.outputs)?;
            }
        }
        // The operator order: drop, duplicate or swap.
        _ => {
            if let Some(ops) = sg.operators.as_mut().filter(|o| !o.is_empty()) {
                let i = u.choose_index(ops.len())?;
                let j = u.choose_index(ops.len())?;
                match u.int_in_range(0..=2u8)? {
                    0 => drop(ops.remove(i)),
                    1 => {
                        let op = ops[i].clone();
                        ops.insert(j, op);
                    }
                    _ => ops.swap(i, j),
                }
            }
        }
    }
    Ok(())
}

fn options(u: &mut Unstructured, o: &mut tfl::BuiltinOptionsT) -> Result<()> {
    use tfl::BuiltinOptionsT as B;
    let k = u.int_in_range(0..=5u8)?;
    match o {
        B::Conv2DOptions(c) => match k {
            0 => c.stride_w = int(u)?,
            1 => c.stride_h = int(u)?,
            2 => c.padding = padding(u)?,
            3 => c.fused_activation_function = activation(u)?,
            4 => c.dilation_w_factor = int(u)?,
            _ => c.dilation_h_factor = int(u)?,
        },
        B::DepthwiseConv2DOptions(c) => match k {
            0 => c.stride_w = int(u)?,
            1 => c.stride_h = int(u)?,
            2 => c.padding = padding(u)?,
            3 => c.fused_activation_function = activation(u)?,
            4 => c.depth_multiplier = int(u)?,
            _ => c.dilation_h_factor = int(u)?,
        },
        B::Pool2DOptions(p) => match k {
            0 => p.stride_w = int(u)?,
            1 => p.stride_h = int(u)?,
            2 => p.padding = padding(u)?,
            3 => p.fused_activation_function = activation(u)?,
            4 => p.filter_width = int(u)?,
            _ => p.filter_height = int(u)?,
        },
        B::FullyConnectedOptions(f) => match k {
            0 | 1 => f.fused_activation_function = activation(u)?,
            2 => f.keep_num_dims = u.arbitrary()?,
            _ => f.weights_format = tfl::FullyConnectedOptionsWeightsFormat(u.int_in_range(-1..=2)?),
        },
        B::ConcatenationOptions(c) => match k {
            0..=2 => c.axis = int(u)?,
            _ => c.fused_activation_function = activation(u)?,
        },
        B::AddOptions(a) => a.fused_activation_function = activation(u)?,
        B::SoftmaxOptions(s) => s.beta = float(u)?,
        B::ReshapeOptions(r) => edit_list(u, &mut r.new_shape)?,
        B::ReducerOptions(r) => r.keep_dims = u.arbitrary()?,
        _ => {}
    }
    if k == 5 && u.ratio(1, 8)? {
        *o = B::NONE;
    }
    Ok(())
}
