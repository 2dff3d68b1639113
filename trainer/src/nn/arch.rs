//! Architectures: the layer stack a model is built from (TOML or JSON, or a built-in one from
//! `zoo`), checked when loaded: shapes, limits and the MAC count.

use serde::{Deserialize, Serialize};
use std::path::Path;

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// A kernel size or a stride: one number for both axes, or `[rows, columns]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a number or [rows, columns]")]
pub enum Pair {
    One(usize),
    Two([usize; 2]),
}

impl Pair {
    /// `[rows, columns]`.
    pub fn hw(self) -> [usize; 2] {
        match self {
            Pair::One(n) => [n, n],
            Pair::Two(p) => p,
        }
    }
}

fn one_pair() -> Pair {
    Pair::One(1)
}

/// A convolution's zero padding: rows and columns on every side, or TensorFlow's `"same"`
/// (output `ceil(in / stride)` per axis, the padding split with the extra row or column at
/// the bottom or right) or `"valid"` (none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of rows and columns, \"same\" or \"valid\""
)]
pub enum Padding {
    Sides(usize),
    Mode(PadMode),
}

/// TensorFlow's padding modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadMode {
    Same,
    Valid,
}

impl Default for Padding {
    fn default() -> Self {
        Padding::Sides(0)
    }
}

impl Padding {
    /// `[top, left, bottom, right]` for an `h x w` input, a `kernel` and a `stride`
    /// (`[rows, columns]`, both positive).
    pub fn sides(
        self,
        (h, w): (usize, usize),
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> [usize; 4] {
        let same = |n: usize, k: usize, s: usize| {
            let total = ((n.div_ceil(s) - 1) * s + k).saturating_sub(n);
            (total / 2, total - total / 2)
        };
        match self {
            Padding::Sides(p) => [p; 4],
            Padding::Mode(PadMode::Valid) => [0; 4],
            Padding::Mode(PadMode::Same) => {
                let (t, b) = same(h, kernel[0], stride[0]);
                let (l, r) = same(w, kernel[1], stride[1]);
                [t, l, b, r]
            }
        }
    }
}

/// A convolution layer's kernel, strides and padding per side for an `h x w` input
/// (`[rows, columns]` and `[top, left, bottom, right]`), as the graph, the shape checks and
/// the export all take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 4],
}

/// One layer of an architecture file. PyTorch names; activations are NHWC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// `kernel` and `stride` one number or `[rows, columns]`; `padding` a number of rows and
    /// columns on every side, `"same"` or `"valid"` ([`Padding`]).
    Conv2d {
        out_channels: usize,
        kernel: Pair,
        #[serde(default = "one_pair")]
        stride: Pair,
        #[serde(default)]
        padding: Padding,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Depthwise convolution, depth multiplier 1 (PyTorch's `Conv2d(C, C, k, groups=C)`):
    /// each channel convolved with its own `kernel` filter; the channel count stays. Kernel,
    /// stride and padding as for [`LayerSpec::Conv2d`].
    DepthwiseConv2d {
        kernel: Pair,
        #[serde(default = "one_pair")]
        stride: Pair,
        #[serde(default)]
        padding: Padding,
        #[serde(default = "yes")]
        bias: bool,
    },
    BatchNorm2d,
    Relu,
    /// `min(max(x, 0), 6)` (MobileNet's activation).
    Relu6,
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
    /// A convolution's kernel, strides and padding per side for an `h x w` input; `None` for
    /// other layers.
    pub fn conv_shape(&self, hw: (usize, usize)) -> Option<ConvShape> {
        let (LayerSpec::Conv2d {
            kernel,
            stride,
            padding,
            ..
        }
        | LayerSpec::DepthwiseConv2d {
            kernel,
            stride,
            padding,
            ..
        }) = *self
        else {
            return None;
        };
        let (kernel, stride) = (kernel.hw(), stride.hw());
        let pad = if stride.contains(&0) {
            [0; 4]
        } else {
            padding.sides(hw, kernel, stride)
        };
        Some(ConvShape {
            kernel,
            stride,
            pad,
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::DepthwiseConv2d { .. } => "depthwise_conv2d",
            LayerSpec::BatchNorm2d => "batch_norm2d",
            LayerSpec::Relu => "relu",
            LayerSpec::Relu6 => "relu6",
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
            LayerSpec::Inception { .. } => {
                let [b1, b3_reduce, b3, b5_reduce, b5, pool_proj] =
                    self.inception_widths().unwrap_or_default();
                vec![
                    conv(in_c, b1, 1, 1),
                    conv(in_c, b3_reduce, 1, 1),
                    conv(b3_reduce, b3, 3, 1),
                    conv(in_c, b5_reduce, 1, 1),
                    conv(b5_reduce, b5, 5, 1),
                    conv(in_c, pool_proj, 1, 1),
                ]
            }
            _ => Vec::new(),
        }
    }

    /// An Inception module's branch widths `[b1, b3_reduce, b3, b5_reduce, b5, pool_proj]`.
    pub fn inception_widths(&self) -> Option<[usize; 6]> {
        match *self {
            LayerSpec::Inception {
                b1,
                b3_reduce,
                b3,
                b5_reduce,
                b5,
                pool_proj,
            } => Some([b1, b3_reduce, b3, b5_reduce, b5, pool_proj]),
            _ => None,
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
    /// The classes' names in class order (class folders' names; an architecture file may give
    /// them). Empty: classes are numbers. They travel in the checkpoint and the blob.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
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
    #[error("unknown built-in architecture '{0}' (built in: ref-cnn, loc-cnn, grid-det, tiny-resnet, tiny-inception, ds-cnn, resnet-8, mobilenet-v1, mobilenet-v1-32)")]
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

impl ArchSpec {
    /// Number of outputs of the last layer: class logits, then 4 box values if `boxes`.
    pub fn outputs(&self) -> usize {
        if self.grid {
            5 + self.classes
        } else {
            self.classes + if self.boxes { 4 } else { 0 }
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
                    let [kh, kw] = kernel.hw();
                    oh * ow * oc * kh * kw * ic
                }
                (LayerSpec::DepthwiseConv2d { kernel, .. }, _, Act::Map(oh, ow, c)) => {
                    let [kh, kw] = kernel.hw();
                    oh * ow * c * kh * kw
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
            "ds-cnn" => Ok(ArchSpec::ds_cnn()),
            "resnet-8" => Ok(ArchSpec::resnet_8()),
            "mobilenet-v1" => Ok(ArchSpec::mobilenet_v1()),
            "mobilenet-v1-32" => Ok(ArchSpec::mobilenet_v1_32()),
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
        for index in 0..self.layers.len() {
            cur = self.layer_out(index, cur, &mut params)?;
            out.push(cur);
        }
        self.check_end(cur)?;
        self.check_class_names()?;
        Ok(out)
    }

    /// Layer `index`'s output for input `cur`, its parameters added to `params`; every limit
    /// checked.
    fn layer_out(&self, index: usize, cur: Act, params: &mut u64) -> Result<Act, ArchError> {
        let l = &self.layers[index];
        let err = |why: String| ArchError::Layer {
            arch: self.name.clone(),
            index,
            kind: l.kind(),
            why,
        };
        let prev = index.checked_sub(1).map(|i| &self.layers[i]);
        let next = match (*l, cur) {
            (LayerSpec::Conv2d { out_channels, .. }, Act::Map(h, w, in_c)) => {
                let shape = l
                    .conv_shape((h, w))
                    .ok_or_else(|| err("not a conv".into()))?;
                conv_out((h, w, in_c), (out_channels, shape), params).map_err(err)?
            }
            (LayerSpec::DepthwiseConv2d { .. }, Act::Map(h, w, c)) => {
                // A convolution of one input channel, `c` times: its shape and parameters.
                let shape = l
                    .conv_shape((h, w))
                    .ok_or_else(|| err("not a conv".into()))?;
                conv_out((h, w, 1), (c, shape), params).map_err(err)?
            }
            (LayerSpec::BatchNorm2d, Act::Map(..)) => {
                if !matches!(
                    prev,
                    Some(LayerSpec::Conv2d { .. } | LayerSpec::DepthwiseConv2d { .. })
                ) {
                    return Err(err("batch_norm2d must directly follow a conv2d or a depthwise_conv2d (it is folded into it for the device)".into()));
                }
                cur
            }
            (LayerSpec::Relu | LayerSpec::Relu6, _) | (LayerSpec::Dropout { .. }, _) => {
                if let LayerSpec::Dropout { p } = l {
                    if !(0.0..1.0).contains(p) {
                        return Err(err(format!("p = {p} must be in [0, 1)")));
                    }
                }
                cur
            }
            (
                LayerSpec::MaxPool2d { kernel, stride } | LayerSpec::AvgPool2d { kernel, stride },
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
                *params = params.saturating_add(9 * in_c * oc + 9 * oc * oc + in_c * oc);
                Act::Map((h - 1) / stride + 1, (w - 1) / stride + 1, out_channels)
            }
            (LayerSpec::Inception { .. }, Act::Map(h, w, in_c)) => {
                let widths = l.inception_widths().unwrap_or_default();
                if widths.contains(&0) {
                    return Err(err("every branch needs at least one channel".into()));
                }
                if widths.iter().any(|&b| b > MAX_DIM) {
                    return Err(err(format!(
                        "branches must have at most {MAX_DIM} channels"
                    )));
                }
                // Weights of the six convs (BatchNorm parameters are counted apart).
                let weights = l.block_convs(in_c).iter().fold(0u64, |a, c| {
                    a.saturating_add((c.kernel * c.kernel * c.in_c * c.out_c) as u64)
                });
                *params = params.saturating_add(weights);
                let [b1, _, b3, _, b5, pool_proj] = widths;
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
                *params = params.saturating_add((n as u64 + 1) * out_features as u64);
                Act::Flat(out_features)
            }
            (LayerSpec::Linear { .. }, Act::Map(..)) => {
                return Err(err(
                    "needs a flat input: add a flatten or global_avg_pool layer before it".into(),
                ))
            }
            (_, Act::Flat(_)) => {
                return Err(err(
                    "needs a [h, w, c] feature map but follows a flat vector".into(),
                ))
            }
        };
        let elems = match next {
            Act::Map(h, w, c) => (h as u64).saturating_mul(w as u64).saturating_mul(c as u64),
            Act::Flat(n) => n as u64,
        };
        if elems > MAX_ACTIVATION_ELEMS {
            return Err(err(format!(
                "its output holds {elems} values per image, over the limit of \
                 {MAX_ACTIVATION_ELEMS}"
            )));
        }
        if *params > MAX_PARAMS {
            return Err(err(format!(
                "the model reaches {params} parameters here, over the limit of {MAX_PARAMS}"
            )));
        }
        Ok(next)
    }

    /// The last layer's output against the head (class logits, a box, or a grid).
    fn check_end(&self, cur: Act) -> Result<(), ArchError> {
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
        Ok(())
    }
}

/// Largest input dimension, class count and channel count (the device format's u16 fields).
pub const MAX_DIM: usize = 65_535;
/// Most values one layer may output per image (a batch of 64 of them is 1 GiB of f32).
pub const MAX_ACTIVATION_ELEMS: u64 = 1 << 22;
/// Most parameters a model may have (256 MiB of f32).
pub const MAX_PARAMS: u64 = 1 << 26;

/// A built-in architecture by name, or an architecture file (`.toml` or `.json`).
pub fn arch_from(name: &str) -> anyhow::Result<ArchSpec> {
    let p = Path::new(name);
    if p.extension().is_some_and(|e| e == "toml" || e == "json") {
        Ok(ArchSpec::from_file(p)?)
    } else {
        Ok(ArchSpec::builtin(name)?)
    }
}

/// A convolution's output map for an `(h, w, in_c)` input, its weights and biases added to
/// `params`; the reason when its numbers cannot be.
fn conv_out(
    (h, w, in_c): (usize, usize, usize),
    (out_channels, shape): (usize, ConvShape),
    params: &mut u64,
) -> Result<Act, String> {
    let ConvShape {
        kernel: [kh, kw],
        stride: [sh, sw],
        pad: [pt, pl, pb, pr],
    } = shape;
    if out_channels == 0 || kh == 0 || kw == 0 || sh == 0 || sw == 0 {
        return Err("out_channels, kernel and stride must be positive".into());
    }
    if [kh, kw, sh, sw, pt, pl, pb, pr].iter().any(|&v| v > 255) || out_channels > MAX_DIM {
        return Err(format!(
            "kernel, stride and padding must be at most 255 and out_channels at most {MAX_DIM} \
             (the device format's fields)"
        ));
    }
    *params =
        params.saturating_add((kh as u64 * kw as u64 * in_c as u64 + 1) * out_channels as u64);
    if (pt.max(pb) >= kh && pt.max(pb) > 0) || (pl.max(pr) >= kw && pl.max(pr) > 0) {
        return Err(format!(
            "padding {pt}/{pl}/{pb}/{pr} (top/left/bottom/right) must be smaller than the \
             kernel {kh}x{kw}"
        ));
    }
    if h + pt + pb < kh || w + pl + pr < kw {
        return Err(format!(
            "kernel {kh}x{kw} larger than the padded {h}x{w} input"
        ));
    }
    Ok(Act::Map(
        (h + pt + pb - kh) / sh + 1,
        (w + pl + pr - kw) / sw + 1,
        out_channels,
    ))
}
