//! An invocation killed at the memory limit (the emulator enforces it like Lambda) is published
//! with `OutOfMemory` = 1, although the decorator never got to send its record: the report
//! arrives at the SHUTDOWN that resets the environment and the profile is flushed then.

mod common;

use lambda_emulator::{Emulator, InvokeStatus, ShutdownReason};
use std::time::Duration;

const HANDLER: &str = r#"
from lambda_memory_profiler import memory_profile

_hold = []

@memory_profile
def handler(event, context):
    if event.get("oom"):
        while True:
            _hold.append(b"\x01" * (8 * 1024 * 1024))
    return {"ok": True}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_published_as_out_of_memory() {
    let Some(py) = common::python() else { return };
    let dir = common::temp_dir("oom");
    let mut cfg = common::config(
        py,
        &dir,
        HANDLER,
        &[
            ("LMP_SINK", "emf".into()),
            ("LMP_FLUSH", "end".into()),
            ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ],
    );
    cfg.memory_mb = 160;
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let ok = em.invoke(serde_json::json!({})).await.expect("invoke");
    assert_eq!(ok.status, InvokeStatus::Success, "{ok:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let oom = em
        .invoke(serde_json::json!({"oom": true}))
        .await
        .expect("invoke");
    assert_eq!(oom.status, InvokeStatus::Error, "{oom:?}");
    assert_eq!(oom.error_type.as_deref(), Some("Runtime.OutOfMemory"));
    assert!(oom.reset, "the environment is reset after an OOM");

    // The reset shut the first environment down; its extension flushed on the way out.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = common::ext_lines(&em);
        if common::metric_values(&common::emf_docs(&lines), "OutOfMemory").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut oom_values = common::metric_values(&common::emf_docs(&lines), "OutOfMemory");
    oom_values.sort_by(f64::total_cmp);
    assert_eq!(oom_values, vec![0.0, 1.0], "{}", lines.join("\n"));
    // The analysis logs the OOM with the figures of the invocation before it.
    let oom_line = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["lmp"] == "out_of_memory")
        .unwrap_or_else(|| panic!("no out_of_memory line:\n{}", lines.join("\n")));
    assert_eq!(oom_line["cause"], "Runtime.OutOfMemory", "{oom_line}");
    assert_eq!(
        oom_line["invocation"]["request_id"],
        oom.request_id.as_str()
    );
    assert_eq!(oom_line["previous"]["request_id"], ok.request_id.as_str());
    let first = em
        .extension_stats()
        .into_iter()
        .next()
        .expect("first extension");
    assert!(
        !first.exit.exited_before_shutdown && !first.exit.killed_at_deadline,
        "{:?}",
        first.exit
    );
    let _ = em.shutdown(ShutdownReason::Spindown).await;
    let _ = std::fs::remove_dir_all(&dir);
}
