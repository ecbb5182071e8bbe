"""The ``@memory_profile`` decorator."""

from __future__ import annotations

import collections
import functools
import gc
import heapq
import os
import random
import sys
import time
import tracemalloc
from typing import Any, Callable, TypeVar, overload

from . import _probes
from ._config import Options, resolve
from ._handoff import PROTOCOL_VERSION, Sender, encode, encode_invocation, sender_for
from ._version import __version__

F = TypeVar("F", bound=Callable[..., Any])

RUNTIME = f"python{sys.version_info[0]}.{sys.version_info[1]}"
AGENT = f"lambda_memory_profiler/{__version__}"
# While growth is suspected, trace at most one invocation in this many.
SUSPECT_INTERVAL = 10
# Average cost allowed for the heap block count per invocation, and the longest gap between
# two counts (a large heap makes the count slow).
HEAP_BLOCKS_BUDGET_S = 4e-6
MAX_HEAP_BLOCKS_EVERY = 16
# Past this many retained blocks, growth uses per-site mean sizes (bounded cost).
MAX_SIZED_BLOCKS = 50000
_THIS_FILE = __file__
# Blocks attributed to these files are the measurement's own, never the handler's.
_OWN_FILES = frozenset((__file__, _probes.__file__, tracemalloc.__file__))

_perf = time.perf_counter
_wall = time.time
_blocks = sys.getallocatedblocks
_GC = _probes.GC_COUNTS


class _Process:
    """State shared by every decorated function of the process."""

    def __init__(self) -> None:
        self.cold = True
        self.active = False  # a measured invocation is running: nested wrappers pass through
        self.rss: _probes.PeakRss | None = None
        self.traced = 0
        self.invocations = 0
        self.errors = 0  # measurement steps that failed (the handler never sees them)


_P = _Process()


def stats() -> dict[str, int]:
    """Counters of this process: invocations measured, traced, records sent or dropped, ..."""
    from ._handoff import _senders

    return {
        "invocations": _P.invocations,
        "traced": _P.traced,
        "measurement_errors": _P.errors,
        "sent": sum(s.sent for s in _senders.values()),
        "dropped": sum(s.dropped for s in _senders.values()),
        "emf_lines": sum(s.emf_lines for s in _senders.values()),
    }


def _request_id(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    ctx = args[1] if len(args) > 1 else kwargs.get("context")
    rid = getattr(ctx, "aws_request_id", "") if ctx is not None else ""
    return rid if isinstance(rid, str) else ""


def _site_rows(snapshot: Any) -> tuple[list[tuple[str, int, int, int]], int]:
    """(file, line, size, count) per allocation site, largest first, without the measurement's
    own blocks; and the number of those own blocks allocated in this file."""
    try:
        return _group_raw(snapshot.traces._traces)
    except Exception:  # the private layout changed: the public, slower way
        pass
    rows = []
    own = 0
    for st in snapshot.statistics("lineno"):
        frame = st.traceback[0]
        if frame.filename in _OWN_FILES:
            if frame.filename == _THIS_FILE:
                own += st.count
            continue
        rows.append((frame.filename, frame.lineno, st.size, st.count))
    return rows, own


_library_prefixes: tuple[str, ...] | None = None


def _libraries() -> tuple[str, ...]:
    """Folders of code that is not the function's own: the standard library, installed
    packages, and the Lambda runtime client (``/var/runtime``)."""
    global _library_prefixes
    if _library_prefixes is None:
        import sysconfig

        found = {"/var/runtime/"}
        paths = sysconfig.get_paths()
        for name in ("stdlib", "platstdlib", "purelib", "platlib"):
            if paths.get(name):
                found.add(os.path.join(paths[name], ""))
        _library_prefixes = tuple(found)
    return _library_prefixes


def _site_of(frames: tuple[tuple[str, int], ...]) -> tuple[str, int]:
    """The newest frame in the function's own code, else the newest frame. With one frame per
    trace (the default) that is the allocating line itself, wherever it is."""
    libs = _libraries()
    for frame in frames:
        if not frame[0].startswith(libs):
            return frame
    return frames[0]


def _group_raw(raw: list[Any]) -> tuple[list[tuple[str, int, int, int]], int]:
    """Groups raw traces (domain, size, frames most recent first, ...) by allocation site:
    what ``statistics("lineno")`` computes, without building an object per trace; with deeper
    tracebacks, the site is the newest frame in the function's own code."""
    acc: dict[Any, list[int]] = {}
    sites: dict[Any, tuple[str, int]] = {}
    for t in raw:
        frames = t[2]
        if not frames:
            key: Any = ("<unknown>", 0)
        elif len(frames) == 1 or frames[0][0] in _OWN_FILES:
            key = frames[0]
        else:
            key = sites.get(frames)
            if key is None:
                key = sites[frames] = _site_of(frames)
        e = acc.get(key)
        if e is None:
            acc[key] = [t[1], 1]
        else:
            e[0] += t[1]
            e[1] += 1
    rows = []
    own = 0
    for (filename, lineno), (size, count) in acc.items():
        if filename in _OWN_FILES:
            if filename == _THIS_FILE:
                own += count
            continue
        rows.append((filename, lineno, size, count))
    rows.sort(key=lambda r: (r[2], r[3]), reverse=True)
    return rows, own


def _block_sizes(snapshot: Any, limit: int) -> list[int] | None:
    """Sizes of the traced blocks (without our own), or None past ``limit`` blocks."""
    try:
        raw = snapshot.traces._traces  # (domain, size, frames, ...): avoids a Trace per block
        if len(raw) > limit:
            return None
        return [t[1] for t in raw if not t[2] or t[2][0][0] not in _OWN_FILES]
    except Exception:
        return None


_CONTAINERS = (list, tuple, set, frozenset)
_LEAVES = (str, bytes, int, float)
_EMPTY_LIST = sys.getsizeof([])
_EMPTY_DICT = sys.getsizeof({})
_KEYS_FREE_LIST = 80  # CPython keeps at most this many small dict key tables for reuse


def _result_blocks(
    result: Any, get_tb: Callable[[Any], Any], limit: int = 2048
) -> tuple[int, int, list[int]]:
    """Blocks and bytes of the return value allocated during the invocation.

    The runtime frees the response right after the invocation: it is live at the end, but it
    is not growth. Walks dicts, lists, tuples and sets (at most ``limit`` objects) and counts
    what tracing saw allocated. Containers are entered even when their own header is older:
    the interpreter reuses list and dict headers from free lists, but their contents are new.
    Returns the block count, the bytes, and the exact sizes of the leaves (str, bytes,
    numbers, which have no gc header), counted as the snapshot counts them.
    """
    seen = set()
    stack = [result]
    blocks = 0
    size = 0
    leaves: list[int] = []
    small_tables = 0
    while stack and len(seen) < limit:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        t = type(o)
        traced = get_tb(o) is not None
        if t is dict:
            stack.extend(o.keys())
            stack.extend(o.values())
            if traced:
                blocks += 1
                size += _EMPTY_DICT
            # Its keys table is a new block, except small tables of str keys, which may come
            # from the interpreter's free list (up to 80 of them; no way to tell which). Those
            # are left in the retained set: a few hundred bytes of apparent growth at worst,
            # where counting them could hide a real one-block leak.
            if len(o) > 5 or not all(type(k) is str for k in o):
                blocks += 1
                size += sys.getsizeof(o) - _EMPTY_DICT
            elif o:
                small_tables += 1
                if small_tables > _KEYS_FREE_LIST:
                    blocks += 1
                    size += sys.getsizeof(o) - _EMPTY_DICT
        elif t is list:
            stack.extend(o)
            if traced:
                blocks += 1
                size += _EMPTY_LIST
            if o:  # the items array is allocated anew even for a reused list header
                blocks += 1
                size += sys.getsizeof(o) - _EMPTY_LIST
        elif traced:
            n = sys.getsizeof(o)
            blocks += 1
            size += n
            if t in _CONTAINERS:
                stack.extend(o)
            elif t in _LEAVES:
                leaves.append(n)
        elif t in _CONTAINERS:
            stack.extend(o)
    return blocks, size, leaves


def estimate_growth(
    rows: list[tuple[str, int, int, int]],
    delta_blocks: int,
    sizes: list[int] | None = None,
    result_blocks: int = 0,
    result_bytes: int = 0,
    result_leaves: list[int] | None = None,
) -> int:
    """Net growth of the heap from the retained blocks and the net change of the block count.

    The return value's blocks are set aside first (the runtime frees them right after). Of the
    R remaining retained blocks, Δ are net new; the other R - Δ replaced older blocks freed
    during the invocation. Each freed block is taken to have been replaced by one of the
    smallest retained blocks (a list's items array reallocated to grow, a small key for an
    evicted one), so the growth is the size of the Δ largest retained blocks. When more blocks
    were freed than retained, the heap shrank: the retained bytes are scaled by Δ / R (down to
    minus themselves). ``sizes`` gives each block's size; without it, per-site means are used.
    """
    retained_bytes = sum(r[2] for r in rows) - result_bytes
    retained_blocks = sum(r[3] for r in rows) - result_blocks
    delta = delta_blocks - result_blocks
    if retained_blocks <= 0 or retained_bytes <= 0:
        return 0  # nothing retained besides the response: no growth
    if delta >= retained_blocks:
        return retained_bytes
    if delta <= 0:
        return int(retained_bytes * max(delta / retained_blocks, -1.0))
    if sizes is not None:
        pool = sizes
        if result_leaves:
            # Drop the response's own leaves (exact sizes) from the candidates.
            left = collections.Counter(result_leaves)
            pool = []
            for n in sizes:
                if left.get(n):
                    left[n] -= 1
                else:
                    pool.append(n)
        return min(retained_bytes, sum(heapq.nlargest(delta, pool)))
    growth = 0
    left_blocks = delta
    for _file, _line, size, count in sorted(rows, key=lambda r: r[2] / r[3], reverse=True):
        take = count if count < left_blocks else left_blocks
        growth += size * take // count
        left_blocks -= take
        if left_blocks == 0:
            break
    return min(retained_bytes, growth)


class _Profiler:
    """Measurement state of one decorated function."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.calls = 0
        self.last_traced = -SUSPECT_INTERVAL
        self.prev_blocks = -1
        self.rising = 0
        # A private generator: the user's random.seed() must not steer sampling, nor the reverse.
        self.rng = random.Random()
        self.sender: Sender | None = None
        # Moving averages (seconds) of an untraced invocation and of what tracing adds to one:
        # they turn the tracing budget into an effective sampling rate.
        self.plain_s: float | None = None
        self.extra_s: float | None = None
        self.blocks_every = 1
        self.skipped_blocks = 0

    def learn(self, traced: bool, cold: bool, cost_s: float) -> None:
        if cold:
            return  # imports and first-time caches: not representative
        if not traced:
            p = self.plain_s
            self.plain_s = cost_s if p is None else p + 0.1 * (cost_s - p)
        elif self.plain_s is not None:
            extra = max(cost_s - self.plain_s, 0.0)
            e = self.extra_s
            self.extra_s = extra if e is None else e + 0.3 * (extra - e)

    def heap_blocks(self) -> int | None:
        """``sys.getallocatedblocks()``, on every invocation while it is cheap. It walks the
        allocator's pools, so its cost grows with the heap: past HEAP_BLOCKS_BUDGET_S it is
        taken every few invocations only (at most MAX_HEAP_BLOCKS_EVERY), ``None`` between."""
        self.skipped_blocks += 1
        if self.skipped_blocks < self.blocks_every:
            return None
        self.skipped_blocks = 0
        t0 = _perf()
        n = _blocks()
        cost = _perf() - t0
        every = int(cost / HEAP_BLOCKS_BUDGET_S) + 1
        self.blocks_every = every if every < MAX_HEAP_BLOCKS_EVERY else MAX_HEAP_BLOCKS_EVERY
        return n

    def effective_rate(self) -> float:
        """The sample rate, lowered so that tracing costs at most the budget per invocation on
        average: the larger of ``trace_budget_us`` and 2% of an untraced invocation."""
        rate = self.opts.sample_rate
        extra = self.extra_s
        if not extra or not self.opts.trace_budget_us:
            return rate
        budget = self.opts.trace_budget_us * 1e-6
        if self.plain_s is not None and 0.02 * self.plain_s > budget:
            budget = 0.02 * self.plain_s
        return min(rate, budget / extra)

    def choose_trace(self, cold: bool) -> str | None:
        opts = self.opts
        rate = opts.sample_rate
        if not opts.trace or rate <= 0.0:
            return None  # the cheap path only, the cold start included
        if cold:
            return "cold"
        if rate >= 1.0:
            return "always"
        if rate > 0.0 and self.rng.random() < self.effective_rate():
            return "rate"
        w = opts.suspect_window
        if w and self.rising >= w and self.calls - self.last_traced >= SUSPECT_INTERVAL:
            return "suspect"
        return None

    def trace_start(self) -> tuple[Any, ...]:
        if tracemalloc.is_tracing():
            # The user's own session: never stop or reset it; work with differences.
            cur0, peak0 = tracemalloc.get_traced_memory()
            return ("shared", cur0, peak0)
        blocks0 = _probes.heap_blocks()
        tracemalloc.start(self.opts.frames)
        return ("own", blocks0)

    def trace_end(
        self, reason: str, tr: tuple[Any, ...], result: Any
    ) -> tuple[dict[str, Any], int]:
        """Builds ``trace``; also returns the heap block count taken before the snapshot."""
        top_n = self.opts.top
        if tr[0] == "own":
            try:
                _cur, peak = tracemalloc.get_traced_memory()
                blocks1 = _probes.heap_blocks()
                snapshot = tracemalloc.take_snapshot()
                res_blocks, res_bytes, res_leaves = (0, 0, [])
                if result is not None:
                    res_blocks, res_bytes, res_leaves = _result_blocks(
                        result, tracemalloc.get_object_traceback
                    )
            finally:
                # statistics() is far cheaper once tracing is off; nothing else needs it on.
                tracemalloc.stop()
            rows, own = _site_rows(snapshot)
            # Live blocks of this file (figures of this very measurement) are in the count but
            # not the handler's; -1: the integer holding the first count was allocated after it.
            delta = blocks1 - tr[1] - 1 - own
            sizes = None
            if 0 < delta - res_blocks < sum(r[3] for r in rows) - res_blocks:
                sizes = _block_sizes(snapshot, MAX_SIZED_BLOCKS)
            del snapshot
            trace: dict[str, Any] = {
                "reason": reason,
                "mode": "own",
                "peak_bytes": peak,
                "retained_bytes": sum(r[2] for r in rows),
                "retained_blocks": sum(r[3] for r in rows),
                "growth_bytes": estimate_growth(
                    rows, delta, sizes, res_blocks, res_bytes, res_leaves
                ),
                "heap_blocks_delta": delta,
            }
        else:
            blocks1 = _blocks()
            cur1, peak1 = tracemalloc.get_traced_memory()
            cur0, peak0 = tr[1], tr[2]
            snapshot = tracemalloc.take_snapshot()
            rows, _own = _site_rows(snapshot)
            del snapshot
            trace = {
                "reason": reason,
                "mode": "shared",
                # The session's peak is not reset: known only when this invocation raised it.
                "peak_bytes": peak1 - cur0 if peak1 > peak0 else None,
                # The session also sees frees of older traced blocks: a net figure (never
                # negative here: the field is a size; growth keeps the sign).
                "retained_bytes": max(cur1 - cur0, 0),
                "retained_blocks": None,
                "growth_bytes": cur1 - cur0,
                "heap_blocks_delta": None,
            }
        trace["top"] = [
            {"file": f, "line": ln, "size": sz, "count": c} for f, ln, sz, c in rows[:top_n]
        ]
        trace["top_truncated"] = 0
        return trace, blocks1


def _finish(
    prof: _Profiler,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    cold: bool,
    start_ms: float,
    duration_s: float,
    gc0: tuple[int, int, int],
    reason: str | None,
    tr: tuple[Any, ...] | None,
    exc: BaseException | None,
    result: Any = None,
) -> None:
    trace = None
    blocks: int | None = None
    cost_s = duration_s
    if tr is not None and reason is not None:
        t0 = _perf()
        try:
            trace, blocks = prof.trace_end(reason, tr, result)
            _P.traced += 1
        except Exception:
            _P.errors += 1
        cost_s += _perf() - t0
    prof.learn(trace is not None, cold, cost_s)
    rss = _P.rss
    rss_peak = rss.read() if rss is not None else None
    if blocks is None:
        blocks = prof.heap_blocks()
    gc1 = _GC
    try:
        garbage = len(gc.garbage)
    except Exception:
        garbage = None
    # Net counter of live blocks at each invocation's end: steady growth makes tracing likelier.
    if blocks is not None:
        if prof.prev_blocks >= 0 and blocks > prof.prev_blocks:
            prof.rising += 1
        else:
            prof.rising = 0
        prof.prev_blocks = blocks
    request_id = _request_id(args, kwargs)
    pid = os.getpid()
    duration_ms = duration_s * 1000.0
    error_type = type(exc).__name__ if exc is not None else None
    scope = rss.scope if rss is not None else "process"
    collections = gc1[0] - gc0[0]
    collected = gc1[1] - gc0[1]
    uncollectable = gc1[2] - gc0[2]
    opts = prof.opts
    sender = prof.sender
    if sender is None:
        sender = prof.sender = sender_for(opts.intake_port)
    if not sender.hello_sent:
        sender.hello(RUNTIME, AGENT)
    if trace is None and not sender.absent:
        # The every-invocation path: straight to bytes, no intermediate record.
        data = encode_invocation(
            request_id,
            pid,
            RUNTIME,
            start_ms,
            duration_ms,
            cold,
            error_type,
            rss_peak,
            scope,
            blocks,
            collections,
            collected,
            uncollectable,
            garbage,
        )
        if sender.try_send(data):
            return
    record = {
        "v": PROTOCOL_VERSION,
        "kind": "invocation",
        "request_id": request_id,
        "pid": pid,
        "runtime": RUNTIME,
        "start_ms": start_ms,
        "duration_ms": duration_ms,
        "cold_start": cold,
        "error_type": error_type,
        "rss_peak_bytes": rss_peak,
        "rss_peak_scope": scope,
        "heap_blocks": blocks,
        "gc": {
            "collections": collections,
            "collected": collected,
            "uncollectable": uncollectable,
            "garbage": garbage,
        },
        "trace": trace,
    }
    if trace is not None and sender.try_send(encode(record)):
        return
    sender.print_emf(record, opts.namespace, opts.dimensions, opts.storage_resolution)


def _wrap(fn: F, opts: Options) -> F:
    if opts.disable:
        return fn
    prof = _Profiler(opts)
    _probes.install_gc_callback()

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _P.active:
            return fn(*args, **kwargs)  # an outer @memory_profile measures this invocation
        reason = None
        tr = None
        try:
            cold = _P.cold
            _P.cold = False
            _P.invocations += 1
            prof.calls += 1
            if _P.rss is None:
                _P.rss = _probes.PeakRss()  # first invocation: its creation resets the mark
            else:
                _P.rss.reset()
            gc0 = (_GC[0], _GC[1], _GC[2])
            reason = prof.choose_trace(cold)
            if reason is not None:
                prof.last_traced = prof.calls
                try:
                    tr = prof.trace_start()
                except Exception:
                    _P.errors += 1
                    reason = None
            start_ms = _wall() * 1000.0
        except Exception:
            _P.errors += 1
            return fn(*args, **kwargs)
        _P.active = True
        t0 = _perf()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            t1 = _perf()
            _P.active = False
            try:
                _finish(prof, args, kwargs, cold, start_ms, t1 - t0, gc0, reason, tr, exc)
            except Exception:
                _P.errors += 1
            raise
        t1 = _perf()
        _P.active = False
        try:
            _finish(prof, args, kwargs, cold, start_ms, t1 - t0, gc0, reason, tr, None, result)
        except Exception:
            _P.errors += 1
        return result

    wrapper.__lmp_options__ = opts  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


@overload
def memory_profile(fn: F) -> F: ...


@overload
def memory_profile(
    fn: None = None,
    *,
    top: int | None = None,
    sample_rate: float | None = None,
    trace: bool | None = None,
    intake_port: int | None = None,
    namespace: str | None = None,
    suspect_window: int | None = None,
    storage_resolution: int | None = None,
    dimensions: str | None = None,
    disable: bool | None = None,
    trace_budget_us: float | None = None,
    frames: int | None = None,
) -> Callable[[F], F]: ...


def memory_profile(
    fn: F | None = None,
    *,
    top: int | None = None,
    sample_rate: float | None = None,
    trace: bool | None = None,
    intake_port: int | None = None,
    namespace: str | None = None,
    suspect_window: int | None = None,
    storage_resolution: int | None = None,
    dimensions: str | None = None,
    disable: bool | None = None,
    trace_budget_us: float | None = None,
    frames: int | None = None,
) -> F | Callable[[F], F]:
    """Measures each invocation of a Lambda handler; usable bare or with options.

    Every option left out takes its ``LMP_*`` environment variable, then its default. Bad
    explicit options raise at decoration time; bad variables print one warning and fall back.
    """
    overrides: dict[str, object] = {
        "top": top,
        "sample_rate": sample_rate,
        "trace": trace,
        "intake_port": intake_port,
        "namespace": namespace,
        "suspect_window": suspect_window,
        "storage_resolution": storage_resolution,
        "dimensions": dimensions,
        "disable": disable,
        "trace_budget_us": trace_budget_us,
        "frames": frames,
    }

    opts = resolve(overrides)  # now: a bad option fails where it is written

    def decorate(f: F) -> F:
        return _wrap(f, opts)

    if fn is not None:
        if not callable(fn):
            raise TypeError("memory_profile: expected a function")
        return decorate(fn)
    return decorate
