"""A process that resumes a memory image it shares with others: restored from a SnapStart
snapshot, or forked.

Every copy restored from one snapshot resumes the same memory: the sampling generators seeded
during init would pick the same invocations in every copy, and the native sampler would sample
at the same bytes. A forked child shares its parent's the same way. So after a restore (the
runtime's after-restore hook, from ``snapshot_restore_py``, where the runtime has it) and in a
forked child (``os.register_at_fork``), every profiler's generator and the native sampler are
re-seeded, and the hand-off is checked again: an extension found absent before is tried again,
and the next record is preceded by a hello with this process's pid.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

# The profilers of this process (weakly: a decorated function that is gone is not kept).
_profilers: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
# How many times this process resumed a shared image (restores and forks).
restores = 0


def track(profiler: Any) -> None:
    """Re-seed `profiler` (a ``_Profiler``) whenever this process resumes a shared image."""
    _profilers.add(profiler)
    _install()


def _install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    os.register_at_fork(after_in_child=resumed)
    try:
        from snapshot_restore_py import register_after_restore  # type: ignore[import-not-found]
    except ImportError:  # not a Lambda runtime with SnapStart hooks
        return
    register_after_restore(resumed)


def resumed() -> None:
    """Fresh sampling sequences and a new hand-off check; never raises (it runs inside the
    runtime's restore hook, where an exception fails the restore)."""
    global restores
    restores += 1
    profilers: list[Any] = []
    for _ in range(3):  # the set may change size under another thread: take it again
        try:
            profilers = list(_profilers)
            break
        except RuntimeError:
            continue
    seen_heaps: set[int] = set()
    for prof in profilers:
        try:  # one profiler's failure leaves the others re-seeded
            prof.sampler.rng.seed(os.urandom(16))
            heap = prof.heap
            if heap is not None and id(heap) not in seen_heaps:
                seen_heaps.add(id(heap))
                heap.reseed()
            sender = prof.sender
            if sender is not None:
                if sender.sock is None:
                    sender._open()  # the socket that could not be made at init
                sender.absent = sender.sock is None
                sender.hello_sent = False
        except Exception:
            pass
