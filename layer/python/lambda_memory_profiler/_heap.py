"""The native heap sampler (``_native``, built from ``pyheap/``): started once per process,
read at every invocation's end into the record's ``heap`` object (docs/protocol.md).

The sampler estimates the live bytes of the Python allocator's OBJ and MEM domains, and which
stacks hold them, at any moment; this module turns its stacks into sites (the newest frame of
the function's own code, ``_sites``) and keeps each site's running live bytes. Without the
module (a pure-Python install, a free-threaded build, ``LMP_NATIVE=false``) or after the
sampler failed, ``read`` returns None and the decorator's other figures carry on.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sysconfig
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Optional

from . import _probes, _sites
from ._config import Options

# _native.stats() fields.
_MODE, _LIVE, _ALLOCATED, _SAMPLES, _TAKEN, _DROPPED, _OVERFLOWED = range(7)
_FAILURES, _EPOCH, _MEAN, _FOOTPRINT, _PEAK = range(7, 12)
_ACTIVE = 1

# Site of the samples whose stack could not be read, and of those past the stack table's cap.
_UNKNOWN_SITE = ("<unknown>", 0, "", None)
_OVERFLOW_SITE = ("<stacks dropped>", 0, "", None)

Site = tuple[str, int, str, Optional[str]]  # file, line, function, via ("file:line" or None)


def _by_size(item: tuple[Any, int]) -> int:
    """Sort key of a (site, net change): the largest change first, either sign."""
    return -abs(item[1])


def load(opts: Options) -> ModuleType | None:
    """The native module, or None where it must not or cannot run."""
    if not getattr(opts, "native", True):
        return None
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None  # free-threaded: the OBJ/MEM domains are not serialized by a GIL
    try:
        from . import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _native


class _SiteState:
    """One site of the sampler's stacks (several stacks can share it): its names, whether it
    is this package's own, and its running live bytes. Keyed by identity in the per-read
    tables, which hashes faster than the names' tuple (a read runs cold, after the handler)."""

    __slots__ = ("file", "function", "line", "live", "own", "via")

    def __init__(self, site: Site) -> None:
        self.file, self.line, self.function, self.via = site
        # The sampler also sees this package's own blocks (its tables): never a site of the
        # function's.
        self.own = self.file.startswith(_sites.PACKAGE_DIR)
        self.live = 0


@contextlib.contextmanager
def _collector_held() -> Iterator[None]:
    """The garbage collector off meanwhile (a collection would free others' blocks between
    two block counts)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _count_overhead() -> int:
    """Blocks a count of blocks adds to the next one: the first count's own integer, alive
    when the second is taken (1 on every interpreter this package supports)."""
    with _collector_held():
        return min(-_probes.heap_blocks() + _probes.heap_blocks() for _ in range(3))


class NativeHeap:
    """The process's sampler and what the decorator remembers between reads."""

    def __init__(self, native: ModuleType, mean_bytes: int, frames: int) -> None:
        self.native = native
        self.running = bool(
            native.start(mean_bytes, frames, int.from_bytes(os.urandom(8), "little"))
        )
        self.last_allocated = native.stats()[_ALLOCATED] if self.running else 0
        self.last_epoch = 0
        self._by_stack: dict[int, _SiteState] = {}
        self._by_site: dict[Site, _SiteState] = {}
        # Blocks these tables hold (counted as they grow): the decorator takes them out of the
        # record's heap block count, so its own bookkeeping is not read as the function's.
        self.own_blocks = 0
        self._count_overhead = _count_overhead()

    def reseed(self) -> None:
        """A new sampling sequence (a process restored from a snapshot)."""
        if self.running:
            self.native.reseed(int.from_bytes(os.urandom(8), "little"))

    def _state_of(self, stack_id: int) -> _SiteState:
        """The site of an interned stack (named once per stack); the blocks that naming
        leaves in the tables are counted as the decorator's own."""
        found = self._by_stack.get(stack_id)
        if found is not None:
            return found
        with _collector_held():
            before = _probes.heap_blocks()
            state = self._name(stack_id)
            self.own_blocks += _probes.heap_blocks() - before - self._count_overhead
        return state

    def _name(self, stack_id: int) -> _SiteState:
        """Names a stack met for the first time and enters it in the tables."""
        if stack_id == 0:
            site = _UNKNOWN_SITE
        elif stack_id == 1:
            site = _OVERFLOW_SITE
        else:
            raw = self.native.frames(stack_id)
            frames = tuple((code.co_filename, line) for code, line in raw)
            (where, via) = _sites.site_of(frames)
            code = next((c for c, line in raw if (c.co_filename, line) == where), None)
            name = ""
            if code is not None:
                name = getattr(code, "co_qualname", None) or code.co_name
            site = (where[0], where[1], name, f"{via[0]}:{via[1]}" if via else None)
        state = self._by_site.get(site)
        if state is None:
            state = self._by_site[site] = _SiteState(site)
        self._by_stack[stack_id] = state
        return state

    def read(self, top: int) -> dict[str, Any] | None:
        """The ``heap`` object of this invocation's record; None when the sampler is off."""
        if not self.running:
            return None
        st = self.native.stats()
        if st[_MODE] != _ACTIVE:
            self.running = False
            return None
        allocated = st[_ALLOCATED] - self.last_allocated
        self.last_allocated = st[_ALLOCATED]
        if st[_EPOCH] != self.last_epoch:
            self.last_epoch = st[_EPOCH]
            for state in self._by_site.values():
                state.live = 0  # the samples were dropped: live bytes restart from zero
        changes = self.native.changes()
        sites: list[dict[str, Any]] = []
        truncated = 0
        if changes:  # most invocations change no sampled stack: no sites to build
            sites, truncated = self._sites_of(changes, top)
        return {
            "live_bytes": st[_LIVE],
            "peak_bytes": st[_PEAK],
            "allocated_bytes": allocated,
            "sample_bytes": st[_MEAN],
            "samples": st[_SAMPLES],
            "dropped": st[_DROPPED],
            "epoch": st[_EPOCH],
            "sites": sites,
            "sites_truncated": truncated,
        }

    def _sites_of(
        self, changes: list[tuple[int, int, int]], top: int
    ) -> tuple[list[dict[str, Any]], int]:
        """The ``top`` sites of the stacks that changed, by net change, and how many more."""
        by_stack = self._by_stack
        if len(changes) == 1:  # most reads that change anything change one stack
            stack_id, delta, _live = changes[0]
            s = by_stack.get(stack_id) or self._state_of(stack_id)
            s.live += delta
            if s.own or not delta:
                return [], 0
            if top < 1:
                return [], 1
            return [_entry(s, delta)], 0
        deltas: dict[_SiteState, int] = {}
        for stack_id, delta, _live in changes:
            s = by_stack.get(stack_id) or self._state_of(stack_id)
            s.live += delta
            if not s.own:
                deltas[s] = deltas.get(s, 0) + delta
        ranked = [d for d in deltas.items() if d[1]]
        if len(ranked) > 1:  # most reads name one site
            ranked.sort(key=_by_size)
        return [_entry(s, delta) for s, delta in ranked[:top]], max(len(ranked) - top, 0)


def _entry(s: _SiteState, delta: int) -> dict[str, Any]:
    """One entry of the ``heap`` object's ``sites`` (docs/protocol.md)."""
    entry: dict[str, Any] = {
        "file": s.file,
        "line": s.line,
        "function": s.function,
        "delta_bytes": delta,
        "live_bytes": max(s.live, 0),
    }
    if s.via is not None:
        entry["via"] = s.via
    return entry


_PROCESS_HEAP: list[NativeHeap | None] = []

# Live samples the sampler holds at most is 65,536 (then it drops them, and the estimate
# reads low): the mean gap is raised so that the function's whole memory is covered by half
# of that.
_SAMPLES_FOR_ALL_MEMORY = 32768


def mean_gap(asked: int) -> int:
    """The sampling interval used: the one asked for, raised for large memory sizes."""
    try:
        memory = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0")) << 20
    except ValueError:
        memory = 0
    return max(asked, memory // _SAMPLES_FOR_ALL_MEMORY)


def sampling() -> bool:
    """Whether the process's sampler was started (it then sees every function's blocks)."""
    return bool(_PROCESS_HEAP) and _PROCESS_HEAP[0] is not None


def own_blocks() -> int:
    """Blocks the process's sampler tables of this module hold (0 without the sampler)."""
    heap = _PROCESS_HEAP[0] if _PROCESS_HEAP else None
    return heap.own_blocks if heap is not None else 0


def running_module() -> ModuleType | None:
    """The native module when the process's sampler was started (for its cheaper probes)."""
    heap = _PROCESS_HEAP[0] if _PROCESS_HEAP else None
    return heap.native if heap is not None else None


def process_heap(opts: Options) -> NativeHeap | None:
    """The process's sampler, started by the first decorated function (its options win)."""
    if _PROCESS_HEAP:
        return _PROCESS_HEAP[0]
    heap = None
    native = load(opts)
    if native is not None:
        try:
            heap = NativeHeap(native, mean_gap(opts.heap_sample_bytes), opts.heap_frames)
        except Exception:
            heap = None
        if heap is not None and not heap.running:
            heap = None
    _PROCESS_HEAP.append(heap)
    return heap
