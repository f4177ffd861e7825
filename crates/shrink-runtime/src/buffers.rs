//! A session's pool of f32 buffers, fed by the liveness plan.
//!
//! Without it every op allocates its output afresh: large outputs come from
//! `mmap`, so each run pays one page fault per 4 KiB touched (a batch-256
//! MobileNet layer spent most of its time faulting a fresh 51 MB output).
//! The session hands every dead value's storage to the pool instead, and ops
//! take their outputs from it ([`crate::OpContext::output_f32`]), so from the
//! second run on the same allocations go round.
//!
//! Bounded: a buffer not taken again within [`KEEP_RUNS`] runs is dropped, so
//! values that are never reused (a fed input of a size no op asks for) do
//! not pile up across runs.

use shrink_tensor::{Tensor, TensorData};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Runs a pooled buffer survives without being taken.
const KEEP_RUNS: u64 = 2;
/// Buffers smaller than this are not worth a lock round trip.
const MIN_LEN: usize = 1024;

#[derive(Default)]
struct Inner {
    /// Length → buffers of exactly that length, each with the run it was
    /// pooled in.
    free: BTreeMap<usize, Vec<(u64, Vec<f32>)>>,
    run: u64,
}

/// Recycled f32 storage, shared by the runs of one session.
#[derive(Default)]
pub(crate) struct BufferPool {
    inner: Mutex<Inner>,
}

impl BufferPool {
    /// A buffer of `len` floats with unspecified (but initialised) contents:
    /// a recycled one when a pooled buffer of `len..=2·len` floats exists,
    /// else a fresh zeroed one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        if len >= MIN_LEN {
            if let Ok(mut p) = self.inner.lock() {
                let hit = p
                    .free
                    .range_mut(len..=len.saturating_mul(2))
                    .find(|(_, v)| !v.is_empty())
                    .map(|(&k, _)| k);
                if let Some(k) = hit {
                    let list = p.free.get_mut(&k);
                    if let Some((_, mut v)) = list.and_then(|l| l.pop()) {
                        v.truncate(len);
                        return v;
                    }
                }
            }
        }
        vec![0f32; len]
    }

    /// Gives a dead value's storage back (f32 only; other dtypes are dropped).
    pub fn recycle(&self, t: Tensor) {
        let (_, data) = t.into_parts();
        let TensorData::F32(mut v) = data else {
            return;
        };
        if v.capacity() < MIN_LEN {
            return;
        }
        // Expose the whole allocation so a later, larger request can use it.
        v.resize(v.capacity(), 0.0);
        if let Ok(mut p) = self.inner.lock() {
            let run = p.run;
            p.free.entry(v.len()).or_default().push((run, v));
        }
    }

    /// Marks the start of a run and drops buffers unused for [`KEEP_RUNS`] runs.
    pub fn next_run(&self) {
        if let Ok(mut p) = self.inner.lock() {
            p.run += 1;
            let run = p.run;
            for list in p.free.values_mut() {
                list.retain(|(r, _)| run - r <= KEEP_RUNS);
            }
            p.free.retain(|_, l| !l.is_empty());
        }
    }

    /// Floats currently pooled (for tests).
    #[cfg(test)]
    pub fn pooled(&self) -> usize {
        self.inner.lock().map_or(0, |p| {
            p.free.iter().map(|(len, l)| len * l.len()).sum::<usize>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_a_dead_buffer_and_drops_stale_ones() {
        let pool = BufferPool::default();
        let t = Tensor::from_vec(vec![4096], vec![1.5f32; 4096]).unwrap();
        pool.recycle(t);
        assert_eq!(pool.pooled(), 4096);
        // Too small a request for this buffer (more than 2× waste): fresh.
        let small = pool.take(1500);
        assert_eq!(small, vec![0.0; 1500]);
        assert_eq!(pool.pooled(), 4096);
        // A fitting request gets the recycled storage back, truncated.
        let v = pool.take(3000);
        assert_eq!(v.len(), 3000);
        assert!(v.iter().all(|&x| x == 1.5));
        assert_eq!(pool.pooled(), 0);
        // Unused buffers age out after KEEP_RUNS runs.
        pool.recycle(Tensor::from_vec(vec![3000], v).unwrap());
        for _ in 0..KEEP_RUNS {
            pool.next_run();
            assert!(pool.pooled() >= 3000);
        }
        pool.next_run();
        assert_eq!(pool.pooled(), 0);
        // Non-f32 and tiny values are not pooled.
        pool.recycle(Tensor::from_vec(vec![4096], vec![1i64; 4096]).unwrap());
        pool.recycle(Tensor::from_vec(vec![8], vec![1f32; 8]).unwrap());
        assert_eq!(pool.pooled(), 0);
    }
}
