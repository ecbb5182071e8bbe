//! SnapStart end to end: the real extension and decorator in the emulator's SnapStart mode,
//! with the real `awslambdaric` running its snapshot hooks. The copy's first invocation is its
//! cold start, publishes `RestoreDuration` (the platform's figure), the extension starts this
//! copy's memory history at `platform.restoreStart`, and no record is lost. (That copies
//! restored from one image sample different invocations is shown with real shared-image
//! copies in tests/python/test_restore.py: each emulated copy runs its own init.)
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, InvokeStatus};
use serde_json::json;

const INVOCATIONS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_copy_publishes_its_restore_and_starts_its_own_history() {
    let python = common::python();
    let dir = common::temp_dir("snapstart");
    let port = common::free_port();
    let mut cfg = common::config(
        python,
        &dir,
        common::DECORATED,
        &[
            ("LMP_SINK", "emf".into()),
            ("LMP_INTAKE_PORT", port.to_string()),
        ],
    );
    cfg.snapstart = true;
    let em = Emulator::start(cfg).await.expect("emulator starts");
    for i in 0..INVOCATIONS {
        let o = em.invoke(json!({ "i": i })).await.expect("invoke");
        assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
        assert_eq!(o.cold_start, i == 0);
    }
    let telemetry = em.telemetry_emitted();
    let lines = common::shut_down_cleanly(em).await;
    let emf = common::emf_docs(&lines);

    let restore_ms = telemetry
        .iter()
        .find(|e| e.event_type == "platform.restoreReport")
        .and_then(|e| e.record["metrics"]["durationMs"].as_f64())
        .expect("restore report");
    assert_eq!(common::metric_values(&emf, "RestoreDuration"), [restore_ms]);
    assert!(common::metric_values(&emf, "InitDuration").is_empty());
    let cold = common::metric_values(&emf, "ColdStart");
    assert_eq!(cold.len(), INVOCATIONS, "no record lost");
    assert_eq!(cold.iter().filter(|c| **c == 1.0).count(), 1, "{cold:?}");
    assert_eq!(common::metric_values(&emf, "Duration").len(), INVOCATIONS);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("restored from a snapshot: a new memory history"))
            .count(),
        1,
        "{lines:#?}"
    );
}
