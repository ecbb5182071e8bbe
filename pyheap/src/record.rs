//! `encode_invocation(version, <the fields of _handoff.encode_invocation>) -> bytes | None`:
//! the every-invocation record as JSON, the same bytes as the decorator's pure-Python encoder
//! at a fraction of its cost (formatting a record of ~26 fields in Python is most of the
//! decorator's per-invocation time on a trivial handler).
//!
//! The layout is `_handoff.py`'s (docs/protocol.md); tests/python/test_native_record.py holds the
//! two encoders to the same bytes. Whatever this encoder does not handle exactly as Python
//! would (an int beyond 64 bits, a non-finite float, a string with a lone surrogate, an object of
//! another type) makes it return `None` with no error set, and the decorator uses the Python
//! encoder for that record. It never raises and never panics into Python.

use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use pyo3_ffi as ffi;
use pyo3_ffi::{PyObject, Py_ssize_t};

use crate::json::{push_fixed, push_int, push_str};
use crate::module::none;

/// The fields after `version`, in `_handoff.encode_invocation`'s order.
const FIELDS: usize = 17;

/// Keys of the `heap` object and of its sites, interned once.
const KEYS: [&std::ffi::CStr; 14] = [
    c"live_bytes",
    c"peak_bytes",
    c"allocated_bytes",
    c"sample_bytes",
    c"samples",
    c"dropped",
    c"epoch",
    c"sites",
    c"sites_truncated",
    c"file",
    c"line",
    c"function",
    c"via",
    c"delta_bytes",
];
/// The `heap` object's integer fields, in their order (indexes into `KEYS`).
const HEAP_INTS: [usize; 7] = [0, 1, 2, 3, 4, 5, 6];
const K_SITES: usize = 7;
const K_TRUNCATED: usize = 8;
const K_FILE: usize = 9;
const K_LINE: usize = 10;
const K_FUNCTION: usize = 11;
const K_VIA: usize = 12;
const K_DELTA: usize = 13;
const K_LIVE: usize = 0;

/// The interned key objects (as addresses: immortal for the process, they hold a reference);
/// `None` when they could not be made.
static KEY_OBJECTS: OnceLock<Option<[usize; KEYS.len()]>> = OnceLock::new();

/// Why a record is left to the Python encoder (any Python error is cleared).
struct Unsupported;

type Result<T> = std::result::Result<T, Unsupported>;

/// # Safety
/// The GIL is held.
unsafe fn keys() -> Result<&'static [usize; KEYS.len()]> {
    let made = KEY_OBJECTS.get_or_init(|| {
        let mut out = [0usize; KEYS.len()];
        for (slot, name) in out.iter_mut().zip(KEYS) {
            let key = ffi::PyUnicode_InternFromString(name.as_ptr());
            if key.is_null() {
                return None;
            }
            *slot = key as usize;
        }
        Some(out)
    });
    made.as_ref().ok_or(Unsupported)
}

/// A `str` argument's text.
///
/// # Safety
/// The GIL is held; `obj` is a live object that outlives the returned text.
unsafe fn text<'a>(obj: *mut PyObject) -> Result<&'a str> {
    if ffi::PyUnicode_Check(obj) == 0 {
        return Err(Unsupported);
    }
    let mut len: Py_ssize_t = 0;
    let data = ffi::PyUnicode_AsUTF8AndSize(obj, &mut len);
    if data.is_null() {
        return Err(Unsupported); // a lone surrogate: not UTF-8
    }
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), usize::try_from(len).unwrap_or(0));
    std::str::from_utf8(bytes).map_err(|_| Unsupported)
}

/// An `int` argument (a bool counts as one, as `%d` takes it).
///
/// # Safety
/// The GIL is held; `obj` is a live object.
unsafe fn integer(obj: *mut PyObject) -> Result<i64> {
    if ffi::PyLong_Check(obj) == 0 {
        return Err(Unsupported); // `%d` would truncate a float: left to Python
    }
    let v = ffi::PyLong_AsLongLong(obj);
    if v == -1 && !ffi::PyErr_Occurred().is_null() {
        return Err(Unsupported);
    }
    Ok(v)
}

/// # Safety
/// The GIL is held; `obj` is a live object.
unsafe fn push_text(out: &mut Vec<u8>, obj: *mut PyObject) -> Result<()> {
    push_str(out, text(obj)?);
    Ok(())
}

/// # Safety
/// The GIL is held; `obj` is a live object.
unsafe fn push_integer(out: &mut Vec<u8>, obj: *mut PyObject) -> Result<()> {
    push_int(out, integer(obj)?);
    Ok(())
}

/// `null` for `None`, else the int.
///
/// # Safety
/// The GIL is held; `obj` is a live object.
unsafe fn push_opt_integer(out: &mut Vec<u8>, obj: *mut PyObject) -> Result<()> {
    if obj == ffi::Py_None() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    push_integer(out, obj)
}

/// # Safety
/// The GIL is held; `obj` is a live object.
unsafe fn push_float(out: &mut Vec<u8>, obj: *mut PyObject, decimals: usize) -> Result<()> {
    let v = ffi::PyFloat_AsDouble(obj);
    if v == -1.0 && !ffi::PyErr_Occurred().is_null() {
        return Err(Unsupported);
    }
    push_fixed(out, v, decimals)
        .then_some(())
        .ok_or(Unsupported)
}

/// `mapping[key]`, borrowed; the key must be there.
///
/// # Safety
/// The GIL is held; `mapping` is a live dict and `key` a live str.
unsafe fn item(mapping: *mut PyObject, key: usize) -> Result<*mut PyObject> {
    let v = ffi::PyDict_GetItemWithError(mapping, key as *mut PyObject);
    if v.is_null() {
        Err(Unsupported) // missing (Python raises KeyError there) or an error
    } else {
        Ok(v)
    }
}

/// One entry of `heap.sites`.
///
/// # Safety
/// The GIL is held; `site` is a live object.
unsafe fn push_site(out: &mut Vec<u8>, site: *mut PyObject, k: &[usize; KEYS.len()]) -> Result<()> {
    if ffi::PyDict_Check(site) == 0 {
        return Err(Unsupported);
    }
    out.extend_from_slice(b"{\"file\":");
    push_text(out, item(site, k[K_FILE])?)?;
    out.extend_from_slice(b",\"line\":");
    push_integer(out, item(site, k[K_LINE])?)?;
    out.extend_from_slice(b",\"function\":");
    push_text(out, item(site, k[K_FUNCTION])?)?;
    out.push(b',');
    let via = ffi::PyDict_GetItemWithError(site, k[K_VIA] as *mut PyObject);
    if via.is_null() && !ffi::PyErr_Occurred().is_null() {
        return Err(Unsupported);
    }
    if !via.is_null() && via != ffi::Py_None() {
        out.extend_from_slice(b"\"via\":");
        push_text(out, via)?;
        out.push(b',');
    }
    out.extend_from_slice(b"\"delta_bytes\":");
    push_integer(out, item(site, k[K_DELTA])?)?;
    out.extend_from_slice(b",\"live_bytes\":");
    push_integer(out, item(site, k[K_LIVE])?)?;
    out.push(b'}');
    Ok(())
}

/// The `heap` object.
///
/// # Safety
/// The GIL is held; `heap` is a live object other than `None`.
unsafe fn push_heap(out: &mut Vec<u8>, heap: *mut PyObject) -> Result<()> {
    if ffi::PyDict_Check(heap) == 0 {
        return Err(Unsupported);
    }
    let k = keys()?;
    for (n, &key) in HEAP_INTS.iter().enumerate() {
        out.extend_from_slice(if n == 0 { b"{\"" } else { b",\"" });
        out.extend_from_slice(KEYS[key].to_bytes());
        out.extend_from_slice(b"\":");
        push_integer(out, item(heap, k[key])?)?;
    }
    out.extend_from_slice(b",\"sites\":[");
    let sites = item(heap, k[K_SITES])?;
    if ffi::PyList_Check(sites) == 0 {
        return Err(Unsupported);
    }
    for i in 0..ffi::PyList_Size(sites) {
        if i > 0 {
            out.push(b',');
        }
        push_site(out, ffi::PyList_GetItem(sites, i), k)?;
    }
    out.extend_from_slice(b"],\"sites_truncated\":");
    push_integer(out, item(heap, k[K_TRUNCATED])?)?;
    out.push(b'}');
    Ok(())
}

/// The whole record (`a` holds `version` and the `FIELDS` fields).
///
/// # Safety
/// The GIL is held; every pointer of `a` is a live object.
unsafe fn push_record(out: &mut Vec<u8>, a: &[*mut PyObject]) -> Result<()> {
    let none = ffi::Py_None();
    out.extend_from_slice(b"{\"v\":");
    push_integer(out, a[0])?;
    out.extend_from_slice(b",\"kind\":\"invocation\",\"request_id\":");
    push_text(out, a[1])?;
    out.extend_from_slice(b",\"pid\":");
    push_integer(out, a[2])?;
    out.extend_from_slice(b",\"runtime\":");
    push_text(out, a[3])?;
    out.extend_from_slice(b",\"start_ms\":");
    push_float(out, a[4], 1)?;
    out.extend_from_slice(b",\"duration_ms\":");
    push_float(out, a[5], 3)?;
    out.extend_from_slice(b",\"cold_start\":");
    match ffi::PyObject_IsTrue(a[6]) {
        0 => out.extend_from_slice(b"false"),
        1 => out.extend_from_slice(b"true"),
        _ => return Err(Unsupported),
    }
    out.extend_from_slice(b",\"error_type\":");
    if a[7] == none {
        out.extend_from_slice(b"null");
    } else {
        push_text(out, a[7])?;
    }
    out.extend_from_slice(b",\"rss_peak_bytes\":");
    push_opt_integer(out, a[8])?;
    out.extend_from_slice(b",\"rss_peak_scope\":");
    push_text(out, a[9])?;
    out.extend_from_slice(b",\"heap_blocks\":");
    push_opt_integer(out, a[10])?;
    out.extend_from_slice(b",\"anon_bytes\":");
    push_opt_integer(out, a[16])?;
    out.extend_from_slice(b",\"gc\":{\"collections\":");
    push_integer(out, a[11])?;
    out.extend_from_slice(b",\"collected\":");
    push_integer(out, a[12])?;
    out.extend_from_slice(b",\"uncollectable\":");
    push_integer(out, a[13])?;
    out.extend_from_slice(b",\"garbage\":");
    push_opt_integer(out, a[14])?;
    out.extend_from_slice(b"},\"trace\":");
    out.extend_from_slice(text(a[15])?.as_bytes());
    out.extend_from_slice(b",\"heap\":");
    if a[17] == none {
        out.extend_from_slice(b"null");
    } else {
        push_heap(out, a[17])?;
    }
    out.push(b'}');
    Ok(())
}

/// The module function (see the module docs).
///
/// # Safety
/// Called by CPython with the GIL held and a fastcall argument vector.
pub(crate) unsafe extern "C" fn encode_invocation(
    _m: *mut PyObject,
    args: *mut *mut PyObject,
    nargs: Py_ssize_t,
) -> *mut PyObject {
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        if args.is_null() || usize::try_from(nargs).ok() != Some(FIELDS + 1) {
            return Err(Unsupported);
        }
        let a = std::slice::from_raw_parts(args, FIELDS + 1);
        let mut out = Vec::with_capacity(640);
        push_record(&mut out, a)?;
        Ok(out)
    }));
    if let Ok(Ok(out)) = encoded {
        let bytes =
            ffi::PyBytes_FromStringAndSize(out.as_ptr().cast::<c_char>(), out.len() as Py_ssize_t);
        if !bytes.is_null() {
            return bytes;
        }
    }
    // Left to the Python encoder: no error escapes.
    ffi::PyErr_Clear();
    none()
}
