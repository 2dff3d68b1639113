//! Running a validated model in caller-owned memory.

use crate::format::{Layer, MAX_INPUTS};
use crate::kernels::{self, Stage};
use crate::model::{Model, Step};
use crate::Error;
use core::ops::Range;

/// Runs a [`Model`] in an arena the caller owns (a static buffer on a device).
pub struct Interpreter<'i, 'a> {
    model: &'i Model<'a>,
    arena: &'i mut [u8],
}

fn as_i8(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(b)
}
fn as_i8_mut(b: &mut [u8]) -> &mut [i8] {
    bytemuck::cast_slice_mut(b)
}

/// Splits the arena around the output range: the output slice, and the read-only bytes below
/// and above it. `None` if the range overflows (impossible for a validated plan).
fn split(arena: &mut [u8], out: Range<usize>) -> Option<(&[u8], &mut [u8], &[u8])> {
    let (lo, rest) = arena.split_at_mut(out.start.min(arena.len()));
    let (y, hi) = rest.split_at_mut(out.len().min(rest.len()));
    (y.len() == out.len()).then_some((lo, y, hi))
}

/// An input range, if it lies wholly below or wholly above the output at `out`.
fn view<'x>(lo: &'x [u8], hi: &'x [u8], out: &Range<usize>, r: Range<usize>) -> Option<&'x [u8]> {
    if r.end <= out.start {
        lo.get(r)
    } else if r.start >= out.end {
        hi.get(r.start - out.end..r.end - out.end)
    } else {
        None
    }
}

fn stage<'a>(o: &crate::format::OutputStage<'a>) -> Stage<'a> {
    Stage {
        bias: o.bias,
        requant: o.requant,
        zero_point: o.zero_point as i32,
        act_min: o.act_min as i32,
        act_max: o.act_max as i32,
    }
}

/// Arena bytes of tensor `index` (empty for an unknown index, impossible once validated).
fn tensor_range(model: &Model, index: usize) -> Range<usize> {
    model
        .tensors()
        .get(index)
        .map_or(0..0, |t| t.offset..t.offset + t.len)
}

impl<'i, 'a> Interpreter<'i, 'a> {
    /// Fails with [`Error::ArenaTooSmall`] if `arena` is smaller than `model.arena_bytes()`.
    pub fn new(model: &'i Model<'a>, arena: &'i mut [u8]) -> Result<Self, Error> {
        let needed = model.arena_bytes();
        let available = arena.len();
        let arena = arena
            .get_mut(..needed)
            .ok_or(Error::ArenaTooSmall { needed, available })?;
        Ok(Interpreter { model, arena })
    }

    fn range(&self, index: usize) -> Range<usize> {
        tensor_range(self.model, index)
    }

    /// The input tensor (int8 NHWC) to fill before **each** `invoke`: once the input is dead the
    /// plan may reuse its bytes for later tensors.
    pub fn input_mut(&mut self) -> &mut [i8] {
        let r = self.range(0);
        as_i8_mut(self.arena.get_mut(r).unwrap_or_default())
    }

    /// The output tensor after `invoke`.
    pub fn output(&self) -> &[i8] {
        let r = self.range(self.model.layer_info().len());
        as_i8(self.arena.get(r).unwrap_or_default())
    }

    /// Runs every layer. Cannot fail: the model was validated and the arena checked in `new`.
    pub fn invoke(&mut self) {
        self.invoke_observed(|_| {});
    }

    /// [`invoke`](Self::invoke), calling `after_layer(k)` once layer `k` has run (a profiler
    /// reads a cycle or instruction counter there; with a no-op closure this is `invoke`).
    #[inline(always)]
    pub fn invoke_observed(&mut self, mut after_layer: impl FnMut(usize)) {
        let model = self.model;
        let layers = model.def().layers.iter().zip(model.layer_info());
        for (i, (node, info)) in layers.enumerate() {
            let out = tensor_range(model, i + 1);
            let Some((lo, y, hi)) = split(self.arena, out.clone()) else {
                debug_assert!(false, "planner produced an out-of-arena buffer");
                return;
            };
            let mut xs: [&[i8]; MAX_INPUTS] = [&[]; MAX_INPUTS];
            for (x, &t) in xs.iter_mut().zip(&node.inputs) {
                match view(lo, hi, &out, tensor_range(model, t as usize)) {
                    Some(v) => *x = as_i8(v),
                    None => {
                        debug_assert!(false, "planner overlapped an input and the output");
                        return;
                    }
                }
            }
            let (x, y) = (xs[0], as_i8_mut(y));
            match (&node.layer, info.step) {
                (Layer::Conv2d(cv), Step::Conv(g)) => {
                    let w = as_i8(cv.weights);
                    kernels::conv2d(x, cv.input_zero_point as i32, w, &g, &stage(&cv.output), y)
                }
                (Layer::DepthwiseConv2d(cv), Step::Depthwise(g)) => {
                    let w = as_i8(cv.weights);
                    kernels::depthwise_conv2d(
                        x,
                        cv.input_zero_point as i32,
                        w,
                        &g,
                        &stage(&cv.output),
                        y,
                    )
                }
                (Layer::MaxPool2d(_), Step::MaxPool(g)) => kernels::max_pool2d(x, &g, y),
                (Layer::AvgPool2d(_), Step::AvgPool(g)) => kernels::avg_pool2d(x, &g, y),
                (Layer::GlobalAvgPool, Step::GlobalAvgPool { channels }) => {
                    kernels::global_avg_pool(x, channels, y)
                }
                (Layer::FullyConnected(fc), Step::FullyConnected { .. }) => {
                    let w = as_i8(fc.weights);
                    kernels::fully_connected(
                        x,
                        fc.input_zero_point as i32,
                        w,
                        &stage(&fc.output),
                        y,
                    )
                }
                (Layer::Add(_), Step::Add(p)) => kernels::add(x, xs[1], &p, y),
                (Layer::Concat, Step::Concat { pixels }) => {
                    kernels::concat_channels(&xs[..node.inputs.len()], pixels, y)
                }
                _ => debug_assert!(false, "layer and step disagree"),
            }
            after_layer(i);
        }
    }
}
