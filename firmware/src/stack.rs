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

/// Bytes of the guard region. With the MPU, larger than any frame the firmware has (the
/// largest, `conv2d_patch` and `depthwise_blocks`, are about 800 B): a function's first
/// access below an overflowing stack pointer lands inside the guard and faults, where a
/// 32-byte guard could be jumped by a large frame whose first store lies below it (into the
/// statics). MSPLIM checks the stack pointer itself, and the canary is the painted words, so
/// those keep the small region.
#[cfg(guard = "mpu")]
const GUARD: usize = 1024;
#[cfg(not(guard = "mpu"))]
const GUARD: usize = 32;

/// First byte of the guard: the stack's bottom rounded up to the region size.
fn guard_start() -> usize {
    (bottom() + GUARD - 1) & !(GUARD - 1)
}

/// SysTick (the cost counter's wrap count) below the fault handlers, so that an overflow during
/// its entry is the fault handler's to report rather than an escalation to HardFault.
fn systick_below_faults(scb: &mut cortex_m::peripheral::SCB) {
    // SAFETY: changes only SysTick's priority; no priority-based critical section relies on it.
    unsafe {
        scb.set_priority(cortex_m::peripheral::scb::SystemHandler::SysTick, 0xc0);
    }
}

/// Makes the [`GUARD`] bytes at the bottom of the stack inaccessible with the MPU, so a
/// stack that grows into the statics below it (the arena lives there) faults instead of
/// corrupting them. On Armv7-M the MemManage handler reads the fault status and reports it
/// (exit `status::STACK_OVERFLOW` when the faulting access was in the guard). Armv6-M with an
/// MPU (the STM32G071's Cortex-M0+) has no MemManage: the fault escalates to HardFault, whose
/// entry cannot push its frame onto the overflowed stack either, so the core locks up (halts,
/// which a debugger or a watchdog sees) with nothing below the guard written. Call after
/// [`paint`] (which writes there).
#[cfg(guard = "mpu")]
pub fn guard(cp: &mut cortex_m::Peripherals) {
    // SAFETY: region 0 covers only the guard, with no access; the default memory map stays in
    // force for everything else (PRIVDEFENA), so no other access changes.
    unsafe {
        cp.MPU.rnr.write(0);
        cp.MPU.rbar.write(guard_start() as u32);
        // SIZE 9: 2^(9+1) = 1024 bytes (GUARD); AP 000: no access; XN; ENABLE.
        const _: () = assert!(GUARD == 1 << 10);
        cp.MPU.rasr.write((1 << 28) | (9 << 1) | 1);
        cp.MPU.ctrl.write((1 << 2) | 1); // PRIVDEFENA | ENABLE
    }
    #[cfg(target_feature = "thumb2")]
    cp.SCB
        .enable(cortex_m::peripheral::scb::Exception::MemoryManagement);
    systick_below_faults(&mut cp.SCB);
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
}

/// Armv8-M Mainline: the stack limit register. A push below MSPLIM raises a UsageFault
/// (STKOF) before the write, so nothing below the guard is touched; the handler reports it.
#[cfg(guard = "msplim")]
pub fn guard(cp: &mut cortex_m::Peripherals) {
    // SAFETY: the limit is below every frame live now (the stack was only painted below the
    // current SP), so only a future overflow trips it.
    unsafe { cortex_m::register::msplim::write((guard_start() + GUARD) as u32) };
    cp.SCB
        .enable(cortex_m::peripheral::scb::Exception::UsageFault);
    systick_below_faults(&mut cp.SCB);
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
}

/// No MPU and no stack limit register (the micro:bit's Cortex-M0): the painted words at the
/// bottom of the stack are a canary, checked after every inference by [`check`]. This detects
/// an overflow after the fact rather than preventing it.
#[cfg(guard = "canary")]
pub fn guard(cp: &mut cortex_m::Peripherals) {
    systick_below_faults(&mut cp.SCB);
}

/// Reports an overflow if the canary at the bottom of the stack was written (boards whose
/// guard is a canary; a no-op where the hardware faults first).
pub fn check() {
    #[cfg(guard = "canary")]
    {
        let mut p = guard_start();
        while p < guard_start() + GUARD {
            // SAFETY: the guard words lie in the painted region (see `paint`).
            if unsafe { ptr::read_volatile(p as *const u32) } != PATTERN {
                stack_overflow_report();
            }
            p += 4;
        }
    }
}

// The fault handler runs with the stack pointer at the guard (the exception entry itself may
// have faulted on it), so before anything else it moves to the top of the stack.
#[cfg(all(guard = "mpu", target_feature = "thumb2"))]
core::arch::global_asm!(
    ".section .text.MemoryManagement,\"ax\",%progbits",
    ".global MemoryManagement",
    ".type MemoryManagement,%function",
    ".thumb_func",
    "MemoryManagement:",
    "ldr r0, =_stack_start",
    "msr msp, r0",
    "bl mem_manage_report",
    "b .",
);

/// MemManage on Armv7-M: a stack overflow if the faulting data address lies in the guard, or
/// if the exception entry itself faulted pushing onto the stack (MSTKERR); any other access
/// violation is reported with its status registers.
#[cfg(all(guard = "mpu", target_feature = "thumb2"))]
#[no_mangle]
extern "C" fn mem_manage_report() -> ! {
    // SAFETY: reads of the System Control Block's CFSR and MMFAR.
    let (cfsr, mmfar) = unsafe {
        let scb = &*cortex_m::peripheral::SCB::PTR;
        (scb.cfsr.read(), scb.mmfar.read())
    };
    let mmarvalid = cfsr & (1 << 7) != 0;
    let mstkerr = cfsr & (1 << 4) != 0;
    let in_guard = (guard_start()..guard_start() + GUARD).contains(&(mmfar as usize));
    if mstkerr || (mmarvalid && in_guard) {
        stack_overflow_report();
    }
    crate::outln!(
        "HARDFAULT memory management fault, CFSR {:#010x} MMFAR {:#010x}",
        cfsr,
        mmfar
    );
    crate::semihost::exit(crate::semihost::status::HARD_FAULT)
}

#[cfg(guard = "msplim")]
core::arch::global_asm!(
    ".section .text.UsageFault,\"ax\",%progbits",
    ".global UsageFault",
    ".type UsageFault,%function",
    ".thumb_func",
    "UsageFault:",
    "ldr r0, =_stack_start",
    "msr msp, r0",
    "bl usage_fault_report",
    "b .",
);

/// UsageFault on Armv8-M: a stack overflow if CFSR.STKOF says so, otherwise reported as the
/// fault it is.
#[cfg(guard = "msplim")]
#[no_mangle]
extern "C" fn usage_fault_report() -> ! {
    // SAFETY: a read of the System Control Block's CFSR.
    let cfsr = unsafe { (*cortex_m::peripheral::SCB::PTR).cfsr.read() };
    if cfsr & (1 << 20) != 0 {
        stack_overflow_report();
    }
    crate::outln!("HARDFAULT usage fault, CFSR {:#010x}", cfsr);
    crate::semihost::exit(crate::semihost::status::HARD_FAULT)
}

#[no_mangle]
extern "C" fn stack_overflow_report() -> ! {
    crate::outln!(
        "STACK OVERFLOW: the stack reached the guard at {:#010x} (statics end there)",
        guard_start()
    );
    crate::semihost::exit(crate::semihost::status::STACK_OVERFLOW)
}

/// Peak stack use in bytes since `paint`, counting from the top of the stack.
pub fn peak_bytes() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    // Above the guard: reading it would fault.
    let mut p = guard_start() + GUARD;
    // SAFETY: reads of the painted region (see `paint`); words still holding the pattern were
    // never written by the program.
    while p < sp && unsafe { ptr::read_volatile(p as *const u32) } == PATTERN {
        p += 4;
    }
    top() - p
}
