//! Small shared helpers: progress bars and a thread pool of a given size.

use indicatif::{ProgressBar, ProgressStyle};

/// Every long step's bar: where it is, the time it has taken and the time it still needs.
const BAR_TEMPLATE: &str =
    "{prefix:>10} [{bar:30.cyan/blue}] {pos:>4}/{len:4} {elapsed:>3} elapsed, ETA {eta:>3} {msg}";

pub(crate) fn bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// Runs `f` on a rayon pool of `threads` workers.
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()?;
    Ok(pool.install(f))
}

#[cfg(test)]
mod tests {
    /// Issue 33: epoch bars had no ETA. The template parses and shows both times.
    #[test]
    fn bars_show_elapsed_and_eta() {
        assert!(indicatif::ProgressStyle::with_template(super::BAR_TEMPLATE).is_ok());
        assert!(super::BAR_TEMPLATE.contains("{eta") && super::BAR_TEMPLATE.contains("{elapsed"));
    }
}
