//! The data options of every command that reads images (flattened into its arguments), and the
//! library's [`DataSource`] they stand for.

use crate::data::source::{DataSource, TrainedOn, CANVAS_COPIES, TEST_COUNT, TRAIN_COUNT};
use clap::Args;
use std::path::PathBuf;

/// Where the data comes from and how it is split.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Directory with images-idx3-ubyte[.gz] and labels-idx1-ubyte[.gz], or with one sub-folder
    /// of grayscale PNGs per class (sorted names are classes 0, 1, ...). Default: the bundled
    /// mnist10k.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// First N images are the training split. Default: 8,000 of the bundled data; of your
    /// --data, the images the test split leaves.
    #[arg(long)]
    pub train_count: Option<usize>,
    /// Last N images are the test split. Default: 2,000 of the bundled data; of your --data,
    /// the last fifth (or the images the training split leaves).
    #[arg(long)]
    pub test_count: Option<usize>,
    /// Boxes for the images (JSON, see `trainer::data::boxes`): localization and detection models
    /// then train on these images instead of generated canvases.
    #[arg(long)]
    pub boxes: Option<PathBuf>,
    /// Localization/detection: training canvases per training digit (other scale and place).
    #[arg(long, default_value_t = CANVAS_COPIES)]
    pub canvas_copies: usize,
}

impl DataArgs {
    /// The same data as the library's [`DataSource`] (what its loaders take).
    pub fn source(&self) -> DataSource {
        DataSource::from(self)
    }

    /// The data a command on a checkpoint uses: what the user passed with `--data`; else the
    /// data the checkpoint was trained on (its folder, or the bundled digits) with its split,
    /// the counts given on the command line overriding it; said on stderr when that is not
    /// the bundled data's default split.
    pub fn for_checkpoint(&self, trained_on: Option<&TrainedOn>) -> DataSource {
        let Some(t) = trained_on.filter(|_| self.data.is_none()) else {
            return self.source();
        };
        let src = DataSource {
            data: t.data.clone(),
            train_count: Some(self.train_count.unwrap_or(t.train_count)),
            test_count: Some(self.test_count.unwrap_or(t.test_count)),
            boxes: self.boxes.clone().or_else(|| t.boxes.clone()),
            canvas_copies: t.canvas_copies,
        };
        if src != DataSource::default() {
            eprintln!(
                "note: using the data the checkpoint was trained on: {} ({} / {} split; --data, \
                 --train-count and --test-count override)",
                crate::data::source::data_name(t.data.as_deref()),
                t.train_count,
                t.test_count
            );
        }
        src
    }
}

impl Default for DataArgs {
    /// [`DataSource::default`]: the bundled data, 8,000 / 2,000 split, 3 training canvases per
    /// digit.
    fn default() -> Self {
        DataSource::default().into()
    }
}

impl From<&DataArgs> for DataSource {
    fn from(a: &DataArgs) -> Self {
        // The bundled data's split is fixed; your own data's counts not given come from it.
        let bundled = a.data.is_none();
        DataSource {
            data: a.data.clone(),
            train_count: a.train_count.or(bundled.then_some(TRAIN_COUNT)),
            test_count: a.test_count.or(bundled.then_some(TEST_COUNT)),
            boxes: a.boxes.clone(),
            canvas_copies: a.canvas_copies,
        }
    }
}

impl From<DataSource> for DataArgs {
    fn from(s: DataSource) -> Self {
        DataArgs {
            data: s.data,
            train_count: s.train_count,
            test_count: s.test_count,
            boxes: s.boxes,
            canvas_copies: s.canvas_copies,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::data::DataArgs;
    use crate::data::source::DataSource;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        data: DataArgs,
    }

    /// The command line's defaults are the library's, and the conversion keeps every field.
    #[test]
    fn defaults_and_fields_carry_over() {
        let parsed = Cmd::try_parse_from(["x"]).unwrap().data;
        assert_eq!(parsed.source(), DataSource::default());
        assert_eq!(DataArgs::default().source(), DataSource::default());
        let s = DataSource {
            data: Some("d".into()),
            train_count: Some(5),
            test_count: Some(6),
            boxes: Some("b.json".into()),
            canvas_copies: 1,
        };
        assert_eq!(DataArgs::from(s.clone()).source(), s);
    }
}
