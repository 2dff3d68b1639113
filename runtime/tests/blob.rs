//! Model-level tests: the wire format pinned byte for byte, loading errors, and that no byte
//! flip or truncation of a blob can make the runtime panic.

use runtime::format::{
    Conv2d, FullyConnected, Head, Layer, ModelDef, OutputStage, Pool2d, Shape, TensorSpec,
};
use runtime::writer::{encode_i32s, encode_i8s, encode_requants, write_blob};
use runtime::{Error, Interpreter, Model, QuantParams, Requant};

struct Owned {
    cw: Vec<u8>,
    cb: Vec<u8>,
    cr: Vec<u8>,
    fw: Vec<u8>,
    fb: Vec<u8>,
    fr: Vec<u8>,
}

/// 6x6x1 -> conv3x3x2 pad1 + fused maxpool2 (3x3x2) -> FC 18 -> 3. Deterministic weights.
fn owned() -> Owned {
    let cw: Vec<i8> = (0..18).map(|i| ((i * 37) % 255 - 127) as i8).collect();
    let fw: Vec<i8> = (0..54).map(|i| ((i * 53 + 11) % 255 - 127) as i8).collect();
    let rq = |r: f64| Requant::from_real(r).unwrap();
    Owned {
        cw: encode_i8s(&cw),
        cb: encode_i32s(&[100, -250]),
        cr: encode_requants(&[rq(0.0071), rq(0.0043)]),
        fw: encode_i8s(&fw),
        fb: encode_i32s(&[10, 0, -10]),
        fr: encode_requants(&[rq(0.002), rq(0.0031), rq(0.0025)]),
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
    let _ = layers.push(Layer::Conv2d(Conv2d {
        in_channels: 1,
        out_channels: 2,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
        input_zero_point: -128,
        output: stage(&o.cb, &o.cr, -128, -128),
        weights: &o.cw,
        pool: Some(Pool2d {
            kernel: 2,
            stride: 2,
        }),
    }));
    let _ = layers.push(Layer::FullyConnected(FullyConnected {
        in_features: 18,
        out_features: 3,
        input_zero_point: -128,
        output: stage(&o.fb, &o.fr, 5, -128),
        weights: &o.fw,
    }));
    ModelDef {
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
    assert_eq!(u16::from_le_bytes([b[4], b[5]]), 2);
    let arena = u32::from_le_bytes(b[8..12].try_into().unwrap());
    assert_eq!(
        arena,
        36 + 18,
        "input 36 B + pooled conv output 18 B live together"
    );
    assert_eq!(
        u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize,
        b.len() - 20
    );
}

#[test]
fn loads_and_runs_like_the_kernels_say() {
    let b = blob();
    let m = Model::from_bytes(&b).unwrap();
    assert_eq!(m.arena_bytes(), 54);
    assert_eq!(m.macs(), 6 * 6 * 2 * 9 + 18 * 3);
    let mut arena = [0u8; 54];
    let mut it = Interpreter::new(&m, &mut arena).unwrap();
    let x: Vec<i8> = (0..36).map(|i| (i * 7 % 256) as u8 as i8).collect();
    it.input_mut().copy_from_slice(&x);
    it.invoke();
    let out = it.output().to_vec();
    assert_eq!(out.len(), 3);
    // Same answer with a larger arena and a second run (no state carried between invokes).
    let mut big = [0xAAu8; 200];
    let mut it2 = Interpreter::new(&m, &mut big).unwrap();
    it2.input_mut().copy_from_slice(&x);
    it2.invoke();
    it2.invoke();
    assert_eq!(it2.output(), &out[..]);
}

#[test]
fn arena_too_small_reports_numbers() {
    let b = blob();
    let m = Model::from_bytes(&b).unwrap();
    let mut arena = [0u8; 53];
    let e = Interpreter::new(&m, &mut arena).err().unwrap();
    assert_eq!(
        e,
        Error::ArenaTooSmall {
            needed: 54,
            available: 53
        }
    );
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
    bad[4] = 9;
    assert!(matches!(
        Model::from_bytes(&bad),
        Err(Error::UnsupportedVersion { found: 9, .. })
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
            declared: 55,
            planned: 54
        })
    ));
}

#[test]
fn writer_rejects_inconsistent_models() {
    let o = owned();
    let mut d = def(&o);
    if let Layer::FullyConnected(fc) = &mut d.layers[1] {
        fc.in_features = 17;
    }
    assert!(matches!(
        write_blob(&d),
        Err(Error::ShapeMismatch { layer: 1, .. })
    ));
    let mut d = def(&o);
    if let Layer::Conv2d(c) = &mut d.layers[0] {
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
    if let Layer::FullyConnected(fc) = &mut d.layers[1] {
        fc.input_zero_point = 0;
    }
    assert!(matches!(
        write_blob(&d),
        Err(Error::QuantOutOfRange { layer: 1, .. })
    ));
}

/// Run whatever loads; the point is that nothing panics.
fn exercise(bytes: &[u8]) -> bool {
    match Model::from_bytes(bytes) {
        Ok(m) => {
            let mut arena = vec![0u8; m.arena_bytes()];
            if let Ok(mut it) = Interpreter::new(&m, &mut arena) {
                it.input_mut().fill(3);
                it.invoke();
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
