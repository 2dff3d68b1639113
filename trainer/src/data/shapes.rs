//! An example data set in the layout `train --data` reads: `train/` and `test/`, each with one
//! sub-folder of PNGs per class (`circle`, `square`, `triangle`), white shapes of varied size
//! and place on a noisy dark background. For trying the own-data path end to end, and for
//! seeing the layout a folder of your own images needs.

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// The classes, in the order their folders sort (classes 0, 1, 2).
pub const SHAPES: [&str; 3] = ["circle", "square", "triangle"];

/// One `size` x `size` gray image of `class` (an index into [`SHAPES`]): the shape's centre,
/// radius and the background noise drawn from `rng`.
pub fn shape_image(class: usize, size: u32, rng: &mut ChaCha8Rng) -> image::GrayImage {
    let s = size as f32;
    let r = s * rng.gen_range(0.18..0.32);
    let (cx, cy) = (rng.gen_range(r..s - r), rng.gen_range(r..s - r));
    let ink: u8 = rng.gen_range(180..=255);
    let noise: Vec<u8> = (0..size * size).map(|_| rng.gen_range(0..40)).collect();
    image::GrayImage::from_fn(size, size, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
        let on = match class {
            0 => dx * dx + dy * dy <= r * r,
            1 => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
            // Apex up, base at `cy + r`: half-width grows from 0 to `r` down the height.
            _ => dy >= -r && dy <= r && dx.abs() <= (dy + r) / 2.0,
        };
        image::Luma([if on {
            ink
        } else {
            noise[(y * size + x) as usize]
        }])
    })
}

/// Writes `per_class` training and `per_class / 4` (at least one) test images of each shape
/// under `dir/train/` and `dir/test/`. Refuses a `dir` that exists (nothing the user did not
/// name is overwritten); writes into a staging folder renamed into place at the end.
pub fn write_shapes(dir: &Path, per_class: usize, size: u32, seed: u64) -> anyhow::Result<()> {
    if dir.exists() {
        bail!("{} exists: name a new folder", dir.display());
    }
    if !(8..=1024).contains(&size) || per_class == 0 || per_class > 100_000 {
        bail!("--size must be 8..=1024 and --per-class 1..=100000");
    }
    let name = dir.file_name().context("the folder needs a name")?;
    let staging = dir.with_file_name(format!(
        ".{}.staging-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> anyhow::Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (split, n) in [("train", per_class), ("test", (per_class / 4).max(1))] {
            for (class, shape) in SHAPES.iter().enumerate() {
                let d = staging.join(split).join(shape);
                std::fs::create_dir_all(&d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                for i in 0..n {
                    let p = d.join(format!("{i:05}.png"));
                    shape_image(class, size, &mut rng)
                        .save(&p)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                }
            }
        }
        std::fs::rename(&staging, dir)
            .with_context(|| format!("cannot move the images into {}", dir.display()))
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three shapes differ where it counts: a circle's corners of its bounding square
    /// are dark, a square's are lit, a triangle's apex row is narrow and its base wide.
    #[test]
    fn shapes_are_what_their_names_say() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            for class in 0..3 {
                let img = shape_image(class, 28, &mut rng);
                let lit: Vec<(u32, u32)> = img
                    .enumerate_pixels()
                    .filter(|p| p.2 .0[0] >= 180)
                    .map(|p| (p.0, p.1))
                    .collect();
                let (x0, x1) = (
                    lit.iter().map(|p| p.0).min().unwrap(),
                    lit.iter().map(|p| p.0).max().unwrap(),
                );
                let (y0, y1) = (
                    lit.iter().map(|p| p.1).min().unwrap(),
                    lit.iter().map(|p| p.1).max().unwrap(),
                );
                let fill = lit.len() as f32 / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f32;
                let want = [0.785, 1.0, 0.5][class];
                assert!((fill - want).abs() < 0.15, "class {class}: fill {fill}");
            }
        }
    }

    /// The layout `train --data` reads, and an existing folder is never written into.
    #[test]
    fn writes_the_train_test_layout_and_never_overwrites() {
        let d = std::env::temp_dir().join(format!("shapes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        write_shapes(&d, 8, 28, 1).unwrap();
        for (split, n) in [("train", 8), ("test", 2)] {
            for s in SHAPES {
                assert_eq!(std::fs::read_dir(d.join(split).join(s)).unwrap().count(), n);
            }
        }
        let e = write_shapes(&d, 8, 28, 1).unwrap_err().to_string();
        assert!(e.contains("exists"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
