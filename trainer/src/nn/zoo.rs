//! The built-in architectures: ref-cnn (the reference CNN), loc-cnn, grid-det, tiny-resnet,
//! tiny-inception, and MLPerf Tiny's keyword-spotting DS-CNN, image-classification ResNet-8
//! and visual-wake-words MobileNetV1.

use crate::nn::arch::{ArchSpec, LayerSpec, PadMode, Padding, Pair};

/// A `kernel`x`kernel` conv, stride 1, same padding.
fn conv(out_channels: usize, kernel: usize, bias: bool) -> LayerSpec {
    LayerSpec::Conv2d {
        out_channels,
        kernel: Pair::One(kernel),
        stride: Pair::One(1),
        padding: Padding::Sides(kernel / 2),
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

/// A linear layer with bias.
fn linear(out_features: usize) -> LayerSpec {
    LayerSpec::Linear {
        out_features,
        bias: true,
    }
}

/// A 10-class architecture from its stages (no box head, not a grid detector).
fn digits(name: &str, input: [usize; 3], stages: &[Vec<LayerSpec>]) -> ArchSpec {
    ArchSpec {
        name: name.into(),
        input,
        classes: 10,
        layers: stages.concat(),
        boxes: false,
        grid: false,
        class_names: Vec::new(),
    }
}

/// The stem of the graph models: 3x3 conv (16, no bias) -> BN -> ReLU -> 2x2 max-pool.
fn stem_16() -> Vec<LayerSpec> {
    stage(16, false, true)
}

impl ArchSpec {
    /// The reference CNN (bench/PEERS.md): 9,146 parameters.
    pub fn ref_cnn() -> ArchSpec {
        let head = vec![LayerSpec::Flatten, linear(10)];
        digits(
            "ref-cnn",
            [28, 28, 1],
            &[stage(8, true, true), stage(16, true, true), head],
        )
    }

    /// Single-object localization on 40x40 canvases: a three-stage conv trunk, then one
    /// hidden layer feeding the class logits and the box (10 + 4 outputs).
    pub fn loc_cnn() -> ArchSpec {
        let head = vec![LayerSpec::Flatten, linear(64), LayerSpec::Relu, linear(14)];
        let trunk = [
            stage(16, true, true),
            stage(32, true, true),
            stage(32, true, true),
        ];
        ArchSpec {
            boxes: true,
            ..digits("loc-cnn", [40, 40, 1], &[trunk.concat(), head])
        }
    }

    /// Multi-object detector on 64x64 canvases: a fully convolutional trunk down to an 8x8
    /// grid (8-pixel cells), a 3x3 conv and a 1x1 conv predicting `5 + 10` values per cell.
    pub fn grid_det() -> ArchSpec {
        let stages = [
            stage(16, true, true),
            stage(32, true, true),
            stage(32, true, true),
            stage(64, true, false),
            vec![conv(15, 1, true)],
        ];
        ArchSpec {
            grid: true,
            ..digits("grid-det", [64, 64, 1], &stages)
        }
    }

    /// A small ResNet for 28x28 digits: a 3x3 stem, three residual stages (the last two
    /// downsample with stride-2 convs instead of pooling), global average pooling, a linear
    /// classifier.
    pub fn tiny_resnet() -> ArchSpec {
        let residual = |out_channels, stride| LayerSpec::Residual {
            out_channels,
            stride,
        };
        let blocks = vec![
            residual(16, 1),
            residual(24, 2),
            residual(40, 2),
            LayerSpec::GlobalAvgPool,
            linear(10),
        ];
        digits("tiny-resnet", [28, 28, 1], &[stem_16(), blocks])
    }

    /// A small GoogLeNet for 28x28 digits: a 3x3 stem, three Inception modules at 14x14, 7x7
    /// and 3x3, each after a 2x2 max-pool, global average pooling, a linear classifier.
    pub fn tiny_inception() -> ArchSpec {
        let pool = LayerSpec::MaxPool2d {
            kernel: 2,
            stride: None,
        };
        // (b1, b3_reduce, b3, b5_reduce, b5, pool_proj)
        let inception = |c: [usize; 6]| LayerSpec::Inception {
            b1: c[0],
            b3_reduce: c[1],
            b3: c[2],
            b5_reduce: c[3],
            b5: c[4],
            pool_proj: c[5],
        };
        let blocks = vec![
            inception([8, 12, 16, 4, 8, 8]),
            pool,
            inception([24, 16, 32, 8, 16, 16]),
            pool,
            inception([32, 24, 48, 8, 16, 16]),
            LayerSpec::GlobalAvgPool,
            linear(10),
        ];
        digits("tiny-inception", [28, 28, 1], &[stem_16(), blocks])
    }

    /// MLPerf Tiny's keyword-spotting DS-CNN (github `mlcommons/tiny`,
    /// `benchmark/training/keyword_spotting/keras_model.py`, `ds_cnn`) on a 49x10x1 input: a
    /// 10x4 stride-2 convolution of 64 with SAME padding, BatchNorm, ReLU and dropout 0.2, four
    /// depthwise-separable blocks (3x3 depthwise SAME, BatchNorm, ReLU; 1x1 convolution of 64,
    /// BatchNorm, ReLU), dropout 0.4, the average of the 25x5 map and a linear classifier (ten
    /// classes here, twelve keywords there). Its convolutions have the MACs of MLPerf's
    /// reference model; trained on the bundled digits resized to 49x10.
    pub fn ds_cnn() -> ArchSpec {
        let same = Padding::Mode(PadMode::Same);
        let relu_bn = [LayerSpec::BatchNorm2d, LayerSpec::Relu];
        let mut layers = vec![LayerSpec::Conv2d {
            out_channels: 64,
            kernel: Pair::Two([10, 4]),
            stride: Pair::One(2),
            padding: same,
            bias: true,
        }];
        layers.extend(relu_bn);
        layers.push(LayerSpec::Dropout { p: 0.2 });
        for _ in 0..4 {
            layers.push(LayerSpec::DepthwiseConv2d {
                kernel: Pair::One(3),
                stride: Pair::One(1),
                padding: same,
                bias: true,
            });
            layers.extend(relu_bn);
            layers.push(LayerSpec::Conv2d {
                out_channels: 64,
                kernel: Pair::One(1),
                stride: Pair::One(1),
                padding: same,
                bias: true,
            });
            layers.extend(relu_bn);
        }
        layers.extend([
            LayerSpec::Dropout { p: 0.4 },
            LayerSpec::GlobalAvgPool,
            linear(10),
        ]);
        digits("ds-cnn", [49, 10, 1], &[layers])
    }

    /// MLPerf Tiny's image-classification ResNet-8 (github `mlcommons/tiny`,
    /// `benchmark/training/image_classification/keras_model.py`, `resnet_v1_eembc`) on a
    /// 32x32x3 input: a 3x3 convolution of 16, BatchNorm, ReLU, three residual stacks of 16,
    /// 32 (stride 2) and 64 (stride 2) channels, the average of the 8x8 map and a linear
    /// classifier. Its MACs are the reference model's. Two differences from the Keras model,
    /// both in [`LayerSpec::Residual`]: the strided 3x3 convolutions pad one row and column on
    /// each side where TensorFlow's SAME pads only below and right (the same output size),
    /// and the 1x1 projections have a BatchNorm. Trained on the bundled digits resized to
    /// 32x32, gray in each of R, G, B.
    pub fn resnet_8() -> ArchSpec {
        let residual = |out_channels, stride| LayerSpec::Residual {
            out_channels,
            stride,
        };
        let layers = vec![
            conv(16, 3, true),
            LayerSpec::BatchNorm2d,
            LayerSpec::Relu,
            residual(16, 1),
            residual(32, 2),
            residual(64, 2),
            LayerSpec::GlobalAvgPool,
            linear(10),
        ];
        digits("resnet-8", [32, 32, 3], &[layers])
    }

    /// MobileNetV1 with width multiplier 0.25 at 96x96x3, as MLPerf Tiny's visual wake words
    /// (github `mlcommons/tiny`, `benchmark/training/visual_wake_words/vww_model.py`): a 3x3
    /// stride-2 convolution of 8, then thirteen depthwise-separable blocks (3x3 depthwise,
    /// BatchNorm, ReLU; 1x1 convolution, BatchNorm, ReLU) of 16, 32, 32, 64, 64, 128 x 6, 256
    /// and 256 channels, the strided ones at 32, 64, 128 and the first 256, all with
    /// TensorFlow's SAME padding; the average of the 3x3 map and a linear classifier (ten
    /// classes here, two there). Its MACs are the reference model's but for the classifier.
    /// Trained on the bundled digits resized to 96x96, gray in each of R, G, B.
    pub fn mobilenet_v1() -> ArchSpec {
        Self::mobilenet_v1_at("mobilenet-v1", [96, 96, 3])
    }

    /// [`ArchSpec::mobilenet_v1`] for small inputs: the same layers at 32x32x3, down to a
    /// 1x1 map (its five strides halve 32 five times).
    pub fn mobilenet_v1_32() -> ArchSpec {
        Self::mobilenet_v1_at("mobilenet-v1-32", [32, 32, 3])
    }

    /// MobileNetV1 0.25 on an `input` of any size.
    fn mobilenet_v1_at(name: &str, input: [usize; 3]) -> ArchSpec {
        let same = Padding::Mode(PadMode::Same);
        let relu_bn = [LayerSpec::BatchNorm2d, LayerSpec::Relu];
        let mut layers = vec![LayerSpec::Conv2d {
            out_channels: 8,
            kernel: Pair::One(3),
            stride: Pair::One(2),
            padding: same,
            bias: false,
        }];
        layers.extend(relu_bn);
        let blocks: [(usize, usize); 13] = [
            (16, 1),
            (32, 2),
            (32, 1),
            (64, 2),
            (64, 1),
            (128, 2),
            (128, 1),
            (128, 1),
            (128, 1),
            (128, 1),
            (128, 1),
            (256, 2),
            (256, 1),
        ];
        for (out_channels, stride) in blocks {
            layers.push(LayerSpec::DepthwiseConv2d {
                kernel: Pair::One(3),
                stride: Pair::One(stride),
                padding: same,
                bias: false,
            });
            layers.extend(relu_bn);
            layers.push(LayerSpec::Conv2d {
                out_channels,
                kernel: Pair::One(1),
                stride: Pair::One(1),
                padding: same,
                bias: false,
            });
            layers.extend(relu_bn);
        }
        layers.extend([LayerSpec::GlobalAvgPool, linear(10)]);
        digits(name, input, &[layers])
    }
}

#[cfg(test)]
mod tests {
    use crate::nn::arch::{Act, ArchSpec};

    /// The DS-CNN's shapes and MACs, by hand from MLPerf Tiny's definition: TensorFlow's SAME
    /// pads the 10x4 stride-2 convolution's 49x10 input by 4 rows above and 5 below and one
    /// column on each side, to 25x5x64; the four blocks keep it. Its convolutions' MACs are
    /// the reference model's: 320,000 + 4 x (72,000 + 512,000), plus 640 for a ten-way
    /// classifier (`kws_ref_model.tflite` has 768 for twelve keywords).
    /// ResNet-8's MACs, by hand: the stem 32x32x16x27; the first stack 2 x 32x32x16x144; the
    /// second 16x16x32 x (144 + 288 + 16); the third 8x8x64 x (288 + 576 + 32); the classifier
    /// 640: 12,501,632, MLPerf Tiny's reference model's (`pretrainedResnet_quant.tflite`).
    #[test]
    fn resnet_8_has_mlperfs_macs() {
        let a = ArchSpec::resnet_8();
        let acts = a.validate().unwrap();
        assert_eq!(acts[5], Act::Map(8, 8, 64));
        let macs = 32 * 32 * 16 * 27
            + 2 * 32 * 32 * 16 * 144
            + 16 * 16 * 32 * (144 + 288 + 16)
            + 8 * 8 * 64 * (288 + 576 + 32)
            + 640;
        assert_eq!((a.macs(), macs), (12_501_632, 12_501_632));
    }

    /// MobileNetV1 0.25's MACs, by hand per block (depthwise 9 per output, pointwise the input
    /// channels per output) at 48, 24, 12, 6 and 3 pixels a side: MLPerf Tiny's reference model
    /// has 7,489,664 with its two-way classifier (512 MACs), this one 2,560 for ten classes.
    #[test]
    fn mobilenet_v1_has_mlperfs_macs() {
        let a = ArchSpec::mobilenet_v1();
        let px = |n: usize| n * n;
        let block = |n: usize, c_in: usize, c_out: usize, s: usize| {
            px(n / s) * c_in * 9 + px(n / s) * c_out * c_in
        };
        let macs = px(48) * 8 * 27
            + block(48, 8, 16, 1)
            + block(48, 16, 32, 2)
            + block(24, 32, 32, 1)
            + block(24, 32, 64, 2)
            + block(12, 64, 64, 1)
            + block(12, 64, 128, 2)
            + 5 * block(6, 128, 128, 1)
            + block(6, 128, 256, 2)
            + block(3, 256, 256, 1);
        assert_eq!(macs + 512, 7_489_664);
        assert_eq!(a.macs(), macs + 2_560);
        assert_eq!(
            a.validate().unwrap().iter().rev().nth(2),
            Some(&Act::Map(3, 3, 256))
        );
        // The small-input variant: the same layers at 32x32, the last map 1x1.
        let small = ArchSpec::mobilenet_v1_32();
        assert_eq!(small.layers, a.layers);
        assert_eq!(
            small.validate().unwrap().iter().rev().nth(2),
            Some(&Act::Map(1, 1, 256))
        );
    }

    #[test]
    fn ds_cnn_has_mlperfs_shapes_and_macs() {
        let a = ArchSpec::ds_cnn();
        let acts = a.validate().unwrap();
        assert_eq!(acts[0], Act::Map(25, 5, 64));
        assert!(acts[..acts.len() - 2]
            .iter()
            .skip(1)
            .all(|&s| s == Act::Map(25, 5, 64)));
        assert_eq!(a.layers[0].conv_shape((49, 10)).unwrap().pad, [4, 1, 5, 1]);
        assert_eq!(a.macs(), 320_000 + 4 * (72_000 + 512_000) + 640);
    }
}
