"""A stand-in for the extension binary, for test_check_alarms.py: registers, subscribes to
telemetry, waits for SHUTDOWN, then publishes a few metrics through the sink LMP_SINK names —
EMF lines on stdout, or a PutMetricData request (rpc-v2-cbor) to AWS_ENDPOINT_URL — in the
dimension sets its mode says:

    stub_extension.py both       {FunctionName}, plus the full set when LMP_DIMENSIONS asks for more
    stub_extension.py combined   the full set only (the extension before it published both)
"""

from __future__ import annotations

import http.server
import json
import os
import struct
import sys
import threading
import time
import urllib.request

METRICS = [("MemoryUtilization", "Percent", 31.25), ("LeakSuspected", "Count", 0.0)]


def cbor(value) -> bytes:
    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | info]) + n.to_bytes(size, "big")
        raise ValueError(n)

    if isinstance(value, bool):
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        data = value.encode()
        return head(3, len(data)) + data
    if isinstance(value, list):
        return head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):
        return head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(type(value))


class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main() -> int:
    mode = sys.argv[1]
    api = os.environ["AWS_LAMBDA_RUNTIME_API"]
    ident = ""

    def call(method: str, path: str, body=None, headers=None):
        req = urllib.request.Request(
            f"http://{api}/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Lambda-Extension-Identifier": ident, **(headers or {})},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.headers, json.loads(r.read() or b"{}")

    headers, _ = call(
        "POST",
        "2020-01-01/extension/register",
        {"events": ["INVOKE", "SHUTDOWN"]},
        {"Lambda-Extension-Name": "lambda-memory-profiler"},
    )
    ident = headers["Lambda-Extension-Identifier"]
    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=listener.serve_forever, args=(0.02,), daemon=True).start()
    port = listener.server_address[1]
    call(
        "PUT",
        "2022-07-01/telemetry",
        {
            "schemaVersion": "2022-12-13",
            "types": ["platform"],
            "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/"},
        },
    )
    while call("GET", "2020-01-01/extension/event/next")[1]["eventType"] != "SHUTDOWN":
        pass

    names = ["FunctionName"] + [n for n in os.environ["LMP_DIMENSIONS"].split(",")[1:] if n]
    values = {"FunctionName": os.environ["AWS_LAMBDA_FUNCTION_NAME"], "FunctionVersion": "7"}
    sets = [names] if mode == "combined" or len(names) == 1 else [["FunctionName"], names]
    namespace = os.environ["LMP_NAMESPACE"]
    if os.environ["LMP_SINK"] == "emf":
        doc = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": namespace,
                        "Dimensions": sets,
                        "Metrics": [{"Name": m, "Unit": u} for m, u, _ in METRICS],
                    }
                ],
            },
            **{n: values[n] for n in names},
            **{m: v for m, _, v in METRICS},
        }
        print(json.dumps(doc), flush=True)
    else:
        data = [
            {
                "MetricName": m,
                "Dimensions": [{"Name": n, "Value": values[n]} for n in dims],
                "Values": [v],
                "Counts": [1.0],
                "Unit": u,
                "StorageResolution": 60,
            }
            for dims in sets
            for m, u, v in METRICS
        ]
        req = urllib.request.Request(
            os.environ["AWS_ENDPOINT_URL"]
            + "/service/GraniteServiceVersion20100801/operation/PutMetricData",
            data=cbor({"Namespace": namespace, "MetricData": data}),
            method="POST",
            headers={"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"},
        )
        urllib.request.urlopen(req, timeout=10).read()
    listener.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
