//! A checked layer as the interpreter runs it: [`Step`], built by [`Step::prepare`] from a
//! layer of the blob (each kernel module checks its own kind) and run by [`Step::run`]. The
//! kernels never see the loader: this module is where a layer kind meets its kernel.

use super::prepare::{Checked, Operand};
use super::{
    add, concat, conv, conv_patch, depthwise, dw_plane, fc, pool, softmax, AddParams, ConvGeom,
    MeanParams, PoolGeom, Stage,
};
use crate::format::kinds;
use crate::format::{kind, Layer, Shape, Softmax, MAX_INPUTS};
use crate::quant::Rounding;
use crate::Error;

/// What a layer does, with its geometry resolved and its arrays borrowed from the blob: the
/// interpreter runs a step from this alone, so a layer and its plan cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Conv {
        g: ConvGeom,
        in_zp: i8,
        /// int8 OHWI.
        weights: &'a [i8],
        stage: Stage<'a>,
    },
    Depthwise {
        g: ConvGeom,
        in_zp: i8,
        /// int8 `[1, kh, kw, C]`.
        weights: &'a [i8],
        stage: Stage<'a>,
    },
    MaxPool(PoolGeom),
    AvgPool(PoolGeom),
    GlobalAvgPool {
        channels: usize,
    },
    FullyConnected {
        in_features: usize,
        out_features: usize,
        in_zp: i8,
        /// int8 `[out, in]`.
        weights: &'a [i8],
        stage: Stage<'a>,
    },
    Add(AddParams),
    /// Channel concatenation over `pixels` pixels.
    Concat {
        pixels: usize,
    },
    Mean(MeanParams),
    Softmax(Softmax),
}

/// Work units charged per output value besides its inner loop: gathering, requantizing,
/// storing (a few dozen instructions).
pub const WORK_PER_OUTPUT: u64 = 16;

impl Step<'_> {
    /// The step's work units ([`crate::format::MAX_WORK`]): inner-loop iterations plus
    /// [`WORK_PER_OUTPUT`] per value computed, exact in `u64` (saturating), for first input
    /// shape `input` and output shape `out`. A fused pool's convolution computes each conv output once per window that
    /// holds it, and a pool reads each window whole, so both count what the kernel does, not
    /// the MACs of the layer.
    pub fn work(&self, input: Shape, out: Shape) -> u64 {
        let mul = |v: &[usize]| v.iter().fold(1u64, |a, &f| a.saturating_mul(f as u64));
        let outs = out.bytes();
        let per = |inner: u64| inner.saturating_add(WORK_PER_OUTPUT);
        match self {
            Step::Conv { g, .. } | Step::Depthwise { g, .. } => {
                let taps = if matches!(self, Step::Depthwise { .. }) {
                    g.k_h * g.k_w
                } else {
                    g.k_h * g.k_w * g.in_c
                };
                // Conv outputs computed: each pooled output's whole window.
                mul(&[g.out_h, g.out_w, g.pool_k, g.pool_k, g.out_c])
                    .saturating_mul(per(taps as u64))
            }
            Step::MaxPool(g) | Step::AvgPool(g) => outs.saturating_mul(per(mul(&[g.k_h, g.k_w]))),
            Step::FullyConnected { in_features, .. } => {
                outs.saturating_mul(per(*in_features as u64))
            }
            // Whole-input reductions: every input value once, then each output.
            Step::GlobalAvgPool { .. } | Step::Mean(_) => input
                .bytes()
                .saturating_add(outs.saturating_mul(WORK_PER_OUTPUT)),
            Step::Add(_) | Step::Concat { .. } => outs.saturating_mul(WORK_PER_OUTPUT),
            // Three passes over a row (max, sum of exponentials, output), each exponential
            // a few dozen operations.
            Step::Softmax(_) => outs.saturating_mul(4 * WORK_PER_OUTPUT),
        }
    }

    /// The layer kind's name (as `Layer::name`).
    pub fn name(&self) -> &'static str {
        match self {
            Step::Conv { .. } => kind::CONV2D,
            Step::Depthwise { .. } => kind::DEPTHWISE_CONV2D,
            Step::MaxPool(_) => kind::MAX_POOL2D,
            Step::AvgPool(_) => kind::AVG_POOL2D,
            Step::GlobalAvgPool { .. } => kind::GLOBAL_AVG_POOL,
            Step::FullyConnected { .. } => kind::FULLY_CONNECTED,
            Step::Add(_) => kind::ADD,
            Step::Concat { .. } => kind::CONCAT,
            Step::Mean(_) => kind::MEAN,
            Step::Softmax(_) => kind::SOFTMAX,
        }
    }
}

impl<'a> Step<'a> {
    /// Checks layer `li` of kind `layer`, reading `x` (and `others`, the second and later
    /// inputs of an add or a concat), beside its kernel (TFLM's Prepare beside Eval).
    pub(crate) fn prepare<const K: u32>(
        li: u16,
        layer: &Layer<'a>,
        x: Operand,
        others: impl Iterator<Item = Operand> + Clone,
        rounding: Rounding,
    ) -> Result<Checked<Step<'a>>, Error> {
        let conv = |p: conv::ConvPlan<'a>| (p.g, p.in_zp, p.weights, p.stage);
        Ok(match layer {
            Layer::Conv2d(cv) if K & kinds::CONV2D != 0 => {
                conv::prepare(li, cv, false, x, rounding)?.map(|p| {
                    let (g, in_zp, weights, stage) = conv(p);
                    Step::Conv {
                        g,
                        in_zp,
                        weights,
                        stage,
                    }
                })
            }
            Layer::DepthwiseConv2d(cv) if K & kinds::DEPTHWISE_CONV2D != 0 => {
                conv::prepare(li, cv, true, x, rounding)?.map(|p| {
                    let (g, in_zp, weights, stage) = conv(p);
                    Step::Depthwise {
                        g,
                        in_zp,
                        weights,
                        stage,
                    }
                })
            }
            Layer::MaxPool2d(p) if K & kinds::MAX_POOL2D != 0 => {
                pool::prepare(li, p, false, x)?.map(Step::MaxPool)
            }
            Layer::AvgPool2d(p) if K & kinds::AVG_POOL2D != 0 => {
                pool::prepare(li, p, true, x)?.map(Step::AvgPool)
            }
            Layer::GlobalAvgPool if K & kinds::GLOBAL_AVG_POOL != 0 => {
                pool::prepare_global(li, x)?.map(|channels| Step::GlobalAvgPool { channels })
            }
            Layer::FullyConnected(l) if K & kinds::FULLY_CONNECTED != 0 => {
                fc::prepare(li, l, x, rounding)?.map(|p| Step::FullyConnected {
                    in_features: p.in_features,
                    out_features: p.out_features,
                    in_zp: p.in_zp,
                    weights: p.weights,
                    stage: p.stage,
                })
            }
            Layer::Add(a) if K & kinds::ADD != 0 => {
                let y = others.clone().next().ok_or(Error::BadParameter {
                    layer: li,
                    what: "add inputs (must be 2)",
                })?;
                add::prepare(li, a, x, y, rounding)?.map(Step::Add)
            }
            Layer::Mean(m) if K & kinds::MEAN != 0 => {
                pool::prepare_mean(li, m, x, rounding)?.map(Step::Mean)
            }
            Layer::Softmax(s) if K & kinds::SOFTMAX != 0 => {
                softmax::prepare(li, s, x)?.map(Step::Softmax)
            }
            Layer::Concat if K & kinds::CONCAT != 0 => {
                concat::prepare(li, core::iter::once(x).chain(others), x)?
                    .map(|pixels| Step::Concat { pixels })
            }
            // A kind this build does not link (`K`, constant: the arms above for the others
            // are not compiled in).
            _ => {
                return Err(Error::KernelNotLinked {
                    layer: li,
                    kind: layer.name(),
                })
            }
        })
    }

    /// Arena bytes of the kernel's scratch (0: none), live only while the step runs.
    pub fn scratch_bytes(&self) -> usize {
        match self {
            // Words, at most 12 * 256 + 257 (PATCH_MAX_TAPS): fits 32 bits.
            Step::Conv { g, stage, .. } => 4 * conv_patch::conv2d_scratch_words(g, stage),
            // At most 512 words (dw_plane's PLANE_MAX halfwords).
            Step::Depthwise { g, stage, .. } => 4 * dw_plane::plane_scratch_words(g, stage),
            _ => 0,
        }
    }

    /// Runs the step's kernel: `xs[..n]` the inputs the layer reads, `y` the output of shape
    /// `out`, `scratch` the kernel's words (empty: its scratch-free path).
    #[inline(always)]
    pub fn run<const K: u32>(
        &self,
        xs: &[&[i8]; MAX_INPUTS],
        n: usize,
        out: Shape,
        y: &mut [i8],
        scratch: &mut [u32],
    ) {
        let x = xs[0];
        match *self {
            Step::Conv {
                g,
                in_zp,
                weights,
                stage,
            } if K & kinds::CONV2D != 0 => {
                conv::conv2d(x, in_zp as i32, weights, &g, &stage, y, scratch)
            }
            Step::Depthwise {
                g,
                in_zp,
                weights,
                stage,
            } if K & kinds::DEPTHWISE_CONV2D != 0 => {
                depthwise::depthwise_conv2d(x, in_zp as i32, weights, &g, &stage, y, scratch)
            }
            Step::MaxPool(g) if K & kinds::MAX_POOL2D != 0 => pool::max_pool2d(x, &g, y),
            Step::AvgPool(g) if K & kinds::AVG_POOL2D != 0 => pool::avg_pool2d(x, &g, y),
            Step::GlobalAvgPool { channels } if K & kinds::GLOBAL_AVG_POOL != 0 => {
                pool::global_avg_pool(x, channels, y)
            }
            Step::FullyConnected {
                in_zp,
                weights,
                stage,
                ..
            } if K & kinds::FULLY_CONNECTED != 0 => {
                fc::fully_connected(x, in_zp as i32, weights, &stage, y)
            }
            Step::Add(p) if K & kinds::ADD != 0 => add::add(x, xs[1], &p, y),
            Step::Concat { pixels } if K & kinds::CONCAT != 0 => {
                concat::concat_channels(xs.get(..n).unwrap_or_default(), pixels, y)
            }
            Step::Mean(p) if K & kinds::MEAN != 0 => pool::mean(x, &p, y),
            Step::Softmax(p) if K & kinds::SOFTMAX != 0 => {
                softmax::softmax(x, out.c as usize, &p, y)
            }
            // Not linked: `prepare` refused the layer, so no such step exists.
            _ => {}
        }
    }
}
