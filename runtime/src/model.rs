//! Loading: decode a blob once and check everything the kernels rely on (TFLM's "Prepare").
//! After [`Model::from_bytes`] succeeds, every shape, offset, length and quantization parameter
//! is known to be in range, so `invoke` only does integer arithmetic.

use crate::format::kinds;
use crate::format::{
    Head, Inputs, Layer, ModelDef, ModelHeader, Node, Preamble, Shape, TensorSpec, MAX_ARENA_BYTES,
    MAX_INPUTS, MAX_LAYERS, MAX_MACS, MAX_TENSORS, MAX_TENSOR_BYTES, MAX_WORK,
};
use crate::kernels::prepare::{limit, Checked, Operand};
use crate::kernels::Step;
use crate::planner::{plan, Lifetime, Regions};
use crate::quant::Rounding;
use crate::Error;

/// Per-layer facts computed at load time (also what `inspect` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo<'a> {
    pub step: Step<'a>,
    /// Tensors the layer reads (0 is the model input, `k + 1` layer `k`'s output).
    pub inputs: Inputs,
    /// Shape of the first input.
    pub in_shape: Shape,
    pub out_shape: Shape,
    /// Multiply-accumulates per inference.
    pub macs: usize,
    /// Bytes of weights, biases and requantization parameters in the blob.
    pub param_bytes: usize,
    /// The kernel's scratch in the arena (`len` 0: none), live only while the layer runs.
    pub scratch: TensorInfo,
    /// The layer's output (tensor `k + 1` for layer `k`) in the arena.
    pub out: TensorInfo,
    /// The output's zero point.
    pub out_zp: i8,
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
pub struct Analysis<'a, const N: usize = MAX_LAYERS> {
    /// Layer `k` with its output, tensor `k + 1`.
    pub layers: heapless::Vec<LayerInfo<'a>, N>,
    /// Tensor 0, the model input.
    pub input: TensorInfo,
    pub arena_bytes: usize,
    /// The lower bound no layout can beat: most bytes live at one step.
    pub live_peak_bytes: usize,
    /// Every tensor live at once (no reuse).
    pub naive_bytes: usize,
    /// The head's decoder, built once by the check of the head.
    pub boxes: Option<crate::detect::BoxDecoder>,
    pub grid: Option<crate::detect::GridDecoder>,
}

/// A scale the float edges can use: finite, positive and normal.
fn scale_ok(s: f32) -> bool {
    s.is_finite() && s >= f32::MIN_POSITIVE
}

/// Where [`analyze_with`] reads the layers and the head from: a decoded [`ModelDef`], or the
/// blob's payload one node at a time (so loading never holds the whole layer list twice).
pub trait LayerSource<'a> {
    fn next_node(&mut self) -> Result<Node<'a>, Error>;
    /// The head, which the wire format stores after the layers.
    fn head(&mut self) -> Result<Head, Error>;
}

struct DefSource<'d, 'a> {
    def: &'d ModelDef<'a>,
    next: usize,
}

impl<'a> LayerSource<'a> for DefSource<'_, 'a> {
    fn next_node(&mut self) -> Result<Node<'a>, Error> {
        let n = self
            .def
            .layers
            .get(self.next)
            .cloned()
            .ok_or(Error::Decode)?;
        self.next += 1;
        Ok(n)
    }
    fn head(&mut self) -> Result<Head, Error> {
        Ok(self.def.head)
    }
}

/// The payload after the layer count, decoded one node at a time.
struct PayloadSource<'a> {
    rest: &'a [u8],
}

impl<'a> LayerSource<'a> for PayloadSource<'a> {
    fn next_node(&mut self) -> Result<Node<'a>, Error> {
        let (n, rest) =
            postcard::take_from_bytes::<Node<'a>>(self.rest).map_err(|_| Error::Decode)?;
        self.rest = rest;
        Ok(n)
    }
    fn head(&mut self) -> Result<Head, Error> {
        let (h, rest) = postcard::take_from_bytes::<Head>(self.rest).map_err(|_| Error::Decode)?;
        self.rest = rest;
        Ok(h)
    }
}

/// Checks a model definition and computes every layer's geometry and the arena peak.
pub fn analyze<'a>(def: &ModelDef<'a>) -> Result<Analysis<'a>, Error> {
    let mut src = DefSource { def, next: 0 };
    let mut a = Analysis::empty();
    analyze_with::<_, MAX_LAYERS, { kinds::ALL }>(
        &def.input,
        &def.output,
        def.rounding,
        def.layers.len(),
        &mut src,
        &mut a,
    )?;
    crate::format::check_labels(def.labels, &def.head)?;
    Ok(a)
}

impl<const N: usize> Analysis<'_, N> {
    /// No layers (what a failed load leaves).
    pub const fn empty() -> Self {
        Analysis {
            layers: heapless::Vec::new(),
            input: TensorInfo {
                offset: 0,
                len: 0,
                life: Lifetime { first: 0, last: 0 },
            },
            arena_bytes: 0,
            live_peak_bytes: 0,
            naive_bytes: 0,
            boxes: None,
            grid: None,
        }
    }

    /// Back to [`empty`](Self::empty) in place (no temporary of the whole table).
    fn clear(&mut self) {
        self.layers.clear();
        self.input = TensorInfo::default();
        self.arena_bytes = 0;
        self.live_peak_bytes = 0;
        self.naive_bytes = 0;
        self.boxes = None;
        self.grid = None;
    }

    /// Tensor `t`: 0 is the model input, `k + 1` layer `k`'s output.
    pub fn tensor(&self, t: usize) -> Option<&TensorInfo> {
        match t.checked_sub(1) {
            None => Some(&self.input),
            Some(k) => self.layers.get(k).map(|l| &l.out),
        }
    }

    fn tensor_mut(&mut self, t: usize) -> Option<&mut TensorInfo> {
        match t.checked_sub(1) {
            None => Some(&mut self.input),
            Some(k) => self.layers.get_mut(k).map(|l| &mut l.out),
        }
    }
}

/// The arena regions of an analysis, numbered so that each is found in O(1): 0 is the
/// input, `2k + 1` layer `k`'s output and `2k + 2` its scratch (size 0 when it has none).
/// Every region is rounded up to 4 bytes, so all offsets are word-aligned.
impl<const N: usize> Regions for Analysis<'_, N> {
    fn count(&self) -> usize {
        2 * self.layers.len() + 1
    }
    fn size(&self, r: usize) -> usize {
        self.region(r).map_or(0, |t| (t.len + 3) & !3) // len <= 2^24: no overflow
    }
    fn life(&self, r: usize) -> Lifetime {
        self.region(r).map_or(Lifetime::default(), |t| t.life)
    }
    /// Tensors by index, then scratch regions by layer: the order of the planner's tables
    /// before it worked in place, so existing blobs keep their arena.
    fn rank(&self, r: usize) -> usize {
        if r % 2 == 1 || r == 0 {
            r.div_ceil(2)
        } else {
            MAX_TENSORS + r / 2 - 1
        }
    }
    fn offset(&self, r: usize) -> usize {
        self.region(r).map_or(0, |t| t.offset)
    }
    fn set_offset(&mut self, r: usize, at: usize) {
        let k = r.wrapping_sub(1) / 2;
        let t = match (r, self.layers.get_mut(k)) {
            (0, _) => &mut self.input,
            (r, Some(l)) if r % 2 == 1 => &mut l.out,
            (_, Some(l)) => &mut l.scratch,
            _ => return,
        };
        t.offset = at;
    }
}

impl<const N: usize> Analysis<'_, N> {
    fn region(&self, r: usize) -> Option<&TensorInfo> {
        if r == 0 {
            return Some(&self.input);
        }
        let l = self.layers.get((r - 1) / 2)?;
        Some(if r % 2 == 1 { &l.out } else { &l.scratch })
    }
}

/// [`analyze`] reading `n_layers` nodes and then the head from `src`, filling `out` in place
/// (on a device the per-layer table is several kilobytes: it is never copied); returns the
/// head.
pub fn analyze_with<'a, S: LayerSource<'a>, const N: usize, const K: u32>(
    input: &TensorSpec,
    output: &TensorSpec,
    rounding: Rounding,
    n_layers: usize,
    src: &mut S,
    out: &mut Analysis<'a, N>,
) -> Result<Head, Error> {
    out.clear();
    let max = N.min(MAX_LAYERS);
    if n_layers == 0 || n_layers > max {
        return Err(Error::LayerCount {
            found: n_layers,
            max,
        });
    }
    check_model_io(input, output)?;
    let mut cur = input.shape;
    let mut total_macs = 0u64;
    let mut total_work = 0u64;
    out.input = TensorInfo {
        offset: 0,
        len: cur.len(),
        life: Lifetime { first: 0, last: 0 },
    };
    let in_zp = input.quant.zero_point as i8;
    // Shape and zero point of tensor `t` (0 the input, `k + 1` layer `k`'s output): tensors
    // are read only once their producer is in the table.
    let shape_of = |a: &Analysis<'a, N>, t: usize| match t.checked_sub(1) {
        None => input.shape,
        Some(k) => a.layers.get(k).map_or(Shape::new(0, 0, 0), |l| l.out_shape),
    };
    let zp_of = |a: &Analysis<'a, N>, t: usize| match t.checked_sub(1) {
        None => in_zp,
        Some(k) => a.layers.get(k).map_or(0, |l| l.out_zp),
    };
    let mut chain = true;
    for i in 0..n_layers {
        let node = &src.next_node()?;
        let li = i as u16;
        let layer = &node.layer;
        check_inputs(i, node, out)?;
        chain &= node.inputs.len() == 1 && node.inputs[0] as usize == i;
        let first = node.inputs[0] as usize;
        cur = shape_of(out, first);
        let zp = zp_of(out, first);
        let x = Operand { shape: cur, zp };
        let others = node.inputs.iter().skip(1).map(|&t| Operand {
            shape: shape_of(out, t as usize),
            zp: zp_of(out, t as usize),
        });
        // Each kind's checks live beside its kernel (TFLM's Prepare beside Eval).
        let Checked {
            step,
            out: shp,
            macs,
            param_bytes,
            out_zp,
        } = Step::prepare::<K>(li, layer, x, others, rounding)?;
        limit(li, "output tensor bytes", shp.bytes(), MAX_TENSOR_BYTES)?;
        total_work = total_work.saturating_add(step.work(cur, shp));
        limit(li, "work units of the model", total_work, MAX_WORK)?;
        total_macs = total_macs.saturating_add(macs);
        limit(
            li,
            "multiply-accumulates of the model",
            total_macs,
            MAX_MACS,
        )?;
        let scratch_bytes = step.scratch_bytes();
        let here = Lifetime { first: i, last: i };
        let info = LayerInfo {
            scratch: TensorInfo {
                offset: 0,
                len: scratch_bytes,
                life: here,
            },
            step,
            inputs: node.inputs.clone(),
            in_shape: cur,
            out_shape: shp,
            macs: macs as usize, // <= MAX_MACS < 2^31
            param_bytes,
            out: TensorInfo {
                offset: 0,
                len: shp.len(),
                life: here,
            },
            out_zp,
        };
        out.layers.push(info).map_err(|_| Error::LayerCount {
            found: n_layers,
            max,
        })?;
        cur = shp;
    }
    let head = src.head()?;
    let last = (n_layers - 1) as u16;
    let zp = zp_of(out, n_layers);
    if let Some(t) = out.tensor_mut(n_layers) {
        t.life.last = n_layers - 1; // the output stays live to the end
    }
    check_output_and_head(out, input, output, rounding, head, cur, zp)?;
    // The planner places the tensors and each layer's kernel scratch in place, every region
    // rounded up to 4 bytes so that all offsets are word-aligned (word loads are legal on
    // every core). The ping-pong layout holds only tensors; with scratch the greedy planner
    // places all.
    let chain = chain && out.layers.iter().all(|l| l.scratch.len == 0);
    let p = plan(out, chain);
    limit(last, "arena bytes", p.arena_bytes as u64, MAX_ARENA_BYTES)?;
    out.arena_bytes = p.arena_bytes;
    out.live_peak_bytes = p.live_peak_bytes;
    out.naive_bytes = p.naive_bytes;
    Ok(head)
}

/// The model's input and output specs: a non-empty input within the tensor limit, normal
/// positive scales, int8 zero points.
fn check_model_io(input: &TensorSpec, output: &TensorSpec) -> Result<(), Error> {
    if input.shape.bytes() == 0 {
        return Err(Error::BadParameter {
            layer: 0,
            what: "input shape",
        });
    }
    limit(
        0,
        "input tensor bytes",
        input.shape.bytes(),
        MAX_TENSOR_BYTES,
    )?;
    if !scale_ok(input.quant.scale) || !scale_ok(output.quant.scale) {
        return Err(Error::QuantOutOfRange {
            layer: 0,
            what: "model input/output scale (finite, positive, normal)",
        });
    }
    let zp_ok = |zp: i32| (-128..=127).contains(&zp);
    if !zp_ok(input.quant.zero_point) || !zp_ok(output.quant.zero_point) {
        return Err(Error::QuantOutOfRange {
            layer: 0,
            what: "model input/output zero point",
        });
    }
    Ok(())
}

/// Node `i`'s inputs: as many as its kind takes, each the model input or an earlier layer's
/// output (whose lifetime then reaches `i`).
fn check_inputs<const N: usize>(
    i: usize,
    node: &Node<'_>,
    out: &mut Analysis<'_, N>,
) -> Result<(), Error> {
    let li = i as u16;
    let arity = match node.layer {
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
        if let Some(tensor) = out.tensor_mut(t) {
            tensor.life.last = i;
        }
    }
    Ok(())
}

/// The last layer's output against the declared output (shape `cur`, zero point `zp`), and
/// the head against it (its decoders built into `out`).
fn check_output_and_head<const N: usize>(
    out: &mut Analysis<'_, N>,
    input: &TensorSpec,
    output: &TensorSpec,
    rounding: Rounding,
    head: Head,
    cur: Shape,
    zp: i8,
) -> Result<(), Error> {
    let last = out.layers.len().saturating_sub(1) as u16;
    if output.shape != cur {
        return Err(Error::OutputMismatch {
            expected: output.shape.dims(),
            found: cur.dims(),
        });
    }
    if output.quant.zero_point != zp as i32 {
        return Err(Error::QuantOutOfRange {
            layer: last,
            what: "model output zero point",
        });
    }
    let hdr = ModelHeader {
        name: "",
        input: *input,
        output: *output,
        rounding,
        head,
        labels: "",
    };
    match head {
        Head::Classifier { classes } if classes as usize == cur.len() => {}
        Head::Classifier { .. } => {
            return Err(Error::BadDetectionHead {
                what: "class count != output length",
            })
        }
        Head::Localizer { classes } if classes > 0 && classes as usize + 4 == cur.len() => {
            out.boxes = crate::detect::BoxDecoder::new(&hdr)?;
        }
        Head::Localizer { .. } => {
            return Err(Error::BadDetectionHead {
                what: "classes + 4 != output length",
            })
        }
        Head::GridDetector { .. } => {
            out.grid = crate::detect::GridDecoder::new(&hdr)?;
        }
        Head::Values { outputs } if outputs as usize == cur.len() => {}
        Head::Values { .. } => {
            return Err(Error::BadDetectionHead {
                what: "value count != output length",
            })
        }
    }
    Ok(())
}

/// An analysis's regions without the kernel scratch (odd regions are tensors, see
/// [`Regions`] for [`Analysis`]), for the activations' live peak.
struct TensorsOnly<'x, 'a, const N: usize>(&'x Analysis<'a, N>);

impl<const N: usize> Regions for TensorsOnly<'_, '_, N> {
    fn count(&self) -> usize {
        self.0.count()
    }
    fn size(&self, r: usize) -> usize {
        if r == 0 || r % 2 == 1 {
            self.0.size(r)
        } else {
            0
        }
    }
    fn life(&self, r: usize) -> Lifetime {
        self.0.life(r)
    }
    fn offset(&self, r: usize) -> usize {
        self.0.offset(r)
    }
    fn set_offset(&mut self, _: usize, _: usize) {}
}

/// What a model's arena holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaFigures {
    /// The arena `Interpreter::new` needs (the planner's layout).
    pub arena_bytes: usize,
    /// Most bytes live at one step, kernel scratch included: no layout needs less.
    pub live_peak_bytes: usize,
    /// Most activation bytes live at one step: the floor of layer-by-layer execution.
    /// `arena_bytes - activation_peak_bytes` is what kernel scratch and layout cost.
    pub activation_peak_bytes: usize,
    /// Every tensor and scratch live at once (no reuse).
    pub naive_bytes: usize,
}

/// The preamble and the payload of a blob whose payload matches its CRC.
fn checked_payload(bytes: &[u8]) -> Result<(Preamble, &[u8]), Error> {
    let (pre, payload) = Preamble::parse(bytes)?;
    let computed = crc32(payload);
    if computed != pre.crc32 {
        return Err(Error::CrcMismatch {
            expected: pre.crc32,
            computed,
        });
    }
    Ok((pre, payload))
}

/// Decodes a blob's whole payload (checking preamble and CRC) for tools that want the layer
/// list as written, e.g. `inspect`. Loading a model for inference does not need this.
pub fn decode_def(bytes: &[u8]) -> Result<ModelDef<'_>, Error> {
    let (_, payload) = checked_payload(bytes)?;
    let (def, rest) = postcard::take_from_bytes::<ModelDef>(payload).map_err(|_| Error::Decode)?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes { extra: rest.len() });
    }
    Ok(def)
}

/// A validated model borrowing its weights from the blob.
#[derive(Debug, Clone)]
///
/// `N` is the capacity of its per-layer table (default [`MAX_LAYERS`]): firmware that knows
/// its model can size it to the model's layer count, so the table costs no idle RAM. `K` is
/// the set of layer kinds it accepts ([`kinds`], default all): firmware built for one model
/// passes that model's kinds, and the other kernels are not linked (a blob with another
/// kind is refused with [`Error::KernelNotLinked`]).
pub struct Model<'a, const N: usize = MAX_LAYERS, const K: u32 = { kinds::ALL }> {
    def: ModelHeader<'a>,
    analysis: Analysis<'a, N>,
    blob_bytes: usize,
}

impl<'a> Model<'a> {
    /// Decodes and validates a blob: magic, version, length, CRC, then every layer.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        let mut m = Model::empty();
        m.load(bytes)?;
        Ok(m)
    }
}

impl<'a, const N: usize, const K: u32> Model<'a, N, K> {
    /// A model with no layers, to [`load`](Self::load) into (an interpreter refuses it).
    pub const fn empty() -> Model<'a, N, K> {
        Model {
            def: Self::empty_header(),
            analysis: Analysis::empty(),
            blob_bytes: 0,
        }
    }

    const fn empty_header() -> ModelHeader<'a> {
        let spec = TensorSpec {
            shape: Shape::new(0, 0, 0),
            quant: crate::quant::QuantParams {
                scale: 0.0,
                zero_point: 0,
            },
        };
        ModelHeader {
            name: "",
            input: spec,
            output: spec,
            rounding: Rounding::Single,
            head: Head::Classifier { classes: 0 },
            labels: "",
        }
    }

    /// [`from_bytes`](Self::from_bytes) into an existing model, in place: the per-layer
    /// table (kilobytes on a device) is built where it stays, never copied. On an error the
    /// model is left empty.
    pub fn load(&mut self, bytes: &'a [u8]) -> Result<(), Error> {
        let r = self.load_inner(bytes);
        if r.is_err() {
            // In place: a temporary empty model would take as much stack as the model.
            self.analysis.clear();
            self.def = Model::<N, K>::empty_header();
            self.blob_bytes = 0;
        }
        r
    }

    // Out of line: the decoding and checking take stack only while loading, not for as long
    // as the caller's frame lives.
    #[inline(never)]
    fn load_inner(&mut self, bytes: &'a [u8]) -> Result<(), Error> {
        let (pre, payload) = checked_payload(bytes)?;
        // The payload in wire order (name, input, output, layer count, layers, head, labels),
        // one node at a time, so the layer list is never held twice.
        let dec = |_: postcard::Error| Error::Decode;
        let (name, rest) = postcard::take_from_bytes::<&'a str>(payload).map_err(dec)?;
        let (input, rest) = postcard::take_from_bytes::<TensorSpec>(rest).map_err(dec)?;
        let (output, rest) = postcard::take_from_bytes::<TensorSpec>(rest).map_err(dec)?;
        let (rounding, rest) = postcard::take_from_bytes::<Rounding>(rest).map_err(dec)?;
        let (n_layers, rest) = postcard::take_from_bytes::<usize>(rest).map_err(dec)?;
        let mut src = PayloadSource { rest };
        let head = analyze_with::<_, N, K>(
            &input,
            &output,
            rounding,
            n_layers,
            &mut src,
            &mut self.analysis,
        )?;
        // The class names, postcard's `&str` (a length, then UTF-8) read by hand: the generic
        // decoder instantiated a second time cost 600 bytes of device flash.
        let (len, rest) = postcard::take_from_bytes::<usize>(src.rest).map_err(dec)?;
        let (labels, rest) = (rest.get(..len), rest.get(len..));
        let (Some(labels), Some(rest)) = (labels, rest) else {
            return Err(Error::Decode);
        };
        let labels = core::str::from_utf8(labels).map_err(|_| Error::Decode)?;
        crate::format::check_labels(labels, &head)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { extra: rest.len() });
        }
        if self.analysis.arena_bytes != pre.arena_bytes as usize {
            return Err(Error::ArenaMismatch {
                declared: pre.arena_bytes as usize,
                planned: self.analysis.arena_bytes,
            });
        }
        self.def = ModelHeader {
            name,
            input,
            output,
            rounding,
            head,
            labels,
        };
        self.blob_bytes = bytes.len();
        Ok(())
    }

    /// The box decoder of a localization model, `None` for a classifier.
    pub fn box_decoder(&self) -> Option<&crate::detect::BoxDecoder> {
        self.analysis.boxes.as_ref()
    }

    /// The grid decoder of a detection model, `None` otherwise.
    pub fn grid_decoder(&self) -> Option<&crate::detect::GridDecoder> {
        self.analysis.grid.as_ref()
    }

    /// Name, input and output specs and head. The layers, resolved, are [`Self::layer_info`];
    /// the layer list as written is [`decode_def`].
    pub fn def(&self) -> &ModelHeader<'a> {
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
    pub fn layer_info(&self) -> &[LayerInfo<'a>] {
        &self.analysis.layers
    }
    /// Offset, size and lifetime of tensor `t`: 0 is the input, `k + 1` layer `k`'s output.
    pub fn tensor(&self, t: usize) -> Option<&TensorInfo> {
        self.analysis.tensor(t)
    }
    /// The plan's figures.
    pub fn arena_figures(&self) -> ArenaFigures {
        let a = &self.analysis;
        ArenaFigures {
            arena_bytes: a.arena_bytes,
            live_peak_bytes: a.live_peak_bytes,
            // Computed here, not at load: only reports need it.
            activation_peak_bytes: crate::planner::live_peak(&TensorsOnly(a)),
            naive_bytes: a.naive_bytes,
        }
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
