//! Shared helpers for the parity tests in `tests/tests/`. The device protocol code lives in
//! `trainer::deploy::device` (the demo uses it too); this adds what only tests need.

use std::path::PathBuf;

pub use trainer::deploy::device::*;

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tinymcu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
