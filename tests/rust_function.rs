//! The example Rust function (`examples/rust-function`, with `lambda-memory-profile`'s counting
//! allocator and layer) under the project's emulator with the real extension, `LMP_SINK=emf`:
//! the function's heap figures come out of the extension under the same metric names as the
//! Python decorator's, and the function's results and errors are what the handler returned.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, EmulatorConfig, InvokeStatus, ShutdownReason};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const MIB: f64 = 1_048_576.0;

/// Builds the example binary with the cargo running this test and returns its path (from
/// cargo's JSON messages, so any target dir or profile works).
fn example_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(common::repo())
        .args([
            "build",
            "-q",
            "-p",
            "rust-function-example",
            "--bin",
            "rust-function",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build of the example failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "rust-function")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the example's executable")
}

/// A metric's values, smallest first.
fn values(docs: &[Value], name: &str) -> Vec<f64> {
    let mut out = common::metric_values(docs, name);
    out.sort_by(f64::total_cmp);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_function_metrics_come_out_of_the_extension() {
    let bin = example_binary();
    let dir = common::temp_dir("rust-fn");
    let ext_dir = dir.join("extensions");
    let fn_dir = dir.join("fn");
    std::fs::create_dir_all(&ext_dir).unwrap();
    std::fs::create_dir_all(&fn_dir).unwrap();
    // A link, not a copy: exec'ing a just-written copy from a multi-threaded process can fail
    // with ETXTBSY.
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_lambda-memory-profiler"),
        ext_dir.join(common::EXT),
    )
    .unwrap();
    let port = common::free_port();
    let cfg = EmulatorConfig {
        extensions_dir: Some(ext_dir),
        function_dir: fn_dir,
        handler: "rust-function".into(),
        runtime_command: Some(vec![bin.to_string_lossy().into_owned()]),
        memory_mb: 256,
        timeout: Duration::from_secs(10),
        function_name: "rust-it".into(),
        env: vec![
            ("LMP_SINK".into(), "emf".into()),
            ("LMP_FLUSH".into(), "end".into()),
            ("LMP_NAMESPACE".into(), "RustIt".into()),
            ("LMP_INTAKE_PORT".into(), port.to_string()),
        ],
        echo_output: std::env::var_os("LMP_TEST_ECHO").is_some(),
        ..EmulatorConfig::default()
    };
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let events = [
        json!({"keep": 1_048_576}),
        json!({"keep": 1_048_576}),
        json!({"keep": 1_048_576}),
        json!({"transient": 8_388_608}),
        json!({"fail": true}),
    ];
    let mut outcomes = Vec::new();
    for e in &events {
        let out = em.invoke(e.clone()).await.expect("invoke");
        outcomes.push(out);
        // Let each report arrive (telemetry buffering) before the next invocation ends.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shut = em
        .shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");

    // The function's answers are the handler's.
    for (i, o) in outcomes.iter().take(3).enumerate() {
        assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
        assert_eq!(o.response, Some(json!({"kept_chunks": i + 1})));
    }
    assert_eq!(outcomes[3].status, InvokeStatus::Success);
    assert_eq!(outcomes[3].response, Some(json!({"kept_chunks": 3})));
    let failed = &outcomes[4];
    assert_eq!(failed.status, InvokeStatus::Error, "{failed:?}");
    let body = failed.error_body.as_ref().expect("error body");
    assert_eq!(body["errorMessage"], "refused: asked to fail", "{body}");

    let ext = shut
        .extensions
        .iter()
        .find(|e| e.name == common::EXT)
        .expect("extension ran");
    assert_eq!(ext.exit.code, Some(0), "{:?}", ext.exit);
    let lines = common::ext_output(&shut);
    let docs = common::emf_docs(&lines);
    assert!(!docs.is_empty(), "no EMF line in:\n{}", lines.join("\n"));
    for d in &docs {
        let m = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "RustIt");
        assert_eq!(d["FunctionName"], "rust-it");
    }
    let n = events.len();
    // One profile per invocation, each joined with the function's record.
    assert_eq!(values(&docs, "MemorySize"), vec![256.0; n], "{lines:?}");
    assert_eq!(values(&docs, "ColdStart").iter().sum::<f64>(), 1.0);
    assert_eq!(values(&docs, "RuntimeRss").len(), n);
    assert_eq!(values(&docs, "RuntimeRssPeak").len(), n);
    assert_eq!(values(&docs, "RecordsDropped").iter().sum::<f64>(), 0.0);
    // No garbage collector in Rust: no Gc* datum (absent, never zero).
    assert!(values(&docs, "GcCollections").is_empty());

    // Heap figures under the Python decorator's names. Sorted: the transient and the failed
    // invocation grew by ~0, the three keeping ones by 1 MiB.
    let growth = values(&docs, "PythonHeapGrowth");
    assert_eq!(growth.len(), n, "{growth:?}");
    for g in &growth[..2] {
        assert!(g.abs() < 0.01 * 8.0 * MIB, "no growth expected: {growth:?}");
    }
    for g in &growth[2..] {
        assert!(
            (g - MIB).abs() <= 0.02 * MIB,
            "1 MiB ± 2% expected: {growth:?}"
        );
    }
    let retained = values(&docs, "PythonHeapRetained");
    assert_eq!(retained.len(), n);
    assert!(retained[2..].iter().all(|r| (r - MIB).abs() <= 0.02 * MIB));
    let peak = values(&docs, "PythonHeapPeak");
    assert_eq!(peak.len(), n);
    let top = peak[n - 1];
    assert!(
        (top - 8.0 * MIB).abs() <= 0.02 * 8.0 * MIB,
        "8 MiB peak expected: {peak:?}"
    );
    assert!(peak[..n - 1].iter().all(|p| *p < 2.0 * MIB), "{peak:?}");
    // The transient 8 MiB were written: the RSS peak of that invocation saw them.
    assert!(
        values(&docs, "RuntimeRssPeak")[n - 1] >= 8.0 * MIB,
        "{lines:?}"
    );
}
