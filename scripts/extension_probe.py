"""The built extension, observed: what it publishes, and under which dimension sets.

The extension binary runs once per LMP_DIMENSIONS value and sink against a stand-in of the
Extensions and Telemetry APIs (register, one INVOKE and its platform.report, SHUTDOWN): with
LMP_SINK=emf the sets are read from its EMF lines, with LMP_SINK=cloudwatch from the
PutMetricData requests it sends to a local endpoint (rpc-v2-cbor, decoded here). Used by
check-alarms.py (same folder).
"""

from __future__ import annotations

import gzip
import http.server
import itertools
import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any


def cbor_decode(data: bytes) -> Any:
    """Just enough CBOR (RFC 8949) for a PutMetricData request: every major type, definite and
    indefinite lengths, floats, tags (the timestamp's tag 1) read through."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    def argument(info: int) -> int | None:
        if info < 24:
            return info
        if info == 31:
            return None
        return int.from_bytes(take({24: 1, 25: 2, 26: 4, 27: 8}[info]), "big")

    def item() -> Any:
        nonlocal pos
        head = take(1)[0]
        major, info = head >> 5, head & 31
        if major == 7:
            if info == 25:
                return struct.unpack(">e", take(2))[0]
            if info == 26:
                return struct.unpack(">f", take(4))[0]
            if info == 27:
                return struct.unpack(">d", take(8))[0]
            return {20: False, 21: True, 22: None, 23: None}.get(info)
        n = argument(info)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 6:
            return item()
        if n is None:  # indefinite length, up to the break byte
            parts = []
            while data[pos] != 0xFF:
                parts.append(item() if major != 5 else (item(), item()))
            pos += 1
            if major == 2:
                return b"".join(parts)
            if major == 3:
                return "".join(parts)
            return parts if major == 4 else dict(parts)
        if major == 2:
            return take(n)
        if major == 3:
            return take(n).decode()
        if major == 4:
            return [item() for _ in range(n)]
        return {item(): item() for _ in range(n)}

    return item()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandIn(http.server.ThreadingHTTPServer):
    """The Extensions and Telemetry APIs (one INVOKE, its platform.report, then SHUTDOWN) and a
    CloudWatch endpoint that records the dimension sets of every PutMetricData datum."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.next_calls = 0
        self.request_id = str(uuid.uuid4())
        self.telemetry_uri: str | None = None
        self.sets: dict[str, set[tuple[str, ...]]] = {}
        self.namespaces: set[str] = set()
        self.errors: list[str] = []


class StandInHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandIn

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, body: bytes, headers: dict[str, str], status: int = 200) -> None:
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, doc: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(
            json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def body(self) -> bytes:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return data

    def do_POST(self) -> None:
        data = self.body()
        if self.path.endswith("/extension/register"):
            self.reply_json(
                {"functionName": "probe", "functionVersion": "7", "handler": "app.handler"},
                {"Lambda-Extension-Identifier": str(uuid.uuid4())},
            )
        elif self.path.endswith("/operation/PutMetricData"):
            try:
                request = cbor_decode(data)
                self.server.namespaces.add(request.get("Namespace"))
                for datum in request.get("MetricData", []):
                    names = tuple(d["Name"] for d in datum.get("Dimensions", []))
                    self.server.sets.setdefault(datum["MetricName"], set()).add(names)
            except Exception as e:  # noqa: BLE001 - reported as a check failure
                self.server.errors.append(f"undecodable PutMetricData: {e!r}")
            self.reply(
                b"\xa0", {"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}
            )
        else:
            self.reply_json({})

    def do_PUT(self) -> None:  # the Telemetry API subscription
        self.server.telemetry_uri = json.loads(self.body())["destination"]["URI"]
        self.reply_json({})

    def do_GET(self) -> None:  # /extension/event/next
        self.server.next_calls += 1
        now_ms = int(time.time() * 1000)
        if self.server.next_calls == 1:
            self.reply_json(
                {
                    "eventType": "INVOKE",
                    "requestId": self.server.request_id,
                    "deadlineMs": now_ms + 3000,
                    "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:probe",
                    "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-00000000-0"},
                }
            )
            return
        self.send_report()
        self.reply_json(
            {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": now_ms + 2000}
        )

    def send_report(self) -> None:
        if not self.server.telemetry_uri:
            self.server.errors.append("the extension did not subscribe to the Telemetry API")
            return
        uri = urllib.parse.urlsplit(self.server.telemetry_uri)
        record = {
            "requestId": self.server.request_id,
            "status": "success",
            "metrics": {
                "durationMs": 2.0,
                "billedDurationMs": 2,
                "memorySizeMB": 128,
                "maxMemoryUsedMB": 40,
                "initDurationMs": 5.0,
            },
        }
        batch = [
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "type": "platform.report",
                "record": record,
            }
        ]
        req = urllib.request.Request(
            f"http://127.0.0.1:{uri.port}{uri.path}",
            data=json.dumps(batch).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(req, timeout=5).read()
        except OSError as e:
            self.server.errors.append(f"telemetry listener refused the report: {e}")


def probe(extension: Path, dimensions: str, sink: str) -> dict[str, set[tuple[str, ...]]]:
    """Metric name -> dimension sets (name tuples) the extension publishes with this
    LMP_DIMENSIONS value through this sink."""
    server = StandIn()
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": address,
        "AWS_LAMBDA_FUNCTION_NAME": "probe",
        "AWS_LAMBDA_FUNCTION_VERSION": "7",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "probe",
        "AWS_SECRET_ACCESS_KEY": "probe",
        "AWS_ENDPOINT_URL": f"http://{address}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "LMP_SINK": sink,
        "LMP_FLUSH": "end",
        "LMP_NAMESPACE": "CheckAlarms",
        "LMP_DIMENSIONS": dimensions,
        "LMP_INTAKE_PORT": str(free_udp_port()),
    }
    try:
        done = subprocess.run([str(extension)], env=env, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    if done.returncode != 0 or server.errors:
        raise SystemExit(
            f"check-alarms.py: probe of {extension} (LMP_DIMENSIONS={dimensions}, LMP_SINK={sink}) "
            f"failed: exit {done.returncode}, {server.errors}\n{done.stderr[-2000:]}"
        )
    sets = server.sets
    if sink == "emf":
        for line in done.stdout.splitlines():
            if not line.startswith("{") or '"_aws"' not in line:
                continue
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    for names in directive["Dimensions"]:
                        sets.setdefault(metric["Name"], set()).add(tuple(names))
    if not sets:
        raise SystemExit(
            f"check-alarms.py: the extension published nothing (LMP_DIMENSIONS={dimensions}, "
            f"LMP_SINK={sink})\n{done.stderr[-2000:]}"
        )
    return sets


def published_sets(
    extension: Path, values: list[str]
) -> dict[tuple[str, str], set[frozenset[str]]]:
    """(LMP_DIMENSIONS value, sink) -> the dimension sets every metric is published in."""
    out = {}
    for value, sink in itertools.product(values, ("emf", "cloudwatch")):
        per_metric = probe(extension, value, sink)
        common = set.intersection(*({frozenset(s) for s in sets} for sets in per_metric.values()))
        out[(value, sink)] = common
    return out
