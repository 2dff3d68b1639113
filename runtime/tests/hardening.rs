//! A blob is input from outside: one whose checksum is valid can still say anything. These are
//! the defects an adversarial search found (each test failed before its fix), the documented
//! resource limits, and a structure-aware search of its own: decoded models of every layer
//! kind and head, mutated field by field, re-encoded with a valid preamble, loaded, run in
//! arenas around the size they need and decoded. Nothing may panic (these tests build with
//! overflow checks), and whatever loads must run within its arena.

use proptest::prelude::*;
use runtime::format::{
    Add, Conv2d, FullyConnected, Head, Layer, Mean, ModelDef, Node, OutputStage, Padding, Pool2d,
    Preamble, Shape, Softmax, TensorSpec, FORMAT_VERSION, MAX_ARENA_BYTES, MAX_MACS,
    MAX_TENSOR_BYTES, MAX_WORK,
};
use runtime::kernels::AddParams;
use runtime::writer::{encode_i32s, encode_i8s, encode_requants};
use runtime::{crc32, Error, Interpreter, Model, QuantParams, Requant};

fn spec(h: u16, w: u16, c: u16, scale: f32, zp: i32) -> TensorSpec {
    TensorSpec {
        shape: Shape::new(h, w, c),
        quant: QuantParams {
            scale,
            zero_point: zp,
        },
    }
}

fn one_layer<'a>(
    input: TensorSpec,
    layer: Layer<'a>,
    output: TensorSpec,
    head: Head,
) -> ModelDef<'a> {
    let mut layers = heapless::Vec::new();
    let _ = layers.push(Node::chained(0, layer));
    ModelDef {
        rounding: runtime::Rounding::Single,
        name: "t",
        input,
        output,
        layers,
        head,
        labels: "",
    }
}

/// Encodes `def` with a valid preamble whatever it says (CRC, length and the arena the
/// analysis would plan, or `arena` when the analysis refuses): what an adversary can write.
fn forge(def: &ModelDef, arena: Option<u32>) -> Vec<u8> {
    let payload = postcard::to_allocvec(def).unwrap();
    let planned = runtime::analyze(def).ok().map(|a| a.arena_bytes as u32);
    let pre = Preamble {
        version: FORMAT_VERSION,
        arena_bytes: arena.or(planned).unwrap_or(0),
        payload_len: payload.len() as u32,
        crc32: crc32(&payload),
    };
    let mut out = pre.to_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Loads, runs in arenas of the needed size (and one byte less), decodes. Never panics.
fn exercise(bytes: &[u8]) -> Result<(), Error> {
    let m = Model::from_bytes(bytes)?;
    let need = m.arena_bytes();
    assert!(need <= MAX_ARENA_BYTES as usize);
    assert!(m.macs() <= MAX_MACS as usize);
    let mut arena = vec![0x5au8; need + 8];
    if need > 0 {
        assert!(matches!(
            Interpreter::new(&m, &mut arena[..need - 1]),
            Err(Error::ArenaTooSmall { .. })
        ));
    }
    for fill in [i8::MIN, 0, i8::MAX] {
        let mut it = Interpreter::new(&m, &mut arena[..need])?;
        it.input_mut().fill(fill);
        it.invoke().unwrap();
        let out = it.output().to_vec();
        if let Some(d) = m.box_decoder() {
            let b = d.decode(&out).bbox;
            assert!(b.x0 <= b.x1 && b.y0 <= b.y1 && b.x0 >= 0 && b.y0 >= 0);
        }
        if let Some(d) = m.grid_decoder() {
            for det in d.decode(&out) {
                let s = m.def().input.shape;
                let b = det.bbox;
                assert!(
                    b.x0 >= 0 && b.y0 >= 0 && b.x1 <= s.w as i32 * 16 && b.y1 <= s.h as i32 * 16
                );
            }
        }
    }
    Ok(())
}

/// Defect 1: an average pool with padding made `analyze` pass `usize::MAX` as padding and the
/// pool geometry multiply it by 2 ("attempt to multiply with overflow").
#[test]
fn average_pool_with_padding_is_an_error_not_an_overflow() {
    let def = one_layer(
        spec(28, 28, 1, 0.01, 0),
        Layer::AvgPool2d(Pool2d::square(2, 127, 254)),
        spec(1, 1, 1, 0.01, 0),
        Head::Classifier { classes: 1 },
    );
    let e = Model::from_bytes(&forge(&def, Some(1000))).unwrap_err();
    assert!(matches!(e, Error::BadParameter { layer: 0, .. }), "{e:?}");
    assert!(e.to_string().contains("padding"), "{e}");
}

/// A 2x2 grid detector (1x1 conv) whose output scale is `scale`.
fn grid_def<'a>(bias: &'a [u8], rq: &'a [u8], w: &'a [u8], scale: f32) -> ModelDef<'a> {
    one_layer(
        spec(8, 8, 1, 1.0 / 255.0, -128),
        Layer::Conv2d(Conv2d {
            in_channels: 1,
            out_channels: 7,
            kernel_h: 1,
            kernel_w: 1,
            stride_h: 4,
            stride_w: 4,
            padding: Padding::uniform(0),
            input_zero_point: -128,
            output: OutputStage {
                zero_point: 0,
                act_min: -128,
                act_max: 127,
                bias,
                requant: rq,
            },
            weights: w,
            pool: None,
        }),
        spec(2, 2, 7, scale, 0),
        Head::GridDetector {
            classes: 2,
            cell: 4,
            obj_threshold: -128,
            nms_iou_pct: 50,
            max_detections: 16,
        },
    )
}

/// Defect 2: with a large output scale the grid decoder's box arithmetic overflowed i32
/// (`cx - (w >> 1)`, `x0 + w`); in release it returned a garbage box.
#[test]
fn grid_decoder_survives_huge_output_scales() {
    let bias = encode_i32s(&[1 << 29, 1 << 29, -(1 << 29), 1 << 29, 1 << 29, 0, 0]);
    let rq = encode_requants(&[Requant::from_real(0.5).unwrap(); 7]);
    let w = encode_i8s(&[127; 7]);
    for scale in [1.0e6f32, 5.25e5, 3.0e9, 1.0e-3] {
        let def = grid_def(&bias, &rq, &w, scale);
        match exercise(&forge(&def, None)) {
            Ok(()) | Err(Error::BadDetectionHead { .. }) => {}
            Err(e) => panic!("scale {scale}: {e:?}"),
        }
    }
    // The decoder alone, on every extreme output byte pattern.
    let def = grid_def(&bias, &rq, &w, 1.0e6);
    let blob = forge(&def, None);
    let m = Model::from_bytes(&blob).unwrap();
    let d = m.grid_decoder().unwrap();
    for cell in [
        [127i8, 127, 127, 127, 127, 0, 0],
        [127, -128, -128, 127, 127, 1, 0],
    ] {
        let out: Vec<i8> = cell.iter().cycle().take(28).copied().collect();
        for det in d.decode(&out) {
            let b = det.bbox;
            assert!(0 <= b.x0 && b.x0 <= b.x1 && b.x1 <= 8 * 16, "{b:?}");
            assert!(0 <= b.y0 && b.y0 <= b.y1 && b.y1 <= 8 * 16, "{b:?}");
        }
    }
}

/// Defect 3: global average pooling summed in i32 without the bound its comment claimed: a
/// 4113x4113x1 all-127 input returned 126 in release and panicked in debug. Such a tensor is
/// now over the documented limit, and the largest accepted one sums exactly.
#[test]
fn global_average_pool_bound_holds() {
    let def = one_layer(
        spec(4113, 4113, 1, 0.01, 0),
        Layer::GlobalAvgPool,
        spec(1, 1, 1, 0.01, 0),
        Head::Classifier { classes: 1 },
    );
    assert!(Model::from_bytes(&forge(&def, Some(20_000_000))).is_err());
    // 4096 x 4096 = 2^24 pixels of 127: the sum is 2^24 * 127 < 2^31.
    let def = one_layer(
        spec(4096, 4096, 1, 0.01, 0),
        Layer::GlobalAvgPool,
        spec(1, 1, 1, 0.01, 0),
        Head::Classifier { classes: 1 },
    );
    let blob = forge(&def, None);
    let m = Model::from_bytes(&blob).unwrap();
    let mut arena = vec![0u8; m.arena_bytes()];
    let mut it = Interpreter::new(&m, &mut arena).unwrap();
    it.input_mut().fill(127);
    it.invoke().unwrap();
    assert_eq!(it.output(), &[127]);
}

/// Defect 4: sizes were `usize` products, so on the 32-bit device a 32768x32769x4 input
/// wrapped to 131,072 bytes and loaded with a small arena. Every size is now computed in 64
/// bits and checked against limits that are the same on every target.
#[test]
fn sizes_that_wrap_on_32_bits_are_refused_everywhere() {
    let def = one_layer(
        spec(32768, 32769, 4, 0.01, 0),
        Layer::GlobalAvgPool,
        spec(1, 1, 4, 0.01, 0),
        Head::Classifier { classes: 4 },
    );
    for arena in [Some(131_072 + 4), Some(0), None] {
        let e = Model::from_bytes(&forge(&def, arena)).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }
}

/// Defect 5: no resource bounds (an 83-byte blob with a 3 GB arena, a model with 1.5e13 MACs)
/// and NaN, 0, negative and infinite scales accepted.
#[test]
fn resource_limits_and_scales() {
    // Arena over the limit, declared by a tiny model: the header must match the plan.
    let def = one_layer(
        spec(4, 4, 1, 0.01, 0),
        Layer::GlobalAvgPool,
        spec(1, 1, 1, 0.01, 0),
        Head::Classifier { classes: 1 },
    );
    assert!(matches!(
        Model::from_bytes(&forge(&def, Some(3_221_225_472))),
        Err(Error::ArenaMismatch { .. })
    ));
    // MACs over the limit: a 1x1 conv of 2048 -> 65535 channels on 128x128 is 1.8e13 MACs,
    // with arrays of the right length (the weight array alone would be 128 MiB, so the limit
    // must trip before any length check reads it: lengths are compared, never allocated).
    let w = vec![0u8; 16];
    let def = one_layer(
        spec(128, 128, 2048, 0.01, 0),
        Layer::Conv2d(Conv2d {
            in_channels: 2048,
            out_channels: 65535,
            kernel_h: 1,
            kernel_w: 1,
            stride_h: 1,
            stride_w: 1,
            padding: Padding::uniform(0),
            input_zero_point: 0,
            output: OutputStage {
                zero_point: 0,
                act_min: -128,
                act_max: 127,
                bias: &w,
                requant: &w,
            },
            weights: &w,
            pool: None,
        }),
        spec(128, 128, 65535, 0.01, 0),
        Head::Classifier { classes: 1 },
    );
    let e = Model::from_bytes(&forge(&def, Some(1 << 20))).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    // Scales.
    for bad in [
        f32::NAN,
        0.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE / 4.0,
    ] {
        for which in 0..2 {
            let mut d = one_layer(
                spec(4, 4, 1, 0.01, 0),
                Layer::GlobalAvgPool,
                spec(1, 1, 1, 0.01, 0),
                Head::Classifier { classes: 1 },
            );
            if which == 0 {
                d.input.quant.scale = bad;
            } else {
                d.output.quant.scale = bad;
            }
            let e = Model::from_bytes(&forge(&d, None)).unwrap_err();
            assert!(e.to_string().contains("scale"), "{bad} ({which}): {e}");
        }
    }
    assert_eq!(MAX_TENSOR_BYTES, 1 << 24);
}

// ---- structure-aware search ------------------------------------------------------------------

/// Owned arrays for a model of every layer kind.
struct Arrays {
    w: Vec<u8>,
    b: Vec<u8>,
    r: Vec<u8>,
}

fn arrays(n: usize) -> Arrays {
    let rq = Requant::from_real(0.004).unwrap();
    Arrays {
        w: (0..n * 64).map(|i| (i * 37 % 251) as u8).collect(),
        b: encode_i32s(&(0..n as i32).map(|i| i * 97 - 300).collect::<Vec<_>>()),
        r: encode_requants(&vec![rq; n]),
    }
}

#[derive(Debug, Clone)]
struct Mutation {
    /// Which base model.
    base: usize,
    /// (field selector, value) pairs applied in order.
    edits: Vec<(u8, i64)>,
}

fn stage(a: &Arrays, n: usize) -> OutputStage<'_> {
    OutputStage {
        zero_point: -128,
        act_min: -128,
        act_max: 127,
        bias: &a.b[..4 * n],
        requant: &a.r[..8 * n],
    }
}

#[allow(clippy::too_many_arguments)]
fn conv<'a>(
    a: &'a Arrays,
    ic: u16,
    oc: u16,
    k: u8,
    s: u8,
    p: u8,
    dw: bool,
    pool: Option<Pool2d>,
) -> Layer<'a> {
    let taps = k as usize * k as usize * if dw { 1 } else { ic as usize };
    let n = if dw { ic as usize } else { oc as usize };
    let c = Conv2d {
        in_channels: ic,
        out_channels: oc,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        padding: Padding::uniform(p),
        input_zero_point: -128,
        output: stage(a, n),
        weights: &a.w[..taps * n.max(1)],
        pool,
    };
    if dw {
        Layer::DepthwiseConv2d(c)
    } else {
        Layer::Conv2d(c)
    }
}

/// Base models: every layer kind, a graph with add and concat, a localizer and a grid head.
fn base<'a>(a: &'a Arrays, which: usize) -> ModelDef<'a> {
    let mut layers = heapless::Vec::new();
    let pool = Pool2d::square;
    let add = AddParams::from_scales(0.05, -128, 0.05, -128, 0.1, -128, -128, 127).unwrap();
    let (input, output, head) = match which {
        0 => {
            // conv+pool, depthwise, max-pool (padded), avg-pool, GAP, FC
            for n in [
                Node::chained(0, conv(a, 1, 4, 3, 1, 1, false, Some(pool(2, 2, 0)))),
                Node::chained(1, conv(a, 4, 4, 3, 1, 1, true, None)),
                Node::chained(2, Layer::MaxPool2d(pool(3, 1, 1))),
                Node::chained(3, Layer::AvgPool2d(pool(2, 2, 0))),
                Node::chained(4, Layer::GlobalAvgPool),
                Node::chained(
                    5,
                    Layer::FullyConnected(FullyConnected {
                        in_features: 4,
                        out_features: 3,
                        input_zero_point: -128,
                        output: stage(a, 3),
                        weights: &a.w[..12],
                    }),
                ),
            ] {
                let _ = layers.push(n);
            }
            (
                spec(8, 8, 1, 1.0 / 255.0, -128),
                spec(1, 1, 3, 0.1, -128),
                Head::Classifier { classes: 3 },
            )
        }
        1 => {
            // residual add and concat
            let inputs = |v: &[u8], l| Node {
                inputs: heapless::Vec::from_slice(v).unwrap(),
                layer: l,
            };
            for n in [
                inputs(&[0], conv(a, 1, 4, 3, 1, 1, false, None)),
                inputs(&[1], conv(a, 4, 4, 1, 1, 0, false, None)),
                inputs(
                    &[2, 1],
                    Layer::Add(Add {
                        input_zero_points: [-128, -128],
                        zero_point: -128,
                        act_min: -128,
                        act_max: 127,
                        requant: [add.rq_a, add.rq_b, add.rq_out],
                    }),
                ),
                inputs(&[3, 1], Layer::Concat),
            ] {
                let _ = layers.push(n);
            }
            (
                spec(6, 6, 1, 1.0 / 255.0, -128),
                spec(6, 6, 8, 0.1, -128),
                Head::Classifier { classes: 288 },
            )
        }
        2 => {
            let _ = layers.push(Node::chained(
                0,
                conv(a, 1, 6, 3, 2, 1, false, Some(pool(2, 2, 0))),
            ));
            let _ = layers.push(Node::chained(
                1,
                Layer::FullyConnected(FullyConnected {
                    in_features: 24,
                    out_features: 6,
                    input_zero_point: -128,
                    output: stage(a, 6),
                    weights: &a.w[..144],
                }),
            ));
            (
                spec(8, 8, 1, 1.0 / 255.0, -128),
                spec(1, 1, 6, 0.5, -128),
                Head::Localizer { classes: 2 },
            )
        }
        3 => {
            let _ = layers.push(Node::chained(0, conv(a, 1, 7, 3, 4, 1, false, None)));
            (
                spec(8, 8, 1, 1.0 / 255.0, -128),
                spec(2, 2, 7, 0.4, -128),
                Head::GridDetector {
                    classes: 2,
                    cell: 4,
                    obj_threshold: 0,
                    nms_iou_pct: 50,
                    max_detections: 4,
                },
            )
        }
        _ => {
            // What an imported .tflite model uses: TensorFlow Lite's rounding, SAME padding
            // below and right only, its mean and its softmax.
            let mut c0 = conv(a, 1, 4, 3, 2, 0, false, None);
            if let Layer::Conv2d(c) = &mut c0 {
                c.padding = Padding {
                    top: 0,
                    left: 0,
                    bottom: 1,
                    right: 1,
                };
            }
            let rq = Requant {
                multiplier: 1_500_000_000,
                shift: -3,
            };
            for n in [
                Node::chained(0, c0),
                Node::chained(1, conv(a, 4, 4, 3, 1, 1, true, None)),
                Node::chained(
                    2,
                    Layer::Mean(Mean {
                        input_zero_point: -128,
                        zero_point: -128,
                        requant: rq,
                    }),
                ),
                Node::chained(
                    3,
                    Layer::FullyConnected(FullyConnected {
                        in_features: 4,
                        out_features: 3,
                        input_zero_point: -128,
                        output: stage(a, 3),
                        weights: &a.w[..12],
                    }),
                ),
                Node::chained(
                    4,
                    Layer::Softmax(Softmax {
                        input_multiplier: 1 << 30,
                        input_left_shift: 20,
                        diff_min: -31,
                    }),
                ),
            ] {
                let _ = layers.push(n);
            }
            (
                spec(8, 8, 1, 1.0 / 255.0, -128),
                spec(1, 1, 3, 1.0 / 256.0, -128),
                Head::Classifier { classes: 3 },
            )
        }
    };
    let rounding = if which == 4 {
        runtime::Rounding::Double
    } else {
        runtime::Rounding::Single
    };
    ModelDef {
        rounding,
        name: "base",
        input,
        output,
        layers,
        head,
        labels: "",
    }
}

fn pick<T: Copy>(v: i64, choices: &[T]) -> T {
    choices[(v.unsigned_abs() as usize) % choices.len()]
}

/// Applies one edit; field selectors cover every numeric field of every layer kind, the specs
/// and the heads.
fn edit(def: &mut ModelDef, (sel, v): (u8, i64)) {
    let n = def.layers.len();
    let k = (v.unsigned_abs() as usize / 7) % n.max(1);
    let u8v = pick(v, &[0u8, 1, 2, 3, 4, 7, 8, 127, 128, 254, 255]);
    let u16v = pick(v, &[0u16, 1, 2, 3, 4, 8, 255, 4096, 32768, 65535]);
    let i8v = pick(v, &[i8::MIN, -127, -1, 0, 1, 22, 127]);
    let f = pick(
        v,
        &[
            f32::NAN,
            0.0,
            -1.0,
            1e-30,
            1e-3,
            0.5,
            16.0,
            1e6,
            3e9,
            f32::INFINITY,
        ],
    );
    match sel % 16 {
        0 => def.input.shape.h = u16v,
        1 => def.input.shape.w = u16v,
        2 => def.input.shape.c = u16v,
        3 => def.output.shape.c = u16v,
        4 => def.input.quant.scale = f,
        5 => def.output.quant.scale = f,
        6 => def.output.quant.zero_point = v as i32 % 300,
        7 => {
            def.head = match def.head {
                Head::GridDetector { classes, .. } => Head::GridDetector {
                    classes,
                    cell: u8v,
                    obj_threshold: i8v,
                    nms_iou_pct: u8v,
                    max_detections: u8v,
                },
                Head::Localizer { .. } => Head::Localizer { classes: u16v },
                Head::Classifier { .. } => Head::Classifier { classes: u16v },
                Head::Values { .. } => Head::Values {
                    outputs: u16v as u32,
                },
            }
        }
        8 => {
            if let Some(node) = def.layers.get_mut(k) {
                node.inputs.clear();
                let _ = node.inputs.push(u8v % 8);
                if v % 3 == 0 {
                    let _ = node.inputs.push(u8v % 5);
                }
            }
        }
        sel => {
            let Some(node) = def.layers.get_mut(k) else {
                return;
            };
            match &mut node.layer {
                Layer::Conv2d(c) | Layer::DepthwiseConv2d(c) => match sel {
                    9 => c.kernel_h = u8v,
                    10 => c.stride_h = u8v,
                    11 => {
                        c.padding = Padding {
                            top: u8v,
                            left: (v >> 8) as u8,
                            bottom: (v >> 16) as u8,
                            right: (v >> 24) as u8,
                        }
                    }
                    12 => c.out_channels = u16v,
                    13 => {
                        c.pool = Some(Pool2d::square(
                            u8v,
                            pick(v / 3, &[1u8, 2, 127]),
                            pick(v / 5, &[0u8, 1, 254]),
                        ))
                    }
                    14 => c.output.act_min = i8v,
                    _ => c.input_zero_point = i8v,
                },
                Layer::MaxPool2d(p) | Layer::AvgPool2d(p) => match sel {
                    9 => p.kernel_h = u8v,
                    12 => p.kernel_w = u8v,
                    10 => p.stride_h = u8v,
                    13 => p.stride_w = u8v,
                    _ => p.padding = u8v,
                },
                Layer::FullyConnected(fc) => match sel {
                    9 | 12 => fc.out_features = u16v,
                    10 | 13 => fc.in_features = u16v as u32,
                    _ => fc.input_zero_point = i8v,
                },
                Layer::Add(a) => match sel {
                    9 => a.requant[0].shift = v as i32 % 64,
                    10 => a.requant[2].multiplier = v as i32,
                    11 => a.act_min = i8v,
                    _ => a.input_zero_points[1] = i8v,
                },
                Layer::Mean(m) => match sel {
                    9 | 12 => m.requant.multiplier = v as i32,
                    10 | 13 => m.requant.shift = v as i32 % 64,
                    _ => m.input_zero_point = i8v,
                },
                Layer::Softmax(s) => match sel {
                    9 | 12 => s.input_left_shift = v as i32 % 64,
                    10 | 13 => s.diff_min = v as i32 % 512,
                    _ => s.input_multiplier = v as i32,
                },
                Layer::GlobalAvgPool | Layer::Concat => {}
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        0usize..5,
        proptest::collection::vec((any::<u8>(), any::<i64>()), 1..3),
    )
        .prop_map(|(base, edits)| Mutation { base, edits })
}

#[test]
fn base_models_load_and_run() {
    let a = arrays(8);
    for which in 0..5 {
        let def = base(&a, which);
        exercise(&forge(&def, None)).unwrap_or_else(|e| panic!("base {which}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Mutated models with valid checksums: an error or a model that runs, never a panic.
    #[test]
    fn mutated_models_never_panic(m in mutation(), arena_delta in -2i64..3) {
        let a = arrays(8);
        let mut def = base(&a, m.base);
        for &e in &m.edits {
            edit(&mut def, e);
        }
        // The planned arena, or a nearby lie about it.
        let planned = runtime::analyze(&def).ok().map(|x| x.arena_bytes as i64);
        let declared = planned.map(|p| (p + arena_delta).max(0) as u32);
        let _ = exercise(&forge(&def, declared));
    }
}

/// The search must reach the kernels, not just the validator: a good share of mutated models
/// loads and runs (the fuzz target reached `invoke` for 24 of 332 inputs), and every
/// layer kind and both decoders run among them.
#[test]
fn mutations_reach_every_kernel_and_decoder() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let a = arrays(8);
    let mut runner = TestRunner::deterministic();
    let (mut ran, mut total) = (0, 0);
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..4000 {
        let m = mutation().new_tree(&mut runner).unwrap().current();
        let mut def = base(&a, m.base);
        for &e in &m.edits {
            edit(&mut def, e);
        }
        total += 1;
        let blob = forge(&def, None);
        if exercise(&blob).is_ok() {
            ran += 1;
            let model = Model::from_bytes(&blob).unwrap();
            for info in model.layer_info() {
                kinds.insert(info.step.name());
            }
            if model.box_decoder().is_some() {
                kinds.insert("BoxDecoder");
            }
            if model.grid_decoder().is_some() {
                kinds.insert("GridDecoder");
            }
        }
    }
    assert!(
        ran * 10 >= total,
        "only {ran} of {total} mutated models ran"
    );
    assert_eq!(kinds.len(), 12, "{kinds:?}");
}

/// A one-channel 1x1 convolution (input zero point 0, no clamp) with a fused max-pool.
fn conv_1x1_pooled<'a>(bias: &'a [u8], rq: &'a [u8], w: &'a [u8], pool: Pool2d) -> Layer<'a> {
    Layer::Conv2d(Conv2d {
        in_channels: 1,
        out_channels: 1,
        kernel_h: 1,
        kernel_w: 1,
        stride_h: 1,
        stride_w: 1,
        padding: Padding::uniform(0),
        input_zero_point: 0,
        output: OutputStage {
            zero_point: 0,
            act_min: -128,
            act_max: 127,
            bias,
            requant: rq,
        },
        weights: w,
        pool: Some(pool),
    })
}

/// Review finding: TensorFlow Lite's requantization with a shift above 0 wraps, so it is not
/// monotonic, and a fused max-pool (max of raw accumulators, then one requantization) gave
/// `[-128]` where the reference (requantize, then max) gives `[127]`: 1x1 conv, weight 1,
/// requantization (2^30, shift 30), pool 2/2, input `[1, 2, 0, 0]`. Such a blob is refused;
/// with single rounding or a shift of 0 the same layer loads and runs as the reference.
#[test]
fn fused_pool_after_a_wrapping_requantization_is_refused() {
    let bias = encode_i32s(&[0]);
    let w = encode_i8s(&[1]);
    let def_with = |rounding, shift| {
        let rq = encode_requants(&[Requant {
            multiplier: 1 << 30,
            shift,
        }]);
        let mut def = one_layer(
            spec(2, 2, 1, 1.0, 0),
            conv_1x1_pooled(
                Box::leak(bias.clone().into_boxed_slice()),
                Box::leak(rq.into_boxed_slice()),
                Box::leak(w.clone().into_boxed_slice()),
                Pool2d::square(2, 2, 0),
            ),
            spec(1, 1, 1, 1.0, 0),
            Head::Classifier { classes: 1 },
        );
        def.rounding = rounding;
        forge(&def, None)
    };
    let blob = def_with(runtime::Rounding::Double, 30);
    assert!(
        matches!(
            Model::from_bytes(&blob),
            Err(Error::BadParameter { layer: 0, what }) if what.contains("fused pool")
        ),
        "{:?}",
        Model::from_bytes(&blob).err()
    );
    // Single rounding, 2^29 times 2 saturates to 127; double rounding with shift 0 (0.5
    // times 2) gives 1.
    for (rounding, shift, want) in [
        (runtime::Rounding::Single, 30, 127i8),
        (runtime::Rounding::Double, 0, 1),
    ] {
        let blob = def_with(rounding, shift);
        let m = Model::from_bytes(&blob).unwrap();
        let x = [1i8, 2, 0, 0];
        assert_eq!(runtime::reference_model::invoke(&m, &x), [want]);
        // Word-aligned arena (the scratch path) and one byte off (the direct path).
        for off in [0, 1] {
            let mut arena = vec![0u8; m.arena_bytes() + 4];
            let mut it = Interpreter::new(&m, &mut arena[off..]).unwrap();
            it.input_mut().copy_from_slice(&x);
            it.invoke().unwrap();
            assert_eq!(
                it.output(),
                [want],
                "{rounding:?}, shift {shift}, offset {off}"
            );
        }
    }
}

/// A bias is bounded by what its layer's accumulator can hold: `2^30 + 128` (MLPerf Tiny's
/// visual wake words writes it on dead channels) loads on a 128-tap layer, and the largest
/// bias `max_bias(taps)` allows does too, one more does not.
#[test]
fn bias_bound_follows_the_layer_taps() {
    let load = |b: i32| {
        let bias = encode_i32s(&[b]);
        let w = encode_i8s(&[1; 128]);
        let rq = encode_requants(&[Requant::from_real(0.001).unwrap()]);
        let def = one_layer(
            spec(1, 1, 128, 1.0, 0),
            Layer::FullyConnected(FullyConnected {
                in_features: 128,
                out_features: 1,
                input_zero_point: 0,
                output: OutputStage {
                    zero_point: 0,
                    act_min: -128,
                    act_max: 127,
                    bias: &bias,
                    requant: &rq,
                },
                weights: &w,
            }),
            spec(1, 1, 1, 1.0, 0),
            Head::Classifier { classes: 1 },
        );
        Model::from_bytes(&forge(&def, None)).map(|_| ())
    };
    let most = i32::MAX - 128 * 32_768;
    assert_eq!(runtime::kernels::max_bias(128), most);
    for b in [(1 << 30) + 128, most, -most] {
        assert_eq!(load(b), Ok(()), "{b}");
    }
    for b in [most + 1, -most - 1, i32::MIN] {
        assert!(
            matches!(load(b), Err(Error::QuantOutOfRange { what: "bias", .. })),
            "{b}"
        );
    }
}

/// Review finding: pools reported 0 MACs and a fused pool recomputes each conv output for
/// every window holding it, so a 55-byte blob (one 255x255 max-pool, padding 127) ran 31 s at
/// 512x512 within the MAC limit. Work units (every kernel's inner loop plus a fixed cost per
/// output) now bound it: at 512x512 it is refused, at 255x255 (4.23e9 units, just under
/// 2^32) it loads, and so does the largest fused pool the limit allows; their run times on
/// this host are printed (a benchmark figure, not an assertion).
#[test]
fn worst_work_blob_runs_in_bounded_time() {
    let pool = |side: u16| {
        one_layer(
            spec(side, side, 1, 0.01, 0),
            Layer::MaxPool2d(Pool2d::square(255, 1, 127)),
            spec(side, side, 1, 0.01, 0),
            Head::Classifier {
                classes: side.saturating_mul(side),
            },
        )
    };
    let big = forge(&pool(512), Some(0));
    assert!(
        matches!(
            Model::from_bytes(&big),
            Err(Error::LimitExceeded {
                what: "work units of the model",
                ..
            })
        ),
        "{:?}",
        Model::from_bytes(&big).err()
    );
    assert!(big.len() < 64, "{} bytes", big.len());
    // 255 * 255 outputs, each a 255 x 255 window (padding never wins, but is scanned past):
    // 65,025 * (65,025 + 16) units.
    let worst = forge(&pool(255), None);
    let m = Model::from_bytes(&worst).unwrap();
    let step = &m.layer_info()[0].step;
    assert_eq!(
        step.work(m.def().input.shape, m.def().output.shape),
        65_025 * (65_025 + 16)
    );
    assert!(step.work(m.def().input.shape, m.def().output.shape) <= MAX_WORK);
    let run = |m: &Model| {
        let mut arena = vec![0u8; m.arena_bytes()];
        let mut it = Interpreter::new(m, &mut arena).unwrap();
        let t = std::time::Instant::now();
        it.invoke().unwrap();
        t.elapsed()
    };
    eprintln!("255x255 max-pool on 255x255 (work 4.23e9): {:?}", run(&m));
    // A 1x1 conv with a 64x64 stride-1 fused pool on 128x128: 65 * 65 outputs of 4,096 conv
    // outputs each, 17 units apiece, 2.9e8 units: loads. The same pool on 256x256 (193 * 193
    // outputs, 2.6e9 units with the charge per output) loads too; on 512x512 it does not.
    let bias = encode_i32s(&[0]);
    let rq = encode_requants(&[Requant::from_real(0.5).unwrap()]);
    let w = encode_i8s(&[1]);
    let fused = |side: u16| {
        let out = side - 63;
        one_layer(
            spec(side, side, 1, 0.01, 0),
            conv_1x1_pooled(&bias, &rq, &w, Pool2d::square(64, 1, 0)),
            spec(out, out, 1, 0.01, 0),
            Head::Classifier {
                classes: out.saturating_mul(out),
            },
        )
    };
    let blob = forge(&fused(256), None);
    let m = Model::from_bytes(&blob).unwrap();
    assert_eq!(
        m.layer_info()[0]
            .step
            .work(m.def().input.shape, m.def().output.shape),
        193 * 193 * 64 * 64 * 17
    );
    eprintln!(
        "1x1 conv + 64x64 fused pool on 256x256 (work 2.6e9): {:?}",
        run(&m)
    );
    assert!(matches!(
        Model::from_bytes(&forge(&fused(512), Some(0))),
        Err(Error::LimitExceeded { .. })
    ));
    // For the emulated M4's figure (docs/RESULTS.md): both blobs and one zero input each.
    if let Some(dir) = std::env::var_os("WORST_BLOB_DIR").map(std::path::PathBuf::from) {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, blob) in [("pool", &worst), ("fused", &blob)] {
            let m = Model::from_bytes(blob).unwrap();
            std::fs::write(dir.join(format!("{name}.bin")), blob).unwrap();
            let zeros = vec![0u8; m.input_len()];
            std::fs::write(
                dir.join(format!("{name}.inputs.bin")),
                runtime::vectors::write(m.input_len(), &zeros),
            )
            .unwrap();
        }
    }
}

/// Review finding: `BoxQ4::area` and `iou_fraction` overflowed (a panic with overflow checks)
/// on extreme boxes, and decoders built from a `ModelHeader` that no `Model` checked panicked
/// on its zero point. Now: saturating box arithmetic, exact where a decoder's boxes live, and
/// a clear error for the header.
#[test]
fn box_helpers_and_decoders_take_any_input() {
    use runtime::{BoxDecoder, BoxQ4, GridDecoder, ModelHeader};
    let huge = BoxQ4 {
        x0: i32::MIN,
        y0: i32::MIN,
        x1: i32::MAX,
        y1: i32::MAX,
    };
    let inverted = BoxQ4 {
        x0: i32::MAX,
        y0: 0,
        x1: i32::MIN,
        y1: 5,
    };
    assert_eq!(huge.area(), i64::MAX);
    assert_eq!(inverted.area(), -(u32::MAX as i64) * 5);
    let (i, u) = huge.iou_fraction(&huge);
    assert_eq!((i, u), (i64::MAX, i64::MAX));
    let _ = huge.iou_fraction(&inverted);
    let _ = inverted.iou_fraction(&huge);
    // Exact where it matters: two 2x1-cell boxes sharing one cell.
    let a = BoxQ4 {
        x0: 0,
        y0: 0,
        x1: 32,
        y1: 16,
    };
    let b = BoxQ4 { x0: 16, ..a };
    let b = BoxQ4 { x1: 48, ..b };
    assert_eq!(a.iou_fraction(&b), (256, 768));
    for zp in [i32::MIN, -129, 128, i32::MAX] {
        let header = |head| ModelHeader {
            name: "h",
            labels: "",
            input: spec(16, 16, 1, 0.01, 0),
            output: TensorSpec {
                shape: Shape::new(2, 2, 7),
                quant: QuantParams {
                    scale: 0.25,
                    zero_point: zp,
                },
            },
            rounding: runtime::Rounding::Single,
            head,
        };
        let loc = header(Head::Localizer { classes: 3 });
        assert!(
            matches!(BoxDecoder::new(&loc), Err(Error::BadDetectionHead { .. })),
            "{zp}"
        );
        let grid = header(Head::GridDetector {
            classes: 2,
            cell: 8,
            obj_threshold: -128,
            nms_iou_pct: 50,
            max_detections: 16,
        });
        assert!(
            matches!(GridDecoder::new(&grid), Err(Error::BadDetectionHead { .. })),
            "{zp}"
        );
    }
}
