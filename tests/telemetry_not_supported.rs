//! The built extension where telemetry is missing: the emulator answers the subscription
//! `202 Telemetry.NotSupported` (what `sam local` does, `telemetry_not_supported`). With the real
//! runtime client and the real decorator, the extension keeps working on the decorator's records
//! alone, flushes them by SHUTDOWN and exits 0 before the deadline; an `end` flush that waits for
//! a record does not wait for a runtime that died without sending it.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, InvokeStatus};
use serde_json::json;

const HANDLER: &str = r#"
import gc
import os

from lambda_memory_profiler import memory_profile

@memory_profile
def handler(event, context):
    if event.get("die"):
        os._exit(3)  # no record: the process is gone mid-invocation
    for _ in range(event.get("collect", 0)):
        gc.collect()
    return {"ok": True}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_decorator_data_alone_and_flushes_at_shutdown() {
    let py = common::python();
    let dir = common::temp_dir("no-telemetry");
    let env = [
        ("LMP_SINK", "emf".to_string()),
        ("LMP_FLUSH", "periodic:3600".to_string()),
        ("LMP_DIMENSIONS", "FunctionName,FunctionVersion".to_string()),
        ("LMP_INTAKE_PORT", common::free_port().to_string()),
    ];
    let mut cfg = common::config(py, &dir, HANDLER, &env);
    cfg.telemetry_not_supported = true;
    let em = Emulator::start(cfg).await.expect("emulator starts");
    for i in 0..3 {
        let out = em.invoke(json!({ "collect": i })).await.expect("invoke");
        assert_eq!(out.status, InvokeStatus::Success, "{out:?}");
    }
    let (shut, ext) = common::shut_down_checked(em).await;
    assert!(ext.telemetry_types.is_empty(), "{ext:?}");
    let lines = common::ext_output(&shut);
    let text = lines.join("\n");
    assert!(text.contains("telemetry not supported"), "{text}");
    // Flushed only at SHUTDOWN (the period is an hour): every invocation's decorator figures.
    let docs = common::emf_docs(&lines);
    let count = |name: &str| common::metric_values(&docs, name).len();
    for name in ["Duration", "ColdStart", "GcCollections", "RuntimeRssPeak"] {
        assert_eq!(count(name), 3, "{name}: {text}");
    }
    // Read from the runtime's /proc when a record arrives; a record that overtakes its INVOKE
    // may go without (the intake rations reads for ids no INVOKE named yet).
    assert!((1..=3).contains(&count("RuntimeRss")), "{text}");
    let mut cold = common::metric_values(&docs, "ColdStart");
    cold.sort_by(f64::total_cmp);
    assert_eq!(cold, vec![0.0, 0.0, 1.0]);
    assert!(
        common::metric_values(&docs, "GcCollections")
            .iter()
            .any(|v| *v >= 2.0),
        "{text}"
    );
    assert_eq!(
        count("MaxMemoryUsed"),
        0,
        "no telemetry, no platform figures"
    );
    for d in &docs {
        assert_eq!(d["FunctionName"], "lmp-it", "{d}");
        assert_eq!(d["FunctionVersion"], "$LATEST", "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_flush_does_not_wait_for_a_dead_runtime() {
    let py = common::python();
    let dir = common::temp_dir("no-telemetry-dead");
    let env = [
        ("LMP_SINK", "emf".to_string()),
        ("LMP_FLUSH", "end".to_string()),
        ("LMP_INTAKE_PORT", common::free_port().to_string()),
    ];
    let mut cfg = common::config(py, &dir, HANDLER, &env);
    cfg.telemetry_not_supported = true;
    // A deadline far beyond the shutdown budget: an extension still waiting for the dead
    // runtime's record would be killed at the reset's SHUTDOWN deadline.
    cfg.timeout = std::time::Duration::from_secs(60);
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let ok = em.invoke(json!({})).await.expect("invoke");
    assert_eq!(ok.status, InvokeStatus::Success, "{ok:?}");
    // The decorator is known now, so the extension waits for this invocation's record, which
    // never comes: the runtime exits mid-invocation.
    let died = em.invoke(json!({"die": true})).await.expect("invoke");
    assert_eq!(died.status, InvokeStatus::Failure, "{died:?}");
    assert!(died.reset, "{died:?}");
    let first_env = em
        .extension_stats()
        .into_iter()
        .find(|e| e.name == common::EXT && e.generation == 1)
        .expect("the first environment's extension");
    assert!(
        !first_env.exit.killed_at_deadline
            && !first_env.exit.exited_before_shutdown
            && first_env.exit.code == Some(0),
        "it noticed the runtime was gone and took its SHUTDOWN: {first_env:?}"
    );
    // The reset left no environment: nothing more to shut down.
    let _ = em.shutdown(lambda_emulator::ShutdownReason::Spindown).await;
}
