//! A counting global allocator: live heap bytes, their peak and the number of live blocks,
//! kept in process-wide relaxed atomics so the layer can read them between invocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

// Process-wide, not per allocator instance: a process has one global allocator, and the layer
// must read the figures without knowing its type.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static BLOCKS: AtomicUsize = AtomicUsize::new(0);

/// Wraps an allocator (the system allocator by default) and counts what goes through it.
///
/// ```
/// use lambda_memory_profile::CountingAlloc;
///
/// #[global_allocator]
/// static GLOBAL: CountingAlloc = CountingAlloc::system();
/// ```
///
/// Any other allocator works the same way: `CountingAlloc::new(MyAllocator)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc<A = System> {
    inner: A,
}

impl CountingAlloc<System> {
    /// Counts allocations of the system allocator.
    pub const fn system() -> Self {
        Self { inner: System }
    }
}

impl<A> CountingAlloc<A> {
    /// Counts allocations of `inner`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

#[inline(always)]
fn added(size: usize) {
    let now = CURRENT.fetch_add(size, Relaxed).wrapping_add(size);
    // A plain load first: most allocations do not raise the peak, and a load is far cheaper
    // than the read-modify-write `fetch_max` would always be.
    if now > PEAK.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

#[inline(always)]
fn removed(size: usize) {
    CURRENT.fetch_sub(size, Relaxed);
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments unchanged and
// returns its result; the counters are only bookkeeping and never touch the memory.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            added(layout.size());
            BLOCKS.fetch_add(1, Relaxed);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            added(layout.size());
            BLOCKS.fetch_add(1, Relaxed);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { self.inner.dealloc(ptr, layout) };
        removed(layout.size());
        BLOCKS.fetch_sub(1, Relaxed);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // One block before and after: only the byte count moves.
            let old = layout.size();
            if new_size >= old {
                added(new_size - old);
            } else {
                removed(old - new_size);
            }
        }
        p
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapStats {
    /// Bytes currently allocated (requested sizes, not the allocator's rounding).
    pub current_bytes: usize,
    /// Highest `current_bytes` since the process started or since the last [`reset_peak`].
    pub peak_bytes: usize,
    /// Blocks currently allocated.
    pub live_blocks: usize,
}

/// Reads the counters. With no [`CountingAlloc`] installed as the global allocator they stay 0.
pub fn stats() -> HeapStats {
    HeapStats {
        current_bytes: CURRENT.load(Relaxed),
        peak_bytes: PEAK.load(Relaxed),
        live_blocks: BLOCKS.load(Relaxed),
    }
}

/// Starts a new peak window: the peak becomes the current byte count. The layer calls it at
/// each invocation's start, so the peak read at its end is that invocation's.
pub fn reset_peak() {
    PEAK.store(CURRENT.load(Relaxed), Relaxed);
}

/// Whether a [`CountingAlloc`] is the global allocator: a Rust program that reached this point
/// holds at least one live allocation, so zero live blocks means nothing is being counted.
pub fn installed() -> bool {
    BLOCKS.load(Relaxed) > 0
}
