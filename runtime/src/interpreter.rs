//! Running a validated model in caller-owned memory.

use crate::format::MAX_INPUTS;
use crate::kernels::as_i8;
use crate::model::Model;
use crate::Error;
use core::ops::Range;

/// Runs a [`Model`] in an arena the caller owns (a static buffer on a device).
pub struct Interpreter<
    'i,
    'a,
    const N: usize = { crate::format::MAX_LAYERS },
    const K: u32 = { crate::format::kinds::ALL },
> {
    model: &'i Model<'a, N, K>,
    arena: &'i mut [u8],
}

fn as_i8_mut(b: &mut [u8]) -> &mut [i8] {
    bytemuck::cast_slice_mut(b)
}

/// The arena carved for one step: the output and the kernel's scratch (both mutable,
/// disjoint) and read-only views of everything else, where the step's inputs live.
struct Carved<'x> {
    out: &'x mut [u8],
    scratch: &'x mut [u8],
    /// Read-only pieces with their arena offsets.
    ro: [(usize, &'x [u8]); 3],
}

impl<'x> Carved<'x> {
    /// Splits `arena` at the two mutable ranges (either may be empty). `None` if they overlap
    /// or leave the arena (impossible for a validated plan).
    fn new(arena: &'x mut [u8], out: Range<usize>, scr: Range<usize>) -> Option<Carved<'x>> {
        let scr = if scr.is_empty() {
            out.end..out.end
        } else {
            scr
        };
        let (first, second, out_first) = if out.start <= scr.start {
            (out, scr, true)
        } else {
            (scr, out, false)
        };
        if first.end > second.start || second.end > arena.len() {
            return None;
        }
        let (p0, rest) = arena.split_at_mut(first.start);
        let (m0, rest) = rest.split_at_mut(first.len());
        let (p1, rest) = rest.split_at_mut(second.start - first.end);
        let (m1, p2) = rest.split_at_mut(second.len());
        let ro = [(0, &*p0), (first.end, &*p1), (second.end, &*p2)];
        let (out, scratch) = if out_first { (m0, m1) } else { (m1, m0) };
        Some(Carved { out, scratch, ro })
    }

    /// The bytes of `r`, if they lie wholly in one read-only piece.
    fn view(&self, r: Range<usize>) -> Option<&'x [u8]> {
        self.ro.iter().find_map(|&(base, piece)| {
            let start = r.start.checked_sub(base)?;
            piece.get(start..start + r.len())
        })
    }
}

/// Arena bytes of tensor `index` (empty for an unknown index, impossible once validated).
fn tensor_range<const N: usize, const K: u32>(
    model: &Model<'_, N, K>,
    index: usize,
) -> Range<usize> {
    model
        .tensor(index)
        .map_or(0..0, |t| t.offset..t.offset + t.len)
}

impl<'i, 'a, const N: usize, const K: u32> Interpreter<'i, 'a, N, K> {
    /// Fails with [`Error::ArenaTooSmall`] if `arena` is smaller than `model.arena_bytes()`.
    pub fn new(model: &'i Model<'a, N, K>, arena: &'i mut [u8]) -> Result<Self, Error> {
        if model.layer_info().is_empty() {
            return Err(Error::LayerCount {
                found: 0,
                max: crate::format::MAX_LAYERS,
            });
        }
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

    /// Fills the input from real values, quantized with the model's input scale and zero
    /// point (round half away from zero, saturating; NaN becomes the zero point): for a
    /// caller who does not quantize by hand. `x` holds exactly the input's values (NHWC).
    pub fn set_input_f32(&mut self, x: &[f32]) -> Result<(), Error> {
        let q = self.model.def().input.quant;
        let input = self.input_mut();
        if x.len() != input.len() {
            return Err(Error::BufferLength {
                what: "input",
                expected: input.len(),
                found: x.len(),
            });
        }
        q.quantize_slice(x, input);
        Ok(())
    }

    /// The output after `invoke` as real values (the model's output scale and zero point),
    /// into `out`, which holds exactly the output's values.
    pub fn output_f32(&self, out: &mut [f32]) -> Result<(), Error> {
        let y = self.output();
        if out.len() != y.len() {
            return Err(Error::BufferLength {
                what: "output",
                expected: y.len(),
                found: out.len(),
            });
        }
        self.model.def().output.quant.dequantize_slice(y, out);
        Ok(())
    }

    /// The output tensor after `invoke`.
    pub fn output(&self) -> &[i8] {
        let r = self.range(self.model.layer_info().len());
        as_i8(self.arena.get(r).unwrap_or_default())
    }

    /// Runs every layer. The model was validated and the arena checked in `new`, so the only
    /// error is [`Error::PlanBroken`], a runtime bug no blob can cause: it is returned (the
    /// output is then not this input's) rather than ignored.
    #[inline(never)] // one symbol to profile (bench/cmsis-nn marks its entry and dispatch)
    pub fn invoke(&mut self) -> Result<(), Error> {
        self.invoke_observed(|_| {})
    }

    /// [`invoke`](Self::invoke), calling `after_layer(k)` once layer `k` has run (a profiler
    /// reads a cycle or instruction counter there; with a no-op closure this is `invoke`).
    #[inline(always)]
    pub fn invoke_observed(&mut self, mut after_layer: impl FnMut(usize)) -> Result<(), Error> {
        let model = self.model;
        for (i, info) in model.layer_info().iter().enumerate() {
            let out = tensor_range(model, i + 1);
            let s = info.scratch;
            let broken = Error::PlanBroken {
                layer: i.min(u16::MAX as usize) as u16,
            };
            let Some(c) = Carved::new(self.arena, out, s.offset..s.offset + s.len) else {
                debug_assert!(false, "planner produced an out-of-arena buffer");
                return Err(broken);
            };
            let mut xs: [&[i8]; MAX_INPUTS] = [&[]; MAX_INPUTS];
            for (x, &t) in xs.iter_mut().zip(&info.inputs) {
                match c.view(tensor_range(model, t as usize)) {
                    Some(v) => *x = as_i8(v),
                    None => {
                        debug_assert!(false, "planner overlapped an input and the output");
                        return Err(broken);
                    }
                }
            }
            let y = c.out;
            // Word-aligned by the plan; a caller's arena that is not leaves the kernel no
            // scratch, and it takes its scratch-free path.
            let scratch: &mut [u32] = bytemuck::try_cast_slice_mut(c.scratch).unwrap_or_default();
            info.step.run::<K>(
                &xs,
                info.inputs.len(),
                info.out_shape,
                as_i8_mut(y),
                scratch,
            );
            after_layer(i);
        }
        Ok(())
    }
}
