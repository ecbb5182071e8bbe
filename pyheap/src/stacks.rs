//! Interned allocation stacks and the live bytes each one holds.
//!
//! A stack is the sequence of (code object, line) of the Python frames at a sampled
//! allocation, newest first. Each distinct stack is stored once (bounded: past `MAX_STACKS`
//! samples go to the overflow stack, counted) and keeps the live bytes of its samples and what
//! it held at the last read, so a read returns only the stacks whose live bytes changed.
//! Nothing here calls into Python; the caller owns the references to the code objects.

/// Distinct stacks held at most.
pub const MAX_STACKS: usize = 4096;
/// The stack of samples taken where no Python frame could be read (no thread state, an
/// exception being raised, the interpreter finalizing).
pub const UNKNOWN_STACK: u32 = 0;
/// The stack of samples whose own stack found the table full.
pub const OVERFLOW_STACK: u32 = 1;
/// Frames kept per stack at most.
pub const MAX_FRAMES: usize = 64;
const INDEX_SLOTS: usize = MAX_STACKS * 2;

/// One frame: the code object's address (a strong reference held by the caller) and a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Address of the code object.
    pub code: usize,
    /// Line number, or on CPython 3.11+ the instruction's byte offset (`-1` when unknown).
    pub line: i32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    start: u32,
    len: u32,
    hash: u64,
    live: i64,
    baseline: i64,
    dirty: bool,
}

/// What interning a stack gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interned {
    /// The stack's id.
    pub id: u32,
    /// Whether it is new: the caller then keeps its code objects alive.
    pub new: bool,
}

/// A stack whose live bytes changed since the last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The stack's id.
    pub id: u32,
    /// Live bytes now minus at the last read.
    pub delta: i64,
    /// Live bytes now.
    pub live: i64,
}

/// The interned stacks.
#[derive(Debug)]
pub struct Stacks {
    frames: Vec<Frame>,
    meta: Vec<Meta>,
    index: Vec<u32>,
    dirty: Vec<u32>,
    /// Samples that found the table full.
    pub overflowed: u64,
}

fn hash_of(frames: &[Frame]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for f in frames {
        h = (h ^ f.code as u64).wrapping_mul(0x0000_0100_0000_01B3);
        h = (h ^ f.line as u32 as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

impl Stacks {
    /// An empty set with its fixed index (and the two reserved stacks); None when memory for
    /// it cannot be had.
    pub fn new(depth: usize) -> Option<Self> {
        let mut index = Vec::new();
        index.try_reserve_exact(INDEX_SLOTS).ok()?;
        index.resize(INDEX_SLOTS, 0);
        let mut dirty = Vec::new();
        dirty.try_reserve_exact(MAX_STACKS).ok()?;
        // Room for every stack, written once now: the tables then never grow (page by page, in
        // the process's resident memory), which the leak analysis would read as the function's
        // own growth while new stacks keep appearing. About 1.2 MB at 16 frames.
        let depth = depth.clamp(1, MAX_FRAMES);
        let mut meta = Vec::new();
        meta.try_reserve_exact(MAX_STACKS).ok()?;
        meta.resize(MAX_STACKS, Meta::default());
        meta.truncate(2);
        let mut frames = Vec::new();
        frames.try_reserve_exact(MAX_STACKS * depth).ok()?;
        frames.resize(MAX_STACKS * depth, Frame::default());
        frames.clear();
        Some(Stacks {
            frames,
            meta,
            index,
            dirty,
            overflowed: 0,
        })
    }

    /// Distinct stacks held, the two reserved ones included.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether only the reserved stacks exist.
    pub fn is_empty(&self) -> bool {
        self.meta.len() <= 2
    }

    /// Bytes of memory held.
    pub fn footprint(&self) -> usize {
        self.frames.capacity() * std::mem::size_of::<Frame>()
            + self.meta.capacity() * std::mem::size_of::<Meta>()
            + self.index.capacity() * 4
            + self.dirty.capacity() * 4
    }

    /// The frames of a stack, newest first (empty for the reserved ones).
    pub fn frames_of(&self, id: u32) -> &[Frame] {
        let Some(m) = self.meta.get(id as usize) else {
            return &[];
        };
        let start = m.start as usize;
        self.frames
            .get(start..start + m.len as usize)
            .unwrap_or(&[])
    }

    /// The id of `frames` (interned if new); the overflow stack when the table is full.
    pub fn intern(&mut self, frames: &[Frame]) -> Interned {
        let frames = frames.get(..frames.len().min(MAX_FRAMES)).unwrap_or(&[]);
        if frames.is_empty() {
            return Interned {
                id: UNKNOWN_STACK,
                new: false,
            };
        }
        let hash = hash_of(frames);
        let mask = INDEX_SLOTS - 1;
        let mut i = (hash as usize) & mask;
        loop {
            let Some(&slot) = self.index.get(i) else {
                return self.overflow();
            };
            if slot == 0 {
                break;
            }
            let id = slot - 1;
            if self.meta.get(id as usize).is_some_and(|m| m.hash == hash)
                && self.frames_of(id) == frames
            {
                return Interned { id, new: false };
            }
            i = (i + 1) & mask;
        }
        if self.meta.len() >= MAX_STACKS
            || self.meta.try_reserve(1).is_err()
            || self.frames.try_reserve(frames.len()).is_err()
        {
            return self.overflow();
        }
        let id = self.meta.len() as u32;
        let start = self.frames.len() as u32;
        self.frames.extend_from_slice(frames);
        self.meta.push(Meta {
            start,
            len: frames.len() as u32,
            hash,
            ..Meta::default()
        });
        if let Some(slot) = self.index.get_mut(i) {
            *slot = id + 1;
        }
        Interned { id, new: true }
    }

    fn overflow(&mut self) -> Interned {
        self.overflowed += 1;
        Interned {
            id: OVERFLOW_STACK,
            new: false,
        }
    }

    /// Adds `bytes` (negative: removes) to a stack's live bytes.
    pub fn add_live(&mut self, id: u32, bytes: i64) {
        let Some(m) = self.meta.get_mut(id as usize) else {
            return;
        };
        m.live = m.live.saturating_add(bytes);
        if !m.dirty {
            m.dirty = true;
            // Capacity for every stack was reserved up front: this push never allocates.
            if self.dirty.len() < self.dirty.capacity() {
                self.dirty.push(id);
            }
        }
    }

    /// The stacks whose live bytes changed since the last call, into `out` (cleared first);
    /// their baselines move to now.
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        out.clear();
        for &id in &self.dirty {
            if let Some(m) = self.meta.get_mut(id as usize) {
                let delta = m.live - m.baseline;
                if delta != 0 {
                    out.push(Change {
                        id,
                        delta,
                        live: m.live,
                    });
                }
                m.baseline = m.live;
                m.dirty = false;
            }
        }
        self.dirty.clear();
    }

    /// Every code object address held (each once per frame that holds it).
    pub fn codes(&self) -> impl Iterator<Item = usize> + '_ {
        self.frames.iter().map(|f| f.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(seed: usize, depth: usize) -> Vec<Frame> {
        (0..depth)
            .map(|d| Frame {
                code: 0x1000 + seed * 64 + d,
                line: (seed * 3 + d) as i32,
            })
            .collect()
    }

    #[test]
    fn interning_is_stable_and_bounded() {
        let mut s = Stacks::new(16).unwrap();
        let a = s.intern(&stack(1, 5));
        assert!(a.new);
        assert_eq!(
            s.intern(&stack(1, 5)),
            Interned {
                id: a.id,
                new: false
            }
        );
        assert_eq!(s.frames_of(a.id), &stack(1, 5)[..]);
        assert_ne!(s.intern(&stack(1, 4)).id, a.id);
        assert_eq!(s.intern(&[]).id, UNKNOWN_STACK);
        for i in 2..MAX_STACKS + 10 {
            s.intern(&stack(i, 3));
        }
        assert_eq!(s.len(), MAX_STACKS);
        assert_eq!(s.intern(&stack(MAX_STACKS + 50, 3)).id, OVERFLOW_STACK);
        assert!(s.overflowed > 0);
        // Known stacks are still found when the table is full.
        assert_eq!(s.intern(&stack(1, 5)).id, a.id);
    }

    #[test]
    fn changes_are_net_since_the_last_read() {
        let mut s = Stacks::new(16).unwrap();
        let a = s.intern(&stack(1, 2)).id;
        let b = s.intern(&stack(2, 2)).id;
        let mut out = Vec::new();
        s.add_live(a, 100);
        s.add_live(b, 50);
        s.add_live(b, -50);
        s.take_changes(&mut out);
        assert_eq!(
            out,
            vec![Change {
                id: a,
                delta: 100,
                live: 100
            }]
        );
        s.take_changes(&mut out);
        assert!(out.is_empty());
        s.add_live(a, -40);
        s.take_changes(&mut out);
        assert_eq!(
            out,
            vec![Change {
                id: a,
                delta: -40,
                live: 60
            }]
        );
    }
}
