//! Python (stdlib only) building blocks of the test extensions, written from the Extensions,
//! Telemetry and Logs API references. A test's extension is this prelude plus a few lines.

/// Defines, for the script that follows it:
/// - `NAME` (the executable's file name), `log(kind, value)`: one JSON line in `<bed>/<NAME>.log`;
/// - `call(method, path, body=None, headers=None, raw=None)` → `(status, headers, bytes)`;
/// - `register(events=("INVOKE", "SHUTDOWN"), raw=None)` → extension id (logs `register`);
/// - `listen(host="127.0.0.1", reject=None)` → port of a listener that logs each accepted batch
///   as `batch` (and answers 400, logging `rejected`, when `reject(records)` is true);
/// - `subscribe(ext_id, port, api="telemetry", schema=..., types=..., host=...)` → status;
/// - `run(ext_id, on_event=None)`: the `/next` loop; logs every `event`, exits 0 at SHUTDOWN.
pub(crate) const PRELUDE: &str = r##"
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
NAME = os.environ.get("EXT_NAME") or os.path.basename(sys.argv[0])
BED = os.environ.get("BED_DIR") or os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "..")
LOG = os.path.join(BED, NAME + ".log")
_lock = threading.Lock()


def log(kind, value):
    with _lock, open(LOG, "a") as f:
        f.write(json.dumps({"kind": kind, "value": value}) + "\n")


def call(method, path, body=None, headers=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://{API}{path}", data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def register(events=("INVOKE", "SHUTDOWN"), raw=None):
    body = None if raw is not None else {"events": list(events)}
    status, headers, reply = call(
        "POST", "/2020-01-01/extension/register", body, {"Lambda-Extension-Name": NAME}, raw
    )
    log("register", {"status": status, "body": reply.decode()})
    return headers.get("Lambda-Extension-Identifier")


def listen(host="127.0.0.1", reject=None):
    class Listener(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            records = json.loads(body)
            refused = bool(reject and reject(records))
            log("rejected" if refused else "batch", records)
            log("listener-headers", [k for k, _ in self.headers.items()])
            self.send_response(400 if refused else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer((host, 0), Listener)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def subscribe(ext_id, port, api="telemetry", schema="2022-12-13",
              types=("platform", "function", "extension"), host="sandbox.localdomain",
              timeout_ms=25):
    path = "/2022-07-01/telemetry" if api == "telemetry" else "/2020-08-15/logs"
    body = {
        "types": list(types),
        "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": timeout_ms},
        "destination": {"protocol": "HTTP", "URI": f"http://{host}:{port}/in"},
    }
    if schema is not None:
        body["schemaVersion"] = schema
    status, _, reply = call("PUT", path, body, {"Lambda-Extension-Identifier": ext_id})
    log("subscribe", {"api": api, "status": status, "body": reply.decode()})
    return status


def run(ext_id, on_event=None):
    while True:
        status, headers, body = call(
            "GET", "/2020-01-01/extension/event/next", None, {"Lambda-Extension-Identifier": ext_id}
        )
        event = json.loads(body)
        log("event", event)
        if on_event:
            on_event(event)
        if event.get("eventType") == "SHUTDOWN":
            sys.exit(0)
"##;

/// A minimal HTTP/1.1 client on a raw socket that keeps header names exactly as they arrive:
/// `raw_http(method, path, body=b"", headers=())` → `(status, [(name, value)], body)`.
/// For clients that read headers case-sensitively.
pub(crate) const RAW_HTTP: &str = r##"
import socket as _socket


def raw_http(method, path, body=b"", headers=()):
    host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
    s = _socket.create_connection((host, int(port)))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    pairs = [tuple(h.split(": ", 1)) for h in header_lines]
    length = int(next((v for k, v in pairs if k.lower() == "content-length"), "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    s.close()
    return int(status_line.split()[1]), pairs, rest
"##;
