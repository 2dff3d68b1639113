//! `trainer bench tflite`: each committed `.tflite` fixture imported and run on the host and on
//! the emulated Cortex-M4, beside what TensorFlow Lite Micro needed for it (its
//! `arena_used_bytes` and outputs, recorded by `scripts/tflite-fixtures.py`).

use crate::deploy::device::{build_firmware, firmware_size, run_qemu, vector_file};
use crate::deploy::tflite::{import, import_with};
use anyhow::{bail, Context};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One imported model's figures.
#[derive(Debug, Clone, Serialize)]
pub struct TfliteRow {
    pub name: String,
    pub ops: Vec<String>,
    pub tflite_bytes: usize,
    pub blob_bytes: usize,
    /// Output channels removed by dead-channel elimination (0: the model as the file has it).
    pub removed_channels: usize,
    /// TFLM's `arena_used_bytes` (head + tail) on the x86-64 host.
    pub tflm_arena_bytes: u64,
    pub arena_bytes: usize,
    /// The floor of layer-by-layer execution: most activation bytes live at one step. The
    /// rest of the arena is kernel scratch.
    pub activation_bytes: usize,
    pub macs: usize,
    pub inputs: usize,
    /// Inputs whose host-runtime output equals TFLM's, byte for byte.
    pub host_equal: usize,
    /// On the emulated board: inputs equal to TFLM's, instructions per inference, peak stack
    /// and static RAM (arena, model table and the firmware's statics).
    pub device_equal: Option<usize>,
    pub instructions: Option<u64>,
    pub stack_bytes: Option<usize>,
    pub static_ram_bytes: Option<u64>,
    /// Where `NAME.labels.bin` gives a label per input: inputs whose top-1 class is right, by
    /// the host runtime, by TFLM, and by the device.
    pub top1: Option<Top1>,
    /// The firmware ELF (for `FIRMWARE_ELF=... bench/cmsis-nn/run.sh`).
    pub elf: Option<PathBuf>,
}

/// Right answers out of `of` labelled inputs (the first largest output is the class).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Top1 {
    pub of: usize,
    pub host: usize,
    pub tflm: usize,
    pub device: Option<usize>,
}

/// How many of `outs` have their first largest value at the label's index.
fn right(outs: &[Vec<i8>], labels: &[u8]) -> usize {
    outs.iter()
        .zip(labels)
        .filter(|(o, &l)| {
            let best = o
                .iter()
                .enumerate()
                .fold(0, |b, (i, &v)| if v > o[b] { i } else { b });
            best == l as usize
        })
        .count()
}

fn json_u64(v: &serde_json::Value, k: &str) -> anyhow::Result<u64> {
    v.get(k)
        .and_then(|x| x.as_u64())
        .with_context(|| format!("'{k}' missing"))
}

/// Imports every `NAME.tflite` in `dir` (with its `NAME.json`, `.inputs.bin`, `.tflm.bin`),
/// runs the inputs on the host runtime and, with `device`, in QEMU (`work` holds the builds).
pub fn cmd_bench_tflite(dir: &Path, device: bool, work: &Path) -> anyhow::Result<Vec<TfliteRow>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "tflite").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no .tflite files in {}", dir.display());
    }
    let mut rows = Vec::new();
    for name in names {
        let read = |ext: &str| {
            let p = dir.join(format!("{name}.{ext}"));
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
        };
        let tflite = read("tflite")?;
        let meta: serde_json::Value = serde_json::from_slice(&read("json")?)?;
        let (inputs, tflm_bytes) = (read("inputs.bin")?, read("tflm.bin")?);
        let labels = std::fs::read(dir.join(format!("{name}.labels.bin"))).ok();
        // The model without its dead channels and, where that removed any, as the file has it
        // (converted again only then).
        let (pruned, notes) =
            import_with(&tflite, &name, true, &[]).with_context(|| name.clone())?;
        let removed = notes.pruned.removed;
        let variants = if removed == 0 {
            vec![(name.clone(), pruned, 0)]
        } else {
            let full = import(&tflite, &name).with_context(|| name.clone())?;
            let label = format!("{name} (dead channels removed)");
            vec![(name.clone(), full, 0), (label, pruned, removed)]
        };
        // Each variant's row under its own label (the files above are the model's).
        for (name, blob, removed) in variants {
            let m =
                runtime::Model::from_bytes(&blob).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let (n_in, n_out) = (m.input_len(), m.output_len());
            let n = inputs.len() / n_in;
            if tflm_bytes.len() != n * n_out {
                bail!(
                    "{name}: {} output bytes for {n} inputs of {n_out}",
                    tflm_bytes.len()
                );
            }
            let tflm: Vec<Vec<i8>> = tflm_bytes
                .chunks_exact(n_out)
                .map(|c| c.iter().map(|&b| b as i8).collect())
                .collect();
            let xs: Vec<Vec<i8>> = inputs
                .chunks_exact(n_in)
                .map(|c| c.iter().map(|&b| b as i8).collect())
                .collect();
            let host = crate::deploy::device::host_outputs(&blob, &xs)?;
            let host_equal = host.iter().zip(&tflm).filter(|(a, b)| a == b).count();
            let labels = match &labels {
                Some(l) if l.len() != n => bail!("{name}: {} labels for {n} inputs", l.len()),
                l => l.as_ref(),
            };
            let mut row = TfliteRow {
                name: name.clone(),
                ops: meta["ops"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|o| o.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                tflite_bytes: tflite.len(),
                blob_bytes: blob.len(),
                removed_channels: removed,
                tflm_arena_bytes: json_u64(&meta, "arena_used_bytes")?,
                arena_bytes: m.arena_bytes(),
                activation_bytes: m.arena_figures().activation_peak_bytes,
                macs: m.macs(),
                inputs: n,
                host_equal,
                device_equal: None,
                instructions: None,
                stack_bytes: None,
                static_ram_bytes: None,
                top1: labels.as_ref().map(|l| Top1 {
                    of: n,
                    host: right(&host, l),
                    tflm: right(&tflm, l),
                    device: None,
                }),
                elf: None,
            };
            if device {
                let dir = name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "-");
                let d = work.join(dir);
                std::fs::create_dir_all(&d)?;
                crate::io::write_atomic(&d.join("model.bin"), &blob)?;
                crate::io::write_atomic(&d.join("inputs.bin"), &vector_file(n_in, &inputs))?;
                let elf = build_firmware(&d.join("model.bin"), &d.join("inputs.bin"), &d)?;
                let run = run_qemu(&elf)?;
                if run.status != 0 {
                    bail!("{name}: the firmware exited {}: {}", run.status, run.stdout);
                }
                row.device_equal = Some(
                    run.outputs
                        .iter()
                        .zip(&tflm)
                        .filter(|(a, b)| a == b)
                        .count(),
                );
                row.instructions = run.insns.first().copied();
                row.stack_bytes = run.stack;
                row.static_ram_bytes = Some(firmware_size(&elf)?.1);
                if let (Some(t), Some(l)) = (row.top1.as_mut(), labels.as_ref()) {
                    t.device = Some(right(&run.outputs, l));
                }
                row.elf = Some(elf);
            }
            rows.push(row);
        }
    }
    Ok(rows)
}
