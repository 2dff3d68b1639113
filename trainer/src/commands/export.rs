//! `trainer export`: fold, calibrate and quantize a checkpoint, write the blob and the test
//! vectors, and compare float with int8 (through the runtime) on the test set, printed.

use crate::commands::data::DataArgs;
use crate::data::source::data_name;
use crate::deploy::export::{quantize_graph, run_int8, write_quantized};
use crate::deploy::run::test_vectors_for;
use crate::train::Checkpoint;
use anyhow::bail;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    /// Checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// File to write: the model blob (what the runtime and the firmware load), or with
    /// `--format tflite` the TensorFlow Lite file.
    #[arg(long)]
    pub out: PathBuf,
    /// `blob` (the runtime's) or `tflite`: a fully-int8 TensorFlow Lite file (int8 input and
    /// output, per-channel weights, TFLite's rounding) that TensorFlow Lite Micro runs; it is
    /// imported back and must give the outputs of the blob `--rounding tflite` writes on every
    /// test image, or nothing is written.
    #[arg(long, value_enum, default_value_t = FormatArg::Blob)]
    pub format: FormatArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Training images used to calibrate activation ranges (min/max).
    #[arg(long, default_value_t = 500)]
    pub calibration: usize,
    /// Also write the first N test images, quantized, as firmware test vectors to this path.
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// How many test images `--vectors` writes.
    #[arg(long, default_value_t = 100)]
    pub vector_count: usize,
    /// Calibrate on these images even if the checkpoint was trained on others.
    #[arg(long)]
    pub any_data: bool,
    /// The blob's requantization rounding: `single` (one rounding of the 64-bit product) or
    /// `tflite` (TensorFlow Lite's two roundings, which the runtime's fastest loops take).
    /// `--format tflite` always rounds as TensorFlow Lite.
    #[arg(long, value_enum, default_value_t = RoundingArg::Single)]
    pub rounding: RoundingArg,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `--format`'s values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    Blob,
    Tflite,
}

/// `--rounding`'s values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundingArg {
    Single,
    Tflite,
}

impl RoundingArg {
    pub fn runtime(self) -> runtime::Rounding {
        match self {
            RoundingArg::Single => runtime::Rounding::Single,
            RoundingArg::Tflite => runtime::Rounding::Double,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    /// The checkpoint's architecture is ref-cnn's (the peers' figures are for it only).
    pub reference_cnn: bool,
    pub blob_bytes: usize,
    pub arena_bytes: usize,
    pub macs: usize,
    pub float_accuracy: f32,
    pub int8_accuracy: f32,
    pub top1_agreement: f32,
    pub max_abs_logit_diff: f32,
    /// Grid detectors: mAP@0.5 and mAP@[.5:.95] (0 for other models).
    pub float_map50: f32,
    pub float_map_coco: f32,
    pub int8_map50: f32,
    pub int8_map_coco: f32,
    /// Localization models: mean IoU of the boxes (0 for classifiers).
    pub float_mean_iou: f32,
    pub int8_mean_iou: f32,
    pub test_images: usize,
    pub out: PathBuf,
    /// `--format tflite`: the file's bytes (`blob_bytes` is then the blob it was checked
    /// against).
    pub tflite_bytes: Option<usize>,
}

pub fn cmd_export(a: &ExportArgs) -> anyhow::Result<ExportReport> {
    // Every output is checked before the work: nothing is written half-way.
    crate::io::check_writable(&a.out)?;
    if let Some(v) = &a.vectors {
        crate::io::check_writable(v)?;
    }
    if a.calibration == 0 {
        bail!("--calibration must be at least 1 image (activation ranges come from them)");
    }
    let mut ck = Checkpoint::load(&a.checkpoint)?;
    if let Some(note) = ck.partial_note(&a.checkpoint) {
        eprintln!("{note}");
    }
    let data = a.data.for_checkpoint(ck.trained_on.as_ref());
    let (train_set, test) = data.load_for(&ck.model.arch)?;
    if let Some(t) = &ck.trained_on {
        let fp = crate::data::source::fingerprint(&train_set);
        if fp != t.train_fingerprint && !a.any_data {
            bail!(
                "{} was trained on other images ({}, {} training images) than these ({}, {}): \
                 calibrating on them gives another blob. Pass the same --data and \
                 --train-count, or --any-data to calibrate on these anyway",
                a.checkpoint.display(),
                data_name(t.data.as_deref()),
                t.train_count,
                data_name(data.data.as_deref()),
                train_set.len()
            );
        }
    }
    // `quantize` has validated the blob (the writer loads what it writes); loaded once more
    // here to run it, and that one model serves the accuracy, the decoders and the vectors.
    let qz = quantize_graph(&ck.model, &train_set, a.calibration)?;
    let rounding = match a.format {
        FormatArg::Tflite => runtime::Rounding::Double,
        FormatArg::Blob => a.rounding.runtime(),
    };
    let blob = write_quantized(&ck.model.arch, &qz, rounding)?;
    let tflite = match a.format {
        FormatArg::Tflite => Some(tflite_of(&ck, &qz, &blob, &test)?),
        FormatArg::Blob => None,
    };
    let rt = runtime::Model::from_bytes(&blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (arena_bytes, macs) = (rt.arena_bytes(), rt.macs());
    let out_q = rt.def().output.quant;
    let int8 = run_int8(&rt, &test)?;
    let classes = ck.model.arch.classes;
    let (mut agree, mut correct_q, mut correct_f, mut max_diff) = (0usize, 0usize, 0usize, 0f32);
    let (mut iou_f, mut iou_q) = (0f64, 0f64);
    let idx: Vec<usize> = (0..test.len()).collect();
    for chunk in idx.chunks(500) {
        let (x, y) = test.batch(chunk);
        let logits = ck.model.predict(x);
        for ((row, &t), &i) in logits.outer_iter().zip(&y).zip(chunk) {
            let f = row.as_slice().unwrap_or(&[]);
            let pf = crate::data::metrics::argmax_f32(&f[..classes]);
            let pq = runtime::argmax(&int8[i][..classes]).unwrap_or(0);
            if let Some(dec) = rt.box_decoder() {
                let b = dec.decode(&int8[i]).bbox;
                let s = 16.0 * test.w as f32;
                let q = [
                    b.x0 as f32 / s,
                    b.y0 as f32 / s,
                    b.x1 as f32 / s,
                    b.y1 as f32 / s,
                ];
                iou_q += crate::data::canvas::iou(q, test.boxes[i]) as f64;
                let w = test.w as f32;
                let fb = [
                    f[classes] / w,
                    f[classes + 1] / w,
                    f[classes + 2] / w,
                    f[classes + 3] / w,
                ];
                iou_f += crate::data::canvas::iou(fb, test.boxes[i]) as f64;
            }
            agree += (pf == pq) as usize;
            correct_f += (pf == t) as usize;
            correct_q += (pq == t) as usize;
            for (&q, &fv) in int8[i].iter().zip(f) {
                max_diff = max_diff.max((out_q.dequantize(q) - fv).abs());
            }
        }
    }
    // Grid detectors: mAP of the float model and of the runtime's integer decoding.
    let mut maps = [0f32; 4];
    if let Some(dec) = rt.grid_decoder() {
        let c = ck.model.arch.classes;
        let (float_map50, float_coco) = crate::train::grid_head::evaluate_map(&mut ck.model, &test);
        let preds: Vec<_> = int8
            .iter()
            .enumerate()
            .flat_map(|(i, o)| crate::detect::grid::preds_from_runtime(&dec.decode(o), test.w, i))
            .collect();
        maps = [
            float_map50,
            float_coco,
            crate::data::metrics::mean_ap(&preds, &test.objects, c, 0.5),
            crate::data::metrics::mean_ap_coco(&preds, &test.objects, c),
        ];
    }
    crate::io::write_atomic(&a.out, tflite.as_deref().unwrap_or(&blob))?;
    if let Some(p) = &a.vectors {
        crate::io::write_atomic(p, &test_vectors_for(&rt, &test, a.vector_count))?;
    }
    let n = test.len().max(1) as f32;
    let reference = crate::nn::arch::ArchSpec::ref_cnn();
    Ok(ExportReport {
        reference_cnn: ck.model.arch.input == reference.input
            && ck.model.arch.layers == reference.layers,
        blob_bytes: blob.len(),
        arena_bytes,
        macs,
        float_accuracy: correct_f as f32 / n,
        int8_accuracy: correct_q as f32 / n,
        top1_agreement: agree as f32 / n,
        max_abs_logit_diff: max_diff,
        float_map50: maps[0],
        float_map_coco: maps[1],
        int8_map50: maps[2],
        int8_map_coco: maps[3],
        float_mean_iou: (iou_f / n as f64) as f32,
        int8_mean_iou: (iou_q / n as f64) as f32,
        test_images: test.len(),
        out: a.out.clone(),
        tflite_bytes: tflite.as_ref().map(Vec::len),
    })
}

/// The `.tflite` of the quantized graph, imported back and run beside `blob` on every test
/// image: any output byte that differs is an error naming the image.
fn tflite_of(
    ck: &Checkpoint,
    qz: &crate::deploy::export::Quantized,
    blob: &[u8],
    test: &crate::data::Dataset,
) -> anyhow::Result<Vec<u8>> {
    let arch = &ck.model.arch;
    let tflite = crate::deploy::tflite::write::write_tflite(&arch.name, arch.input, qz)?;
    let (back, _) =
        crate::deploy::tflite::import_with(&tflite, &arch.name, false, &arch.class_names)
            .map_err(|e| anyhow::anyhow!("the written .tflite does not import: {e:#}"))?;
    let load = |b| runtime::Model::from_bytes(b).map_err(|e| anyhow::anyhow!("{e}"));
    let (ours, theirs) = (
        run_int8(&load(blob)?, test)?,
        run_int8(&load(&back)?, test)?,
    );
    if let Some(i) = (0..ours.len()).find(|&i| ours[i] != theirs[i]) {
        bail!(
            "the .tflite imported back differs from the blob on test image {i}: {:?} vs {:?}",
            theirs[i],
            ours[i]
        );
    }
    Ok(tflite)
}

/// `trainer export`: what was written and float vs int8 (and the report as JSON with `--json`).
pub fn run(a: &ExportArgs) -> anyhow::Result<()> {
    let r = cmd_export(a)?;
    // The peers' figures (bench/PEERS.md, quoted) are for ref-cnn only.
    let ref_cnn = r.reference_cnn;
    let peer = |t: &'static str| if ref_cnn { t } else { "" };
    match r.tflite_bytes {
        Some(n) => println!(
            "wrote {} ({n} bytes, TensorFlow Lite; imported back it gives the outputs of the \
             {}-byte blob --rounding tflite writes on all {} test images{})",
            r.out.display(),
            r.blob_bytes,
            r.test_images,
            peer("; TensorFlow's converter wrote 13,688 bytes for ref-cnn")
        ),
        None => println!(
            "wrote {} ({} bytes{})",
            r.out.display(),
            r.blob_bytes,
            peer("; TFLite int8 file of ref-cnn: 13,688")
        ),
    }
    println!(
        "planned arena {} bytes{}, {} MACs",
        r.arena_bytes,
        peer(" (TFLite Micro: 10,080)"),
        r.macs
    );
    println!(
        "test accuracy on {} images: float {:.2}%, int8 {:.2}%, top-1 agreement {:.2}%, max |logit diff| {:.4}",
        r.test_images, r.float_accuracy * 100.0, r.int8_accuracy * 100.0, r.top1_agreement * 100.0, r.max_abs_logit_diff
    );
    if r.int8_map50 > 0.0 {
        println!(
            "detection on {} canvases: mAP@0.5 float {:.3}, int8 {:.3}; mAP@[.5:.95] float {:.3}, int8 {:.3}",
            r.test_images, r.float_map50, r.int8_map50, r.float_map_coco, r.int8_map_coco
        );
    }
    if r.int8_mean_iou > 0.0 {
        println!(
            "mean IoU of boxes: float {:.3}, int8 {:.3}",
            r.float_mean_iou, r.int8_mean_iou
        );
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
