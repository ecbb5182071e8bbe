"""``tracemalloc`` around one traced invocation, and the ``trace`` object it produces.

Two modes. ``own``: tracing starts at the invocation's start and stops at its end, so every
traced block was allocated during the invocation; frees of older blocks are invisible to it,
which is why it reports retention, not growth. ``shared``: the user's own session was already
running; it is never stopped or reset, and the figures are differences of that session.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from . import _probes
from ._result import result_blocks, walk_limit
from ._sites import SiteTable


class TraceSession:
    """One invocation's tracing: created just before the handler runs (tracing starts), ended
    just after it (``end``)."""

    __slots__ = ("mode", "blocks0", "cur0", "peak0")

    def __init__(self, frames: int) -> None:
        # A constructor rather than a classmethod: on 3.9 and 3.10 calling a classmethod
        # allocates a bound method, which would be freed after the block count below and so
        # lower heap_blocks_delta by one.
        self.blocks0 = self.cur0 = self.peak0 = 0
        if tracemalloc.is_tracing():
            self.mode = "shared"
            self.cur0, self.peak0 = tracemalloc.get_traced_memory()
            return
        self.mode = "own"
        # The count comes last before tracing starts: the only block allocated in between is
        # the integer holding it (the "- 1" in ``_end_own``).
        self.blocks0 = _probes.heap_blocks()
        tracemalloc.start(frames)

    def end(self, reason: str, result: Any, top: int) -> tuple[dict[str, Any], int]:
        """Builds ``trace``; also returns the heap block count taken before the snapshot."""
        if self.mode == "own":
            trace, blocks1, table = self._end_own(result)
        else:
            trace, blocks1, table = self._end_shared(result)
        trace["reason"] = reason
        trace["top"] = table.top(top)
        trace["top_truncated"] = 0
        return trace, blocks1

    def _end_own(self, result: Any) -> tuple[dict[str, Any], int, SiteTable]:
        response = None
        try:
            _cur, peak = tracemalloc.get_traced_memory()
            blocks1 = _probes.heap_blocks()
            snapshot = tracemalloc.take_snapshot()
            # Needs tracing on; after the snapshot, so the walk's own blocks are not in it.
            if result is not None:
                response = result_blocks(result, limit=walk_limit(len(snapshot.traces)))
        finally:
            # Grouping is far cheaper once tracing is off; nothing else needs it on.
            tracemalloc.stop()
        table = SiteTable.from_snapshot(snapshot)
        del snapshot
        # The measurement's live blocks are in the count but are not the handler's; - 1: the
        # integer holding the first count was allocated after it.
        delta = blocks1 - self.blocks0 - 1 - table.own_blocks
        trace = {
            "mode": "own",
            "peak_bytes": peak,
            "retained_bytes": table.retained_bytes,
            "retained_blocks": table.retained_blocks,
            # Tracing cannot see the frees of blocks older than the invocation (a bounded cache
            # evicting an entry), so no net figure is derived here: the extension follows net
            # growth across invocations from the runtime's memory.
            "growth_bytes": None,
            "heap_blocks_delta": delta,
        }
        if response:
            table.subtract(response)
        return trace, blocks1, table

    def _end_shared(self, result: Any) -> tuple[dict[str, Any], int, SiteTable]:
        blocks1 = _probes.heap_blocks()
        cur1, peak1 = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
        response = None
        if result is not None:
            response = result_blocks(result, limit=walk_limit(len(snapshot.traces)))
        table = SiteTable.from_snapshot(snapshot)
        del snapshot
        cur0 = self.cur0
        trace = {
            "mode": "shared",
            # The session's peak is not reset: known only when this invocation raised it.
            "peak_bytes": peak1 - cur0 if peak1 > self.peak0 else None,
            # The session also sees frees of older traced blocks: a net figure (never negative
            # here: the field is a size; growth keeps the sign).
            "retained_bytes": max(cur1 - cur0, 0),
            "retained_blocks": None,
            "growth_bytes": cur1 - cur0,
            "heap_blocks_delta": None,
        }
        if response:
            table.subtract(response)
        return trace, blocks1, table
