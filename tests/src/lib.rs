//! Shared helpers for the parity tests in `tests/tests/`.
