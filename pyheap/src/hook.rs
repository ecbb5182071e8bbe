//! The PEP 445 allocator hook: wraps the OBJ and MEM domains and chains to whatever
//! allocator was installed before it (the default, `tracemalloc`, another profiler).
//!
//! Fast path, every allocation: subtract the size from a counter, then forward (a tail call).
//! Fast path, every free: one load of the free filter's bits. Only when the counter crosses
//! zero (a sample point, on average every `mean` bytes) or the filter says "maybe sampled"
//! does the slow path run. The RAW domain is not wrapped: it is called without the GIL, where
//! the stack cannot be read safely. The hook never changes a block's layout, so blocks
//! allocated through it can be freed by the previous allocator and the reverse: installing and
//! removing it is safe at any time.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use pyo3_ffi as ffi;
use pyo3_ffi::{PyMemAllocatorDomain, PyMemAllocatorEx};

use crate::capture;
use crate::stacks::{Frame, MAX_FRAMES};
use crate::state::{self, CAPTURING, FILTER, FRAMES, MODE, MODE_ACTIVE, NEVER, REMAINING};

/// The domains wrapped.
pub(crate) const DOMAINS: [PyMemAllocatorDomain; 2] = [
    PyMemAllocatorDomain::PYMEM_DOMAIN_MEM,
    PyMemAllocatorDomain::PYMEM_DOMAIN_OBJ,
];

/// A domain's allocator as it was before the hook, every function present (checked by
/// `install`): the hooks call them without a check for a missing one.
#[derive(Clone, Copy)]
#[repr(C)]
struct Chained {
    ctx: *mut c_void,
    malloc: MallocFn,
    calloc: CallocFn,
    realloc: ReallocFn,
    free: FreeFn,
}

impl Chained {
    /// `None` when the allocator lacks a function (no valid allocator does).
    fn of(a: &PyMemAllocatorEx) -> Option<Self> {
        Some(Self {
            ctx: a.ctx,
            malloc: a.malloc?,
            calloc: a.calloc?,
            realloc: a.realloc?,
            free: a.free?,
        })
    }

    /// The allocator to put back.
    fn allocator(&self) -> PyMemAllocatorEx {
        PyMemAllocatorEx {
            ctx: self.ctx,
            malloc: Some(self.malloc),
            calloc: Some(self.calloc),
            realloc: Some(self.realloc),
            free: Some(self.free),
        }
    }
}

/// The previous allocator of each domain, as passed to our functions in `ctx`. Each install
/// makes a new one (never freed: a caller holding an older chain keeps a valid one).
static PREVIOUS: [AtomicPtr<Chained>; 2] = [AtomicPtr::new(null_mut()), AtomicPtr::new(null_mut())];
/// Set by `probe` to learn whether allocations still reach the hook.
pub(crate) static PROBING: AtomicBool = AtomicBool::new(false);
/// Set by the slow path while `PROBING`.
pub(crate) static PROBE_SEEN: AtomicBool = AtomicBool::new(false);

#[inline(always)]
fn previous(ctx: *mut c_void) -> &'static Chained {
    // SAFETY: `ctx` is always one of the leaked `PREVIOUS` boxes (set in `install`).
    unsafe { &*(ctx as *const Chained) }
}

/// Counts the block of a moving or resizing realloc (already allocated): a sample point
/// samples it.
#[inline(always)]
fn account(ptr: *mut c_void, size: usize) {
    if counts_down(size) {
        sample_point(ptr as usize, size as u64);
    }
}

#[inline(always)]
fn forget_if_sampled(ptr: *mut c_void) {
    // No null check here: a null pointer's filter bit is that of a cell no sample is in more
    // often than any other, and `forget` checks.
    if FILTER.may_hold(ptr as usize) {
        forget(ptr as usize);
    }
}

#[cold]
#[inline(never)]
fn forget(ptr: usize) {
    if ptr != 0 && MODE.load(Ordering::Relaxed) == MODE_ACTIVE {
        state::with(|p| p.remove(ptr));
    }
}

#[cold]
#[inline(never)]
fn sample_point(ptr: usize, size: u64) {
    if PROBING.load(Ordering::Relaxed) {
        PROBE_SEEN.store(true, Ordering::Relaxed);
    }
    if MODE.load(Ordering::Relaxed) != MODE_ACTIVE {
        REMAINING.store(NEVER, Ordering::Relaxed);
        return;
    }
    if CAPTURING.swap(true, Ordering::Acquire) {
        // The sampler's own allocation (a frame object being created): the point is used up.
        match state::with(|p| p.skip(REMAINING.load(Ordering::Relaxed))) {
            Some(gap) => REMAINING.store(gap, Ordering::Relaxed),
            None => state::fail(),
        }
        return;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut frames = [Frame::default(); MAX_FRAMES];
        let max = FRAMES.load(Ordering::Relaxed);
        // SAFETY: called from the OBJ/MEM hook, where the GIL is held.
        let n = unsafe { capture::stack(&mut frames, max) };
        let taken = frames.get(..n).unwrap_or(&[]);
        let recorded =
            state::with(|p| p.record(ptr, size, taken, REMAINING.load(Ordering::Relaxed)));
        let keep = recorded.is_some_and(|r| r.new_stack);
        if !keep {
            // SAFETY: GIL held; these references were taken by `stack` and are not kept.
            unsafe { capture::release(taken) };
        }
        recorded.map(|r| r.next_gap)
    }));
    match outcome {
        Ok(Some(gap)) => REMAINING.store(gap, Ordering::Relaxed),
        _ => state::fail(),
    }
    CAPTURING.store(false, Ordering::Release);
}

/// Counts `size` bytes allocated, before the allocation: true when that reaches a sample point.
/// Counting first lets the fast path end in a tail call to the previous allocator. A failed
/// allocation on the fast path stays counted (at most one gap's worth, and only when the
/// process is out of memory); at a sample point it is given back (`sampled`).
#[inline(always)]
fn counts_down(size: usize) -> bool {
    // Wrapping: the counter starts at most 2^40 (or at NEVER, far from any sum of sizes a
    // process can allocate), and a block of 2^63 bytes cannot exist.
    let left = REMAINING.load(Ordering::Relaxed).wrapping_sub(size as i64);
    REMAINING.store(left, Ordering::Relaxed);
    left <= 0
}

/// A block allocated at a sample point: samples it, or gives its bytes back to the counter
/// when the allocation failed. The previous allocator is called by the cold functions below,
/// not by the hooks, so that the hooks' fast-path call stays a tail call (their arguments come
/// in the hooks' own registers).
#[inline(always)]
fn sampled(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        let left = REMAINING.load(Ordering::Relaxed).wrapping_add(size as i64);
        REMAINING.store(left, Ordering::Relaxed);
    } else {
        sample_point(ptr as usize, size as u64);
    }
    ptr
}

type MallocFn = extern "C" fn(*mut c_void, usize) -> *mut c_void;
type CallocFn = extern "C" fn(*mut c_void, usize, usize) -> *mut c_void;
type ReallocFn = extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void;
type FreeFn = extern "C" fn(*mut c_void, *mut c_void);

// The slow paths take the hook's own arguments, in the same registers, so that the hooks end
// in a plain jump to them as well as to the previous allocator. They are `extern "C"`: a call
// to them cannot unwind, so the hooks need no unwinding guard (`sample_point` catches every
// panic).

#[cold]
#[inline(never)]
extern "C" fn malloc_sampled(ctx: *mut c_void, size: usize) -> *mut c_void {
    let prev = previous(ctx);
    sampled((prev.malloc)(prev.ctx, size), size)
}

#[cold]
#[inline(never)]
extern "C" fn calloc_sampled(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    let prev = previous(ctx);
    sampled(
        (prev.calloc)(prev.ctx, nelem, elsize),
        nelem.saturating_mul(elsize),
    )
}

#[cold]
#[inline(never)]
extern "C" fn free_sampled(ctx: *mut c_void, ptr: *mut c_void) {
    forget(ptr as usize);
    let prev = previous(ctx);
    (prev.free)(prev.ctx, ptr);
}

extern "C" fn hook_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    if counts_down(size) {
        return malloc_sampled(ctx, size);
    }
    let prev = previous(ctx);
    (prev.malloc)(prev.ctx, size)
}

extern "C" fn hook_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    if counts_down(nelem.saturating_mul(elsize)) {
        return calloc_sampled(ctx, nelem, elsize);
    }
    let prev = previous(ctx);
    (prev.calloc)(prev.ctx, nelem, elsize)
}

extern "C" fn hook_realloc(ctx: *mut c_void, ptr: *mut c_void, size: usize) -> *mut c_void {
    let prev = previous(ctx);
    let moved = (prev.realloc)(prev.ctx, ptr, size);
    if !moved.is_null() {
        // The old block is gone (or resized in place): its sample, if any, no longer holds.
        forget_if_sampled(ptr);
        account(moved, size);
    }
    moved
}

extern "C" fn hook_free(ctx: *mut c_void, ptr: *mut c_void) {
    if FILTER.may_hold(ptr as usize) {
        return free_sampled(ctx, ptr);
    }
    let prev = previous(ctx);
    (prev.free)(prev.ctx, ptr)
}

fn ours(current: &PyMemAllocatorEx, slot: usize) -> bool {
    let mine = PREVIOUS
        .get(slot)
        .map_or(null_mut(), |p| p.load(Ordering::Relaxed));
    // The context is a box only this hook was ever given: it identifies the hook.
    !mine.is_null() && current.ctx == mine.cast()
}

fn current(domain: PyMemAllocatorDomain) -> PyMemAllocatorEx {
    let mut a = PyMemAllocatorEx {
        ctx: null_mut(),
        malloc: None,
        calloc: None,
        realloc: None,
        free: None,
    };
    // SAFETY: writes the domain's allocator into `a`; the GIL is held by the caller.
    unsafe { ffi::PyMem_GetAllocator(domain, &mut a) };
    a
}

/// Whether the hook is the current allocator of each domain (MEM, OBJ).
pub(crate) fn on_top() -> [bool; 2] {
    [ours(&current(DOMAINS[0]), 0), ours(&current(DOMAINS[1]), 1)]
}

/// Wraps the domain `slot` of `DOMAINS` (GIL held). False when memory for it cannot be had.
pub(crate) fn install(slot: usize) -> bool {
    let Some(&domain) = DOMAINS.get(slot) else {
        return false;
    };
    let Some(prev) = Chained::of(&current(domain)) else {
        return false; // an allocator without one of its functions: not chained to
    };
    let Ok(boxed) = catch_unwind(|| Box::new(prev)) else {
        return false;
    };
    let ctx = Box::into_raw(boxed);
    if let Some(p) = PREVIOUS.get(slot) {
        p.store(ctx, Ordering::Relaxed);
    }
    let mut mine = PyMemAllocatorEx {
        ctx: ctx.cast(),
        malloc: Some(hook_malloc),
        calloc: Some(hook_calloc),
        realloc: Some(hook_realloc),
        free: Some(hook_free),
    };
    // SAFETY: GIL held; the hook forwards every call to `prev`, so blocks stay compatible.
    unsafe { ffi::PyMem_SetAllocator(domain, &mut mine) };
    true
}

/// Puts back the previous allocator of domain `slot` if the hook is on top; otherwise the hook
/// stays in the chain, forwarding only (GIL held). Returns whether it was removed.
pub(crate) fn uninstall(slot: usize) -> bool {
    let Some(&domain) = DOMAINS.get(slot) else {
        return false;
    };
    if !ours(&current(domain), slot) {
        return false;
    }
    let prev = PREVIOUS
        .get(slot)
        .map_or(null_mut(), |p| p.load(Ordering::Relaxed));
    if prev.is_null() {
        return false;
    }
    // SAFETY: `prev` is the leaked box saved by `install`; GIL held.
    let mut allocator = unsafe { (*prev).allocator() };
    // SAFETY: GIL held; `allocator` is the one the hook replaced.
    unsafe { ffi::PyMem_SetAllocator(domain, &mut allocator) };
    true
}

/// Whether allocations of domain `slot` still reach the hook (someone may have put back an
/// allocator saved before the hook was installed, e.g. a `tracemalloc.stop()` of a session
/// started before ours). Forces a sample point and allocates one block (GIL held).
pub(crate) fn reaches(slot: usize) -> bool {
    let saved = REMAINING.swap(0, Ordering::Relaxed);
    PROBE_SEEN.store(false, Ordering::Relaxed);
    PROBING.store(true, Ordering::Relaxed);
    // SAFETY: GIL held; the block is freed at once by the same domain.
    unsafe {
        if slot == 0 {
            let p = ffi::PyMem_Malloc(16);
            ffi::PyMem_Free(p);
        } else {
            let p = ffi::PyObject_Malloc(16);
            ffi::PyObject_Free(p);
        }
    }
    PROBING.store(false, Ordering::Relaxed);
    let seen = PROBE_SEEN.load(Ordering::Relaxed);
    if !seen {
        REMAINING.store(saved, Ordering::Relaxed);
    }
    seen
}
