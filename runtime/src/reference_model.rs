//! A whole model through the kernels' naive i64 references ([`crate::kernels::reference`]):
//! one fresh vector per tensor, no arena, no plan, no fused or four-lane paths. What the
//! interpreter must produce, byte for byte (the tests and the fuzz targets compare them).

use crate::kernels::reference::{
    add, avg_pool2d, conv2d, fully_connected, global_avg_pool, max_pool2d, mean,
};
use crate::kernels::Step;
use crate::model::Model;

/// A whole model through the references, one fresh vector per tensor (no arena, no plan, no
/// fused or four-lane paths): what the interpreter must produce, byte for byte.
pub fn invoke<const N: usize>(model: &Model<'_, N>, input: &[i8]) -> Vec<i8> {
    let mut tensors: Vec<Vec<i8>> = vec![input.to_vec()];
    for info in model.layer_info() {
        let x = &tensors[info.inputs[0] as usize];
        let y = match info.step {
            Step::Conv {
                g,
                in_zp,
                weights,
                stage,
            } => conv2d(x, in_zp as i32, weights, &g, &stage, false),
            Step::Depthwise {
                g,
                in_zp,
                weights,
                stage,
            } => conv2d(x, in_zp as i32, weights, &g, &stage, true),
            Step::MaxPool(g) => max_pool2d(x, &g),
            Step::AvgPool(g) => avg_pool2d(x, &g),
            Step::GlobalAvgPool { channels } => global_avg_pool(x, channels),
            Step::FullyConnected {
                in_zp,
                weights,
                stage,
                out_features,
                ..
            } => fully_connected(x, in_zp as i32, weights, &stage, out_features),
            Step::Add(p) => add(x, &tensors[info.inputs[1] as usize], &p),
            Step::Concat { pixels } => {
                let mut y = Vec::new();
                for px in 0..pixels {
                    for &t in &info.inputs {
                        let v = &tensors[t as usize];
                        let c = v.len() / pixels;
                        y.extend_from_slice(&v[px * c..(px + 1) * c]);
                    }
                }
                y
            }
            Step::Mean(p) => mean(x, &p),
            // Softmax has one scalar kernel, written as gemmlowp's reference is; the committed
            // TensorFlow Lite Micro fixtures are its check.
            Step::Softmax(p) => {
                let mut y = vec![0i8; x.len()];
                crate::kernels::softmax(x, info.out_shape.c as usize, &p, &mut y);
                y
            }
        };
        tensors.push(y);
    }
    tensors.pop().unwrap_or_default()
}
