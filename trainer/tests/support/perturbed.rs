//! A model whose BatchNorm statistics and biases sit away from their initial values, so that
//! folding and every bias matter (shared by the export tests).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trainer::nn::arch::ArchSpec;
use trainer::nn::model::Model;

/// `arch` initialized from `seed`, its running means in -0.5..0.5, running variances in
/// 0.2..3 and one-dimensional parameters (biases, BatchNorm's affine) moved by up to 0.3.
pub fn perturbed(arch: ArchSpec, seed: u64) -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut m = Model::new(arch, &mut rng).unwrap();
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
