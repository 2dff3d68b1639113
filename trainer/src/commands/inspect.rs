//! `trainer inspect`: the per-layer table of a model blob (library call
//! `deploy::inspect::cmd_inspect`), printed.

use crate::deploy::inspect::cmd_inspect;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct InspectArgs {
    /// Model blob (what `export` wrote).
    pub model: PathBuf,
}

/// `trainer inspect`: the blob's table.
pub fn run(a: &InspectArgs) -> anyhow::Result<()> {
    print!("{}", cmd_inspect(&a.model)?);
    Ok(())
}
