//! The model blob: a fixed 20-byte preamble, then a postcard payload whose weights are borrowed
//! straight from the blob (zero-copy from flash).
//!
//! ```text
//! offset  size  field (little endian)
//!      0     4  magic "TMCU"
//!      4     2  format version (FORMAT_VERSION)
//!      6     2  reserved, 0
//!      8     4  arena_bytes: the planner's exact peak, so firmware can size a static buffer
//!     12     4  payload_len
//!     16     4  CRC-32 (IEEE) of the payload
//!     20     .  payload: postcard(ModelDef)
//! ```
//! Activations are int8 NHWC; conv weights are int8 OHWI; biases are i32 LE; per-channel
//! requantization is `(multiplier: i32 LE, shift: i32 LE)`, 8 bytes per output channel.

use crate::quant::{QuantParams, Requant, Rounding};
use crate::Error;
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 4] = *b"TMCU";
/// Bump on any change to the wire format (the golden-blob test makes such changes deliberate).
pub const FORMAT_VERSION: u16 = 9;
pub const PREAMBLE_BYTES: usize = 20;
/// Most layers (graph nodes) a model may have (bounds the fixed-capacity layer list).
pub const MAX_LAYERS: usize = 32;
/// Most tensors: the model input plus one output per layer.
pub const MAX_TENSORS: usize = MAX_LAYERS + 1;
/// Most arena regions the planner places: the tensors and one kernel scratch per layer.
pub const MAX_PLANNED: usize = MAX_TENSORS + MAX_LAYERS;
/// Most inputs a layer may read (a concat of four Inception branches).
pub const MAX_INPUTS: usize = 4;
/// Bytes per output channel in a requantization array.
pub const REQUANT_BYTES: usize = 8;
/// Longest class name in bytes (UTF-8), and most bytes of all names with their separators
/// (bounds the check's work; 256 names of the longest take 16,639).
pub const MAX_LABEL_BYTES: usize = 64;
pub const MAX_LABELS_BYTES: usize = 1 << 16;

// Resource limits. A blob is input from outside; these bound what loading one can ask for, and
// they are the same on a 64-bit host and a 32-bit device: every size is computed in `u64` and
// checked against them before it becomes a `usize`, so no product can wrap on either.

/// Largest tensor (activation) in bytes: 16 MiB.
pub const MAX_TENSOR_BYTES: u64 = 1 << 24;
/// Largest arena in bytes: 64 MiB.
pub const MAX_ARENA_BYTES: u64 = 1 << 26;
/// Most multiply-accumulates per inference: 2^31 - 1 (about 20 s at 100 MMAC/s).
pub const MAX_MACS: u64 = (1 << 31) - 1;
/// Most work units per inference (see [`crate::Step::work`]): every kernel's inner-loop
/// iterations, a fixed cost per output besides them, so that pools (no MACs) and a fused
/// pool's recomputed convolution outputs count too. The worst blob the limits allow runs in
/// seconds on a host (`runtime/tests/hardening.rs`, `worst_work_blob_runs_in_bounded_time`).
pub const MAX_WORK: u64 = 1 << 32;

/// The fixed-size header in front of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    pub version: u16,
    pub arena_bytes: u32,
    pub payload_len: u32,
    pub crc32: u32,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

impl Preamble {
    /// The 20 preamble bytes alone: magic, version, reserved bytes and the four fields, with
    /// no check of the payload's length (a build script reads the arena size this way and
    /// leaves the payload's errors to the device).
    pub fn parse_head(bytes: &[u8]) -> Result<Preamble, Error> {
        let head = bytes.get(..PREAMBLE_BYTES).ok_or(Error::Truncated {
            needed: PREAMBLE_BYTES,
            available: bytes.len(),
        })?;
        if head[..4] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = u16::from_le_bytes([head[4], head[5]]);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if head[6..8] != [0, 0] {
            return Err(Error::Reserved);
        }
        Ok(Preamble {
            version,
            arena_bytes: le_u32(head, 8),
            payload_len: le_u32(head, 12),
            crc32: le_u32(head, 16),
        })
    }

    /// Parses the preamble and returns it with the payload slice (not yet CRC-checked).
    pub fn parse(bytes: &[u8]) -> Result<(Preamble, &[u8]), Error> {
        let pre = Preamble::parse_head(bytes)?;
        let rest = bytes.get(PREAMBLE_BYTES..).unwrap_or(&[]);
        let len = pre.payload_len as usize;
        let payload = rest.get(..len).ok_or(Error::Truncated {
            needed: PREAMBLE_BYTES.saturating_add(len),
            available: bytes.len(),
        })?;
        if rest.len() > len {
            return Err(Error::TrailingBytes {
                extra: rest.len() - len,
            });
        }
        Ok((pre, payload))
    }

    pub fn to_bytes(&self) -> [u8; PREAMBLE_BYTES] {
        let mut out = [0u8; PREAMBLE_BYTES];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[8..12].copy_from_slice(&self.arena_bytes.to_le_bytes());
        out[12..16].copy_from_slice(&self.payload_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.crc32.to_le_bytes());
        out
    }
}

/// Iterator over `(bias, multiplier)` per output channel (see [`crate::kernels::Stage::channels`]). A plain
/// struct rather than a `map` over a `zip`: the compiler inlines it into the kernels.
#[derive(Clone)]
pub struct Channels<'a> {
    bias: core::slice::ChunksExact<'a, u8>,
    requant: core::slice::ChunksExact<'a, u8>,
}

impl<'a> Channels<'a> {
    /// Over a layer's bias bytes (i32 LE per channel) and requantization bytes
    /// ([`REQUANT_BYTES`] per channel); stops at the shorter.
    pub fn new(bias: &'a [u8], requant: &'a [u8]) -> Channels<'a> {
        Channels {
            bias: bias.chunks_exact(4),
            requant: requant.chunks_exact(REQUANT_BYTES),
        }
    }
}

/// The one reader of the blob's per-channel bytes: bias `b` (i32 LE) and requantization `r`
/// (multiplier i32 LE, shift i32 LE). Slices shorter than 4 and 8 bytes read as zeros.
#[inline(always)]
pub fn decode_channel(b: &[u8], r: &[u8]) -> (i32, Requant) {
    let word = |x: &[u8], at: usize| {
        let mut w = [0u8; 4];
        if let Some(v) = x.get(at..at + 4) {
            w.copy_from_slice(v);
        }
        i32::from_le_bytes(w)
    };
    (
        word(b, 0),
        Requant {
            multiplier: word(r, 0),
            shift: word(r, 4),
        },
    )
}

impl Iterator for Channels<'_> {
    type Item = (i32, Requant);
    #[inline(always)]
    fn next(&mut self) -> Option<(i32, Requant)> {
        let b = self.bias.next()?;
        let r = self.requant.next()?;
        Some(decode_channel(b, r))
    }

    /// Skips `n` channels without decoding them (kernels start at a block's first channel).
    #[inline(always)]
    fn nth(&mut self, n: usize) -> Option<(i32, Requant)> {
        let b = self.bias.nth(n)?;
        let r = self.requant.nth(n)?;
        Some(decode_channel(b, r))
    }
}

/// Height, width, channels of an NHWC activation (batch is always 1 on the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape {
    pub h: u16,
    pub w: u16,
    pub c: u16,
}

impl Shape {
    pub const fn new(h: u16, w: u16, c: u16) -> Shape {
        Shape { h, w, c }
    }
    /// Number of int8 elements (= bytes), exact on every target (at most `65535^3 < 2^48`).
    pub const fn bytes(&self) -> u64 {
        self.h as u64 * self.w as u64 * self.c as u64
    }
    /// Number of int8 elements (= bytes). Only for shapes a [`crate::Model`] validated (at most
    /// [`MAX_TENSOR_BYTES`]); saturates otherwise, so it never wraps on a 32-bit target.
    pub const fn len(&self) -> usize {
        let b = self.bytes();
        if b > usize::MAX as u64 {
            usize::MAX
        } else {
            b as usize
        }
    }
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub const fn dims(&self) -> [u16; 3] {
        [self.h, self.w, self.c]
    }
}

/// Shape and quantization of the model's input or output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub shape: Shape,
    pub quant: QuantParams,
}

/// What follows the conv/linear accumulation: bias, requantization, zero point and the clamp
/// that holds a fused ReLU (`act_min = zero_point`) or ReLU6.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutputStage<'a> {
    pub zero_point: i8,
    pub act_min: i8,
    pub act_max: i8,
    /// One i32 LE per output channel; scale `input_scale * weight_scale[c]`, zero point 0.
    pub bias: &'a [u8],
    /// One `(multiplier i32 LE, shift i32 LE)` per output channel.
    pub requant: &'a [u8],
}

impl<'a> OutputStage<'a> {
    /// `(bias, requantization)` of each output channel, read from the byte arrays.
    pub fn channels(&self) -> Channels<'a> {
        Channels::new(self.bias, self.requant)
    }
}

/// Pooling window of `kernel_h x kernel_w` pixels, moved by `stride_h` rows and `stride_w`
/// columns. Padded positions are ignored by max-pool (as if `-inf`); average pools and the
/// max-pool fused into a conv take no padding, and a fused pool is square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool2d {
    pub kernel_h: u8,
    pub kernel_w: u8,
    pub stride_h: u8,
    pub stride_w: u8,
    pub padding: u8,
}

impl Pool2d {
    /// A square window with equal strides.
    pub const fn square(kernel: u8, stride: u8, padding: u8) -> Pool2d {
        Pool2d {
            kernel_h: kernel,
            kernel_w: kernel,
            stride_h: stride,
            stride_w: stride,
            padding,
        }
    }

    /// `(kernel, stride)` when the window is square with equal strides.
    pub const fn as_square(&self) -> Option<(u8, u8)> {
        if self.kernel_h == self.kernel_w && self.stride_h == self.stride_w {
            Some((self.kernel_h, self.stride_h))
        } else {
            None
        }
    }
}

/// `k`, or `kh x kw` when the window is not square; then `/s` or `/sh x sw`.
impl core::fmt::Display for Pool2d {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.kernel_h == self.kernel_w {
            write!(f, "{}", self.kernel_h)?;
        } else {
            write!(f, "{}x{}", self.kernel_h, self.kernel_w)?;
        }
        if self.stride_h == self.stride_w {
            write!(f, "/{}", self.stride_h)
        } else {
            write!(f, "/{}x{}", self.stride_h, self.stride_w)
        }
    }
}

/// Zero padding of a convolution, in pixels on each side. TensorFlow Lite's `SAME` padding with
/// an even input and stride 2 pads one pixel below and right only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Padding {
    pub top: u8,
    pub left: u8,
    pub bottom: u8,
    pub right: u8,
}

impl Padding {
    /// The same padding on every side.
    pub const fn uniform(p: u8) -> Padding {
        Padding {
            top: p,
            left: p,
            bottom: p,
            right: p,
        }
    }
}

/// `1` for the same padding on every side, else `top,left,bottom,right`.
impl core::fmt::Display for Padding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if *self == Padding::uniform(self.top) {
            write!(f, "{}", self.top)
        } else {
            write!(
                f,
                "{},{},{},{}",
                self.top, self.left, self.bottom, self.right
            )
        }
    }
}

/// TensorFlow Lite's int8 `MEAN` over height and width:
/// `out = clamp(requant(sum(x) - n * input_zero_point) + zero_point, -128, 127)` where `requant`
/// already holds the `1 / n` (TFLite folds it into the multiplier, which may then be below
/// `2^30`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mean {
    pub input_zero_point: i8,
    pub zero_point: i8,
    pub requant: Requant,
}

/// TensorFlow Lite's int8 `SOFTMAX` over channels (gemmlowp fixed point): output scale 1/256,
/// zero point -128. `input_multiplier` and `input_left_shift` scale `beta * input_scale` into
/// Q5.26; differences from the row maximum below `diff_min` contribute 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Softmax {
    pub input_multiplier: i32,
    pub input_left_shift: i32,
    pub diff_min: i32,
}

/// Convolution, also used for depthwise convolution (then `weights` is `[1, kh, kw, C]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Conv2d<'a> {
    pub in_channels: u16,
    pub out_channels: u16,
    pub kernel_h: u8,
    pub kernel_w: u8,
    pub stride_h: u8,
    pub stride_w: u8,
    /// Zero padding; padded pixels take the input zero point (real 0).
    pub padding: Padding,
    pub input_zero_point: i8,
    #[serde(borrow)]
    pub output: OutputStage<'a>,
    /// int8 OHWI.
    pub weights: &'a [u8],
    /// A max-pool applied to the conv output inside the kernel, so the full-resolution conv
    /// output never exists in the arena.
    pub pool: Option<Pool2d>,
}

/// `y = W x + b` over the flattened (HWC-ordered) input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FullyConnected<'a> {
    pub in_features: u32,
    pub out_features: u16,
    pub input_zero_point: i8,
    #[serde(borrow)]
    pub output: OutputStage<'a>,
    /// int8 `[out, in]`.
    pub weights: &'a [u8],
}

/// Residual add `out = clamp(a + b)` of two same-shape tensors with different scales (the
/// scheme of [`crate::kernels::AddParams`]). `act_min = zero_point` fuses the ReLU that ends a
/// residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    pub input_zero_points: [i8; 2],
    pub zero_point: i8,
    pub act_min: i8,
    pub act_max: i8,
    /// Rescales of input a and input b to the common scale (each at most 1/2), then of the sum
    /// to the output scale.
    pub requant: [Requant; 3],
}

/// One operation of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Layer<'a> {
    Conv2d(#[serde(borrow)] Conv2d<'a>),
    DepthwiseConv2d(#[serde(borrow)] Conv2d<'a>),
    MaxPool2d(Pool2d),
    /// Same scale and zero point in and out; rounds half away from zero.
    AvgPool2d(Pool2d),
    /// `[H, W, C] -> [1, 1, C]`, same quantization in and out.
    GlobalAvgPool,
    FullyConnected(#[serde(borrow)] FullyConnected<'a>),
    /// Residual add of the layer's two inputs.
    Add(Add),
    /// Channel concatenation of the layer's 2 to [`MAX_INPUTS`] inputs, which share height,
    /// width, scale and zero point (the exporter gives every branch the concat's output
    /// quantization), so the concat is a copy with no arithmetic.
    Concat,
    /// `[H, W, C] -> [1, 1, C]` with its own requantization (TensorFlow Lite's `MEAN`).
    Mean(Mean),
    /// Softmax over channels (TensorFlow Lite's int8 `SOFTMAX`).
    Softmax(Softmax),
}

/// Each layer kind's name, one owner for [`Layer::name`] and [`crate::Step::name`] (what
/// `inspect`, the firmware's per-layer lines and errors print).
pub mod kind {
    pub const CONV2D: &str = "Conv2d";
    pub const DEPTHWISE_CONV2D: &str = "DepthwiseConv2d";
    pub const MAX_POOL2D: &str = "MaxPool2d";
    pub const AVG_POOL2D: &str = "AvgPool2d";
    pub const GLOBAL_AVG_POOL: &str = "GlobalAvgPool";
    pub const FULLY_CONNECTED: &str = "FullyConnected";
    pub const ADD: &str = "Add";
    pub const CONCAT: &str = "Concat";
    pub const MEAN: &str = "Mean";
    pub const SOFTMAX: &str = "Softmax";
}

/// Sets of layer kinds, one bit per kind: the kernels a build links. A `Model` (and its
/// `Interpreter`) takes one as its `K` parameter (default [`kinds::ALL`]); firmware built for
/// one model passes the kinds of that model ([`kinds::of`]) and the other kernels are not
/// linked.
pub mod kinds {
    use super::{Layer, ModelDef};

    pub const CONV2D: u32 = 1 << 0;
    pub const DEPTHWISE_CONV2D: u32 = 1 << 1;
    pub const MAX_POOL2D: u32 = 1 << 2;
    pub const AVG_POOL2D: u32 = 1 << 3;
    pub const GLOBAL_AVG_POOL: u32 = 1 << 4;
    pub const FULLY_CONNECTED: u32 = 1 << 5;
    pub const ADD: u32 = 1 << 6;
    pub const CONCAT: u32 = 1 << 7;
    pub const MEAN: u32 = 1 << 8;
    pub const SOFTMAX: u32 = 1 << 9;
    /// Every kind.
    pub const ALL: u32 = (1 << 10) - 1;

    /// The kind's bit.
    pub const fn bit(layer: &Layer<'_>) -> u32 {
        match layer {
            Layer::Conv2d(_) => CONV2D,
            Layer::DepthwiseConv2d(_) => DEPTHWISE_CONV2D,
            Layer::MaxPool2d(_) => MAX_POOL2D,
            Layer::AvgPool2d(_) => AVG_POOL2D,
            Layer::GlobalAvgPool => GLOBAL_AVG_POOL,
            Layer::FullyConnected(_) => FULLY_CONNECTED,
            Layer::Add(_) => ADD,
            Layer::Concat => CONCAT,
            Layer::Mean(_) => MEAN,
            Layer::Softmax(_) => SOFTMAX,
        }
    }

    /// The kinds a model's layers use.
    pub fn of(def: &ModelDef<'_>) -> u32 {
        def.layers.iter().fold(0, |k, n| k | bit(&n.layer))
    }
}

impl Layer<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Layer::Conv2d(_) => kind::CONV2D,
            Layer::DepthwiseConv2d(_) => kind::DEPTHWISE_CONV2D,
            Layer::MaxPool2d(_) => kind::MAX_POOL2D,
            Layer::AvgPool2d(_) => kind::AVG_POOL2D,
            Layer::GlobalAvgPool => kind::GLOBAL_AVG_POOL,
            Layer::FullyConnected(_) => kind::FULLY_CONNECTED,
            Layer::Add(_) => kind::ADD,
            Layer::Concat => kind::CONCAT,
            Layer::Mean(_) => kind::MEAN,
            Layer::Softmax(_) => kind::SOFTMAX,
        }
    }
}

/// How to read the output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Head {
    /// The output holds class logits.
    Classifier { classes: u16 },
    /// The output holds `classes` logits, then one box `[x0, y0, x1, y1]` in input pixels
    /// (single-object localization). Decode with [`crate::BoxDecoder`].
    Localizer { classes: u16 },
    /// The output is a `[G, G, 5 + classes]` grid: per cell objectness logit, box centre
    /// (pixels from the cell corner), box width and height (pixels), class logits. Decode with
    /// [`crate::GridDecoder`]: cells whose objectness byte is at least `obj_threshold`, ranked by
    /// it, class-agnostic NMS at IoU `nms_iou_pct` / 100, at most `max_detections` (<= 16).
    GridDetector {
        classes: u16,
        cell: u8,
        obj_threshold: i8,
        nms_iou_pct: u8,
        max_detections: u8,
    },
    /// The output holds values to read as they are, no classes (a regression, an
    /// autoencoder's reconstruction); `outputs` is the output's length.
    Values { outputs: u32 },
}

impl Head {
    /// How many classes the head names (`None` for [`Head::Values`]).
    pub fn classes(&self) -> Option<u16> {
        match *self {
            Head::Classifier { classes }
            | Head::Localizer { classes }
            | Head::GridDetector { classes, .. } => Some(classes),
            Head::Values { .. } => None,
        }
    }
}

/// The class names of a model: empty (classes are numbers), or one name per class in class
/// order, separated by `\n`; each name 1..=[`MAX_LABEL_BYTES`] bytes without control
/// characters (a device log or terminal prints them as they are), at most
/// [`MAX_LABELS_BYTES`] in all.
pub fn check_labels(labels: &str, head: &Head) -> Result<(), Error> {
    if labels.is_empty() {
        return Ok(());
    }
    let bad = |what| Err(Error::BadLabels { what });
    let Some(classes) = head.classes() else {
        return bad("class names for a head without classes");
    };
    if labels.len() > MAX_LABELS_BYTES {
        return bad("class names longer than MAX_LABELS_BYTES in all");
    }
    // One pass over the bytes (a few instructions on a device; `char` tables would cost
    // kilobytes of flash): postcard has checked the UTF-8, so a control character is a byte
    // below 0x20, 0x7f, or U+0080..=U+009F, encoded as 0xc2 0x80..=0x9f.
    let (mut n, mut len, mut prev) = (1usize, 0usize, 0u8);
    for &b in labels.as_bytes() {
        if b == b'\n' {
            if len == 0 {
                return bad("an empty class name");
            }
            (n, len) = (n + 1, 0);
        } else if b < 0x20 || b == 0x7f || (prev == 0xc2 && (0x80..=0x9f).contains(&b)) {
            return bad("a control character in a class name");
        } else {
            len += 1;
            if len > MAX_LABEL_BYTES {
                return bad("a class name longer than MAX_LABEL_BYTES");
            }
        }
        prev = b;
    }
    if len == 0 {
        return bad("an empty class name");
    }
    if n != classes as usize {
        return bad("class name count != class count");
    }
    Ok(())
}

/// Tensor ids a layer reads: 0 is the model input, `k + 1` the output of layer `k`. A layer
/// reads only tensors that exist before it (ids `<= k`), so the list order is a schedule.
pub type Inputs = heapless::Vec<u8, MAX_INPUTS>;

/// A layer and the tensors it reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node<'a> {
    pub inputs: Inputs,
    #[serde(borrow)]
    pub layer: Layer<'a>,
}

impl<'a> Node<'a> {
    /// A layer reading only the previous layer's output (`index` is the layer's position).
    pub fn chained(index: usize, layer: Layer<'a>) -> Node<'a> {
        let mut inputs = Inputs::new();
        let _ = inputs.push(index.min(u8::MAX as usize) as u8);
        Node { inputs, layer }
    }
}

/// A model's name, edges and head: the payload without its layer list. What a loaded
/// [`crate::Model`] keeps (its layers live on, resolved, in [`crate::Model::layer_info`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelHeader<'a> {
    pub name: &'a str,
    pub input: TensorSpec,
    pub output: TensorSpec,
    pub rounding: Rounding,
    pub head: Head,
    /// Class names ([`check_labels`]): empty, or one per class separated by `\n`.
    pub labels: &'a str,
}

impl<'a> ModelHeader<'a> {
    /// The class names in class order; none when the model's classes are numbers.
    pub fn label_names(&self) -> impl Iterator<Item = &'a str> + Clone {
        let names = if self.labels.is_empty() {
            None
        } else {
            Some(self.labels.split('\n'))
        };
        names.into_iter().flatten()
    }

    /// The name of class `class`, if the model names its classes.
    pub fn label(&self, class: usize) -> Option<&'a str> {
        self.label_names().nth(class)
    }
}

/// The decoded payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDef<'a> {
    pub name: &'a str,
    pub input: TensorSpec,
    pub output: TensorSpec,
    /// How every requantization of the model rounds.
    pub rounding: Rounding,
    /// The graph in execution order; the last layer's output is the model output.
    #[serde(borrow)]
    pub layers: heapless::Vec<Node<'a>, MAX_LAYERS>,
    pub head: Head,
    /// Class names ([`check_labels`]): empty, or one per class separated by `\n`.
    pub labels: &'a str,
}

impl<'a> ModelDef<'a> {
    pub fn header(&self) -> ModelHeader<'a> {
        ModelHeader {
            name: self.name,
            input: self.input,
            output: self.output,
            rounding: self.rounding,
            head: self.head,
            labels: self.labels,
        }
    }
}
