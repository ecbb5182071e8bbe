"""The ``invocation`` record (docs/protocol.md) assembled from one invocation's figures and
handed to the extension, or printed as an EMF line when the extension is absent."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from ._config import Options
from ._handoff import MAX_DATAGRAM, PROTOCOL_VERSION, Sender, encode, encode_invocation
from ._version import __version__

RUNTIME = f"python{sys.version_info[0]}.{sys.version_info[1]}"
AGENT = f"lambda_memory_profiler/{__version__}"


def request_id(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``context.aws_request_id`` of a ``handler(event, context)`` call; ``""`` without one."""
    ctx = args[1] if len(args) > 1 else kwargs.get("context")
    rid = getattr(ctx, "aws_request_id", "") if ctx is not None else ""
    return rid if isinstance(rid, str) else ""


def deliver(
    sender: Sender,
    opts: Options,
    rid: str,
    start_ms: float,
    duration_ms: float,
    cold: bool,
    error_type: str | None,
    rss_peak: int | None,
    scope: str,
    blocks: int | None,
    anon: int | None,
    gc_delta: tuple[int, int, int],
    garbage: int | None,
    trace: dict[str, Any] | None,
    heap: dict[str, Any] | None = None,
    native_encode: Callable[..., bytes | None] | None = None,
) -> None:
    """Sends one invocation record (a ``hello`` first, once per process and port).

    ``native_encode`` is the native module's encoder (with the sampler running): the same
    bytes as ``encode_invocation`` for a third of its cost; None from it means "use Python's".
    """
    pid = os.getpid()
    if not sender.hello_sent:
        sender.hello(RUNTIME, AGENT)
    collections, collected, uncollectable = gc_delta
    if trace is None and not sender.absent:
        # The every-invocation path: straight to bytes, no intermediate record.
        fields = (
            rid,
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
            "null",
            anon,
            heap,
        )
        data = None if native_encode is None else native_encode(PROTOCOL_VERSION, *fields)
        if data is None:
            data = encode_invocation(*fields)
        # Many long site names can outgrow a datagram: the record path below trims them.
        if len(data) <= MAX_DATAGRAM and sender.try_send(data):
            return
    record = {
        "v": PROTOCOL_VERSION,
        "kind": "invocation",
        "request_id": rid,
        "pid": pid,
        "runtime": RUNTIME,
        "start_ms": start_ms,
        "duration_ms": duration_ms,
        "cold_start": cold,
        "error_type": error_type,
        "rss_peak_bytes": rss_peak,
        "rss_peak_scope": scope,
        "heap_blocks": blocks,
        "anon_bytes": anon,
        "gc": {
            "collections": collections,
            "collected": collected,
            "uncollectable": uncollectable,
            "garbage": garbage,
        },
        "trace": trace,
        "heap": heap,
    }
    if (trace is not None or heap is not None) and sender.try_send(encode(record)):
        return
    sender.print_emf(record, opts.namespace, opts.dimensions, opts.storage_resolution)
