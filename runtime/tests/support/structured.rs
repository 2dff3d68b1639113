//! Structure-aware model generation for fuzzing, shared by the cargo-fuzz target
//! `runtime/fuzz/fuzz_targets/structured.rs` (coverage-guided, long runs) and the bounded run
//! in `runtime/tests/structured.rs` (part of the test suite).
//!
//! The fuzzer's bytes are read with `arbitrary::Unstructured` as decisions, not as a blob: an
//! input shape, up to eight layers of every kind wired as a chain or a graph (residual adds,
//! concats of 2 to 4 tensors), their geometry, weights, biases, requantization, zero points
//! and clamps, a head (classifier, localizer, grid detector) and the output spec. Most
//! decisions stay in the range a real model uses, so most models load and run; each one also
//! has a small chance of an extreme or inconsistent value (a dimension of 65535, a NaN
//! scale, a zero point that differs from the producer's, an array one byte short, an invalid
//! requantization), so the validator's every refusal is reached too. The model is written
//! by postcard and given a valid preamble (payload length, CRC and the arena the analysis
//! plans, sometimes a wrong one): what an adversary who can fix checksums would write.
//!
//! [`exercise`] then loads it, refuses arenas one byte short, runs it in arenas of the exact
//! size and misaligned, compares every output byte with the naive i64 reference interpreter
//! and checks the decoded boxes. It panics on any disagreement; the runtime itself must never
//! panic (these builds keep overflow checks).

use arbitrary::{Result, Unstructured};
use runtime::format::{
    Add, Head, Mean, Padding, Pool2d, Preamble, Shape, Softmax, TensorSpec, FORMAT_VERSION,
    MAX_ARENA_BYTES, MAX_MACS,
};
use runtime::kernels::AddParams;
use runtime::writer::{
    OwnedConv, OwnedFullyConnected, OwnedLayer, OwnedModel, OwnedNode, OwnedStage,
};
use runtime::{crc32, Error, Interpreter, Model, QuantParams, Requant};

#[path = "table_plan.rs"]
mod table_plan;
use table_plan::table_plan;

/// A tensor the generator has made: its shape and zero point.
#[derive(Clone, Copy)]
struct T {
    shape: Shape,
    zp: i8,
}

/// True one time in `n`. Unlike `Unstructured::ratio`, false once the bytes run out, so an
/// exhausted input makes the ordinary choice, not the rare one.
fn rare(u: &mut Unstructured, n: u8) -> Result<bool> {
    Ok(u.int_in_range(0..=n - 1)? == n - 1)
}

/// A xorshift stream for the bulk values of a layer (a fuzz input stays short).
struct Stream(u64);

impl Stream {
    fn new(u: &mut Unstructured) -> Result<Stream> {
        Ok(Stream(u.arbitrary::<u64>()? | 1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Usually a value in `lo..=hi`; 1 time in 64, any value of the type.
fn dim(u: &mut Unstructured, lo: u16, hi: u16) -> Result<u16> {
    if rare(u, 64)? {
        u.arbitrary()
    } else {
        u.int_in_range(lo..=hi)
    }
}

fn small(u: &mut Unstructured, lo: u8, hi: u8) -> Result<u8> {
    if rare(u, 64)? {
        u.arbitrary()
    } else {
        u.int_in_range(lo..=hi)
    }
}

/// The producer's zero point, 1 time in 64 another one.
fn zp_of(u: &mut Unstructured, producer: i8) -> Result<i8> {
    if rare(u, 64)? {
        u.arbitrary()
    } else {
        Ok(producer)
    }
}

fn scale(u: &mut Unstructured) -> Result<f32> {
    Ok(match u.int_in_range(0u8..=255)? {
        255 => f32::NAN,
        254 => 0.0,
        253 => -1.0,
        252 => f32::INFINITY,
        251 => f32::MIN_POSITIVE / 4.0,
        250 => 1.0e9,
        249 => 1.0e6,
        _ => (u.int_in_range(0u32..=99_999)? as f32 + 1.0) * 1.0e-5,
    })
}

/// Weight bytes from a seed (a fuzz input stays short; every byte value occurs, -128 too).
fn fill(u: &mut Unstructured, n: usize) -> Result<Vec<u8>> {
    let mode = u.int_in_range(0u8..=7)?;
    let mut s = Stream::new(u)?;
    Ok((0..n)
        .map(|_| match mode {
            6 => 0x80, // all -128
            7 => 0x7f, // all 127
            _ => s.next() as u8,
        })
        .collect())
}

/// `n` per-channel biases and requantizations.
fn stage_arrays(u: &mut Unstructured, n: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    let bias_mode = u.int_in_range(0u8..=63)?;
    let raw_rq = rare(u, 128)?;
    // Multipliers of real models (1e-5 to 1), the valid range's extremes, and above 1 (a
    // shift above 0: TensorFlow Lite's left shift, which wraps and is not monotonic).
    let base = match u.int_in_range(0u8..=23)? {
        21..=23 => (1u64 << u.int_in_range(0u32..=29)?) as f64,
        20 => 0.999_999_9,
        19 => 1.0e-9,
        _ => (u.int_in_range(0u32..=999_999)? as f64 + 1.0) * 1.0e-6,
    };
    let most = if base < 1.0 {
        0.999_999_9
    } else {
        (1u64 << 30) as f64
    };
    let mut s = Stream::new(u)?;
    let mut bias = Vec::with_capacity(4 * n);
    let mut rq = Vec::with_capacity(8 * n);
    for _ in 0..n {
        let b: i32 = match bias_mode {
            63 => s.next() as i32,
            62 => 1 << 30,
            61 => -(1 << 30),
            _ => (s.next() % 80_001) as i32 - 40_000,
        };
        bias.extend_from_slice(&b.to_le_bytes());
        let q = if raw_rq {
            Requant {
                multiplier: s.next() as i32,
                shift: (s.next() >> 32) as i32,
            }
        } else {
            let real = (base * (1.0 + (s.next() % 64) as f64 / 64.0)).min(most);
            Requant::from_real(real).unwrap_or(Requant {
                multiplier: 1 << 30,
                shift: 0,
            })
        };
        rq.extend_from_slice(&q.multiplier.to_le_bytes());
        rq.extend_from_slice(&q.shift.to_le_bytes());
    }
    // One array a byte short now and then.
    if rare(u, 128)? {
        bias.pop();
    }
    if rare(u, 128)? {
        rq.pop();
    }
    Ok((bias, rq))
}

fn clamp(u: &mut Unstructured, zp: i8) -> Result<(i8, i8)> {
    Ok(match u.int_in_range(0u8..=15)? {
        15 => (u.arbitrary()?, u.arbitrary()?),
        14 | 13 => (zp, 127),              // ReLU
        12 => (zp, zp.saturating_add(40)), // ReLU6-like
        _ => (-128, 127),
    })
}

fn out_stage(u: &mut Unstructured, n: usize) -> Result<OwnedStage> {
    let zero_point: i8 = u.arbitrary()?;
    let (act_min, act_max) = clamp(u, zero_point)?;
    let (bias, requant) = stage_arrays(u, n)?;
    Ok(OwnedStage {
        zero_point,
        act_min,
        act_max,
        bias,
        requant,
    })
}

/// Output size of a window over `n` (what the runtime computes), if it has one.
fn out_len(n: u16, k: u8, s: u8, p: u8) -> Option<u16> {
    out_len2(n, k, s, p, p)
}

/// [`out_len`] with `a` pixels of padding before and `b` after.
fn out_len2(n: u16, k: u8, s: u8, a: u8, b: u8) -> Option<u16> {
    let (n, k, s, p) = (n as u32, k as u32, s as u32, a as u32 + b as u32);
    if k == 0 || s == 0 || n + p < k {
        return None;
    }
    u16::try_from((n + p - k) / s + 1).ok()
}

/// A model definition from the fuzzer's bytes, encoded with a valid preamble.
pub fn blob(u: &mut Unstructured) -> Result<Vec<u8>> {
    let rounding = if u.arbitrary()? {
        runtime::Rounding::Double
    } else {
        runtime::Rounding::Single
    };
    let in_zp: i8 = u.arbitrary()?;
    let input = T {
        shape: Shape::new(dim(u, 1, 24)?, dim(u, 1, 24)?, dim(u, 1, 8)?),
        zp: in_zp,
    };
    let mut tensors = vec![input];
    let n_layers = u.int_in_range(1usize..=8)?;
    let mut layers = Vec::new();
    for i in 0..n_layers {
        // Usually the previous tensor; sometimes an earlier one (a branch).
        let first = if i > 0 && rare(u, 4)? {
            u.int_in_range(0..=i)?
        } else {
            i
        };
        let x = tensors[first];
        let s = x.shape;
        let kind = u.int_in_range(0u8..=11)?;
        let mut inputs = vec![first as u8];
        let (layer, out) = match kind {
            0..=2 => {
                let depthwise = kind == 2;
                let oc = if depthwise { s.c } else { dim(u, 1, 16)? };
                let fit = |n: u16, most: u16| n.clamp(1, most) as u8;
                let (kh, kw) = (small(u, 1, fit(s.h, 5))?, small(u, 1, fit(s.w, 5))?);
                // Mostly equal strides; sometimes rows and columns apart (2x1 and the like).
                let sh = small(u, 1, 3)?;
                let sw = if rare(u, 4)? { small(u, 1, 3)? } else { sh };
                let p = small(u, 0, kh.max(kw) / 2)?;
                // TensorFlow Lite's SAME padding puts the odd pixel below and right.
                let (eb, er) = if rare(u, 4)? {
                    (small(u, 0, 1)?, small(u, 0, 1)?)
                } else {
                    (0, 0)
                };
                let padding = Padding {
                    top: p,
                    left: p,
                    bottom: p.saturating_add(eb),
                    right: p.saturating_add(er),
                };
                let conv_h = out_len2(s.h, kh, sh, p, p.saturating_add(eb)).unwrap_or(1);
                let conv_w = out_len2(s.w, kw, sw, p, p.saturating_add(er)).unwrap_or(1);
                let pool = if rare(u, 3)? {
                    let k = small(u, 1, fit(conv_h.min(conv_w), 3))?;
                    let s = small(u, 1, 3)?;
                    let mut p = Pool2d::square(k, s, if rare(u, 32)? { 1 } else { 0 });
                    // A fused pool must be square: rarely draw one that is not.
                    if rare(u, 64)? {
                        p.kernel_w = small(u, 1, 3)?;
                    }
                    Some(p)
                } else {
                    None
                };
                let taps = kh as usize * kw as usize * if depthwise { 1 } else { s.c as usize };
                let n_w = taps.saturating_mul(oc as usize);
                let n_w = if rare(u, 128)? { n_w + 1 } else { n_w };
                if n_w > 1 << 16 {
                    return Err(arbitrary::Error::IncorrectFormat);
                }
                let output = out_stage(u, oc as usize)?;
                let weights = fill(u, n_w)?;
                let zp = output.zero_point;
                let c = OwnedConv {
                    in_channels: if rare(u, 128)? {
                        s.c.wrapping_add(1)
                    } else {
                        s.c
                    },
                    out_channels: oc,
                    kernel_h: kh,
                    kernel_w: kw,
                    stride_h: sh,
                    stride_w: sw,
                    padding,
                    input_zero_point: zp_of(u, x.zp)?,
                    output,
                    weights,
                    pool,
                };
                let mut h = out_len2(s.h, kh, sh, p, p.saturating_add(eb));
                let mut w = out_len2(s.w, kw, sw, p, p.saturating_add(er));
                if let Some(p) = pool {
                    h = h.and_then(|h| out_len(h, p.kernel_h, p.stride_h, 0));
                    w = w.and_then(|w| out_len(w, p.kernel_w, p.stride_w, 0));
                }
                let shape = Shape::new(h.unwrap_or(1), w.unwrap_or(1), oc);
                let l = if depthwise {
                    OwnedLayer::DepthwiseConv2d(c)
                } else {
                    OwnedLayer::Conv2d(c)
                };
                (l, T { shape, zp })
            }
            3 | 4 => {
                // Windows up to the whole input (average pools of 25x5 and 8x8 end MLPerf
                // Tiny's models), rows and columns apart, strides apart.
                let kh = small(u, 1, s.h.clamp(1, 6) as u8)?;
                let kw = if rare(u, 2)? {
                    small(u, 1, s.w.clamp(1, 6) as u8)?
                } else {
                    kh
                };
                let sh = small(u, 1, 3)?;
                let sw = if rare(u, 4)? { small(u, 1, 3)? } else { sh };
                let p = Pool2d {
                    kernel_h: kh,
                    kernel_w: kw,
                    stride_h: sh,
                    stride_w: sw,
                    padding: if kind == 3 { small(u, 0, 1)? } else { 0 },
                };
                let h = out_len(s.h, p.kernel_h, p.stride_h, p.padding).unwrap_or(1);
                let w = out_len(s.w, p.kernel_w, p.stride_w, p.padding).unwrap_or(1);
                let l = if kind == 3 {
                    OwnedLayer::MaxPool2d(p)
                } else {
                    OwnedLayer::AvgPool2d(p)
                };
                let shape = Shape::new(h, w, s.c);
                (l, T { shape, zp: x.zp })
            }
            5 => {
                let shape = Shape::new(1, 1, s.c);
                (OwnedLayer::GlobalAvgPool, T { shape, zp: x.zp })
            }
            6 | 7 => {
                let n_in = (s.h as u64 * s.w as u64 * s.c as u64).min(u32::MAX as u64) as u32;
                let n_out = dim(u, 1, 16)?;
                let n_w = n_in as usize * n_out as usize;
                if n_w > 1 << 16 {
                    return Err(arbitrary::Error::IncorrectFormat);
                }
                let output = out_stage(u, n_out as usize)?;
                let zp = output.zero_point;
                // (Decided in this order: the decisions a fuzz input makes stay the same.)
                let in_features = if rare(u, 128)? {
                    n_in.wrapping_add(1)
                } else {
                    n_in
                };
                let input_zero_point = zp_of(u, x.zp)?;
                let f = OwnedFullyConnected {
                    in_features,
                    out_features: n_out,
                    input_zero_point,
                    output,
                    weights: fill(u, n_w)?,
                };
                (
                    OwnedLayer::FullyConnected(f),
                    T {
                        shape: Shape::new(1, 1, n_out),
                        zp,
                    },
                )
            }
            8 => {
                // Residual add with another tensor of the same shape, if there is one.
                let other = (0..=i).rev().find(|&t| t != first && tensors[t].shape == s);
                let other = match other {
                    Some(t) if !rare(u, 64)? => t,
                    _ => u.int_in_range(0..=i)?,
                };
                inputs.push(other as u8);
                let sc = |u: &mut Unstructured| -> Result<f64> {
                    Ok(u.int_in_range(1u32..=1000)? as f64 * 1.0e-3)
                };
                let (sa, sb, so) = (sc(u)?, sc(u)?, sc(u)?);
                let zp: i8 = u.arbitrary()?;
                let (lo, hi) = clamp(u, zp)?;
                let zb = tensors[other].zp;
                let p = AddParams::from_scales(
                    sa,
                    x.zp as i32,
                    sb,
                    zb as i32,
                    so,
                    zp as i32,
                    lo as i32,
                    hi as i32,
                );
                let requant = match p {
                    Some(p) if !rare(u, 64)? => [p.rq_a, p.rq_b, p.rq_out],
                    _ => [
                        Requant {
                            multiplier: u.arbitrary()?,
                            shift: u.arbitrary()?,
                        },
                        Requant::from_real(0.25).unwrap_or(Requant {
                            multiplier: 1 << 30,
                            shift: -1,
                        }),
                        Requant {
                            multiplier: u.arbitrary()?,
                            shift: u.int_in_range(-31..=30)?,
                        },
                    ],
                };
                let add = Add {
                    input_zero_points: [zp_of(u, x.zp)?, zp_of(u, zb)?],
                    zero_point: zp,
                    act_min: lo,
                    act_max: hi,
                    requant,
                };
                (OwnedLayer::Add(add), T { shape: s, zp })
            }
            10 => {
                let m = Mean {
                    input_zero_point: zp_of(u, x.zp)?,
                    zero_point: u.arbitrary()?,
                    requant: Requant {
                        multiplier: if rare(u, 64)? {
                            u.arbitrary()?
                        } else {
                            u.int_in_range(0..=i32::MAX)?
                        },
                        shift: if rare(u, 64)? {
                            u.arbitrary()?
                        } else {
                            u.int_in_range(-20..=2)?
                        },
                    },
                };
                let shape = Shape::new(1, 1, s.c);
                (
                    OwnedLayer::Mean(m),
                    T {
                        shape,
                        zp: m.zero_point,
                    },
                )
            }
            11 => {
                let left = if rare(u, 64)? {
                    u.arbitrary()?
                } else {
                    u.int_in_range(0..=31)?
                };
                let radius = ((31i64 << 26) >> left.clamp(0, 31)).min(255) as i32;
                let sm = Softmax {
                    input_multiplier: if rare(u, 64)? {
                        u.arbitrary()?
                    } else {
                        u.int_in_range(1 << 30..=i32::MAX)?
                    },
                    input_left_shift: left,
                    diff_min: if rare(u, 64)? {
                        u.arbitrary()?
                    } else {
                        -radius
                    },
                };
                let shape = Shape::new(s.h, s.w, s.c);
                (OwnedLayer::Softmax(sm), T { shape, zp: -128 })
            }
            _ => {
                // Concat of 2..=4 tensors with this height and width (and zero point).
                let want = u.int_in_range(2usize..=4)?;
                let mut c = s.c as u32;
                for t in (0..=i).rev() {
                    if inputs.len() == want {
                        break;
                    }
                    let o = tensors[t];
                    let fits = (o.shape.h, o.shape.w, o.zp) == (s.h, s.w, x.zp);
                    if (fits || rare(u, 64)?) && (t != first || rare(u, 4)?) {
                        inputs.push(t as u8);
                        c += o.shape.c as u32;
                    }
                }
                if inputs.len() < 2 {
                    inputs.push(first as u8);
                    c += s.c as u32;
                }
                let shape = Shape::new(s.h, s.w, c.min(u16::MAX as u32) as u16);
                (OwnedLayer::Concat, T { shape, zp: x.zp })
            }
        };
        tensors.push(out);
        layers.push(OwnedNode { inputs, layer });
    }
    let last = *tensors.last().unwrap_or(&input);
    let mut out_shape = last.shape;
    if rare(u, 64)? {
        out_shape.c = out_shape.c.wrapping_add(1);
    }
    let out_len =
        (out_shape.h as u64 * out_shape.w as u64 * out_shape.c as u64).min(u32::MAX as u64) as u32;
    let head = match u.int_in_range(0u8..=6)? {
        4 => Head::Values {
            outputs: if rare(u, 64)? {
                u.arbitrary()?
            } else {
                out_len
            },
        },
        0 | 1 if out_len > 4 => Head::Localizer {
            classes: (out_len - 4).min(u16::MAX as u32) as u16,
        },
        2 | 3 if out_shape.c > 5 => Head::GridDetector {
            classes: out_shape.c - 5,
            cell: small(u, 1, 8)?,
            obj_threshold: u.arbitrary()?,
            nms_iou_pct: small(u, 0, 100)?,
            max_detections: small(u, 1, 16)?,
        },
        _ => Head::Classifier {
            classes: if rare(u, 64)? {
                u.arbitrary()?
            } else {
                out_len.min(u16::MAX as u32) as u16
            },
        },
    };
    let in_scale = scale(u)?;
    let out_scale = scale(u)?;
    let out_zp = if rare(u, 64)? {
        u.arbitrary::<i8>()? as i32
    } else {
        last.zp as i32
    };
    let model = OwnedModel {
        rounding,
        name: "fuzz".into(),
        input: TensorSpec {
            shape: input.shape,
            quant: QuantParams {
                scale: in_scale,
                zero_point: in_zp as i32,
            },
        },
        output: TensorSpec {
            shape: out_shape,
            quant: QuantParams {
                scale: out_scale,
                zero_point: out_zp,
            },
        },
        layers,
        head,
        labels: labels(u, head.classes())?,
    };
    // Borrowed but not validated: the forged preamble below makes the loader the judge.
    let def = model.def().map_err(|_| arbitrary::Error::IncorrectFormat)?;
    let payload = postcard::to_allocvec(&def).map_err(|_| arbitrary::Error::IncorrectFormat)?;
    let planned = runtime::analyze(&def).ok().map(|a| a.arena_bytes as u32);
    let arena = match (planned, u.int_in_range(0u8..=31)?) {
        (Some(a), 0) => a.wrapping_add(4),
        (Some(a), 1) => a.wrapping_sub(4),
        (Some(a), _) => a,
        (None, _) => u.arbitrary()?,
    };
    let pre = Preamble {
        version: FORMAT_VERSION,
        arena_bytes: arena,
        payload_len: payload.len() as u32,
        crc32: crc32(&payload),
    };
    let mut out = pre.to_bytes().to_vec();
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Class names: mostly none, else one per class (sometimes one too many or too few, an empty
/// or over-long name, or a control character).
fn labels(u: &mut Unstructured, classes: Option<u16>) -> Result<String> {
    let n = match (classes, u.int_in_range(0u8..=3)?) {
        (_, 0 | 1) => return Ok(String::new()),
        (None, _) => 1,
        (Some(c), _) => (c as usize).min(300),
    };
    let n = match u.int_in_range(0u8..=15)? {
        0 => n + 1,
        1 => n.saturating_sub(1),
        _ => n,
    };
    let mut names: Vec<String> = (0..n).map(|i| format!("class {i}")).collect();
    if let (Some(k), true) = (names.len().checked_sub(1), rare(u, 8)?) {
        names[k] = match u.int_in_range(0u8..=2)? {
            0 => String::new(),
            1 => "x".repeat(runtime::format::MAX_LABEL_BYTES + 1),
            _ => "bell\u{7}".into(),
        };
    }
    Ok(names.join("\n"))
}

/// Checks a loaded model's layout against [`table_plan`] over the same regions: tensors by
/// index, then each layer's scratch, every region rounded up to 4 bytes.
fn check_layout(m: &Model) {
    let layers = m.layer_info();
    let round4 = |v: usize| (v + 3) & !3;
    let mut sizes = Vec::new();
    let mut life = Vec::new();
    let mut offsets = Vec::new();
    for t in 0..=layers.len() {
        let info = m.tensor(t).expect("tensor");
        sizes.push(round4(info.len));
        life.push((info.life.first, info.life.last));
        offsets.push(info.offset);
    }
    for l in layers.iter().filter(|l| l.scratch.len > 0) {
        sizes.push(round4(l.scratch.len));
        life.push((l.scratch.life.first, l.scratch.life.last));
        offsets.push(l.scratch.offset);
    }
    let chain = sizes.len() == layers.len() + 1
        && layers
            .iter()
            .enumerate()
            .all(|(k, l)| l.inputs.len() == 1 && l.inputs[0] as usize == k);
    let (want, arena) = table_plan(&sizes, &life, chain);
    assert_eq!(offsets, want, "layout differs from the table planner's");
    assert_eq!(m.arena_bytes(), arena);
}

/// What one input did: refused at load (with which error), or ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Refused(&'static str),
    Ran,
}

/// Loads `bytes`, and if the model loads: refuses an arena one byte short, runs it in the
/// exact arena and in a misaligned one on three inputs, and checks every output byte against
/// the reference interpreter and every decoded box against the input's bounds. Panics on any
/// disagreement.
pub fn exercise(bytes: &[u8], fill_seed: u64) -> Outcome {
    let m = match Model::from_bytes(bytes) {
        Ok(m) => m,
        Err(e) => return Outcome::Refused(error_kind(&e)),
    };
    let need = m.arena_bytes();
    assert!(need as u64 <= MAX_ARENA_BYTES);
    check_layout(&m);
    assert!(m.macs() as u64 <= MAX_MACS);
    if need > 1 << 18 || m.macs() > 60_000 {
        return Outcome::Ran; // valid, but too slow to run many times; the limits are checked
    }
    // One spare word in front so that the arena can also start off a word boundary (the
    // kernels then take their scratch-free paths).
    let mut buf = vec![0x5au8; need + 8];
    if need > 0 {
        assert!(matches!(
            Interpreter::new(&m, &mut buf[..need - 1]),
            Err(Error::ArenaTooSmall { .. })
        ));
    }
    let mut s = fill_seed | 1;
    for round in 0..3 {
        let input: Vec<i8> = (0..m.input_len())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match round {
                    0 => s as i8,
                    1 => i8::MIN,
                    _ => i8::MAX,
                }
            })
            .collect();
        let want = runtime::reference_model::invoke(&m, &input);
        // The misaligned arena once: its kernels take the same paths on every input.
        for start in if round == 0 {
            &[0usize, 1][..]
        } else {
            &[0][..]
        } {
            let start = *start;
            let arena = &mut buf[start..start + need];
            let mut it = Interpreter::new(&m, arena).expect("arena of the planned size");
            it.input_mut().copy_from_slice(&input);
            it.invoke().unwrap();
            assert_eq!(
                it.output(),
                &want[..],
                "kernels differ from the reference (arena offset {start})"
            );
        }
        // Decoded boxes lie within the input (1/16-pixel units).
        let s = m.def().input.shape;
        let inside = |b: runtime::BoxQ4| {
            assert!(
                0 <= b.x0 && b.x0 <= b.x1 && b.x1 <= s.w as i32 * 16,
                "{b:?}"
            );
            assert!(
                0 <= b.y0 && b.y0 <= b.y1 && b.y1 <= s.h as i32 * 16,
                "{b:?}"
            );
        };
        if let Some(d) = m.box_decoder() {
            inside(d.decode(&want).bbox);
        }
        if let Some(d) = m.grid_decoder() {
            d.decode(&want).iter().for_each(|det| inside(det.bbox));
        }
    }
    Outcome::Ran
}

/// The error's variant name, for tallies.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::BadParameter { what, .. } if std::env::var_os("FUZZ_DETAIL").is_some() => what,
        Error::QuantOutOfRange { what, .. } if std::env::var_os("FUZZ_DETAIL").is_some() => what,
        Error::BadParameter { .. } => "BadParameter",
        Error::ShapeMismatch { .. } => "ShapeMismatch",
        Error::ArrayLength { .. } => "ArrayLength",
        Error::QuantOutOfRange { .. } => "QuantOutOfRange",
        Error::LimitExceeded { .. } => "LimitExceeded",
        Error::ArenaMismatch { .. } => "ArenaMismatch",
        Error::OutputMismatch { .. } => "OutputMismatch",
        Error::BadDetectionHead { .. } => "BadDetectionHead",
        Error::BadLabels { .. } => "BadLabels",
        Error::LayerCount { .. } => "LayerCount",
        _ => "other",
    }
}
