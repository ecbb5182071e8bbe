//! The `lambda-emulator run` binary, end to end.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{python, Bed};
use serde_json::Value;

fn run(bed: &Bed, extra: &[&str]) -> std::process::Output {
    let dir = bed.dir.path();
    std::process::Command::new(env!("CARGO_BIN_EXE_lambda-emulator"))
        .arg("run")
        .arg("--extensions-dir")
        .arg(dir.join("ext"))
        .arg("--function-dir")
        .arg(dir.join("fn"))
        .args([
            "--handler",
            "handler.main",
            "--memory-mb",
            "256",
            "--env",
            "MY_VAR=cli",
        ])
        .arg("--python")
        .arg(python())
        .args(extra)
        .output()
        .expect("run lambda-emulator")
}

#[test]
fn json_mode_prints_outcomes_and_extension_stats() {
    let bed = Bed::new("cli-json");
    bed.extension("watcher", "good");
    let event = bed.dir.path().join("event.json");
    std::fs::write(&event, r#"{"from": "file"}"#).expect("event");
    let out = run(
        &bed,
        &[
            "--invocations",
            "3",
            "--event",
            &format!("@{}", event.display()),
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document on stdout");
    let invocations = doc["invocations"].as_array().expect("invocations");
    assert_eq!(invocations.len(), 3);
    for o in invocations {
        assert_eq!(o["status"], "success");
        assert_eq!(o["response"]["event"]["from"], "file");
        assert_eq!(o["response"]["env"]["MY_VAR"], "cli");
        assert!(
            o["report"]["metrics"]["maxMemoryUsedMB"]
                .as_u64()
                .expect("memory")
                > 5
        );
    }
    let ext = &doc["shutdown"]["extensions"][0];
    assert_eq!(ext["name"], "watcher");
    assert!(ext["spawn_to_register"].as_f64().expect("register ms") > 0.0);
    assert!(ext["spawn_to_first_next"].as_f64().expect("first next ms") > 0.0);
    assert_eq!(
        ext["post_runtime"].as_array().expect("post runtime").len(),
        3
    );
    assert!(ext["peak_rss_bytes"].as_u64().expect("peak") > 0);
    assert_eq!(ext["exit"]["code"], 0);
    assert_eq!(ext["exit"]["killed_at_deadline"], false);
    assert!(doc["output"]["runtime"]
        .as_array()
        .expect("runtime lines")
        .iter()
        .any(|l| l == "handler-log echo"));
}

#[test]
fn text_mode_prints_a_progress_line_per_invocation() {
    let bed = Bed::new("cli-text");
    bed.extension("watcher", "no-telemetry");
    let out = run(
        &bed,
        &["--invocations", "2", "--event", r#"{"action": "raise"}"#],
    );
    // Every invocation failed: the exit status says so (4).
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invoke 1/2: error"), "{err}");
    assert!(err.contains("invoke 2/2: error"), "{err}");
    assert!(err.contains("[runtime] handler-log raise"), "{err}");
    assert!(err.contains("extension watcher:"), "{err}");
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let bed = Bed::new("cli-bad");
    let out = run(&bed, &["--event", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--event is not JSON"));
}

#[test]
fn the_exit_status_tells_a_script_what_failed() {
    let bed = Bed::new("cli-exit");
    bed.extension("watcher", "no-telemetry");
    let raise = ["--invocations", "2", "--event", r#"{"action": "raise"}"#];
    // Invocations that did not succeed: 4, unless told otherwise.
    assert_eq!(run(&bed, &raise).status.code(), Some(4));
    let allowed: Vec<&str> = raise.iter().copied().chain(["--allow-failures"]).collect();
    assert_eq!(run(&bed, &allowed).status.code(), Some(0));
    // Init failed (the handler's module does not exist): 3, even though it is retried.
    std::fs::remove_file(bed.dir.path().join("fn/handler.py")).expect("remove handler");
    let out = run(&bed, &["--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the document is still printed");
    assert_eq!(doc["invocations"][0]["status"], "failure");
}

#[test]
fn log_format_json_delivers_json_lines_as_objects() {
    let bed = Bed::new("cli-log-format");
    let logs = ["--event", r#"{"action": "logs"}"#, "--json"];
    let function_records = |args: &[&str]| -> Vec<Value> {
        let out = run(&bed, args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).expect("document");
        doc["telemetry"]
            .as_array()
            .expect("telemetry")
            .iter()
            .filter(|r| r["type"] == "function")
            .map(|r| r["record"].clone())
            .collect()
    };
    let text = function_records(&logs);
    assert!(text.iter().all(Value::is_string), "{text:?}");
    let json_args: Vec<&str> = logs
        .iter()
        .copied()
        .chain(["--log-format", "json"])
        .collect();
    let json = function_records(&json_args);
    assert!(
        json.contains(&serde_json::json!({"msg": "a json line", "n": 1})),
        "{json:?}"
    );
    let bad = run(&bed, &["--log-format", "yaml"]);
    assert_eq!(bad.status.code(), Some(2));
}
