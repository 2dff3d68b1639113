//! A per-thread cache of large `f32` buffers, reused from one training step to the next.
//!
//! Why: a step allocates and frees some 20 MB of activations, gradients and im2col matrices.
//! glibc hands a freed heap top back to the kernel once it exceeds its trim threshold, so the
//! next step page-faults the same memory in again; measured on the reference CNN that was half
//! of all CPU time (kernel time). Dropping a [`Graph`](super::Graph) returns its buffers here,
//! and ops take their outputs from here, so after the first step a training loop runs without
//! touching the system allocator for big tensors — whether it builds a new graph each step
//! or reuses one.
//!
//! Buffers come back with stale contents: `take` is for outputs the caller overwrites
//! completely, `take_zeroed` for accumulators.

use std::cell::RefCell;
use std::collections::VecDeque;

use super::Tensor;

/// Smaller buffers are left to the system allocator, which handles them well.
const MIN_POOLED: usize = 16 * 1024;
/// Bounds on what one thread keeps: more than a step of grid-det at batch 64 needs (about
/// 60 buffers, 110 M floats at their peak).
const MAX_BUFFERS: usize = 256;
const MAX_FLOATS: usize = 256 << 20;

thread_local! {
    /// Oldest first: when the bounds are reached the buffers given back longest ago go
    /// first. Buffers that no later step asks for (ops that allocate outside the cache
    /// and give back) then age out instead of filling the cache and crowding out the large
    /// buffers every step reuses.
    static POOL: RefCell<VecDeque<Vec<f32>>> = const { RefCell::new(VecDeque::new()) };
}

/// A vector of length `len` with unspecified (but initialised) contents.
pub(crate) fn take(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED {
        let hit = POOL.with(|p| {
            let mut p = p.borrow_mut();
            // Best fit: the smallest buffer that is large enough.
            let i = p
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)?;
            p.remove(i)
        });
        if let Some(mut v) = hit {
            v.resize(len, 0.0); // a no-op in the steady state, where sizes repeat
            return v;
        }
    }
    vec![0.0; len]
}

/// A zero-filled vector of length `len`.
pub(crate) fn take_zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.fill(0.0);
    v
}

/// Returns a buffer for reuse (or frees it if it is small), first freeing the oldest cached
/// buffers if keeping it would exceed the bounds.
pub(crate) fn give(v: Vec<f32>) {
    if v.capacity() < MIN_POOLED || v.capacity() > MAX_FLOATS {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let mut held: usize = p.iter().map(Vec::capacity).sum();
        while p.len() >= MAX_BUFFERS || held + v.capacity() > MAX_FLOATS {
            match p.pop_front() {
                Some(old) => held -= old.capacity(),
                None => break,
            }
        }
        p.push_back(v);
    });
}

/// Returns a tensor's storage for reuse.
pub(crate) fn give_tensor(t: Tensor) {
    if t.len() >= MIN_POOLED {
        let (v, _) = t.into_raw_vec_and_offset();
        give(v);
    }
}

/// Frees every cached buffer of the calling thread (e.g. after training, before a long
/// evaluation-only phase).
pub fn release_cached_buffers() {
    POOL.with(|p| p.borrow_mut().clear());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_best_fitting_buffer() {
        release_cached_buffers();
        let a = take(MIN_POOLED * 4);
        let b = take(MIN_POOLED * 2);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        give(a);
        give(b);
        let c = take(MIN_POOLED * 2 - 5);
        assert_eq!(c.as_ptr(), pb, "smallest sufficient buffer first");
        assert_eq!(c.len(), MIN_POOLED * 2 - 5);
        let d = take_zeroed(MIN_POOLED * 3);
        assert_eq!(d.as_ptr(), pa);
        assert!(d.iter().all(|&v| v == 0.0));
        give(vec![1.0; 10]); // too small to keep
        assert_eq!(POOL.with(|p| p.borrow().len()), 0);
        release_cached_buffers();
    }

    /// Regression: buffers nobody takes again used to fill the cache to its bound, after
    /// which every large buffer given back was freed and page-faulted in again next step
    /// (a quarter of grid-det's training time was kernel time).
    #[test]
    fn buffers_nobody_reuses_age_out() {
        release_cached_buffers();
        for _ in 0..MAX_BUFFERS + 10 {
            give(vec![0.0; MIN_POOLED]);
        }
        give(vec![0.0; MIN_POOLED * 64]);
        let kept = POOL.with(|p| p.borrow().iter().any(|b| b.capacity() >= MIN_POOLED * 64));
        assert!(kept, "the large buffer was freed");
        assert!(POOL.with(|p| p.borrow().len()) <= MAX_BUFFERS);
        release_cached_buffers();
    }
}
