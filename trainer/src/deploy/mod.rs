//! From a trained model to the device: BN folding, calibration, int8 export and evaluation
//! through the runtime, and the emulated board.

pub mod device;
pub mod export;
pub mod fold;
pub mod inspect;
pub mod prune;
pub mod run;
pub mod tflite;
