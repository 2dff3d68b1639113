//! PNG figures: training curves and the confusion matrix (plotters, bitmap backend).

use crate::train::EpochMetrics;
use anyhow::{anyhow, Context};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system TrueType font for plot text (plotters' ab_glyph backend has none built in).
fn ensure_font() -> anyhow::Result<()> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).is_ok_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("no DejaVuSans.ttf font found for plot labels (apt-get install fonts-dejavu-core); looked in {FONT_PATHS:?}"))
    }
}

fn tmp_path(path: &Path) -> std::path::PathBuf {
    path.with_extension(format!("tmp-{}.png", std::process::id()))
}

/// Renders to a temporary file and renames it into place, so a failed plot leaves nothing.
pub(crate) fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    ensure_font()?;
    let tmp = tmp_path(path);
    let result = (|| {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))
    })();
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("cannot draw {}", path.display())))
        }
    }
}

/// Loss (left) and accuracy (right) per epoch, train and test. A grid detector has no
/// per-image class and no test loss: its right panel is the test mAP@0.5, its left the
/// training loss.
pub fn training_curves(history: &[EpochMetrics], path: &Path) -> anyhow::Result<()> {
    let detector = history.iter().any(|m| m.test_map50 > 0.0)
        && history
            .iter()
            .all(|m| m.test_accuracy == 0.0 && m.train_accuracy == 0.0);
    render(path, (1000, 420), |root| {
        let (left, right) = root.split_horizontally(500);
        let n = history.len().max(1) as f32;
        let e = |f: fn(&EpochMetrics) -> f32| {
            history
                .iter()
                .map(move |m| (m.epoch as f32, f(m)))
                .collect::<Vec<_>>()
        };
        let max_loss = history
            .iter()
            .map(|m| m.train_loss.max(m.test_loss))
            .fold(0.1f32, f32::max)
            * 1.1;
        let mut c = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0.5f32..n + 0.5, 0f32..max_loss)
            .map_err(|e| anyhow!("{e}"))?;
        c.configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        c.draw_series(LineSeries::new(e(|m| m.train_loss), &BLUE))
            .map_err(|e| anyhow!("{e}"))?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE));
        if !detector {
            c.draw_series(LineSeries::new(e(|m| m.test_loss), &RED))
                .map_err(|e| anyhow!("{e}"))?
                .label("test")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED));
        }
        c.configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let lo = history
            .iter()
            .map(|m| m.train_accuracy.min(m.test_accuracy))
            .fold(1.0f32, f32::min);
        let lo = if detector {
            0.0
        } else {
            ((lo * 100.0 - 1.0).floor()).clamp(0.0, 99.0)
        };
        let title = if detector {
            "test mAP@0.5 (%)"
        } else {
            "accuracy (%)"
        };
        let mut c = ChartBuilder::on(&right)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0.5f32..n + 0.5, lo..100f32)
            .map_err(|e| anyhow!("{e}"))?;
        c.configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let pct = |f: fn(&EpochMetrics) -> f32| {
            history
                .iter()
                .map(move |m| (m.epoch as f32, 100.0 * f(m)))
                .collect::<Vec<_>>()
        };
        if detector {
            c.draw_series(LineSeries::new(pct(|m| m.test_map50), &RED))
                .map_err(|e| anyhow!("{e}"))?
                .label("test mAP@0.5")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED));
        } else {
            c.draw_series(LineSeries::new(pct(|m| m.train_accuracy), &BLUE))
                .map_err(|e| anyhow!("{e}"))?
                .label("train")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE));
            c.draw_series(LineSeries::new(pct(|m| m.test_accuracy), &RED))
                .map_err(|e| anyhow!("{e}"))?
                .label("test")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

/// `cm[true][pred]` counts as a heat map with the counts written in; true class 0 at the top.
/// The axes name the classes by `names` (their first 8 characters) when given, else by number.
pub fn confusion_matrix(
    cm: &[Vec<usize>],
    names: &[String],
    title: &str,
    path: &Path,
) -> anyhow::Result<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let k = cm.len() as i32;
    let name = |v: i32| match names.get(v as usize) {
        Some(n) => n.chars().take(8).collect(),
        None => v.to_string(),
    };
    render(path, (560, 560), |root| {
        let mut c = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(if names.is_empty() { 40 } else { 80 })
            .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())
            .map_err(|e| anyhow!("{e}"))?;
        let centre = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(v) => Some(*v),
            _ => None,
        };
        c.configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_labels(k as usize)
            .y_labels(k as usize)
            .x_label_formatter(&|v| centre(v).map_or(String::new(), name))
            .y_label_formatter(&|v| centre(v).map_or(String::new(), |v| name(k - 1 - v)))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let max = cm.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
        let style = TextStyle::from(("sans-serif", 14).into_font())
            .pos(Pos::new(HPos::Center, VPos::Center));
        for (t, row) in cm.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                let v = (n as f64 / max).sqrt();
                let color = RGBColor(
                    (255.0 * (1.0 - v * 0.8)) as u8,
                    (255.0 * (1.0 - v * 0.55)) as u8,
                    255,
                );
                let (x, y) = (p as i32, k - 1 - t as i32);
                let cell = [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ];
                c.draw_series(std::iter::once(Rectangle::new(cell, color.filled())))
                    .map_err(|e| anyhow!("{e}"))?;
                if n > 0 {
                    let at = (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y));
                    c.draw_series(std::iter::once(Text::new(
                        format!("{n}"),
                        at,
                        style.clone(),
                    )))
                    .map_err(|e| anyhow!("{e}"))?;
                }
            }
        }
        Ok(())
    })
}

/// Counts `cm[true][pred]`.
pub fn confusion(labels: &[u8], preds: &[usize], classes: usize) -> Vec<Vec<usize>> {
    let mut cm = vec![vec![0; classes]; classes];
    for (&t, &p) in labels.iter().zip(preds) {
        if (t as usize) < classes && p < classes {
            cm[t as usize][p] += 1;
        }
    }
    cm
}

/// A grid of test images with true boxes (green) and predicted boxes (red, with class and
/// score); boxes as fractions of the image. `preds[i]` are the predictions of image `i`.
pub fn detections_grid(
    data: &crate::data::Dataset,
    preds: &[Vec<crate::data::metrics::Pred>],
    count: usize,
    title: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let n = count.min(data.len()).min(preds.len()).max(1);
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let scale = (240 / data.w.max(1)).max(1) as i32;
    let (cw, ch) = (data.w as i32 * scale, data.h as i32 * scale);
    let (pad, top) = (8i32, 36i32);
    let size = (
        (cols as i32 * (cw + pad) + pad) as u32,
        (top + rows as i32 * (ch + pad) + pad) as u32,
    );
    render(path, size, |root| {
        root.draw(&Text::new(
            title.to_owned(),
            (pad, 8),
            ("sans-serif", 20).into_font(),
        ))
        .map_err(|e| anyhow!("{e}"))?;
        for (i, image_preds) in preds.iter().enumerate().take(n) {
            let (ox, oy) = (
                pad + (i % cols) as i32 * (cw + pad),
                top + (i / cols) as i32 * (ch + pad),
            );
            let img = data.image(i);
            for y in 0..data.h {
                for x in 0..data.w {
                    let v = img[y * data.w + x];
                    let c = RGBColor(v, v, v);
                    let (px, py) = (ox + x as i32 * scale, oy + y as i32 * scale);
                    root.draw(&Rectangle::new(
                        [(px, py), (px + scale, py + scale)],
                        c.filled(),
                    ))
                    .map_err(|e| anyhow!("{e}"))?;
                }
            }
            let rect = |b: [f32; 4]| {
                [
                    (
                        ox + (b[0] * cw as f32) as i32,
                        oy + (b[1] * ch as f32) as i32,
                    ),
                    (
                        ox + (b[2] * cw as f32) as i32,
                        oy + (b[3] * ch as f32) as i32,
                    ),
                ]
            };
            let truths: Vec<(u8, [f32; 4])> = if !data.objects.is_empty() {
                data.objects[i].clone()
            } else if !data.boxes.is_empty() {
                vec![(data.labels[i], data.boxes[i])]
            } else {
                Vec::new()
            };
            for (_, b) in truths {
                root.draw(&Rectangle::new(rect(b), GREEN.stroke_width(2)))
                    .map_err(|e| anyhow!("{e}"))?;
            }
            for p in image_preds {
                let r = rect(p.bbox);
                root.draw(&Rectangle::new(r, RED.stroke_width(2)))
                    .map_err(|e| anyhow!("{e}"))?;
                root.draw(&Text::new(
                    format!("{}", p.class),
                    (r[0].0 + 2, r[0].1 + 1),
                    ("sans-serif", 16).into_font().color(&RED),
                ))
                .map_err(|e| anyhow!("{e}"))?;
            }
        }
        Ok(())
    })
}
