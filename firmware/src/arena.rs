//! The interpreter's arena and the model's table: static buffers, each handed out once.
//!
//! The runtime never owns memory (`Interpreter::new(&model, arena)`); the firmware decides
//! where the arena lives. Here it is in .bss, sized at build time from the blob preamble
//! (`ARENA_BYTES`), so the link fails, not the device, when it does not fit RAM. A
//! take-once flag instead of a bare `static mut` keeps the `&'static mut` unique.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use runtime::Model;

use crate::config::{ARENA_BYTES, LAYERS};

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
    if !take_once(&ARENA.taken) {
        return None;
    }
    // SAFETY: the flag above guarantees this is the only reference ever created.
    Some(unsafe { &mut (*ARENA.buf.get()).0 })
}

/// The loaded model's per-layer table (sized for this blob's layer count by build.rs). It
/// lives as long as the program, so it is a static like the arena rather than a stack frame
/// that stays open the whole time.
struct ModelCell {
    model: UnsafeCell<Model<'static, LAYERS>>,
    taken: AtomicBool,
}

// SAFETY: the model is reachable only through `model`, which hands it out at most once.
unsafe impl Sync for ModelCell {}

static MODEL: ModelCell = ModelCell {
    model: UnsafeCell::new(Model::empty()),
    taken: AtomicBool::new(false),
};

/// The (empty) model to load into, the first time; `None` afterwards.
pub fn model() -> Option<&'static mut Model<'static, LAYERS>> {
    if !take_once(&MODEL.taken) {
        return None;
    }
    // SAFETY: the flag above guarantees this is the only reference ever created.
    Some(unsafe { &mut *MODEL.model.get() })
}

/// Sets `flag`; true if it was clear. In a critical section with a load and a store, because
/// Armv6-M (the Cortex-M0) has no atomic swap.
fn take_once(flag: &AtomicBool) -> bool {
    cortex_m::interrupt::free(|_| {
        if flag.load(Ordering::Relaxed) {
            false
        } else {
            flag.store(true, Ordering::Relaxed);
            true
        }
    })
}
