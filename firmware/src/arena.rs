//! The interpreter's arena and the model's table: static buffers, each handed out once.
//!
//! The runtime never owns memory (`Interpreter::new(&model, arena)`); the firmware decides
//! where the arena lives. Here it is in .bss, sized at build time from the blob preamble
//! (`ARENA_BYTES`), so the link fails, not the device, when it does not fit RAM. A
//! take-once flag instead of a bare `static mut` keeps the `&'static mut` unique.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use runtime::{Arena, Model};

use crate::config::{ARENA_BYTES, KINDS, LAYERS};

/// The runtime's aligned arena type (kernels read it as words), in a take-once cell. Not
/// `static_cell` as in `runtime/examples/cortex-m`: its atomics need a polyfill on Armv6-M,
/// and this crate builds for the M0 boards too.
struct ArenaCell {
    buf: UnsafeCell<Arena<ARENA_BYTES>>,
    taken: AtomicBool,
}

// SAFETY: the buffer is reachable only through `take`, which hands it out at most once.
unsafe impl Sync for ArenaCell {}

static ARENA: ArenaCell = ArenaCell {
    buf: UnsafeCell::new(Arena::new()),
    taken: AtomicBool::new(false),
};

/// The arena, the first time; `None` afterwards.
pub fn take() -> Option<&'static mut [u8]> {
    if !take_once(&ARENA.taken) {
        return None;
    }
    // SAFETY: the flag above guarantees this is the only reference ever created.
    Some(unsafe { (*ARENA.buf.get()).as_mut_slice() })
}

/// The loaded model's per-layer table (sized for this blob's layer count by build.rs; only
/// its layer kinds' kernels linked). It
/// lives as long as the program, so it is a static like the arena rather than a stack frame
/// that stays open the whole time.
struct ModelCell {
    model: UnsafeCell<Model<'static, LAYERS, KINDS>>,
    taken: AtomicBool,
}

// SAFETY: the model is reachable only through `model`, which hands it out at most once.
unsafe impl Sync for ModelCell {}

static MODEL: ModelCell = ModelCell {
    model: UnsafeCell::new(Model::empty()),
    taken: AtomicBool::new(false),
};

/// The (empty) model to load into, the first time; `None` afterwards.
pub fn model() -> Option<&'static mut Model<'static, LAYERS, KINDS>> {
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
