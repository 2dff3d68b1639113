//! The shapes of one convolution and the bias gradient: what the im2col path
//! ([`super::ops_conv`]) and the implicit-GEMM path ([`super::ops_conv_direct`]) share, in a
//! module of its own so that neither imports the other's internals in a circle.

use super::lanes::Lanes;
use super::Tensor;
use serde::{Deserialize, Serialize};

/// Strides `[rows, columns]` and zero padding `[top, left, bottom, right]` of a
/// convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub pad: [usize; 4],
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self::square(1, 0)
    }
}

impl Conv2dParams {
    /// One stride for both axes and the same padding on every side.
    pub fn square(stride: usize, padding: usize) -> Self {
        Self {
            stride: [stride, stride],
            pad: [padding; 4],
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
    pub sh: usize,
    pub sw: usize,
    /// Padding above, left, below and right of the input.
    pub pt: usize,
    pub pl: usize,
    pub pb: usize,
    pub pr: usize,
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
        let (o, kh, kw) = (w[0], w[1], w[2]);
        let [sh, sw] = p.stride;
        let [pt, pl, pb, pr] = p.pad;
        assert!(sh >= 1 && sw >= 1, "conv2d: strides must be >= 1");
        let (h, wd) = (x[1] + pt + pb, x[2] + pl + pr);
        assert!(
            h >= kh && wd >= kw,
            "conv2d: kernel {kh}x{kw} larger than padded input {h}x{wd}"
        );
        Self {
            n: x[0],
            h: x[1],
            w: x[2],
            c: x[3],
            o,
            kh,
            kw,
            oh: (h - kh) / sh + 1,
            ow: (wd - kw) / sw + 1,
            sh,
            sw,
            pt,
            pl,
            pb,
            pr,
        }
    }
    pub(super) fn m(&self) -> usize {
        self.n * self.oh * self.ow
    }
    pub fn k(&self) -> usize {
        self.kh * self.kw * self.c
    }
    pub(super) fn pointwise(&self) -> bool {
        (self.kh, self.kw, self.sh, self.sw) == (1, 1, 1, 1) && self.same_padding() == Some(0)
    }
    /// The padding when it is the same on every side.
    pub(super) fn same_padding(&self) -> Option<usize> {
        (self.pl == self.pt && self.pb == self.pt && self.pr == self.pt).then_some(self.pt)
    }
    /// Floats of a zero-padded input row from which every output column's window is one
    /// segment: the left padding, the row, and as much on the right as the windows reach.
    pub(super) fn padded_row(&self) -> usize {
        ((self.ow - 1) * self.sw + self.kw).max(self.pl + self.w) * self.c
    }
}

/// The gradient of a convolution's bias: the per-channel sums of `dy` (`[.., o]`).
pub(super) fn bias_grad(dy: &[f32], o: usize) -> Tensor {
    let lanes = Lanes::new(o);
    let sums = lanes.sum(dy, &vec![0.0; lanes.len], |d, _| d);
    super::tensor(&[o], sums.iter().map(|&a| a as f32).collect())
}
