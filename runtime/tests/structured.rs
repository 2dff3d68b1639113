//! A bounded run of the structure-aware fuzz target (`runtime/fuzz`, target `structured`) in
//! the test suite: models of every layer kind and head generated from pseudo-random decision
//! bytes, forged with a valid preamble, loaded, run in exact and misaligned arenas and compared
//! byte for byte with the reference interpreter. The coverage-guided run is the documented
//! long command (README, "Runtime hardening").

#[path = "support/structured.rs"]
mod structured;

use std::collections::BTreeMap;
use structured::{blob, exercise, Outcome};

#[test]
fn generated_models_never_panic_and_match_the_reference() {
    const CASES: u64 = 60_000;
    let mut tally: BTreeMap<&str, u64> = BTreeMap::new();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        // splitmix64
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for case in 0..CASES {
        let len = 64 + (next() % 1024) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut u = arbitrary::Unstructured::new(&bytes);
        let Ok(b) = blob(&mut u) else {
            *tally.entry("not generated").or_default() += 1;
            continue;
        };
        let key = match exercise(&b, case) {
            Outcome::Ran => "ran",
            Outcome::Refused(kind) => kind,
        };
        *tally.entry(key).or_default() += 1;
    }
    eprintln!("{CASES} cases: {tally:?}");
    let ran = tally.get("ran").copied().unwrap_or(0);
    assert!(ran * 4 >= CASES, "only {ran} of {CASES} models ran");
    // The generator reaches the validator's refusals too, not only valid models.
    for kind in [
        "BadParameter",
        "ShapeMismatch",
        "ArrayLength",
        "QuantOutOfRange",
        "BadDetectionHead",
        "BadLabels",
    ] {
        assert!(tally.contains_key(kind), "no {kind} in {tally:?}");
    }
}
