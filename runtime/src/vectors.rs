//! The test-vector file: inputs a firmware image runs and prints outputs for. Written by the
//! trainer (`device`, the main job, the parity tests), read by the firmware's build script and
//! by the tests; this module is the format's one owner.
//!
//! Little endian: `u32` count, `u32` bytes per input, then `count * len` int8 values.

use crate::Error;

/// Bytes of the header in front of the inputs.
pub const HEADER_BYTES: usize = 8;

/// A parsed test-vector file: its inputs, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vectors<'a> {
    /// Number of inputs.
    pub count: usize,
    /// Bytes (int8 values) per input.
    pub len: usize,
    /// The inputs' bytes, `count * len` of them.
    pub data: &'a [u8],
}

impl<'a> Vectors<'a> {
    /// Checks the header against the file's length: `Truncated` if shorter than the header
    /// says, `TrailingBytes` if longer.
    pub fn parse(bytes: &'a [u8]) -> Result<Vectors<'a>, Error> {
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or(Error::Truncated {
                    needed: HEADER_BYTES,
                    available: bytes.len(),
                })
        };
        let (count, len) = (word(0)? as usize, word(4)? as usize);
        let data = bytes.get(HEADER_BYTES..).unwrap_or(&[]);
        let want = count.checked_mul(len).ok_or(Error::Truncated {
            needed: usize::MAX,
            available: bytes.len(),
        })?;
        if data.len() < want {
            return Err(Error::Truncated {
                needed: want.saturating_add(HEADER_BYTES),
                available: bytes.len(),
            });
        }
        if data.len() > want {
            return Err(Error::TrailingBytes {
                extra: data.len() - want,
            });
        }
        Ok(Vectors { count, len, data })
    }

    /// Each input as int8 values' bytes (none when `len` is 0).
    pub fn inputs(&self) -> impl Iterator<Item = &'a [u8]> {
        self.data.chunks_exact(self.len.max(1)).take(self.count)
    }
}

/// The file for `raw`, a whole number of inputs of `len` bytes each (a partial last input is
/// dropped).
#[cfg(feature = "alloc")]
pub fn write(len: usize, raw: &[u8]) -> alloc::vec::Vec<u8> {
    let n = raw.len().checked_div(len).unwrap_or(0);
    let mut out = alloc::vec::Vec::with_capacity(HEADER_BYTES + n * len);
    out.extend((n as u32).to_le_bytes());
    out.extend((len as u32).to_le_bytes());
    out.extend(&raw[..n * len]);
    out
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bad_length() {
        let raw: alloc::vec::Vec<u8> = (0..12).collect();
        let file = write(4, &raw);
        let v = Vectors::parse(&file).unwrap();
        assert_eq!((v.count, v.len), (3, 4));
        assert_eq!(v.inputs().nth(2), Some(&raw[8..12]));
        assert!(matches!(
            Vectors::parse(&file[..file.len() - 1]),
            Err(Error::Truncated { .. })
        ));
        let mut long = file.clone();
        long.push(0);
        assert_eq!(
            Vectors::parse(&long),
            Err(Error::TrailingBytes { extra: 1 })
        );
        assert!(matches!(
            Vectors::parse(&file[..7]),
            Err(Error::Truncated { .. })
        ));
        // A header whose product overflows is an error, not a wrap.
        let mut huge = [0xffu8; 8].to_vec();
        huge.push(1);
        assert!(Vectors::parse(&huge).is_err());
        // A partial last input is dropped by the writer.
        assert_eq!(Vectors::parse(&write(5, &raw)).unwrap().count, 2);
    }
}
