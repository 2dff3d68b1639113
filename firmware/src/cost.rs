//! Cost of one inference, measured on the core.
//!
//! - QEMU boards: SysTick on the core clock. With `-icount shift=0` every instruction takes
//!   1 ns of virtual time, so one tick is 1e9 / clock instructions: 40 on the MPS2 boards
//!   (25 MHz), 50 on mps2-an505 (20 MHz), 31.25 on mps3-an547 (32 MHz), 62.5 on the
//!   micro:bit (16 MHz; build.rs `systick_hz`). The count is deterministic, to within one tick,
//!   and the same on every run. QEMU does not model DWT CYCCNT (it reads 0), hence SysTick.
//!   The 24-bit counter wraps every 2^24 ticks (671 M instructions); a SysTick exception counts
//!   the wraps, so long inferences are measured correctly too.
//! - stm32f411, stm32l4r5 (silicon): DWT CYCCNT, exact core cycles, extended to 64 bits by a
//!   SysTick exception every 2^24 cycles that counts CYCCNT's wraps (a bare CYCCNT wraps after
//!   42 s at 100 MHz, less than the work limit allows an inference).
//! - stm32g071 (silicon, Cortex-M0+: no CYCCNT): SysTick on the core clock, which counts core
//!   cycles directly.

use cortex_m::peripheral::{DCB, DWT, SYST};

/// Protocol keyword of the figure this board reports.
#[cfg(counter = "systick")]
pub const KEYWORD: &str = "INSN";
#[cfg(any(counter = "dwt", counter = "systick-cycles"))]
pub const KEYWORD: &str = "CYCLES";

#[cfg(any(counter = "systick", counter = "systick-cycles"))]
mod imp {
    use core::sync::atomic::{AtomicU32, Ordering};

    use cortex_m::peripheral::syst::SystClkSource;
    use cortex_m::peripheral::{DCB, DWT, SYST};
    use cortex_m_rt::exception;

    /// SysTick's clock; one instruction per ns under -icount 0.
    const HZ: u64 = crate::config::SYSTICK_HZ;
    const RELOAD: u32 = 0x00ff_ffff;

    static WRAPS: AtomicU32 = AtomicU32::new(0);

    #[exception]
    fn SysTick() {
        // Load and store, not fetch_add: Armv6-M has no atomic read-modify-write, and only
        // this handler writes the count.
        WRAPS.store(
            WRAPS.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    pub struct Counter {
        _syst: SYST,
    }

    impl Counter {
        pub fn new(mut syst: SYST, _dcb: DCB, _dwt: DWT) -> Self {
            syst.disable_counter();
            syst.set_clock_source(SystClkSource::Core);
            syst.set_reload(RELOAD);
            syst.clear_current();
            syst.enable_interrupt();
            syst.enable_counter();
            // clear_current left 0 in the counter; the first reload (0 -> R) is not a wrap.
            // Wait for it so every later reading is in the periodic phase `ticks` assumes.
            while SYST::get_current() == 0 {}
            Self { _syst: syst }
        }

        /// Ticks since the counter started (monotonic, 64 bits, to within one tick).
        ///
        /// The counter runs R, R-1, .., 1, 0 and the SysTick exception fires on reaching 0.
        /// For a reading `v` in [1, R] the wraps so far are all counted, so
        /// `wraps * (R + 1) + (R - v)` is monotonic. A reading of 0 is ambiguous (exception
        /// taken or about to be), so it is read again: at most one tick later.
        fn ticks(&self) -> u64 {
            loop {
                let wraps = WRAPS.load(Ordering::Relaxed);
                let current = SYST::get_current();
                // A wrap between the two loads pairs an old count with a reloaded value; the
                // exception is taken at once (interrupts are on), so the count changes and
                // the read is retried.
                if current != 0 && WRAPS.load(Ordering::Relaxed) == wraps {
                    return u64::from(wraps) * u64::from(RELOAD + 1) + u64::from(RELOAD - current);
                }
            }
        }

        pub fn now(&self) -> u64 {
            self.ticks()
        }

        /// Instructions between two `now()` readings (to within one tick) under QEMU; core
        /// cycles on silicon without a cycle counter (SysTick runs on the core clock).
        ///
        /// `ticks * 1e9` overflowed u64 past 1.8e10 ticks (738 s of QEMU time at 25 MHz); the
        /// whole seconds and the rest are scaled apart (`rest * 1e9 < HZ * 1e9 < 2^64`).
        pub fn elapsed(&self, start: u64, end: u64) -> u64 {
            let t = end.saturating_sub(start);
            if HZ == 0 {
                t
            } else {
                (t / HZ) * 1_000_000_000 + (t % HZ) * 1_000_000_000 / HZ
            }
        }
    }
}

#[cfg(counter = "dwt")]
mod imp {
    use core::sync::atomic::{AtomicU32, Ordering};

    use cortex_m::peripheral::syst::SystClkSource;
    use cortex_m::peripheral::{DCB, DWT, SYST};
    use cortex_m_rt::exception;

    /// CYCCNT's wraps, and its value at the last SysTick (to see a wrap since).
    static WRAPS: AtomicU32 = AtomicU32::new(0);
    static LAST: AtomicU32 = AtomicU32::new(0);

    /// Every 2^24 core cycles, far less than CYCCNT's 2^32: no wrap goes unseen.
    #[exception]
    fn SysTick() {
        let now = DWT::cycle_count();
        if now < LAST.load(Ordering::Relaxed) {
            WRAPS.store(
                WRAPS.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        }
        LAST.store(now, Ordering::Relaxed);
    }

    pub struct Counter {
        _dwt: DWT,
        _syst: SYST,
    }

    impl Counter {
        pub fn new(mut syst: SYST, mut dcb: DCB, mut dwt: DWT) -> Self {
            dcb.enable_trace();
            DWT::unlock();
            dwt.set_cycle_count(0);
            dwt.enable_cycle_counter();
            syst.disable_counter();
            syst.set_clock_source(SystClkSource::Core);
            syst.set_reload(0x00ff_ffff);
            syst.clear_current();
            syst.enable_interrupt();
            syst.enable_counter();
            Self {
                _dwt: dwt,
                _syst: syst,
            }
        }

        /// Core cycles since start, 64 bits: CYCCNT with the wraps the SysTick counted, read
        /// twice around the wrap count so that a wrap between the reads is not half-counted.
        pub fn now(&self) -> u64 {
            loop {
                let wraps = WRAPS.load(Ordering::Relaxed);
                let last = LAST.load(Ordering::Relaxed);
                let c = DWT::cycle_count();
                if WRAPS.load(Ordering::Relaxed) == wraps {
                    // A wrap the SysTick has not seen yet (CYCCNT below its last reading).
                    let pending = u64::from(c < last);
                    return (u64::from(wraps) + pending) << 32 | u64::from(c);
                }
            }
        }

        /// Cycles between two `now()` readings.
        pub fn elapsed(&self, start: u64, end: u64) -> u64 {
            end.saturating_sub(start)
        }
    }
}

pub use imp::Counter;

/// Starts the board's counter; it owns the peripherals it needs from then on.
pub fn start(syst: SYST, dcb: DCB, dwt: DWT) -> Counter {
    Counter::new(syst, dcb, dwt)
}
