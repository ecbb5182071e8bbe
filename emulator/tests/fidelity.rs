//! The emulator as a faithful Lambda for extensions written elsewhere (issue #16): one test per
//! thing such an extension tripped on, each with a small extension written here from the API
//! references.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::scripts::RAW_HTTP;
use common::{python, typed, Bed};
use lambda_emulator::{Emulator, InvokeStatus, LogFormat, ShutdownReason};
use serde_json::{json, Value};

async fn shut_down(emu: Emulator) -> lambda_emulator::ShutdownReport {
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown")
}

/// An extension that binds its listener to `sandbox.localdomain`, like the AWS Telemetry API
/// example, and subscribes with it.
const SANDBOX_LISTENER: &str = r#"
ext_id = register()
log("resolved", socket.gethostbyname("sandbox.localdomain"))
port = listen(host="sandbox.localdomain")
subscribe(ext_id, port)
run(ext_id)
"#;

// 1. sandbox.localdomain resolves for the processes the emulator starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_localdomain_resolves_for_extensions_and_the_runtime() {
    let hosts_before = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let bed = Bed::new("sandbox-name");
    bed.script("binds-sandbox", SANDBOX_LISTENER);
    let emu = Emulator::start(bed.config()).await.expect("start");
    assert!(emu.warnings().is_empty(), "{:?}", emu.warnings());
    let o = emu
        .invoke(json!({"action": "resolve"}))
        .await
        .expect("invoke");
    assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
    assert_eq!(
        o.response.as_ref().expect("response")["sandbox"],
        "127.0.0.1"
    );
    let report = shut_down(emu).await;
    assert_eq!(
        bed.entries("binds-sandbox", "resolved"),
        vec![json!("127.0.0.1")]
    );
    // The listener bound to the name received telemetry, and the extension lived to SHUTDOWN.
    let got = bed.received("binds-sandbox");
    assert_eq!(typed(&got, "platform.report").len(), 1, "{got:?}");
    let ext = &report.extensions[0];
    assert!(
        !ext.exit.exited_before_shutdown && ext.exit.code == Some(0),
        "{ext:?}"
    );
    // The host's own file is untouched: the name exists only in the processes' view.
    assert_eq!(
        std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        hosts_before
    );
}

// 1, without root: the same through an unprivileged user namespace (the CLI run as `nobody`).
#[test]
fn an_unprivileged_user_gets_the_sandbox_name_through_a_user_namespace() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    // `nobody` may not reach the test Python (often under root's home): the system's, without
    // awslambdaric, runs the extension and a minimal raw-socket runtime.
    let system_python = std::path::Path::new("/usr/bin/python3");
    if !root || !setpriv.exists() || !system_python.exists() {
        // As a normal user the library test above already takes the user-namespace path.
        eprintln!("skipped: needs root, setpriv and /usr/bin/python3 to run as another user");
        return;
    }
    let bed = Bed::new("sandbox-nobody");
    bed.executable(
        &bed.dir.path().join("ext/binds-sandbox"),
        &format!(
            "#!{} -u\n{}\n{SANDBOX_LISTENER}",
            system_python.display(),
            common::scripts::PRELUDE
        ),
    );
    let runtime = bed.dir.path().join("fn/runtime.py");
    std::fs::write(
        &runtime,
        format!("import json, os, socket\n{RAW_HTTP}\n{RESOLVING_RUNTIME}"),
    )
    .expect("runtime");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bed.dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let out = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_lambda-emulator"))
        .arg("run")
        .arg("--extensions-dir")
        .arg(bed.dir.path().join("ext"))
        .arg("--function-dir")
        .arg(bed.dir.path().join("fn"))
        .args(["--handler", "unused", "--memory-mb", "256", "--json"])
        .arg("--runtime-command")
        .arg(format!("{} {}", system_python.display(), runtime.display()))
        .output()
        .expect("run the emulator as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("does not resolve"), "{err}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON document");
    assert_eq!(doc["invocations"][0]["response"]["sandbox"], "127.0.0.1");
    assert_eq!(
        bed.entries("binds-sandbox", "resolved"),
        vec![json!("127.0.0.1")]
    );
    assert!(!bed.received("binds-sandbox").is_empty());
}

/// A custom runtime (raw sockets, no runtime client) answering where the sandbox's name points.
const RESOLVING_RUNTIME: &str = r#"
while True:
    status, headers, body = raw_http("GET", "/2018-06-01/runtime/invocation/next")
    request_id = dict(headers)["Lambda-Runtime-Aws-Request-Id"]
    answer = json.dumps({"sandbox": socket.gethostbyname("sandbox.localdomain")})
    raw_http("POST", f"/2018-06-01/runtime/invocation/{request_id}/response", answer.encode())
"#;

/// Subscribes like the `lambda-extension` crate's telemetry example reads records: a batch
/// holding a `function` or `extension` record that is not a string is answered 400.
const STRICT_TEXT_LISTENER: &str = r#"
def not_text(records):
    return any(r["type"] in ("function", "extension") and not isinstance(r["record"], str) for r in records)

ext_id = register()
subscribe(ext_id, listen(reject=not_text if os.environ.get("STRICT") else None))
run(ext_id)
"#;

// 2. Log records follow the function's log format (text by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_follow_the_log_format() {
    for format in [LogFormat::Text, LogFormat::Json] {
        let bed = Bed::new("log-format");
        bed.script("strict", STRICT_TEXT_LISTENER);
        let mut config = bed.config();
        config.log_format = format;
        if format == LogFormat::Text {
            config.env.push(("STRICT".into(), "1".into()));
        }
        let emu = Emulator::start(config).await.expect("start");
        let o = emu.invoke(json!({"action": "logs"})).await.expect("invoke");
        assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
        // The three lines reach the listener on its buffering timeout, not at once: a loaded
        // machine may deliver them after SHUTDOWN was sent, when the listener no longer reads.
        let delivered = common::eventually(|| {
            let got = bed.received("strict");
            let logs = typed(&got, "function");
            let has = |want: &dyn Fn(&Value) -> bool| logs.iter().any(|r| want(&r["record"]));
            !bed.entries("strict", "rejected").is_empty()
                || (has(&|r| r == "a plain line")
                    && (format == LogFormat::Text || has(&|r| r["message"] == "via logging")))
        })
        .await;
        shut_down(emu).await;
        assert!(
            delivered,
            "function log records: {:?}",
            bed.received("strict")
        );
        let got = bed.received("strict");
        let rejected = bed.entries("strict", "rejected");
        let logs: Vec<&Value> = typed(&got, "function")
            .into_iter()
            .map(|r| &r["record"])
            .collect();
        let json_line = r#"{"msg": "a json line", "n": 1}"#;
        match format {
            LogFormat::Text => {
                // Lambda's default: every log record is a string, JSON-looking or not, so a
                // strict consumer takes every batch (platform records included).
                assert!(rejected.is_empty(), "{rejected:?}");
                assert!(logs.iter().all(|r| r.is_string()), "{logs:?}");
                assert!(logs.contains(&&json!(json_line)), "{logs:?}");
                assert!(logs.contains(&&json!("a plain line")), "{logs:?}");
                assert_eq!(typed(&got, "platform.report").len(), 1);
            }
            LogFormat::Json => {
                assert!(
                    logs.contains(&&json!({"msg": "a json line", "n": 1})),
                    "{logs:?}"
                );
                assert!(logs.contains(&&json!("a plain line")), "{logs:?}");
                // The runtime's `logging` writes JSON in this format: delivered as an object.
                let via_logging = logs
                    .iter()
                    .find(|r| r["message"] == "via logging")
                    .unwrap_or_else(|| panic!("no logging record in {logs:?}"));
                assert_eq!(via_logging["level"], "INFO");
            }
        }
    }
}

const LOGS_API_EXTENSION: &str = r#"
ext_id = register()
port = listen()
subscribe(ext_id, port, api="logs", schema=None if NAME == "logs-default" else "2021-03-18")
# One extension uses one of the two APIs.
subscribe(ext_id, port, api="telemetry")
run(ext_id)
"#;

// 3. The Logs API is served, with its own record shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_api_serves_its_own_record_shapes() {
    let bed = Bed::new("logs-api");
    bed.script("logs-2021", LOGS_API_EXTENSION);
    bed.script("logs-default", LOGS_API_EXTENSION);
    let emu = Emulator::start(bed.config()).await.expect("start");
    let a = emu.invoke(json!({"n": 1})).await.expect("invoke 1");
    let b = emu.invoke(json!({"n": 2})).await.expect("invoke 2");
    let report = shut_down(emu).await;
    for name in ["logs-2021", "logs-default"] {
        let subs = bed.entries(name, "subscribe");
        assert_eq!(subs[0]["status"], 200, "{subs:?}");
        assert_eq!(subs[0]["body"], "\"OK\"");
        assert_eq!(subs[1]["status"], 400, "{subs:?}");
        let got = bed.received(name);
        let types: Vec<&str> = got.iter().filter_map(|r| r["type"].as_str()).collect();
        let allowed = [
            "platform.start",
            "platform.runtimeDone",
            "platform.end",
            "platform.report",
            "platform.extension",
            "platform.logsSubscription",
            "function",
            "extension",
        ];
        assert!(types.iter().all(|t| allowed.contains(t)), "{types:?}");
        assert!(typed(&got, "function")
            .iter()
            .all(|r| r["record"].is_string()));
        let ours = typed(&got, "platform.logsSubscription")
            .into_iter()
            .find(|r| r["record"]["name"] == name)
            .unwrap_or_else(|| panic!("no logsSubscription for {name}: {types:?}"));
        assert_eq!(ours["record"]["state"], "Subscribed");
        assert_eq!(
            ours["record"]["types"],
            json!(["platform", "function", "extension"])
        );
        for o in [&a, &b] {
            let id = o.request_id.as_str();
            let seq: Vec<&str> = got
                .iter()
                .filter(|r| r["record"]["requestId"] == id)
                .filter_map(|r| r["type"].as_str())
                .collect();
            let expected = if name == "logs-2021" {
                vec![
                    "platform.start",
                    "platform.runtimeDone",
                    "platform.end",
                    "platform.report",
                ]
            } else {
                // Without schema 2021-03-18 there is no runtimeDone.
                vec!["platform.start", "platform.end", "platform.report"]
            };
            assert_eq!(seq, expected, "{name}");
            let rep = typed(&got, "platform.report")
                .into_iter()
                .find(|r| r["record"]["requestId"] == id)
                .expect("report");
            let m = &rep["record"]["metrics"];
            assert!(m["durationMs"].as_f64().is_some() && m["maxMemoryUsedMB"].as_u64().is_some());
            assert_eq!(m["memorySizeMB"], 256);
        }
    }
    for e in &report.extensions {
        assert_eq!(e.subscribed_api.as_deref(), Some("logs"));
        assert!(
            e.exit.code == Some(0) && !e.exit.killed_at_deadline,
            "{e:?}"
        );
    }
}

// 4. Schema 2025-01-29 is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_schema_2025_01_29_is_accepted() {
    let bed = Bed::new("schema-2025");
    bed.script(
        "new-schema",
        "ext_id = register()\nsubscribe(ext_id, listen(), schema='2025-01-29')\nrun(ext_id)\n",
    );
    let emu = Emulator::start(bed.config()).await.expect("start");
    let o = emu.invoke(json!({})).await.expect("invoke");
    shut_down(emu).await;
    assert_eq!(bed.entries("new-schema", "subscribe")[0]["status"], 200);
    let got = bed.received("new-schema");
    let reports = typed(&got, "platform.report");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["record"]["requestId"], o.request_id.as_str());
}

// 5. The records and fields the schema reference lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_records_carry_the_documented_fields() {
    let bed = Bed::new("record-fields");
    bed.script(
        "a-subscriber",
        "ext_id = register()\nsubscribe(ext_id, listen(), types=('platform',))\nrun(ext_id)\n",
    );
    bed.script("b-quiet", "run(register(('INVOKE',)))\n");
    let emu = Emulator::start(bed.config()).await.expect("start");
    let o = emu
        .invoke(json!({"action": "trace"}))
        .await
        .expect("invoke");
    shut_down(emu).await;
    let got = bed.received("a-subscriber");
    let one = |t: &str| -> Value {
        let v = typed(&got, t);
        assert_eq!(v.len(), 1, "{t}: {got:?}");
        v[0]["record"].clone()
    };
    let init = one("platform.initStart");
    assert_eq!(init["functionName"], "emulator-test");
    assert!(init["runtimeVersion"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    let arn = init["runtimeVersionArn"].as_str().unwrap_or("");
    assert!(
        arn.starts_with("arn:aws:lambda:us-east-1::runtime:"),
        "{arn}"
    );
    assert_eq!(
        one("platform.telemetrySubscription"),
        json!({"name": "a-subscriber", "state": "Subscribed", "types": ["platform"]})
    );
    let extensions: Vec<Value> = typed(&got, "platform.extension")
        .into_iter()
        .map(|r| r["record"].clone())
        .collect();
    assert!(extensions.contains(
        &json!({"name": "a-subscriber", "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]})
    ));
    assert!(
        extensions.contains(&json!({"name": "b-quiet", "state": "Ready", "events": ["INVOKE"]}))
    );

    let start = one("platform.start");
    let tracing = &start["tracing"];
    let span = tracing["spanId"].as_str().unwrap_or("");
    assert!(
        span.len() == 16 && span.chars().all(|c| c.is_ascii_hexdigit()),
        "{tracing}"
    );
    assert_eq!(tracing["type"], "X-Amzn-Trace-Id");
    // One trace per invocation: the INVOKE event, the runtime's header and every record agree.
    let trace = tracing["value"].as_str().expect("trace value");
    assert_eq!(o.response.as_ref().expect("response")["trace"], trace);
    let invoke = bed
        .entries("b-quiet", "event")
        .into_iter()
        .find(|e| e["eventType"] == "INVOKE")
        .expect("INVOKE");
    assert_eq!(invoke["tracing"]["value"], trace);
    let done = one("platform.runtimeDone");
    assert_eq!(&done["tracing"], tracing);
    assert_eq!(&one("platform.report")["tracing"], tracing);
    let spans = done["spans"].as_array().expect("spans");
    let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, vec!["responseLatency", "responseDuration"]);
    for s in spans {
        assert_eq!(s["start"].as_str().map(str::len), Some(24), "{s}");
        assert!(s["durationMs"].as_f64().is_some_and(|d| d >= 0.0), "{s}");
    }
    assert!(spans[0]["start"].as_str() <= spans[1]["start"].as_str());
    let latency = spans[0]["durationMs"].as_f64().unwrap_or(0.0);
    let total = done["metrics"]["durationMs"].as_f64().unwrap_or(0.0);
    assert!(latency <= total, "{latency} > {total}");
}

// 6. `events` is optional at register.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_without_events_is_accepted() {
    let bed = Bed::new("no-events");
    bed.script("empty-object", "run(register(raw=b'{}'))\n");
    bed.script("empty-body", "run(register(raw=b''))\n");
    bed.script(
        "bad-then-good",
        "register(raw=b'{\"events\": \"INVOKE\"}')\nrun(register(('SHUTDOWN',)))\n",
    );
    let emu = Emulator::start(bed.config()).await.expect("start");
    let o = emu.invoke(json!({})).await.expect("invoke");
    assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
    let report = shut_down(emu).await;
    for name in ["empty-object", "empty-body"] {
        let reg = bed.entries(name, "register");
        assert_eq!(reg[0]["status"], 200, "{name}: {reg:?}");
        let body: Value =
            serde_json::from_str(reg[0]["body"].as_str().unwrap_or("")).expect("json");
        assert_eq!(body["functionName"], "emulator-test");
        // Registered for nothing: no event ever reached it.
        assert!(bed.entries(name, "event").is_empty());
        let e = report
            .extensions
            .iter()
            .find(|e| e.name == name)
            .expect("stats");
        assert!(
            e.events.is_empty() && e.spawn_to_first_next.is_some(),
            "{e:?}"
        );
    }
    let reg = bed.entries("bad-then-good", "register");
    assert_eq!(
        (reg[0]["status"].as_u64(), reg[1]["status"].as_u64()),
        (Some(400), Some(200))
    );
    assert_eq!(
        bed.entries("bad-then-good", "event")[0]["eventType"],
        "SHUTDOWN"
    );
}

/// The function variables the Extensions API reference says extensions do not receive.
const NOT_FOR_EXTENSIONS: &[&str] = &[
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "LAMBDA_RUNTIME_DIR",
    "LAMBDA_TASK_ROOT",
    "_AWS_XRAY_DAEMON_ADDRESS",
    "_AWS_XRAY_DAEMON_PORT",
    "_HANDLER",
];

// 7. The environment an extension gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_do_not_receive_the_runtime_only_variables() {
    let bed = Bed::new("environ");
    bed.script(
        "env-dump",
        "log('environ', dict(os.environ))\nrun(register())\n",
    );
    let mut config = bed.config();
    config
        .env
        .push(("AWS_XRAY_CONTEXT_MISSING".into(), "LOG_ERROR".into()));
    config
        .env
        .push(("_AWS_XRAY_DAEMON_PORT".into(), "2000".into()));
    let emu = Emulator::start(config).await.expect("start");
    let o = emu.invoke(json!({"action": "env"})).await.expect("invoke");
    shut_down(emu).await;
    let runtime = o.response.expect("runtime env");
    let ext = bed.entries("env-dump", "environ").remove(0);
    for name in NOT_FOR_EXTENSIONS {
        assert!(ext.get(*name).is_none(), "extension sees {name}");
    }
    for name in [
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "LAMBDA_TASK_ROOT",
        "_HANDLER",
        "AWS_XRAY_CONTEXT_MISSING",
        "_AWS_XRAY_DAEMON_PORT",
    ] {
        assert!(runtime.get(name).is_some(), "runtime lacks {name}");
    }
    for name in [
        "MY_VAR",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_REGION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
    ] {
        assert_eq!(ext.get(name), runtime.get(name), "{name}");
        assert!(ext.get(name).is_some(), "extension lacks {name}");
    }
}

// 8. An extension's memory includes the processes it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_counts_an_extensions_child_processes() {
    let bed = Bed::new("children");
    // A launcher that starts Python without `exec`: the shell stays the extension's process.
    let child = bed.dir.path().join("child.py");
    bed.executable(
        &child,
        &format!(
            "#!{} -u\n{}\nHOLD = b'x' * (40 << 20)\nrun(register())\n",
            python().display(),
            common::scripts::PRELUDE
        ),
    );
    bed.executable(
        &bed.dir.path().join("ext/launcher"),
        &format!(
            "#!/bin/sh\necho launching\nEXT_NAME=$(basename \"$0\") BED_DIR={} {}\n",
            bed.dir.path().display(),
            child.display()
        ),
    );
    let emu = Emulator::start(bed.config()).await.expect("start");
    let o = emu.invoke(json!({})).await.expect("invoke");
    assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
    let stats = emu.extension_stats().remove(0);
    shut_down(emu).await;
    assert_eq!(stats.name, "launcher");
    assert!(stats.peak_processes >= 2, "{stats:?}");
    assert!(
        stats.peak_rss_bytes > 40 << 20,
        "{} bytes",
        stats.peak_rss_bytes
    );
    // The environment's figure includes it too (runtime ≈ 20 MB + extension > 40 MB).
    assert!(o.max_memory_used_mb > 55, "{}", o.max_memory_used_mb);
}

/// Registers and polls on a raw socket and keeps going only if the header names are Lambda's,
/// letter for letter (exits 1, an Extension.Crash, otherwise).
const CASE_SENSITIVE_EXTENSION: &str = r#"
status, headers, body = raw_http("POST", "/2020-01-01/extension/register",
    json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode(), [("Lambda-Extension-Name", NAME)])
names = [k for k, _ in headers]
log("register-headers", names)
ext_id = dict(headers).get("Lambda-Extension-Identifier")
if not ext_id:
    sys.exit(1)
subscribe(ext_id, listen())
while True:
    status, headers, body = raw_http("GET", "/2020-01-01/extension/event/next",
                                     headers=[("Lambda-Extension-Identifier", ext_id)])
    log("next-headers", [k for k, _ in headers])
    if "Lambda-Extension-Event-Identifier" not in dict(headers):
        sys.exit(1)
    if json.loads(body)["eventType"] == "SHUTDOWN":
        sys.exit(0)
"#;

/// A custom runtime on raw sockets that reads the Runtime API's headers case-sensitively.
const CASE_SENSITIVE_RUNTIME: &str = r#"
import json, os, sys
while True:
    status, headers, body = raw_http("GET", "/2018-06-01/runtime/invocation/next")
    h = dict(headers)
    with open(os.environ["HEADERS_LOG"], "a") as f:
        f.write(json.dumps([k for k, _ in headers]) + "\n")
    request_id = h["Lambda-Runtime-Aws-Request-Id"]
    answer = json.dumps({"deadline": h["Lambda-Runtime-Deadline-Ms"], "trace": h["Lambda-Runtime-Trace-Id"]})
    raw_http("POST", f"/2018-06-01/runtime/invocation/{request_id}/response", answer.encode())
"#;

// 9. Header names in Lambda's casing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_use_lambdas_casing() {
    let bed = Bed::new("header-case");
    bed.script(
        "exact-headers",
        &format!("{RAW_HTTP}\n{CASE_SENSITIVE_EXTENSION}"),
    );
    let runtime = bed.dir.path().join("raw_runtime.py");
    std::fs::write(
        &runtime,
        format!("import os, json\n{RAW_HTTP}\n{CASE_SENSITIVE_RUNTIME}"),
    )
    .expect("runtime");
    let headers_log = bed.dir.path().join("runtime-headers.log");
    let mut config = bed.config();
    config.runtime_command = Some(vec![
        python().to_string_lossy().into_owned(),
        runtime.to_string_lossy().into_owned(),
    ]);
    config.env.push((
        "HEADERS_LOG".into(),
        headers_log.to_string_lossy().into_owned(),
    ));
    let emu = Emulator::start(config).await.expect("start");
    let o = emu.invoke(json!({})).await.expect("invoke");
    assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
    assert!(o.response.as_ref().expect("answer")["trace"].is_string());
    let report = shut_down(emu).await;
    let ext = &report.extensions[0];
    assert!(
        ext.exit.code == Some(0) && !ext.exit.exited_before_shutdown,
        "{ext:?}"
    );
    let reg = bed.entries("exact-headers", "register-headers").remove(0);
    assert!(reg
        .as_array()
        .expect("names")
        .contains(&json!("Lambda-Extension-Identifier")));
    assert!(reg
        .as_array()
        .expect("names")
        .contains(&json!("Content-Type")));
    let runtime_headers: Vec<String> = serde_json::from_str(
        std::fs::read_to_string(&headers_log)
            .expect("runtime headers")
            .lines()
            .next()
            .unwrap_or("[]"),
    )
    .expect("names");
    for name in [
        "Lambda-Runtime-Aws-Request-Id",
        "Lambda-Runtime-Deadline-Ms",
        "Lambda-Runtime-Invoked-Function-Arn",
        "Lambda-Runtime-Trace-Id",
        "Content-Type",
    ] {
        assert!(
            runtime_headers.iter().any(|h| h == name),
            "{name}: {runtime_headers:?}"
        );
    }
    // The emulator's deliveries to a listener use the same casing.
    let delivered = bed.entries("exact-headers", "listener-headers");
    assert!(
        delivered.iter().all(|names| names
            .as_array()
            .is_some_and(|n| n.contains(&json!("Content-Type")))),
        "{delivered:?}"
    );
    assert!(!delivered.is_empty());
}
