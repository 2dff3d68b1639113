//! `trainer proposals`: selective search on the detection test canvases, recall at IoU 0.5
//! against the number of proposals per image, printed.

use crate::commands::data::DataArgs;
use clap::Args;

/// Proposal counts at which recall is reported.
pub const RECALL_COUNTS: [usize; 5] = [10, 25, 50, 100, 200];

#[derive(Args, Clone, Debug)]
pub struct ProposalsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Canvas side in pixels (the grid detector's input).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

/// `trainer proposals`: the recall table.
pub fn run(a: &ProposalsArgs) -> anyhow::Result<()> {
    let (_, test) = crate::data::source::detection_test_set(&a.data.source(), a.size)?;
    let t = std::time::Instant::now();
    let (curve, mean) = crate::detect::proposals::recall_curve(&test, &RECALL_COUNTS);
    let ms = t.elapsed().as_secs_f32() * 1e3 / test.len().max(1) as f32;
    let truths: usize = test.objects.iter().map(|o| o.len()).sum();
    println!(
        "selective search on {} test canvases ({truths} digits): recall at IoU 0.5",
        test.len()
    );
    println!("{:>10} {:>8}", "proposals", "recall");
    for (n, r) in curve {
        println!("{n:>10} {r:>8.3}");
    }
    println!(
        "{mean:.1} proposals per image at most {}; {ms:.1} ms per image (wall, all threads)",
        RECALL_COUNTS[RECALL_COUNTS.len() - 1]
    );
    Ok(())
}
