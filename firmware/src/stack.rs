//! Peak stack use by painting: fill the free stack with a pattern at start, then find the
//! lowest word that no longer holds it.
//!
//! The stack grows down from `_stack_start` (top of RAM) towards the end of the statics
//! (`_stack_end`, set by cortex-m-rt's link.x). Only memory below the current SP minus a margin
//! is painted, so the painting code never overwrites its own frame. The figure is a lower
//! bound in principle (a frame could skip words without writing them), exact in practice.

use core::ptr;

const PATTERN: u32 = 0x5afe_c0de;
/// Bytes below the SP at painting time left alone: the painting loop's own frame and
/// anything an interrupt might push meanwhile.
const MARGIN: usize = 256;

extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
}

fn top() -> usize {
    // Only the symbol's address is taken, never its value.
    ptr::addr_of!(_stack_start) as usize
}

fn bottom() -> usize {
    ptr::addr_of!(_stack_end) as usize
}

/// Paints the unused stack. Call once, early in `main`.
#[inline(never)]
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    let end = (sp - MARGIN) & !3;
    let mut p = (bottom() + 3) & !3;
    while p < end {
        // SAFETY: [bottom, sp - MARGIN) is RAM between the statics and the live stack that
        // no Rust object owns: nothing reads it except `peak_bytes` below.
        unsafe { ptr::write_volatile(p as *mut u32, PATTERN) };
        p += 4;
    }
}

/// Peak stack use in bytes since `paint`, counting from the top of the stack.
pub fn peak_bytes() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = (bottom() + 3) & !3;
    // SAFETY: reads of the painted region (see `paint`); words still holding the pattern were
    // never written by the program.
    while p < sp && unsafe { ptr::read_volatile(p as *const u32) } == PATTERN {
        p += 4;
    }
    top() - p
}
