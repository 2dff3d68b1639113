//! Reading boxes out of a model's int8 output, in integer arithmetic only, so the host and the
//! device decode the same bytes into the same boxes.
//!
//! Boxes are in **1/16 pixel** units of the model input (`BoxQ4`). The decoder turns a box
//! output byte `q` (in input pixels) into `round((q - zero_point) * scale * 16)` with one [`Requant`]
//! precomputed at load time: the same rounding as every kernel.

use crate::format::{Head, ModelDef};
use crate::quant::Requant;
use crate::Error;
use serde::{Deserialize, Serialize};

/// A box in 1/16-pixel units of the model input, `x0 <= x1`, `y0 <= y1`, clamped to the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BoxQ4 {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl BoxQ4 {
    /// Area in (1/16 px)^2.
    pub fn area(&self) -> i64 {
        (self.x1 - self.x0) as i64 * (self.y1 - self.y0) as i64
    }

    /// Intersection over union as an exact fraction `(intersection, union)`; compare two
    /// fractions by cross-multiplying to stay in integers.
    pub fn iou_fraction(&self, o: &BoxQ4) -> (i64, i64) {
        let iw = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0) as i64;
        let ih = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0) as i64;
        let inter = iw * ih;
        (inter, self.area() + o.area() - inter)
    }
}

/// One detected object: class, its int8 logit (the score) and its box. Serializable with
/// postcard for sending off the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Detection {
    pub class: u16,
    pub score: i8,
    pub bbox: BoxQ4,
}

/// Decodes a localizer's output; built once per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxDecoder {
    classes: usize,
    zero_point: i32,
    /// Output scale times 16: int8 steps to 1/16 pixels.
    to_px16: Requant,
    max_x: i32,
    max_y: i32,
}

impl BoxDecoder {
    /// `Ok(None)` for models without a box head.
    pub fn new(def: &ModelDef) -> Result<Option<BoxDecoder>, Error> {
        let Head::Localizer { classes } = def.head else {
            return Ok(None);
        };
        let q = def.output.quant;
        let bad = Error::BadDetectionHead {
            what: "output scale gives no box multiplier",
        };
        if !(q.scale.is_finite() && q.scale > 0.0) {
            return Err(bad);
        }
        let to_px16 = Requant::from_real(q.scale as f64 * 16.0).ok_or(bad)?;
        Ok(Some(BoxDecoder {
            classes: classes as usize,
            zero_point: q.zero_point,
            to_px16,
            max_x: def.input.shape.w as i32 * 16,
            max_y: def.input.shape.h as i32 * 16,
        }))
    }

    /// Class (first maximum of the logits), score and box of one output tensor.
    pub fn decode(&self, output: &[i8]) -> Detection {
        let logits = output.get(..self.classes).unwrap_or(&[]);
        let class = crate::quant::argmax(logits).unwrap_or(0);
        let score = logits.get(class).copied().unwrap_or(i8::MIN);
        let v = |k: usize| {
            output
                .get(self.classes + k)
                .map_or(0, |&q| q as i32 - self.zero_point)
        };
        let x = |k| self.to_px16.apply(v(k)).clamp(0, self.max_x);
        let y = |k| self.to_px16.apply(v(k)).clamp(0, self.max_y);
        let (x0, x1) = (x(0), x(2));
        let (y0, y1) = (y(1), y(3));
        Detection {
            class: class as u16,
            score,
            bbox: BoxQ4 {
                x0: x0.min(x1),
                y0: y0.min(y1),
                x1: x0.max(x1),
                y1: y0.max(y1),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_fraction_exact() {
        let a = BoxQ4 {
            x0: 0,
            y0: 0,
            x1: 32,
            y1: 16,
        };
        let b = BoxQ4 {
            x0: 16,
            y0: 0,
            x1: 48,
            y1: 16,
        };
        assert_eq!(a.iou_fraction(&b), (256, 768)); // 1/3
        assert_eq!(a.iou_fraction(&a), (512, 512));
    }
}
