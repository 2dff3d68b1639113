//! Loading: decode a blob once and check everything the kernels rely on (TFLM's "Prepare").
//! After [`Model::from_bytes`] succeeds, every shape, offset, length and quantization parameter
//! is known to be in range, so `invoke` only does integer arithmetic.

use crate::format::{
    Head, Layer, ModelDef, OutputStage, Preamble, Shape, MAX_INPUTS, MAX_LAYERS, MAX_TENSORS,
    REQUANT_BYTES,
};
use crate::kernels::{at_most_half, AddParams, ConvGeom, PoolGeom, MAX_BIAS, MAX_TAPS};
use crate::planner::{plan, Lifetime};
use crate::quant::Requant;
use crate::Error;

/// What a layer does, with its geometry resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Conv(ConvGeom),
    Depthwise(ConvGeom),
    MaxPool(PoolGeom),
    AvgPool(PoolGeom),
    GlobalAvgPool {
        channels: usize,
    },
    FullyConnected {
        in_features: usize,
        out_features: usize,
    },
    Add(AddParams),
    /// Channel concatenation over `pixels` pixels.
    Concat {
        pixels: usize,
    },
}

/// Per-layer facts computed at load time (also what `inspect` prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    pub step: Step,
    /// Shape of the first input.
    pub in_shape: Shape,
    pub out_shape: Shape,
    /// Multiply-accumulates per inference.
    pub macs: usize,
    /// Bytes of weights, biases and requantization parameters in the blob.
    pub param_bytes: usize,
}

/// Where a tensor lives in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TensorInfo {
    pub offset: usize,
    pub len: usize,
    pub life: Lifetime,
}

/// The result of checking a [`ModelDef`]: per-layer facts and the arena plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub layers: heapless::Vec<LayerInfo, MAX_LAYERS>,
    /// Tensor 0 is the model input, tensor `k + 1` layer `k`'s output.
    pub tensors: heapless::Vec<TensorInfo, MAX_TENSORS>,
    pub arena_bytes: usize,
    /// The lower bound no layout can beat: most bytes live at one step.
    pub live_peak_bytes: usize,
    /// Every tensor live at once (no reuse).
    pub naive_bytes: usize,
}

fn shape(h: usize, w: usize, c: usize, layer: u16) -> Result<Shape, Error> {
    let fit = |v: usize| u16::try_from(v).ok().filter(|&v| v > 0);
    match (fit(h), fit(w), fit(c)) {
        (Some(h), Some(w), Some(c)) => Ok(Shape { h, w, c }),
        _ => Err(Error::BadParameter {
            layer,
            what: "output shape (each dimension 1..=65535)",
        }),
    }
}

fn check_len(layer: u16, what: &'static str, found: usize, expected: usize) -> Result<(), Error> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::ArrayLength {
            layer,
            what,
            expected,
            found,
        })
    }
}

fn check_stage(layer: u16, st: &OutputStage, channels: usize) -> Result<usize, Error> {
    check_len(layer, "bias", st.bias.len(), channels * 4)?;
    check_len(
        layer,
        "requantization",
        st.requant.len(),
        channels * REQUANT_BYTES,
    )?;
    for b in st.bias.chunks_exact(4) {
        let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if !(-MAX_BIAS..=MAX_BIAS).contains(&v) {
            return Err(Error::QuantOutOfRange {
                layer,
                what: "bias",
            });
        }
    }
    for r in st.requant.chunks_exact(REQUANT_BYTES) {
        let q = Requant {
            multiplier: i32::from_le_bytes([r[0], r[1], r[2], r[3]]),
            shift: i32::from_le_bytes([r[4], r[5], r[6], r[7]]),
        };
        if !q.is_valid() {
            return Err(Error::QuantOutOfRange {
                layer,
                what: "requantization multiplier or shift",
            });
        }
    }
    if st.act_min > st.act_max {
        return Err(Error::QuantOutOfRange {
            layer,
            what: "activation clamp (min > max)",
        });
    }
    Ok(st.bias.len() + st.requant.len())
}

fn check_input_zp(layer: u16, declared: i8, producer: i8) -> Result<(), Error> {
    if declared == producer {
        Ok(())
    } else {
        Err(Error::QuantOutOfRange {
            layer,
            what: "input zero point (differs from the producer's)",
        })
    }
}

/// Checks a model definition and computes every layer's geometry and the arena peak.
#[inline(always)] // built in the caller's frame: one copy of the per-layer table less
pub fn analyze(def: &ModelDef) -> Result<Analysis, Error> {
    if def.layers.is_empty() {
        return Err(Error::LayerCount {
            found: 0,
            max: MAX_LAYERS,
        });
    }
    let mut cur = def.input.shape;
    if cur.is_empty() {
        return Err(Error::BadParameter {
            layer: 0,
            what: "input shape",
        });
    }
    let zp_ok = |zp: i32| (-128..=127).contains(&zp);
    if !zp_ok(def.input.quant.zero_point) || !zp_ok(def.output.quant.zero_point) {
        return Err(Error::QuantOutOfRange {
            layer: 0,
            what: "model input/output zero point",
        });
    }
    let n_layers = def.layers.len();
    let mut shapes = [Shape::new(0, 0, 0); MAX_TENSORS];
    let mut zps = [0i8; MAX_TENSORS];
    let mut life = [Lifetime::default(); MAX_TENSORS];
    shapes[0] = cur;
    zps[0] = def.input.quant.zero_point as i8;
    let mut chain = true;
    let mut layers = heapless::Vec::new();
    for (i, node) in def.layers.iter().enumerate() {
        let li = i as u16;
        let layer = &node.layer;
        let arity = match layer {
            Layer::Add(_) => 2..=2,
            Layer::Concat => 2..=MAX_INPUTS,
            _ => 1..=1,
        };
        if !arity.contains(&node.inputs.len()) {
            return Err(Error::BadParameter {
                layer: li,
                what: "number of inputs for this layer type",
            });
        }
        for &t in &node.inputs {
            let t = t as usize;
            if t > i {
                return Err(Error::BadParameter {
                    layer: li,
                    what: "input tensor id (must name the model input or an earlier layer)",
                });
            }
            life[t].last = i;
        }
        chain &= node.inputs.len() == 1 && node.inputs[0] as usize == i;
        life[i + 1] = Lifetime { first: i, last: i };
        let first = node.inputs[0] as usize;
        cur = shapes[first];
        let zp = zps[first];
        let mut out_zp = zp;
        let (h, w, c) = (cur.h as usize, cur.w as usize, cur.c as usize);
        let (step, out, macs, param_bytes) = match layer {
            Layer::Conv2d(cv) | Layer::DepthwiseConv2d(cv) => {
                let depthwise = matches!(layer, Layer::DepthwiseConv2d(_));
                if cv.in_channels as usize != c {
                    let found = [cur.h, cur.w, cv.in_channels];
                    return Err(Error::ShapeMismatch {
                        layer: li,
                        expected: cur.dims(),
                        found,
                    });
                }
                if depthwise && cv.out_channels != cv.in_channels {
                    return Err(Error::BadParameter {
                        layer: li,
                        what: "depthwise out_channels != in_channels",
                    });
                }
                let pool = cv.pool.map(|p| (p.kernel as usize, p.stride as usize));
                let g = ConvGeom::new(
                    h,
                    w,
                    c,
                    cv.out_channels as usize,
                    cv.kernel_h as usize,
                    cv.kernel_w as usize,
                    cv.stride as usize,
                    cv.padding as usize,
                    pool,
                )
                .ok_or(Error::BadParameter {
                    layer: li,
                    what: "convolution geometry",
                })?;
                let taps = g.k_h * g.k_w * if depthwise { 1 } else { c };
                if taps > MAX_TAPS {
                    return Err(Error::BadParameter {
                        layer: li,
                        what: "kernel taps (> 16384)",
                    });
                }
                let wn = if depthwise {
                    g.k_h * g.k_w * c
                } else {
                    g.out_c * taps
                };
                check_len(li, "weights", cv.weights.len(), wn)?;
                check_input_zp(li, cv.input_zero_point, zp)?;
                if cv.pool.is_some_and(|p| p.padding != 0) {
                    return Err(Error::BadParameter {
                        layer: li,
                        what: "fused pool padding (must be 0)",
                    });
                }
                let pb = wn + check_stage(li, &cv.output, g.out_c)?;
                out_zp = cv.output.zero_point;
                let macs = if depthwise { g.macs() / c } else { g.macs() };
                let step = if depthwise {
                    Step::Depthwise(g)
                } else {
                    Step::Conv(g)
                };
                (step, shape(g.out_h, g.out_w, g.out_c, li)?, macs, pb)
            }
            Layer::MaxPool2d(p) | Layer::AvgPool2d(p) => {
                let avg = matches!(layer, Layer::AvgPool2d(_));
                let pad = if avg && p.padding != 0 {
                    usize::MAX // average pools take no padding
                } else {
                    p.padding as usize
                };
                let g = PoolGeom::padded(h, w, c, p.kernel as usize, p.stride as usize, pad)
                    .ok_or(Error::BadParameter {
                        layer: li,
                        what: "pool geometry",
                    })?;
                let step = if matches!(layer, Layer::MaxPool2d(_)) {
                    Step::MaxPool(g)
                } else {
                    Step::AvgPool(g)
                };
                (step, shape(g.out_h, g.out_w, c, li)?, 0, 0)
            }
            Layer::GlobalAvgPool => (
                Step::GlobalAvgPool { channels: c },
                shape(1, 1, c, li)?,
                0,
                0,
            ),
            Layer::FullyConnected(fc) => {
                let n_in = cur.len();
                if fc.in_features as usize != n_in {
                    let found = [1, 1, fc.in_features.min(u16::MAX as u32) as u16];
                    return Err(Error::ShapeMismatch {
                        layer: li,
                        expected: cur.dims(),
                        found,
                    });
                }
                if n_in > MAX_TAPS {
                    return Err(Error::BadParameter {
                        layer: li,
                        what: "in_features (> 16384)",
                    });
                }
                let n_out = fc.out_features as usize;
                if n_out == 0 {
                    return Err(Error::BadParameter {
                        layer: li,
                        what: "out_features",
                    });
                }
                check_len(li, "weights", fc.weights.len(), n_in * n_out)?;
                check_input_zp(li, fc.input_zero_point, zp)?;
                let pb = n_in * n_out + check_stage(li, &fc.output, n_out)?;
                out_zp = fc.output.zero_point;
                let step = Step::FullyConnected {
                    in_features: n_in,
                    out_features: n_out,
                };
                (step, shape(1, 1, n_out, li)?, n_in * n_out, pb)
            }
            Layer::Add(a) => {
                let other = node.inputs[1] as usize;
                if shapes[other] != cur {
                    return Err(Error::ShapeMismatch {
                        layer: li,
                        expected: cur.dims(),
                        found: shapes[other].dims(),
                    });
                }
                check_input_zp(li, a.input_zero_points[0], zp)?;
                check_input_zp(li, a.input_zero_points[1], zps[other])?;
                if !at_most_half(a.requant[0])
                    || !at_most_half(a.requant[1])
                    || !a.requant[2].is_valid()
                {
                    return Err(Error::QuantOutOfRange {
                        layer: li,
                        what: "add rescale (inputs at most 1/2, output valid)",
                    });
                }
                if a.act_min > a.act_max {
                    return Err(Error::QuantOutOfRange {
                        layer: li,
                        what: "activation clamp (min > max)",
                    });
                }
                out_zp = a.zero_point;
                (Step::Add(AddParams::from_layer(a)), cur, 0, 0)
            }
            Layer::Concat => {
                let mut channels = 0usize;
                for &t in &node.inputs {
                    let s = shapes[t as usize];
                    if (s.h, s.w) != (cur.h, cur.w) {
                        return Err(Error::ShapeMismatch {
                            layer: li,
                            expected: cur.dims(),
                            found: s.dims(),
                        });
                    }
                    check_input_zp(li, zps[t as usize], zp)?;
                    channels += s.c as usize;
                }
                let step = Step::Concat { pixels: h * w };
                (step, shape(h, w, channels, li)?, 0, 0)
            }
        };
        let info = LayerInfo {
            step,
            in_shape: cur,
            out_shape: out,
            macs,
            param_bytes,
        };
        layers.push(info).map_err(|_| Error::LayerCount {
            found: def.layers.len(),
            max: MAX_LAYERS,
        })?;
        shapes[i + 1] = out;
        zps[i + 1] = out_zp;
        cur = out;
    }
    let zp = zps[n_layers];
    life[n_layers].last = n_layers - 1; // the output stays live to the end
    if def.output.shape != cur {
        return Err(Error::OutputMismatch {
            expected: def.output.shape.dims(),
            found: cur.dims(),
        });
    }
    if def.output.quant.zero_point != zp as i32 {
        return Err(Error::QuantOutOfRange {
            layer: li_last(def),
            what: "model output zero point",
        });
    }
    match def.head {
        Head::Classifier { classes } if classes as usize == cur.len() => {}
        Head::Classifier { .. } => {
            return Err(Error::BadDetectionHead {
                what: "class count != output length",
            })
        }
        Head::Localizer { classes } if classes > 0 && classes as usize + 4 == cur.len() => {
            crate::detect::BoxDecoder::new(def)?;
        }
        Head::Localizer { .. } => {
            return Err(Error::BadDetectionHead {
                what: "classes + 4 != output length",
            })
        }
        Head::GridDetector { .. } => {
            crate::detect::GridDecoder::new(def)?;
        }
    }
    let n_tensors = n_layers + 1;
    let mut sizes = [0usize; MAX_TENSORS];
    for (s, sh) in sizes.iter_mut().zip(&shapes[..n_tensors]) {
        *s = sh.len();
    }
    let p = plan(&sizes[..n_tensors], &life[..n_tensors], chain);
    let mut tensors = heapless::Vec::new();
    for t in 0..n_tensors {
        let info = TensorInfo {
            offset: p.offsets[t],
            len: sizes[t],
            life: life[t],
        };
        let _ = tensors.push(info); // n_tensors <= MAX_TENSORS
    }
    Ok(Analysis {
        layers,
        tensors,
        arena_bytes: p.arena_bytes,
        live_peak_bytes: p.live_peak_bytes,
        naive_bytes: p.naive_bytes,
    })
}

fn li_last(def: &ModelDef) -> u16 {
    def.layers.len().saturating_sub(1) as u16
}

/// A validated model borrowing its weights from the blob.
#[derive(Debug, Clone)]
pub struct Model<'a> {
    def: ModelDef<'a>,
    analysis: Analysis,
    blob_bytes: usize,
    boxes: Option<crate::detect::BoxDecoder>,
    grid: Option<crate::detect::GridDecoder>,
}

impl<'a> Model<'a> {
    /// Decodes and validates a blob: magic, version, length, CRC, then every layer.
    /// (Inlined so the model is built in the caller's frame instead of copied into it: this
    /// saves several kilobytes of stack on a device.)
    #[inline(always)]
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        let (pre, payload) = Preamble::parse(bytes)?;
        let computed = crc32(payload);
        if computed != pre.crc32 {
            return Err(Error::CrcMismatch {
                expected: pre.crc32,
                computed,
            });
        }
        let (def, rest) =
            postcard::take_from_bytes::<ModelDef<'a>>(payload).map_err(|_| Error::Decode)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { extra: rest.len() });
        }
        let analysis = analyze(&def)?;
        if analysis.arena_bytes != pre.arena_bytes as usize {
            return Err(Error::ArenaMismatch {
                declared: pre.arena_bytes as usize,
                planned: analysis.arena_bytes,
            });
        }
        let boxes = crate::detect::BoxDecoder::new(&def)?;
        let grid = crate::detect::GridDecoder::new(&def)?;
        Ok(Model {
            def,
            analysis,
            blob_bytes: bytes.len(),
            boxes,
            grid,
        })
    }

    /// The box decoder of a localization model, `None` for a classifier.
    pub fn box_decoder(&self) -> Option<&crate::detect::BoxDecoder> {
        self.boxes.as_ref()
    }

    /// The grid decoder of a detection model, `None` otherwise.
    pub fn grid_decoder(&self) -> Option<&crate::detect::GridDecoder> {
        self.grid.as_ref()
    }

    pub fn def(&self) -> &ModelDef<'a> {
        &self.def
    }
    /// Exact arena bytes `Interpreter::new` needs.
    pub fn arena_bytes(&self) -> usize {
        self.analysis.arena_bytes
    }
    pub fn blob_bytes(&self) -> usize {
        self.blob_bytes
    }
    pub fn input_len(&self) -> usize {
        self.def.input.shape.len()
    }
    pub fn output_len(&self) -> usize {
        self.def.output.shape.len()
    }
    pub fn layer_info(&self) -> &[LayerInfo] {
        &self.analysis.layers
    }
    /// Offsets, sizes and lifetimes of every tensor (input first).
    pub fn tensors(&self) -> &[crate::model::TensorInfo] {
        &self.analysis.tensors
    }
    /// The plan's figures: `(arena, live peak lower bound, naive all-live)` bytes.
    pub fn arena_figures(&self) -> (usize, usize, usize) {
        (
            self.analysis.arena_bytes,
            self.analysis.live_peak_bytes,
            self.analysis.naive_bytes,
        )
    }
    /// Total multiply-accumulates per inference.
    pub fn macs(&self) -> usize {
        self.analysis.layers.iter().map(|l| l.macs).sum()
    }
}

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32 (IEEE 802.3), as in zip and PNG.
pub fn crc32(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}
