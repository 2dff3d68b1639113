//! Arena planning: where each tensor lives in the one arena, computed at load time without
//! allocation.
//!
//! Layers run in list order (step `k` runs layer `k`). Tensor 0 (the model input) is live from
//! step 0; tensor `k + 1` (layer `k`'s output) from step `k`. A tensor stays live until the last
//! step that reads it; the model output stays live to the end. While step `k` runs, every tensor
//! whose interval contains `k` must sit in the arena, its inputs and its output included.
//!
//! The **live peak**, `max_k` of the sizes live at step `k`, is a lower bound for any layout.
//! [`plan`] places tensors so that no two tensors live at the same step overlap:
//! - a **chain** (each layer reads only the previous output, the ping-pong case) puts even
//!   tensors at the bottom of the arena and odd ones at the top. Only neighbours are ever live
//!   together, so the arena is exactly the largest neighbour pair: the live peak;
//! - a **graph** (residual and Inception blocks) is placed greedily, first fit, largest tensor
//!   first (TFLM's greedy planner), trying three orders and keeping the smallest arena. Greedy
//!   is not optimal for every graph, so [`Plan`] reports both the arena and the live peak; the
//!   tests check that the built-in graph models meet the bound exactly.
//!
//! The **naive** figure is every tensor live at once (no reuse).

use crate::format::MAX_PLANNED;

/// The steps during which a tensor is live, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    pub const fn overlaps(&self, o: &Lifetime) -> bool {
        self.first <= o.last && o.first <= self.last
    }
}

/// A layout: byte offset of every tensor and the figures to compare it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub offsets: [usize; MAX_PLANNED],
    /// Arena bytes this layout needs (what the blob header records).
    pub arena_bytes: usize,
    /// The lower bound: most bytes live at any one step.
    pub live_peak_bytes: usize,
    /// Every tensor live at once.
    pub naive_bytes: usize,
}

/// Most bytes live at one step. `sizes[t]` and `life[t]` describe tensor `t`.
pub fn live_peak(sizes: &[usize], life: &[Lifetime]) -> usize {
    let steps = life.iter().map(|l| l.last + 1).max().unwrap_or(0);
    (0..steps.max(1))
        .map(|k| {
            sizes
                .iter()
                .zip(life)
                .filter(|(_, l)| l.first <= k && k <= l.last)
                .fold(0usize, |a, (&s, _)| a.saturating_add(s))
        })
        .max()
        .unwrap_or(0)
}

/// Places `sizes.len()` (at most [`MAX_PLANNED`]) tensors. `chain` selects the ping-pong layout,
/// which is only valid when each step reads exactly the previous step's output.
pub fn plan(sizes: &[usize], life: &[Lifetime], chain: bool) -> Plan {
    let n = sizes.len().min(life.len()).min(MAX_PLANNED);
    let (sizes, life) = (&sizes[..n], &life[..n]);
    let live = live_peak(sizes, life);
    let naive = sizes.iter().fold(0usize, |a, &s| a.saturating_add(s));
    let mut best = Plan {
        offsets: [0; MAX_PLANNED],
        arena_bytes: usize::MAX,
        live_peak_bytes: live,
        naive_bytes: naive,
    };
    if chain {
        for (t, &s) in sizes.iter().enumerate() {
            best.offsets[t] = if t & 1 == 0 { 0 } else { live - s };
        }
        best.arena_bytes = live;
        return best;
    }
    for order_kind in 0..3 {
        let mut order = [0usize; MAX_PLANNED];
        for (t, o) in order.iter_mut().enumerate().take(n) {
            *o = t;
        }
        let key = |t: usize| -> (usize, usize) {
            match order_kind {
                0 => (usize::MAX - sizes[t], life[t].first),
                1 => (life[t].first, usize::MAX - sizes[t]),
                _ => (
                    usize::MAX - (life[t].last - life[t].first),
                    usize::MAX - sizes[t],
                ),
            }
        };
        // Insertion sort: no allocation, n <= 41.
        for i in 1..n {
            let mut j = i;
            while j > 0 && key(order[j]) < key(order[j - 1]) {
                order.swap(j, j - 1);
                j -= 1;
            }
        }
        let mut offsets = [0usize; MAX_PLANNED];
        let mut placed = [false; MAX_PLANNED];
        let mut arena = 0usize;
        for &t in &order[..n] {
            let conflicts = |u: usize| placed[u] && u != t && life[u].overlaps(&life[t]);
            let fits = |at: usize| {
                (0..n).all(|u| {
                    !conflicts(u)
                        || at.saturating_add(sizes[t]) <= offsets[u]
                        || offsets[u] + sizes[u] <= at
                })
            };
            // Candidates: the bottom, and just above each conflicting tensor.
            let mut at = usize::MAX;
            if fits(0) {
                at = 0;
            }
            for u in 0..n {
                let c = offsets[u] + sizes[u];
                if conflicts(u) && c < at && fits(c) {
                    at = c;
                }
            }
            offsets[t] = at;
            placed[t] = true;
            arena = arena.max(at.saturating_add(sizes[t]));
        }
        if arena < best.arena_bytes {
            best.arena_bytes = arena;
            best.offsets = offsets;
        }
    }
    best
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Brute-force check of a layout: simulate every step, list the live tensors, and assert
    /// that none of them overlap or leave the arena; returns the simulated live peak.
    pub fn simulate(sizes: &[usize], life: &[Lifetime], p: &Plan) -> usize {
        let steps = life.iter().map(|l| l.last + 1).max().unwrap_or(1);
        let mut peak = 0;
        for k in 0..steps {
            let live: Vec<usize> = (0..sizes.len())
                .filter(|&t| life[t].first <= k && k <= life[t].last)
                .collect();
            peak = peak.max(live.iter().map(|&t| sizes[t]).sum::<usize>());
            for &a in &live {
                let ra = p.offsets[a]..p.offsets[a] + sizes[a];
                assert!(
                    ra.end <= p.arena_bytes,
                    "step {k}: tensor {a} {ra:?} out of arena"
                );
                for &b in &live {
                    let rb = p.offsets[b]..p.offsets[b] + sizes[b];
                    assert!(
                        a == b || ra.end <= rb.start || rb.end <= ra.start,
                        "step {k}: tensor {a} {ra:?} overlaps tensor {b} {rb:?}"
                    );
                }
            }
        }
        peak
    }

    /// Lifetimes of a chain of `n` tensors.
    fn chain_life(n: usize) -> Vec<Lifetime> {
        (0..n)
            .map(|t| Lifetime {
                first: t.saturating_sub(1),
                last: t.min(n.saturating_sub(2)),
            })
            .collect()
    }

    fn check_chain(sizes: &[usize]) {
        let life = chain_life(sizes.len());
        for chain in [true, false] {
            let p = plan(sizes, &life, chain);
            let brute = simulate(sizes, &life, &p);
            assert_eq!(p.live_peak_bytes, brute, "{sizes:?}");
            if chain {
                assert_eq!(p.arena_bytes, brute, "{sizes:?}: ping-pong is exact");
            } else {
                assert!(p.arena_bytes >= brute);
            }
        }
    }

    #[test]
    fn chain_tables() {
        // ref-cnn unfused: 784 -> conv 6272 -> pool 1568 -> conv 3136 -> pool 784 -> fc 10
        check_chain(&[784, 6272, 1568, 3136, 784, 10]);
        let sizes = [784, 1568, 784, 10];
        let p = plan(&sizes, &chain_life(4), true);
        assert_eq!(p.arena_bytes, 2352);
        assert_eq!(p.naive_bytes, 784 + 1568 + 784 + 10);
        check_chain(&[10]);
        check_chain(&[5, 7]);
        check_chain(&[1, 100, 1, 100, 1]);
        check_chain(&[100, 1, 1, 100]);
    }

    /// A residual block by hand: x(0) -> conv a(1) -> conv b(2); add(b, x) -> y(3).
    /// Step 0 holds x and a, step 1 x, a and b, step 2 x, b and y.
    #[test]
    fn residual_table() {
        let sizes = [100, 100, 100, 100];
        let life = [
            Lifetime { first: 0, last: 2 },
            Lifetime { first: 0, last: 1 },
            Lifetime { first: 1, last: 2 },
            Lifetime { first: 2, last: 2 },
        ];
        let p = plan(&sizes, &life, false);
        assert_eq!(simulate(&sizes, &life, &p), 300);
        assert_eq!(p.live_peak_bytes, 300);
        assert_eq!(p.arena_bytes, 300, "a reused: y takes a's place");
        assert_eq!(p.naive_bytes, 400);
    }

    proptest::proptest! {
        #[test]
        fn random_chains(sizes in proptest::collection::vec(1usize..5000, 1..12)) {
            check_chain(&sizes);
        }

        /// Random graphs: each tensor's last use is at or after its birth; the greedy layout must
        /// never overlap live tensors and never beat the lower bound.
        #[test]
        fn random_graphs(
            spec in proptest::collection::vec((1usize..3000, 0usize..6), 1..30),
        ) {
            let n = spec.len();
            let sizes: Vec<usize> = spec.iter().map(|s| s.0).collect();
            let life: Vec<Lifetime> = spec
                .iter()
                .enumerate()
                .map(|(t, &(_, extra))| {
                    let first = t.saturating_sub(1);
                    Lifetime { first, last: (first + extra).min(n.saturating_sub(1).max(first)) }
                })
                .collect();
            let p = plan(&sizes, &life, false);
            let brute = simulate(&sizes, &life, &p);
            proptest::prop_assert_eq!(p.live_peak_bytes, brute);
            proptest::prop_assert!(p.arena_bytes >= brute);
            proptest::prop_assert!(p.arena_bytes <= p.naive_bytes);
        }
    }
}
