//! The Python module `lambda_memory_profiler._native`: start, stop and read the sampler.
//!
//! Every function is called by the decorator with the GIL held. None of them builds a Python
//! object while holding the sampler's lock (building one allocates, and the hook's free path
//! takes the lock): figures are copied out first. A panic is caught at this boundary and turns
//! the sampler off; bad arguments raise `TypeError` / `OverflowError` like any builtin.

use std::os::raw::c_long;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{addr_of_mut, null_mut};
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3_ffi as ffi;
use pyo3_ffi::{PyMethodDef, PyMethodDefPointer, PyModuleDef, PyObject, Py_ssize_t};

use crate::capture;
use crate::hook;
use crate::probes;
use crate::profiler::Profiler;
use crate::record;
use crate::stacks::{Change, Frame, MAX_FRAMES};
use crate::state::{
    self, FAILURES, FILTER, FRAMES, MODE, MODE_ACTIVE, MODE_FAILED, MODE_OFF, NEVER, REMAINING,
};

/// Restarts of the sample set (the hook found detached and put back): live figures of
/// different epochs are not comparable.
static EPOCH: AtomicU64 = AtomicU64::new(0);

type Args = *mut *mut PyObject;

fn guarded(f: impl FnOnce() -> *mut PyObject) -> *mut PyObject {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(obj) => obj,
        Err(_) => {
            state::fail();
            // SAFETY: GIL held (every caller is a module function).
            unsafe { none() }
        }
    }
}

/// A new reference to `None`.
///
/// # Safety
/// The GIL is held.
pub(crate) unsafe fn none() -> *mut PyObject {
    let n = ffi::Py_None();
    ffi::Py_INCREF(n);
    n
}

/// Argument `i` as an unsigned integer; `None` with a Python error set when it is missing or
/// not one.
///
/// # Safety
/// The GIL is held, and `args` points to `nargs` valid object pointers (a fastcall argument
/// vector).
unsafe fn arg_u64(args: Args, nargs: Py_ssize_t, i: isize) -> Option<u64> {
    if i >= nargs {
        ffi::PyErr_SetString(ffi::PyExc_TypeError, c"_native: missing argument".as_ptr());
        return None;
    }
    let v = ffi::PyLong_AsUnsignedLongLong(*args.offset(i));
    if v == u64::MAX && !ffi::PyErr_Occurred().is_null() {
        return None;
    }
    Some(v)
}

/// A tuple stealing `items` (new references); null, with every item released, when one of them
/// is null or the tuple cannot be made.
///
/// # Safety
/// The GIL is held, and each item is null or a new reference the caller gives up.
unsafe fn tuple(items: &[*mut PyObject]) -> *mut PyObject {
    let t = ffi::PyTuple_New(items.len() as Py_ssize_t);
    for (i, &item) in items.iter().enumerate() {
        if t.is_null() || item.is_null() {
            if !item.is_null() {
                ffi::Py_DECREF(item);
            }
            continue;
        }
        ffi::PyTuple_SetItem(t, i as Py_ssize_t, item);
    }
    if !t.is_null() && items.iter().any(|p| p.is_null()) {
        ffi::Py_DECREF(t);
        return null_mut();
    }
    t
}

/// A Python int (new reference, null on failure).
///
/// # Safety
/// The GIL is held.
unsafe fn int(v: u64) -> *mut PyObject {
    ffi::PyLong_FromUnsignedLongLong(v)
}

/// A Python int from a signed value (new reference, null on failure).
///
/// # Safety
/// The GIL is held.
unsafe fn sint(v: i64) -> *mut PyObject {
    ffi::PyLong_FromLongLong(v)
}

/// Gives back what a profiler holds: its code objects.
///
/// # Safety
/// The GIL is held, and the profiler is out of the lock (no sample can refer to it any more).
unsafe fn release(profiler: Profiler) {
    let mut codes: Vec<usize> = Vec::new();
    if codes.try_reserve(4096).is_ok() {
        codes.extend(profiler.codes());
    }
    drop(profiler);
    FILTER.clear();
    for code in codes {
        ffi::Py_DECREF(code as *mut PyObject);
    }
}

/// Turns sampling off and removes the hook where it is on top.
///
/// # Safety
/// The GIL is held.
unsafe fn shut(mode: u8) {
    MODE.store(mode, Ordering::Relaxed);
    REMAINING.store(NEVER, Ordering::Relaxed);
    for slot in 0..hook::DOMAINS.len() {
        hook::uninstall(slot);
    }
    if let Some(p) = state::take() {
        release(p);
    }
}

/// `start(mean_bytes, frames, seed) -> bool`: installs the hook and starts sampling (True
/// when running, already or now).
unsafe extern "C" fn start(_m: *mut PyObject, args: Args, nargs: Py_ssize_t) -> *mut PyObject {
    let (Some(mean), Some(frames), Some(seed)) = (
        arg_u64(args, nargs, 0),
        arg_u64(args, nargs, 1),
        arg_u64(args, nargs, 2),
    ) else {
        return null_mut();
    };
    guarded(|| {
        let mode = MODE.load(Ordering::Relaxed);
        if mode == MODE_ACTIVE {
            return ffi::PyBool_FromLong(1);
        }
        if mode == MODE_FAILED {
            return ffi::PyBool_FromLong(0);
        }
        let depth = (frames as usize).clamp(1, MAX_FRAMES);
        let Some(profiler) = Profiler::new(mean.clamp(1, 1 << 30), seed, depth, &FILTER) else {
            return ffi::PyBool_FromLong(0);
        };
        FRAMES.store(depth, Ordering::Relaxed);
        let first = profiler.first_gap();
        match state::install(profiler) {
            Some(Some(old)) => release(old),
            Some(None) => {}
            None => return ffi::PyBool_FromLong(0),
        }
        MODE.store(MODE_ACTIVE, Ordering::Relaxed);
        REMAINING.store(first, Ordering::Relaxed);
        let on_top = hook::on_top();
        for (slot, top) in on_top.iter().enumerate() {
            // A hook left in the chain by an earlier stop (someone wrapped it) is reused.
            if !top && !hook::reaches(slot) && !hook::install(slot) {
                shut(MODE_FAILED);
                return ffi::PyBool_FromLong(0);
            }
        }
        ffi::PyBool_FromLong(1)
    })
}

/// `stop()`: stops sampling, removes the hook where nothing wraps it, frees the tables.
unsafe extern "C" fn stop(_m: *mut PyObject, _a: Args, _n: Py_ssize_t) -> *mut PyObject {
    guarded(|| {
        if MODE.load(Ordering::Relaxed) != MODE_FAILED {
            shut(MODE_OFF);
        }
        none()
    })
}

/// `reseed(seed)`: a new gap sequence (after a snapshot restore).
unsafe extern "C" fn reseed(_m: *mut PyObject, args: Args, nargs: Py_ssize_t) -> *mut PyObject {
    let Some(seed) = arg_u64(args, nargs, 0) else {
        return null_mut();
    };
    guarded(|| {
        if let Some(gap) = state::with(|p| p.reseed(seed, REMAINING.load(Ordering::Relaxed))) {
            if MODE.load(Ordering::Relaxed) == MODE_ACTIVE {
                REMAINING.store(gap, Ordering::Relaxed);
            }
        }
        none()
    })
}

/// Puts the hook back into any domain whose allocations no longer reach it; the samples are
/// then stale (frees went unseen), so they are dropped and a new epoch starts.
///
/// # Safety
/// The GIL is held.
unsafe fn keep_attached() {
    let on_top = hook::on_top();
    let mut restarted = false;
    for (slot, top) in on_top.iter().enumerate() {
        if !top && !hook::reaches(slot) {
            if !hook::install(slot) {
                shut(MODE_FAILED);
                return;
            }
            restarted = true;
        }
    }
    if restarted {
        state::with(|p| p.clear_samples());
        EPOCH.fetch_add(1, Ordering::Relaxed);
    }
}

/// `stats() -> (mode, live_bytes, allocated_bytes, samples, taken, dropped, overflowed,
/// failures, epoch, mean_bytes, footprint_bytes, peak_bytes)`; `peak_bytes` is the highest
/// live estimate since the previous call.
unsafe extern "C" fn stats(_m: *mut PyObject, _a: Args, _n: Py_ssize_t) -> *mut PyObject {
    guarded(|| {
        let mut mode = MODE.load(Ordering::Relaxed);
        if mode == MODE_ACTIVE {
            keep_attached();
        } else if mode == MODE_FAILED {
            shut(MODE_FAILED); // idempotent: unhooks where possible, frees the tables
        }
        mode = MODE.load(Ordering::Relaxed);
        let read = state::with(|p| {
            (
                p.totals(REMAINING.load(Ordering::Relaxed)),
                p.mean(),
                p.take_peak(),
            )
        });
        let (t, mean, peak) = read.unwrap_or_default();
        tuple(&[
            int(u64::from(mode)),
            int(t.live_bytes),
            int(t.allocated_bytes),
            int(t.samples),
            int(t.taken),
            int(t.dropped),
            int(t.overflowed),
            int(FAILURES.load(Ordering::Relaxed)),
            int(EPOCH.load(Ordering::Relaxed)),
            int(mean),
            int(t.footprint),
            int(peak),
        ])
    })
}

/// `changes() -> [(stack_id, delta_bytes, live_bytes)]`: stacks whose live bytes changed since
/// the last call.
unsafe extern "C" fn changes(_m: *mut PyObject, _a: Args, _n: Py_ssize_t) -> *mut PyObject {
    guarded(|| {
        let mut out: Vec<Change> = Vec::new();
        state::with(|p| p.changes(&mut out));
        let list = ffi::PyList_New(0);
        if list.is_null() {
            return null_mut();
        }
        for c in &out {
            let item = tuple(&[int(u64::from(c.id)), sint(c.delta), sint(c.live)]);
            if item.is_null() || ffi::PyList_Append(list, item) != 0 {
                if !item.is_null() {
                    ffi::Py_DECREF(item);
                }
                ffi::Py_DECREF(list);
                return null_mut();
            }
            ffi::Py_DECREF(item);
        }
        list
    })
}

/// `frames(stack_id) -> ((code, line), ...)`, newest first; `()` for the unknown and overflow
/// stacks.
unsafe extern "C" fn frames(_m: *mut PyObject, args: Args, nargs: Py_ssize_t) -> *mut PyObject {
    let Some(id) = arg_u64(args, nargs, 0) else {
        return null_mut();
    };
    guarded(|| {
        let mut buf = [Frame::default(); MAX_FRAMES];
        let n =
            state::with(|p| p.frames(id.min(u64::from(u32::MAX)) as u32, &mut buf)).unwrap_or(0);
        let items: Vec<*mut PyObject> = buf
            .get(..n)
            .unwrap_or(&[])
            .iter()
            .map(|f| {
                let code = f.code as *mut PyObject;
                // The stack table holds a reference to every code object it names.
                ffi::Py_INCREF(code);
                tuple(&[code, sint(i64::from(capture::line_of(f)))])
            })
            .collect();
        tuple(&items)
    })
}

/// `hooked() -> (mem_on_top, obj_on_top)`: whether the hook is each domain's current allocator.
unsafe extern "C" fn hooked(_m: *mut PyObject, _a: Args, _n: Py_ssize_t) -> *mut PyObject {
    guarded(|| {
        let [mem, obj] = hook::on_top();
        tuple(&[
            ffi::PyBool_FromLong(c_long::from(mem)),
            ffi::PyBool_FromLong(c_long::from(obj)),
        ])
    })
}

/// `inject_failure()`: makes the sampler fail as on an internal error (for tests).
unsafe extern "C" fn inject_failure(_m: *mut PyObject, _a: Args, _n: Py_ssize_t) -> *mut PyObject {
    state::fail();
    none()
}

const fn method(
    name: &'static std::ffi::CStr,
    f: ffi::PyCFunctionFast,
    doc: &'static std::ffi::CStr,
) -> PyMethodDef {
    PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: PyMethodDefPointer { PyCFunctionFast: f },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: doc.as_ptr(),
    }
}

static mut METHODS: [PyMethodDef; 12] = [
    method(c"start", start, c"start(mean_bytes, frames, seed) -> bool"),
    method(c"stop", stop, c"stop()"),
    method(c"reseed", reseed, c"reseed(seed)"),
    method(c"stats", stats, c"stats() -> tuple of counters"),
    method(
        c"changes",
        changes,
        c"changes() -> [(stack_id, delta_bytes, live_bytes)]",
    ),
    method(
        c"frames",
        frames,
        c"frames(stack_id) -> ((code, line), ...)",
    ),
    method(c"hooked", hooked, c"hooked() -> (mem, obj)"),
    method(c"inject_failure", inject_failure, c"inject_failure()"),
    method(
        c"encode_invocation",
        record::encode_invocation,
        c"encode_invocation(version, *fields) -> bytes or None (then use the Python encoder)",
    ),
    method(
        c"maxrss_kib",
        probes::maxrss_kib,
        c"maxrss_kib() -> int or None",
    ),
    method(
        c"anon_bytes",
        probes::anon_bytes,
        c"anon_bytes(statm_fd, page_size) -> int or None",
    ),
    PyMethodDef::zeroed(),
];

static mut MODULE: PyModuleDef = PyModuleDef {
    m_base: ffi::PyModuleDef_HEAD_INIT,
    m_name: c"lambda_memory_profiler._native".as_ptr(),
    m_doc: c"Sampling heap profiler (PEP 445 allocator hook) of lambda_memory_profiler.".as_ptr(),
    m_size: -1,
    m_methods: addr_of_mut!(METHODS) as *mut PyMethodDef,
    m_slots: null_mut(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
};

/// The module's entry point, called by the import system.
///
/// # Safety
/// Called by CPython with the GIL held, once per import.
#[no_mangle]
pub(crate) unsafe extern "C" fn PyInit__native() -> *mut PyObject {
    ffi::PyModule_Create(addr_of_mut!(MODULE))
}
