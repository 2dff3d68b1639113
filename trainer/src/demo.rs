//! The main job in one command (filled in below).

#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {}

pub fn run(_a: &DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo: not yet implemented")
}
