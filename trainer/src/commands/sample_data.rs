//! `trainer sample-data`: an example PNG data set in the layout `train --data` reads.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct SampleDataArgs {
    /// The folder to create (it must not exist): `train/` and `test/` inside, each with the
    /// class folders `circle/`, `square/`, `triangle/` of gray PNGs.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images per class (the test split gets a quarter as many).
    #[arg(long, default_value_t = 200)]
    pub per_class: usize,
    /// Image side in pixels (28 fits ref-cnn; examples/arch/ has 32 and 64).
    #[arg(long, default_value_t = 28)]
    pub size: u32,
    /// Seed of the shapes' sizes, places and background noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `trainer sample-data`: writes the folders and says what is where.
pub fn run(a: &SampleDataArgs) -> anyhow::Result<()> {
    crate::data::shapes::write_shapes(&a.out, a.per_class, a.size, a.seed)?;
    println!(
        "wrote {}: train/ ({} per class) and test/ ({} per class) of {}x{} gray PNGs, classes {}",
        a.out.display(),
        a.per_class,
        (a.per_class / 4).max(1),
        a.size,
        a.size,
        crate::data::shapes::SHAPES.join(", ")
    );
    Ok(())
}
