"""Hand-off of records to the extension (UDP on loopback) or, without it, EMF on stdout."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any, Callable

MAX_DATAGRAM = 16384
PROTOCOL_VERSION = 2

# Metric name, record path, unit: the names and units of the extension's metric table.
_EMF_METRICS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Duration", ("duration_ms",), "Milliseconds"),
    ("ColdStart", ("cold_start",), "Count"),
    ("RuntimeRssPeak", ("rss_peak_bytes",), "Bytes"),
    ("GcCollections", ("gc", "collections"), "Count"),
    ("GcCollected", ("gc", "collected"), "Count"),
    ("GcUncollectable", ("gc", "uncollectable"), "Count"),
    ("PythonHeapPeak", ("trace", "peak_bytes"), "Bytes"),
    ("PythonHeapRetained", ("trace", "retained_bytes"), "Bytes"),
    ("PythonHeapGrowth", ("trace", "growth_bytes"), "Bytes"),
    ("PythonHeapLive", ("heap", "live_bytes"), "Bytes"),
    ("PythonHeapAllocated", ("heap", "allocated_bytes"), "Bytes"),
)


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode("ascii")


# The invocation record's layout (docs/protocol.md), %-formatted: one formatting operation
# for the whole record (an f-string with a call per field cost a third more).
_INVOCATION = (
    '{"v":%d,"kind":"invocation","request_id":%s,%s"start_ms":%.1f,"duration_ms":%.3f,'
    '"cold_start":%s,"error_type":%s,"rss_peak_bytes":%s,"rss_peak_scope":%s,'
    '"heap_blocks":%s,"anon_bytes":%s,"gc":%s,"trace":%s,"heap":%s}'
)
_INT = "%d"  # one int of the record (a bool as 0/1, a float truncated, as int() did)
_GC = '{"collections":%d,"collected":%d,"uncollectable":%d,"garbage":%s}'
# Most invocations collect nothing and leave no garbage.
_GC_NONE = _GC % (0, 0, 0, "0")
_HEAP = (
    '{"live_bytes":%d,"peak_bytes":%d,"allocated_bytes":%d,"sample_bytes":%d,"samples":%d,'
    '"dropped":%d,"epoch":%d,"sites":[%s],"sites_truncated":%d}'
)
_SITE_HEAD = '{"file":%s,"line":%d,"function":%s,%s'
_SITE_TAIL = '"delta_bytes":%d,"live_bytes":%d}'
_VIA = '"via":%s,'
# Encoded names of the sites seen (file, line, function, via), dropped whole past the cap.
_site_heads: dict[tuple[Any, ...], str] = {}
_MAX_SITE_HEADS = 4096
# Strings that are the same at every invocation, encoded once.
_SCOPES = {"invocation": '"invocation"', "process": '"process"'}
# (pid, runtime, their '"pid":..,"runtime":..,' part), replaced whole when either changes.
_process_part: list[tuple[int, str, str]] = [(-1, "", "")]


def _pid_runtime(pid: int, runtime: str) -> str:
    """The record's ``"pid":..,"runtime":..,`` part, encoded once per process."""
    part = _process_part[0]
    if part[0] != pid or part[1] != runtime:
        part = (pid, runtime, f'"pid":{int(pid)},"runtime":{_json_str(runtime)},')
        _process_part[0] = part
    return part[2]


def encode_invocation(
    request_id: str,
    pid: int,
    runtime: str,
    start_ms: float,
    duration_ms: float,
    cold_start: bool,
    error_type: str | None,
    rss_peak_bytes: int | None,
    rss_peak_scope: str,
    heap_blocks: int | None,
    collections: int,
    collected: int,
    uncollectable: int,
    garbage: int | None,
    trace_json: str = "null",
    anon_bytes: int | None = None,
    heap: dict[str, Any] | None = None,
) -> bytes:
    """The invocation record as JSON, straight from its figures: about half the cost of
    building a dict and running the generic encoder, on a path taken at every invocation."""
    if collections or collected or uncollectable or garbage != 0:
        gc_json = _GC % (
            collections,
            collected,
            uncollectable,
            "null" if garbage is None else _INT % garbage,
        )
    else:
        gc_json = _GC_NONE
    return (
        _INVOCATION
        % (
            PROTOCOL_VERSION,
            _json_str(request_id),
            _pid_runtime(pid, runtime),
            start_ms,
            duration_ms,
            "true" if cold_start else "false",
            "null" if error_type is None else _json_str(error_type),
            "null" if rss_peak_bytes is None else _INT % rss_peak_bytes,
            _SCOPES.get(rss_peak_scope) or _json_str(rss_peak_scope),
            "null" if heap_blocks is None else _INT % heap_blocks,
            "null" if anon_bytes is None else _INT % anon_bytes,
            gc_json,
            trace_json,
            "null" if heap is None else encode_heap(heap),
        )
    ).encode("ascii")


def encode_heap(heap: dict[str, Any]) -> str:
    """The record's ``heap`` object as JSON, formatted directly (it is in every record; the
    generic encoder costs twice as much). Every figure is an int from the sampler."""
    sites = heap["sites"]
    return _HEAP % (
        heap["live_bytes"],
        heap["peak_bytes"],
        heap["allocated_bytes"],
        heap["sample_bytes"],
        heap["samples"],
        heap["dropped"],
        heap["epoch"],
        ",".join([_encode_site(s) for s in sites]) if sites else "",
        heap["sites_truncated"],
    )


def _encode_site(s: dict[str, Any]) -> str:
    """One entry of ``heap.sites``, with ``via`` only when the site has one. The site's names
    are encoded once (a handler's sites are few and recur at every invocation)."""
    key = (s["file"], s["line"], s["function"], s.get("via"))
    head = _site_heads.get(key)
    if head is None:
        if len(_site_heads) >= _MAX_SITE_HEADS:
            _site_heads.clear()
        file, line, function, via = key
        head = _site_heads[key] = _SITE_HEAD % (
            _json_str(file),
            line,
            _json_str(function),
            "" if via is None else _VIA % _json_str(via),
        )
    return head + _SITE_TAIL % (s["delta_bytes"], s["live_bytes"])


def _encode_record(record: dict[str, Any], trace_json: str) -> bytes:
    """The record as bytes through the hand-formatted encoder, its trace already encoded."""
    gc_counts = record["gc"]
    return encode_invocation(
        record["request_id"],
        record["pid"],
        record["runtime"],
        record["start_ms"],
        record["duration_ms"],
        record["cold_start"],
        record["error_type"],
        record["rss_peak_bytes"],
        record["rss_peak_scope"],
        record["heap_blocks"],
        gc_counts["collections"],
        gc_counts["collected"],
        gc_counts["uncollectable"],
        gc_counts["garbage"],
        trace_json,
        record.get("anon_bytes"),
        record.get("heap"),
    )


def _halve(items: list[Any]) -> list[Any]:
    """Halves a long list, or drops its last entry: an oversized record is rare."""
    return items[: len(items) // 2 if len(items) > 8 else len(items) - 1]


def _trim(
    data: bytes,
    items: list[Any],
    truncated: int,
    encode_with: Callable[[list[Any], int], bytes],
) -> bytes:
    """Drops entries from the end of `items` (the least significant) until the record fits a
    datagram; `encode_with(kept, truncated)` encodes it with the entries kept and the count
    dropped so far added to `truncated`."""
    while items and len(data) > MAX_DATAGRAM:
        kept = _halve(items)
        truncated += len(items) - len(kept)
        items = kept
        data = encode_with(items, truncated)
    return data


def encode(record: dict[str, Any]) -> bytes:
    """Serializes an invocation record, dropping the least significant allocation sites so
    that it fits a datagram: the heap's sites first (``heap.sites_truncated`` counts them),
    then the trace's (``trace.top_truncated``). The core figures alone never come near the
    limit."""
    trace = record.get("trace")
    trace_json = "null" if trace is None else _ENCODER.encode(trace)
    data = _encode_record(record, trace_json)
    heap = record.get("heap")
    if heap is not None and heap.get("sites"):

        def with_sites(sites: list[Any], truncated: int) -> bytes:
            nonlocal record
            record = dict(record, heap=dict(heap, sites=sites, sites_truncated=truncated))
            return _encode_record(record, trace_json)

        data = _trim(data, list(heap["sites"]), heap.get("sites_truncated", 0), with_sites)
    if trace is None or not trace.get("top"):
        return data

    def with_top(top: list[Any], truncated: int) -> bytes:
        return _encode_record(
            record, _ENCODER.encode(dict(trace, top=top, top_truncated=truncated))
        )

    return _trim(data, list(trace["top"]), trace.get("top_truncated", 0), with_top)


def _get(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = record
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def emf_line(
    record: dict[str, Any],
    namespace: str,
    dimensions: tuple[str, ...] = ("FunctionName",),
    storage_resolution: int = 60,
) -> str:
    """One Embedded Metric Format line carrying the figures of one invocation record."""
    dims: dict[str, str] = {
        "FunctionName": os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or "local",
        "FunctionVersion": os.environ.get("AWS_LAMBDA_FUNCTION_VERSION") or "$LATEST",
    }
    metrics: list[dict[str, Any]] = []
    doc: dict[str, Any] = {}
    for name, path, unit in _EMF_METRICS:
        value = _get(record, path)
        if value is None:
            continue  # absent figures publish no datum
        if name == "RuntimeRssPeak" and record.get("rss_peak_scope") != "invocation":
            continue  # a lifetime peak is not this invocation's: kept as a property only
        if isinstance(value, bool):
            value = int(value)
        metrics.append({"Name": name, "Unit": unit, "StorageResolution": storage_resolution})
        doc[name] = value
    start_ms = record.get("start_ms")
    ts = int(start_ms) if isinstance(start_ms, (int, float)) else int(time.time() * 1000)
    out: dict[str, Any] = {
        "_aws": {
            "Timestamp": ts,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    # {FunctionName} always, the full set too (as the extension publishes).
                    "Dimensions": [list(dimensions[:1]), list(dimensions)]
                    if len(dimensions) > 1
                    else [list(dimensions)],
                    "Metrics": metrics,
                }
            ],
        }
    }
    for d in dimensions:
        out[d] = dims[d]
    out.update(doc)
    # Plain properties: searchable in CloudWatch Logs, never dimensions (unbounded values).
    out["RequestId"] = record.get("request_id", "")
    out["ErrorType"] = record.get("error_type")
    out["RssPeakScope"] = record.get("rss_peak_scope")
    out["HeapBlocks"] = record.get("heap_blocks")
    out["RssPeakBytes"] = record.get("rss_peak_bytes")
    trace = record.get("trace")
    if trace:
        out["TraceReason"] = trace.get("reason")
        out["TopSites"] = trace.get("top", [])
    return json.dumps(out, separators=(",", ":"), allow_nan=False)


class Sender:
    """Process-wide channel to the extension on one port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.absent = False
        self.hello_sent = False
        self.sent = 0
        self.dropped = 0
        self.emf_lines = 0
        self._open()

    def _open(self) -> None:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            # Connected: each send skips address resolution, and a refused port surfaces as
            # ECONNREFUSED on a later send, which is how the absence of the extension shows.
            s.connect(("127.0.0.1", self.port))
            self.sock = s
        except OSError:
            self.sock = None
            self.absent = True

    def _send_bytes(self, data: bytes) -> bool:
        """True when sent; False when dropped. Marks the extension absent on ECONNREFUSED."""
        sock = self.sock
        if sock is None:
            return False
        try:
            sock.send(data)
            self.sent += 1
            return True
        except ConnectionRefusedError:
            self.absent = True
            return False
        except OSError:  # full buffer (EAGAIN), oversized, ...: lose one record, never block
            self.dropped += 1
            return False

    def hello(self, runtime: str, agent: str, sink: dict[str, object] | None = None) -> None:
        """Announces the decorator (once per process and port, and again for each handler
        decorated with sink arguments, which the extension applies)."""
        self.hello_sent = True
        rec: dict[str, object] = {
            "v": PROTOCOL_VERSION,
            "kind": "hello",
            "pid": os.getpid(),
            "runtime": runtime,
            "agent": agent,
        }
        if sink:
            rec["sink"] = sink
        self._send_bytes(_dumps(rec))

    def try_send(self, data: bytes) -> bool:
        """False when the record must be printed instead: the extension is absent (this very
        send may be the one that found out, so the record is not lost)."""
        if self.absent:
            return False
        return self._send_bytes(data) or not self.absent

    def send(
        self,
        record: dict[str, Any],
        namespace: str,
        dimensions: tuple[str, ...],
        storage_resolution: int,
    ) -> None:
        if self.try_send(encode(record)):
            return
        self.print_emf(record, namespace, dimensions, storage_resolution)

    def print_emf(
        self,
        record: dict[str, Any],
        namespace: str,
        dimensions: tuple[str, ...],
        storage_resolution: int,
    ) -> None:
        self.emf_lines += 1
        line = emf_line(record, namespace, dimensions, storage_resolution)
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except Exception:  # a closed stdout must not break the handler
            self.dropped += 1

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


_senders: dict[int, Sender] = {}


def sender_for(port: int) -> Sender:
    s = _senders.get(port)
    if s is None:
        s = _senders[port] = Sender(port)
    return s
