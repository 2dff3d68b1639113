//! IDX data sets (the MNIST file format), gzipped or raw, with the checks a user needs when a
//! file is truncated, mislabelled or not IDX at all.

pub mod boxes;
pub mod canvas;
pub mod metrics;
pub mod shapes;
pub mod source;

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an IDX file ({why})")]
    Format { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Png { path: PathBuf, why: String },
    #[error("{path}: truncated: header promises {expected} data bytes, file has {found}")]
    Truncated {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    #[error("{path}: label {label} at index {index} is not below the class count {classes}")]
    BadLabel {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },
    #[error("data directory {0} has no images-idx3-ubyte[.gz] / labels-idx1-ubyte[.gz] pair and no class sub-folders of PNGs")]
    NotFound(PathBuf),
    #[error("split asks for {want} images but the data set has {have}: set --train-count and --test-count to fit (with your own --data, leaving both out tests on the last fifth)")]
    Split { want: usize, have: usize },
}

/// An IDX array of unsigned bytes: dimensions and data.
#[derive(Debug, Clone)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file of type u8 (0x08). Gzip is detected by its magic bytes, not the name.
pub fn read_idx(path: &Path) -> Result<Idx, DataError> {
    let io = |source| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|e| match e {
        ParseError::Format(why) => DataError::Format {
            path: path.to_owned(),
            why,
        },
        ParseError::Truncated { expected, found } => DataError::Truncated {
            path: path.to_owned(),
            expected,
            found,
        },
    })
}

enum ParseError {
    Format(String),
    Truncated { expected: usize, found: usize },
}

fn parse_idx(b: &[u8]) -> Result<Idx, ParseError> {
    if b.len() < 4 {
        return Err(ParseError::Format(format!(
            "{} bytes, shorter than the 4-byte magic",
            b.len()
        )));
    }
    if b[0] != 0 || b[1] != 0 {
        return Err(ParseError::Format(format!(
            "magic {:02x}{:02x}{:02x}{:02x} does not start with 0000",
            b[0], b[1], b[2], b[3]
        )));
    }
    if b[2] != 0x08 {
        return Err(ParseError::Format(format!(
            "element type {:#04x}; only unsigned bytes (0x08) are supported",
            b[2]
        )));
    }
    let nd = b[3] as usize;
    if nd == 0 || nd > 4 {
        return Err(ParseError::Format(format!("{nd} dimensions")));
    }
    let head = 4 + 4 * nd;
    if b.len() < head {
        return Err(ParseError::Format("header cut short".into()));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap_or([0; 4])) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| ParseError::Format("dimensions overflow".into()))?;
    let found = b.len() - head;
    if found < expected {
        return Err(ParseError::Truncated { expected, found });
    }
    if found > expected {
        return Err(ParseError::Format(format!(
            "{} bytes beyond the {expected} the header declares",
            found - expected
        )));
    }
    Ok(Idx {
        dims,
        data: b[head..].to_vec(),
    })
}

/// Images (grayscale or colour) with integer labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub h: usize,
    pub w: usize,
    /// Channels per pixel: 1 (grayscale) or 3 (RGB).
    pub c: usize,
    /// `len * h * w * c` bytes, row-major per image, channels interleaved (HWC).
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    /// One box per image for localization sets: `[x0, y0, x1, y1]` as fractions of the image
    /// size (pixel edges, so a full image is `[0, 0, 1, 1]`). Empty for classification sets.
    pub boxes: Vec<[f32; 4]>,
    /// Every object of each image for detection sets: `(label, box)`, box as in `boxes`.
    /// Empty for other sets.
    pub objects: Vec<Vec<(u8, [f32; 4])>>,
    /// The classes' names in label order (PNG class folders' names); empty when the data
    /// names none (IDX files, canvases).
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Bytes per image: `h * w * c`.
    pub fn image_len(&self) -> usize {
        self.h * self.w * self.c
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }
    /// Images `range` as a new data set.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        let n = self.image_len();
        Dataset {
            h: self.h,
            w: self.w,
            c: self.c,
            pixels: self.pixels[range.start * n..range.end * n].to_vec(),
            labels: self.labels[range.clone()].to_vec(),
            boxes: if self.boxes.is_empty() {
                Vec::new()
            } else {
                self.boxes[range.clone()].to_vec()
            },
            objects: if self.objects.is_empty() {
                Vec::new()
            } else {
                self.objects[range].to_vec()
            },
            class_names: self.class_names.clone(),
        }
    }
    /// Normalized input `[len(idx), h, w, c]` (NHWC): pixel / 255, so 0..=1. The int8 input
    /// then quantizes exactly with scale 1/255 and zero point -128.
    pub fn batch(&self, idx: &[usize]) -> (crate::nn::autograd::Tensor, Vec<usize>) {
        let n = self.image_len();
        // From the buffer cache, which the training step's graph gives it back to: a fresh
        // allocation every step was page-faulted in every step.
        let mut x = crate::nn::autograd::pooled(&[idx.len(), self.h, self.w, self.c]);
        let data = x.as_slice_mut().expect("standard layout");
        for (out, &i) in data.chunks_exact_mut(n.max(1)).zip(idx) {
            for (o, &p) in out.iter_mut().zip(self.image(i)) {
                *o = p as f32 / 255.0;
            }
        }
        (x, idx.iter().map(|&i| self.labels[i] as usize).collect())
    }
}

impl Dataset {
    /// Box targets `[len(idx), 4]` (only for localization sets).
    pub fn box_batch(&self, idx: &[usize]) -> crate::nn::autograd::Tensor {
        let data: Vec<f32> = idx.iter().flat_map(|&i| self.boxes[i]).collect();
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[idx.len(), 4]), data)
            .expect("box batch shape")
    }
}

/// Finds `images-idx3-ubyte[.gz]` and `labels-idx1-ubyte[.gz]` (or the `train-`/`t10k-`
/// prefixed MNIST names) in `dir`.
pub fn find_pair(dir: &Path) -> Result<(PathBuf, PathBuf), DataError> {
    for prefix in ["", "train-", "t10k-"] {
        for ext in [".gz", ""] {
            let i = dir.join(format!("{prefix}images-idx3-ubyte{ext}"));
            let l = dir.join(format!("{prefix}labels-idx1-ubyte{ext}"));
            if i.is_file() && l.is_file() {
                return Ok((i, l));
            }
        }
    }
    Err(DataError::NotFound(dir.to_owned()))
}

/// The backdrop of an image with transparency (what drawing apps export: ink on a transparent
/// canvas): the opposite of its ink, white under dark ink and black under light ink (the
/// ink's tone is the alpha-weighted mean of its gray), so black ink on a transparent canvas is
/// black on white rather than black on black. `None` for an opaque image; otherwise the
/// backdrop's level and the note of what was done.
fn backdrop(img: &image::DynamicImage) -> Option<(u32, String)> {
    if !img.color().has_alpha() {
        return None;
    }
    let la = img.to_luma_alpha8();
    let (mut ink, mut weight) = (0u64, 0u64);
    for p in la.pixels() {
        ink += p.0[0] as u64 * p.0[1] as u64;
        weight += p.0[1] as u64;
    }
    if weight == la.pixels().len() as u64 * 255 {
        return None; // fully opaque: nothing to composite
    }
    let dark_ink = weight == 0 || ink / weight < 128;
    let note = format!(
        "composited the transparent image on {} (its ink is {})",
        if dark_ink { "white" } else { "black" },
        if dark_ink { "dark" } else { "light" }
    );
    Some((if dark_ink { 255 } else { 0 }, note))
}

/// `v` at opacity `a` over the level `bg`.
fn over(v: u8, a: u8, bg: u32) -> u8 {
    let (v, a) = (v as u32, a as u32);
    ((v * a + bg * (255 - a) + 127) / 255) as u8
}

/// A decoded image as 8-bit gray, composited on its [`backdrop`] if it has transparency.
/// Returns the note of what was done, if anything.
pub fn to_gray(img: image::DynamicImage) -> (image::GrayImage, Option<String>) {
    let Some((bg, note)) = backdrop(&img) else {
        return (img.to_luma8(), None);
    };
    let la = img.to_luma_alpha8();
    let gray = image::GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let [v, a] = la.get_pixel(x, y).0;
        image::Luma([over(v, a, bg)])
    });
    (gray, Some(note))
}

/// A decoded image as 8-bit RGB, composited on its [`backdrop`] like [`to_gray`].
pub fn to_rgb(img: image::DynamicImage) -> (image::RgbImage, Option<String>) {
    let Some((bg, note)) = backdrop(&img) else {
        return (img.to_rgb8(), None);
    };
    let rgba = img.to_rgba8();
    let rgb = image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        image::Rgb([over(r, a, bg), over(g, a, bg), over(b, a, bg)])
    });
    (rgb, Some(note))
}

/// An image file's pixels with `channels` per pixel (1: gray, 3: RGB), its width and height.
pub fn read_pixels(path: &Path, channels: usize) -> Result<(Vec<u8>, usize, usize), DataError> {
    let img = image::open(path).map_err(|e| DataError::Png {
        path: path.to_owned(),
        why: format!("not a readable PNG ({e})"),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let px = match channels {
        1 => to_gray(img).0.into_raw(),
        3 => to_rgb(img).0.into_raw(),
        c => {
            return Err(DataError::Png {
                path: path.to_owned(),
                why: format!("a model input of {c} channels: PNG folders give 1 (gray) or 3 (RGB)"),
            })
        }
    };
    Ok((px, w, h))
}

/// A folder of PNGs, one sub-folder per class: sub-folders sorted by name are classes 0, 1, ...
/// (`0/`, `1/`, ... or `cat/`, `dog/`). Every PNG is read with `channels` per pixel (1: 8-bit
/// gray, 3: RGB) and must have the size of the first one. The images are shuffled with a fixed
/// seed, so a train/test split of the result mixes the classes. `None` when `dir` has no
/// sub-folder holding a PNG.
pub fn load_png_folders(
    dir: &Path,
    classes: usize,
    channels: usize,
) -> Option<Result<Dataset, DataError>> {
    Some(read_png_folders(dir, classes, channels)?.map(|(d, say)| {
        for line in say {
            eprintln!("{line}");
        }
        d
    }))
}

/// [`load_png_folders`] with the lines it says (the classes and their counts, a warning of
/// imbalance) returned rather than printed.
pub fn read_png_folders(
    dir: &Path,
    classes: usize,
    channels: usize,
) -> Option<Result<(Dataset, Vec<String>), DataError>> {
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    let png = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let mut files: Vec<(PathBuf, usize)> = Vec::new();
    // Files of the class folders that are not PNGs (hidden ones aside): skipped, and said.
    let mut other: Vec<PathBuf> = Vec::new();
    let hidden = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    };
    for (class, d) in subdirs.iter().enumerate() {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let (mut f, odd): (Vec<PathBuf>, Vec<PathBuf>) = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .partition(|p| png(p));
        other.extend(odd.into_iter().filter(|p| !hidden(p)));
        f.sort();
        files.extend(f.into_iter().map(|p| (p, class)));
    }
    if files.is_empty() {
        return None;
    }
    other.sort();
    Some((|| {
        let mut say = check_classes(dir, &subdirs, &files)?;
        if let Some(first) = other.first() {
            say.push(format!(
                "warning: skipped {} file(s) of the class folders that are not PNGs (the first: \
                 {}); convert them to PNG to train on them",
                other.len(),
                first.display()
            ));
        }
        let n_classes = subdirs.len();
        if n_classes > classes {
            return Err(DataError::Png {
                path: dir.to_owned(),
                why: format!("{n_classes} class folders but the model has {classes} classes"),
            });
        }
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.shuffle(&mut <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5));
        let (mut h, mut w) = (0, 0);
        let mut pixels = Vec::new();
        let mut labels = Vec::with_capacity(files.len());
        for &k in &order {
            let (path, class) = &files[k];
            let (px, iw, ih) = read_pixels(path, channels)?;
            if pixels.is_empty() {
                (h, w) = (ih, iw);
            } else if (ih, iw) != (h, w) {
                return Err(DataError::Png {
                    path: path.clone(),
                    why: format!("{iw}x{ih} pixels, but the other images are {w}x{h}"),
                });
            }
            pixels.extend_from_slice(&px);
            labels.push(*class as u8);
        }
        let d = Dataset {
            h,
            w,
            c: channels,
            pixels,
            labels,
            boxes: Vec::new(),
            objects: Vec::new(),
            class_names: subdirs.iter().map(|d| folder_name(d)).collect(),
        };
        Ok((d, say))
    })())
}

/// A class folder's name (the class's name).
fn folder_name(d: &Path) -> String {
    d.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The class folders of a PNG data set against what makes a classifier: two or more, none
/// empty (each sub-folder is a class: an empty one would be a class nothing teaches). Returns
/// the lines to say once the images are read: the classes with their counts, and a warning
/// when the largest class holds more than four times the smallest.
fn check_classes(
    dir: &Path,
    subdirs: &[PathBuf],
    files: &[(PathBuf, usize)],
) -> Result<Vec<String>, DataError> {
    let mut counts = vec![0usize; subdirs.len()];
    for &(_, class) in files {
        counts[class] += 1;
    }
    if let Some(empty) = counts.iter().position(|&n| n == 0) {
        return Err(DataError::Png {
            path: subdirs[empty].clone(),
            why: "this class folder holds no PNG (every sub-folder is a class): add its images or \
                  remove it"
                .into(),
        });
    }
    if subdirs.len() < 2 {
        return Err(DataError::Png {
            path: dir.to_owned(),
            why: format!(
                "one class folder ({}): a classifier needs two or more, one sub-folder of PNGs \
                 per class",
                folder_name(&subdirs[0])
            ),
        });
    }
    let list: Vec<String> = subdirs
        .iter()
        .zip(&counts)
        .map(|(d, n)| format!("{} {n}", folder_name(d)))
        .collect();
    let mut say = vec![format!(
        "{}: {} classes (images): {}",
        dir.display(),
        subdirs.len(),
        list.join(", ")
    )];
    let (lo, hi) = (counts.iter().min(), counts.iter().max());
    if let (Some(&lo), Some(&hi)) = (lo, hi) {
        if hi > 4 * lo {
            say.push(format!(
                "warning: the classes are imbalanced ({hi} images against {lo}): a model can \
                 score well by favouring the large ones; balance the folders or read the \
                 confusion matrix, not only the accuracy"
            ));
        }
    }
    Ok(say)
}

/// Loads an image/label IDX pair and checks they agree.
pub fn load_pair(images: &Path, labels: &Path, classes: usize) -> Result<Dataset, DataError> {
    let im = read_idx(images)?;
    let lb = read_idx(labels)?;
    if im.dims.len() != 3 {
        return Err(DataError::Format {
            path: images.to_owned(),
            why: format!("images need 3 dimensions, found {}", im.dims.len()),
        });
    }
    if lb.dims.len() != 1 {
        return Err(DataError::Format {
            path: labels.to_owned(),
            why: format!("labels need 1 dimension, found {}", lb.dims.len()),
        });
    }
    if im.dims[0] != lb.dims[0] {
        return Err(DataError::CountMismatch {
            images: images.to_owned(),
            labels: labels.to_owned(),
            n_images: im.dims[0],
            n_labels: lb.dims[0],
        });
    }
    if let Some((index, &label)) = lb
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(DataError::BadLabel {
            path: labels.to_owned(),
            index,
            label,
            classes,
        });
    }
    Ok(Dataset {
        h: im.dims[1],
        w: im.dims[2],
        c: 1,
        pixels: im.data,
        labels: lb.data,
        boxes: Vec::new(),
        objects: Vec::new(),
        class_names: Vec::new(),
    })
}

/// The bundled data directory: `./data/mnist10k` if present, else the copy in the repository.
pub fn default_data_dir() -> PathBuf {
    let local = PathBuf::from("data/mnist10k");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist10k")
    }
}

/// Train/test split: first `train` images, then the last `test` images.
pub fn split(all: &Dataset, train: usize, test: usize) -> Result<(Dataset, Dataset), DataError> {
    if train + test > all.len() {
        return Err(DataError::Split {
            want: train + test,
            have: all.len(),
        });
    }
    Ok((all.slice(0..train), all.slice(all.len() - test..all.len())))
}

/// A seeded permutation of `0..n`.
pub fn shuffled(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(rng);
    v
}

#[cfg(test)]
mod tests {
    /// Issue 33, 6: black ink on a transparent canvas (as drawing apps export it) read as all
    /// black; it is now black on white, light ink goes on black, and an opaque image is as
    /// it was.
    #[test]
    fn transparent_images_composite_on_the_background_their_ink_implies() {
        use image::{DynamicImage, Rgba, RgbaImage};
        let draw = |ink: u8| {
            let mut im = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 0]));
            im.put_pixel(1, 1, Rgba([ink, ink, ink, 255]));
            im.put_pixel(2, 1, Rgba([ink, ink, ink, 128]));
            DynamicImage::ImageRgba8(im)
        };
        let (g, note) = to_gray(draw(0));
        assert_eq!((g.get_pixel(0, 0).0[0], g.get_pixel(1, 1).0[0]), (255, 0));
        assert_eq!(g.get_pixel(2, 1).0[0], 127); // half ink, half white
        assert!(note.unwrap().contains("on white"));
        let (g, note) = to_gray(draw(255));
        assert_eq!((g.get_pixel(0, 0).0[0], g.get_pixel(1, 1).0[0]), (0, 255));
        assert!(note.unwrap().contains("on black"));
        let opaque = DynamicImage::ImageRgba8(RgbaImage::from_pixel(2, 2, Rgba([9, 9, 9, 255])));
        let (g, note) = to_gray(opaque);
        assert_eq!((g.get_pixel(0, 0).0[0], note), (9, None));
        // In colour: dark red ink on a transparent canvas is dark red on white.
        let mut red = RgbaImage::from_pixel(2, 1, Rgba([0, 0, 0, 0]));
        red.put_pixel(1, 0, Rgba([120, 0, 0, 255]));
        let (c, note) = to_rgb(DynamicImage::ImageRgba8(red));
        assert_eq!(
            (c.get_pixel(0, 0).0, c.get_pixel(1, 0).0),
            ([255; 3], [120, 0, 0])
        );
        assert!(note.unwrap().contains("on white"));
    }

    /// PNG class folders read with the architecture's channel count: RGB keeps the colours
    /// interleaved per pixel, gray is one byte a pixel, and other counts are refused.
    #[test]
    fn png_folders_read_gray_or_rgb() {
        let dir = std::env::temp_dir().join(format!("trainer-rgb-{}", std::process::id()));
        for class in ["a", "b"] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            let px = image::RgbImage::from_fn(2, 1, |x, _| image::Rgb([10 * x as u8 + 1, 2, 3]));
            px.save(dir.join(class).join("0.png")).unwrap();
        }
        let rgb = load_png_folders(&dir, 2, 3).unwrap().unwrap();
        assert_eq!((rgb.h, rgb.w, rgb.c, rgb.image_len()), (1, 2, 3, 6));
        assert_eq!(rgb.image(0), &[1, 2, 3, 11, 2, 3]);
        assert_eq!(rgb.batch(&[0]).0.shape(), &[1, 1, 2, 3]);
        let gray = load_png_folders(&dir, 2, 1).unwrap().unwrap();
        assert_eq!((gray.c, gray.image(0).len()), (1, 2));
        let e = load_png_folders(&dir, 2, 2)
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 channels"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        b
    }

    fn write(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("trainer-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Regression: a batch was a fresh allocation, so every training step page-faulted its
    /// input in again (4 % of a ref-cnn step in kernel time). It now takes the buffer the
    /// last step's graph gave back.
    #[test]
    fn batches_reuse_the_buffer_a_dropped_graph_gave_back() {
        let ds = Dataset {
            h: 28,
            w: 28,
            c: 1,
            pixels: (0..64 * 784).map(|i| (i % 251) as u8).collect(),
            labels: vec![3; 64],
            boxes: vec![],
            objects: vec![],
            class_names: Vec::new(),
        };
        let idx: Vec<usize> = (0..64).rev().collect();
        crate::nn::autograd::release_cached_buffers();
        let (x, y) = ds.batch(&idx);
        assert_eq!(x.shape(), &[64, 28, 28, 1]);
        assert_eq!(y, vec![3; 64]);
        assert_eq!(x[[0, 0, 1, 0]], ds.image(63)[1] as f32 / 255.0);
        let first = x.as_ptr();
        let mut g = crate::nn::autograd::Graph::new();
        g.leaf(x, false);
        drop(g);
        let (again, _) = ds.batch(&idx);
        assert_eq!(
            again.as_ptr(),
            first,
            "the batch did not reuse the cached buffer"
        );
        assert_eq!(again[[63, 27, 27, 0]], ds.image(0)[783] as f32 / 255.0);
        crate::nn::autograd::release_cached_buffers();
    }

    #[test]
    fn reads_raw_and_gzip() {
        let raw = idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let p = write("raw.idx", &raw);
        assert_eq!(read_idx(&p).unwrap().data, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let p = write("gz.idx.gz", &gz.finish().unwrap());
        assert_eq!(read_idx(&p).unwrap().dims, vec![2, 2, 2]);
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        let p = write("trunc.idx", &idx(&[2, 2, 2], &[1, 2, 3]));
        let e = read_idx(&p).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("promises 8"), "{e}");
        let p = write("magic.idx", &[1, 2, 3, 4, 5]);
        assert!(read_idx(&p)
            .unwrap_err()
            .to_string()
            .contains("not an IDX file"));
        let p = write("float.idx", &[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(read_idx(&p)
            .unwrap_err()
            .to_string()
            .contains("element type"));
        let e = read_idx(Path::new("/nonexistent/x.idx"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read /nonexistent/x.idx"), "{e}");
        let im = write("im.idx", &idx(&[2, 1, 1], &[0, 0]));
        let lb = write("lb.idx", &idx(&[3], &[0, 1, 2]));
        assert!(matches!(
            load_pair(&im, &lb, 10),
            Err(DataError::CountMismatch { .. })
        ));
        let lb = write("lb2.idx", &idx(&[2], &[0, 11]));
        assert!(matches!(
            load_pair(&im, &lb, 10),
            Err(DataError::BadLabel {
                index: 1,
                label: 11,
                ..
            })
        ));
    }

    #[test]
    fn bundled_data_loads_and_splits() {
        let (i, l) = find_pair(&default_data_dir()).unwrap();
        let all = load_pair(&i, &l, 10).unwrap();
        assert_eq!((all.len(), all.h, all.w), (10_000, 28, 28));
        let (tr, te) = split(&all, 8000, 2000).unwrap();
        assert_eq!((tr.len(), te.len()), (8000, 2000));
        assert_eq!(te.image(0), all.image(8000));
    }
}
