//! Running a validated model in caller-owned memory.

use crate::format::Layer;
use crate::kernels::{self, Stage};
use crate::model::{Model, Step};
use crate::planner::chain_offset;
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

/// Disjoint input and output views of the arena; `None` if the ranges overlap or overflow
/// (impossible for a validated plan).
fn io(arena: &mut [u8], a: Range<usize>, b: Range<usize>) -> Option<(&[u8], &mut [u8])> {
    if a.end <= b.start && b.start <= arena.len() {
        let (lo, hi) = arena.split_at_mut(b.start);
        Some((lo.get(a)?, hi.get_mut(..b.len())?))
    } else if b.end <= a.start && a.start <= arena.len() {
        let (lo, hi) = arena.split_at_mut(a.start);
        let n = a.len();
        Some((hi.get(..n)?, lo.get_mut(b)?))
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
        let len = if index == 0 {
            self.model.input_len()
        } else {
            self.model
                .layer_info()
                .get(index - 1)
                .map_or(0, |l| l.out_shape.len())
        };
        let start = chain_offset(index, len, self.model.arena_bytes());
        start..start + len
    }

    /// The input tensor (int8 NHWC) to fill before `invoke`.
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
        let layers = self.model.def().layers.iter().zip(self.model.layer_info());
        for (i, (layer, info)) in layers.enumerate() {
            let (a, b) = (self.range(i), self.range(i + 1));
            let Some((x, y)) = io(self.arena, a, b) else {
                debug_assert!(false, "planner produced overlapping buffers");
                return;
            };
            let (x, y) = (as_i8(x), as_i8_mut(y));
            match (layer, info.step) {
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
                _ => debug_assert!(false, "layer and step disagree"),
            }
        }
    }
}
