//! The writer side (host only, `alloc` feature): serialize a [`ModelDef`] into a blob with the
//! planner's arena figure and the payload CRC in its preamble, and [`OwnedModel`], the one
//! owned model builder every front-end (the trainer's export and `.tflite` import) fills and
//! writes.

extern crate alloc;
use alloc::string::String;
use alloc::vec::Vec;

use crate::format::{
    Add, Conv2d, FullyConnected, Head, Inputs, Layer, Mean, ModelDef, Node, OutputStage, Padding,
    Pool2d, Preamble, Softmax, TensorSpec, FORMAT_VERSION, MAX_LAYERS,
};
use crate::model::{analyze, crc32};
use crate::quant::{Requant, Rounding};
use crate::Error;

/// Validates `def` exactly as the loader will, then writes preamble + postcard payload.
pub fn write_blob(def: &ModelDef) -> Result<Vec<u8>, Error> {
    let analysis = analyze(def)?;
    let payload =
        postcard::to_allocvec(def).map_err(|_| Error::Unencodable { what: "postcard" })?;
    let pre = Preamble {
        version: FORMAT_VERSION,
        arena_bytes: u32::try_from(analysis.arena_bytes)
            .map_err(|_| Error::Unencodable { what: "arena" })?,
        payload_len: u32::try_from(payload.len())
            .map_err(|_| Error::Unencodable { what: "payload" })?,
        crc32: crc32(&payload),
    };
    let mut out = Vec::with_capacity(payload.len() + 20);
    out.extend_from_slice(&pre.to_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Biases as the blob stores them (i32 LE).
pub fn encode_i32s(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Requantization parameters as the blob stores them (multiplier i32 LE, shift i32 LE).
pub fn encode_requants(values: &[Requant]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|r| {
            r.multiplier
                .to_le_bytes()
                .into_iter()
                .chain(r.shift.to_le_bytes())
        })
        .collect()
}

/// int8 weights as bytes.
pub fn encode_i8s(values: &[i8]) -> Vec<u8> {
    values.iter().map(|&v| v as u8).collect()
}

/// Class names as the blob stores them ([`crate::format::check_labels`]): joined by `\n`.
pub fn join_labels<S: core::borrow::Borrow<str>>(names: &[S]) -> String {
    names.join("\n")
}

// ---- the owned model builder ----------------------------------------------------------------

/// [`OutputStage`] with its arrays owned: bias, requantization, zero point and clamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedStage {
    pub zero_point: i8,
    pub act_min: i8,
    pub act_max: i8,
    /// One i32 LE per output channel ([`encode_i32s`]).
    pub bias: Vec<u8>,
    /// One `(multiplier i32 LE, shift i32 LE)` per output channel ([`encode_requants`]).
    pub requant: Vec<u8>,
}

impl OwnedStage {
    /// A stage clamping to `act_min..=act_max`, its per-channel values encoded as the blob
    /// stores them.
    pub fn new(
        zero_point: i8,
        act_min: i8,
        act_max: i8,
        bias: &[i32],
        requant: &[Requant],
    ) -> OwnedStage {
        OwnedStage {
            zero_point,
            act_min,
            act_max,
            bias: encode_i32s(bias),
            requant: encode_requants(requant),
        }
    }

    fn borrow(&self) -> OutputStage<'_> {
        OutputStage {
            zero_point: self.zero_point,
            act_min: self.act_min,
            act_max: self.act_max,
            bias: &self.bias,
            requant: &self.requant,
        }
    }
}

/// [`Conv2d`] with its weights and output stage owned; a convolution or, as
/// [`OwnedLayer::DepthwiseConv2d`], a depthwise one (then `weights` is `[1, kh, kw, C]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedConv {
    pub in_channels: u16,
    pub out_channels: u16,
    pub kernel_h: u8,
    pub kernel_w: u8,
    pub stride_h: u8,
    pub stride_w: u8,
    pub padding: Padding,
    pub input_zero_point: i8,
    pub output: OwnedStage,
    /// int8 OHWI ([`encode_i8s`]).
    pub weights: Vec<u8>,
    /// A max-pool fused into the convolution.
    pub pool: Option<Pool2d>,
}

impl OwnedConv {
    fn borrow(&self) -> Conv2d<'_> {
        Conv2d {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            padding: self.padding,
            input_zero_point: self.input_zero_point,
            output: self.output.borrow(),
            weights: &self.weights,
            pool: self.pool,
        }
    }
}

/// [`FullyConnected`] with its weights and output stage owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFullyConnected {
    pub in_features: u32,
    pub out_features: u16,
    pub input_zero_point: i8,
    pub output: OwnedStage,
    /// int8 `[out, in]` ([`encode_i8s`]).
    pub weights: Vec<u8>,
}

impl OwnedFullyConnected {
    fn borrow(&self) -> FullyConnected<'_> {
        FullyConnected {
            in_features: self.in_features,
            out_features: self.out_features,
            input_zero_point: self.input_zero_point,
            output: self.output.borrow(),
            weights: &self.weights,
        }
    }
}

/// [`Layer`] with its arrays owned: one variant per layer kind, the kinds without arrays as
/// the format has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedLayer {
    Conv2d(OwnedConv),
    DepthwiseConv2d(OwnedConv),
    MaxPool2d(Pool2d),
    AvgPool2d(Pool2d),
    GlobalAvgPool,
    FullyConnected(OwnedFullyConnected),
    Add(Add),
    Concat,
    Mean(Mean),
    Softmax(Softmax),
}

impl OwnedLayer {
    fn borrow(&self) -> Layer<'_> {
        match self {
            OwnedLayer::Conv2d(c) => Layer::Conv2d(c.borrow()),
            OwnedLayer::DepthwiseConv2d(c) => Layer::DepthwiseConv2d(c.borrow()),
            OwnedLayer::MaxPool2d(p) => Layer::MaxPool2d(*p),
            OwnedLayer::AvgPool2d(p) => Layer::AvgPool2d(*p),
            OwnedLayer::GlobalAvgPool => Layer::GlobalAvgPool,
            OwnedLayer::FullyConnected(f) => Layer::FullyConnected(f.borrow()),
            OwnedLayer::Add(a) => Layer::Add(*a),
            OwnedLayer::Concat => Layer::Concat,
            OwnedLayer::Mean(m) => Layer::Mean(*m),
            OwnedLayer::Softmax(s) => Layer::Softmax(*s),
        }
    }
}

/// [`Node`] with its layer owned: the layer and the tensor ids it reads (0 the model input,
/// `k + 1` the output of layer `k`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedNode {
    pub inputs: Vec<u8>,
    pub layer: OwnedLayer,
}

/// A whole model with every array owned, what a front-end builds layer by layer;
/// [`OwnedModel::write`] borrows it into a [`ModelDef`] and writes the blob.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedModel {
    pub name: String,
    pub input: TensorSpec,
    pub output: TensorSpec,
    /// How every requantization of the model rounds.
    pub rounding: Rounding,
    /// The graph in execution order; the last layer's output is the model output.
    pub layers: Vec<OwnedNode>,
    pub head: Head,
    /// Class names, one per class joined by `\n` ([`crate::format::check_labels`]); empty
    /// when classes are numbers. [`OwnedModel::with_labels`] joins a list.
    pub labels: String,
}

impl OwnedModel {
    /// The model as the format's [`ModelDef`], borrowing every array. Not validated (that is
    /// [`OwnedModel::write`]'s): the only errors are more than [`MAX_LAYERS`] layers, or more
    /// than [`crate::format::MAX_INPUTS`] inputs of a layer.
    pub fn def(&self) -> Result<ModelDef<'_>, Error> {
        let mut layers = heapless::Vec::new();
        for (k, n) in self.layers.iter().enumerate() {
            let inputs = Inputs::from_slice(&n.inputs).map_err(|_| Error::BadParameter {
                layer: u16::try_from(k).unwrap_or(u16::MAX),
                what: "number of inputs for this layer type",
            })?;
            let node = Node {
                inputs,
                layer: n.layer.borrow(),
            };
            layers.push(node).map_err(|_| Error::LayerCount {
                found: self.layers.len(),
                max: MAX_LAYERS,
            })?;
        }
        Ok(ModelDef {
            name: &self.name,
            input: self.input,
            output: self.output,
            rounding: self.rounding,
            layers,
            head: self.head,
            labels: &self.labels,
        })
    }

    /// The model with `names` as its class names (checked when written).
    pub fn with_labels<S: core::borrow::Borrow<str>>(mut self, names: &[S]) -> OwnedModel {
        self.labels = join_labels(names);
        self
    }

    /// The blob: [`OwnedModel::def`], then [`write_blob`] (which validates it as the loader
    /// will).
    pub fn write(&self) -> Result<Vec<u8>, Error> {
        write_blob(&self.def()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QuantParams;

    fn model() -> OwnedModel {
        let q = |c| TensorSpec {
            shape: crate::Shape::new(4, 4, c),
            quant: QuantParams {
                scale: 0.1,
                zero_point: -128,
            },
        };
        let rq = Requant::from_real(0.25).unwrap();
        let conv = OwnedConv {
            in_channels: 1,
            out_channels: 2,
            kernel_h: 1,
            kernel_w: 1,
            stride_h: 1,
            stride_w: 1,
            padding: Padding::uniform(0),
            input_zero_point: -128,
            output: OwnedStage::new(-128, -128, 127, &[5, -5], &[rq, rq]),
            weights: encode_i8s(&[3, -3]),
            pool: None,
        };
        OwnedModel {
            name: "owned".into(),
            input: q(1),
            output: q(4),
            rounding: Rounding::Single,
            layers: alloc::vec![
                OwnedNode {
                    inputs: alloc::vec![0],
                    layer: OwnedLayer::Conv2d(conv),
                },
                OwnedNode {
                    inputs: alloc::vec![1, 1],
                    layer: OwnedLayer::Concat,
                },
            ],
            head: Head::Classifier { classes: 64 },
            labels: String::new(),
        }
    }

    /// The builder's blob is `write_blob` of the same definition built by hand.
    #[test]
    fn writes_what_write_blob_writes() {
        let m = model();
        let rq = Requant::from_real(0.25).unwrap();
        let (bias, requant) = (encode_i32s(&[5, -5]), encode_requants(&[rq, rq]));
        let mut layers = heapless::Vec::new();
        let conv = Conv2d {
            in_channels: 1,
            out_channels: 2,
            kernel_h: 1,
            kernel_w: 1,
            stride_h: 1,
            stride_w: 1,
            padding: Padding::uniform(0),
            input_zero_point: -128,
            output: OutputStage {
                zero_point: -128,
                act_min: -128,
                act_max: 127,
                bias: &bias,
                requant: &requant,
            },
            weights: &[3, 253],
            pool: None,
        };
        let _ = layers.push(Node::chained(0, Layer::Conv2d(conv)));
        let _ = layers.push(Node {
            inputs: Inputs::from_slice(&[1, 1]).unwrap(),
            layer: Layer::Concat,
        });
        let def = ModelDef {
            name: "owned",
            input: m.input,
            output: m.output,
            rounding: Rounding::Single,
            layers,
            head: m.head,
            labels: "",
        };
        assert_eq!(m.def().unwrap(), def);
        assert_eq!(m.write().unwrap(), write_blob(&def).unwrap());
    }

    /// What the format's fixed capacities cannot hold is an error, not a panic.
    #[test]
    fn too_many_inputs_or_layers_are_errors() {
        let mut m = model();
        m.layers[1].inputs = alloc::vec![1; crate::format::MAX_INPUTS + 1];
        assert!(matches!(m.def(), Err(Error::BadParameter { layer: 1, .. })));
        let mut m = model();
        let pool = OwnedNode {
            inputs: alloc::vec![0],
            layer: OwnedLayer::MaxPool2d(Pool2d::square(1, 1, 0)),
        };
        m.layers = alloc::vec![pool; MAX_LAYERS + 1];
        assert_eq!(
            m.def().err(),
            Some(Error::LayerCount {
                found: MAX_LAYERS + 1,
                max: MAX_LAYERS
            })
        );
    }
}
