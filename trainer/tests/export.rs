//! Folding, quantization and the blob round trip, and training determinism.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trainer::cli::DataArgs;
use trainer::export::{deploy_forward, fold, quantize};
use trainer::model::{ArchSpec, LayerSpec, Model};
use trainer::train::{train_silent, TrainConfig};

fn data() -> (trainer::data::Dataset, trainer::data::Dataset) {
    DataArgs {
        data: None,
        train_count: 8000,
        test_count: 2000,
        boxes: None,
        canvas_copies: 3,
    }
    .load(10)
    .unwrap()
}

/// A model with non-trivial BatchNorm statistics and affine parameters.
fn perturbed_model(seed: u64) -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut m = Model::new(ArchSpec::ref_cnn(), &mut rng).unwrap();
    for bn in &mut m.bn {
        for v in &mut bn.running_mean {
            *v = rng.gen_range(-0.5..0.5);
        }
        for v in &mut bn.running_var {
            *v = rng.gen_range(0.2..3.0);
        }
    }
    for p in &mut m.params {
        if p.ndim() == 1 {
            p.mapv_inplace(|v| v + rng.gen_range(-0.3..0.3));
        }
    }
    m
}

/// Folded float network == unfolded network in eval mode. Tolerance: 1e-4 absolute on logits
/// of magnitude ~1-10 (f32 reassociation of the folded scale only).
#[test]
fn folding_preserves_eval_outputs() {
    let (train_set, _) = data();
    let mut m = perturbed_model(3);
    let (x, _) = train_set.batch(&(0..32).collect::<Vec<_>>());
    let want = m.predict(x.clone());
    let folded = fold(&m).unwrap();
    assert_eq!(folded.len(), 3, "conv+bn+relu+pool twice, then linear");
    let got = deploy_forward(&folded, x).pop().unwrap();
    let max = want
        .iter()
        .zip(got.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-4, "max |folded - unfolded| = {max}");
}

/// Export -> load in the runtime -> the layer table the architecture implies; writing twice
/// gives the same bytes.
#[test]
fn export_round_trip_gives_the_expected_layer_table() {
    let (train_set, _) = data();
    let m = perturbed_model(4);
    let blob = quantize(&m, &train_set, 100).unwrap();
    assert_eq!(
        blob,
        quantize(&m, &train_set, 100).unwrap(),
        "export is deterministic"
    );
    let rt = runtime::Model::from_bytes(&blob).unwrap();
    let table: Vec<(&str, [u16; 3], [u16; 3], usize)> = rt
        .def()
        .layers
        .iter()
        .zip(rt.layer_info())
        .map(|(l, i)| (l.name(), i.in_shape.dims(), i.out_shape.dims(), i.macs))
        .collect();
    assert_eq!(
        table,
        vec![
            ("Conv2d", [28, 28, 1], [14, 14, 8], 28 * 28 * 8 * 9),
            ("Conv2d", [14, 14, 8], [7, 7, 16], 14 * 14 * 16 * 72),
            ("FullyConnected", [7, 7, 16], [1, 1, 10], 7840),
        ]
    );
    // Peak: input (784) + pooled conv1 output (1568) are live together.
    assert_eq!(rt.arena_bytes(), 784 + 1568);
    assert!(blob.len() <= 11_000, "blob {} bytes", blob.len());
}

#[test]
fn export_refuses_layers_the_device_cannot_run() {
    let mut arch = ArchSpec::ref_cnn();
    // relu after a pool is not fused into anything.
    arch.layers.insert(4, LayerSpec::Relu);
    let m = Model::new(arch, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    let e = fold(&m).unwrap_err().to_string();
    assert!(e.contains("layer 4 (relu)"), "{e}");
}

/// Same seed, one thread: bit-identical weights. Another seed: different weights.
#[test]
fn same_seed_gives_bit_identical_weights() {
    let (train_set, test_set) = data();
    let sub = train_set.slice(0..640);
    let run = |seed: u64| {
        let mut m = Model::new(ArchSpec::ref_cnn(), &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        let cfg = TrainConfig {
            epochs: 1,
            seed,
            ..TrainConfig::default()
        };
        train_silent(&mut m, &sub, &test_set.slice(0..10), &cfg).unwrap();
        m.params
            .iter()
            .flat_map(|p| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            .collect::<Vec<u32>>()
    };
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a, run(6));
}
