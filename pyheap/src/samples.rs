//! The live sampled blocks: an open-addressing table keyed by address, and the filter that
//! lets every other free skip it.
//!
//! The table only grows by doubling (into memory of the system allocator, never Python's),
//! up to a fixed number of live samples; past it a sample is dropped and counted. Nothing here
//! calls into Python, so it runs under the sampler's lock without re-entering it.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Live samples held at most: past it, samples are dropped (counted).
pub const MAX_LIVE_SAMPLES: usize = 1 << 16;
const FIRST_SLOTS: usize = 1 << 12;
const FILTER_BITS: u32 = 16;

/// One live sampled block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// The block's address (never 0 for a used slot).
    pub ptr: usize,
    /// The bytes this sample stands for.
    pub weight: u64,
    /// The interned stack that allocated it.
    pub stack: u32,
}

/// Why a sample was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The table holds `MAX_LIVE_SAMPLES` already, or could not grow.
    Full,
}

fn slot_of(ptr: usize, mask: usize) -> usize {
    // Blocks are 8- or 16-byte aligned: a multiplicative hash spreads the high bits down.
    ((ptr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize & mask
}

/// Live samples by address.
#[derive(Debug, Default)]
pub struct SampleTable {
    slots: Vec<Sample>,
    len: usize,
}

impl SampleTable {
    /// Live samples held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory the table holds.
    pub fn footprint(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Sample>()
    }

    /// Makes the table's first slots (written, so resident now).
    pub fn reserve_first(&mut self) -> Option<()> {
        if self.slots.is_empty() && !self.grow() {
            return None;
        }
        Some(())
    }

    fn grow(&mut self) -> bool {
        let want = if self.slots.is_empty() {
            FIRST_SLOTS
        } else {
            self.slots.len() * 2
        };
        let mut fresh: Vec<Sample> = Vec::new();
        if fresh.try_reserve_exact(want).is_err() {
            return false;
        }
        fresh.resize(want, Sample::default());
        let old = std::mem::replace(&mut self.slots, fresh);
        self.len = 0;
        for s in old.into_iter().filter(|s| s.ptr != 0) {
            let _ = self.place(s);
        }
        true
    }

    fn place(&mut self, sample: Sample) -> Option<Sample> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = slot_of(sample.ptr, mask);
        loop {
            match self.slots.get_mut(i) {
                Some(slot) if slot.ptr == 0 => {
                    self.len += 1;
                    *slot = sample;
                    return None;
                }
                Some(slot) if slot.ptr == sample.ptr => {
                    return Some(std::mem::replace(slot, sample))
                }
                Some(_) => i = (i + 1) & mask,
                None => return None,
            }
        }
    }

    /// Stores a sample; returns the one it replaced at the same address (which can only be
    /// stale: a free the hook did not see).
    pub fn insert(&mut self, sample: Sample) -> Result<Option<Sample>, Refused> {
        if sample.ptr == 0 {
            return Ok(None);
        }
        if self.len >= MAX_LIVE_SAMPLES {
            return Err(Refused::Full);
        }
        if (self.len + 1) * 2 > self.slots.len() && !self.grow() {
            return Err(Refused::Full);
        }
        Ok(self.place(sample))
    }

    /// Removes and returns the sample at `ptr`, if any (backward-shift deletion keeps probe
    /// chains whole without tombstones).
    pub fn remove(&mut self, ptr: usize) -> Option<Sample> {
        if self.slots.is_empty() || ptr == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = slot_of(ptr, mask);
        loop {
            let slot = *self.slots.get(i)?;
            if slot.ptr == 0 {
                return None;
            }
            if slot.ptr == ptr {
                break;
            }
            i = (i + 1) & mask;
        }
        let found = *self.slots.get(i)?;
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let next = *self.slots.get(j)?;
            if next.ptr == 0 {
                break;
            }
            let home = slot_of(next.ptr, mask);
            // `next` may move into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                *self.slots.get_mut(hole)? = next;
                hole = j;
            }
        }
        *self.slots.get_mut(hole)? = Sample::default();
        self.len -= 1;
        Some(found)
    }

    /// Every live sample.
    pub fn iter(&self) -> impl Iterator<Item = &Sample> {
        self.slots.iter().filter(|s| s.ptr != 0)
    }

    /// Drops every sample and gives the memory back.
    pub fn clear(&mut self) {
        self.slots = Vec::new();
        self.len = 0;
    }
}

/// A counting filter over the addresses of live samples, read without the lock on every free:
/// a zero count means "certainly not sampled", the common case. A count that reaches 255
/// sticks there (never decremented), so the filter can give false positives, never false
/// negatives. The free path reads a bit per cell (set while the cell's count is not zero):
/// 8 KiB that stay in the L1 cache beside the handler's data, where the 64 KiB of counts
/// would not; the counts are only touched when a sample comes or goes, under the lock.
///
/// A cell is 32 bytes of address space, the cells repeating every 2 MiB (two of the
/// allocator's arenas): frees of neighbouring blocks, the common order, read the same filter
/// word, where a hashed cell sent each free to a line of its own (callgrind's cache model:
/// the fast path's extra L1 read misses per allocation-heavy call fell from ~1,070 to ~270,
/// BENCHMARKS.md). Addresses a multiple of 2 MiB apart share a cell: a free there is a false
/// "maybe", as often as under a hash (a sample marks one cell in 65,536 either way).
pub struct FreeFilter {
    counts: [AtomicU8; FILTER_CELLS],
    bits: [AtomicU64; FILTER_CELLS / 64],
}

const FILTER_CELLS: usize = 1 << FILTER_BITS;
/// log2 of a filter cell's bytes of address space.
const FILTER_CELL_SHIFT: u32 = 5;

impl FreeFilter {
    /// An empty filter (a `static`: it lives in zero pages until samples touch it).
    pub const fn new() -> Self {
        FreeFilter {
            counts: [const { AtomicU8::new(0) }; FILTER_CELLS],
            bits: [const { AtomicU64::new(0) }; FILTER_CELLS / 64],
        }
    }

    #[inline(always)]
    fn index(ptr: usize) -> usize {
        (ptr >> FILTER_CELL_SHIFT) & (FILTER_CELLS - 1)
    }

    /// Whether `ptr` may be a sampled block.
    #[inline]
    pub fn may_hold(&self, ptr: usize) -> bool {
        let i = Self::index(ptr);
        self.bits
            .get(i / 64)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (i % 64)) != 0)
    }

    /// Counts a new sample at `ptr` (under the sampler's lock).
    pub fn add(&self, ptr: usize) {
        let i = Self::index(ptr);
        if let (Some(c), Some(w)) = (self.counts.get(i), self.bits.get(i / 64)) {
            let n = c.load(Ordering::Relaxed);
            if n < u8::MAX {
                c.store(n + 1, Ordering::Relaxed);
            }
            if n == 0 {
                w.fetch_or(1 << (i % 64), Ordering::Relaxed);
            }
        }
    }

    /// Uncounts a removed sample at `ptr` (under the sampler's lock).
    pub fn remove(&self, ptr: usize) {
        let i = Self::index(ptr);
        if let (Some(c), Some(w)) = (self.counts.get(i), self.bits.get(i / 64)) {
            let n = c.load(Ordering::Relaxed);
            if n > 0 && n < u8::MAX {
                c.store(n - 1, Ordering::Relaxed);
                if n == 1 {
                    w.fetch_and(!(1 << (i % 64)), Ordering::Relaxed);
                }
            }
        }
    }

    /// Forgets every sample.
    pub fn clear(&self) {
        for c in &self.counts {
            if c.load(Ordering::Relaxed) != 0 {
                c.store(0, Ordering::Relaxed);
            }
        }
        for w in &self.bits {
            if w.load(Ordering::Relaxed) != 0 {
                w.store(0, Ordering::Relaxed);
            }
        }
    }
}

impl Default for FreeFilter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sample(ptr: usize) -> Sample {
        Sample {
            ptr,
            weight: ptr as u64 * 3,
            stack: (ptr % 7) as u32,
        }
    }

    /// Random inserts and removes against a HashMap model, with addresses that collide.
    #[test]
    fn table_matches_a_model() {
        let mut t = SampleTable::default();
        let mut model: HashMap<usize, Sample> = HashMap::new();
        let mut x: u64 = 88172645463325252;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ptr = ((x % 5000) as usize + 1) * 16;
            if x & 1 == 0 {
                t.insert(sample(ptr)).unwrap();
                model.insert(ptr, sample(ptr));
            } else {
                assert_eq!(t.remove(ptr), model.remove(&ptr));
            }
            assert_eq!(t.len(), model.len());
        }
        let mut held: Vec<usize> = t.iter().map(|s| s.ptr).collect();
        held.sort_unstable();
        let mut want: Vec<usize> = model.keys().copied().collect();
        want.sort_unstable();
        assert_eq!(held, want);
    }

    #[test]
    fn table_refuses_past_its_cap() {
        let mut t = SampleTable::default();
        for i in 0..MAX_LIVE_SAMPLES {
            t.insert(sample((i + 1) * 16)).unwrap();
        }
        assert_eq!(
            t.insert(sample(16 * (MAX_LIVE_SAMPLES + 10))),
            Err(Refused::Full)
        );
        assert!(t.footprint() <= 2 * MAX_LIVE_SAMPLES * std::mem::size_of::<Sample>());
        assert!(t.remove(16).is_some());
        assert!(t.insert(sample(16 * (MAX_LIVE_SAMPLES + 10))).is_ok());
    }

    #[test]
    fn filter_never_misses_and_forgets() {
        let f = FreeFilter::new();
        let ptrs: Vec<usize> = (1..3000).map(|i| i * 48).collect();
        for &p in &ptrs {
            f.add(p);
        }
        assert!(ptrs.iter().all(|&p| f.may_hold(p)));
        for &p in &ptrs {
            f.remove(p);
        }
        let false_positives = ptrs.iter().filter(|&&p| f.may_hold(p)).count();
        assert_eq!(false_positives, 0);
        f.add(16);
        f.clear();
        assert!(!f.may_hold(16));
    }

    #[test]
    fn filter_bit_follows_the_cell_count() {
        let f = FreeFilter::new();
        f.add(4096);
        f.add(4096);
        f.remove(4096);
        assert!(f.may_hold(4096), "one sample left in the cell");
        f.remove(4096);
        assert!(!f.may_hold(4096));
        // A saturated cell sticks: its bit stays set whatever is removed.
        for _ in 0..300 {
            f.add(8192);
        }
        for _ in 0..300 {
            f.remove(8192);
        }
        assert!(f.may_hold(8192));
        f.clear();
        assert!(!f.may_hold(8192));
    }

    #[test]
    fn a_sample_marks_its_own_cell_only() {
        let f = FreeFilter::new();
        let sampled = 0x7f00_0040_1000_usize;
        f.add(sampled);
        // The block beside it (another 32-byte cell) and every block of its neighbourhood.
        let near = (1..4096)
            .map(|i| sampled + 32 * i)
            .chain((1..4096).map(|i| sampled - 32 * i));
        assert_eq!(near.filter(|&p| f.may_hold(p)).count(), 0);
        // Its cell's period: an address 2 MiB away is a "maybe", never a "no".
        assert!(f.may_hold(sampled + (2 << 20)));
        assert!(f.may_hold(sampled + 16), "the same 32-byte cell");
    }
}
