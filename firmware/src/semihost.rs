//! Host I/O over semihosting: whole lines to the host's stdout, and exit with a status.
//!
//! Under QEMU (`-semihosting-config enable=on,target=native`) the lines appear on QEMU's stdout
//! and `exit(code)` ends QEMU with exactly `code`. On silicon this needs a debugger that serves
//! semihosting (probe-rs does); without one the BKPT instruction faults.

use core::cell::Cell;
use core::fmt;

use cortex_m::interrupt::Mutex;
use cortex_m_semihosting::hio::{self, HostStream};

/// SYS_EXIT_EXTENDED: like SYS_EXIT but carries a status that QEMU uses as its exit status
/// (plain SYS_EXIT with a failure reason only ever gives 1).
const SYS_EXIT_EXTENDED: usize = 0x20;
/// ADP_Stopped_ApplicationExit, the reason code that goes with an exit status.
const ADP_STOPPED_APPLICATION_EXIT: usize = 0x20026;

/// Exit statuses, the test harness's contract (see firmware/README.md).
pub mod status {
    /// All inputs ran.
    pub const OK: u32 = 0;
    /// The runtime (or the firmware's own checks) returned an error; an `ERR` line says which.
    pub const RUNTIME_ERROR: u32 = 2;
    /// `#[panic_handler]`.
    pub const PANIC: u32 = 101;
    /// HardFault exception.
    pub const HARD_FAULT: u32 = 102;
    /// The stack reached the MPU guard below it (a `STACK OVERFLOW` line precedes it).
    pub const STACK_OVERFLOW: u32 = 103;
}

/// Ends the program (QEMU exits with `code`). Does not return; if a debugger resumes anyway,
/// the core parks in a breakpoint loop.
pub fn exit(code: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, code as usize];
    // SAFETY: the semihosting call reads the two-word parameter block, which lives until it
    // returns.
    unsafe {
        cortex_m_semihosting::syscall(SYS_EXIT_EXTENDED, &block);
    }
    loop {
        cortex_m::asm::bkpt();
    }
}

/// A line assembled in a fixed buffer and written with one semihosting call, so a line is
/// never split between host writes and costs one trap instead of one per formatted piece.
/// Text beyond the buffer is written out in chunks; nothing is lost.
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }

    /// Appends `bytes` as lowercase hex, two characters per byte, no separators.
    pub fn hex(&mut self, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for &b in bytes {
            self.push(DIGITS[usize::from(b >> 4)]);
            self.push(DIGITS[usize::from(b & 0xf)]);
        }
    }

    fn push(&mut self, b: u8) {
        if self.len == self.buf.len() {
            self.flush();
        }
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn flush(&mut self) {
        write_stdout(&self.buf[..self.len]);
        self.len = 0;
    }

    /// Adds the newline and writes the line to the host.
    pub fn finish(mut self) {
        self.push(b'\n');
        self.flush();
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            self.push(b);
        }
        Ok(())
    }
}

/// Formats one line and writes it to the host's stdout.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        $crate::semihost::print(format_args!($($arg)*));
    }};
}

/// `outln!`'s body, kept out of line so that the line buffer takes stack only while a line
/// is written, never in the caller's frame.
#[inline(never)]
pub fn print(args: fmt::Arguments) {
    let mut line = Line::new();
    let _ = fmt::Write::write_fmt(&mut line, args);
    line.finish();
}

/// `<keyword> <index> <bytes as hex>`, out of line like [`print`].
#[inline(never)]
pub fn print_hex(keyword: &str, index: usize, bytes: &[u8]) {
    let mut line = Line::new();
    let _ = fmt::Write::write_fmt(&mut line, format_args!("{} {} ", keyword, index));
    line.hex(bytes);
    line.finish();
}

/// The host's stdout, opened once (each SYS_OPEN of ":tt" would take another host handle).
static STDOUT: Mutex<Cell<Option<HostStream>>> = Mutex::new(Cell::new(None));

fn write_stdout(bytes: &[u8]) {
    // A failed open or write has nowhere to be reported, so it is dropped.
    cortex_m::interrupt::free(|cs| {
        let cell = STDOUT.borrow(cs);
        let mut out = match cell.get() {
            Some(out) => out,
            None => match hio::hstdout() {
                Ok(out) => {
                    cell.set(Some(out));
                    out
                }
                Err(()) => return,
            },
        };
        let _ = out.write_all(bytes);
    });
}
