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

use super::Tensor;

/// Smaller buffers are left to the system allocator, which handles them well.
const MIN_POOLED: usize = 16 * 1024;
/// Bounds on what one thread keeps: more than a step of the reference CNN needs.
const MAX_BUFFERS: usize = 128;
const MAX_FLOATS: usize = 64 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
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
            Some(p.swap_remove(i))
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

/// Returns a buffer for reuse (or frees it if it is small or the cache is full).
pub(crate) fn give(v: Vec<f32>) {
    if v.capacity() < MIN_POOLED {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let held: usize = p.iter().map(Vec::capacity).sum();
        if p.len() < MAX_BUFFERS && held + v.capacity() <= MAX_FLOATS {
            p.push(v);
        }
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
}
