//! The `bench` commands: training throughput (beside PyTorch's where available) and the
//! int8 runtime's host latency.

use crate::data::source::*;
use crate::deploy::run::*;
use crate::nn::arch::ArchSpec;
use crate::nn::model::Model;
use crate::train::{train_silent, TrainConfig};
use crate::util::*;
use anyhow::{bail, Context};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Median, lowest and highest of a set of measurements.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    pub median: f32,
    pub min: f32,
    pub max: f32,
}

impl Spread {
    pub fn of(v: &[f32]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let median = if s.is_empty() {
            f32::NAN
        } else if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        Spread {
            median,
            min: s.first().copied().unwrap_or(f32::NAN),
            max: s.last().copied().unwrap_or(f32::NAN),
        }
    }
}

/// What a training benchmark trains: an architecture and its training images (the bundled
/// digits, fitted to its input as `train` fits them).
pub struct BenchModel {
    pub arch: ArchSpec,
    pub images: crate::data::Dataset,
}

impl BenchModel {
    /// `arch` (a built-in name or a file; `None`: ref-cnn) with the bundled training images.
    pub fn new(arch: Option<&str>) -> anyhow::Result<BenchModel> {
        let arch = match arch {
            Some(a) => crate::nn::arch::arch_from(a)?,
            None => ArchSpec::ref_cnn(),
        };
        if arch.boxes || arch.grid {
            bail!(
                "bench train measures classifiers; '{}' is a detector",
                arch.name
            );
        }
        let images = DataSource::default().load_for(&arch)?.0;
        Ok(BenchModel { arch, images })
    }
}

/// Images/s of `bm`'s training at batch 64, `rounds` rounds of `steps` steps each, on 1 and 2
/// threads.
pub fn cmd_bench_train(
    bm: &BenchModel,
    steps: usize,
    rounds: usize,
) -> anyhow::Result<(Spread, Spread)> {
    if steps == 0 || rounds == 0 {
        bail!("--steps and --rounds must be at least 1");
    }
    let all = &bm.images;
    let run = |threads: usize| -> anyhow::Result<Spread> {
        with_threads(threads, || {
            let mut model = Model::new(bm.arch.clone(), &mut ChaCha8Rng::seed_from_u64(1))?;
            let cfg = TrainConfig {
                epochs: 1,
                split_batch: true,
                ..TrainConfig::default()
            };
            // Warm up on 3 batches, then time `steps` batches per round, wrapping around the
            // training set as epochs when it holds fewer.
            let warm = all.slice(0..64 * 3);
            train_silent(&mut model, &warm, &warm.slice(0..1), &cfg)?;
            let per_epoch = (all.len() / 64).max(1);
            let mut ips = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = std::time::Instant::now();
                let mut left = steps;
                while left > 0 {
                    let n = left.min(per_epoch);
                    let timed = all.slice(0..64 * n);
                    train_silent(&mut model, &timed, &timed.slice(0..1), &cfg)?;
                    left -= n;
                }
                ips.push((64 * steps) as f32 / t.elapsed().as_secs_f32());
            }
            Ok(Spread::of(&ips))
        })?
    };
    Ok((run(1)?, run(2)?))
}

/// Writes what bench/pytorch_train.py needs for `bm` into `dir`: the architecture's JSON and
/// the training images (u32 count, h, w, c little endian, the pixels, the labels). Returns the
/// two paths.
pub fn pytorch_files(bm: &BenchModel, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (arch, images) = (dir.join("arch.json"), dir.join("images.bin"));
    std::fs::write(&arch, serde_json::to_vec(&bm.arch)?)?;
    let d = &bm.images;
    let mut b = Vec::with_capacity(16 + d.pixels.len() + d.labels.len());
    for v in [d.len(), d.h, d.w, d.c] {
        b.extend_from_slice(&u32::try_from(v)?.to_le_bytes());
    }
    b.extend_from_slice(&d.pixels);
    b.extend_from_slice(&d.labels);
    std::fs::write(&images, b)?;
    Ok((arch, images))
}

/// PyTorch's images/s for the same model, optimizer and data (bench/pytorch_train.py), run by
/// `python`, on `threads` threads: with `files` ([`pytorch_files`]) the architecture and
/// images they hold; without, the script's own ref-cnn on the bundled digits.
pub fn bench_pytorch(
    python: &str,
    files: Option<&(PathBuf, PathBuf)>,
    steps: usize,
    rounds: usize,
    threads: usize,
) -> anyhow::Result<Spread> {
    let script = crate::deploy::device::repo_root().join("bench/pytorch_train.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&script).args([
        "--steps",
        &steps.to_string(),
        "--rounds",
        &rounds.to_string(),
    ]);
    cmd.args(["--threads", &threads.to_string()]);
    if let Some((arch, images)) = files {
        cmd.arg("--arch").arg(arch).arg("--images").arg(images);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    if !out.status.success() {
        bail!(
            "{python} {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        );
    }
    let ips: Vec<f32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    if ips.is_empty() {
        bail!("{python} {}: printed no figures", script.display());
    }
    Ok(Spread::of(&ips))
}

pub fn cmd_bench_runtime(model: &Path, iters: usize) -> anyhow::Result<(f64, usize)> {
    let blob = read_blob(model)?;
    let m = runtime::Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
    let (_, test) = DataSource::default().load(10)?;
    let mut arena = vec![0u8; m.arena_bytes()];
    let mut it = runtime::Interpreter::new(&m, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
    let q = m.def().input.quant;
    let inputs: Vec<Vec<i8>> = (0..100)
        .map(|i| {
            let mut v = vec![0i8; m.input_len()];
            crate::deploy::export::quantize_image(test.image(i), q, &mut v);
            v
        })
        .collect();
    for x in &inputs {
        it.input_mut().copy_from_slice(x);
        it.invoke().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let t = std::time::Instant::now();
    for i in 0..iters {
        it.input_mut().copy_from_slice(&inputs[i % inputs.len()]);
        it.invoke().map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(it.output());
    }
    Ok((
        t.elapsed().as_secs_f64() * 1e6 / iters.max(1) as f64,
        m.macs(),
    ))
}
