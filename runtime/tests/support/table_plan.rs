//! The layout of the first arena planner (format v4, with format v5's fourth order), kept as an independent test reference (shared
//! by the planner's unit tests and the structured fuzz harness): the in-place planner must
//! place every region exactly as it did, since blobs record the arena it computed.

/// The first planner's layout (its tables were on the stack): `sizes[t]` and `life[t]` (first
/// and last step) describe region `t`; `chain` selects the ping-pong layout. Returns the
/// offsets and the arena.
pub fn table_plan(sizes: &[usize], life: &[(usize, usize)], chain: bool) -> (Vec<usize>, usize) {
    let n = sizes.len();
    let steps = life.iter().map(|l| l.1 + 1).max().unwrap_or(0).max(1);
    let live = (0..steps)
        .map(|k| {
            (0..n)
                .filter(|&t| life[t].0 <= k && k <= life[t].1)
                .map(|t| sizes[t])
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    if chain {
        let offs = (0..n)
            .map(|t| if t % 2 == 0 { 0 } else { live - sizes[t] })
            .collect();
        return (offs, live);
    }
    let overlaps = |a: usize, b: usize| life[a].0 <= life[b].1 && life[b].0 <= life[a].1;
    let mut best = (Vec::new(), usize::MAX);
    for kind in 0..4 {
        let key = |t: usize| -> (usize, usize) {
            let (s, (f, l)) = (sizes[t], life[t]);
            match kind {
                0 => (usize::MAX - s, f),
                1 => (f, usize::MAX - s),
                2 => (usize::MAX - (l - f), usize::MAX - s),
                _ => (usize::MAX - s, usize::MAX - f),
            }
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&t| key(t)); // stable: ties keep index order
        let mut offs = vec![0usize; n];
        let mut placed = vec![false; n];
        let mut arena = 0;
        for &t in &order {
            let conflicts = |u: usize| placed[u] && u != t && overlaps(u, t);
            let fits = |at: usize| {
                (0..n)
                    .all(|u| !conflicts(u) || at + sizes[t] <= offs[u] || offs[u] + sizes[u] <= at)
            };
            let mut at = usize::MAX;
            if fits(0) {
                at = 0;
            }
            for u in 0..n {
                let c = offs[u] + sizes[u];
                if conflicts(u) && c < at && fits(c) {
                    at = c;
                }
            }
            offs[t] = at;
            placed[t] = true;
            arena = arena.max(at + sizes[t]);
        }
        if arena < best.1 {
            best = (offs, arena);
        }
    }
    best
}
