//! The `inspect` command: a blob's layers, shapes, MACs, flash bytes, arena plan and
//! requantization, as the runtime validates them.

use crate::deploy::run::*;
use std::path::Path;

pub fn cmd_inspect(path: &Path) -> anyhow::Result<String> {
    let blob = read_blob(path)?;
    inspect_blob(&blob, &path.display().to_string())
}

/// The `inspect` table of a blob in memory (`label` names it in errors).
pub fn inspect_blob(blob: &[u8], label: &str) -> anyhow::Result<String> {
    use runtime::format::OutputStage;
    use runtime::Layer;
    use std::fmt::Write;
    let m = runtime::Model::from_bytes(blob).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    // The layer list as written (the model keeps it resolved, in layer_info).
    let d = runtime::decode_def(blob).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    let mut s = String::new();
    writeln!(
        s,
        "model '{}' ({} bytes, format v{}, head {:?}, {:?} rounding)",
        d.name,
        blob.len(),
        runtime::format::FORMAT_VERSION,
        d.head,
        d.rounding
    )?;
    let q = |t: &runtime::TensorSpec| {
        format!(
            "{:?} scale {:.6} zp {}",
            t.shape.dims(),
            t.quant.scale,
            t.quant.zero_point
        )
    };
    if !d.labels.is_empty() {
        writeln!(s, "classes {}", class_list(&m))?;
    }
    writeln!(s, "input  {}", q(&d.input))?;
    let row = |s: &mut String, c: [&str; 10]| {
        writeln!(
            s,
            "{:<3} {:<15} {:>9} {:>9} {:<22} {:>8} {:>7} {:>6} {:<19} {}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
        )
    };
    row(
        &mut s,
        [
            "#",
            "op",
            "in",
            "out",
            "params",
            "MACs",
            "flash B",
            "act B",
            "requant M (min-max)",
            "out zp / clamp",
        ],
    )?;
    // Real requantization multipliers of a stage, and its zero point and clamp.
    let stage = |o: &OutputStage| {
        let ms: Vec<f64> = o.channels().map(|(_, q)| q.to_real()).collect();
        let (lo, hi) = ms
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
        (
            format!("{lo:.2e}-{hi:.2e}"),
            format!("{} [{}, {}]", o.zero_point, o.act_min, o.act_max),
        )
    };
    for (i, (node, info)) in d.layers.iter().zip(m.layer_info()).enumerate() {
        let l = &node.layer;
        // Inputs other than the previous layer's output (graph edges), as tensor ids.
        let from = if node.inputs.len() == 1 && node.inputs[0] as usize == i {
            String::new()
        } else {
            let ids: Vec<String> = node.inputs.iter().map(|t| format!("t{t}")).collect();
            format!("({}) ", ids.join(","))
        };
        let (params, (mr, zp)) = match l {
            Layer::Conv2d(c) | Layer::DepthwiseConv2d(c) => (
                format!(
                    "k{}x{} s{} p{}{}",
                    c.kernel_h,
                    c.kernel_w,
                    pair(c.stride_h, c.stride_w),
                    c.padding,
                    c.pool
                        .map_or(String::new(), |p| format!(" +maxpool{}", p.kernel_h))
                ),
                stage(&c.output),
            ),
            Layer::FullyConnected(f) => (
                format!("{}->{}", f.in_features, f.out_features),
                stage(&f.output),
            ),
            Layer::MaxPool2d(p) | Layer::AvgPool2d(p) => (
                format!(
                    "k{} s{} p{}",
                    pair(p.kernel_h, p.kernel_w),
                    pair(p.stride_h, p.stride_w),
                    p.padding
                ),
                ("-".into(), "same as input".into()),
            ),
            Layer::GlobalAvgPool => (String::new(), ("-".into(), "same as input".into())),
            Layer::Add(a) => (
                String::new(),
                (
                    format!("{:.2e}", a.requant[2].to_real()),
                    format!("{} [{}, {}]", a.zero_point, a.act_min, a.act_max),
                ),
            ),
            Layer::Concat => (String::new(), ("-".into(), "same as inputs".into())),
            Layer::Mean(mn) => (
                String::new(),
                (
                    format!("{:.2e}", mn.requant.to_real()),
                    format!("{} [-128, 127]", mn.zero_point),
                ),
            ),
            Layer::Softmax(_) => (String::new(), ("-".into(), "-128 [-128, 127]".into())),
        };
        let params = from + &params;
        let dims = |d: [u16; 3]| format!("{}x{}x{}", d[0], d[1], d[2]);
        let cells = [
            i.to_string(),
            l.name().to_string(),
            dims(info.in_shape.dims()),
            dims(info.out_shape.dims()),
            params,
            info.macs.to_string(),
            info.param_bytes.to_string(),
            info.out_shape.len().to_string(),
            mr,
            zp,
        ];
        row(&mut s, cells.each_ref().map(|c| c.as_str()))?;
    }
    writeln!(s, "output {}", q(&d.output))?;
    let pbytes: usize = m.layer_info().iter().map(|l| l.param_bytes).sum();
    let f = m.arena_figures();
    writeln!(
        s,
        "totals: flash {} B (blob; {} B weights/bias/requant), RAM {} B arena (most bytes live at one step: {} B, of which activations {} B; every tensor live at once: {} B), {} MACs",
        blob.len(),
        pbytes,
        f.arena_bytes,
        f.live_peak_bytes,
        f.activation_peak_bytes,
        f.naive_bytes,
        m.macs()
    )?;
    Ok(s)
}

/// `a`, or `axb` when the two differ (a window's or a stride's rows and columns).
fn pair(a: u8, b: u8) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}x{b}")
    }
}
