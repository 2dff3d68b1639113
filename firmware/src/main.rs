//! Hello-world stage: proves toolchain, QEMU, semihosting output and exit status.
#![no_std]
#![no_main]

mod semihost;

mod config {
    include!(concat!(env!("OUT_DIR"), "/config.rs"));
}

use cortex_m_rt::{entry, exception, ExceptionFrame};
use semihost::status;

#[entry]
fn main() -> ! {
    outln!("HELLO board={} arena={} inputs={}x{}", config::BOARD, config::ARENA_BYTES, config::INPUT_COUNT, config::INPUT_LEN);
    let mut line = semihost::Line::new();
    let _ = core::fmt::Write::write_str(&mut line, "OUT 0 ");
    line.hex(&[0x00, 0x7f, 0x80, 0xff]);
    line.finish();
    semihost::exit(status::OK)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    outln!("PANIC {}", info);
    semihost::exit(status::PANIC)
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    outln!("HARDFAULT pc={:#010x}", ef.pc());
    semihost::exit(status::HARD_FAULT)
}
