//! Models from configuration: a layer stack described in TOML or JSON (or the built-in
//! `ref-cnn`), checked when loaded, with parameters and BatchNorm state kept apart.

use crate::nn::autograd::{BatchNormState, Conv2dParams, Graph, Tensor, Var};
use crate::nn::init::Init;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// One layer of an architecture file. PyTorch names; activations are NHWC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv2d {
        out_channels: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    BatchNorm2d,
    Relu,
    MaxPool2d {
        kernel: usize,
        stride: Option<usize>,
    },
    AvgPool2d {
        kernel: usize,
        stride: Option<usize>,
    },
    GlobalAvgPool,
    Dropout {
        p: f32,
    },
    Flatten,
    Linear {
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// ResNet basic block: conv3x3 (stride) -> BN -> ReLU -> conv3x3 -> BN, plus the identity
    /// shortcut (or a 1x1 conv + BN projection when the stride or the channel count changes),
    /// then ReLU. Convs inside blocks have no bias (BN follows each).
    Residual {
        out_channels: usize,
        #[serde(default = "one")]
        stride: usize,
    },
    /// GoogLeNet Inception module with BN: four branches concatenated on channels, in order
    /// 1x1 (`b1`); 1x1 (`b3_reduce`) -> 3x3 (`b3`); 1x1 (`b5_reduce`) -> 5x5 (`b5`);
    /// 3x3 max-pool (stride 1, padding 1) -> 1x1 (`pool_proj`). Every conv is followed by BN
    /// and ReLU; spatial size is kept.
    Inception {
        b1: usize,
        b3_reduce: usize,
        b3: usize,
        b5_reduce: usize,
        b5: usize,
        pool_proj: usize,
    },
}

/// One convolution inside a block (always followed by BatchNorm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConv {
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// Positions of a residual block's convs in [`LayerSpec::block_convs`].
pub mod residual {
    pub const CONV1: usize = 0;
    pub const CONV2: usize = 1;
    pub const PROJECTION: usize = 2;
}

/// Positions of an Inception module's convs in [`LayerSpec::block_convs`].
pub mod inception {
    pub const B1: usize = 0;
    pub const B3_REDUCE: usize = 1;
    pub const B3: usize = 2;
    pub const B5_REDUCE: usize = 3;
    pub const B5: usize = 4;
    pub const POOL_PROJ: usize = 5;
}

impl LayerSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::BatchNorm2d => "batch_norm2d",
            LayerSpec::Relu => "relu",
            LayerSpec::MaxPool2d { .. } => "max_pool2d",
            LayerSpec::AvgPool2d { .. } => "avg_pool2d",
            LayerSpec::GlobalAvgPool => "global_avg_pool",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Residual { .. } => "residual",
            LayerSpec::Inception { .. } => "inception",
        }
    }

    /// The convolutions inside a block reading `in_c` channels (empty for plain layers).
    pub fn block_convs(&self, in_c: usize) -> Vec<BlockConv> {
        let conv = |in_c, out_c, kernel, stride| BlockConv {
            in_c,
            out_c,
            kernel,
            stride,
            padding: kernel / 2,
        };
        match *self {
            LayerSpec::Residual {
                out_channels: c,
                stride,
            } => {
                let mut v = vec![conv(in_c, c, 3, stride), conv(c, c, 3, 1)];
                if stride != 1 || in_c != c {
                    v.push(conv(in_c, c, 1, stride));
                }
                v
            }
            LayerSpec::Inception {
                b1,
                b3_reduce,
                b3,
                b5_reduce,
                b5,
                pool_proj,
            } => vec![
                conv(in_c, b1, 1, 1),
                conv(in_c, b3_reduce, 1, 1),
                conv(b3_reduce, b3, 3, 1),
                conv(in_c, b5_reduce, 1, 1),
                conv(b5_reduce, b5, 5, 1),
                conv(in_c, pool_proj, 1, 1),
            ],
            _ => Vec::new(),
        }
    }
}

/// A whole architecture: input `[h, w, c]`, class count and the layer stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    pub name: String,
    pub input: [usize; 3],
    pub classes: usize,
    pub layers: Vec<LayerSpec>,
    /// Localization: the last layer also outputs a box `[x0, y0, x1, y1]` (fractions of the
    /// input size) after the class logits, a box head sharing the trunk with the class head.
    #[serde(default)]
    pub boxes: bool,
    /// Grid detection: the last layer is a feature map of `5 + classes` channels per cell,
    /// `[objectness, cx, cy, w, h, class logits...]` (box in input pixels, centre relative to
    /// the cell's corner).
    #[serde(default)]
    pub grid: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// (`cause`, not `source`: the message already says it, and a source would be printed
    /// again by the error chain.)
    #[error("cannot read architecture file {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("architecture file {path}: {why}")]
    Parse { path: String, why: String },
    #[error("architecture '{arch}', layer {index} ({kind}): {why}")]
    Layer {
        arch: String,
        index: usize,
        kind: &'static str,
        why: String,
    },
    #[error("architecture '{arch}': {why}")]
    Whole { arch: String, why: String },
    #[error("unknown built-in architecture '{0}' (built in: ref-cnn, loc-cnn, grid-det, tiny-resnet, tiny-inception)")]
    Unknown(String),
}

/// Activation shape while walking the stack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// `[h, w, c]` feature map.
    Map(usize, usize, usize),
    /// Flat feature vector.
    Flat(usize),
}

/// The stem of the graph models: 3x3 conv (16, no bias) -> BN -> ReLU -> 2x2 max-pool.
fn stem_16() -> Vec<LayerSpec> {
    vec![
        LayerSpec::Conv2d {
            out_channels: 16,
            kernel: 3,
            stride: 1,
            padding: 1,
            bias: false,
        },
        LayerSpec::BatchNorm2d,
        LayerSpec::Relu,
        LayerSpec::MaxPool2d {
            kernel: 2,
            stride: None,
        },
    ]
}

impl ArchSpec {
    /// The reference CNN (bench/PEERS.md): 9,146 parameters.
    pub fn ref_cnn() -> ArchSpec {
        use LayerSpec::*;
        ArchSpec {
            name: "ref-cnn".into(),
            input: [28, 28, 1],
            classes: 10,
            layers: vec![
                Conv2d {
                    out_channels: 8,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    bias: true,
                },
                BatchNorm2d,
                Relu,
                MaxPool2d {
                    kernel: 2,
                    stride: None,
                },
                Conv2d {
                    out_channels: 16,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    bias: true,
                },
                BatchNorm2d,
                Relu,
                MaxPool2d {
                    kernel: 2,
                    stride: None,
                },
                Flatten,
                Linear {
                    out_features: 10,
                    bias: true,
                },
            ],
            boxes: false,
            grid: false,
        }
    }

    /// Single-object localization on 40x40 canvases: a three-stage conv trunk, then one
    /// hidden layer feeding the class logits and the box (10 + 4 outputs).
    pub fn loc_cnn() -> ArchSpec {
        use LayerSpec::*;
        let conv = |c| Conv2d {
            out_channels: c,
            kernel: 3,
            stride: 1,
            padding: 1,
            bias: true,
        };
        let pool = MaxPool2d {
            kernel: 2,
            stride: None,
        };
        ArchSpec {
            name: "loc-cnn".into(),
            input: [40, 40, 1],
            classes: 10,
            layers: vec![
                conv(16),
                BatchNorm2d,
                Relu,
                pool,
                conv(32),
                BatchNorm2d,
                Relu,
                pool,
                conv(32),
                BatchNorm2d,
                Relu,
                pool,
                Flatten,
                Linear {
                    out_features: 64,
                    bias: true,
                },
                Relu,
                Linear {
                    out_features: 14,
                    bias: true,
                },
            ],
            boxes: true,
            grid: false,
        }
    }

    /// Number of outputs of the last layer: class logits, then 4 box values if `boxes`.
    pub fn outputs(&self) -> usize {
        if self.grid {
            5 + self.classes
        } else {
            self.classes + if self.boxes { 4 } else { 0 }
        }
    }

    /// Multi-object detector on 64x64 canvases: a fully convolutional trunk down to an 8x8
    /// grid (8-pixel cells), a 3x3 conv and a 1x1 conv predicting `5 + 10` values per cell.
    pub fn grid_det() -> ArchSpec {
        use LayerSpec::*;
        let conv = |c, k, p| Conv2d {
            out_channels: c,
            kernel: k,
            stride: 1,
            padding: p,
            bias: true,
        };
        let pool = MaxPool2d {
            kernel: 2,
            stride: None,
        };
        ArchSpec {
            name: "grid-det".into(),
            input: [64, 64, 1],
            classes: 10,
            layers: vec![
                conv(16, 3, 1),
                BatchNorm2d,
                Relu,
                pool,
                conv(32, 3, 1),
                BatchNorm2d,
                Relu,
                pool,
                conv(32, 3, 1),
                BatchNorm2d,
                Relu,
                pool,
                conv(64, 3, 1),
                BatchNorm2d,
                Relu,
                conv(15, 1, 0),
            ],
            boxes: false,
            grid: true,
        }
    }

    /// A small ResNet for 28x28 digits: a 3x3 stem, three residual stages (the last two
    /// downsample with stride-2 convs instead of pooling), global average pooling, a linear
    /// classifier.
    pub fn tiny_resnet() -> ArchSpec {
        use LayerSpec::*;
        ArchSpec {
            name: "tiny-resnet".into(),
            input: [28, 28, 1],
            classes: 10,
            layers: [
                stem_16(),
                vec![
                    Residual {
                        out_channels: 16,
                        stride: 1,
                    },
                    Residual {
                        out_channels: 24,
                        stride: 2,
                    },
                    Residual {
                        out_channels: 40,
                        stride: 2,
                    },
                    GlobalAvgPool,
                    Linear {
                        out_features: 10,
                        bias: true,
                    },
                ],
            ]
            .concat(),
            boxes: false,
            grid: false,
        }
    }

    /// A small GoogLeNet for 28x28 digits: a 3x3 stem, three Inception modules at 14x14, 7x7
    /// and 3x3, each after a 2x2 max-pool, global average pooling, a linear classifier.
    pub fn tiny_inception() -> ArchSpec {
        use LayerSpec::*;
        let pool = MaxPool2d {
            kernel: 2,
            stride: None,
        };
        let inception = |b1, b3_reduce, b3, b5_reduce, b5, pool_proj| Inception {
            b1,
            b3_reduce,
            b3,
            b5_reduce,
            b5,
            pool_proj,
        };
        ArchSpec {
            name: "tiny-inception".into(),
            input: [28, 28, 1],
            classes: 10,
            layers: [
                stem_16(),
                vec![
                    inception(8, 12, 16, 4, 8, 8),
                    pool,
                    inception(24, 16, 32, 8, 16, 16),
                    pool,
                    inception(32, 24, 48, 8, 16, 16),
                    GlobalAvgPool,
                    Linear {
                        out_features: 10,
                        bias: true,
                    },
                ],
            ]
            .concat(),
            boxes: false,
            grid: false,
        }
    }

    /// Grid cell side in input pixels (grid models).
    pub fn cell(&self) -> Option<usize> {
        match self.validate().ok()?.last()? {
            Act::Map(h, _, _) if self.grid && *h > 0 => Some(self.input[0] / h),
            _ => None,
        }
    }

    /// Multiply-accumulates of one forward pass: convolutions (those inside residual and
    /// Inception blocks too) and linear layers. The runtime's `LayerInfo::macs` of the
    /// exported blob adds up to the same figure (BatchNorm folds away; pools, adds and concats
    /// count none); a test checks it on every built-in model. 0 for an invalid architecture.
    pub fn macs(&self) -> usize {
        let Ok(shapes) = self.validate() else {
            return 0;
        };
        let mut prev = Act::Map(self.input[0], self.input[1], self.input[2]);
        let mut macs = 0;
        for (l, &out) in self.layers.iter().zip(&shapes) {
            macs += match (*l, prev, out) {
                (LayerSpec::Conv2d { kernel, .. }, Act::Map(_, _, ic), Act::Map(oh, ow, oc)) => {
                    oh * ow * oc * kernel * kernel * ic
                }
                (LayerSpec::Linear { out_features, .. }, Act::Flat(n), _) => n * out_features,
                // Every conv of a block outputs at the block's output resolution.
                (
                    LayerSpec::Residual { .. } | LayerSpec::Inception { .. },
                    Act::Map(_, _, ic),
                    Act::Map(oh, ow, _),
                ) => l
                    .block_convs(ic)
                    .iter()
                    .map(|c| oh * ow * c.out_c * c.kernel * c.kernel * c.in_c)
                    .sum(),
                _ => 0,
            };
            prev = out;
        }
        macs
    }

    pub fn builtin(name: &str) -> Result<ArchSpec, ArchError> {
        match name {
            "ref-cnn" => Ok(ArchSpec::ref_cnn()),
            "loc-cnn" => Ok(ArchSpec::loc_cnn()),
            "grid-det" => Ok(ArchSpec::grid_det()),
            "tiny-resnet" => Ok(ArchSpec::tiny_resnet()),
            "tiny-inception" => Ok(ArchSpec::tiny_inception()),
            other => Err(ArchError::Unknown(other.into())),
        }
    }

    /// Reads a `.toml` or `.json` architecture file and validates it.
    pub fn from_file(path: &Path) -> Result<ArchSpec, ArchError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ArchError::Io {
            path: p.clone(),
            cause,
        })?;
        let spec: ArchSpec = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| ArchError::Parse {
                path: p.clone(),
                why: e.to_string(),
            })?
        } else {
            toml::from_str(&text).map_err(|e| {
                // One line: the message and where, not toml's multi-line source excerpt. An
                // unknown field inside a layer is reported by serde without a usable span (the
                // tagged layer is buffered first), so find the key's own line.
                let span_line = e.span().map_or(0, |sp| {
                    text[..sp.start.min(text.len())].lines().count().max(1)
                });
                let key_line = e
                    .message()
                    .split("unknown field `")
                    .nth(1)
                    .and_then(|rest| rest.split('`').next())
                    .and_then(|key| {
                        text.lines().position(|l| {
                            l.trim_start()
                                .strip_prefix(key)
                                .is_some_and(|r| r.trim_start().starts_with('='))
                        })
                    })
                    .map(|i| i + 1);
                let line = key_line.unwrap_or(span_line);
                ArchError::Parse {
                    path: p.clone(),
                    why: format!("line {line}: {}", e.message()),
                }
            })?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Walks the stack, checking every layer can follow the previous one; returns each layer's
    /// output shape. This is where unsupported combinations are rejected, naming the layer.
    pub fn validate(&self) -> Result<Vec<Act>, ArchError> {
        let [h, w, c] = self.input;
        if h == 0 || w == 0 || c == 0 || self.classes < 2 {
            return Err(ArchError::Whole {
                arch: self.name.clone(),
                why: "input dimensions must be positive and classes >= 2".into(),
            });
        }
        if h > MAX_DIM || w > MAX_DIM || c > MAX_DIM || self.classes > MAX_DIM {
            return Err(ArchError::Whole {
                arch: self.name.clone(),
                why: format!("input dimensions and classes must be at most {MAX_DIM}"),
            });
        }
        let mut params = 0u64;
        let mut cur = Act::Map(h, w, c);
        let mut out = Vec::new();
        for (index, l) in self.layers.iter().enumerate() {
            let err = |why: String| ArchError::Layer {
                arch: self.name.clone(),
                index,
                kind: l.kind(),
                why,
            };
            let prev = index.checked_sub(1).map(|i| &self.layers[i]);
            cur = match (*l, cur) {
                (
                    LayerSpec::Conv2d {
                        out_channels,
                        kernel,
                        stride,
                        padding,
                        ..
                    },
                    Act::Map(h, w, _),
                ) => {
                    if out_channels == 0 || kernel == 0 || stride == 0 {
                        return Err(err(
                            "out_channels, kernel and stride must be positive".into()
                        ));
                    }
                    if kernel > 255 || stride > 255 || padding > 255 || out_channels > MAX_DIM {
                        return Err(err(format!(
                            "kernel, stride and padding must be at most 255 and out_channels at \
                             most {MAX_DIM} (the device format's fields)"
                        )));
                    }
                    let in_c = match cur {
                        Act::Map(_, _, c) => c,
                        Act::Flat(n) => n,
                    };
                    params = params.saturating_add(
                        (kernel as u64 * kernel as u64 * in_c as u64 + 1) * out_channels as u64,
                    );
                    if padding >= kernel && padding > 0 {
                        return Err(err(format!(
                            "padding {padding} must be smaller than the kernel {kernel}"
                        )));
                    }
                    if h + 2 * padding < kernel || w + 2 * padding < kernel {
                        return Err(err(format!(
                            "kernel {kernel} larger than the padded {h}x{w} input"
                        )));
                    }
                    Act::Map(
                        (h + 2 * padding - kernel) / stride + 1,
                        (w + 2 * padding - kernel) / stride + 1,
                        out_channels,
                    )
                }
                (LayerSpec::BatchNorm2d, Act::Map(..)) => {
                    if !matches!(prev, Some(LayerSpec::Conv2d { .. })) {
                        return Err(err("batch_norm2d must directly follow a conv2d (it is folded into it for the device)".into()));
                    }
                    cur
                }
                (LayerSpec::Relu, _) | (LayerSpec::Dropout { .. }, _) => {
                    if let LayerSpec::Dropout { p } = l {
                        if !(0.0..1.0).contains(p) {
                            return Err(err(format!("p = {p} must be in [0, 1)")));
                        }
                    }
                    cur
                }
                (
                    LayerSpec::MaxPool2d { kernel, stride }
                    | LayerSpec::AvgPool2d { kernel, stride },
                    Act::Map(h, w, c),
                ) => {
                    let s = stride.unwrap_or(kernel);
                    if kernel == 0 || s == 0 || kernel > h || kernel > w {
                        return Err(err(format!(
                            "window {kernel} (stride {s}) does not fit the {h}x{w} input"
                        )));
                    }
                    Act::Map((h - kernel) / s + 1, (w - kernel) / s + 1, c)
                }
                (
                    LayerSpec::Residual {
                        out_channels,
                        stride,
                    },
                    Act::Map(h, w, _),
                ) => {
                    if out_channels == 0 || stride == 0 || stride > 2 || out_channels > MAX_DIM {
                        return Err(err(format!(
                            "out_channels must be 1..={MAX_DIM} and stride 1 or 2"
                        )));
                    }
                    let in_c = match cur {
                        Act::Map(_, _, c) => c as u64,
                        Act::Flat(n) => n as u64,
                    };
                    let oc = out_channels as u64;
                    params = params.saturating_add(9 * in_c * oc + 9 * oc * oc + in_c * oc);
                    Act::Map((h - 1) / stride + 1, (w - 1) / stride + 1, out_channels)
                }
                (
                    LayerSpec::Inception {
                        b1,
                        b3_reduce,
                        b3,
                        b5_reduce,
                        b5,
                        pool_proj,
                    },
                    Act::Map(h, w, _),
                ) => {
                    if [b1, b3_reduce, b3, b5_reduce, b5, pool_proj].contains(&0) {
                        return Err(err("every branch needs at least one channel".into()));
                    }
                    if [b1, b3_reduce, b3, b5_reduce, b5, pool_proj]
                        .iter()
                        .any(|&b| b > MAX_DIM)
                    {
                        return Err(err(format!(
                            "branches must have at most {MAX_DIM} channels"
                        )));
                    }
                    let in_c = match cur {
                        Act::Map(_, _, c) => c as u64,
                        Act::Flat(n) => n as u64,
                    };
                    let [q1, q3r, q3, q5r, q5, qp] =
                        [b1, b3_reduce, b3, b5_reduce, b5, pool_proj].map(|b| b as u64);
                    params = params.saturating_add(
                        in_c * (q1 + q3r + q5r + qp) + 9 * q3r * q3 + 25 * q5r * q5,
                    );
                    Act::Map(h, w, b1 + b3 + b5 + pool_proj)
                }
                (LayerSpec::GlobalAvgPool, Act::Map(_, _, c)) => Act::Flat(c),
                (LayerSpec::Flatten, Act::Map(h, w, c)) => Act::Flat(h * w * c),
                (LayerSpec::Linear { out_features, .. }, Act::Flat(n)) => {
                    if out_features == 0 || out_features > MAX_DIM {
                        return Err(err(format!(
                            "out_features must be 1..={MAX_DIM} (the device format's field)"
                        )));
                    }
                    params = params.saturating_add((n as u64 + 1) * out_features as u64);
                    Act::Flat(out_features)
                }
                (LayerSpec::Linear { .. }, Act::Map(..)) => {
                    return Err(err(
                        "needs a flat input: add a flatten or global_avg_pool layer before it"
                            .into(),
                    ))
                }
                (_, Act::Flat(_)) => {
                    return Err(err(
                        "needs a [h, w, c] feature map but follows a flat vector".into(),
                    ))
                }
            };
            let elems = match cur {
                Act::Map(h, w, c) => (h as u64).saturating_mul(w as u64).saturating_mul(c as u64),
                Act::Flat(n) => n as u64,
            };
            if elems > MAX_ACTIVATION_ELEMS {
                return Err(err(format!(
                    "its output holds {elems} values per image, over the limit of \
                     {MAX_ACTIVATION_ELEMS}"
                )));
            }
            if params > MAX_PARAMS {
                return Err(err(format!(
                    "the model reaches {params} parameters here, over the limit of {MAX_PARAMS}"
                )));
            }
            out.push(cur);
        }
        if self.grid {
            let ok = matches!(cur, Act::Map(h, w, c) if c == self.outputs() && self.input[0].is_multiple_of(h) && self.input[1].is_multiple_of(w) && self.input[0] / h == self.input[1] / w);
            if !ok {
                return Err(ArchError::Whole {
                    arch: self.name.clone(),
                    why: format!("a grid detector must end in a map of {} channels whose cells tile the input, it ends in {cur:?}", self.outputs()),
                });
            }
        } else if cur != Act::Flat(self.outputs()) {
            return Err(ArchError::Whole {
                arch: self.name.clone(),
                why: format!(
                    "the last layer must output {} values (class logits{}), it outputs {cur:?}",
                    self.outputs(),
                    if self.boxes { " then a box" } else { "" }
                ),
            });
        }
        Ok(out)
    }
}

/// Largest input dimension, class count and channel count (the device format's u16 fields).
pub const MAX_DIM: usize = 65_535;
/// Most values one layer may output per image (a batch of 64 of them is 1 GiB of f32).
pub const MAX_ACTIVATION_ELEMS: u64 = 1 << 22;
/// Most parameters a model may have (256 MiB of f32).
pub const MAX_PARAMS: u64 = 1 << 26;

/// Where a layer's parameters and state live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Slot {
    None,
    /// Weight index, optional bias index.
    Weights(usize, Option<usize>),
    /// gamma, beta parameter indices and the BatchNorm state index.
    Norm(usize, usize, usize),
    /// A block: its `block_convs` in order, each with three parameters (weight, gamma, beta)
    /// from the first index and one BatchNorm state from the second.
    Block(usize, usize),
}

impl Slot {
    /// `(weight, gamma, beta, bn state)` of conv `j` of a block.
    pub fn block_conv(self, j: usize) -> Option<(usize, usize, usize, usize)> {
        match self {
            Slot::Block(p, b) => Some((p + 3 * j, p + 3 * j + 1, p + 3 * j + 2, b + j)),
            _ => None,
        }
    }
}

/// A model: architecture, parameters (trained) and BatchNorm running statistics (state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub arch: ArchSpec,
    pub params: Vec<Tensor>,
    pub bn: Vec<BatchNormState>,
}

impl Model {
    /// He-normal weights (the nets are ReLU nets), zero biases, BatchNorm gamma 1 and beta 0.
    pub fn new(arch: ArchSpec, rng: &mut ChaCha8Rng) -> Result<Model, ArchError> {
        Self::with_init(arch, Init::HeNormal, rng)
    }

    pub fn with_init(arch: ArchSpec, init: Init, rng: &mut ChaCha8Rng) -> Result<Model, ArchError> {
        let shapes = arch.validate()?;
        let mut params = Vec::new();
        let mut bn = Vec::new();
        let mut in_c = arch.input[2];
        let mut flat = 0;
        for (l, s) in arch.layers.iter().zip(&shapes) {
            match *l {
                LayerSpec::Conv2d {
                    out_channels,
                    kernel,
                    bias,
                    ..
                } => {
                    params.push(init.init(&[out_channels, kernel, kernel, in_c], rng));
                    if bias {
                        params.push(Tensor::zeros(ndarray::IxDyn(&[out_channels])));
                    }
                }
                LayerSpec::BatchNorm2d => {
                    params.push(Tensor::ones(ndarray::IxDyn(&[in_c])));
                    params.push(Tensor::zeros(ndarray::IxDyn(&[in_c])));
                    bn.push(BatchNormState::new(in_c));
                }
                LayerSpec::Linear { out_features, bias } => {
                    params.push(init.init(&[out_features, flat], rng));
                    if bias {
                        params.push(Tensor::zeros(ndarray::IxDyn(&[out_features])));
                    }
                }
                LayerSpec::Residual { .. } | LayerSpec::Inception { .. } => {
                    for bc in l.block_convs(in_c) {
                        let shape = [bc.out_c, bc.kernel, bc.kernel, bc.in_c];
                        params.push(init.init(&shape, rng));
                        params.push(Tensor::ones(ndarray::IxDyn(&[bc.out_c])));
                        params.push(Tensor::zeros(ndarray::IxDyn(&[bc.out_c])));
                        bn.push(BatchNormState::new(bc.out_c));
                    }
                }
                _ => {}
            }
            match *s {
                Act::Map(_, _, c) => in_c = c,
                Act::Flat(n) => flat = n,
            }
        }
        Ok(Model { arch, params, bn })
    }

    pub(crate) fn slots(&self) -> Vec<Slot> {
        let (mut p, mut b) = (0, 0);
        let in_cs = self.in_channels();
        self.arch
            .layers
            .iter()
            .zip(in_cs)
            .map(|(l, in_c)| match *l {
                LayerSpec::Residual { .. } | LayerSpec::Inception { .. } => {
                    let n = l.block_convs(in_c).len();
                    let s = Slot::Block(p, b);
                    p += 3 * n;
                    b += n;
                    s
                }
                LayerSpec::Conv2d { bias, .. } | LayerSpec::Linear { bias, .. } => {
                    let s = Slot::Weights(p, bias.then_some(p + 1));
                    p += 1 + bias as usize;
                    s
                }
                LayerSpec::BatchNorm2d => {
                    let s = Slot::Norm(p, p + 1, b);
                    p += 2;
                    b += 1;
                    s
                }
                _ => Slot::None,
            })
            .collect()
    }

    /// Per layer: the indices of its parameters and of its BatchNorm states.
    pub fn layer_params(&self) -> Vec<(Vec<usize>, Vec<usize>)> {
        let in_cs = self.in_channels();
        self.slots()
            .into_iter()
            .zip(self.arch.layers.iter().zip(in_cs))
            .map(|(s, (l, in_c))| match s {
                Slot::None => (vec![], vec![]),
                Slot::Weights(w, b) => (std::iter::once(w).chain(b).collect(), vec![]),
                Slot::Norm(g, b, st) => (vec![g, b], vec![st]),
                Slot::Block(p, b) => {
                    let n = l.block_convs(in_c).len();
                    ((p..p + 3 * n).collect(), (b..b + n).collect())
                }
            })
            .collect()
    }

    /// Channels each layer reads (0 for a flat input).
    pub fn in_channels(&self) -> Vec<usize> {
        let shapes = self.arch.validate().unwrap_or_default();
        let mut c = self.arch.input[2];
        let mut v = Vec::with_capacity(self.arch.layers.len());
        for s in shapes.iter().take(self.arch.layers.len()) {
            v.push(c);
            c = match *s {
                Act::Map(_, _, c) => c,
                Act::Flat(_) => 0,
            };
        }
        v.resize(self.arch.layers.len(), 0);
        v
    }

    pub fn param_count(&self) -> usize {
        self.params.iter().map(|p| p.len()).sum()
    }

    /// Builds the forward pass on `g`. `params` are the graph leaves of `self.params` (same
    /// order). Training mode uses batch statistics (and updates the running ones) and dropout.
    pub fn forward(
        &mut self,
        g: &mut Graph,
        x: Var,
        params: &[Var],
        training: bool,
        rng: &mut ChaCha8Rng,
    ) -> Var {
        self.forward_traced(g, x, params, training, rng, |_, _| {})
    }

    /// [`Model::forward`], calling `on_layer(index, output)` after every layer.
    pub fn forward_traced(
        &mut self,
        g: &mut Graph,
        x: Var,
        params: &[Var],
        training: bool,
        rng: &mut ChaCha8Rng,
        mut on_layer: impl FnMut(usize, Var),
    ) -> Var {
        let slots = self.slots();
        let mut h = x;
        for (i, (l, slot)) in self.arch.layers.iter().zip(slots).enumerate() {
            h = match (*l, slot) {
                (
                    LayerSpec::Conv2d {
                        stride, padding, ..
                    },
                    Slot::Weights(w, b),
                ) => g.conv2d(
                    h,
                    params[w],
                    b.map(|b| params[b]),
                    Conv2dParams { stride, padding },
                ),
                (LayerSpec::BatchNorm2d, Slot::Norm(gm, bt, s)) => {
                    g.batch_norm(h, params[gm], params[bt], &mut self.bn[s], training)
                }
                (LayerSpec::Relu, _) => g.relu(h),
                (LayerSpec::MaxPool2d { kernel, stride }, _) => {
                    g.max_pool2d(h, kernel, stride.unwrap_or(kernel))
                }
                (LayerSpec::AvgPool2d { kernel, stride }, _) => {
                    g.avg_pool2d(h, kernel, stride.unwrap_or(kernel))
                }
                (LayerSpec::GlobalAvgPool, _) => g.global_avg_pool(h),
                (LayerSpec::Dropout { p }, _) => g.dropout(h, p, training, rng),
                (LayerSpec::Flatten, _) => g.flatten(h),
                (LayerSpec::Linear { .. }, Slot::Weights(w, b)) => {
                    g.linear(h, params[w], b.map(|b| params[b]))
                }
                (LayerSpec::Residual { .. } | LayerSpec::Inception { .. }, Slot::Block(..)) => {
                    let convs = l.block_convs(g.shape(h)[3]);
                    let bn = &mut self.bn;
                    let mut cbr = |g: &mut Graph, x: Var, j: usize, relu: bool| {
                        let (w, gm, bt, st) = slot.block_conv(j).expect("block slot");
                        let bc = convs[j];
                        let y = g.conv2d(
                            x,
                            params[w],
                            None,
                            Conv2dParams {
                                stride: bc.stride,
                                padding: bc.padding,
                            },
                        );
                        let y = g.batch_norm(y, params[gm], params[bt], &mut bn[st], training);
                        if relu {
                            g.relu(y)
                        } else {
                            y
                        }
                    };
                    if matches!(l, LayerSpec::Residual { .. }) {
                        use residual::*;
                        let a = cbr(g, h, CONV1, true);
                        let a = cbr(g, a, CONV2, false);
                        let shortcut = if convs.len() > PROJECTION {
                            cbr(g, h, PROJECTION, false)
                        } else {
                            h
                        };
                        let y = g.add(a, shortcut);
                        g.relu(y)
                    } else {
                        use inception::*;
                        let b1 = cbr(g, h, B1, true);
                        let b3 = cbr(g, h, B3_REDUCE, true);
                        let b3 = cbr(g, b3, B3, true);
                        let b5 = cbr(g, h, B5_REDUCE, true);
                        let b5 = cbr(g, b5, B5, true);
                        let p = g.max_pool2d_padded(h, 3, 1, 1);
                        let p = cbr(g, p, POOL_PROJ, true);
                        g.concat_channels(&[b1, b3, b5, p])
                    }
                }
                _ => unreachable!("slots are derived from the same layer list"),
            };
            on_layer(i, h);
        }
        h
    }

    /// Eval-mode forward of a batch on a fresh graph without gradients; `on_layer(index,
    /// output)` as in [`Model::forward_traced`]. Returns the graph and the output variable.
    pub fn eval_traced(&mut self, x: Tensor, on_layer: impl FnMut(usize, Var)) -> (Graph, Var) {
        let mut g = Graph::new();
        let xv = g.leaf(x, false);
        let pv: Vec<Var> = self
            .params
            .iter()
            .map(|p| g.leaf(p.clone(), false))
            .collect();
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let out = self.forward_traced(&mut g, xv, &pv, false, &mut rng, on_layer);
        (g, out)
    }

    /// Eval-mode output of every layer for a batch: `(layer index, output)`.
    pub fn trace(&mut self, x: Tensor) -> Vec<(usize, Tensor)> {
        let mut outs = Vec::new();
        let (g, _) = self.eval_traced(x, |i, v| outs.push((i, v)));
        outs.into_iter()
            .map(|(i, v)| (i, g.value(v).clone()))
            .collect()
    }

    /// Eval-mode logits `[n, classes]` for a batch, without gradients.
    pub fn predict(&mut self, x: Tensor) -> Tensor {
        let (g, out) = self.eval_traced(x, |_, _| {});
        g.value(out).clone()
    }
}

/// A built-in architecture by name, or an architecture file (`.toml` or `.json`).
pub fn arch_from(name: &str) -> anyhow::Result<ArchSpec> {
    let p = Path::new(name);
    if p.extension().is_some_and(|e| e == "toml" || e == "json") {
        Ok(ArchSpec::from_file(p)?)
    } else {
        Ok(ArchSpec::builtin(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ref_cnn_has_9146_parameters() {
        let m = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(
            m.param_count(),
            9146,
            "the reference count includes BN gamma and beta"
        );
    }

    #[test]
    fn toml_round_trip_and_errors_name_the_layer() {
        let text = toml::to_string(&ArchSpec::ref_cnn()).unwrap();
        let back: ArchSpec = toml::from_str(&text).unwrap();
        assert_eq!(back, ArchSpec::ref_cnn());
        let mut bad = ArchSpec::ref_cnn();
        bad.layers.remove(8); // flatten
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.contains("layer 8 (linear)") && e.contains("flatten"),
            "{e}"
        );
        let mut bad = ArchSpec::ref_cnn();
        bad.layers.insert(3, LayerSpec::BatchNorm2d);
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("layer 3 (batch_norm2d)"), "{e}");
        let mut bad = ArchSpec::ref_cnn();
        bad.layers.push(LayerSpec::MaxPool2d {
            kernel: 2,
            stride: None,
        });
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("layer 10 (max_pool2d)"), "{e}");
        let e = toml::from_str::<ArchSpec>(
            "name='x'\ninput=[28,28,1]\nclasses=10\n[[layers]]\ntype='conv3d'\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("conv3d"), "{e}");
    }

    /// A residual block with a stride-2 projection shortcut, and separately an Inception
    /// module, each run through `Model::forward` (training-mode BN), then GAP -> linear ->
    /// cross-entropy; checked w.r.t. the input and every parameter. eps 1e-3, tolerance abs
    /// 2e-3 + rel 2e-2 (as for the whole-network checks in gradcheck.rs). Stacking both in one
    /// net puts post-ReLU zeros into the Inception max-pool, whose ties and kinks a finite
    /// difference cannot follow, so each block is checked on its own.
    #[test]
    fn gradcheck_residual_and_inception_blocks() {
        use crate::nn::gradcheck::{gradcheck, test_util::randn, Tolerance};
        let blocks = [
            LayerSpec::Residual {
                out_channels: 3,
                stride: 2,
            },
            LayerSpec::Inception {
                b1: 2,
                b3_reduce: 2,
                b3: 2,
                b5_reduce: 1,
                b5: 2,
                pool_proj: 1,
            },
        ];
        for (block, convs) in blocks.into_iter().zip([3, 6]) {
            let arch = ArchSpec {
                name: "block".into(),
                input: [6, 6, 2],
                classes: 3,
                layers: vec![
                    block,
                    LayerSpec::GlobalAvgPool,
                    LayerSpec::Linear {
                        out_features: 3,
                        bias: true,
                    },
                ],
                boxes: false,
                grid: false,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(52);
            let model = Model::new(arch, &mut rng).unwrap();
            assert_eq!(model.bn.len(), convs, "{block:?}");
            let mut ins = vec![randn(&[2, 6, 6, 2], &mut rng)];
            // Perturb gamma/beta away from 1/0 so every parameter matters.
            ins.extend(model.params.iter().map(|p| {
                let noise = randn(p.shape(), &mut rng);
                p + &noise.mapv(|v| 0.2 * v)
            }));
            let f = |g: &mut Graph, v: &[Var]| {
                let mut m = model.clone();
                let mut r = ChaCha8Rng::seed_from_u64(0);
                let logits = m.forward(g, v[0], &v[1..], true, &mut r);
                g.cross_entropy(logits, &[2, 0])
            };
            let tol = Tolerance {
                abs: 2e-3,
                rel: 2e-2,
            };
            gradcheck(f, &ins, 1e-3, tol).unwrap_or_else(|e| panic!("{block:?}: {e:?}"));
        }
    }

    #[test]
    fn builtin_graph_models_are_small() {
        for arch in [ArchSpec::tiny_resnet(), ArchSpec::tiny_inception()] {
            let m = Model::new(arch.clone(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
            let n = m.param_count();
            assert!(n < 50_000, "{}: {n} parameters", arch.name);
            let y = m
                .clone()
                .predict(Tensor::zeros(ndarray::IxDyn(&[2, 28, 28, 1])));
            assert_eq!(y.shape(), &[2, 10]);
        }
    }

    #[test]
    fn predict_shape() {
        let mut m = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let y = m.predict(Tensor::zeros(ndarray::IxDyn(&[3, 28, 28, 1])));
        assert_eq!(y.shape(), &[3, 10]);
    }
}
