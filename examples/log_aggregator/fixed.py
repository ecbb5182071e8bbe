"""Log aggregator (fixed): the same summaries as `leaky.py`, in bounded memory.

Each fix is marked `FIX n`, matching `LEAK n` in leaky.py and the table in examples/README.md.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict, deque

from lambda_memory_profiler import memory_profile
from log_source import decode, sample_event

SPOOL_DIR = os.environ.get("SPOOL_DIR", "/tmp/log-aggregator-spool")
# Redeliveries of a subscription batch arrive within minutes: a few batches' worth of ids suffice.
DEDUP_WINDOW = 2_000
RECENT_ERRORS = 50

# FIX 1: a bounded window of ids (oldest dropped first); the message itself is not needed.
_seen_ids: OrderedDict[str, None] = OrderedDict()
# FIX 2: keep small tuples of the fields the report needs, in a bounded deque, never the entry.
_recent_errors: dict[str, deque] = {}
# FIX 3: only the size of the last payload is kept; the payload itself is dropped after parsing.
_last_payload_bytes = 0
# FIX 6: deleted streams are removed.
_streams: dict[str, int] = {}
_invocations = 0


class LogEntry:
    # FIX 2: no back-reference to the batch, so no cycle: refcounting frees entries at once.
    __slots__ = ("id", "timestamp", "message", "level", "service", "error")

    def __init__(self, event: dict) -> None:
        self.id = event["id"]
        self.timestamp = event["timestamp"]
        self.message = event["message"]
        head = self.message.split("\n", 1)[0]
        self.level, self.service = head.split(" ", 2)[:2]
        self.error = head.split(" error=", 1)[1] if " error=" in head else None


def collect_alerts(entries: list[LogEntry], alerts: list | None = None) -> list:
    # FIX 4: a new list per call unless the caller passes one.
    alerts = [] if alerts is None else alerts
    for entry in entries:
        if entry.level == "ERROR":
            alerts.append(f"{entry.service}: {entry.error}")
    return alerts


def spool(stream: str, entries: list[LogEntry]) -> None:
    os.makedirs(SPOOL_DIR, exist_ok=True)
    path = os.path.join(SPOOL_DIR, stream.replace("/", "_") + ".log")
    # FIX 5: open per batch and close at once; the OS buffers appends anyway.
    with open(path, "a") as handle:
        handle.writelines(entry.message + "\n" for entry in entries)


def drop_stream(stream: str) -> None:
    _streams.pop(stream, None)
    path = os.path.join(SPOOL_DIR, stream.replace("/", "_") + ".log")
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@memory_profile
def handler(event: dict, context: object) -> dict:
    global _invocations, _last_payload_bytes
    _invocations += 1
    if "awslogs" not in event:
        event = sample_event(event.get("seq", _invocations))
    raw = decode(event)
    _last_payload_bytes = len(raw)
    payload = json.loads(raw)
    del raw
    stream = payload["logStream"]

    fresh = []
    for item in payload["logEvents"]:
        if item["id"] in _seen_ids:
            continue
        _seen_ids[item["id"]] = None
        if len(_seen_ids) > DEDUP_WINDOW:
            _seen_ids.popitem(last=False)
        fresh.append(LogEntry(item))

    counts: dict[str, int] = {}
    errors = []
    for entry in fresh:
        counts[entry.service] = counts.get(entry.service, 0) + 1
        if entry.level == "ERROR":
            errors.append(entry)
            recent = _recent_errors.setdefault(entry.service, deque(maxlen=RECENT_ERRORS))
            recent.append((entry.timestamp, entry.error))
    if errors:
        spool(stream, errors)
    alerts = collect_alerts(fresh)

    _streams[stream] = _streams.get(stream, 0) + len(fresh)
    for name in payload.get("deletedStreams", []):
        drop_stream(name)

    return {
        "events": len(fresh),
        "per_service": counts,
        "alerts": len(alerts),
        "streams": len(_streams),
    }
