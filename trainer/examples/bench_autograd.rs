//! Training throughput of the reference CNN on the autograd engine alone (no data loading):
//! forward + backward + SGD step at batch 64 on random inputs, one thread.
//!
//! `cargo run -p trainer --release --example bench_autograd [-- STEPS]`
//!
//! Prints images/s over the timed steps and the time per phase (forward ops, backward,
//! optimizer). Runs the whole thing twice from the same seed and checks the final parameters
//! are bit-identical. The figure to compare with: PyTorch CPU, same model, 1 thread,
//! ~6,900 images/s on a 2-core machine of this kind (shared/REFERENCES.md).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trainer::nn::autograd::{BatchNormState, Conv2dParams, Graph, Tensor, Var};
use trainer::nn::gradcheck::test_util::randn;
use trainer::nn::init::{constant, he_normal, zeros};
use trainer::train::optim::{Optimizer, SgdConfig};

const BATCH: usize = 64;
const PHASES: [&str; 12] = [
    "conv1",
    "bn1",
    "relu1",
    "pool1",
    "conv2",
    "bn2",
    "relu2",
    "pool2",
    "flatten+linear",
    "loss",
    "backward",
    "sgd",
];

/// 28x28x1 -> conv3x3x8 p1 -> BN -> ReLU -> maxpool2 -> conv3x3x16 p1 -> BN -> ReLU ->
/// maxpool2 -> flatten -> Linear(784 -> 10). Parameter order: w1 b1 g1 be1 w2 b2 g2 be2 w3 b3.
fn init_params(rng: &mut ChaCha8Rng) -> Vec<Tensor> {
    vec![
        he_normal(&[8, 3, 3, 1], rng),
        zeros(&[8]),
        constant(&[8], 1.0),
        zeros(&[8]),
        he_normal(&[16, 3, 3, 8], rng),
        zeros(&[16]),
        constant(&[16], 1.0),
        zeros(&[16]),
        he_normal(&[10, 784], rng),
        zeros(&[10]),
    ]
}

fn lap(t: &mut Instant, acc: &mut Duration) {
    let now = Instant::now();
    *acc += now - *t;
    *t = now;
}

/// One training step; adds the time of each phase to `times`. Returns the loss.
fn step(
    params: &mut [Tensor],
    bn: &mut [BatchNormState; 2],
    opt: &mut dyn Optimizer,
    x: &Tensor,
    y: &[usize],
    times: &mut [Duration; 12],
) -> f32 {
    let p1 = Conv2dParams::square(1, 1);
    let mut t = Instant::now();
    let mut g = Graph::new();
    let v: Vec<Var> = params.iter().map(|p| g.leaf(p.clone(), true)).collect();
    let xv = g.constant(x.clone());
    let h = g.conv2d(xv, v[0], Some(v[1]), p1);
    lap(&mut t, &mut times[0]);
    let h = g.batch_norm(h, v[2], v[3], &mut bn[0], true);
    lap(&mut t, &mut times[1]);
    let h = g.relu(h);
    lap(&mut t, &mut times[2]);
    let h = g.max_pool2d(h, 2, 2);
    lap(&mut t, &mut times[3]);
    let h = g.conv2d(h, v[4], Some(v[5]), p1);
    lap(&mut t, &mut times[4]);
    let h = g.batch_norm(h, v[6], v[7], &mut bn[1], true);
    lap(&mut t, &mut times[5]);
    let h = g.relu(h);
    lap(&mut t, &mut times[6]);
    let h = g.max_pool2d(h, 2, 2);
    lap(&mut t, &mut times[7]);
    let h = g.flatten(h);
    let logits = g.linear(h, v[8], Some(v[9]));
    lap(&mut t, &mut times[8]);
    let loss = g.cross_entropy(logits, y);
    let loss_value = g.value(loss)[[]];
    lap(&mut t, &mut times[9]);
    g.backward(loss);
    let grads: Vec<Tensor> = v.iter().map(|&p| g.take_grad(p).expect("grad")).collect();
    drop(g);
    lap(&mut t, &mut times[10]);
    opt.step(params, &grads);
    lap(&mut t, &mut times[11]);
    loss_value
}

fn run(steps: usize, report: bool) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut params = init_params(&mut rng);
    assert_eq!(params.iter().map(|p| p.len()).sum::<usize>(), 9146);
    let mut bn = [BatchNormState::new(8), BatchNormState::new(16)];
    let mut opt = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        ..Default::default()
    }
    .init();
    let data: Vec<(Tensor, Vec<usize>)> = (0..8)
        .map(|_| {
            let x = randn(&[BATCH, 28, 28, 1], &mut rng);
            (x, (0..BATCH).map(|_| rng.gen_range(0..10)).collect())
        })
        .collect();
    let mut times = [Duration::ZERO; 12];
    for (x, y) in data.iter().cycle().take(10) {
        step(&mut params, &mut bn, &mut opt, x, y, &mut times); // warm-up
    }
    let mut times = [Duration::ZERO; 12];
    let start = Instant::now();
    let mut loss = 0.0;
    for (x, y) in data.iter().cycle().take(steps) {
        loss = step(&mut params, &mut bn, &mut opt, x, y, &mut times);
    }
    let total = start.elapsed();
    if report {
        let ips = (steps * BATCH) as f64 / total.as_secs_f64();
        println!("ref-cnn train step, batch {BATCH}, 1 thread: {ips:.0} images/s");
        println!(
            "  {steps} steps in {:.3} s, {:.3} ms/step, last loss {loss:.4}",
            total.as_secs_f64(),
            total.as_secs_f64() * 1e3 / steps as f64
        );
        for (name, t) in PHASES.iter().zip(times) {
            let ms = t.as_secs_f64() * 1e3 / steps as f64;
            println!(
                "  {name:<15} {ms:7.3} ms/step  {:5.1} %",
                100.0 * t.as_secs_f64() / total.as_secs_f64()
            );
        }
    }
    params
}

fn main() {
    let steps = std::env::args()
        .nth(1)
        .map_or(200, |s| s.parse().expect("STEPS must be a number"));
    let a = run(steps, true);
    let b = run(steps, false);
    let same = a.iter().zip(&b).all(|(x, y)| {
        x.iter()
            .zip(y.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits())
    });
    println!("deterministic (two runs from the same seed bit-identical): {same}");
    assert!(same, "two runs from the same seed differ");
}
