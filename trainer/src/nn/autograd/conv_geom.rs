//! The shapes of one convolution and the bias gradient: what the im2col path
//! ([`super::ops_conv`]) and the implicit-GEMM path ([`super::ops_conv_direct`]) share, in a
//! module of its own so that neither imports the other's internals in a circle.

use super::lanes::Lanes;
use super::Tensor;
use serde::{Deserialize, Serialize};

/// Stride and symmetric zero padding of a convolution (same for both spatial axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dParams {
    pub stride: usize,
    pub padding: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
        }
    }
}

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geom {
    pub(super) fn new(x: &[usize], w: &[usize], p: Conv2dParams) -> Self {
        assert_eq!(x.len(), 4, "conv2d: x must be NHWC, got {x:?}");
        assert_eq!(w.len(), 4, "conv2d: w must be OHWI, got {w:?}");
        assert_eq!(
            x[3], w[3],
            "conv2d: x has {} channels, w expects {}",
            x[3], w[3]
        );
        assert!(p.stride >= 1, "conv2d: stride must be >= 1");
        let (h, wd, kh, kw) = (x[1] + 2 * p.padding, x[2] + 2 * p.padding, w[1], w[2]);
        assert!(
            h >= kh && wd >= kw,
            "conv2d: kernel {kh}x{kw} larger than padded input {h}x{wd}"
        );
        Self {
            n: x[0],
            h: x[1],
            w: x[2],
            c: x[3],
            o: w[0],
            kh,
            kw,
            oh: (h - kh) / p.stride + 1,
            ow: (wd - kw) / p.stride + 1,
            stride: p.stride,
            pad: p.padding,
        }
    }
    pub(super) fn m(&self) -> usize {
        self.n * self.oh * self.ow
    }
    pub fn k(&self) -> usize {
        self.kh * self.kw * self.c
    }
    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
}

/// The gradient of a convolution's bias: the per-channel sums of `dy` (`[.., o]`).
pub(super) fn bias_grad(dy: &[f32], o: usize) -> Tensor {
    let lanes = Lanes::new(o);
    let sums = lanes.sum(dy, &vec![0.0; lanes.len], |d, _| d);
    super::tensor(&[o], sums.iter().map(|&a| a as f32).collect())
}
