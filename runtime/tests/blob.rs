//! Model-level tests: the wire format pinned byte for byte, loading errors, and that no byte
//! flip or truncation of a blob can make the runtime panic.

use runtime::format::{
    Add, Conv2d, FullyConnected, Head, Layer, ModelDef, Node, OutputStage, Padding, Pool2d, Shape,
    TensorSpec,
};
use runtime::kernels::{self, AddParams, ConvGeom, Stage};
use runtime::writer::{encode_i32s, encode_i8s, encode_requants, write_blob};
use runtime::{Error, Interpreter, Model, QuantParams, Requant};

struct Owned {
    cw: Vec<u8>,
    cb: Vec<u8>,
    cr: Vec<u8>,
    pw: Vec<u8>,
    pb: Vec<u8>,
    pr: Vec<u8>,
    fw: Vec<u8>,
    fb: Vec<u8>,
    fr: Vec<u8>,
}

const FC_IN: usize = 36;

/// A small graph exercising every kind of edge:
/// ```text
/// t0 6x6x1 -> [0] conv3x3x2 pad1 + ReLU + fused maxpool2 -> t1 3x3x2
/// t1 -> [1] conv1x1x2 (no ReLU)                            -> t2 3x3x2
/// [2] add(t2, t1) + ReLU                                   -> t3 3x3x2
/// [3] concat(t3, t1)                                       -> t4 3x3x4
/// [4] FC 36 -> 3                                           -> t5
/// ```
/// Deterministic weights.
fn owned() -> Owned {
    let cw: Vec<i8> = (0..18).map(|i| ((i * 37) % 255 - 127) as i8).collect();
    let pw: Vec<i8> = vec![90, -40, 25, 110];
    let fw: Vec<i8> = (0..3 * FC_IN as i32)
        .map(|i| ((i * 53 + 11) % 255 - 127) as i8)
        .collect();
    let rq = |r: f64| Requant::from_real(r).unwrap();
    Owned {
        cw: encode_i8s(&cw),
        cb: encode_i32s(&[100, -250]),
        cr: encode_requants(&[rq(0.0071), rq(0.0043)]),
        pw: encode_i8s(&pw),
        pb: encode_i32s(&[-300, 450]),
        pr: encode_requants(&[rq(0.011), rq(0.0093)]),
        fw: encode_i8s(&fw),
        fb: encode_i32s(&[10, 0, -10]),
        fr: encode_requants(&[rq(0.002), rq(0.0031), rq(0.0025)]),
    }
}

fn add_layer() -> Add {
    let p = AddParams::from_scales(0.05, -10, 0.03, -128, 0.06, -128, -128, 127).unwrap();
    Add {
        input_zero_points: [-10, -128],
        zero_point: -128,
        act_min: -128,
        act_max: 127,
        requant: [p.rq_a, p.rq_b, p.rq_out],
    }
}

fn node<'a>(inputs: &[u8], layer: Layer<'a>) -> Node<'a> {
    Node {
        inputs: heapless::Vec::from_slice(inputs).unwrap(),
        layer,
    }
}

fn def(o: &Owned) -> ModelDef<'_> {
    let mut layers = heapless::Vec::new();
    let stage = |bias, requant, zero_point, act_min| OutputStage {
        zero_point,
        act_min,
        act_max: 127,
        bias,
        requant,
    };
    let conv = |in_channels, k: u8, padding: u8, izp, output, weights, pool| {
        Layer::Conv2d(Conv2d {
            in_channels,
            out_channels: 2,
            kernel_h: k,
            kernel_w: k,
            stride_h: 1,
            stride_w: 1,
            padding: runtime::format::Padding::uniform(padding),
            input_zero_point: izp,
            output,
            weights,
            pool,
        })
    };
    let pool = Some(Pool2d::square(2, 2, 0));
    let c0 = conv(1, 3, 1, -128, stage(&o.cb, &o.cr, -128, -128), &o.cw, pool);
    let c1 = conv(2, 1, 0, -128, stage(&o.pb, &o.pr, -10, -128), &o.pw, None);
    let fc = Layer::FullyConnected(FullyConnected {
        in_features: FC_IN as u32,
        out_features: 3,
        input_zero_point: -128,
        output: stage(&o.fb, &o.fr, 5, -128),
        weights: &o.fw,
    });
    for n in [
        node(&[0], c0),
        node(&[1], c1),
        node(&[2, 1], Layer::Add(add_layer())),
        node(&[3, 1], Layer::Concat),
        node(&[4], fc),
    ] {
        let _ = layers.push(n);
    }
    ModelDef {
        rounding: runtime::Rounding::Single,
        name: "small",
        input: TensorSpec {
            shape: Shape::new(6, 6, 1),
            quant: QuantParams {
                scale: 1.0 / 255.0,
                zero_point: -128,
            },
        },
        output: TensorSpec {
            shape: Shape::new(1, 1, 3),
            quant: QuantParams {
                scale: 0.1,
                zero_point: 5,
            },
        },
        layers,
        head: Head::Classifier { classes: 3 },
        labels: "zero\none\ntwo",
    }
}

fn blob() -> Vec<u8> {
    write_blob(&def(&owned())).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The format pinned byte for byte: a change here must come with a FORMAT_VERSION bump and a
/// regenerated golden file (`UPDATE_GOLDEN=1 cargo test -p runtime --features std golden`).
#[test]
fn golden_blob() {
    let b = blob();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/small.hex");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, hex(&b) + "\n").unwrap();
    }
    let want = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        hex(&b),
        want.trim(),
        "wire format changed: bump FORMAT_VERSION and regenerate"
    );
    // Independent checks of the preamble layout.
    assert_eq!(&b[..4], b"TMCU");
    assert_eq!(u16::from_le_bytes([b[4], b[5]]), 9);
    // The payload ends with the class names: their length, then "zero\none\ntwo".
    assert!(b.ends_with(b"\x0czero\none\ntwo"));
    let arena = u32::from_le_bytes(b[8..12].try_into().unwrap());
    assert_eq!(arena as usize, SMALL_ARENA, "see SMALL_ARENA");
    assert_eq!(
        u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize,
        b.len() - 20
    );
}

/// The interpreter's answer equals the kernels called one by one into separate buffers: the
/// plan, the input wiring and the graph order are right.
#[test]
fn loads_and_runs_like_the_kernels_say() {
    let o = owned();
    let b = blob();
    let m = Model::from_bytes(&b).unwrap();
    assert_eq!(m.arena_bytes(), SMALL_ARENA);
    // Naive: every region live at once (rounded to 4 bytes), scratch included.
    let f = m.arena_figures();
    assert_eq!(
        (f.arena_bytes, f.live_peak_bytes, f.naive_bytes),
        (SMALL_ARENA, SMALL_ARENA, 36 + 20 * 3 + 36 + 4 + 112 + 40)
    );
    // Activations alone peak at the concat (step 3): it reads the add's output and conv 0's
    // (20 B each, 18 rounded to a word) and writes 36 B.
    assert_eq!(f.activation_peak_bytes, 20 + 20 + 36);
    assert_eq!(m.macs(), 6 * 6 * 2 * 9 + 9 * 2 * 2 + FC_IN * 3);
    let x: Vec<i8> = (0..36).map(|i| (i * 7 % 256) as u8 as i8).collect();
    let mut arena = [0u8; SMALL_ARENA];
    let mut it = Interpreter::new(&m, &mut arena).unwrap();
    it.input_mut().copy_from_slice(&x);
    it.invoke().unwrap();
    let out = it.output().to_vec();

    let i8s = |v: &[u8]| v.iter().map(|&b| b as i8).collect::<Vec<i8>>();
    let st = |bias, requant, zero_point, taps| {
        Stage::new(
            bias,
            requant,
            (zero_point, -128, 127),
            runtime::Rounding::Single,
            taps,
        )
    };
    let s0 = st(&o.cb, &o.cr, -128, 9);
    let g0 = ConvGeom::new(6, 6, 1, 2, 3, 3, (1, 1), Padding::uniform(1), Some((2, 2))).unwrap();
    let mut t1 = vec![0i8; 18];
    kernels::conv2d(&x, -128, &i8s(&o.cw), &g0, &s0, &mut t1, &mut []);
    let g1 = ConvGeom::new(3, 3, 2, 2, 1, 1, (1, 1), Padding::uniform(0), None).unwrap();
    let mut t2 = vec![0i8; 18];
    kernels::conv2d(
        &t1,
        -128,
        &i8s(&o.pw),
        &g1,
        &st(&o.pb, &o.pr, -10, 2),
        &mut t2,
        &mut [],
    );
    let mut t3 = vec![0i8; 18];
    kernels::add(
        &t2,
        &t1,
        &AddParams::from_layer(&add_layer(), runtime::Rounding::Single),
        &mut t3,
    );
    let mut t4 = vec![0i8; 36];
    kernels::concat_channels(&[&t3, &t1], 9, &mut t4);
    let mut want = vec![0i8; 3];
    kernels::fully_connected(&t4, -128, &i8s(&o.fw), &st(&o.fb, &o.fr, 5, 36), &mut want);
    assert_eq!(out, want);
    assert!(
        t4.iter().any(|&v| v != -128),
        "the test input reaches the concat"
    );

    // Same answer with a larger arena and a second run (no state carried between invokes; the
    // input's bytes may be reused once it is dead, so it is filled again before each run).
    let mut big = [0xAAu8; SMALL_ARENA + 40];
    let mut it2 = Interpreter::new(&m, &mut big).unwrap();
    it2.input_mut().copy_from_slice(&x);
    it2.invoke().unwrap();
    it2.input_mut().copy_from_slice(&x);
    it2.invoke().unwrap();
    assert_eq!(it2.output(), &out[..]);
}

/// The small model's arena by hand (every region rounded up to 4 bytes): tensors t0 36, t1..t3
/// 18 -> 20 each, t4 36, t5 3 -> 4; conv 0's scratch (9 taps, 3 groups: four patches 8*3, a
/// receptive field's bytes 3 + 1 words) 112, conv 1's (2 taps, 1 group: 8 + 2 words) 40. Step 0
/// holds t0, t1 and conv 0's scratch: 36 + 20 + 112 = 168, the peak (step 1: 20 + 20 + 40; the
/// others less).
const SMALL_ARENA: usize = 168;

#[test]
fn arena_too_small_reports_numbers() {
    let b = blob();
    let m = Model::from_bytes(&b).unwrap();
    assert_eq!(m.arena_bytes(), SMALL_ARENA);
    let mut arena = [0u8; SMALL_ARENA - 1];
    let e = Interpreter::new(&m, &mut arena).err().unwrap();
    assert_eq!(
        e,
        Error::ArenaTooSmall {
            needed: SMALL_ARENA,
            available: SMALL_ARENA - 1
        }
    );
}

/// Graph edges that cannot be scheduled or do not fit are load errors.
#[test]
fn bad_graph_edges_are_errors() {
    let o = owned();
    let mut d = def(&o);
    d.layers[1].inputs[0] = 2; // reads its own output
    assert!(matches!(
        write_blob(&d),
        Err(Error::BadParameter { layer: 1, .. })
    ));
    let mut d = def(&o);
    d.layers[2].inputs[1] = 0; // add of 3x3x2 and the 6x6x1 input
    assert!(matches!(
        write_blob(&d),
        Err(Error::ShapeMismatch { layer: 2, .. })
    ));
    let mut d = def(&o);
    d.layers[3].inputs.truncate(1); // a concat of one tensor
    assert!(matches!(
        write_blob(&d),
        Err(Error::BadParameter { layer: 3, .. })
    ));
    let mut d = def(&o);
    d.layers[3].inputs[1] = 2; // t2 has zero point -10, t3 -128: not a plain copy
    assert!(matches!(
        write_blob(&d),
        Err(Error::QuantOutOfRange { layer: 3, .. })
    ));
    let mut d = def(&o);
    if let Layer::Add(a) = &mut d.layers[2].layer {
        a.requant[0] = Requant::from_real(0.75).unwrap(); // could overflow the sum
    }
    assert!(matches!(
        write_blob(&d),
        Err(Error::QuantOutOfRange { layer: 2, .. })
    ));
}

#[test]
fn header_errors_are_specific() {
    let b = blob();
    assert!(matches!(
        Model::from_bytes(&b[..10]),
        Err(Error::Truncated {
            needed: 20,
            available: 10
        })
    ));
    let mut bad = b.clone();
    bad[0] = b'X';
    assert_eq!(Model::from_bytes(&bad).err(), Some(Error::BadMagic));
    let mut bad = b.clone();
    bad[4] = 10;
    assert!(matches!(
        Model::from_bytes(&bad),
        Err(Error::UnsupportedVersion { found: 10, .. })
    ));
    let mut bad = b.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        Model::from_bytes(&bad),
        Err(Error::CrcMismatch { .. })
    ));
    let mut bad = b.clone();
    bad.push(0);
    assert_eq!(
        Model::from_bytes(&bad).err(),
        Some(Error::TrailingBytes { extra: 1 })
    );
    let mut bad = b.clone();
    bad[8] ^= 1;
    assert!(matches!(
        Model::from_bytes(&bad),
        Err(Error::ArenaMismatch {
            declared: 169,
            planned: 168
        })
    ));
}

#[test]
fn writer_rejects_inconsistent_models() {
    let o = owned();
    let mut d = def(&o);
    if let Layer::FullyConnected(fc) = &mut d.layers[4].layer {
        fc.in_features = 17;
    }
    assert!(matches!(
        write_blob(&d),
        Err(Error::ShapeMismatch { layer: 4, .. })
    ));
    let mut d = def(&o);
    if let Layer::Conv2d(c) = &mut d.layers[0].layer {
        c.weights = &o.cw[..17];
    }
    assert!(matches!(
        write_blob(&d),
        Err(Error::ArrayLength {
            layer: 0,
            what: "weights",
            ..
        })
    ));
    let mut d = def(&o);
    if let Layer::FullyConnected(fc) = &mut d.layers[4].layer {
        fc.input_zero_point = 0;
    }
    assert!(matches!(
        write_blob(&d),
        Err(Error::QuantOutOfRange { layer: 4, .. })
    ));
}

/// Class names travel in the blob and are read back by class; names that do not fit the
/// head are refused by the writer and by the loader alike.
#[test]
fn class_names_load_and_are_checked() {
    let o = owned();
    let b = blob();
    let m = Model::from_bytes(&b).unwrap();
    let names: Vec<_> = (0..4).map(|k| m.def().label(k)).collect();
    assert_eq!(names, [Some("zero"), Some("one"), Some("two"), None]);
    let mut d = def(&o);
    d.labels = "";
    let b = write_blob(&d).unwrap();
    assert_eq!(Model::from_bytes(&b).unwrap().def().label(0), None);
    let long = "x".repeat(runtime::format::MAX_LABEL_BYTES + 1);
    let bad = [
        "zero\none",
        "zero\none\ntwo\nthree",
        "zero\n\ntwo",
        "zero\none\ntwo\n",
        "zero\none\n\u{1b}[2J",
        "zero\none\ntw\u{85}o",
        "zero\none\ntwo\u{7f}",
        &*format!("zero\none\n{long}"),
    ];
    for labels in bad {
        let mut d = def(&o);
        d.labels = labels;
        assert!(
            matches!(write_blob(&d), Err(Error::BadLabels { .. })),
            "{labels:?}"
        );
        // Forged past the writer: the loader refuses it too.
        let payload = postcard::to_allocvec(&d).unwrap();
        let mut good = write_blob(&def(&o)).unwrap();
        good.truncate(20);
        good[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        good[16..20].copy_from_slice(&runtime::crc32(&payload).to_le_bytes());
        good.extend_from_slice(&payload);
        assert!(
            matches!(Model::from_bytes(&good), Err(Error::BadLabels { .. })),
            "{labels:?}"
        );
    }
    // A head of plain values names no classes and takes none.
    let mut d = def(&o);
    d.head = Head::Values { outputs: 3 };
    assert!(matches!(write_blob(&d), Err(Error::BadLabels { .. })));
    d.labels = "";
    let m = write_blob(&d).unwrap();
    assert_eq!(
        Model::from_bytes(&m).unwrap().def().head,
        Head::Values { outputs: 3 }
    );
    d.head = Head::Values { outputs: 4 };
    assert!(matches!(
        write_blob(&d),
        Err(Error::BadDetectionHead { .. })
    ));
}

/// Run whatever loads; the point is that nothing panics.
fn exercise(bytes: &[u8]) -> bool {
    match Model::from_bytes(bytes) {
        Ok(m) => {
            let mut arena = vec![0u8; m.arena_bytes()];
            if let Ok(mut it) = Interpreter::new(&m, &mut arena) {
                it.input_mut().fill(3);
                it.invoke().unwrap();
                let _ = it.output();
            }
            true
        }
        Err(_) => false,
    }
}

#[test]
fn every_truncation_is_an_error() {
    let b = blob();
    for len in 0..b.len() {
        assert!(!exercise(&b[..len]), "truncated to {len} bytes but loaded");
    }
}

/// With the CRC left intact every flip is caught by it; so also flip with the CRC recomputed,
/// which drives the decoder and validator over every field.
#[test]
fn every_byte_flip_is_an_error_or_a_valid_model() {
    let b = blob();
    for i in 0..b.len() {
        for bit in [0x01u8, 0x80, 0xFF] {
            let mut bad = b.clone();
            bad[i] ^= bit;
            assert!(!exercise(&bad), "flip {bit:#04x} at {i} loaded");
            if i >= 20 {
                let crc = runtime::crc32(&bad[20..]);
                bad[16..20].copy_from_slice(&crc.to_le_bytes());
                exercise(&bad); // may load (a weight byte changed); must not panic
            }
        }
    }
}

/// The standard CRC-32 check value (the CRC of the ASCII digits 1..9), independent of our code.
#[test]
fn crc32_is_the_ieee_polynomial() {
    assert_eq!(runtime::crc32(b"123456789"), 0xCBF4_3926);
}

/// Real values in and out: `set_input_f32` quantizes with the input's scale (1/255) and zero
/// point (-128), `output_f32` dequantizes with the output's (0.1, 5); wrong lengths are
/// errors that name the buffer, and nothing is written then.
#[test]
fn float_input_and_output_use_the_model_quantization() {
    let b = blob();
    let m = Model::from_bytes(&b).unwrap();
    let mut arena = [0u8; SMALL_ARENA];
    let mut it = Interpreter::new(&m, &mut arena).unwrap();
    // 0 -> -128, 1 -> 127 (255 - 128), 0.6 -> round(153) - 128 = 25, NaN -> the zero point.
    let mut x = vec![0.0f32; 36];
    x[1] = 1.0;
    x[2] = 0.6;
    x[3] = f32::NAN;
    x[4] = 7.0; // saturates
    it.set_input_f32(&x).unwrap();
    assert_eq!(&it.input_mut()[..6], &[-128, 127, 25, -128, 127, -128]);
    assert_eq!(
        it.set_input_f32(&x[..35]),
        Err(runtime::Error::BufferLength {
            what: "input",
            expected: 36,
            found: 35
        })
    );
    assert_eq!(it.input_mut()[1], 127, "nothing written on error");
    it.invoke().unwrap();
    let q = it.output().to_vec();
    let mut y = [0.0f32; 3];
    it.output_f32(&mut y).unwrap();
    for (r, &v) in y.iter().zip(&q) {
        assert_eq!(*r, 0.1 * (v as i32 - 5) as f32);
    }
    assert!(matches!(
        it.output_f32(&mut [0.0; 4]),
        Err(runtime::Error::BufferLength { what: "output", .. })
    ));
}

/// The compile-time arena figure a static `Arena` is sized with equals the loaded model's, and
/// is 0 (so `Interpreter::new` refuses with `ArenaTooSmall`) for bytes that are not a blob of
/// this version.
#[test]
fn arena_bytes_const_reads_the_preamble() {
    const REF_CNN: &[u8] = include_bytes!("../../firmware/models/ref-cnn.bin");
    const N: usize = runtime::arena_bytes_const(REF_CNN);
    let m = Model::from_bytes(REF_CNN).unwrap();
    assert_eq!(N, m.arena_bytes());
    let mut arena = runtime::Arena::<N>::new();
    assert_eq!(arena.as_mut_slice().as_ptr() as usize % 16, 0);
    assert!(runtime::Interpreter::new(&m, arena.as_mut_slice()).is_ok());
    let b = blob();
    assert_eq!(
        runtime::arena_bytes_const(&b),
        runtime::arena_bytes_of(&b).unwrap()
    );
    let mut old = b.clone();
    old[4] ^= 1; // another format version
    assert_eq!(runtime::arena_bytes_const(&old), 0);
    assert_eq!(runtime::arena_bytes_const(&b[..19]), 0);
    assert_eq!(
        runtime::arena_bytes_const(b"not a blob at all, 20+ bytes"),
        0
    );
}

/// A model built for a set of layer kinds (`Model<_, N, K>`, what firmware links) loads blobs
/// of those kinds and computes what the full runtime computes; a blob with another kind is
/// refused with the layer and its kind, not run.
#[test]
fn a_kernel_set_runs_its_kinds_and_refuses_others() {
    use runtime::format::{kinds, MAX_LAYERS};
    let b = blob();
    let d = runtime::decode_def(&b).unwrap();
    const USED: u32 = kinds::CONV2D | kinds::ADD | kinds::CONCAT | kinds::FULLY_CONNECTED;
    assert_eq!(kinds::of(&d), USED);

    let mut partial = Model::<MAX_LAYERS, { USED & !kinds::FULLY_CONNECTED }>::empty();
    assert_eq!(
        partial.load(&b),
        Err(Error::KernelNotLinked {
            layer: 4,
            kind: "FullyConnected"
        })
    );

    let full = Model::from_bytes(&b).unwrap();
    let mut just = Model::<MAX_LAYERS, USED>::empty();
    just.load(&b).unwrap();
    let x: Vec<i8> = (0..36).map(|i| (i * 13 % 256) as u8 as i8).collect();
    assert_eq!(infer(&just, &x), infer(&full, &x));
}

/// One inference of `m` on `x`.
fn infer<const N: usize, const K: u32>(m: &Model<'_, N, K>, x: &[i8]) -> Vec<i8> {
    let mut arena = [0u8; SMALL_ARENA];
    let mut it = Interpreter::new(m, &mut arena).unwrap();
    it.input_mut().copy_from_slice(x);
    it.invoke().unwrap();
    it.output().to_vec()
}
