//! Anchors and the box parametrization of Faster R-CNN (Ren et al. 2015, section 3.1): a set of
//! reference boxes at every cell of the shared feature map, and the offsets a region proposal
//! network regresses from each anchor to a box. Boxes are `[x0, y0, x1, y1]` in input pixels.

/// The anchors of a `grid_h x grid_w` feature map whose cells are `stride` input pixels apart:
/// for each cell, row-major, and each `(scale, ratio)` pair (scales outer), a box of area
/// `scale^2` and aspect `width / height = ratio`, centred on the cell's centre.
pub fn anchors(
    grid_h: usize,
    grid_w: usize,
    stride: f32,
    scales: &[f32],
    ratios: &[f32],
) -> Vec<[f32; 4]> {
    let mut out = Vec::with_capacity(grid_h * grid_w * scales.len() * ratios.len());
    for gy in 0..grid_h {
        for gx in 0..grid_w {
            let (cx, cy) = ((gx as f32 + 0.5) * stride, (gy as f32 + 0.5) * stride);
            for &s in scales {
                for &r in ratios {
                    let (w, h) = (s * r.sqrt(), s / r.sqrt());
                    out.push([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]);
                }
            }
        }
    }
    out
}

/// Centre, width and height of a box.
fn cwh(b: [f32; 4]) -> (f32, f32, f32, f32) {
    (
        (b[0] + b[2]) / 2.0,
        (b[1] + b[3]) / 2.0,
        b[2] - b[0],
        b[3] - b[1],
    )
}

/// The regression target of `truth` from `anchor` (the paper's eq. 2): `tx = (x - xa) / wa`,
/// `ty = (y - ya) / ha`, `tw = ln(w / wa)`, `th = ln(h / ha)`, with `(x, y)` box centres.
pub fn encode(anchor: [f32; 4], truth: [f32; 4]) -> [f32; 4] {
    let (xa, ya, wa, ha) = cwh(anchor);
    let (x, y, w, h) = cwh(truth);
    [
        (x - xa) / wa,
        (y - ya) / ha,
        (w / wa).max(1e-6).ln(),
        (h / ha).max(1e-6).ln(),
    ]
}

/// The box that offsets `t` from `anchor` describe: the inverse of [`encode`] (size offsets
/// are clamped to `ln(1000 / 16)`, as the reference implementation does, so a wild prediction
/// cannot overflow).
pub fn decode(anchor: [f32; 4], t: [f32; 4]) -> [f32; 4] {
    const MAX_LOG: f32 = 4.135_166_6; // ln(1000 / 16)
    let (xa, ya, wa, ha) = cwh(anchor);
    let (x, y) = (xa + t[0] * wa, ya + t[1] * ha);
    let (w, h) = (wa * t[2].min(MAX_LOG).exp(), ha * t[3].min(MAX_LOG).exp());
    [x - w / 2.0, y - h / 2.0, x + w / 2.0, y + h / 2.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_centred_on_cells_with_the_asked_area_and_aspect() {
        let a = anchors(2, 3, 16.0, &[16.0, 32.0], &[1.0, 4.0]);
        assert_eq!(a.len(), 2 * 3 * 2 * 2);
        // Cell (0, 0), scale 16, ratio 1: a 16x16 box around (8, 8).
        assert_eq!(a[0], [0.0, 0.0, 16.0, 16.0]);
        // Same cell, scale 16, ratio 4: 32 x 8, centre (8, 8).
        assert_eq!(a[1], [-8.0, 4.0, 24.0, 12.0]);
        // Same cell, scale 32, ratio 1.
        assert_eq!(a[2], [-8.0, -8.0, 24.0, 24.0]);
        // Cell (row 1, column 2): centre (40, 24), the first anchor.
        assert_eq!(a[(3 + 2) * 4], [32.0, 16.0, 48.0, 32.0]);
    }

    #[test]
    fn encode_gives_the_papers_offsets() {
        // Anchor 10x20 at (5, 10); truth 20x10 at (7, 12).
        let t = encode([0.0, 0.0, 10.0, 20.0], [-3.0, 7.0, 17.0, 17.0]);
        assert_eq!(t[0], 0.2);
        assert_eq!(t[1], 0.1);
        assert_eq!(t[2], 2f32.ln());
        assert_eq!(t[3], 0.5f32.ln());
    }

    #[test]
    fn decode_inverts_encode() {
        let anchor = [4.0, 8.0, 36.0, 24.0];
        for truth in [
            [4.0, 8.0, 36.0, 24.0],
            [0.0, 0.0, 64.0, 64.0],
            [10.5, 12.25, 20.0, 30.0],
        ] {
            let back = decode(anchor, encode(anchor, truth));
            for k in 0..4 {
                assert!((back[k] - truth[k]).abs() < 1e-4, "{back:?} vs {truth:?}");
            }
        }
        // The anchor itself is offsets 0, exactly.
        assert_eq!(encode(anchor, anchor), [0.0; 4]);
        assert_eq!(decode(anchor, [0.0; 4]), anchor);
        // A wild size offset is clamped, not infinite.
        assert!(decode(anchor, [0.0, 0.0, 1e9, 1e9])
            .iter()
            .all(|v| v.is_finite()));
    }
}
