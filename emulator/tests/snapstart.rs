//! SnapStart mode with the real `awslambdaric`: init ends at the snapshot point after the
//! runtime's before-snapshot hooks, the first invocation restores (restore telemetry, the
//! after-restore hooks), and a failing after-restore hook fails that invocation.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{of_type, Bed};
use lambda_emulator::{Emulator, InvokeStatus, ShutdownReason};
use serde_json::json;

const HOOKED: &str = r#"
import os
from snapshot_restore_py import register_before_snapshot, register_after_restore

RAN = []

@register_before_snapshot
def before():
    RAN.append("before-snapshot")

@register_after_restore
def after():
    RAN.append("after-restore")
    if os.environ.get("FAIL_RESTORE"):
        raise RuntimeError("cannot reconnect")

def main(event, context):
    RAN.append("invoke")
    return {"ran": RAN, "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")}
"#;

fn bed(tag: &str) -> (Bed, lambda_emulator::EmulatorConfig) {
    let bed = Bed::new(tag);
    std::fs::write(bed.dir.path().join("fn/hooked.py"), HOOKED).unwrap();
    let mut config = bed.config();
    config.handler = "hooked.main".into();
    config.snapstart = true;
    (bed, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_invocation_restores_from_the_snapshot_point() {
    let (bed, config) = bed("snapstart");
    bed.extension("watcher", "good");
    let emu = Emulator::start(config).await.expect("start");
    assert_eq!(emu.last_init().expect("init").status, "success");
    // Init ended at the snapshot point: no restore yet.
    assert!(of_type(&emu.telemetry_emitted(), "platform.restoreStart").is_empty());
    let first = emu.invoke(json!({})).await.expect("invoke");
    let second = emu.invoke(json!({})).await.expect("invoke");
    assert_eq!(first.status, InvokeStatus::Success, "{first:?}");
    let r = first.response.as_ref().unwrap();
    assert_eq!(
        r["ran"],
        json!(["before-snapshot", "after-restore", "invoke"])
    );
    assert_eq!(r["init_type"], "snap-start");
    assert!(first.cold_start && !second.cold_start);
    let t = emu.telemetry_emitted();
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");

    let kinds: Vec<&str> = t
        .iter()
        .map(|e| e.event_type.as_str())
        .filter(|k| {
            k.starts_with("platform.init")
                || k.starts_with("platform.restore")
                || *k == "platform.start"
        })
        .collect();
    assert_eq!(
        kinds[..7],
        [
            "platform.initStart",
            "platform.initRuntimeDone",
            "platform.initReport",
            "platform.restoreStart",
            "platform.restoreRuntimeDone",
            "platform.restoreReport",
            "platform.start",
        ],
        "{kinds:?}"
    );
    let restore = &of_type(&t, "platform.restoreReport")[0].record;
    assert_eq!(restore["status"], "success");
    let restore_ms = restore["metrics"]["durationMs"].as_f64().unwrap();
    let reports = of_type(&t, "platform.report");
    let m0 = &reports[0].record["metrics"];
    assert_eq!(m0["restoreDurationMs"].as_f64(), Some(restore_ms));
    assert_eq!(m0.get("initDurationMs"), None, "{m0}");
    assert_eq!(reports[1].record["metrics"].get("restoreDurationMs"), None);
    assert_eq!(
        of_type(&t, "platform.restoreStart")[0].record["functionName"],
        "emulator-test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_after_restore_hook_fails_the_invocation_and_the_next_one_restores_again() {
    let (_bed, mut config) = bed("snapstart-fail");
    config.env.push(("FAIL_RESTORE".into(), "1".into()));
    let emu = Emulator::start(config).await.expect("start");
    let failed = emu.invoke(json!({})).await.expect("invoke");
    assert_eq!(failed.status, InvokeStatus::Failure, "{failed:?}");
    assert!(failed.reset);
    // Its report says how long the restore took, not the init (which ran at the snapshot).
    let m = &failed.report["metrics"];
    assert!(m["restoreDurationMs"].as_f64().is_some(), "{m}");
    assert_eq!(m.get("initDurationMs"), None, "{m}");
    let again = emu.invoke(json!({})).await.expect("invoke");
    assert_eq!(again.status, InvokeStatus::Failure, "{again:?}");
    let t = emu.telemetry_emitted();
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    let reports = of_type(&t, "platform.restoreReport");
    assert_eq!(reports.len(), 2, "one restore per environment");
    assert!(
        reports.iter().all(|r| r.record["status"] == "failure"),
        "{reports:?}"
    );
    assert_eq!(of_type(&t, "platform.initStart").len(), 2);
}
