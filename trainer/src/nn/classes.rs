//! A classifier's classes: their names (checked by the device format's rule) and a head
//! resized to a data set's class folders.

use crate::nn::arch::{ArchError, ArchSpec, LayerSpec};

impl ArchSpec {
    /// Class names, if any, are one per class and each one the device format can hold (the
    /// runtime's rule, [`runtime::format::check_labels`]).
    pub(crate) fn check_class_names(&self) -> Result<(), ArchError> {
        if self.class_names.is_empty() {
            return Ok(());
        }
        let whole = |why: String| ArchError::Whole {
            arch: self.name.clone(),
            why,
        };
        if self.class_names.len() != self.classes {
            return Err(whole(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.classes
            )));
        }
        if let Some(bad) = self.class_names.iter().find(|n| n.contains('\n')) {
            return Err(whole(format!("class name {bad:?} holds a line break")));
        }
        let head = runtime::format::Head::Classifier {
            classes: self.classes.min(u16::MAX as usize) as u16,
        };
        runtime::format::check_labels(&runtime::writer::join_labels(&self.class_names), &head)
            .map_err(|e| whole(format!("{e} ({:?})", self.class_names)))
    }

    /// The architecture with its head resized to `names.len()` classes named `names` (a
    /// classifier's class folders): the last layer's outputs follow. Refused for box and grid
    /// heads and for a last layer that is not a linear layer or a convolution.
    pub fn with_classes(&self, names: &[String]) -> Result<ArchSpec, ArchError> {
        let mut a = self.clone();
        let whole = |why: &str| ArchError::Whole {
            arch: self.name.clone(),
            why: why.into(),
        };
        if names.len() != self.classes {
            if self.boxes || self.grid {
                return Err(whole("a box or grid head keeps its class count"));
            }
            match a.layers.last_mut() {
                Some(LayerSpec::Linear { out_features, .. }) => *out_features = names.len(),
                Some(LayerSpec::Conv2d { out_channels, .. }) => *out_channels = names.len(),
                _ => {
                    return Err(whole(
                        "its last layer is not a linear layer or a convolution: set `classes` \
                         and the head in an architecture file",
                    ))
                }
            }
            a.classes = names.len();
        }
        a.class_names = names.to_vec();
        a.validate()?;
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use crate::nn::arch::ArchSpec;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// The head follows the names' count, the names are kept; names the device format cannot
    /// hold and heads that cannot be resized are refused with the reason.
    #[test]
    fn heads_follow_the_class_folders() {
        let a = ArchSpec::ref_cnn()
            .with_classes(&names(&["cat", "dog", "owl"]))
            .unwrap();
        assert_eq!((a.classes, a.outputs()), (3, 3));
        assert_eq!(a.class_names, names(&["cat", "dog", "owl"]));
        let ten: Vec<String> = (0..10).map(|k| format!("digit {k}")).collect();
        let same = ArchSpec::ref_cnn().with_classes(&ten).unwrap();
        assert_eq!(same.layers, ArchSpec::ref_cnn().layers);
        for (bad, why) in [
            (names(&["a", ""]), "empty"),
            (names(&["a", "b\u{1b}[2J"]), "control character"),
            (names(&["a", "b\nc"]), "line break"),
        ] {
            let e = ArchSpec::ref_cnn()
                .with_classes(&bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
        let e = ArchSpec::loc_cnn()
            .with_classes(&names(&["a", "b"]))
            .unwrap_err();
        assert!(e.to_string().contains("keeps its class count"), "{e}");
        let mut odd = ArchSpec::ref_cnn();
        odd.class_names = names(&["a", "b"]);
        assert!(odd
            .validate()
            .unwrap_err()
            .to_string()
            .contains("2 class names for 10"));
    }
}
