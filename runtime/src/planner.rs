//! Arena planning for a chain of layers.
//!
//! Tensor `i` is written by layer `i - 1` and read by layer `i`, so exactly two tensors are
//! live while a layer runs: its input and its output. The peak is therefore
//! `max_i (size[i] + size[i + 1])`, and it is achieved by a ping-pong layout: even tensors sit
//! at the bottom of the arena (offset 0), odd tensors at the top (offset `peak - size`). Two
//! tensors live at the same time are always neighbours, one bottom and one top, and
//! `size[i] + size[i + 1] <= peak` means they cannot overlap. The figure is exact: no layout
//! can use less than the largest live pair. (A conv followed by a max-pool is fused by the
//! exporter, so the full-resolution conv output never appears in this list at all.)

/// Exact peak bytes for a chain whose tensor sizes are `sizes` (input first, output last).
pub fn chain_peak(sizes: impl Iterator<Item = usize> + Clone) -> usize {
    let next = sizes.clone().skip(1);
    let mut peak = 0usize;
    let mut any_pair = false;
    for (a, b) in sizes.clone().zip(next) {
        any_pair = true;
        peak = peak.max(a.saturating_add(b));
    }
    if !any_pair {
        peak = sizes.max().unwrap_or(0);
    }
    peak
}

/// Where tensor `index` of a chain with peak `peak` starts.
pub const fn chain_offset(index: usize, size: usize, peak: usize) -> usize {
    if index & 1 == 0 {
        0
    } else {
        peak - size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over a lifetime table: at each step the live buffers are the step's input and
    /// output; check no two live buffers overlap and that the peak equals the largest live sum.
    fn check(sizes: &[usize]) {
        let peak = chain_peak(sizes.iter().copied());
        let mut brute = sizes.iter().copied().max().unwrap_or(0); // a lone tensor is live alone
        for step in 0..sizes.len().saturating_sub(1) {
            let live = [step, step + 1];
            let sum: usize = live.iter().map(|&i| sizes[i]).sum();
            brute = brute.max(sum);
            let (a, b) = (live[0], live[1]);
            let ra = chain_offset(a, sizes[a], peak)..chain_offset(a, sizes[a], peak) + sizes[a];
            let rb = chain_offset(b, sizes[b], peak)..chain_offset(b, sizes[b], peak) + sizes[b];
            assert!(ra.end <= peak && rb.end <= peak, "{sizes:?}: out of arena");
            assert!(
                ra.end <= rb.start || rb.end <= ra.start,
                "{sizes:?}: {ra:?} overlaps {rb:?}"
            );
        }
        assert_eq!(peak, brute, "{sizes:?}");
    }

    #[test]
    fn lifetime_tables() {
        // ref-cnn unfused: 784 -> conv 6272 -> pool 1568 -> conv 3136 -> pool 784 -> fc 10
        check(&[784, 6272, 1568, 3136, 784, 10]);
        assert_eq!(
            chain_peak([784, 6272, 1568, 3136, 784, 10].into_iter()),
            7840
        );
        // ref-cnn with conv+pool fused: 784 -> 1568 -> 784 -> 10
        assert_eq!(chain_peak([784, 1568, 784, 10].into_iter()), 2352);
        check(&[784, 1568, 784, 10]);
        check(&[10]);
        check(&[5, 7]);
        check(&[1, 100, 1, 100, 1]);
        check(&[100, 1, 1, 100]);
    }

    proptest::proptest! {
        #[test]
        fn random_chains(sizes in proptest::collection::vec(1usize..5000, 1..12)) {
            check(&sizes);
        }
    }
}
