//! Boxes given by the user, for training and evaluating localization and detection models on
//! their own images.
//!
//! Format: a JSON file (e.g. `boxes.json` next to the IDX pair) holding one list per image, in
//! image order, of objects with a class and a box in **pixels** `[x0, y0, x1, y1]` (x0 < x1,
//! y0 < y1, inside the image; ends exclusive):
//!
//! ```json
//! [
//!   [{"class": 3, "box": [4, 6, 20, 27]}],
//!   [{"class": 1, "box": [30, 2, 41, 22]}, {"class": 7, "box": [2, 30, 19, 50]}]
//! ]
//! ```
//! With `--boxes FILE`, the IDX images and these boxes replace the generated canvases.

use crate::data::Dataset;
use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Object {
    class: u8,
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

/// Attaches the boxes in `path` to `images` (whose labels become each image's first class).
pub fn attach_boxes(images: Dataset, path: &Path, classes: usize) -> anyhow::Result<Dataset> {
    attach_boxes_for(images, path, classes, false)
}

/// [`attach_boxes`]; `single` (a single-object localizer) requires exactly one object per
/// image: an empty list would train the image as class 0 with the box [0, 0, 0, 0].
pub fn attach_boxes_for(
    mut images: Dataset,
    path: &Path,
    classes: usize,
    single: bool,
) -> anyhow::Result<Dataset> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read boxes file {}", path.display()))?;
    let lists: Vec<Vec<Object>> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a box list (see `trainer::data::boxes` docs)",
            path.display()
        )
    })?;
    if lists.len() != images.len() {
        bail!(
            "{}: {} box lists for {} images",
            path.display(),
            lists.len(),
            images.len()
        );
    }
    let (w, h) = (images.w as f32, images.h as f32);
    let mut objects = Vec::with_capacity(lists.len());
    for (i, list) in lists.into_iter().enumerate() {
        if single && list.len() != 1 {
            bail!(
                "{}: image {i} has {} objects; a single-object localizer needs exactly one per \
                 image (a grid detector takes any number)",
                path.display(),
                list.len()
            );
        }
        let mut objs = Vec::with_capacity(list.len());
        for (j, o) in list.into_iter().enumerate() {
            let [x0, y0, x1, y1] = o.bbox;
            let inside = 0.0 <= x0 && x0 < x1 && x1 <= w && 0.0 <= y0 && y0 < y1 && y1 <= h;
            if !inside || !o.bbox.iter().all(|v| v.is_finite()) {
                bail!("{}: image {i}, object {j}: box {:?} is not inside the {}x{} image with x0 < x1, y0 < y1", path.display(), o.bbox, images.w, images.h);
            }
            if o.class as usize >= classes {
                bail!(
                    "{}: image {i}, object {j}: class {} is not below {classes}",
                    path.display(),
                    o.class
                );
            }
            objs.push((o.class, [x0 / w, y0 / h, x1 / w, y1 / h]));
        }
        objects.push(objs);
    }
    images.labels = objects
        .iter()
        .map(|o| o.first().map_or(0, |f| f.0))
        .collect();
    images.boxes = objects
        .iter()
        .map(|o| o.first().map_or([0.0; 4], |f| f.1))
        .collect();
    images.objects = objects;
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize) -> Dataset {
        Dataset {
            h: 40,
            w: 40,
            c: 1,
            pixels: vec![0; n * 1600],
            labels: vec![0; n],
            boxes: Vec::new(),
            objects: Vec::new(),
            class_names: Vec::new(),
        }
    }

    fn write(text: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("boxes-{}-{}.json", std::process::id(), text.len()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_boxes_and_rejects_bad_ones() {
        let p = write(
            r#"[[{"class": 3, "box": [4, 6, 20, 26]}], [{"class": 1, "box": [0, 0, 40, 40]}, {"class": 2, "box": [1, 1, 2, 2]}]]"#,
        );
        let d = attach_boxes(images(2), &p, 10).unwrap();
        assert_eq!(d.labels, vec![3, 1]);
        assert_eq!(d.boxes[0], [0.1, 0.15, 0.5, 0.65]);
        assert_eq!(d.objects[1].len(), 2);
        let e = attach_boxes(images(3), &p, 10).unwrap_err().to_string();
        assert!(e.contains("2 box lists for 3 images"), "{e}");
        let p = write(r#"[[{"class": 3, "box": [4, 6, 50, 26]}]]"#);
        let e = attach_boxes(images(1), &p, 10).unwrap_err().to_string();
        assert!(
            e.contains("image 0, object 0") && e.contains("not inside"),
            "{e}"
        );
        let p = write(r#"[[{"class": 12, "box": [4, 6, 10, 26]}]]"#);
        assert!(attach_boxes(images(1), &p, 10)
            .unwrap_err()
            .to_string()
            .contains("class 12"));
    }
}
