//! The runtime's one error type: every way a blob or a caller's buffer can be wrong.

use core::fmt;

/// Everything that can go wrong while loading a model or preparing an interpreter.
///
/// Variants carry the numbers that explain them, so a one-line message on a device log is
/// enough to act on. After [`crate::Interpreter::new`] succeeds, `invoke` fails only with
/// [`Error::PlanBroken`], which no blob can cause (it would be a bug of the planner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The blob is shorter than its fixed preamble or than the payload length it declares.
    Truncated { needed: usize, available: usize },
    /// The blob does not start with `TMCU`.
    BadMagic,
    /// The blob was written by another format version.
    UnsupportedVersion { found: u16, supported: u16 },
    /// The preamble's reserved bytes are not zero (written by a newer writer, or corrupted).
    Reserved,
    /// Bytes follow the payload the preamble declares.
    TrailingBytes { extra: usize },
    /// The payload's CRC-32 differs from the one in the preamble.
    CrcMismatch { expected: u32, computed: u32 },
    /// postcard could not decode the payload (bad varint, unknown layer tag, ...).
    Decode,
    /// More layers than [`crate::format::MAX_LAYERS`], or none.
    LayerCount { found: usize, max: usize },
    /// A layer's declared input shape differs from the previous layer's output shape.
    ShapeMismatch {
        layer: u16,
        expected: [u16; 3],
        found: [u16; 3],
    },
    /// A layer parameter is out of range (zero stride, kernel larger than input, ...).
    BadParameter { layer: u16, what: &'static str },
    /// A weight, bias or requantization array has the wrong number of bytes.
    ArrayLength {
        layer: u16,
        what: &'static str,
        expected: usize,
        found: usize,
    },
    /// A zero point, multiplier, shift, bias or clamp is outside what the kernels accept.
    QuantOutOfRange { layer: u16, what: &'static str },
    /// The model's declared output differs from what its last layer produces.
    OutputMismatch { expected: [u16; 3], found: [u16; 3] },
    /// The header's arena size differs from the planner's figure for this layer list.
    ArenaMismatch { declared: usize, planned: usize },
    /// The class names do not fit the head (see [`crate::format::check_labels`]).
    BadLabels { what: &'static str },
    /// The caller's arena is smaller than the model needs.
    ArenaTooSmall { needed: usize, available: usize },
    /// `invoke` found the arena plan breaking its own invariant at this layer (an output
    /// outside the arena, or overlapping an input): a runtime bug, reported instead of
    /// leaving the previous output in place. No blob that loads can cause it.
    PlanBroken { layer: u16 },
    /// A caller's buffer for the model's input or output has the wrong number of values.
    BufferLength {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    /// The detection head is inconsistent with the output tensor.
    BadDetectionHead { what: &'static str },
    /// A size over one of the documented limits (`format::MAX_*`).
    LimitExceeded {
        layer: u16,
        what: &'static str,
        value: u64,
        limit: u64,
    },
    /// A writer-side problem: a value does not fit the format (host only).
    Unencodable { what: &'static str },
    /// The layer's kind is not among the kernels this build links (a `Model` whose kernel
    /// set, `format::kinds`, was chosen for another model).
    KernelNotLinked { layer: u16, kind: &'static str },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated { needed, available } => {
                write!(
                    f,
                    "model blob truncated: needs {needed} bytes, has {available}"
                )
            }
            Error::BadMagic => write!(f, "not a model blob (magic is not TMCU)"),
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "model format version {found} is not supported (this runtime reads {supported})"
            ),
            Error::Reserved => write!(f, "model preamble reserved bytes are not zero"),
            Error::TrailingBytes { extra } => {
                write!(f, "{extra} unexpected bytes after the model payload")
            }
            Error::CrcMismatch { expected, computed } => write!(
                f,
                "model payload corrupted: CRC-32 {computed:#010x}, header says {expected:#010x}"
            ),
            Error::Decode => write!(f, "model payload could not be decoded"),
            Error::LayerCount { found, max } => {
                write!(f, "model has {found} layers; 1 to {max} are supported")
            }
            Error::ShapeMismatch {
                layer,
                expected,
                found,
            } => write!(
                f,
                "layer {layer}: input shape {found:?} but the previous layer produces {expected:?}"
            ),
            Error::BadParameter { layer, what } => write!(f, "layer {layer}: bad {what}"),
            Error::ArrayLength {
                layer,
                what,
                expected,
                found,
            } => write!(
                f,
                "layer {layer}: {what} has {found} bytes, expected {expected}"
            ),
            Error::QuantOutOfRange { layer, what } => {
                write!(f, "layer {layer}: {what} out of range")
            }
            Error::OutputMismatch { expected, found } => write!(
                f,
                "model output declared as {expected:?} but the layers produce {found:?}"
            ),
            Error::ArenaMismatch { declared, planned } => write!(
                f,
                "header declares a {declared}-byte arena but the plan needs {planned}"
            ),
            Error::BadLabels { what } => write!(f, "class names: {what}"),
            Error::BufferLength {
                what,
                expected,
                found,
            } => write!(f, "{what}: {found} values, the model has {expected}"),
            Error::PlanBroken { layer } => write!(
                f,
                "layer {layer}: the arena plan broke its invariant (a runtime bug, please report)"
            ),
            Error::ArenaTooSmall { needed, available } => {
                write!(
                    f,
                    "arena too small: model needs {needed} bytes, {available} given"
                )
            }
            Error::BadDetectionHead { what } => write!(f, "detection head: {what}"),
            Error::LimitExceeded {
                layer,
                what,
                value,
                limit,
            } => write!(
                f,
                "layer {layer}: {what} is {value}, over the runtime's limit of {limit}"
            ),
            Error::Unencodable { what } => write!(f, "cannot encode model: {what}"),
            Error::KernelNotLinked { layer, kind } => write!(
                f,
                "layer {layer}: no {kind} kernel in this build (its kernel set was chosen for \
                 another model)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
