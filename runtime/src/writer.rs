//! The writer side (host only, `alloc` feature): serialize a [`ModelDef`] into a blob with the
//! planner's arena figure and the payload CRC in its preamble.

extern crate alloc;
use alloc::vec::Vec;

use crate::format::{ModelDef, Preamble, FORMAT_VERSION};
use crate::model::{analyze, crc32};
use crate::quant::Requant;
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
