//! Reading boxes out of a model's int8 output, in integer arithmetic only, so the host and the
//! device decode the same bytes into the same boxes.
//!
//! Boxes are in **1/16 pixel** units of the model input (`BoxQ4`). The decoder turns a box
//! output byte `q` (in input pixels) into `round((q - zero_point) * scale * 16)` with one [`Requant`]
//! precomputed at load time: the same rounding as every kernel.

use crate::format::{Head, ModelHeader};
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
    /// Area in (1/16 px)^2. Differences in 64 bits; a product beyond `i64` (sides near
    /// `2^32`, which no decoder makes) saturates rather than wraps or panics.
    pub fn area(&self) -> i64 {
        (self.x1 as i64 - self.x0 as i64).saturating_mul(self.y1 as i64 - self.y0 as i64)
    }

    /// Intersection over union as an exact fraction `(intersection, union)`; compare two
    /// fractions by cross-multiplying to stay in integers. Exact for boxes a decoder makes
    /// (inside an image of at most 65,535 px); saturating, never panicking, for any other.
    pub fn iou_fraction(&self, o: &BoxQ4) -> (i64, i64) {
        let iw = (self.x1.min(o.x1) as i64 - self.x0.max(o.x0) as i64).max(0);
        let ih = (self.y1.min(o.y1) as i64 - self.y0.max(o.y0) as i64).max(0);
        let inter = iw.saturating_mul(ih);
        // Never below the intersection (saturated sums could make it so).
        let union = self.area().saturating_add(o.area()).saturating_sub(inter);
        (inter, union.max(inter))
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
    pub fn new(def: &ModelHeader) -> Result<Option<BoxDecoder>, Error> {
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
        // A header that did not come through `Model` may hold any i32 here.
        if !(-128..=127).contains(&q.zero_point) {
            return Err(Error::BadDetectionHead {
                what: "output zero point outside int8",
            });
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

/// Most grid cells a detector may have (the candidate list is a fixed array of this size).
pub const MAX_CELLS: usize = 64;
/// Most detections a grid decoder returns.
pub const MAX_DETECTIONS: usize = 16;

/// The fixed-capacity list of detections of one image.
pub type Detections = heapless::Vec<Detection, MAX_DETECTIONS>;

/// Decodes a grid detector's output with integer arithmetic and fixed memory; built once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridDecoder {
    classes: usize,
    grid_w: usize,
    grid_h: usize,
    cell: i32,
    zero_point: i32,
    obj_threshold: i8,
    nms_iou_pct: i64,
    max_detections: usize,
    to_px16: Requant,
    max_x: i32,
    max_y: i32,
}

impl GridDecoder {
    /// `Ok(None)` for models without a grid head; an error if the head and output disagree.
    pub fn new(def: &ModelHeader) -> Result<Option<GridDecoder>, Error> {
        let Head::GridDetector {
            classes,
            cell,
            obj_threshold,
            nms_iou_pct,
            max_detections,
        } = def.head
        else {
            return Ok(None);
        };
        let out = def.output.shape;
        let bad = |what| Err(Error::BadDetectionHead { what });
        if out.c as usize != 5 + classes as usize || classes == 0 {
            return bad("grid channels != 5 + classes");
        }
        if cell == 0
            || out.h as usize * cell as usize != def.input.shape.h as usize
            || out.w as usize * cell as usize != def.input.shape.w as usize
        {
            return bad("grid cells do not tile the input");
        }
        if out.h as usize * out.w as usize > MAX_CELLS {
            return bad("more than 64 grid cells");
        }
        if max_detections == 0 || max_detections as usize > MAX_DETECTIONS || nms_iou_pct > 100 {
            return bad("max_detections must be 1..=16 and nms_iou_pct <= 100");
        }
        let q = def.output.quant;
        if !(q.scale.is_finite() && q.scale > 0.0) {
            return bad("output scale");
        }
        if !(-128..=127).contains(&q.zero_point) {
            return bad("output zero point outside int8");
        }
        let to_px16 = Requant::from_real(q.scale as f64 * 16.0).ok_or(Error::BadDetectionHead {
            what: "output scale gives no box multiplier",
        })?;
        Ok(Some(GridDecoder {
            classes: classes as usize,
            grid_w: out.w as usize,
            grid_h: out.h as usize,
            cell: cell as i32,
            zero_point: q.zero_point,
            obj_threshold,
            nms_iou_pct: nms_iou_pct as i64,
            max_detections: max_detections as usize,
            to_px16,
            max_x: def.input.shape.w as i32 * 16,
            max_y: def.input.shape.h as i32 * 16,
        }))
    }

    /// Detections of one output tensor, best first.
    pub fn decode(&self, output: &[i8]) -> Detections {
        let ch = 5 + self.classes;
        let cell_bytes = |k: usize| output.get(k * ch..(k + 1) * ch).unwrap_or_default();
        let score = |k: u8| cell_bytes(k as usize).first().copied().unwrap_or(i8::MIN);
        // Candidate cells by index (MAX_CELLS <= 256): a byte each, the boxes are decoded
        // only for the cells NMS looks at.
        const _: () = assert!(MAX_CELLS <= 256);
        let mut order = [0u8; MAX_CELLS];
        let mut n = 0;
        for (k, r) in output
            .chunks_exact(ch)
            .take((self.grid_w * self.grid_h).min(MAX_CELLS))
            .enumerate()
        {
            if r[0] >= self.obj_threshold {
                order[n] = k as u8;
                n += 1;
            }
        }
        let order = &mut order[..n];
        // Stable insertion sort by score, best first: ties keep cell order on every target.
        for i in 1..order.len() {
            let mut j = i;
            while j > 0 && score(order[j - 1]) < score(order[j]) {
                order.swap(j - 1, j);
                j -= 1;
            }
        }
        let mut kept = Detections::new();
        for &k in order.iter() {
            if kept.len() == self.max_detections {
                break;
            }
            let c = self.cell(k as usize, cell_bytes(k as usize));
            // IoU > t/100  <=>  100 * intersection > t * union: integers only.
            let overlaps = kept.iter().any(|k| {
                let (inter, union) = k.bbox.iou_fraction(&c.bbox);
                100 * inter > self.nms_iou_pct * union
            });
            if !overlaps {
                let _ = kept.push(c);
            }
        }
        kept
    }

    /// The detection of cell `k`, whose `5 + classes` output bytes are `r`.
    fn cell(&self, k: usize, r: &[i8]) -> Detection {
        let at = |i: usize| r.get(i).copied().unwrap_or(0);
        // 64-bit box arithmetic: with a large output scale a requantized offset is near
        // i32's range, and sums of two of them would overflow 32 bits.
        let px = |q: i8| self.to_px16.apply(q as i32 - self.zero_point) as i64;
        let (gx, gy) = ((k % self.grid_w) as i64, (k / self.grid_w) as i64);
        let cell = self.cell as i64;
        let cx = gx * cell * 16 + px(at(1));
        let cy = gy * cell * 16 + px(at(2));
        let (w, h) = (px(at(3)).max(0), px(at(4)).max(0));
        let (x0, y0) = (cx - (w >> 1), cy - (h >> 1));
        let cl = |v: i64, max: i32| v.clamp(0, max as i64) as i32;
        let bbox = BoxQ4 {
            x0: cl(x0, self.max_x),
            y0: cl(y0, self.max_y),
            x1: cl(x0 + w, self.max_x),
            y1: cl(y0 + h, self.max_y),
        };
        let class = crate::quant::argmax(r.get(5..).unwrap_or_default()).unwrap_or(0) as u16;
        Detection {
            class,
            score: at(0),
            bbox,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ModelDef;

    use crate::format::{Conv2d, Layer, Node, OutputStage, Shape, TensorSpec};
    use crate::quant::QuantParams;

    /// 8x8 input, a 1x1 stride-4 conv to a 2x2 grid of 5 + 2 channels (cell 4 px); output
    /// scale 0.25 px per step, zero point 0. Only the head matters: `decode` reads bytes.
    fn grid_def<'a>(bias: &'a [u8], rq: &'a [u8], w: &'a [u8]) -> ModelDef<'a> {
        let mut layers = heapless::Vec::new();
        let _ = layers.push(Node::chained(
            0,
            Layer::Conv2d(Conv2d {
                in_channels: 1,
                out_channels: 7,
                kernel_h: 1,
                kernel_w: 1,
                stride_h: 4,
                stride_w: 4,
                padding: crate::format::Padding::uniform(0),
                input_zero_point: 0,
                output: OutputStage {
                    zero_point: 0,
                    act_min: -128,
                    act_max: 127,
                    bias,
                    requant: rq,
                },
                weights: w,
                pool: None,
            }),
        ));
        ModelDef {
            rounding: crate::quant::Rounding::Single,
            name: "grid",
            input: TensorSpec {
                shape: Shape::new(8, 8, 1),
                quant: QuantParams {
                    scale: 1.0,
                    zero_point: 0,
                },
            },
            output: TensorSpec {
                shape: Shape::new(2, 2, 7),
                quant: QuantParams {
                    scale: 0.25,
                    zero_point: 0,
                },
            },
            layers,
            head: Head::GridDetector {
                classes: 2,
                cell: 4,
                obj_threshold: 10,
                nms_iou_pct: 50,
                max_detections: 2,
            },
            labels: "",
        }
    }

    /// Hand-made output: cell 0 and cell 1 both see the same 4x4 box (the weaker one is
    /// suppressed), cell 3 a separate one, cell 2 is below the threshold. Max 2 detections.
    #[test]
    fn grid_decode_thresholds_ranks_and_suppresses() {
        let (b, r, w) = ([0u8; 28], [0u8; 56], [1u8; 7]);
        let def = grid_def(&b, &r, &w);
        let dec = GridDecoder::new(&def.header()).unwrap().unwrap();
        // Channels: obj, cx, cy, w, h (in 0.25 px steps), class 0, class 1.
        #[rustfmt::skip]
        let out: [i8; 28] = [
            40,  8,  8, 16, 16,  1, 5,   // cell (0,0): centre (2,2), 4x4 -> class 1, score 40
            30, -8,  8, 16, 16,  9, 0,   // cell (1,0): centre (4-2, 2) = (2,2): duplicate, lower score
             9,  8,  8, 16, 16,  9, 0,   // cell (0,1): below threshold 10
            50,  8,  8,  8,  8,  0, 3,   // cell (1,1): centre (6,6), 2x2 -> class 1, score 50
        ];
        let d = dec.decode(&out);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].score, d[0].class), (50, 1));
        assert_eq!(
            d[0].bbox,
            BoxQ4 {
                x0: 5 * 16,
                y0: 5 * 16,
                x1: 7 * 16,
                y1: 7 * 16
            }
        );
        assert_eq!((d[1].score, d[1].class), (40, 1));
        assert_eq!(
            d[1].bbox,
            BoxQ4 {
                x0: 0,
                y0: 0,
                x1: 64,
                y1: 64
            }
        );
    }

    #[test]
    fn grid_head_must_match_the_output() {
        let (b, r, w) = ([0u8; 28], [0u8; 56], [1u8; 7]);
        let mut def = grid_def(&b, &r, &w);
        def.head = Head::GridDetector {
            classes: 3,
            cell: 4,
            obj_threshold: 0,
            nms_iou_pct: 50,
            max_detections: 2,
        };
        assert!(GridDecoder::new(&def.header()).is_err());
        def.head = Head::GridDetector {
            classes: 2,
            cell: 3,
            obj_threshold: 0,
            nms_iou_pct: 50,
            max_detections: 2,
        };
        assert!(GridDecoder::new(&def.header()).is_err());
        def.head = Head::GridDetector {
            classes: 2,
            cell: 4,
            obj_threshold: 0,
            nms_iou_pct: 50,
            max_detections: 17,
        };
        assert!(GridDecoder::new(&def.header()).is_err());
    }

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
