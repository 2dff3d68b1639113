//! defmt global logger (feature `defmt`): frames go to a host file through semihosting, not to
//! stdout, so the text protocol on stdout (OUT/INSN/STACK/DONE) stays clean.
//!
//! Under QEMU the file is `defmt.bin` in QEMU's working directory; decode it on the host with
//! `defmt-print -e target/thumbv7em-none-eabihf/release/firmware < defmt.bin` (crates.io:
//! defmt-print). Under probe-rs, use its RTT-based defmt instead (see README).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_semihosting::nr;

/// Host file the frames are written to (relative to QEMU's working directory).
const FILE: &str = "defmt.bin\0";

#[defmt::global_logger]
struct Logger;

struct State {
    taken: AtomicBool,
    restore: UnsafeCell<critical_section::RestoreState>,
    encoder: UnsafeCell<defmt::Encoder>,
    /// Semihosting file handle; 0 = not opened yet, usize::MAX = open failed.
    handle: UnsafeCell<usize>,
}

// SAFETY: every field behind UnsafeCell is touched only between acquire and release, inside a
// critical section, with `taken` guarding against re-entry.
unsafe impl Sync for State {}

static STATE: State = State {
    taken: AtomicBool::new(false),
    restore: UnsafeCell::new(critical_section::RestoreState::invalid()),
    encoder: UnsafeCell::new(defmt::Encoder::new()),
    handle: UnsafeCell::new(0),
};

fn write_host(handle: usize, bytes: &[u8]) {
    if handle == 0 || handle == usize::MAX || bytes.is_empty() {
        return;
    }
    // SAFETY: SYS_WRITE reads `bytes` for the duration of the call.
    unsafe {
        cortex_m_semihosting::syscall!(WRITE, handle, bytes.as_ptr(), bytes.len());
    }
}

unsafe impl defmt::Logger for Logger {
    fn acquire() {
        // SAFETY: paired with the release in `release`.
        let restore = unsafe { critical_section::acquire() };
        if STATE.taken.load(Ordering::Relaxed) {
            panic!("defmt logger taken reentrantly");
        }
        STATE.taken.store(true, Ordering::Relaxed);
        // SAFETY: inside the critical section and the `taken` guard (see `State`).
        unsafe {
            STATE.restore.get().write(restore);
            let handle = &mut *STATE.handle.get();
            if *handle == 0 {
                let r = cortex_m_semihosting::syscall!(
                    OPEN,
                    FILE.as_ptr(),
                    nr::open::W_TRUNC_BINARY,
                    FILE.len() - 1
                ) as isize;
                *handle = if r < 0 { usize::MAX } else { r as usize };
            }
            let h = *handle;
            (*STATE.encoder.get()).start_frame(|b| write_host(h, b));
        }
    }

    unsafe fn flush() {
        // Semihosting writes are synchronous: nothing is buffered on the target.
    }

    unsafe fn release() {
        // SAFETY: called by defmt only after `acquire`.
        unsafe {
            let h = *STATE.handle.get();
            (*STATE.encoder.get()).end_frame(|b| write_host(h, b));
            let restore = STATE.restore.get().read();
            STATE.taken.store(false, Ordering::Relaxed);
            critical_section::release(restore);
        }
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: called by defmt only between `acquire` and `release`.
        unsafe {
            let h = *STATE.handle.get();
            (*STATE.encoder.get()).write(bytes, |b| write_host(h, b));
        }
    }
}
