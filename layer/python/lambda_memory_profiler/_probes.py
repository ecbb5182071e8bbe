"""Cheap per-invocation probes: garbage collector counters and the peak RSS."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from types import ModuleType
from typing import Any

try:
    import resource
except ImportError:  # not on every platform; the peak RSS is then absent
    resource = None  # type: ignore[assignment]

# collections, collected, uncollectable since the callback was installed. A gc callback sees
# every collection whatever the collector's generations look like (3.14 changed them), so it
# is robust where gc.get_stats() deltas are not.
GC_COUNTS: list[int] = [0, 0, 0]


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop":
        GC_COUNTS[0] += 1
        GC_COUNTS[1] += info.get("collected", 0)
        GC_COUNTS[2] += info.get("uncollectable", 0)


def heap_blocks() -> int:
    """``sys.getallocatedblocks()``, called from this file on purpose: while tracing, the
    integer it returns is attributed here, so the decorator can tell it from its own blocks."""
    return sys.getallocatedblocks()


class AnonMemory:
    """This process's resident anonymous memory (``/proc/self/statm``: resident − shared
    pages), about a microsecond per read on an open descriptor. The net, byte-valued signal of
    growth: the extension's leak analysis judges its series, and suspect mode follows it.

    With the native module (``native``), the same read is one call into it, without the text
    split in Python: the same figure for a fraction of the cost.
    """

    def __init__(self, native: ModuleType | None = None) -> None:
        self._fd = -1
        self._page = 4096
        self._native_read = getattr(native, "anon_bytes", None)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self._page = os.sysconf("SC_PAGE_SIZE")
            self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1

    def read(self) -> int | None:
        if self._fd < 0:
            return None
        if self._native_read is not None:
            return self._native_read(self._fd, self._page)
        try:
            fields = os.pread(self._fd, 128, 0).split()
            return (int(fields[1]) - int(fields[2])) * self._page
        except (OSError, IndexError, ValueError):
            return None


def install_gc_callback() -> None:
    if _gc_callback not in gc.callbacks:
        gc.callbacks.append(_gc_callback)


def _read_status_hwm_kib(fd: int) -> int | None:
    try:
        data = os.pread(fd, 8192, 0)
    except OSError:
        return None
    for line in data.split(b"\n"):
        if line.startswith(b"VmHWM:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


class PeakRss:
    """Peak RSS of this process, reset at each invocation's start when the kernel permits it.

    Writing ``5`` to ``/proc/self/clear_refs`` resets the high-water mark to the current RSS,
    so the mark read at the end is this invocation's peak. ``ru_maxrss`` is the cheapest read
    (no file parsing); it also includes the peak of the memory image replaced by ``exec``, so
    when that floor is above the current mark the status file is read instead. With the native
    module (``native``), ``ru_maxrss`` is read by one call into it, without the 16-field result
    Python builds.
    """

    def __init__(self, native: ModuleType | None = None) -> None:
        self.scope = "process"
        self._native_maxrss = getattr(native, "maxrss_kib", None)
        self._clear_fd = -1
        self._status_fd = -1
        self._floor_kib = 0
        self._scale = 1024
        if sys.platform == "darwin":
            self._scale = 1  # ru_maxrss is in bytes there
        try:
            self._clear_fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
            os.write(self._clear_fd, b"5")
            self.scope = "invocation"
        except (OSError, AttributeError):
            self._close_clear()
        if self.scope == "invocation":
            try:
                self._status_fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._status_fd = -1
            hwm = _read_status_hwm_kib(self._status_fd) if self._status_fd >= 0 else None
            maxrss = self._maxrss_kib()
            if hwm is not None and maxrss is not None and maxrss > hwm:
                # ru_maxrss is stuck at the exec'd image's peak: below it, read the status.
                self._floor_kib = maxrss

    def _close_clear(self) -> None:
        if self._clear_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._clear_fd)
        self._clear_fd = -1

    def close(self) -> None:
        self._close_clear()
        if self._status_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._status_fd)
        self._status_fd = -1

    def _maxrss_kib(self) -> int | None:
        if self._native_maxrss is not None:
            return self._native_maxrss()
        if resource is None:
            return None
        try:
            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        except (OSError, ValueError):
            return None

    def reset(self) -> None:
        if self._clear_fd < 0:
            return
        try:
            os.write(self._clear_fd, b"5")
        except OSError:
            self._close_clear()
            self.scope = "process"

    def read(self) -> int | None:
        kib = self._maxrss_kib()
        if kib is None:
            return None
        if self._floor_kib and kib <= self._floor_kib and self._status_fd >= 0:
            hwm = _read_status_hwm_kib(self._status_fd)
            if hwm is not None:
                return hwm * 1024
        return kib * self._scale
