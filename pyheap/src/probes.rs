//! `maxrss_kib()` and `anon_bytes(statm_fd, page_size)`: the decorator's two per-invocation
//! memory reads (`_probes.py`), as system calls without Python objects in between.
//!
//! The figures are those of the Python probes, from the same calls: `getrusage(RUSAGE_SELF)`'s
//! `ru_maxrss`, and `/proc/self/statm`'s resident minus shared pages. Python builds a 16-field
//! result for the first and splits a string for the second, which is most of their cost; here
//! each is one system call. Either returns `None` when its call fails (the Python probe then
//! reports no figure, as it would), and neither raises.

use pyo3_ffi as ffi;
use pyo3_ffi::{PyObject, Py_ssize_t};

use crate::memory::{anon_pages_of, peak_kib};
use crate::module::none;

/// An int, or `None` (never null: a failure to build the int is reported as no figure).
///
/// # Safety
/// The GIL is held.
unsafe fn figure(v: Option<i64>) -> *mut PyObject {
    let Some(v) = v else {
        return none();
    };
    let obj = ffi::PyLong_FromLongLong(v);
    if obj.is_null() {
        ffi::PyErr_Clear();
        return none();
    }
    obj
}

/// `maxrss_kib() -> int | None`.
pub(crate) unsafe extern "C" fn maxrss_kib(
    _m: *mut PyObject,
    _a: *mut *mut PyObject,
    _n: Py_ssize_t,
) -> *mut PyObject {
    figure(peak_kib())
}

/// `anon_bytes(statm_fd, page_size) -> int | None`.
pub(crate) unsafe extern "C" fn anon_bytes(
    _m: *mut PyObject,
    args: *mut *mut PyObject,
    nargs: Py_ssize_t,
) -> *mut PyObject {
    if args.is_null() || nargs != 2 {
        return none();
    }
    let fd = ffi::PyLong_AsLong(*args);
    let page = ffi::PyLong_AsLongLong(*args.offset(1));
    if !ffi::PyErr_Occurred().is_null() {
        ffi::PyErr_Clear();
        return none();
    }
    let Ok(fd) = i32::try_from(fd) else {
        return none();
    };
    figure(anon_pages_of(fd).and_then(|p| p.checked_mul(page)))
}
