//! Exact dead-channel elimination on an [`OwnedModel`]: an output channel whose weights are all
//! zero (or read only inputs that are themselves constant at their zero point) outputs one
//! constant byte wherever it is computed, so it can be dropped and its effect folded into
//! its consumers with every output unchanged, byte for byte.
//!
//! A channel of tensor `t` is removed when it is constant (`v`) and every consumer absorbs it:
//! - a convolution or fully connected layer: a channel at its zero point (`v == zp`) adds
//!   `(v - zp) * w = 0` at every tap, padded or not; another constant is folded into the
//!   biases (`(v - zp) * sum of its weights`) only where no tap can fall in the padding (1x1
//!   convolutions without padding, fully connected layers);
//! - a depthwise convolution or a pool maps channel `c` to channel `c`: the input channel goes
//!   only together with the output channel (a depthwise channel reading a constant at its zero
//!   point outputs its requantized bias: constant again, so dead channels chain through);
//! - any other layer (add, concatenation, mean, softmax) and the model output keep every
//!   channel;
//! - a tensor whose channels came in fours keeps a multiple of four (the kernels' fast paths
//!   take four channels per word), keeping its first removable channels where needed.
//!
//! MLPerf Tiny's rules allow this (ST's published visual wake words result uses it).

use anyhow::{bail, Context};
use runtime::format::Channels;
use runtime::writer::{OwnedConv, OwnedFullyConnected, OwnedLayer, OwnedModel, OwnedStage};

/// What one channel of a tensor holds at every position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ch {
    Var,
    Const(i8),
}

/// What [`prune_dead_channels`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PruneReport {
    /// Output channels of convolutions, depthwise convolutions and fully connected layers.
    pub channels: usize,
    /// Of those, the ones removed.
    pub removed: usize,
}

/// The model with its dead channels removed (see the module doc), and how many went.
pub fn prune_dead_channels(m: &OwnedModel) -> anyhow::Result<(OwnedModel, PruneReport)> {
    let (chans, zps, channels) = tensor_status(m)?;
    let rm = removable(m, &chans, &zps);
    let mut out = m.clone();
    let mut removed = 0;
    for (k, node) in out.layers.iter_mut().enumerate() {
        let (t, u) = (node.inputs[0] as usize, k + 1);
        let (drop_in, drop_out) = (&rm[t], &rm[u]);
        let (cin, zin) = (&chans[t], zps[t]);
        match &mut node.layer {
            OwnedLayer::Conv2d(c) => prune_conv(c, drop_in, cin, zin, drop_out, false)?,
            OwnedLayer::DepthwiseConv2d(c) => prune_conv(c, drop_in, cin, zin, drop_out, true)?,
            OwnedLayer::FullyConnected(f) => prune_fc(f, drop_in, cin, zin, drop_out)?,
            // Pools pass channels through; the other kinds keep every channel.
            _ => continue,
        }
        removed += drop_out.iter().filter(|&&d| d).count();
    }
    Ok((out, PruneReport { channels, removed }))
}

/// What each channel of each tensor holds (0 the model input, `k + 1` layer `k`'s output),
/// each tensor's zero point, and how many output channels the weighted layers have.
#[allow(clippy::type_complexity)]
fn tensor_status(m: &OwnedModel) -> anyhow::Result<(Vec<Vec<Ch>>, Vec<i8>, usize)> {
    let mut chans: Vec<Vec<Ch>> = vec![vec![Ch::Var; m.input.shape.c as usize]];
    let mut zps: Vec<i8> = vec![m.input.quant.zero_point as i8];
    let mut channels = 0;
    for (k, node) in m.layers.iter().enumerate() {
        let input = |j: usize| -> anyhow::Result<usize> {
            let t = *node.inputs.get(j).context("a layer without its input")? as usize;
            if t > k {
                bail!("layer {k} reads tensor {t}, not yet computed");
            }
            Ok(t)
        };
        for j in 0..node.inputs.len() {
            input(j)?;
        }
        let t = input(0)?;
        let (cin, zin) = (chans[t].clone(), zps[t]);
        let (out, zp) = match &node.layer {
            OwnedLayer::Conv2d(c) => {
                let o = conv_status(c, &cin, zin, m.rounding, false)?;
                channels += o.len();
                (o, c.output.zero_point)
            }
            OwnedLayer::DepthwiseConv2d(c) => {
                let o = conv_status(c, &cin, zin, m.rounding, true)?;
                channels += o.len();
                (o, c.output.zero_point)
            }
            OwnedLayer::FullyConnected(f) => {
                let o = fc_status(f, &cin, zin, m.rounding)?;
                channels += o.len();
                (o, f.output.zero_point)
            }
            OwnedLayer::MaxPool2d(_) | OwnedLayer::AvgPool2d(_) | OwnedLayer::GlobalAvgPool => {
                (cin, zin)
            }
            OwnedLayer::Add(a) => (vec![Ch::Var; cin.len()], a.zero_point),
            OwnedLayer::Concat => {
                let mut c = 0;
                for j in 0..node.inputs.len() {
                    c += chans[input(j)?].len();
                }
                (vec![Ch::Var; c], zin)
            }
            OwnedLayer::Mean(mn) => (vec![Ch::Var; cin.len()], mn.zero_point),
            OwnedLayer::Softmax(_) => (vec![Ch::Var; cin.len()], -128),
        };
        chans.push(out);
        zps.push(zp);
    }

    Ok((chans, zps, channels))
}

/// Which channels may go: constant, neither the model input nor its output, absorbed by every
/// consumer (the module doc's rules), to a fixed point.
fn removable(m: &OwnedModel, chans: &[Vec<Ch>], zps: &[i8]) -> Vec<Vec<bool>> {
    let n = m.layers.len();
    let mut rm: Vec<Vec<bool>> = chans
        .iter()
        .enumerate()
        .map(|(t, cs)| {
            cs.iter()
                .map(|c| t != 0 && t != n && matches!(c, Ch::Const(_)))
                .collect()
        })
        .collect();
    loop {
        let mut changed = false;
        let mut clear = |rm: &mut Vec<Vec<bool>>, t: usize, c: usize| {
            if rm[t][c] {
                rm[t][c] = false;
                changed = true;
            }
        };
        for (k, node) in m.layers.iter().enumerate() {
            let u = k + 1;
            let t = node.inputs[0] as usize;
            match &node.layer {
                OwnedLayer::DepthwiseConv2d(_)
                | OwnedLayer::MaxPool2d(_)
                | OwnedLayer::AvgPool2d(_)
                | OwnedLayer::GlobalAvgPool => {
                    for c in 0..rm[t].len().min(rm[u].len()) {
                        if rm[t][c] != rm[u][c] {
                            clear(&mut rm, t, c);
                            clear(&mut rm, u, c);
                        }
                    }
                }
                OwnedLayer::Conv2d(cv) => {
                    let pointwise = cv.kernel_h == 1
                        && cv.kernel_w == 1
                        && cv.padding == runtime::format::Padding::uniform(0)
                        && cv.pool.is_none();
                    for (c, &ch) in chans[t].iter().enumerate() {
                        if ch != Ch::Const(zps[t]) && !pointwise {
                            clear(&mut rm, t, c);
                        }
                    }
                }
                OwnedLayer::FullyConnected(_) => {}
                OwnedLayer::Add(_)
                | OwnedLayer::Concat
                | OwnedLayer::Mean(_)
                | OwnedLayer::Softmax(_) => {
                    for &t in &node.inputs {
                        for c in 0..rm[t as usize].len() {
                            clear(&mut rm, t as usize, c);
                        }
                    }
                }
            }
        }
        // No tensor may lose every channel, and one whose channels came in fours keeps them
        // in fours (the kernels' fast paths take four channels per word): the first
        // removable channels stay until the count is a multiple of four again.
        for t in 0..rm.len() {
            let mut kept = rm[t].iter().filter(|&&r| !r).count();
            let want = if rm[t].len().is_multiple_of(4) {
                kept.next_multiple_of(4).max(4)
            } else {
                kept.max(1)
            };
            for c in 0..rm[t].len() {
                if kept >= want {
                    break;
                }
                if rm[t][c] {
                    clear(&mut rm, t, c);
                    kept += 1;
                }
            }
        }
        if !changed {
            break;
        }
    }

    rm
}

/// Bias and multiplier of every output channel of a stage.
fn channels(st: &OwnedStage) -> Vec<(i32, runtime::Requant)> {
    Channels::new(&st.bias, &st.requant).collect()
}

/// What each output channel of a (depthwise) convolution holds.
fn conv_status(
    c: &OwnedConv,
    cin: &[Ch],
    zin: i8,
    rounding: runtime::Rounding,
    depthwise: bool,
) -> anyhow::Result<Vec<Ch>> {
    let (taps, ic) = (c.kernel_h as usize * c.kernel_w as usize, cin.len());
    let per_out = if depthwise { taps } else { taps * ic };
    let oc = c.out_channels as usize;
    let weights = if depthwise { taps * oc } else { oc * per_out };
    let st = &c.output;
    if (depthwise && oc != ic) || c.weights.len() != weights || channels(st).len() != oc {
        bail!("convolution weights or biases do not match its channels");
    }
    let live = |i: usize| cin[i] != Ch::Const(zin);
    Ok(statuses(st, rounding, |o| {
        if depthwise {
            !live(o) || (0..taps).all(|p| c.weights[p * oc + o] == 0)
        } else {
            let w = &c.weights[o * per_out..(o + 1) * per_out];
            w.iter().enumerate().all(|(j, &v)| v == 0 || !live(j % ic))
        }
    }))
}

/// Each output channel of `st`: where `dead(o)` (its sum is its bias alone), the constant its
/// requantized bias gives.
fn statuses(st: &OwnedStage, rounding: runtime::Rounding, dead: impl Fn(usize) -> bool) -> Vec<Ch> {
    let (zp, lo, hi) = (st.zero_point as i32, st.act_min as i32, st.act_max as i32);
    channels(st)
        .into_iter()
        .enumerate()
        .map(|(o, (bias, rq))| {
            if dead(o) {
                Ch::Const(rq.to_i8_with(rounding, bias, zp, lo, hi))
            } else {
                Ch::Var
            }
        })
        .collect()
}

/// What each output of a fully connected layer holds.
fn fc_status(
    f: &OwnedFullyConnected,
    cin: &[Ch],
    zin: i8,
    rounding: runtime::Rounding,
) -> anyhow::Result<Vec<Ch>> {
    let n_in = f.in_features as usize;
    let st = &f.output;
    let n_out = f.out_features as usize;
    if cin.is_empty()
        || !n_in.is_multiple_of(cin.len())
        || f.weights.len() != n_in * n_out
        || channels(st).len() != n_out
    {
        bail!("fully connected weights or biases do not match its input");
    }
    Ok(statuses(st, rounding, |o| {
        let w = &f.weights[o * n_in..(o + 1) * n_in];
        w.iter()
            .enumerate()
            .all(|(j, &v)| v == 0 || cin[j % cin.len()] == Ch::Const(zin))
    }))
}

/// `(v - zp)` of a removed input channel, folded into the biases (0 at the zero point).
fn offset(ch: Ch, zp: i8) -> i32 {
    match ch {
        Ch::Const(v) => v as i32 - zp as i32,
        Ch::Var => 0,
    }
}

/// The stage's channels not in `drop`, with `add[o]` added to each kept bias.
fn prune_stage(st: &mut OwnedStage, drop: &[bool], add: &[i64]) -> anyhow::Result<()> {
    let mut bias = Vec::new();
    let mut rq = Vec::new();
    for (o, (b, r)) in channels(st).into_iter().enumerate() {
        if drop[o] {
            continue;
        }
        let b = i32::try_from(b as i64 + add[o]).context("a folded bias leaves i32")?;
        bias.push(b);
        rq.push(r);
    }
    *st = OwnedStage::new(st.zero_point, st.act_min, st.act_max, &bias, &rq);
    Ok(())
}

fn prune_conv(
    c: &mut OwnedConv,
    drop_in: &[bool],
    cin: &[Ch],
    zin: i8,
    drop_out: &[bool],
    depthwise: bool,
) -> anyhow::Result<()> {
    let taps = c.kernel_h as usize * c.kernel_w as usize;
    let (ic, oc) = (cin.len(), c.out_channels as usize);
    let mut add = vec![0i64; oc];
    let mut w = Vec::new();
    if depthwise {
        for tap in c.weights.chunks_exact(oc.max(1)) {
            for (&v, &d) in tap.iter().zip(drop_out) {
                if !d {
                    w.push(v);
                }
            }
        }
    } else {
        for (o, a) in add.iter_mut().enumerate() {
            for p in 0..taps {
                for i in 0..ic {
                    let v = c.weights[(o * taps + p) * ic + i];
                    if drop_in[i] {
                        *a += offset(cin[i], zin) as i64 * (v as i8) as i64;
                    } else if !drop_out[o] {
                        w.push(v);
                    }
                }
            }
        }
        c.in_channels = drop_in.iter().filter(|&&d| !d).count() as u16;
    }
    prune_stage(&mut c.output, drop_out, &add)?;
    c.out_channels = drop_out.iter().filter(|&&d| !d).count() as u16;
    if depthwise {
        c.in_channels = c.out_channels;
    }
    c.weights = w;
    Ok(())
}

fn prune_fc(
    f: &mut OwnedFullyConnected,
    drop_in: &[bool],
    cin: &[Ch],
    zin: i8,
    drop_out: &[bool],
) -> anyhow::Result<()> {
    let n_in = f.in_features as usize;
    let ic = cin.len();
    let mut add = vec![0i64; f.out_features as usize];
    let mut w = Vec::new();
    for (o, a) in add.iter_mut().enumerate() {
        for j in 0..n_in {
            let v = f.weights[o * n_in + j];
            if drop_in[j % ic] {
                *a += offset(cin[j % ic], zin) as i64 * (v as i8) as i64;
            } else if !drop_out[o] {
                w.push(v);
            }
        }
    }
    prune_stage(&mut f.output, drop_out, &add)?;
    f.in_features = (0..n_in).filter(|j| !drop_in[j % ic]).count() as u32;
    f.out_features = drop_out.iter().filter(|&&d| !d).count() as u16;
    f.weights = w;
    Ok(())
}

/// Gives every output channel whose weights are all zero (its sum is its bias, whatever the
/// input) the smallest stage with the same output byte: bias `4 (v - zp)` and multiplier 1/4
/// (`2^30`, shift -1), where `v` is the byte its own bias, multiplier and clamp give. Exact
/// under either rounding, and it keeps the layer's accumulators small: TensorFlow Lite writes
/// biases near 2^30 on such channels (visual wake words), which would keep the whole layer off
/// the kernels' one-multiply requantization (`Stage::small_acc`). Returns how many channels
/// changed.
pub fn settle_dead_channels(m: &mut OwnedModel) -> usize {
    let rounding = m.rounding;
    let mut settled = 0;
    for node in m.layers.iter_mut() {
        let (weights, out_c, stage, depthwise) = match &mut node.layer {
            OwnedLayer::Conv2d(c) => (&c.weights, c.out_channels as usize, &mut c.output, false),
            OwnedLayer::DepthwiseConv2d(c) => {
                (&c.weights, c.out_channels as usize, &mut c.output, true)
            }
            OwnedLayer::FullyConnected(f) => {
                (&f.weights, f.out_features as usize, &mut f.output, false)
            }
            _ => continue,
        };
        if out_c == 0 || weights.len() % out_c != 0 {
            continue;
        }
        let per = weights.len() / out_c;
        let dead = |o: usize| {
            if depthwise {
                weights.iter().skip(o).step_by(out_c).all(|&w| w == 0)
            } else {
                weights[o * per..(o + 1) * per].iter().all(|&w| w == 0)
            }
        };
        let quarter = runtime::Requant {
            multiplier: 1 << 30,
            shift: -1,
        };
        let (zp, lo, hi) = (
            stage.zero_point as i32,
            stage.act_min as i32,
            stage.act_max as i32,
        );
        for o in (0..out_c).filter(|&o| dead(o)) {
            let (Some(b), Some(r)) = (
                stage.bias.get_mut(4 * o..4 * o + 4),
                stage.requant.get_mut(8 * o..8 * o + 8),
            ) else {
                continue;
            };
            let (bias, rq) = runtime::format::decode_channel(b, r);
            let v = rq.to_i8_with(rounding, bias, zp, lo, hi) as i32;
            let small = 4 * (v - zp);
            if (bias, rq) == (small, quarter) {
                continue;
            }
            b.copy_from_slice(&small.to_le_bytes());
            r[..4].copy_from_slice(&quarter.multiplier.to_le_bytes());
            r[4..].copy_from_slice(&quarter.shift.to_le_bytes());
            settled += 1;
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::format::{Head, Padding, Shape, TensorSpec};
    use runtime::writer::OwnedNode;
    use runtime::{QuantParams, Requant, Rounding};

    const ZP: i8 = -100;

    /// A stage with ReLU at the zero point, the same multiplier on every channel.
    fn stage(bias: &[i32]) -> OwnedStage {
        let rq = vec![Requant::from_real(0.01).unwrap(); bias.len()];
        OwnedStage::new(ZP, ZP, 127, bias, &rq)
    }

    fn conv(ic: u16, oc: u16, k: u8, pad: u8, weights: Vec<i8>, bias: &[i32]) -> OwnedConv {
        OwnedConv {
            in_channels: ic,
            out_channels: oc,
            kernel_h: k,
            kernel_w: k,
            stride_h: 1,
            stride_w: 1,
            padding: Padding::uniform(pad),
            input_zero_point: ZP,
            output: stage(bias),
            weights: weights.into_iter().map(|v| v as u8).collect(),
            pool: None,
        }
    }

    /// Nonzero weights, a different pattern per index.
    fn w(i: usize) -> i8 {
        (((i * 37 + 11) % 200) as i8 - 100) | 1
    }

    /// input 6x6x2 -> 1x1 conv (5 ch) -> 3x3 depthwise, padding 1 -> 3x3 conv, padding 1
    /// (3 ch) -> FC 5 (no count a multiple of four, which pruning would keep so).
    /// The first conv's channel 1 is dead at the zero point (zero weights, negative bias under
    /// ReLU), channels 2 and 3 constant above it (zero weights, positive bias). The depthwise
    /// layer's channel 3 has zero weights and a positive bias; the last conv's channel 2 too.
    fn model() -> OwnedModel {
        let c0: Vec<i8> = (0..10)
            .map(|i| if i / 2 == 0 || i / 2 == 4 { w(i) } else { 0 })
            .collect();
        let dw: Vec<i8> = (0..45).map(|i| if i % 5 == 3 { 0 } else { w(i) }).collect();
        let c2: Vec<i8> = (0..135)
            .map(|i| if i / 45 == 2 { 0 } else { w(i + 5) })
            .collect();
        let fc: Vec<i8> = (0..5 * 108).map(|i| w(i + 3)).collect();
        let spec = |shape, zero_point| TensorSpec {
            shape,
            quant: QuantParams {
                scale: 0.05,
                zero_point,
            },
        };
        let node = |t: u8, layer| OwnedNode {
            inputs: vec![t],
            layer,
        };
        OwnedModel {
            name: "prune".into(),
            input: spec(Shape::new(6, 6, 2), ZP as i32),
            output: spec(Shape::new(1, 1, 5), ZP as i32),
            rounding: Rounding::Double,
            layers: vec![
                node(
                    0,
                    OwnedLayer::Conv2d(conv(2, 5, 1, 0, c0, &[300, -1000, 4000, 7000, 200])),
                ),
                node(
                    1,
                    OwnedLayer::DepthwiseConv2d(conv(5, 5, 3, 1, dw, &[50, -900, 60, 5000, 40])),
                ),
                node(2, OwnedLayer::Conv2d(conv(5, 3, 3, 1, c2, &[10, 20, 6000]))),
                node(
                    3,
                    OwnedLayer::FullyConnected(OwnedFullyConnected {
                        in_features: 108,
                        out_features: 5,
                        input_zero_point: ZP,
                        // No ReLU, a small scale: outputs that vary with the input.
                        output: OwnedStage::new(
                            ZP,
                            -128,
                            127,
                            &[1, 2, 3, 4, 5],
                            &[Requant::from_real(0.0005).unwrap(); 5],
                        ),
                        weights: fc.into_iter().map(|v| v as u8).collect(),
                    }),
                ),
            ],
            head: Head::Classifier { classes: 5 },
            labels: String::new(),
        }
    }

    /// The channels the module doc's rules remove (first conv and depthwise channel 1, dead at
    /// the zero point; the last conv's channel 2, folded into the FC's biases), the ones they
    /// keep (the first conv's channel 2, constant but read through the depthwise padding; the
    /// depthwise channel 3, constant but read through the padded conv's, and so its input
    /// channel too), and the outputs unchanged.
    #[test]
    fn dead_and_constant_channels_go_where_consumers_absorb_them() {
        let m = model();
        let full = m.write().unwrap();
        let (p, report) = prune_dead_channels(&m).unwrap();
        assert_eq!(
            report,
            PruneReport {
                channels: 18,
                removed: 3
            }
        );
        let OwnedLayer::Conv2d(c0) = &p.layers[0].layer else {
            panic!()
        };
        assert_eq!((c0.out_channels, c0.weights.len()), (4, 8));
        let OwnedLayer::FullyConnected(fc) = &p.layers[3].layer else {
            panic!()
        };
        assert_eq!(fc.in_features, 72);
        let pruned = p.write().unwrap();
        crate::deploy::tflite::same_outputs(&full, &pruned, 32).unwrap();
        // The inputs reach the output (the comparison is not between constants).
        let outs = crate::deploy::device::host_outputs(
            &full,
            &[vec![-100i8; 72], (0..72).map(|i| (i * 3) as i8).collect()],
        )
        .unwrap();
        assert_ne!(outs[0], outs[1]);
    }

    /// Channels with all-zero weights get the smallest stage with the same output byte: a
    /// bias near 2^30 (as TensorFlow Lite writes on such channels) no longer keeps the layer's
    /// accumulators from being small, outputs unchanged; a second pass changes nothing.
    #[test]
    fn dead_channels_settle_to_small_stages() {
        let mut m = model();
        let OwnedLayer::Conv2d(c0) = &mut m.layers[0].layer else {
            panic!()
        };
        c0.output.bias[12..16].copy_from_slice(&((1i32 << 30) + 128).to_le_bytes());
        assert!(!runtime::kernels::small_acc(&c0.output.bias, 2));
        let full = m.write().unwrap();
        // The first conv's channels 1 to 3, the depthwise channel 3, the last conv's 2.
        assert_eq!(settle_dead_channels(&mut m), 5);
        let OwnedLayer::Conv2d(c0) = &m.layers[0].layer else {
            panic!()
        };
        assert!(runtime::kernels::small_acc(&c0.output.bias, 2));
        crate::deploy::tflite::same_outputs(&full, &m.write().unwrap(), 32).unwrap();
        assert_eq!(settle_dead_channels(&mut m), 0);
    }
}
