//! Structure-aware: the input bytes are decisions that build a model of every layer kind and
//! head (see `runtime/tests/support/structured.rs`), written with a valid preamble, then loaded,
//! run in exact and misaligned arenas and compared byte for byte with the reference
//! interpreter. Any panic (these builds keep overflow checks) or disagreement is a crash.
//!
//! Run from `runtime/` (corpus git-ignored):
//! `mkdir -p fuzz/corpus-structured && cargo +nightly fuzz run structured fuzz/corpus-structured -- -runs=10000000`
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/structured.rs"]
mod structured;

fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    if let Ok(blob) = structured::blob(&mut u) {
        structured::exercise(&blob, data.len() as u64);
    }
});
