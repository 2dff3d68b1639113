//! The interpreter's arena: one static buffer, handed out once.
//!
//! The runtime never owns memory (`Interpreter::new(&model, arena)`); the firmware decides
//! where the arena lives. Here it is in .bss, sized at build time from the blob preamble
//! (`ARENA_BYTES`), so the link fails, not the device, when it does not fit RAM. A
//! take-once flag instead of a bare `static mut` keeps the `&'static mut` unique.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::config::ARENA_BYTES;

/// Generous alignment: kernels may read the arena as words.
#[repr(C, align(16))]
struct Aligned([u8; ARENA_BYTES]);

struct Arena {
    buf: UnsafeCell<Aligned>,
    taken: AtomicBool,
}

// SAFETY: the buffer is reachable only through `take`, which hands it out at most once.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena {
    buf: UnsafeCell::new(Aligned([0; ARENA_BYTES])),
    taken: AtomicBool::new(false),
};

/// The arena, the first time; `None` afterwards.
pub fn take() -> Option<&'static mut [u8]> {
    if ARENA.taken.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: the flag above guarantees this is the only reference ever created.
    Some(unsafe { &mut (*ARENA.buf.get()).0 })
}
