//! SnapStart's restore phase: the environment resumes from its snapshot point (the runtime
//! waiting in `restore/next` after its before-snapshot hooks), the runtime runs its
//! after-restore hooks, and the phase ends when it asks for its first event.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{tokio_deadline, wait_for};
use crate::records;
use crate::state::SharedRef;
use crate::types::duration_ms;

/// Lambda's limit for the after-restore hooks.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(10);

/// Restores the environment; the error type when the restore failed (the invocation that
/// needed it then fails, and the environment is reset).
pub(crate) async fn restore(shared: &SharedRef) -> Option<String> {
    let t0 = Instant::now();
    {
        let mut st = shared.lock();
        st.snapshotted = false;
        st.emit(
            "platform.restoreStart",
            records::restore_start(&shared.config),
        );
        st.runtime.restoring = true;
    }
    shared.bump();
    let failed = wait_for(shared, Some(tokio_deadline(t0 + RESTORE_TIMEOUT)), |st| {
        if let Some(e) = &st.runtime.restore_error {
            return Some(Some(e.clone()));
        }
        if let Some(e) = st.runtime.gone() {
            return Some(Some(e));
        }
        st.runtime.ready.then_some(None)
    })
    .await
    .unwrap_or_else(|| Some("Sandbox.Timedout".to_string()));
    let duration = t0.elapsed();
    let status = if failed.is_none() {
        "success"
    } else {
        "failure"
    };
    let mut done = json!({"status": status});
    let mut report = json!({"status": status, "metrics": {"durationMs": duration_ms(duration)}});
    if let Some(t) = &failed {
        done["errorType"] = json!(t);
        report["errorType"] = json!(t);
    }
    let mut st = shared.lock();
    st.emit("platform.restoreRuntimeDone", done);
    st.emit("platform.restoreReport", report);
    // The next report carries it, failed or not (a failed restore's invocation fails).
    st.pending_restore = Some(duration);
    drop(st);
    shared.bump();
    failed
}
