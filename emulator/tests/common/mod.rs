//! Test bed: temp dirs, a Python handler module and Python test extensions (real processes).
#![allow(dead_code)]

pub(crate) mod scripts;

use std::path::{Path, PathBuf};

use std::time::Duration;

use lambda_emulator::{EmulatorConfig, TelemetryEvent};
use serde_json::Value;

pub(crate) use lambda_emulator::testing::{python, TempDir};

const HANDLER: &str = r#"
import json
import os
import time

HOLD = []


def main(event, context):
    action = event.get("action", "echo") if isinstance(event, dict) else "echo"
    print("handler-log", action)
    if action == "alloc":
        # b"x" * n writes every page, so the RSS really grows (bytearray(n) would not).
        HOLD.append(b"x" * (50 * 1024 * 1024))
        return {"held_mb": 50 * len(HOLD)}
    if action == "oom":
        while True:
            HOLD.append(b"x" * (8 * 1024 * 1024))
            time.sleep(0.005)
    if action == "sleep":
        time.sleep(event["seconds"])
        return "late"
    if action == "raise":
        raise ValueError("boom")
    if action == "resolve":
        import socket

        return {"sandbox": socket.gethostbyname("sandbox.localdomain")}
    if action == "env":
        return dict(os.environ)
    if action == "logs":
        import logging

        print(json.dumps({"msg": "a json line", "n": 1}))
        print("a plain line")
        logging.getLogger().info("via logging")
        return "logged"
    if action == "trace":
        return {"trace": os.environ.get("_X_AMZN_TRACE_ID")}
    if action == "layer":
        import layermod

        return {"from_layer": layermod.VALUE, "pythonpath": os.environ.get("PYTHONPATH")}
    names = ["AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "MY_VAR",
             "AWS_LAMBDA_MAX_CONCURRENCY", "LAMBDA_TASK_ROOT", "_HANDLER"]
    return {
        "event": event,
        "event_type": type(event).__name__,
        "request_id": context.aws_request_id,
        "env": {k: os.environ.get(k) for k in names},
    }
"#;

/// Python extension: registers, optionally subscribes to telemetry with its own listener that
/// appends every batch to its log, loops on /next and logs each step. Behaviours (`mode`):
/// `good`, `slow` (after each INVOKE waits for its `platform.runtimeDone` by telemetry, then
/// 50 ms, before /next), `late-subscribe` (subscribes again after its first INVOKE), `exit-early` (exits on its first INVOKE,
/// once per test dir), `ignore-shutdown`, `fail-first` (listener answers 500 to its first batch),
/// `no-telemetry`.
const EXTENSION: &str = r#"
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
NAME = os.path.basename(sys.argv[0])
LOG = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "..", NAME + ".log")
MARKER = LOG + ".crashed-once"
MODE = "__MODE__"
lock = threading.Lock()
posts = [0]
runtime_done = set()


def log(*parts):
    with lock, open(LOG, "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\n")


class Listener(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        posts[0] += 1
        reject = MODE == "fail-first" and posts[0] == 1
        log("rejected" if reject else "batch", body.decode())
        if not reject:
            for r in json.loads(body):
                if r["type"] == "platform.runtimeDone":
                    runtime_done.add(r["record"]["requestId"])
        self.send_response(500 if reject else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def call(method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{API}{path}", data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


status, headers, body = call(
    "POST", "/2020-01-01/extension/register", {"events": ["INVOKE", "SHUTDOWN"]},
    {"Lambda-Extension-Name": NAME},
)
ext_id = headers["Lambda-Extension-Identifier"]
log("register", status, json.loads(body)["functionName"])
print(NAME, "registered", "MY_VAR=" + str(os.environ.get("MY_VAR")), "HANDLER=" + str(os.environ.get("_HANDLER")))
hdr = {"Lambda-Extension-Identifier": ext_id}
if MODE != "no-telemetry":
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    sub = {
        "schemaVersion": "2022-12-13",
        "types": ["platform", "function", "extension"],
        "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
        "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{srv.server_address[1]}/t"},
    }
    bad = dict(sub, buffering={"maxItems": 5, "maxBytes": 262144, "timeoutMs": 25})
    log("subscribe-invalid", call("PUT", "/2022-07-01/telemetry", bad, hdr)[0])
    log("subscribe", call("PUT", "/2022-07-01/telemetry", sub, hdr)[0])
last = None
while True:
    log("next-call", last)
    status, headers, body = call("GET", "/2020-01-01/extension/event/next", None, hdr)
    ev = json.loads(body)
    log("event", ev["eventType"], ev.get("requestId", ev.get("shutdownReason")))
    if ev["eventType"] == "SHUTDOWN":
        if MODE == "ignore-shutdown":
            time.sleep(60)
        time.sleep(0.05)
        # Printed as the very last thing, like an extension's final flush.
        print("final line at shutdown", flush=True)
        sys.exit(0)
    last = ev["requestId"]
    if MODE == "exit-early" and not os.path.exists(MARKER):
        open(MARKER, "w").close()
        log("exiting-early")
        sys.exit(3)
    if MODE == "slow":
        # Work after the runtime's response, like an extension flushing per invocation: wait
        # until the runtimeDone of this request arrived by telemetry, then a little more.
        for _ in range(1000):
            if last in runtime_done:
                break
            time.sleep(0.01)
        log("saw-runtime-done", last in runtime_done)
        time.sleep(0.05)
    if MODE == "late-subscribe":
        log("late-subscribe", call("PUT", "/2022-07-01/telemetry", sub, hdr)[0])
"#;

/// A test environment: function dir with `handler.py`, extensions dir, logs next to them.
pub(crate) struct Bed {
    pub dir: TempDir,
}

impl Bed {
    pub(crate) fn new(tag: &str) -> Bed {
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(dir.path().join("fn")).expect("fn dir");
        std::fs::create_dir_all(dir.path().join("ext")).expect("ext dir");
        std::fs::write(dir.path().join("fn/handler.py"), HANDLER).expect("handler");
        Bed { dir }
    }

    /// Adds an extension executable named `name` with behaviour `mode`.
    pub(crate) fn extension(&self, name: &str, mode: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("ext").join(name);
        let script = format!(
            "#!{} -u\n{}",
            python().display(),
            EXTENSION.replace("__MODE__", mode)
        );
        std::fs::write(&path, script).expect("extension script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        self
    }

    /// Adds an unpacked layer (`layer/`): `python/layermod.py` and an extension in `extensions/`.
    pub(crate) fn layer(&self, ext_name: &str, mode: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let layer = self.dir.path().join("layer");
        std::fs::create_dir_all(layer.join("python")).expect("layer python");
        std::fs::create_dir_all(layer.join("extensions")).expect("layer extensions");
        std::fs::write(
            layer.join("python/layermod.py"),
            "VALUE = 'from the layer'\n",
        )
        .expect("module");
        let path = layer.join("extensions").join(ext_name);
        let script = format!(
            "#!{} -u\n{}",
            python().display(),
            EXTENSION.replace("__MODE__", mode)
        );
        std::fs::write(&path, script).expect("extension script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        layer
    }

    /// Adds an extension executable `name` running `body` (Python) after [`scripts::PRELUDE`].
    pub(crate) fn script(&self, name: &str, body: &str) -> &Self {
        let text = format!(
            "#!{} -u\n{}\n{}",
            python().display(),
            scripts::PRELUDE,
            body
        );
        self.executable(&self.dir.path().join("ext").join(name), &text);
        self
    }

    /// Writes an executable file (any interpreter) at `path`.
    pub(crate) fn executable(&self, path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("dir");
        }
        std::fs::write(path, text).expect("script");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// The JSON entries a [`scripts::PRELUDE`] extension logged with `log(kind, value)`.
    pub(crate) fn entries(&self, name: &str, kind: &str) -> Vec<Value> {
        self.log(name)
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["kind"] == kind)
            .map(|e| e["value"].clone())
            .collect()
    }

    /// Every record a [`scripts::PRELUDE`] listener accepted, in arrival order.
    pub(crate) fn received(&self, name: &str) -> Vec<Value> {
        self.entries(name, "batch")
            .into_iter()
            .flat_map(|b| match b {
                Value::Array(a) => a,
                other => panic!("batch is not a JSON array: {other}"),
            })
            .collect()
    }

    pub(crate) fn config(&self) -> EmulatorConfig {
        EmulatorConfig {
            extensions_dir: Some(self.dir.path().join("ext")),
            function_dir: self.dir.path().join("fn"),
            handler: "handler.main".into(),
            python: python(),
            memory_mb: 256,
            timeout: Duration::from_secs(10),
            function_name: "emulator-test".into(),
            env: vec![("MY_VAR".into(), "my-value".into())],
            ..EmulatorConfig::default()
        }
    }

    /// Lines of an extension's log.
    pub(crate) fn log(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Every telemetry record an extension's listener accepted, in arrival order.
    pub(crate) fn delivered(&self, name: &str) -> Vec<Value> {
        self.log(name)
            .iter()
            .filter_map(|l| l.strip_prefix("batch "))
            .flat_map(|b| match serde_json::from_str::<Value>(b) {
                Ok(Value::Array(a)) => a,
                _ => panic!("batch is not a JSON array: {b}"),
            })
            .collect()
    }
}

/// Records of one type among delivered ones.
pub(crate) fn typed<'a>(records: &'a [Value], t: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == t).collect()
}

pub(crate) fn of_type<'a>(events: &'a [TelemetryEvent], t: &str) -> Vec<&'a TelemetryEvent> {
    events.iter().filter(|e| e.event_type == t).collect()
}

/// Polls `f` until it is true or 10 s passed (for asynchronous deliveries).
pub(crate) async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
