//! The runtime on a Cortex-M, as small as it gets: a model blob in flash, its table and arena
//! in static RAM, one inference on a fixed input, the answer in a static a debugger can read.
//! No semihosting, no profiling, no allocator; `firmware/` is the full program (test inputs,
//! per-layer instruction counts, stack guard, every board).
//!
//! Build: `scripts/build-runtime-thumb.sh` (CI builds it), or from this folder
//! `../../../scripts/fw-cargo.sh build --release`. Flash the ELF with probe-rs after editing
//! `memory.x` for your chip.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use runtime::format::MAX_LAYERS;
use runtime::{Arena, Interpreter, Model};
use static_cell::ConstStaticCell;

/// The model: what `trainer export` or `trainer import` wrote. A `const`, so its arena size
/// can be read while compiling.
const BLOB: &[u8] = include_bytes!("../../../../firmware/models/ref-cnn.bin");

/// The arena the blob's preamble asks for, in `.bss`, handed out once.
static ARENA: ConstStaticCell<Arena<{ runtime::arena_bytes_const(BLOB) }>> =
    ConstStaticCell::new(Arena::new());

/// The loaded model's per-layer table. `MAX_LAYERS` fits any blob; a build script can size it
/// to the model instead (`Model::from_bytes(blob)?.layer_info().len()`, as
/// `firmware/build.rs` does) to save about 160 B per unused layer.
static MODEL: ConstStaticCell<Model<'static, MAX_LAYERS>> = ConstStaticCell::new(Model::empty());

/// The class of the last inference, or -1 after an error (read it with a debugger).
static mut CLASS: i32 = -1;

#[entry]
fn main() -> ! {
    let class = run().map_or(-1, |c| c as i32);
    // SAFETY: the only access, in the only thread; nothing else runs.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(CLASS), class) };
    loop {
        cortex_m::asm::wfi();
    }
}

fn run() -> Result<usize, runtime::Error> {
    let model = MODEL.take();
    model.load(BLOB)?;
    let mut interp = Interpreter::new(model, ARENA.take().as_mut_slice())?;
    // A vertical stroke on a 28x28 image, real values in [0, 1] (your sensor's data here).
    let mut image = [0.0f32; 28 * 28];
    for y in 5..23 {
        for x in 13..16 {
            image[y * 28 + x] = 1.0;
        }
    }
    interp.set_input_f32(&image)?;
    interp.invoke()?;
    Ok(runtime::argmax(interp.output()).unwrap_or(0))
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        cortex_m::asm::udf();
    }
}
