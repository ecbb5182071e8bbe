//! The process-wide sampler: the counters the hook's fast path reads, and the profiler behind
//! a lock that is held only for table operations (which never call into Python, so the hook
//! cannot re-enter it).
//!
//! The allocator domains the hook wraps (OBJ, MEM) are called with the GIL held, so the lock
//! is never contended in a correct program. It exists for C code that breaks that rule: it
//! keeps the tables whole, and a wait that does not end turns the sampler off instead of
//! hanging the process.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::profiler::Profiler;
use crate::samples::FreeFilter;

/// The sampler is not running: the hook only forwards.
pub const MODE_OFF: u8 = 0;
/// The sampler samples.
pub const MODE_ACTIVE: u8 = 1;
/// An internal failure turned the sampler off; the hook only forwards.
pub const MODE_FAILED: u8 = 2;

/// Counter value that no allocation pattern reaches: the fast path never leaves it.
pub const NEVER: i64 = i64::MAX;

/// Bytes left until the next sample point (the fast path decrements it).
pub static REMAINING: AtomicI64 = AtomicI64::new(NEVER);
/// `MODE_*`.
pub static MODE: AtomicU8 = AtomicU8::new(MODE_OFF);
/// Set while the hook captures a stack: allocations made meanwhile are the sampler's own.
pub static CAPTURING: AtomicBool = AtomicBool::new(false);
/// Frames captured per sample.
pub static FRAMES: AtomicUsize = AtomicUsize::new(16);
/// Internal failures since the start (each one turns the sampler off).
pub static FAILURES: AtomicU64 = AtomicU64::new(0);
/// Addresses of live samples, for the free path.
pub static FILTER: FreeFilter = FreeFilter::new();

const SPINS_BEFORE_YIELD: u32 = 1 << 10;
const YIELDS_BEFORE_FAILING: u32 = 1 << 16;

struct Shared {
    locked: AtomicBool,
    inner: UnsafeCell<Option<Profiler>>,
}

// SAFETY: `inner` is only reached through `with`, which holds `locked` for the whole access.
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared {
    locked: AtomicBool::new(false),
    inner: UnsafeCell::new(None),
};

/// Records an internal failure: the sampler stops sampling (the hook keeps forwarding).
pub fn fail() {
    FAILURES.fetch_add(1, Ordering::Relaxed);
    MODE.store(MODE_FAILED, Ordering::Relaxed);
    REMAINING.store(NEVER, Ordering::Relaxed);
}

fn lock() -> bool {
    let mut spins = 0u32;
    let mut yields = 0u32;
    while SHARED
        .locked
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        if spins < SPINS_BEFORE_YIELD {
            spins += 1;
            std::hint::spin_loop();
        } else if yields < YIELDS_BEFORE_FAILING {
            yields += 1;
            std::thread::yield_now();
        } else {
            return false;
        }
    }
    true
}

/// Runs `f` on the profiler under the lock; None when it is not installed, or when the lock
/// could not be had (which turns the sampler off). `f` must not call into Python.
pub fn with<R>(f: impl FnOnce(&mut Profiler) -> R) -> Option<R> {
    if !lock() {
        fail();
        return None;
    }
    // SAFETY: the lock is held until the store below; no other reference to `inner` exists.
    let result = unsafe { (*SHARED.inner.get()).as_mut().map(f) };
    SHARED.locked.store(false, Ordering::Release);
    result
}

/// Installs a profiler (replacing any previous one, returned).
pub fn install(profiler: Profiler) -> Option<Option<Profiler>> {
    replace(Some(profiler))
}

/// Removes the profiler and returns it.
pub fn take() -> Option<Profiler> {
    replace(None).flatten()
}

fn replace(value: Option<Profiler>) -> Option<Option<Profiler>> {
    if !lock() {
        fail();
        return None;
    }
    // SAFETY: as in `with`.
    let old = unsafe { std::mem::replace(&mut *SHARED.inner.get(), value) };
    SHARED.locked.store(false, Ordering::Release);
    Some(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_reaches_the_installed_profiler_and_threads_keep_it_whole() {
        let p = Profiler::new(64, 1, 16, &FILTER).unwrap();
        assert!(install(p).is_some());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..5_000usize {
                        let ptr = (t * 1_000_000 + i + 1) * 16;
                        with(|p| p.record(ptr, 100, &[], 0));
                        with(|p| p.remove(ptr));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let totals = with(|p| p.totals(0)).unwrap();
        assert_eq!(totals.samples, 0);
        assert_eq!(totals.live_bytes, 0);
        assert_eq!(totals.taken, 40_000);
        assert!(take().is_some());
        assert!(with(|p| p.taken).is_none());
    }
}
