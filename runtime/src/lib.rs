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
