//! Where the int8 input images come from.
//!
//! The firmware's loop only knows [`InputSource`]: "fill this int8 buffer (NHWC, the model's
//! `input_len()` values, already quantized with the model's input scale and zero point) with
//! the next input". This build uses [`TestVectors`], the images embedded at build time from
//! `FIRMWARE_INPUTS`, so QEMU runs are reproducible and comparable with the host. On a real
//! board a camera or sensor driver implements the same trait and replaces the test vectors
//! without touching the inference loop; [`SpiFrameSource`] shows the shape of such a driver on
//! top of embedded-hal 1.0.

use core::convert::Infallible;

use embedded_hal::spi::SpiDevice;

/// A source of model inputs.
pub trait InputSource {
    /// Why an input could not be produced (a bus error, a sensor timeout, ...).
    type Error: core::fmt::Debug;

    /// Writes the next input into `dst` (int8 NHWC, exactly the model's input length).
    /// Returns `Ok(false)` when the source is exhausted; a live sensor never is.
    fn next_into(&mut self, dst: &mut [i8]) -> Result<bool, Self::Error>;
}

/// Inputs embedded in flash: `count` images of `len` int8 values, back to back.
pub struct TestVectors {
    data: &'static [u8],
    len: usize,
    next: usize,
}

impl TestVectors {
    /// `data` holds whole images of `len` bytes (build.rs checked the file's header).
    pub const fn new(data: &'static [u8], len: usize) -> Self {
        Self { data, len, next: 0 }
    }
}

impl InputSource for TestVectors {
    type Error = Infallible;

    fn next_into(&mut self, dst: &mut [i8]) -> Result<bool, Infallible> {
        let start = self.next * self.len;
        let Some(image) = self.data.get(start..start + self.len) else {
            return Ok(false);
        };
        // The caller checked dst.len() == self.len once before the loop; zip keeps this
        // panic-free regardless.
        for (d, &s) in dst.iter_mut().zip(image) {
            *d = s as i8;
        }
        self.next += 1;
        Ok(true)
    }
}

/// Example of a live source over embedded-hal 1.0: a sensor or camera module that streams one
/// frame of 8-bit unsigned pixels per SPI read (e.g. a low-resolution grayscale camera behind
/// a small FPGA/bridge). Generic over any HAL's `SpiDevice`, so it works on every chip with an
/// embedded-hal implementation; a camera on DCMI or I2C would follow the same pattern.
///
/// Pixels are mapped to int8 with `q = p - 128`, which is the model's quantization when its
/// input scale is 1/255 over [0, 1] with zero point -128 (the usual image convention); a model
/// quantized otherwise needs its own mapping here.
#[allow(dead_code)] // not used by the QEMU build; kept compiling so it stays correct
pub struct SpiFrameSource<SPI> {
    spi: SPI,
}

#[allow(dead_code)]
impl<SPI: SpiDevice> SpiFrameSource<SPI> {
    pub fn new(spi: SPI) -> Self {
        Self { spi }
    }
}

impl<SPI: SpiDevice> InputSource for SpiFrameSource<SPI> {
    type Error = SPI::Error;

    fn next_into(&mut self, dst: &mut [i8]) -> Result<bool, SPI::Error> {
        // Read the raw frame in place, then shift u8 -> i8 without a second buffer.
        let len = dst.len();
        let bytes: &mut [u8] = {
            let ptr = dst.as_mut_ptr().cast::<u8>();
            // SAFETY: `dst` is a unique &mut [i8]; u8 and i8 have identical size, alignment and
            // validity (every bit pattern is valid for both).
            unsafe { core::slice::from_raw_parts_mut(ptr, len) }
        };
        self.spi.read(bytes)?;
        for b in bytes.iter_mut() {
            *b ^= 0x80; // p - 128 in two's complement
        }
        Ok(true)
    }
}
