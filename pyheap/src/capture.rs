//! The Python stack at a sampled allocation, through the public frame API.
//!
//! Called from inside the allocator with the GIL held. It reads nothing when the thread has no
//! Python state, when an exception is being raised (the frame API could replace it) or when the
//! interpreter is finalizing. On 3.11+ reading a frame can create its frame object, which
//! allocates: the hook sees those allocations as its own (it is `CAPTURING`), and the garbage
//! collector is held off meanwhile so no Python code runs inside an allocation.

use pyo3_ffi as ffi;

use crate::stacks::Frame;

#[cfg(not(Py_3_13))]
extern "C" {
    fn _Py_IsFinalizing() -> std::os::raw::c_int;
}

fn finalizing() -> bool {
    // SAFETY: a plain read of the runtime's state, valid at any time.
    #[cfg(Py_3_13)]
    let f = unsafe { ffi::Py_IsFinalizing() };
    // SAFETY: as above (the function's name before 3.13).
    #[cfg(not(Py_3_13))]
    let f = unsafe { _Py_IsFinalizing() };
    f != 0
}

/// Where the frame is: on 3.11+ the instruction's byte offset (turning it into a line walks
/// the code's line table, most of a sample's cost: `line_of` does it when a stack is read); the
/// line before, where the frame API has it at hand.
///
/// # Safety
/// With the GIL held; `frame` is a live frame object.
unsafe fn position(frame: *mut ffi::PyFrameObject) -> i32 {
    #[cfg(Py_3_11)]
    return ffi::PyFrame_GetLasti(frame);
    #[cfg(not(Py_3_11))]
    return ffi::PyFrame_GetLineNumber(frame);
}

/// The line of a frame's position as `stack` recorded it.
///
/// # Safety
/// With the GIL held; `frame.code` is a live code object.
pub(crate) unsafe fn line_of(frame: &Frame) -> i32 {
    #[cfg(Py_3_11)]
    return if frame.line < 0 {
        -1
    } else {
        ffi::PyCode_Addr2Line(frame.code as *mut ffi::PyCodeObject, frame.line)
    };
    #[cfg(not(Py_3_11))]
    return frame.line;
}

/// Fills `out` with the newest frames (at most `max`), each holding a new reference to its
/// code object (the caller keeps or releases them); returns how many.
///
/// # Safety
/// Must be called from an allocator hook of the OBJ or MEM domain (or with the GIL held).
pub(crate) unsafe fn stack(out: &mut [Frame], max: usize) -> usize {
    if finalizing() {
        return 0;
    }
    let tstate = ffi::compat::PyThreadState_GetUnchecked();
    if tstate.is_null() || !ffi::PyErr_Occurred().is_null() {
        return 0;
    }
    #[cfg(Py_3_10)]
    let gc_was_on = ffi::PyGC_Disable() != 0;
    let limit = max.min(out.len());
    let mut n = 0;
    let mut frame = ffi::PyThreadState_GetFrame(tstate);
    while !frame.is_null() && n < limit {
        let code = ffi::PyFrame_GetCode(frame);
        let line = position(frame);
        if let Some(slot) = out.get_mut(n) {
            *slot = Frame {
                code: code as usize,
                line,
            };
            n += 1;
        } else {
            ffi::Py_DECREF(code.cast());
        }
        let back = ffi::PyFrame_GetBack(frame);
        ffi::Py_DECREF(frame.cast());
        frame = back;
    }
    if !frame.is_null() {
        ffi::Py_DECREF(frame.cast());
    }
    if !ffi::PyErr_Occurred().is_null() {
        // A frame object the API could not create (out of memory): ours, not the program's.
        ffi::PyErr_Clear();
    }
    #[cfg(Py_3_10)]
    if gc_was_on {
        ffi::PyGC_Enable();
    }
    n
}

/// Releases the references `stack` took.
///
/// # Safety
/// With the GIL held; `frames` came from `stack` and were not kept.
pub(crate) unsafe fn release(frames: &[Frame]) {
    for f in frames {
        ffi::Py_DECREF(f.code as *mut ffi::PyObject);
    }
}
