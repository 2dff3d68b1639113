//! Where a command's images come from: the bundled or a given MNIST-format set, PNG class
//! folders, or the detection canvases, with the seeds and counts every command shares.

use crate::data::{default_data_dir, find_pair, load_pair, split, Dataset};
use crate::nn::arch::ArchSpec;
use anyhow::bail;
use std::path::{Path, PathBuf};

/// The split of the bundled data and the canvases per training digit: the one place these
/// defaults live (`DataSource::default` and the command-line defaults read them).
pub const TRAIN_COUNT: usize = 8000;
pub const TEST_COUNT: usize = 2000;
pub const CANVAS_COPIES: usize = 3;
/// Training canvases of R-CNN (its command's default and `compare`'s).
pub const RCNN_CANVASES: usize = 3000;

/// Where the data comes from and how it is split (the command line's `--data`, `--train-count`,
/// `--test-count`, `--boxes` and `--canvas-copies`, see `commands::data::DataArgs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSource {
    /// Directory with images-idx3-ubyte[.gz] and labels-idx1-ubyte[.gz], or with one sub-folder
    /// of PNGs per class (sorted names are classes 0, 1, ...; read as gray or RGB as the
    /// architecture's input asks). Default: the bundled mnist10k.
    pub data: Option<PathBuf>,
    /// First N images are the training split (`None`: see [`DataSource::split_counts`]).
    pub train_count: Option<usize>,
    /// Last N images are the test split (`None`: see [`DataSource::split_counts`]).
    pub test_count: Option<usize>,
    /// Boxes for the images (JSON, see `trainer::data::boxes`): localization and detection models
    /// then train on these images instead of generated canvases.
    pub boxes: Option<PathBuf>,
    /// Localization/detection: training canvases per training digit (other scale and place).
    pub canvas_copies: usize,
}

impl Default for DataSource {
    /// The bundled data, 8,000 / 2,000 split, 3 training canvases per digit.
    fn default() -> Self {
        DataSource {
            data: None,
            train_count: Some(TRAIN_COUNT),
            test_count: Some(TEST_COUNT),
            boxes: None,
            canvas_copies: CANVAS_COPIES,
        }
    }
}

/// Seeds of the localization canvases: fixed, so every command sees the same test canvases.
pub const CANVAS_SEEDS: (u64, u64) = (1, 2);

/// Test canvases for localization models.
pub const CANVAS_TEST_COUNT: usize = 1000;

impl DataSource {
    /// The data an architecture trains on: the IDX images themselves, or for a localization
    /// model single-digit canvases built from them (train digits -> train canvases, test
    /// digits -> 1,000 test canvases).
    /// PNG class folders must be the architecture's classes (by name, when it names them).
    pub fn load_for(&self, arch: &ArchSpec) -> anyhow::Result<(Dataset, Dataset)> {
        self.load_for_with(arch, false)
    }

    /// [`Self::load_for`] for training a classifier: its head follows the class folders (how
    /// many, and their names), said on stderr when that changes the architecture's class count.
    /// Returns the architecture to train.
    pub fn load_for_training(
        &self,
        arch: &ArchSpec,
    ) -> anyhow::Result<(ArchSpec, Dataset, Dataset)> {
        let (train, test) = self.load_for_with(arch, true)?;
        if train.class_names.is_empty() || arch.boxes || arch.grid {
            // Labels that name no classes (IDX) must fit the architecture's head.
            let top = train.labels.iter().chain(&test.labels).max();
            if let Some(&l) = top.filter(|&&l| l as usize >= arch.classes) {
                bail!(
                    "the data has label {l}, but '{}' has {} classes: set `classes` (and the \
                     last layer's outputs) in an architecture file",
                    arch.name,
                    arch.classes
                );
            }
            return Ok((arch.clone(), train, test));
        }
        let named = arch.with_classes(&train.class_names)?;
        if named.classes != arch.classes {
            eprintln!(
                "classes: {} from the folders, so '{}' has {} outputs (its definition has {})",
                named.classes, arch.name, named.classes, arch.classes
            );
        }
        Ok((named, train, test))
    }

    fn load_for_with(&self, arch: &ArchSpec, adapt: bool) -> anyhow::Result<(Dataset, Dataset)> {
        if let (Some(b), false) = (&self.boxes, arch.boxes || arch.grid) {
            bail!(
                "--boxes {}: architecture '{}' is a classifier and takes no boxes (use loc-cnn, \
                 grid-det or an architecture with boxes or grid set)",
                b.display(),
                arch.name
            );
        }
        if let (Some(b), true) = (&self.boxes, arch.boxes || arch.grid) {
            let dir = self.data.clone().unwrap_or_else(default_data_dir);
            let (i, l) = find_pair(&dir)?;
            let all = crate::data::boxes::attach_boxes_for(
                load_pair(&i, &l, 256)?,
                b,
                arch.classes,
                arch.boxes && !arch.grid,
            )?;
            let (train, test) = self.split_counts(all.len(), false);
            return Ok(split(&all, train, test)?);
        }
        // A classifier's own data splits by its size; canvases keep the fixed counts.
        let auto = self.data.is_some() && !arch.boxes && !arch.grid;
        // Class folders may set a trained classifier's class count (u8 labels: 256 at most).
        let classes = if adapt && auto { 256 } else { arch.classes };
        let (train, test) = self.load_split(classes, arch.input[2], auto)?;
        if !adapt {
            same_classes(
                arch.class_names.iter().map(String::as_str),
                &train.class_names,
            )?;
        }
        let size = arch.input[0];
        if arch.grid {
            let tr = crate::data::canvas::multi_object(
                &train,
                self.canvas_copies.max(1) * train.len(),
                size,
                CANVAS_SEEDS.0,
            );
            let te = crate::data::canvas::multi_object(
                &test,
                CANVAS_TEST_COUNT.min(test.len()),
                size,
                CANVAS_SEEDS.1,
            );
            return Ok((tr, te));
        }
        if !arch.boxes {
            return Ok(fit_digits(self.data.is_none(), arch, train, test));
        }
        // Each training digit appears on three canvases (other scale and place): cheap augmentation.
        let tr = crate::data::canvas::single_object(
            &train,
            self.canvas_copies.max(1) * train.len(),
            size,
            CANVAS_SEEDS.0,
        );
        let te = crate::data::canvas::single_object(
            &test,
            CANVAS_TEST_COUNT.min(test.len()),
            size,
            CANVAS_SEEDS.1,
        );
        Ok((tr, te))
    }

    /// Grayscale images: [`Self::load_channels`] with one channel.
    pub fn load(&self, classes: usize) -> anyhow::Result<(Dataset, Dataset)> {
        self.load_channels(classes, 1)
    }

    /// The images split as set, with `channels` per pixel for PNG folders (1: gray, 3: RGB;
    /// IDX sets are gray).
    pub fn load_channels(
        &self,
        classes: usize,
        channels: usize,
    ) -> anyhow::Result<(Dataset, Dataset)> {
        self.load_split(classes, channels, self.data.is_some())
    }

    /// [`Self::load_channels`], the counts not given taken from the data's size with `auto`
    /// ([`Self::split_counts`]).
    fn load_split(
        &self,
        classes: usize,
        channels: usize,
        auto: bool,
    ) -> anyhow::Result<(Dataset, Dataset)> {
        let dir = self.data.clone().unwrap_or_else(default_data_dir);
        if let Some(r) = self.load_train_test(&dir, classes, channels) {
            return r;
        }
        let all = match find_pair(&dir) {
            Ok((i, l)) => load_pair(&i, &l, classes)?,
            // No IDX pair: a folder of class sub-folders of PNGs, if that is what it holds.
            Err(e) => match crate::data::load_png_folders(&dir, classes, channels) {
                Some(r) => r?,
                None => return Err(e.into()),
            },
        };
        let (train, test) = self.split_counts(all.len(), auto);
        if auto && (self.train_count, self.test_count) == (None, None) {
            eprintln!(
                "split: {train} training / {test} test images (the last fifth for testing; \
                 --train-count and --test-count set it)"
            );
        }
        Ok(split(&all, train, test)?)
    }

    /// A `train/` + `test/` layout (each with one sub-folder of PNGs per class, the same class
    /// names in both): the folders are the split, said on stderr; counts given take the first
    /// images of each. `None` when `dir` is not laid out so.
    fn load_train_test(
        &self,
        dir: &Path,
        classes: usize,
        channels: usize,
    ) -> Option<anyhow::Result<(Dataset, Dataset)>> {
        let (tr, te) = (dir.join("train"), dir.join("test"));
        if !tr.is_dir() || !te.is_dir() {
            return None;
        }
        let load = |d: &Path| -> anyhow::Result<(Dataset, Vec<String>)> {
            match crate::data::read_png_folders(d, classes, channels) {
                Some(r) => Ok(r?),
                None => bail!("{}: no class sub-folders of PNGs", d.display()),
            }
        };
        Some((|| {
            let ((train, say_train), (test, say_test)) = (load(&tr)?, load(&te)?);
            if train.class_names != test.class_names {
                bail!(
                    "{}: train/ has classes ({}) and test/ ({}); both need the same class folders",
                    dir.display(),
                    train.class_names.join(", "),
                    test.class_names.join(", ")
                );
            }
            if (train.h, train.w) != (test.h, test.w) {
                bail!(
                    "{}: train/ images are {}x{}, test/ images {}x{}",
                    dir.display(),
                    train.w,
                    train.h,
                    test.w,
                    test.h
                );
            }
            for line in say_train.iter().chain(&say_test) {
                eprintln!("{line}");
            }
            let take = |d: Dataset, n: Option<usize>, flag: &str| match n {
                Some(n) if n > d.len() => bail!("{flag} {n}: that folder holds {} images", d.len()),
                Some(n) => Ok(d.slice(0..n)),
                None => Ok(d),
            };
            let train = take(train, self.train_count, "--train-count")?;
            let test = take(test, self.test_count, "--test-count")?;
            if (self.train_count, self.test_count) == (None, None) {
                eprintln!(
                    "split: {} training / {} test images (the train/ and test/ folders)",
                    train.len(),
                    test.len()
                );
            }
            Ok((train, test))
        })())
    }

    /// The training and test counts for a set of `total` images: the counts given; for a
    /// count not given, with `from_data` (a classifier's own `--data`) the rest of the images,
    /// or the last fifth (at least one image) for testing when neither is given; otherwise
    /// the bundled data's 8,000 / 2,000.
    pub fn split_counts(&self, total: usize, from_data: bool) -> (usize, usize) {
        let rest = |n: usize| total.saturating_sub(n);
        match (self.train_count, self.test_count, from_data) {
            (Some(train), Some(test), _) => (train, test),
            (Some(train), None, true) => (train, rest(train)),
            (None, Some(test), true) => (rest(test), test),
            (None, None, true) => {
                let test = (total / 5).max(1).min(total);
                (rest(test), test)
            }
            (train, test, false) => (train.unwrap_or(TRAIN_COUNT), test.unwrap_or(TEST_COUNT)),
        }
    }
}

/// A model's class names (`model`) against a data set's (`data`, its class folders'): the same
/// names in the same order, or either side naming none (numbered classes, an IDX set).
pub fn same_classes<'a>(
    model: impl Iterator<Item = &'a str> + Clone,
    data: &[String],
) -> anyhow::Result<()> {
    let named = model.clone().next().is_some() && !data.is_empty();
    if named && !model.clone().eq(data.iter().map(String::as_str)) {
        bail!(
            "the data's classes ({}) are not the model's ({})",
            data.join(", "),
            model.collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The bundled digits (`bundled`: no `--data`) fitted to a classifier of another input size
/// or channel count: resized and, for three channels, gray in each, said on stderr. Other
/// data is returned as it is (a size that differs is refused where the model meets it).
fn fit_digits(bundled: bool, arch: &ArchSpec, train: Dataset, test: Dataset) -> (Dataset, Dataset) {
    let [h, w, c] = arch.input;
    if !bundled || (train.h, train.w, train.c) == (h, w, c) || !matches!(c, 1 | 3) {
        return (train, test);
    }
    let resized = if (train.h, train.w) == (h, w) {
        String::new()
    } else {
        format!(" resized to {h}x{w}")
    };
    let rgb = if c == 3 {
        ", gray in each of R, G, B,"
    } else {
        ""
    };
    eprintln!(
        "data: the bundled {}x{} digits{resized}{rgb} for {}'s input",
        train.h, train.w, arch.name
    );
    (
        crate::data::canvas::resized(&train, h, w, c),
        crate::data::canvas::resized(&test, h, w, c),
    )
}

/// The detection test set every detector is scored on (the grid detector's, `detect`'s): 1,000
/// multi-digit canvases from the test digits. Returns `(training digits, test canvases)`.
pub fn detection_test_set(data: &DataSource, size: usize) -> anyhow::Result<(Dataset, Dataset)> {
    let (train_digits, test_digits) = data.load(10)?;
    let test = crate::data::canvas::multi_object(
        &test_digits,
        CANVAS_TEST_COUNT.min(test_digits.len()),
        size,
        CANVAS_SEEDS.1,
    );
    Ok((train_digits, test))
}

/// "the bundled mnist10k", or the `--data` directory.
pub(crate) fn data_name(dir: Option<&Path>) -> String {
    dir.map_or("the bundled mnist10k".into(), |p| p.display().to_string())
}

/// Where a checkpoint's training data came from, so `export` and `eval` can use the same data
/// by default and `export` can refuse to calibrate on other images.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrainedOn {
    /// `--data` (None: the bundled mnist10k).
    pub data: Option<std::path::PathBuf>,
    pub train_count: usize,
    pub test_count: usize,
    pub boxes: Option<std::path::PathBuf>,
    pub canvas_copies: usize,
    /// FNV-1a 64 of the training split's pixels and labels, as trained on.
    pub train_fingerprint: u64,
}

/// FNV-1a 64 of a data set's pixels and labels (a content check, not a security hash).
pub fn fingerprint(d: &crate::data::Dataset) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in d.pixels.iter().chain(&d.labels) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::DataSource;

    /// The counts of a split: as given; of a classifier's own data, the rest of the images
    /// for the one not given, or the last fifth (at least one) for testing; otherwise the
    /// bundled data's 8,000 / 2,000.
    #[test]
    fn split_counts_fit_the_data() {
        let with = |train, test| DataSource {
            data: Some("d".into()),
            train_count: train,
            test_count: test,
            ..DataSource::default()
        };
        assert_eq!(with(Some(5), Some(6)).split_counts(100, true), (5, 6));
        assert_eq!(with(None, None).split_counts(600, true), (480, 120));
        assert_eq!(with(None, None).split_counts(3, true), (2, 1));
        assert_eq!(with(Some(50), None).split_counts(60, true), (50, 10));
        assert_eq!(with(None, Some(7)).split_counts(60, true), (53, 7));
        assert_eq!(with(None, None).split_counts(600, false), (8000, 2000));
    }

    /// One check of a model's class names against the data's: equal, or one side naming
    /// none; other names or another order are refused, both lists said.
    #[test]
    fn class_names_must_match_the_models() {
        let data: Vec<String> = ["cat", "dog"].map(String::from).to_vec();
        assert!(super::same_classes(["cat", "dog"].into_iter(), &data).is_ok());
        assert!(super::same_classes([].into_iter(), &data).is_ok());
        assert!(super::same_classes(["cat", "dog"].into_iter(), &[]).is_ok());
        for model in [&["dog", "cat"][..], &["cat"], &["cat", "dog", "owl"]] {
            let e = super::same_classes(model.iter().copied(), &data).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("(cat, dog) are not the model's"), "{e}");
        }
    }
}
