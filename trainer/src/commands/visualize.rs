//! `trainer visualize`: filters, activations and saliency of a checkpoint as PNGs.

use crate::commands::data::DataArgs;
use crate::train::Checkpoint;
use anyhow::bail;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct VisualizeArgs {
    /// Checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Test image whose activation maps are drawn.
    #[arg(long, default_value_t = 0)]
    pub image: usize,
    /// Conv layer (index in the architecture) and channel for the top-images grid.
    #[arg(long, default_value_t = 0)]
    pub layer: usize,
    #[arg(long, default_value_t = 0)]
    pub channel: usize,
    /// Output directory (must exist).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// Writes `filters.png`, `activations.png` and `top-images.png` into `a.out`.
pub fn cmd_visualize(a: &VisualizeArgs) -> anyhow::Result<Vec<PathBuf>> {
    let mut ck = Checkpoint::load(&a.checkpoint)?;
    // The checkpoint's own data unless --data says otherwise (never the bundled digits in
    // place of a model's own images).
    let (_, test) = a
        .data
        .for_checkpoint(ck.trained_on.as_ref())
        .load_for(&ck.model.arch)?;
    if !a.out.is_dir() {
        bail!("output directory {} does not exist", a.out.display());
    }
    let files = [
        a.out.join("filters.png"),
        a.out.join("activations.png"),
        a.out.join("top-images.png"),
    ];
    crate::report::visualize::filters_png(&ck.model, &files[0])?;
    crate::report::visualize::activations_png(&mut ck.model, &test, a.image, &files[1])?;
    crate::report::visualize::top_images_png(&mut ck.model, &test, a.layer, a.channel, &files[2])?;
    Ok(files.to_vec())
}

/// `trainer visualize`: the PNGs written.
pub fn run(a: &VisualizeArgs) -> anyhow::Result<()> {
    for f in cmd_visualize(a)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}
