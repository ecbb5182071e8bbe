"""Log aggregator (leaky): summarises CloudWatch Logs subscription batches per service.

Six leaks that survive code review because each looks reasonable on its own; every one grows the
warm execution environment a little per invocation until it runs out of memory. `fixed.py` is the
same function without them. See examples/README.md.
"""

from __future__ import annotations

import json
import os

from lambda_memory_profiler import memory_profile
from log_source import decode, sample_event

SPOOL_DIR = os.environ.get("SPOOL_DIR", "/tmp/log-aggregator-spool")

# LEAK 1 (unbounded cache): every event id ever seen, "to drop redelivered batches".
_seen_ids: dict[str, str] = {}
# LEAK 2 (cycles through stored full objects): an entry points at its batch and the batch at all
# its entries, so one stored entry pins the whole batch, raw payload included.
_errors_by_service: dict[str, list] = {}
# LEAK 3 (large objects kept): every raw payload, "to replay a batch if shipping fails".
_raw_payloads: list[bytes] = []
# LEAK 5 (file handles never closed): one spool file per stream, opened once, kept open.
_spools: dict = {}
# LEAK 6 (deleted items never evicted): deleted streams are only flagged.
_streams: dict[str, dict] = {}
_invocations = 0


class Batch:
    def __init__(self, group: str, stream: str, raw: bytes) -> None:
        self.group = group
        self.stream = stream
        self.raw = raw
        self.entries: list[LogEntry] = []


class LogEntry:
    def __init__(self, batch: Batch, event: dict) -> None:
        self.batch = batch
        self.id = event["id"]
        self.timestamp = event["timestamp"]
        self.message = event["message"]
        head = self.message.split("\n", 1)[0]
        self.level, self.service = head.split(" ", 2)[:2]
        self.error = head.split(" error=", 1)[1] if " error=" in head else None
        batch.entries.append(self)


def collect_alerts(entries: list[LogEntry], alerts: list = []) -> list:  # noqa: B006
    # LEAK 4 (mutable default argument): the default list is created once and shared by every call.
    for entry in entries:
        if entry.level == "ERROR":
            alerts.append(f"{entry.service}: {entry.error}")
    return alerts


def spool(entry: LogEntry) -> None:
    handle = _spools.get(entry.batch.stream)
    if handle is None:
        os.makedirs(SPOOL_DIR, exist_ok=True)
        path = os.path.join(SPOOL_DIR, entry.batch.stream.replace("/", "_") + ".log")
        handle = _spools[entry.batch.stream] = open(path, "a")  # noqa: SIM115
    handle.write(entry.message + "\n")


@memory_profile
def handler(event: dict, context: object) -> dict:
    global _invocations
    _invocations += 1
    if "awslogs" not in event:
        event = sample_event(event.get("seq", _invocations))
    raw = decode(event)
    payload = json.loads(raw)
    _raw_payloads.append(raw)
    batch = Batch(payload["logGroup"], payload["logStream"], raw)

    fresh = []
    for item in payload["logEvents"]:
        if item["id"] in _seen_ids:
            continue
        _seen_ids[item["id"]] = item["message"]
        fresh.append(LogEntry(batch, item))

    counts: dict[str, int] = {}
    for entry in fresh:
        counts[entry.service] = counts.get(entry.service, 0) + 1
        if entry.level == "ERROR":
            _errors_by_service.setdefault(entry.service, []).append(entry)
            spool(entry)
    alerts = collect_alerts(fresh)

    stream = _streams.setdefault(batch.stream, {"events": 0, "deleted": False})
    stream["events"] += len(fresh)
    for name in payload.get("deletedStreams", []):
        if name in _streams:
            _streams[name]["deleted"] = True

    active = sum(1 for s in _streams.values() if not s["deleted"])
    return {"events": len(fresh), "per_service": counts, "alerts": len(alerts), "streams": active}
