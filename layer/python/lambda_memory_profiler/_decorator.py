"""The ``@memory_profile`` decorator: the wrapper that measures each invocation.

Every invocation takes the cheap path (clocks, gc counters, peak RSS, the heap's block count,
one datagram). Sampled ones also run under ``tracemalloc`` (``_trace``); which ones is decided
by ``_sampling``, and the record is assembled in ``_record``.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import time
from typing import Any, Callable, TypeVar, overload

from . import _heap, _probes, _restore
from ._config import Options, resolve
from ._handoff import Sender, sender_for
from ._record import AGENT, RUNTIME, deliver, request_id
from ._sampling import Sampler
from ._trace import TraceSession

F = TypeVar("F", bound=Callable[..., Any])

_perf = time.perf_counter
_wall = time.time
_GC_COUNTS = _probes.GC_COUNTS


class _Process:
    """State shared by every decorated function of the process."""

    def __init__(self) -> None:
        self.cold = True
        self.active = False  # a measured invocation is running: nested wrappers pass through
        self.rss: _probes.PeakRss | None = None
        self.anon: _probes.AnonMemory | None = None
        self.traced = 0
        self.invocations = 0
        self.errors = 0  # measurement steps that failed (the handler never sees them)


_PROCESS = _Process()


def _forget_probes() -> None:
    """In a forked child: the probes' descriptors were opened as ``/proc/self/...`` by the
    parent and still name the parent's files (the child would read the parent's memory and
    reset the parent's peak). They are closed; the child's next invocation opens its own."""
    process = _PROCESS
    for probe in (process.rss, process.anon):
        if probe is not None:
            try:
                probe.close()
            except Exception:
                process.errors += 1
    process.rss = None
    process.anon = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_probes)


def stats() -> dict[str, int]:
    """Counters of this process: invocations measured, traced, records sent or dropped, ..."""
    from ._handoff import _senders

    return {
        "invocations": _PROCESS.invocations,
        "traced": _PROCESS.traced,
        "measurement_errors": _PROCESS.errors,
        "sent": sum(s.sent for s in _senders.values()),
        "dropped": sum(s.dropped for s in _senders.values()),
        "emf_lines": sum(s.emf_lines for s in _senders.values()),
    }


class _Profiler:
    """Measurement state of one decorated function."""

    def __init__(self, opts: Options, sink: dict[str, object] | None = None) -> None:
        self.opts = opts
        self.sampler = Sampler(opts)
        self.sender: Sender | None = None
        # Sent with this handler's first record: of several decorated functions, the one Lambda
        # invokes is the one whose sink arguments the extension takes (docs/protocol.md).
        self.sink = sink
        try:
            # Hello now, while the handler's module is imported (init): the extension then
            # knows before the first invocation that a record will come for each one.
            self.sender = sender_for(opts.intake_port)
            if not self.sender.hello_sent:
                self.sender.hello(RUNTIME, AGENT)
        except Exception:
            _PROCESS.errors += 1
        # The process's native heap sampler, started now (before the first invocation, so
        # what the handler's module keeps from its import is in the estimate); None without it
        # or with native=False (a function can opt out even when another one started it).
        self.heap = _heap.process_heap(opts) if opts.native else None
        # With the sampler, the record is encoded natively too (the same bytes, cheaper).
        self.native_encode = (
            getattr(self.heap.native, "encode_invocation", None) if self.heap else None
        )
        if self.heap is not None:
            # The sampler names growing sites at every invocation: no suspect traces (they
            # would cost a traced invocation each, and the sampler's own first-invocation
            # tables look like growth to the suspect rule).
            self.sampler.suspect = False
        # A SnapStart restore or a fork: new sampling sequences, the hand-off checked again.
        try:
            _restore.track(self)
        except Exception:
            _PROCESS.errors += 1


class _Invocation:
    """What the start of a measured invocation leaves for its end."""

    __slots__ = ("cold", "gc0", "reason", "session", "start_ms")

    def __init__(self, cold: bool, gc0: tuple[int, int, int]) -> None:
        self.cold = cold
        self.gc0 = gc0
        self.reason: str | None = None
        self.session: TraceSession | None = None
        self.start_ms = 0.0


def _begin(prof: _Profiler) -> _Invocation | None:
    """Everything before the handler runs; None when this call is not measured (an outer
    wrapper measures it, or a measurement step failed)."""
    process = _PROCESS
    if process.active:
        return None  # an outer @memory_profile measures this invocation
    try:
        cold = process.cold
        process.cold = False
        process.invocations += 1
        if process.rss is None:
            # First invocation: the PeakRss's creation resets the mark. With the sampler, both
            # probes read through the native module (the same figures, cheaper).
            native = _heap.running_module()
            process.rss = _probes.PeakRss(native)
            process.anon = _probes.AnonMemory(native)
        else:
            process.rss.reset()
        inv = _Invocation(cold, (_GC_COUNTS[0], _GC_COUNTS[1], _GC_COUNTS[2]))
        inv.start_ms = _wall() * 1000.0
        reason = prof.sampler.choose_trace(cold)
        if reason is not None:
            # Last: nothing after it can fail and leave tracing on, and the objects above were
            # allocated before its block count, so they stay out of heap_blocks_delta.
            try:
                if _heap.sampling():
                    # The native sampler reads this wrapper's frame during the call, which
                    # creates its frame object (3.11+): create it now, before the block count,
                    # so it does not count as the handler's.
                    sys._getframe(1)
                inv.session = TraceSession(prof.opts.frames)
                inv.reason = reason
            except Exception:
                process.errors += 1
    except Exception:
        process.errors += 1
        return None
    process.active = True
    return inv


def _finish(
    prof: _Profiler,
    inv: _Invocation,
    duration_s: float,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    exc: BaseException | None,
    result: Any,
) -> None:
    """Everything after the handler returned or raised: ends tracing, takes the cheap
    figures, sends the record."""
    trace = None
    blocks: int | None = None
    cost_s = duration_s
    sampler = prof.sampler
    session = inv.session
    if session is not None and inv.reason is not None:
        t0 = _perf()
        try:
            trace, blocks = session.end(inv.reason, result, prof.opts.top)
            _PROCESS.traced += 1
        except Exception:
            _PROCESS.errors += 1
        cost_s += _perf() - t0
    sampler.learn(trace is not None, inv.cold, cost_s)
    rss = _PROCESS.rss
    rss_peak = rss.read() if rss is not None else None
    anon = _PROCESS.anon.read() if _PROCESS.anon is not None else None
    if blocks is None:
        blocks = sampler.heap_blocks()
    if blocks is not None:
        # Not the function's: the blocks of the sampler's site tables, which grow as the
        # sampler meets new stacks (a block or two per invocation for hundreds of them).
        blocks -= _heap.own_blocks()
    gc0 = inv.gc0
    gc1 = _GC_COUNTS
    try:
        garbage = len(gc.garbage)
    except Exception:
        garbage = None
    sampler.observe(anon, blocks)
    heap = None
    if prof.heap is not None:
        try:
            heap = prof.heap.read(prof.opts.top)
        except Exception:
            _PROCESS.errors += 1
    sender = prof.sender
    if sender is None:
        sender = prof.sender = sender_for(prof.opts.intake_port)
    if prof.sink is not None:
        sink, prof.sink = prof.sink, None
        sender.hello(RUNTIME, AGENT, sink)
    elif not sender.hello_sent:
        # After a restore or a fork: this process's pid, before its first record.
        sender.hello(RUNTIME, AGENT)
    deliver(
        sender,
        prof.opts,
        request_id(args, kwargs),
        inv.start_ms,
        duration_s * 1000.0,
        inv.cold,
        type(exc).__name__ if exc is not None else None,
        rss_peak,
        rss.scope if rss is not None else "process",
        blocks,
        anon,
        (gc1[0] - gc0[0], gc1[1] - gc0[1], gc1[2] - gc0[2]),
        garbage,
        trace,
        heap,
        prof.native_encode,
    )


def _wrap(fn: F, opts: Options, sink: dict[str, object] | None = None) -> F:
    if opts.disable:
        return fn
    prof = _Profiler(opts, sink)
    _probes.install_gc_callback()

    # The handler is called within the first few instructions of this function, what comes
    # before it is in _begin. With deep tracebacks, tracemalloc computes the line number of
    # every captured frame at every traced allocation, by walking the frame's line table from
    # the start of its code to the current instruction: a call site far into a long function
    # costs up to about a microsecond per allocation (what follows the call costs nothing).
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        inv = _begin(prof)
        if inv is None:
            return fn(*args, **kwargs)
        t0 = _perf()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            duration_s = _perf() - t0
            _PROCESS.active = False
            try:
                _finish(prof, inv, duration_s, args, kwargs, exc, None)
            except Exception:
                _PROCESS.errors += 1
            raise
        duration_s = _perf() - t0
        _PROCESS.active = False
        try:
            _finish(prof, inv, duration_s, args, kwargs, None, result)
        except Exception:
            _PROCESS.errors += 1
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
    trace_cold: bool | None = None,
    native: bool | None = None,
    heap_sample_bytes: int | None = None,
    heap_frames: int | None = None,
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
    trace_cold: bool | None = None,
    native: bool | None = None,
    heap_sample_bytes: int | None = None,
    heap_frames: int | None = None,
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
        "trace_cold": trace_cold,
        "native": native,
        "heap_sample_bytes": heap_sample_bytes,
        "heap_frames": heap_frames,
    }

    opts = resolve(overrides)  # now: a bad option fails where it is written
    # The sink arguments written here configure the extension too (carried in the hello);
    # those left out keep the extension's own LMP_* values.
    sink: dict[str, object] = {}
    if namespace is not None:
        sink["namespace"] = opts.namespace
    if dimensions is not None:
        sink["dimensions"] = ",".join(opts.dimensions)
    if storage_resolution is not None:
        sink["storage_resolution"] = opts.storage_resolution

    def decorate(f: F) -> F:
        return _wrap(f, opts, sink or None)

    if fn is not None:
        if not callable(fn):
            raise TypeError("memory_profile: expected a function")
        return decorate(fn)
    return decorate
