//! `trainer import`: a fully-int8 `.tflite` to the runtime's blob (library call
//! `deploy::tflite::import`), then the blob's `inspect` table.

use crate::deploy::prune::PruneReport;
use crate::deploy::tflite::import_with;
use anyhow::{anyhow, bail};

/// What `trainer import` reads and writes.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// A fully-int8 TensorFlow Lite model (`.tflite`).
    pub model: std::path::PathBuf,
    /// Where to write the runtime's blob.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Model name recorded in the blob (default: the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Keep output channels whose weights are all zero. By default they are removed and
    /// folded into their consumers (exact: outputs unchanged byte for byte, checked on
    /// seeded inputs), as MLPerf Tiny's rules allow.
    #[arg(long)]
    pub keep_dead_channels: bool,
    /// A text file of class names, one per line in output order (blank lines ignored):
    /// recorded in the blob, so `predict` and `device` print names.
    #[arg(long)]
    pub labels: Option<std::path::PathBuf>,
    /// Also print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// What `trainer import` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub out: std::path::PathBuf,
    pub tflite_bytes: usize,
    pub blob_bytes: usize,
    pub arena_bytes: usize,
    pub macs: usize,
    pub layers: usize,
    /// The `inspect` table of the blob.
    pub table: String,
    /// Dead channels removed (none with `--keep-dead-channels`).
    pub pruned: PruneReport,
    /// Channels with all-zero weights given the smallest stage with the same output.
    pub settled: usize,
}

/// Reads the `.tflite`, converts it, checks the blob loads, then writes it (atomically; nothing
/// is written on any error).
pub fn cmd_import(a: &ImportArgs) -> anyhow::Result<ImportReport> {
    use anyhow::Context;
    let bytes =
        std::fs::read(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    if a.out == a.model
        || std::fs::canonicalize(&a.out).ok() == std::fs::canonicalize(&a.model).ok()
            && a.out.exists()
    {
        bail!("--out {} is the input file", a.out.display());
    }
    let stem = a
        .model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("imported");
    let name = a.name.as_deref().unwrap_or(stem);
    let labels = match &a.labels {
        Some(p) => read_labels(p)?,
        None => Vec::new(),
    };
    let (blob, notes) = import_with(&bytes, name, !a.keep_dead_channels, &labels)
        .with_context(|| format!("{}", a.model.display()))?;
    let m = runtime::Model::from_bytes(&blob)
        .map_err(|e| anyhow!("the written blob does not load: {e}"))?;
    let table = crate::deploy::inspect::inspect_blob(&blob, &a.out.display().to_string())?;
    crate::io::write_atomic(&a.out, &blob)?;
    Ok(ImportReport {
        out: a.out.clone(),
        tflite_bytes: bytes.len(),
        blob_bytes: blob.len(),
        arena_bytes: m.arena_bytes(),
        macs: m.macs(),
        layers: m.layer_info().len(),
        table,
        pruned: notes.pruned,
        settled: notes.settled,
    })
}

/// Class names from a text file: one per line, surrounding blanks trimmed, blank lines
/// skipped.
pub fn read_labels(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read class names {}", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() {
        bail!("{}: no class names (one per line)", path.display());
    }
    Ok(names)
}

/// `trainer import`: the blob's table and what was written (and the report as JSON with
/// `--json`).
pub fn run(a: &ImportArgs) -> anyhow::Result<()> {
    let r = cmd_import(a)?;
    print!("{}", r.table);
    println!(
        "wrote {} ({} bytes; the .tflite is {} bytes): {} layers, arena {} bytes, {} MACs, TensorFlow Lite rounding",
        r.out.display(),
        r.blob_bytes,
        r.tflite_bytes,
        r.layers,
        r.arena_bytes,
        r.macs
    );
    if r.pruned.removed > 0 {
        println!(
            "removed {} of {} output channels whose weights are all zero (folded into their \
             consumers; outputs unchanged on seeded inputs; --keep-dead-channels keeps them)",
            r.pruned.removed, r.pruned.channels
        );
    }
    if r.settled > 0 {
        println!(
            "gave {} kept channel(s) whose weights are all zero the smallest bias and \
             multiplier with the same output byte (their biases near 2^30 kept their layers \
             off the one-multiply requantization)",
            r.settled
        );
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
