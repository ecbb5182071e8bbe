//! The sampler's state: gaps, live samples, stacks, and the exact count of bytes allocated.
//!
//! The allocation counter itself lives outside (an atomic the hook's fast path decrements);
//! this holds what only the slow path and the reads touch, under the lock in `state`.

use crate::interval::Gaps;
use crate::samples::{FreeFilter, Sample, SampleTable};
use crate::stacks::{Change, Frame, Stacks, MAX_STACKS};

/// What a sample point left for the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The gap to the next sample point: the new value of the allocation counter.
    pub next_gap: i64,
    /// The stack was new: the hook keeps its frames' code objects alive.
    pub new_stack: bool,
}

/// Everything the sampler knows.
pub struct Profiler {
    gaps: Gaps,
    samples: SampleTable,
    stacks: Stacks,
    filter: &'static FreeFilter,
    live_bytes: u64,
    /// Highest `live_bytes` since the last `take_peak`.
    peak_bytes: u64,
    /// The gap drawn last (the allocation counter's value then).
    interval_start: i64,
    /// Bytes allocated up to the start of the current gap.
    consumed: u64,
    /// Samples taken since the start.
    pub taken: u64,
    /// Samples not held: the table was full.
    pub dropped: u64,
    /// Samples replaced by a new block at their address (a free the hook missed).
    pub stale: u64,
    changes: Vec<Change>,
}

/// The counters a read returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Estimated live bytes (sum of the live samples' weights).
    pub live_bytes: u64,
    /// Bytes allocated since the start (exact).
    pub allocated_bytes: u64,
    /// Live samples held.
    pub samples: u64,
    /// Samples taken since the start.
    pub taken: u64,
    /// Samples dropped (table full).
    pub dropped: u64,
    /// Samples put on the overflow stack (stack table full).
    pub overflowed: u64,
    /// Bytes of memory the sampler holds.
    pub footprint: u64,
}

impl Profiler {
    /// A fresh sampler with the first gap drawn; None when its memory cannot be had.
    pub fn new(mean: u64, seed: u64, depth: usize, filter: &'static FreeFilter) -> Option<Self> {
        let mut changes = Vec::new();
        changes.try_reserve_exact(MAX_STACKS).ok()?;
        let mut gaps = Gaps::new(mean, seed);
        let first = gaps.next_gap();
        let mut samples = SampleTable::default();
        // The first slots now, not during the first invocations (see `Stacks::new`).
        samples.reserve_first()?;
        Some(Profiler {
            gaps,
            samples,
            stacks: Stacks::new(depth)?,
            filter,
            live_bytes: 0,
            peak_bytes: 0,
            interval_start: first,
            consumed: 0,
            taken: 0,
            dropped: 0,
            stale: 0,
            changes,
        })
    }

    /// The first value of the allocation counter.
    pub fn first_gap(&self) -> i64 {
        self.interval_start
    }

    /// The mean gap, bytes.
    pub fn mean(&self) -> u64 {
        self.gaps.mean()
    }

    /// Restarts the gap sequence from `seed` (a restored snapshot); returns the new counter.
    pub fn reseed(&mut self, seed: u64, counter: i64) -> i64 {
        self.consumed = self.allocated(counter);
        self.gaps.reseed(seed);
        self.interval_start = self.gaps.next_gap();
        self.interval_start
    }

    /// Closes the current gap at `counter` (≤ 0) and draws the next one.
    fn advance(&mut self, counter: i64) -> i64 {
        self.consumed = self.allocated(counter);
        self.interval_start = self.gaps.next_gap();
        self.interval_start
    }

    /// A sample point reached while nothing may be sampled (the sampler's own allocations):
    /// the point is used up, no sample is taken. Returns the new counter.
    pub fn skip(&mut self, counter: i64) -> i64 {
        self.advance(counter)
    }

    /// A sample point in the block at `ptr` of `size` bytes allocated at `frames`.
    pub fn record(&mut self, ptr: usize, size: u64, frames: &[Frame], counter: i64) -> Recorded {
        let next_gap = self.advance(counter);
        self.taken += 1;
        let interned = self.stacks.intern(frames);
        let weight = self.gaps.weight(size);
        let sample = Sample {
            ptr,
            weight,
            stack: interned.id,
        };
        match self.samples.insert(sample) {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    self.stale += 1;
                    self.forget(old);
                }
                self.filter.add(ptr);
                self.live_bytes = self.live_bytes.saturating_add(weight);
                self.peak_bytes = self.peak_bytes.max(self.live_bytes);
                self.stacks.add_live(interned.id, weight as i64);
            }
            Err(_) => self.dropped += 1,
        }
        Recorded {
            next_gap,
            new_stack: interned.new,
        }
    }

    fn forget(&mut self, old: Sample) {
        self.live_bytes = self.live_bytes.saturating_sub(old.weight);
        self.stacks.add_live(old.stack, -(old.weight as i64));
    }

    /// A free (or a moving realloc) of `ptr`: forgets its sample, if it is one.
    pub fn remove(&mut self, ptr: usize) -> bool {
        match self.samples.remove(ptr) {
            Some(old) => {
                self.filter.remove(ptr);
                self.forget(old);
                true
            }
            None => false,
        }
    }

    /// Bytes allocated since the start, given the allocation counter now.
    pub fn allocated(&self, counter: i64) -> u64 {
        self.consumed
            .saturating_add(self.interval_start.saturating_sub(counter).max(0) as u64)
    }

    /// The counters, given the allocation counter now.
    pub fn totals(&self, counter: i64) -> Totals {
        Totals {
            live_bytes: self.live_bytes,
            allocated_bytes: self.allocated(counter),
            samples: self.samples.len() as u64,
            taken: self.taken,
            dropped: self.dropped,
            overflowed: self.stacks.overflowed,
            footprint: (self.samples.footprint()
                + self.stacks.footprint()
                + self.changes.capacity() * 24) as u64,
        }
    }

    /// The highest live estimate since the last call (the estimate only rises at a sample, so
    /// this is exact for the estimate); the next period starts at the live estimate now.
    pub fn take_peak(&mut self) -> u64 {
        let peak = self.peak_bytes.max(self.live_bytes);
        self.peak_bytes = self.live_bytes;
        peak
    }

    /// The stacks whose live bytes changed since the last call (copied out: the caller turns
    /// them into Python objects after the lock is released).
    pub fn changes(&mut self, out: &mut Vec<Change>) {
        self.stacks.take_changes(&mut self.changes);
        out.clear();
        if out.try_reserve(self.changes.len()).is_ok() {
            out.extend_from_slice(&self.changes);
        }
    }

    /// The frames of a stack, copied into `out`; returns how many.
    pub fn frames(&self, id: u32, out: &mut [Frame]) -> usize {
        let frames = self.stacks.frames_of(id);
        let n = frames.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), frames.get(..n)) {
            dst.copy_from_slice(src);
        }
        n
    }

    /// Every code object held by the stacks (to release them when the sampler stops).
    pub fn codes(&self) -> impl Iterator<Item = usize> + '_ {
        self.stacks.codes()
    }

    /// Forgets every sample (the filter included); the stacks stay.
    pub fn clear_samples(&mut self) {
        for s in self.samples.iter() {
            self.filter.remove(s.ptr);
        }
        self.samples.clear();
        self.filter.clear();
        self.live_bytes = 0;
        self.peak_bytes = 0;
        self.stacks.take_changes(&mut self.changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::{OVERFLOW_STACK, UNKNOWN_STACK};

    fn filter() -> &'static FreeFilter {
        Box::leak(Box::new(FreeFilter::new()))
    }

    fn frames(n: usize) -> Vec<Frame> {
        vec![Frame {
            code: 0x10 * (n + 1),
            line: n as i32,
        }]
    }

    /// Drives the profiler the way the hook does: a counter decremented by every allocation,
    /// a sample at every point; frees remove.
    #[test]
    fn live_estimate_follows_allocations_and_frees() {
        let mut p = Profiler::new(4096, 3, 16, filter()).unwrap();
        let mut counter = p.first_gap();
        let mut live: Vec<usize> = Vec::new();
        let mut truth: u64 = 0;
        for i in 0..200_000usize {
            let ptr = (i + 1) * 16;
            let size = 32 + (i % 7) as u64 * 16;
            counter -= size as i64;
            if counter <= 0 {
                counter = p.record(ptr, size, &frames(i % 3), counter).next_gap;
            }
            if i % 4 == 0 {
                // every fourth block freed at once: transient
                if p.filter.may_hold(ptr) {
                    p.remove(ptr);
                }
            } else {
                live.push(ptr);
                truth += size;
            }
        }
        let t = p.totals(counter);
        let err = t.live_bytes as f64 / truth as f64 - 1.0;
        assert!(err.abs() < 0.05, "estimate {} truth {truth}", t.live_bytes);
        let total: u64 = (0..200_000u64).map(|i| 32 + (i % 7) * 16).sum();
        assert_eq!(t.allocated_bytes, total);
        for ptr in live {
            if p.filter.may_hold(ptr) {
                p.remove(ptr);
            }
        }
        assert_eq!(p.totals(counter).live_bytes, 0);
        assert_eq!(p.totals(counter).samples, 0);
    }

    #[test]
    fn changes_name_the_growing_stack() {
        let mut p = Profiler::new(1, 1, 16, filter()).unwrap();
        let mut out = Vec::new();
        p.record(16, 100, &frames(1), 0);
        p.record(32, 100, &frames(2), 0);
        p.remove(32);
        p.changes(&mut out);
        assert_eq!(out.len(), 1);
        let mut buf = [Frame::default(); 4];
        assert_eq!(p.frames(out[0].id, &mut buf), 1);
        assert_eq!(buf[0], frames(1)[0]);
        // A stale sample replaced at the same address is counted, not double-counted.
        p.record(16, 100, &frames(1), 0);
        assert_eq!(p.stale, 1);
        assert_eq!(p.totals(0).samples, 1);
        assert_ne!(out[0].id, UNKNOWN_STACK);
        assert_ne!(out[0].id, OVERFLOW_STACK);
    }

    #[test]
    fn peak_is_the_highest_estimate_since_the_last_read() {
        let mut p = Profiler::new(1, 1, 16, filter()).unwrap();
        p.record(16, 1000, &frames(1), 0);
        p.record(32, 1000, &frames(1), 0);
        p.remove(16);
        p.remove(32);
        p.record(48, 500, &frames(1), 0);
        assert_eq!(p.take_peak(), 2000);
        assert_eq!(p.take_peak(), 500);
    }

    #[test]
    fn skipped_points_sample_nothing_and_keep_the_count() {
        let mut p = Profiler::new(1000, 9, 16, filter()).unwrap();
        let start = p.first_gap();
        let c = p.skip(start - 5000);
        assert_eq!(p.totals(c).allocated_bytes, 5000);
        assert_eq!(p.totals(c).samples, 0);
    }
}
