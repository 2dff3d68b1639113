//! The built-in architectures: ref-cnn (the reference CNN), loc-cnn, grid-det, tiny-resnet and
//! tiny-inception.

use crate::nn::arch::{ArchSpec, LayerSpec};

/// A `kernel`x`kernel` conv, stride 1, same padding.
fn conv(out_channels: usize, kernel: usize, bias: bool) -> LayerSpec {
    LayerSpec::Conv2d {
        out_channels,
        kernel,
        stride: 1,
        padding: kernel / 2,
        bias,
    }
}

/// One stage of the plain CNNs: 3x3 conv -> BN -> ReLU, then a 2x2 max-pool if `pool`.
fn stage(out_channels: usize, bias: bool, pool: bool) -> Vec<LayerSpec> {
    let mut v = vec![
        conv(out_channels, 3, bias),
        LayerSpec::BatchNorm2d,
        LayerSpec::Relu,
    ];
    if pool {
        v.push(LayerSpec::MaxPool2d {
            kernel: 2,
            stride: None,
        });
    }
    v
}

/// The stem of the graph models: 3x3 conv (16, no bias) -> BN -> ReLU -> 2x2 max-pool.
fn stem_16() -> Vec<LayerSpec> {
    stage(16, false, true)
}

impl ArchSpec {
    /// The reference CNN (bench/PEERS.md): 9,146 parameters.
    pub fn ref_cnn() -> ArchSpec {
        use LayerSpec::*;
        ArchSpec {
            name: "ref-cnn".into(),
            input: [28, 28, 1],
            classes: 10,
            layers: [
                stage(8, true, true),
                stage(16, true, true),
                vec![
                    Flatten,
                    Linear {
                        out_features: 10,
                        bias: true,
                    },
                ],
            ]
            .concat(),
            boxes: false,
            grid: false,
        }
    }

    /// Single-object localization on 40x40 canvases: a three-stage conv trunk, then one
    /// hidden layer feeding the class logits and the box (10 + 4 outputs).
    pub fn loc_cnn() -> ArchSpec {
        use LayerSpec::*;
        ArchSpec {
            name: "loc-cnn".into(),
            input: [40, 40, 1],
            classes: 10,
            layers: [
                stage(16, true, true),
                stage(32, true, true),
                stage(32, true, true),
                vec![
                    Flatten,
                    Linear {
                        out_features: 64,
                        bias: true,
                    },
                    Relu,
                    Linear {
                        out_features: 14,
                        bias: true,
                    },
                ],
            ]
            .concat(),
            boxes: true,
            grid: false,
        }
    }

    /// Multi-object detector on 64x64 canvases: a fully convolutional trunk down to an 8x8
    /// grid (8-pixel cells), a 3x3 conv and a 1x1 conv predicting `5 + 10` values per cell.
    pub fn grid_det() -> ArchSpec {
        ArchSpec {
            name: "grid-det".into(),
            input: [64, 64, 1],
            classes: 10,
            layers: [
                stage(16, true, true),
                stage(32, true, true),
                stage(32, true, true),
                stage(64, true, false),
                vec![conv(15, 1, true)],
            ]
            .concat(),
            boxes: false,
            grid: true,
        }
    }

    /// A small ResNet for 28x28 digits: a 3x3 stem, three residual stages (the last two
    /// downsample with stride-2 convs instead of pooling), global average pooling, a linear
    /// classifier.
    pub fn tiny_resnet() -> ArchSpec {
        use LayerSpec::*;
        ArchSpec {
            name: "tiny-resnet".into(),
            input: [28, 28, 1],
            classes: 10,
            layers: [
                stem_16(),
                vec![
                    Residual {
                        out_channels: 16,
                        stride: 1,
                    },
                    Residual {
                        out_channels: 24,
                        stride: 2,
                    },
                    Residual {
                        out_channels: 40,
                        stride: 2,
                    },
                    GlobalAvgPool,
                    Linear {
                        out_features: 10,
                        bias: true,
                    },
                ],
            ]
            .concat(),
            boxes: false,
            grid: false,
        }
    }

    /// A small GoogLeNet for 28x28 digits: a 3x3 stem, three Inception modules at 14x14, 7x7
    /// and 3x3, each after a 2x2 max-pool, global average pooling, a linear classifier.
    pub fn tiny_inception() -> ArchSpec {
        use LayerSpec::*;
        let pool = MaxPool2d {
            kernel: 2,
            stride: None,
        };
        let inception = |b1, b3_reduce, b3, b5_reduce, b5, pool_proj| Inception {
            b1,
            b3_reduce,
            b3,
            b5_reduce,
            b5,
            pool_proj,
        };
        ArchSpec {
            name: "tiny-inception".into(),
            input: [28, 28, 1],
            classes: 10,
            layers: [
                stem_16(),
                vec![
                    inception(8, 12, 16, 4, 8, 8),
                    pool,
                    inception(24, 16, 32, 8, 16, 16),
                    pool,
                    inception(32, 24, 48, 8, 16, 16),
                    GlobalAvgPool,
                    Linear {
                        out_features: 10,
                        bias: true,
                    },
                ],
            ]
            .concat(),
            boxes: false,
            grid: false,
        }
    }
}
