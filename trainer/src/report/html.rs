//! The main job's summary and its renderings: the HTML page and the README's figures table
//! (both from the same `Summary`).

use serde::Serialize;

/// Everything the report shows; also `summary.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub arch: String,
    /// Trained on the user's `--data` rather than the bundled digits with the 8,000 / 2,000
    /// split (then no peer's accuracy applies).
    pub own_data: bool,
    pub params: usize,
    pub epochs: usize,
    pub train_seconds: f32,
    pub train_images_per_second: f32,
    pub float_accuracy: f32,
    pub int8_accuracy: f32,
    pub top1_agreement: f32,
    pub max_abs_logit_diff: f32,
    pub test_images: usize,
    pub blob_bytes: usize,
    pub arena_bytes: usize,
    pub macs: usize,
    pub device_images: usize,
    pub device_accuracy: f32,
    pub device_bit_exact: usize,
    pub instructions_per_inference: u64,
    pub instructions_per_mac: f64,
    pub firmware_flash_bytes: u64,
    pub firmware_static_ram_bytes: u64,
    pub firmware_peak_stack_bytes: usize,
    /// The classes' names (empty: numbers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    pub confusion_float: Vec<Vec<usize>>,
    pub confusion_int8: Vec<Vec<usize>>,
    pub layers: String,
    /// Instructions of each layer on the emulated board (one profiling inference):
    /// (index, kind, instructions).
    pub device_layer_instructions: Vec<(usize, String, u64)>,
    /// The grid detector's row (host runtime, int8), when it was trained.
    pub detector: Option<crate::report::detect::DetectRow>,
    /// Sliding window vs selective search + R-CNN vs the grid detector (what the `compare`
    /// command prints), when the detector was trained.
    pub detector_comparison: Option<crate::detect::compare::Comparison>,
    pub seconds_total: f32,
}

/// The detector comparison as an HTML table (the columns of `Comparison::to_markdown`).
pub(crate) fn comparison_table(c: &crate::detect::compare::Comparison) -> String {
    let mut h = String::from("<table><tr><th>method</th><th>mAP@0.5</th><th>mAP@[.5:.95]</th><th>proposals / image</th><th>MACs / image</th><th>host ms / image</th></tr>");
    for r in &c.rows {
        let props = r
            .proposals_per_image
            .map_or("- (one pass)".into(), |p| format!("{p:.1}"));
        h.push_str(&format!(
            "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{props}</td><td>{:.2} M</td><td>{:.2}</td></tr>",
            esc(&r.method),
            r.map50,
            r.map_coco,
            r.macs_per_image / 1e6,
            r.host_ms_per_image
        ));
    }
    h + "</table>"
}

pub(crate) fn pct(x: f32) -> String {
    format!("{:.2} %", x * 100.0)
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Which peers' figures (bench/PEERS.md) apply to a run: they were measured on ref-cnn, the
/// accuracies on the bundled digits with the default split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peers {
    /// The model is ref-cnn: the peers' sizes, instructions and training speed apply.
    pub model: bool,
    /// ...and trained on the bundled digits: their accuracies apply too.
    pub accuracy: bool,
}

impl Summary {
    pub fn peers(&self) -> Peers {
        // ref-cnn with its ten classes: a head resized to other class folders is another model.
        let ten = self.class_names.is_empty() || self.class_names.len() == 10;
        let model = self.arch == "ref-cnn" && ten;
        Peers {
            model,
            accuracy: model && !self.own_data,
        }
    }
}

pub(crate) fn html(s: &Summary) -> String {
    let p = s.peers();
    let when = |on: bool, t: &'static str| if on { t } else { "" };
    let rows: &[(&str, String, &str)] = &[
        (
            "float test accuracy (trainer)",
            pct(s.float_accuracy),
            when(p.accuracy, "PyTorch, same model and split: 97.2 %"),
        ),
        (
            "int8 test accuracy (host runtime)",
            pct(s.int8_accuracy),
            when(p.accuracy, "TFLM / ORT int8: 97.3 %"),
        ),
        ("top-1 agreement float vs int8", pct(s.top1_agreement), ""),
        (
            "max |logit difference| float vs int8",
            format!("{:.3}", s.max_abs_logit_diff),
            "",
        ),
        (
            "device accuracy (QEMU, first images)",
            format!("{} on {}", pct(s.device_accuracy), s.device_images),
            "",
        ),
        (
            "device parity with host",
            format!(
                "{} / {} images bit-exact",
                s.device_bit_exact, s.device_images
            ),
            "",
        ),
        (
            "model blob (flash)",
            format!("{} bytes", s.blob_bytes),
            when(p.model, "TFLite int8 file: 13,688 bytes"),
        ),
        (
            "arena (RAM, planned = exact)",
            format!("{} bytes", s.arena_bytes),
            when(p.model, "TFLite Micro: 10,080 bytes"),
        ),
        (
            "firmware flash / static RAM",
            format!(
                "{} / {} bytes",
                s.firmware_flash_bytes, s.firmware_static_ram_bytes
            ),
            "flash includes the embedded test images",
        ),
        (
            "peak stack (painted)",
            format!("{} bytes", s.firmware_peak_stack_bytes),
            "",
        ),
        (
            "instructions per inference (QEMU -icount)",
            format!(
                "{} ({:.2} per MAC, {} MACs)",
                s.instructions_per_inference, s.instructions_per_mac, s.macs
            ),
            when(p.model, "CMSIS-NN -O3: 1,575,562 (5.43 per MAC)"),
        ),
        (
            "training",
            format!(
                "{} epochs, {:.1} s, {:.0} images/s",
                s.epochs, s.train_seconds, s.train_images_per_second
            ),
            when(p.model, "PyTorch CPU 1 thread: ~6,900 images/s"),
        ),
    ];
    let table: String = rows
        .iter()
        .map(|(k, v, p)| {
            format!("<tr><td>{k}</td><td><b>{v}</b></td><td class=peer>{p}</td></tr>\n")
        })
        .collect();
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{arch}: desktop to Cortex-M4</title>
<style>body{{font-family:sans-serif;max-width:1050px;margin:2em auto;color:#222}} td{{padding:3px 12px;border-bottom:1px solid #eee}}
.peer{{color:#777}} pre{{background:#f6f6f6;padding:10px;overflow-x:auto}} img{{max-width:100%}} .ok{{color:#070}}</style></head><body>
<h1>{arch}: trained on the desktop, running on a Cortex-M4</h1>
<p class=ok>Parity: the emulated board computed <b>{be} / {n}</b> outputs bit for bit as the host runtime.
Journey took {secs:.0} s.</p>
<table>{table}</table>
<h2>Training</h2><img src="curves.png" alt="loss and accuracy curves">
<h2>What the network learned</h2><img src="filters.png" alt="first-layer filters"> <img src="activations.png" alt="activation maps of test image 0">
<img src="top-images.png" alt="test images that excite conv layer 0, channel 0 most">
{detector}
<h2>Confusion matrices (test split)</h2>{classes}<img src="confusion-float.png" width=480> <img src="confusion-int8.png" width=480>
<h2>Layers on the device (flash per layer = bytes; RAM = the arena above)</h2><pre>{layers}</pre>
<h2>Where the instructions go (emulated Cortex-M4, one inference)</h2><table>{costs}</table>
<p class=peer>Same table for any blob: <code>cargo run --release -p trainer -- device --model report/model.bin</code>.</p>
<p>Files: <a href="model.bin">model.bin</a> (the blob the firmware embeds), <a href="model.ckpt.json">checkpoint</a>,
<a href="summary.json">summary.json</a>.</p>
</body></html>"#,
        arch = esc(&s.arch),
        classes = if s.class_names.is_empty() {
            String::new()
        } else {
            format!(
                "<p>Classes (the data's folders): {}</p>",
                esc(&s.class_names.join(", "))
            )
        },
        be = s.device_bit_exact,
        n = s.device_images,
        secs = s.seconds_total,
        layers = esc(&s.layers),
        costs = s
            .device_layer_instructions
            .iter()
            .map(|(k, kind, n)| format!(
                "<tr><td>layer {k}</td><td>{}</td><td><b>{n}</b> instructions</td></tr>",
                esc(kind)
            ))
            .collect::<String>(),
        detector = s.detector.as_ref().map_or(String::new(), |d| format!(
            "<h2>Boxes: the grid detector (int8, host runtime)</h2><p>mAP@0.5 <b>{:.3}</b>, mAP@[.5:.95] {:.3} on 1,000 test canvases; {} MACs, {} B flash, {} B arena. Device parity of its detections is checked by the test suite.</p><img src=\"detections.png\" alt=\"predicted and true boxes\"><p>Its training: loss and test mAP@0.5 per epoch.</p><img src=\"detector-curves.png\" alt=\"grid detector training curves\">",
            d.map50, d.map_coco, d.macs_per_image, d.flash_bytes.unwrap_or(0), d.arena_bytes.unwrap_or(0)
        )) + &s.detector_comparison.as_ref().map_or(String::new(), |t| format!(
            "<h2>Detectors compared (float, host, same 1,000 test canvases)</h2><p>The grid detector is the one that fits the device; R-CNN (1 epoch here) and the sliding window show what that costs. <a href=\"detectors.md\">detectors.md</a></p>{}",
            comparison_table(t)
        )),
    )
}

/// Thousands separators: 1234567 -> "1,234,567".
pub fn grouped(v: u64) -> String {
    let d = v.to_string();
    let mut out = String::new();
    for (i, ch) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The README's figures table, generated from a `summary.json` (the main job's), so the README
/// can only show what a run printed: `trainer::report::html::readme_table` and the test that checks
/// README.md against `docs/summary.json`.
///
/// A key the summary lacks (or holds as another type) is an error naming it: a table of
/// "NaN %" and zeros would otherwise match a README made from the same broken summary.
pub fn readme_table(s: &serde_json::Value) -> anyhow::Result<String> {
    let missing = std::cell::RefCell::new(Vec::new());
    let f = |k: &str| {
        s[k].as_f64().unwrap_or_else(|| {
            missing.borrow_mut().push(k.to_string());
            f64::NAN
        })
    };
    let u = |k: &str| {
        s[k].as_u64().unwrap_or_else(|| {
            missing.borrow_mut().push(k.to_string());
            0
        })
    };
    let pct = |k: &str| format!("{:.2} %", 100.0 * f(k));
    let insn = u("instructions_per_inference");
    let rows = [
        (
            format!(
                "float test accuracy (8k train / 2k test, {} epochs)",
                u("epochs")
            ),
            pct("float_accuracy"),
            "PyTorch 97.2 %".to_string(),
        ),
        (
            "int8 test accuracy (host runtime)".into(),
            format!(
                "{} (top-1 agreement with float {})",
                pct("int8_accuracy"),
                pct("top1_agreement")
            ),
            "TFLM / ORT 97.3 %".into(),
        ),
        (
            "device vs host".into(),
            format!(
                "{} / {} images bit-exact",
                u("device_bit_exact"),
                u("device_images")
            ),
            "-".into(),
        ),
        (
            "model file".into(),
            format!("{} B", grouped(u("blob_bytes"))),
            "TFLite int8 13,688 B".into(),
        ),
        (
            "arena (planned = exact peak)".into(),
            format!("{} B", grouped(u("arena_bytes"))),
            "TFLite Micro 10,080 B".into(),
        ),
        (
            "instructions per inference (Cortex-M4, QEMU)".into(),
            format!(
                "{} ({:.2} per MAC)",
                grouped(insn),
                f("instructions_per_mac")
            ),
            "CMSIS-NN -O3 1,575,562".into(),
        ),
        (
            "firmware RAM: static (arena included) + peak stack".into(),
            format!(
                "{} B + {} B",
                grouped(u("firmware_static_ram_bytes")),
                grouped(u("firmware_peak_stack_bytes"))
            ),
            "CMSIS-NN 7,840 B activations + 288 B scratch".into(),
        ),
    ];
    let mut t = String::from("| figure | this project | peer ([bench/PEERS.md](bench/PEERS.md)) |\n| --- | --- | --- |\n");
    for (a, b, c) in rows {
        t += &format!("| {a} | {b} | {c} |\n");
    }
    let missing = missing.into_inner();
    if !missing.is_empty() {
        anyhow::bail!(
            "the summary lacks {} (or holds another type)",
            missing.join(", ")
        );
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 33: the report printed "CMSIS-NN class: about 1 per MAC" (hard-coded; CMSIS-NN
    /// measures 5.43 on ref-cnn) and MNIST peers' accuracies beside a model of your own data.
    /// The peers' figures now appear only for what they were measured on.
    #[test]
    fn peers_figures_only_where_measured() {
        let run = |arch: &str, own_data: bool| {
            html(&Summary {
                arch: arch.into(),
                own_data,
                ..Summary::default()
            })
        };
        let bundled = run("ref-cnn", false);
        assert!(bundled.contains("97.2 %") && bundled.contains("13,688"));
        assert!(bundled.contains("CMSIS-NN -O3: 1,575,562 (5.43 per MAC)"));
        assert!(!bundled.contains("about 1 per MAC"));
        let own = run("ref-cnn", true);
        assert!(!own.contains("97.2 %") && !own.contains("97.3 %"));
        assert!(own.contains("13,688") && own.contains("1,575,562"));
        let shapes = html(&Summary {
            arch: "ref-cnn".into(),
            own_data: true,
            class_names: vec!["circle".into(), "square".into(), "triangle".into()],
            ..Summary::default()
        });
        assert!(shapes.contains("Classes (the data's folders): circle, square, triangle"));
        for peer in ["97.2 %", "13,688", "1,575,562"] {
            assert!(!shapes.contains(peer), "{peer}");
        }
        let other = run("cnn-32x32", true);
        for peer in ["97.2 %", "13,688", "10,080", "1,575,562", "6,900"] {
            assert!(!other.contains(peer), "{peer}");
        }
    }
}
