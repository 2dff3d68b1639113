//! `no_std`, allocation-free int8 inference for small CNNs on microcontrollers.
//!
//! ```text
//! let model = Model::from_bytes(BLOB)?;            // validates everything once
//! let mut interp = Interpreter::new(&model, &mut ARENA)?;  // ArenaTooSmall { needed, available }
//! interp.input_mut().copy_from_slice(&image);       // int8 NHWC (or set_input_f32)
//! interp.invoke()?;                                 // integer arithmetic only
//! let logits = interp.output();                     // int8 (or output_f32)
//! ```
//! The runtime owns the model format ([`format`]) and every line of integer arithmetic
//! ([`quant`], [`kernels`]); the trainer, the host tests and the firmware all call it.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![deny(unsafe_code)] // the one exception: the DSP instructions' inline asm (kernels/dsp.rs)

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod detect;
mod error;
pub mod format;
mod interpreter;
pub mod kernels;
mod model;
pub(crate) mod planner;
pub mod quant;
#[cfg(any(test, feature = "std"))]
pub mod reference_model;
pub mod vectors;
#[cfg(feature = "alloc")]
pub mod writer;

pub use detect::{BoxDecoder, BoxQ4, Detection, Detections, GridDecoder};
pub use error::Error;
pub use format::{Layer, ModelDef, ModelHeader, Shape, TensorSpec};
pub use interpreter::Interpreter;
pub use kernels::Step;
pub use model::{analyze, crc32, decode_def, Analysis, ArenaFigures, LayerInfo, Model};
pub use quant::{argmax, QuantParams, Requant, Rounding};

/// Reads only the preamble's arena figure (for build scripts sizing a static arena).
pub fn arena_bytes_of(blob: &[u8]) -> Result<usize, Error> {
    format::Preamble::parse(blob).map(|(p, _)| p.arena_bytes as usize)
}

/// The arena a blob needs, read from its preamble during compilation, to size a static
/// [`Arena`]: `const BLOB: &[u8] = include_bytes!("model.bin");` then
/// `Arena<{ runtime::arena_bytes_const(BLOB) }>`. A blob without this format's preamble gives
/// 0, and `Interpreter::new` then fails with `ArenaTooSmall` naming the size it needs.
pub const fn arena_bytes_const(blob: &[u8]) -> usize {
    if blob.len() < format::PREAMBLE_BYTES
        || blob[0] != format::MAGIC[0]
        || blob[1] != format::MAGIC[1]
        || blob[2] != format::MAGIC[2]
        || blob[3] != format::MAGIC[3]
        || u16::from_le_bytes([blob[4], blob[5]]) != format::FORMAT_VERSION
    {
        return 0;
    }
    u32::from_le_bytes([blob[8], blob[9], blob[10], blob[11]]) as usize
}

/// Memory for an [`Interpreter`], aligned for the kernels' word-sized scratch (an arena that
/// is not word-aligned still works, more slowly). On a device, a `static`: with
/// `static_cell::ConstStaticCell` it is zero-initialised in `.bss` and handed out once, with no
/// copy through the stack (see `runtime/examples/cortex-m`).
#[repr(C, align(16))]
pub struct Arena<const N: usize>(pub [u8; N]);

impl<const N: usize> Arena<N> {
    pub const fn new() -> Self {
        Arena([0; N])
    }

    /// The bytes, for [`Interpreter::new`].
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}
