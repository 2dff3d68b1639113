//! Seeing inside a trained CNN: first-layer filters, the activation maps of each conv layer for
//! one input, and the test images that excite a chosen channel most. All PNG.

use crate::data::Dataset;
use crate::nn::arch::LayerSpec;
use crate::nn::autograd::Tensor;
use crate::nn::model::Model;
use crate::report::plots::render;
use anyhow::{anyhow, bail};
use plotters::prelude::*;
use std::path::Path;

/// Diverging colour: negative blue, zero white, positive red; `v` in [-1, 1].
fn diverging(v: f32) -> RGBColor {
    let t = v.clamp(-1.0, 1.0);
    let fade = |a: f32| (255.0 * (1.0 - a)) as u8;
    if t >= 0.0 {
        RGBColor(255, fade(t), fade(t))
    } else {
        RGBColor(fade(-t), fade(-t), 255)
    }
}

/// Heat colour for non-negative activations, `v` in [0, 1] (black -> orange -> white).
fn heat(v: f32) -> RGBColor {
    let t = v.clamp(0.0, 1.0);
    RGBColor(
        (255.0 * (t * 1.5).min(1.0)) as u8,
        (255.0 * t) as u8,
        (255.0 * (t * 2.0 - 1.0).max(0.0)) as u8,
    )
}

/// Index of each conv layer and of the layer whose output shows it best (its ReLU if one
/// follows, possibly after a BatchNorm).
pub fn conv_layers(model: &Model) -> Vec<(usize, usize)> {
    let l = &model.arch.layers;
    (0..l.len())
        .filter(|&i| matches!(l[i], LayerSpec::Conv2d { .. }))
        .map(|i| {
            let mut j = i;
            while matches!(l.get(j + 1), Some(LayerSpec::BatchNorm2d | LayerSpec::Relu)) {
                j += 1;
            }
            (i, j)
        })
        .collect()
}

/// The first conv layer's filters (`[O, kh, kw, in]`, input channel 0), one tile each.
pub fn filters_png(model: &Model, path: &Path) -> anyhow::Result<()> {
    let Some(&(first, _)) = conv_layers(model).first() else {
        bail!("model has no conv layer")
    };
    let crate::nn::model::Slot::Weights(wi, _) = model.slots()[first] else {
        bail!("conv layer without weights")
    };
    let w = &model.params[wi];
    let (o, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2]);
    let max = w.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    let cell = (96 / kh.max(kw)).max(8) as i32;
    let cols = (o as f64).sqrt().ceil() as usize;
    let rows = o.div_ceil(cols);
    let (pad, top) = (10i32, 34i32);
    let tile = (kw as i32 * cell, kh as i32 * cell);
    // At least as wide as the title.
    let size = (
        (pad + cols as i32 * (tile.0 + pad)).max(560) as u32,
        (top + rows as i32 * (tile.1 + pad)) as u32,
    );
    render(path, size, |root| {
        let title = format!(
            "{}: first-layer filters (red +, blue -, max |w| {max:.2})",
            model.arch.name
        );
        root.draw(&Text::new(title, (pad, 8), ("sans-serif", 16).into_font()))
            .map_err(|e| anyhow!("{e}"))?;
        for f in 0..o {
            let (ox, oy) = (
                pad + (f % cols) as i32 * (tile.0 + pad),
                top + (f / cols) as i32 * (tile.1 + pad),
            );
            for y in 0..kh {
                for x in 0..kw {
                    let c = diverging(w[[f, y, x, 0]] / max);
                    let p = (ox + x as i32 * cell, oy + y as i32 * cell);
                    root.draw(&Rectangle::new([p, (p.0 + cell, p.1 + cell)], c.filled()))
                        .map_err(|e| anyhow!("{e}"))?;
                }
            }
        }
        Ok(())
    })
}

/// Activation maps of every conv layer (after its BN/ReLU) for test image `image`: one row of
/// channel tiles per layer, each scaled to its own maximum, the input first.
pub fn activations_png(
    model: &mut Model,
    data: &Dataset,
    image: usize,
    path: &Path,
) -> anyhow::Result<()> {
    if image >= data.len() {
        bail!("image {image} is outside the {}-image set", data.len());
    }
    let (x, _) = data.batch(&[image]);
    let trace = model.trace(x.clone());
    let mut maps: Vec<(String, Tensor)> = vec![("input".into(), x)];
    for (conv, shown) in conv_layers(model) {
        if let Some((_, t)) = trace.iter().find(|(i, _)| *i == shown) {
            maps.push((
                format!(
                    "layer {conv} conv (after {})",
                    model.arch.layers[shown].kind()
                ),
                t.clone(),
            ));
        }
    }
    let tile = 84i32;
    let (pad, label) = (6i32, 22i32);
    let cols = maps
        .iter()
        .map(|(_, t)| t.shape()[3])
        .max()
        .unwrap_or(1)
        .min(16);
    let size = (
        (pad + cols as i32 * (tile + pad)) as u32,
        (pad + maps.len() as i32 * (tile + label + pad)) as u32,
    );
    render(path, size, |root| {
        for (r, (name, t)) in maps.iter().enumerate() {
            let oy = pad + r as i32 * (tile + label + pad);
            root.draw(&Text::new(
                name.clone(),
                (pad, oy),
                ("sans-serif", 15).into_font(),
            ))
            .map_err(|e| anyhow!("{e}"))?;
            let (h, w, c) = (t.shape()[1], t.shape()[2], t.shape()[3]);
            let cell = (tile / h.max(w) as i32).max(1);
            for ch in 0..c.min(cols) {
                let max = (0..h * w)
                    .map(|p| t[[0, p / w, p % w, ch]])
                    .fold(1e-6f32, f32::max);
                let ox = pad + ch as i32 * (tile + pad);
                for y in 0..h {
                    for x in 0..w {
                        let col = heat(t[[0, y, x, ch]] / max);
                        let p = (ox + x as i32 * cell, oy + label + y as i32 * cell);
                        root.draw(&Rectangle::new([p, (p.0 + cell, p.1 + cell)], col.filled()))
                            .map_err(|e| anyhow!("{e}"))?;
                    }
                }
            }
        }
        Ok(())
    })
}

/// The `k` images of `data` whose maximum activation of `channel` in conv layer `layer` (its
/// output after BN/ReLU) is largest, with that value. Returns `(image, value)` best first.
pub fn top_images(
    model: &mut Model,
    data: &Dataset,
    layer: usize,
    channel: usize,
    k: usize,
) -> anyhow::Result<Vec<(usize, f32)>> {
    let Some(&(_, shown)) = conv_layers(model).iter().find(|(c, _)| *c == layer) else {
        bail!(
            "layer {layer} is not a conv layer (conv layers: {:?})",
            conv_layers(model).iter().map(|c| c.0).collect::<Vec<_>>()
        )
    };
    let mut scores = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(250) {
        let (x, _) = data.batch(chunk);
        let trace = model.trace(x);
        let Some((_, t)) = trace.into_iter().find(|(i, _)| *i == shown) else {
            bail!("no trace for layer {shown}")
        };
        if channel >= t.shape()[3] {
            bail!(
                "layer {layer} has {} channels, not {}",
                t.shape()[3],
                channel + 1
            );
        }
        for (n, &i) in chunk.iter().enumerate() {
            let (h, w) = (t.shape()[1], t.shape()[2]);
            let m = (0..h * w)
                .map(|p| t[[n, p / w, p % w, channel]])
                .fold(f32::NEG_INFINITY, f32::max);
            scores.push((i, m));
        }
    }
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scores.truncate(k);
    Ok(scores)
}

/// A grid of the [`top_images`] with their activation values.
pub fn top_images_png(
    model: &mut Model,
    data: &Dataset,
    layer: usize,
    channel: usize,
    path: &Path,
) -> anyhow::Result<Vec<(usize, f32)>> {
    let top = top_images(model, data, layer, channel, 16)?;
    let scale = (96 / data.w.max(1)).max(1) as i32;
    let (tw, th) = (data.w as i32 * scale, data.h as i32 * scale);
    let (pad, top_px, label) = (8i32, 34i32, 18i32);
    let cols = 8usize;
    let rows = top.len().div_ceil(cols).max(1);
    let size = (
        (pad + cols as i32 * (tw + pad)) as u32,
        (top_px + rows as i32 * (th + label + pad)) as u32,
    );
    render(path, size, |root| {
        let title = format!(
            "{}: test images that excite layer {layer}, channel {channel} most",
            model.arch.name
        );
        root.draw(&Text::new(title, (pad, 8), ("sans-serif", 16).into_font()))
            .map_err(|e| anyhow!("{e}"))?;
        for (n, &(i, v)) in top.iter().enumerate() {
            let (ox, oy) = (
                pad + (n % cols) as i32 * (tw + pad),
                top_px + (n / cols) as i32 * (th + label + pad),
            );
            let img = data.image(i);
            for y in 0..data.h {
                for x in 0..data.w {
                    // Gray, or the pixel's R, G, B for a colour set (HWC).
                    let px = &img[(y * data.w + x) * data.c..][..data.c];
                    let (r, g, b) = match *px {
                        [r, g, b] => (r, g, b),
                        _ => (px[0], px[0], px[0]),
                    };
                    let p = (ox + x as i32 * scale, oy + y as i32 * scale);
                    root.draw(&Rectangle::new(
                        [p, (p.0 + scale, p.1 + scale)],
                        RGBColor(r, g, b).filled(),
                    ))
                    .map_err(|e| anyhow!("{e}"))?;
                }
            }
            root.draw(&Text::new(
                format!("#{i} {v:.2}"),
                (ox, oy + th + 2),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })?;
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::arch::ArchSpec;
    use rand::SeedableRng;

    #[test]
    fn top_images_are_ranked_by_the_channel_maximum() {
        let mut m = Model::new(
            ArchSpec::ref_cnn(),
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(2),
        )
        .unwrap();
        assert_eq!(conv_layers(&m), vec![(0, 2), (4, 6)]);
        let (i, l) = crate::data::find_pair(&crate::data::default_data_dir()).unwrap();
        let data = crate::data::load_pair(&i, &l, 10).unwrap().slice(0..60);
        let top = top_images(&mut m, &data, 4, 3, 5).unwrap();
        assert_eq!(top.len(), 5);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        // The best image's own activation, recomputed alone, is the reported value.
        let (x, _) = data.batch(&[top[0].0]);
        let t = m.trace(x).into_iter().find(|(i, _)| *i == 6).unwrap().1;
        let best = t
            .iter()
            .skip(3)
            .step_by(16)
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        assert!((best - top[0].1).abs() < 1e-5, "{best} vs {}", top[0].1);
        assert!(
            top_images(&mut m, &data, 1, 0, 3).is_err(),
            "layer 1 is batch norm"
        );
    }

    /// A colour set's images are drawn in colour (they were drawn from the first third of
    /// their bytes, as gray).
    #[test]
    fn top_images_of_a_colour_set_are_in_colour() {
        let arch: ArchSpec = toml::from_str(
            "name = 'rgb'\ninput = [8, 8, 3]\nclasses = 2\n\
             [[layers]]\ntype = 'conv2d'\nout_channels = 2\nkernel = 3\npadding = 1\n\
             [[layers]]\ntype = 'relu'\n[[layers]]\ntype = 'flatten'\n\
             [[layers]]\ntype = 'linear'\nout_features = 2\n",
        )
        .unwrap();
        assert!(matches!(arch.layers[0], LayerSpec::Conv2d { .. }));
        let mut m = Model::new(arch, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3)).unwrap();
        // Red images: R 255, G and B 0.
        let pixels: Vec<u8> = (0..4 * 64).flat_map(|_| [255u8, 0, 0]).collect();
        let data = Dataset {
            h: 8,
            w: 8,
            c: 3,
            pixels,
            labels: vec![0, 1, 0, 1],
            boxes: Vec::new(),
            objects: Vec::new(),
            class_names: Vec::new(),
        };
        let path = std::env::temp_dir().join(format!("top-rgb-{}.png", std::process::id()));
        top_images_png(&mut m, &data, 0, 0, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let red = img.pixels().filter(|p| p.0 == [255, 0, 0]).count();
        assert!(red > 100, "{red} red pixels");
        std::fs::remove_file(&path).unwrap();
    }
}
