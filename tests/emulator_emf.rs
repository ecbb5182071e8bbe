//! The built extension under the project's Lambda emulator with a real awslambdaric runtime and
//! the real decorator, `LMP_SINK=emf`: the metrics for each invocation appear on the extension's
//! stdout as valid EMF lines with the platform's and the decorator's values.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, InvokeStatus};
use serde_json::Value;
use std::collections::HashMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_lines_carry_each_invocations_metrics() {
    let py = common::python();
    let dir = common::temp_dir("emf");
    let port = common::free_port();
    let cfg = common::config(
        py,
        &dir,
        common::DECORATED,
        &[
            ("LMP_SINK", "emf".into()),
            ("LMP_INTAKE_PORT", port.to_string()),
            ("LMP_SAMPLE_RATE", "1".into()),
            ("LMP_NAMESPACE", "LmpIt".into()),
            ("LMP_FLUSH", "end".into()),
            (
                "LMP_LOG_LEVEL",
                std::env::var("LMP_TEST_LOG").unwrap_or("info".into()),
            ),
        ],
    );
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let mut reports = HashMap::new();
    // Invocation N's report arrives during N+1: after the 4th, the first 3 are complete and
    // flushed (LMP_FLUSH=end) before the extension's `/next`.
    for i in 0..4 {
        let out = em
            .invoke(serde_json::json!({"i": i}))
            .await
            .expect("invoke");
        assert_eq!(out.status, InvokeStatus::Success, "{out:?}");
        if i < 3 {
            reports.insert(out.request_id.clone(), out.report.clone());
        }
        // A gap between invocations, so each report is delivered (buffering timeout) before
        // the next invocation ends.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // The emulator drops its output buffers at shutdown: read the lines first (they are
    // captured from the pipe asynchronously, so poll).
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = common::ext_lines(&em);
        let docs = common::emf_docs(&lines);
        if common::metric_values(&docs, "MaxMemoryUsed").len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, ext) = common::shut_down(em).await;
    assert_eq!(ext.exit.code, Some(0), "{:?}", ext.exit);
    assert!(!ext.exit.exited_before_shutdown && !ext.exit.killed_at_deadline);
    assert_eq!(ext.telemetry_types, vec!["platform", "function"]);

    let docs = common::emf_docs(&lines);
    assert!(!docs.is_empty(), "no EMF line in:\n{}", lines.join("\n"));
    for d in &docs {
        let m = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "LmpIt");
        assert_eq!(m["Dimensions"], serde_json::json!([["FunctionName"]]));
        assert_eq!(d["FunctionName"], "lmp-it");
        assert!(m["Metrics"].as_array().unwrap().len() <= 100);
    }
    // One value per invocation, equal to what the platform reported.
    let mut want_mem: Vec<f64> = reports
        .values()
        .map(|r| r["metrics"]["maxMemoryUsedMB"].as_f64().unwrap())
        .collect();
    let mut got_mem = common::metric_values(&docs, "MaxMemoryUsed");
    want_mem.sort_by(f64::total_cmp);
    got_mem.sort_by(f64::total_cmp);
    assert_eq!(got_mem, want_mem);
    let mut want_dur: Vec<f64> = reports
        .values()
        .map(|r| r["metrics"]["durationMs"].as_f64().unwrap())
        .collect();
    let mut got_dur = common::metric_values(&docs, "Duration");
    want_dur.sort_by(f64::total_cmp);
    got_dur.sort_by(f64::total_cmp);
    assert_eq!(got_dur, want_dur);
    assert_eq!(
        common::metric_values(&docs, "MemorySize"),
        vec![256.0; 3],
        "exactly 3 profiles"
    );
    assert_eq!(
        common::metric_values(&docs, "ColdStart")
            .iter()
            .sum::<f64>(),
        1.0
    );
    assert_eq!(common::metric_values(&docs, "OutOfMemory"), vec![0.0; 3]);
    // Decorator and /proc figures joined in.
    assert_eq!(common::metric_values(&docs, "GcCollections").len(), 3);
    let rss = common::metric_values(&docs, "RuntimeRss");
    assert_eq!(rss.len(), 3);
    assert!(rss.iter().all(|v| *v > 1e6), "{rss:?}");
    assert_eq!(common::metric_values(&docs, "RuntimeRssPeak").len(), 3);
    // Every invocation traced (sample rate 1): each retained its 1 MiB.
    let retained = common::metric_values(&docs, "PythonHeapRetained");
    assert_eq!(retained.len(), 3);
    assert!(retained.iter().all(|v| *v >= 1_048_576.0), "{retained:?}");
    // Self-metrics.
    assert!(!common::metric_values(&docs, "ExtensionRss").is_empty());
    assert_eq!(
        common::metric_values(&docs, "RecordsDropped")
            .iter()
            .sum::<f64>(),
        0.0
    );
    // Top sites: one line per traced invocation, never a dimension.
    let sites: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["lmp"] == "top_sites")
        .filter(|v| reports.contains_key(v["request_id"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(sites.len(), 3, "{}", lines.join("\n"));
    for s in &sites {
        assert!(
            s["sites"][0]["file"].as_str().unwrap().ends_with("app.py"),
            "{s}"
        );
    }
}
