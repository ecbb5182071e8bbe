//! Conformance: extensions in the shapes people copy from (the AWS samples' Python example
//! extension and Telemetry API example, the `lambda-extension` crate's record types), written
//! anew here from the documented APIs, run end to end against the real runtime.
//! `make emulator-conformance` runs this file alone.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{python, typed, Bed};
use lambda_emulator::{Emulator, InvokeStatus, OutputSource, ShutdownReason};
use serde_json::{json, Value};

/// Lays out an unpacked layer like `/opt`: `extensions/<name>` (the launcher Lambda starts) and
/// `<name>/extension.py` (the program), and returns the layer's directory.
fn layer(bed: &Bed, name: &str, launcher: &str, program: &str) -> std::path::PathBuf {
    let layer = bed.dir.path().join("layer");
    bed.executable(&layer.join("extensions").join(name), launcher);
    bed.executable(
        &layer.join(name).join("extension.py"),
        &format!("#!{} -u\n{program}", python().display()),
    );
    layer
}

/// A launcher script, as the samples ship them: the file name is the extension's name, and
/// the program is started with `exec` (or, like the Telemetry API example, without).
fn launcher(exec: bool) -> String {
    let start = if exec {
        "exec \"$(dirname \"$0\")/../${name}/extension.py\"".to_string()
    } else {
        format!(
            "{} \"$(dirname \"$0\")/../${{name}}/extension.py\"",
            python().display()
        )
    };
    format!("#!/bin/bash\nset -euo pipefail\nname=\"$(basename \"$0\")\"\necho \"${{name}} launching\"\n{start}\n")
}

/// The Python example extension's behaviour: register for INVOKE and SHUTDOWN, print every
/// event, exit at SHUTDOWN; the name is its directory's.
const EXAMPLE_EXTENSION: &str = r#"
import json
import os
import sys
import urllib.request
from pathlib import Path

NAME = Path(__file__).parent.name
BASE = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2020-01-01/extension"


def request(method, path, headers, body=None):
    req = urllib.request.Request(BASE + path, data=body, headers=headers, method=method)
    with urllib.request.urlopen(req) as r:
        return r.headers, json.loads(r.read() or b"null")


print(f"[{NAME}] registering", flush=True)
headers, info = request(
    "POST", "/register", {"Lambda-Extension-Name": NAME},
    json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode(),
)
ext_id = headers["Lambda-Extension-Identifier"]
print(f"[{NAME}] registered for {info['functionName']}", flush=True)
while True:
    _, event = request("GET", "/event/next", {"Lambda-Extension-Identifier": ext_id})
    if event["eventType"] == "INVOKE":
        print(f"[{NAME}] invoke {event['requestId']}", flush=True)
    else:
        print(f"[{NAME}] shutdown {event['shutdownReason']}", flush=True)
        sys.exit(0)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_extension_shape_runs_end_to_end() {
    let bed = Bed::new("conf-example");
    let name = "python-example-extension";
    let mut config = bed.config();
    config.extensions_dir = None;
    config.layer_dirs = vec![layer(&bed, name, &launcher(true), EXAMPLE_EXTENSION)];
    let emu = Emulator::start(config).await.expect("start");
    let mut ids = Vec::new();
    for i in 0..3 {
        let o = emu.invoke(json!({"i": i})).await.expect("invoke");
        assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
        ids.push(o.request_id);
    }
    let report = emu
        .shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    let emitted = &report.telemetry;
    let lines = &report.extension_output[name];
    let mut expected = vec![
        format!("{name} launching"),
        format!("[{name}] registering"),
        format!("[{name}] registered for emulator-test"),
    ];
    expected.extend(ids.iter().map(|id| format!("[{name}] invoke {id}")));
    expected.push(format!("[{name}] shutdown spindown"));
    assert_eq!(lines, &expected);
    let ext = &report.extensions[0];
    assert!(
        ext.exit.code == Some(0) && !ext.exit.killed_at_deadline,
        "{ext:?}"
    );
    // `exec`: the Python program replaced the launcher and is what was measured.
    assert!(ext.peak_rss_bytes > 8 << 20, "{ext:?}");
    assert!(emitted.iter().any(|e| e.event_type == "platform.extension"
        && e.record == json!({"name": name, "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]})));
    let logged: Vec<&Value> = emitted
        .iter()
        .filter(|e| e.event_type == "extension")
        .map(|e| &e.record)
        .collect();
    assert_eq!(logged.len(), expected.len(), "{logged:?}");
}

/// The Telemetry API example's behaviour: a listener bound to `sandbox.localdomain` on a fixed
/// port queues every batch; a subscription with schema 2022-07-01, all three types and 1 s
/// buffering; at each INVOKE and at SHUTDOWN the queue is dispatched (here: to a file).
const TELEMETRY_EXAMPLE: &str = r#"
import json
import os
import queue
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

NAME = Path(__file__).parent.name
API = os.environ["AWS_LAMBDA_RUNTIME_API"]
PORT = int(os.environ["TELEMETRY_PORT"])
SINK = os.environ["DISPATCH_FILE"]
batches = queue.Queue()


def call(method, url, headers, body=None):
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    with urllib.request.urlopen(req) as r:
        return r.status, r.headers, r.read()


class Listener(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        batches.put(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def dispatch():
    with open(SINK, "a") as f:
        while not batches.empty():
            for record in batches.get():
                f.write(json.dumps(record) + "\n")


_, headers, _ = call(
    "POST", f"http://{API}/2020-01-01/extension/register", {"Lambda-Extension-Name": NAME},
    json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode(),
)
ext_id = headers["Lambda-Extension-Identifier"]
server = HTTPServer(("sandbox.localdomain", PORT), Listener)
threading.Thread(target=server.serve_forever, daemon=True).start()
subscription = {
    "schemaVersion": "2022-07-01",
    "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{PORT}"},
    "types": ["platform", "function", "extension"],
    "buffering": {"timeoutMs": 1000, "maxBytes": 262144, "maxItems": 10000},
}
status, _, _ = call(
    "PUT", f"http://{API}/2022-07-01/telemetry",
    {"Lambda-Extension-Identifier": ext_id, "Content-Type": "application/json"},
    json.dumps(subscription).encode(),
)
print(f"[{NAME}] subscribed: {status}", flush=True)
while True:
    _, _, body = call("GET", f"http://{API}/2020-01-01/extension/event/next",
                      {"Lambda-Extension-Identifier": ext_id})
    event = json.loads(body)
    dispatch()
    if event["eventType"] == "SHUTDOWN":
        sys.exit(0)
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telemetry_api_example_shape_runs_end_to_end() {
    let bed = Bed::new("conf-telemetry");
    let name = "python_example_telemetry_api_extension";
    let sink = bed.dir.path().join("dispatched.jsonl");
    let mut config = bed.config();
    config.extensions_dir = None;
    config.layer_dirs = vec![layer(&bed, name, &launcher(false), TELEMETRY_EXAMPLE)];
    config
        .env
        .push(("TELEMETRY_PORT".into(), free_port().to_string()));
    config
        .env
        .push(("DISPATCH_FILE".into(), sink.to_string_lossy().into_owned()));
    let emu = Emulator::start(config).await.expect("start");
    let mut ids = Vec::new();
    for i in 0..3 {
        let o = emu.invoke(json!({"i": i})).await.expect("invoke");
        // The listener on sandbox.localdomain works: no Extension.Crash.
        assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
        ids.push(o.request_id);
    }
    let printed = emu.output_lines(OutputSource::Extension(name.into()));
    let report = emu
        .shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    assert!(
        printed.contains(&format!("[{name}] subscribed: 200")),
        "{printed:?}"
    );
    let ext = &report.extensions[0];
    assert!(
        ext.exit.code == Some(0) && !ext.exit.killed_at_deadline,
        "{ext:?}"
    );
    // Launched without `exec`: the shell and the Python program are counted together.
    assert!(ext.peak_processes >= 2, "{ext:?}");
    assert!(ext.peak_rss_bytes > 8 << 20, "{ext:?}");
    let got: Vec<Value> = std::fs::read_to_string(&sink)
        .expect("dispatched records")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert_eq!(typed(&got, "platform.initStart").len(), 1);
    assert_eq!(
        typed(&got, "platform.telemetrySubscription")[0]["record"]["name"],
        name
    );
    for t in ["platform.start", "platform.runtimeDone", "platform.report"] {
        let seen: Vec<&Value> = typed(&got, t)
            .iter()
            .map(|r| &r["record"]["requestId"])
            .collect();
        assert_eq!(
            seen,
            ids.iter()
                .map(|i| json!(i))
                .collect::<Vec<_>>()
                .iter()
                .collect::<Vec<_>>(),
            "{t}"
        );
    }
    let logs = typed(&got, "function");
    assert!(!logs.is_empty() && logs.iter().all(|r| r["record"].is_string()));
}

/// The `lambda-extension` crate's record types as a listener: a batch with a record its closed
/// enums cannot read (an unknown type, a missing field, a non-string log line) is answered 400,
/// as the crate does. `SHAPES` maps each type to its required fields.
const STRICT_CRATE_LISTENER: &str = r#"
TELEMETRY = {
    "function": str, "extension": str,
    "platform.initStart": ["initializationType", "phase"],
    "platform.initRuntimeDone": ["initializationType", "status"],
    "platform.initReport": ["initializationType", "phase", "metrics"],
    "platform.start": ["requestId"],
    "platform.runtimeDone": ["requestId", "status"],
    "platform.report": ["requestId", "status", "metrics"],
    "platform.extension": ["name", "state", "events"],
    "platform.telemetrySubscription": ["name", "state", "types"],
    "platform.logsDropped": ["reason", "droppedRecords", "droppedBytes"],
}
LOGS = {
    "function": str, "extension": str, "platform.fault": str,
    "platform.start": ["requestId"],
    "platform.end": ["requestId"],
    "platform.report": ["requestId", "metrics"],
    "platform.extension": ["name", "state", "events"],
    "platform.logsSubscription": ["name", "state", "types"],
    "platform.logsDropped": ["reason", "droppedRecords", "droppedBytes"],
    "platform.runtimeDone": ["requestId", "status"],
}
SHAPES = LOGS if NAME.startswith("logs") else TELEMETRY
REPORT_METRICS = ["durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB"]


def unreadable(records):
    for r in records:
        shape = SHAPES.get(r.get("type"))
        rec = r.get("record")
        bad = (
            shape is None
            or (shape is str and not isinstance(rec, str))
            or (isinstance(shape, list) and not (isinstance(rec, dict) and all(k in rec for k in shape)))
            or (r["type"] == "platform.report" and not all(
                isinstance(rec["metrics"].get(k), (int, float)) for k in REPORT_METRICS))
        )
        if bad:
            log("unreadable", r)
            return True
    return False


ext_id = register()
api = "logs" if NAME.startswith("logs") else "telemetry"
schema = "2021-03-18" if api == "logs" else "2022-07-01"
subscribe(ext_id, listen(reject=unreadable), api=api, schema=schema,
          types=("platform", "function"), timeout_ms=1000)
run(ext_id)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_crates_record_types_read_every_batch() {
    let bed = Bed::new("conf-crate");
    bed.script("telemetry-crate", STRICT_CRATE_LISTENER);
    bed.script("logs-crate", STRICT_CRATE_LISTENER);
    let emu = Emulator::start(bed.config()).await.expect("start");
    let mut ids = Vec::new();
    for event in [
        json!({}),
        json!({"action": "raise"}),
        json!({"action": "logs"}),
    ] {
        ids.push(emu.invoke(event).await.expect("invoke").request_id);
    }
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    for name in ["telemetry-crate", "logs-crate"] {
        assert_eq!(bed.entries(name, "subscribe")[0]["status"], 200);
        assert!(
            bed.entries(name, "unreadable").is_empty(),
            "{name}: {:?}",
            bed.entries(name, "unreadable")
        );
        let got = bed.received(name);
        let reports: Vec<&Value> = typed(&got, "platform.report")
            .iter()
            .map(|r| &r["record"]["requestId"])
            .collect();
        assert_eq!(reports.len(), ids.len(), "{name}: {got:?}");
    }
}
