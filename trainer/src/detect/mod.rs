//! Detection on canvases: localization and the grid detector, sliding windows, region
//! proposals, R-CNN and its box regression, and the comparison of them all.

pub mod anchors;
pub mod bbox_reg;
pub mod compare;
pub mod fast_rcnn;
pub mod faster_rcnn;
pub mod grid;
pub mod proposals;
pub mod rcnn;
pub mod sliding;
