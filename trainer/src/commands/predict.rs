//! `trainer predict`: one image (a test index or a PNG) through the int8 runtime, with the
//! decoded boxes of a detection model, printed.

use crate::commands::data::DataArgs;
use crate::deploy::run::{builtin_arch_for, read_blob};
use anyhow::bail;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct PredictArgs {
    /// Model blob (what `export` wrote).
    #[arg(long)]
    pub model: PathBuf,
    /// A grayscale PNG of the model's input size (white digit on black, as MNIST; a mostly
    /// bright image is inverted), or an index into the test split (test canvases for
    /// localization and detection models).
    pub image: String,
    /// Scale a PNG of another size to the model's input size.
    #[arg(long)]
    pub resize: bool,
    /// Keep a mostly bright PNG as it is instead of inverting it.
    #[arg(long)]
    pub no_invert: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

/// What `predict` found for one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PredictReport {
    /// Classifier or localizer: the predicted class (first maximum of the class logits).
    pub class: Option<usize>,
    /// The true class of a test-split image.
    pub label: Option<usize>,
    /// The names of `class` and `label`, when the model names its classes.
    pub class_name: Option<String>,
    pub label_name: Option<String>,
    /// Dequantized class logits (classifier and localizer; not the box values).
    pub logits: Vec<f32>,
    /// Dequantized outputs of a model that outputs values (an autoencoder's reconstruction).
    pub values: Vec<f32>,
    /// Boxes in input pixels `(class, score byte, [x0, y0, x1, y1])`: the localizer's one box,
    /// or the grid detector's detections after the runtime's integer NMS.
    pub boxes: Vec<(usize, i8, [f32; 4])>,
    /// What was done to the input (inverted, resized).
    pub notes: Vec<String>,
}

impl PredictReport {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for n in &self.notes {
            s += &format!("note: {n}\n");
        }
        let named = |k: usize, name: &Option<String>| match name {
            Some(n) => format!("{k} {n}"),
            None => k.to_string(),
        };
        if let Some(c) = self.class {
            s += &format!("class {}", named(c, &self.class_name));
            if let Some(l) = self.label {
                let wrong = if l == c { "" } else { ": wrong" };
                s += &format!(" (true label {}{wrong})", named(l, &self.label_name));
            }
            s += "\n";
        }
        if !self.values.is_empty() {
            s += &format!("values {:.3?}\n", self.values);
        }
        if !self.logits.is_empty() {
            s += &format!("logits {:.3?}\n", self.logits);
        }
        if self.class.is_none() && self.boxes.is_empty() {
            s += "no detections above the objectness threshold\n";
        }
        for (c, score, b) in &self.boxes {
            s += &format!(
                "box class {c} score {score} (pixels) x0 {:.2} y0 {:.2} x1 {:.2} y1 {:.2}\n",
                b[0], b[1], b[2], b[3]
            );
        }
        s
    }
}

pub fn cmd_predict(a: &PredictArgs) -> anyhow::Result<PredictReport> {
    use runtime::format::Head;
    let blob = read_blob(&a.model)?;
    let m = runtime::Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let spec = m.def().input;
    let (h, w, c) = (
        spec.shape.h as usize,
        spec.shape.w as usize,
        spec.shape.c as usize,
    );
    let mut notes = Vec::new();
    let mut label = None;
    let pixels: Vec<u8> = if let Ok(i) = a.image.parse::<usize>() {
        // The test split the model's kind trains on: digits, or the detection canvases; a
        // model that names its classes takes them from `--data` only.
        let head = m.def().head;
        let classifier = matches!(head, Head::Classifier { .. });
        let named = !m.def().labels.is_empty();
        let (_, test) = match (builtin_arch_for(&m), &a.data.data) {
            (_, Some(_)) if classifier => a.data.source().load_channels(256, c)?,
            (Some(arch), _) => a.data.source().load_for(&arch)?,
            (None, _) if named && classifier => bail!(
                "the model names its classes ({}): a test index needs its data, --data DIR \
                 (or give a PNG)",
                crate::deploy::run::class_list(&m)
            ),
            (None, _) if named => bail!(
                "the model names its classes ({}): the built-in canvases a test index reads \
                 are not its data; give a PNG",
                crate::deploy::run::class_list(&m)
            ),
            (None, _) => bail!("the model outputs values, not classes: a test index has no data"),
        };
        if (test.h, test.w, test.c) != (h, w, c) {
            bail!(
                "the model takes {h}x{w}x{c} inputs but test image {i} is {}x{}x{}; pass a PNG \
                 of the model's input size instead",
                test.h,
                test.w,
                test.c
            );
        }
        if i >= test.len() {
            bail!("index {i} is outside the {}-image test split", test.len());
        }
        crate::deploy::run::check_data_classes(&m, &test)?;
        notes.push(format!(
            "test image {i} of {} ({} test images)",
            crate::data::source::data_name(a.data.data.as_deref()),
            test.len()
        ));
        if classifier {
            label = test.labels.get(i).map(|&l| l as usize);
        }
        test.image(i).to_vec()
    } else if c == 3 {
        // Colour: composited like gray, resized on request, never inverted (the polarity rule
        // is the digits').
        let img = image::open(&a.image)
            .map_err(|e| anyhow::anyhow!("cannot read image {}: {e}", a.image))?;
        let (img, composited) = crate::data::to_rgb(img);
        notes.extend(composited);
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        if (iw, ih) != (w, h) && !a.resize {
            bail!(
                "{} is {iw}x{ih}, the model takes {w}x{h} (add --resize to scale it)",
                a.image
            );
        }
        if (iw, ih) != (w, h) {
            notes.push(format!("resized {iw}x{ih} to {w}x{h}"));
            let f = image::imageops::FilterType::Triangle;
            image::imageops::resize(&img, w as u32, h as u32, f).into_raw()
        } else {
            img.into_raw()
        }
    } else {
        if c != 1 {
            bail!("the model takes {c}-channel inputs; predict reads gray (1) or RGB (3) PNGs");
        }
        // The decoder's message already holds its cause: one line, said once.
        let img = image::open(&a.image)
            .map_err(|e| anyhow::anyhow!("cannot read image {}: {e}", a.image))?;
        let (img, composited) = crate::data::to_gray(img);
        notes.extend(composited);
        let img = if img.width() as usize != w || img.height() as usize != h {
            if !a.resize {
                bail!(
                    "{} is {}x{}, the model takes {w}x{h} (add --resize to scale it)",
                    a.image,
                    img.width(),
                    img.height()
                );
            }
            notes.push(format!(
                "resized {}x{} to {w}x{h}",
                img.width(),
                img.height()
            ));
            image::imageops::resize(
                &img,
                w as u32,
                h as u32,
                image::imageops::FilterType::Triangle,
            )
        } else {
            img
        };
        let mut raw = img.into_raw();
        // The models learn white strokes on black (MNIST); a mostly-bright picture is the
        // other polarity, so invert it rather than silently misclassify it.
        let mean = raw.iter().map(|&p| p as u64).sum::<u64>() / raw.len().max(1) as u64;
        if mean > 127 && !a.no_invert {
            for p in raw.iter_mut() {
                *p = 255 - *p;
            }
            notes.push(format!(
                "inverted: the image is mostly bright (mean {mean}), the model expects a white \
                 digit on black (--no-invert keeps it as is)"
            ));
        }
        raw
    };
    let mut arena = vec![0u8; m.arena_bytes()];
    let mut it = runtime::Interpreter::new(&m, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::deploy::export::quantize_image(&pixels, spec.quant, it.input_mut());
    it.invoke().map_err(|e| anyhow::anyhow!("{e}"))?;
    let q = m.def().output.quant;
    let out = it.output();
    let px = |v: i32| v as f32 / 16.0;
    let name = |k: Option<usize>| k.and_then(|k| m.def().label(k)).map(String::from);
    let mut r = PredictReport {
        class: None,
        class_name: None,
        label_name: name(label),
        label,
        logits: Vec::new(),
        values: Vec::new(),
        boxes: Vec::new(),
        notes,
    };
    match m.def().head {
        Head::Classifier { classes } => {
            let n = (classes as usize).min(out.len());
            r.logits = out[..n].iter().map(|&v| q.dequantize(v)).collect();
            r.class = runtime::argmax(&out[..n]);
        }
        Head::Localizer { classes } => {
            let n = (classes as usize).min(out.len());
            r.logits = out[..n].iter().map(|&v| q.dequantize(v)).collect();
            if let Some(dec) = m.box_decoder() {
                let d = dec.decode(out);
                let b = d.bbox;
                r.class = Some(d.class as usize);
                r.boxes.push((
                    d.class as usize,
                    d.score,
                    [px(b.x0), px(b.y0), px(b.x1), px(b.y1)],
                ));
            }
        }
        Head::GridDetector { .. } => {
            if let Some(dec) = m.grid_decoder() {
                for d in dec.decode(out) {
                    let b = d.bbox;
                    r.boxes.push((
                        d.class as usize,
                        d.score,
                        [px(b.x0), px(b.y0), px(b.x1), px(b.y1)],
                    ));
                }
            }
        }
        Head::Values { .. } => r.values = out.iter().map(|&v| q.dequantize(v)).collect(),
    }
    r.class_name = name(r.class);
    Ok(r)
}

/// `trainer predict`: the class, logits and boxes as text.
pub fn run(a: &PredictArgs) -> anyhow::Result<()> {
    print!("{}", cmd_predict(a)?.to_text());
    Ok(())
}
