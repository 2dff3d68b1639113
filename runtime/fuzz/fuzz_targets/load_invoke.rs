//! Any bytes through `Model::from_bytes` + `Interpreter::new` + `invoke`: must never panic.
//!
//! The first input byte picks a mode: odd = the bytes as given (exercises the preamble and
//! CRC checks); even = the rest with its CRC recomputed, so mutations reach the postcard
//! decoder and the layer validator instead of stopping at the checksum.
//!
//! Run from `runtime/` (the working corpus is git-ignored; seeds are committed blobs):
//! `mkdir -p fuzz/corpus && cargo +nightly fuzz run load_invoke fuzz/corpus fuzz/seeds -- -runs=1000000`
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::{Interpreter, Model};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode % 2 == 0 && bytes.len() >= 20 {
        let crc = runtime::crc32(&bytes[20..]);
        bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(model) = Model::from_bytes(&bytes) else { return };
    // A device could not hold more; keep runs fast.
    if model.arena_bytes() > 1 << 18 || model.macs() > 2_000_000 {
        return;
    }
    let mut arena = vec![0u8; model.arena_bytes()];
    if let Ok(mut it) = Interpreter::new(&model, &mut arena) {
        for (i, x) in it.input_mut().iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37) as i8;
        }
        it.invoke().unwrap();
        let _ = runtime::argmax(it.output());
    }
});
