//! The SHUTDOWN protocol (also the reset after a failure): deliver buffered telemetry, send
//! SHUTDOWN, stop the runtime, wait for the extensions until the deadline, SIGKILL the rest.

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::{tokio_deadline, wait_for, RUNTIME_SHUTDOWN};
use crate::clock;
use crate::process;
use crate::state::{ExtState, Phase, SharedRef};
use crate::{ExitInfo, ExtensionStats, ShutdownReason};

/// SHUTDOWN protocol; ends with no process left and the phase `Empty`.
/// Returns the extensions' stats, the runtime's exit, and how long it took.
pub(crate) async fn shutdown_env(
    shared: &SharedRef,
    reason: ShutdownReason,
) -> (Vec<ExtensionStats>, Option<ExitInfo>, Duration) {
    let t0 = Instant::now();
    let budget = shared.config.shutdown_timeout;
    let deadline = t0 + budget;
    let deadline_ms = clock::epoch_ms(SystemTime::now()) + budget.as_millis() as u64;
    let under_way = {
        let st = shared.lock();
        (st.phase == Phase::ShuttingDown).then_some(st.generation)
    };
    if let Some(generation) = under_way {
        // Another reset of this environment is running (Managed Instances: several failed
        // invocations at once): wait for it rather than run the protocol twice, which would
        // take the next environment's extensions for this one's.
        wait_for(shared, None, |st| {
            (st.phase == Phase::Empty || st.generation != generation).then_some(())
        })
        .await;
        return (Vec::new(), None, Duration::ZERO);
    }
    let flushes: Vec<_> = {
        let mut st = shared.lock();
        if st.phase == Phase::Empty {
            return (Vec::new(), None, Duration::ZERO);
        }
        st.phase = Phase::ShuttingDown;
        st.shutdown_started = Some(t0);
        st.runtime_pending.clear();
        st.extensions
            .iter()
            .filter_map(|e| e.subscriber.as_ref())
            .filter_map(|s| {
                let (o, r) = tokio::sync::oneshot::channel();
                s.tx.send(crate::telemetry::Msg::Flush(o)).ok().map(|_| r)
            })
            .collect()
    };
    // Deliver buffered telemetry (the last platform.report) before extensions are told to stop.
    let flush_deadline = tokio_deadline(t0 + budget / 2);
    for f in flushes {
        let _ = tokio::time::timeout_at(flush_deadline, f).await;
    }
    let runtime_pid = {
        let mut st = shared.lock();
        let ev = json!({"eventType": "SHUTDOWN", "shutdownReason": reason.as_str(), "deadlineMs": deadline_ms});
        for ext in st
            .extensions
            .iter_mut()
            .filter(|e| e.alive() && e.wants("SHUTDOWN"))
        {
            ext.queue.push_back(ev.clone());
        }
        st.runtime.pid.filter(|_| st.runtime.exit.is_none())
    };
    shared.bump();
    if let Some(pid) = runtime_pid {
        process::signal(pid, libc::SIGTERM);
        let gone = wait_for(
            shared,
            Some(tokio_deadline(Instant::now() + RUNTIME_SHUTDOWN)),
            |st| st.runtime.exit.is_some().then_some(()),
        )
        .await;
        if gone.is_none() {
            process::signal(pid, libc::SIGKILL);
        }
    }
    // Extensions that did not register for SHUTDOWN are never told: stop them now.
    for pid in alive_pids(shared, |e| !e.wants("SHUTDOWN")) {
        process::signal(pid, libc::SIGKILL);
    }
    wait_for(shared, Some(tokio_deadline(deadline)), |st| {
        st.extensions.iter().all(|e| !e.alive()).then_some(())
    })
    .await;
    {
        let mut st = shared.lock();
        for ext in st.extensions.iter_mut().filter(|e| e.alive()) {
            ext.stats.exit.killed_at_deadline = true;
            tracing::warn!(extension = %ext.stats.name, "extension still running at the shutdown deadline: SIGKILL");
            process::signal(ext.stats.pid, libc::SIGKILL);
        }
        if let (Some(pid), None) = (st.runtime.pid, &st.runtime.exit) {
            process::signal(pid, libc::SIGKILL);
        }
    }
    // Reap: the exit watchers record the final status.
    wait_for(
        shared,
        Some(tokio_deadline(Instant::now() + Duration::from_secs(5))),
        |st| {
            (st.extensions.iter().all(|e| !e.alive())
                && (st.runtime.pid.is_none() || st.runtime.exit.is_some()))
            .then_some(())
        },
    )
    .await;
    // What a process printed just before exiting (e.g. a final flush) is still in its pipe.
    wait_for(
        shared,
        Some(tokio_deadline(Instant::now() + Duration::from_secs(1))),
        |st| (st.open_pipes == 0).then_some(()),
    )
    .await;
    let duration = t0.elapsed();
    let mut st = shared.lock();
    let exts: Vec<ExtState> = std::mem::take(&mut st.extensions);
    let stats: Vec<ExtensionStats> = exts.into_iter().map(|e| e.stats).collect();
    st.archived.extend(stats.iter().cloned());
    let runtime_exit = st.runtime.exit.clone();
    st.phase = Phase::Empty;
    st.in_flight.clear();
    st.pending_init = None;
    st.pending_restore = None;
    st.snapshotted = false;
    drop(st);
    shared.bump();
    (stats, runtime_exit, duration)
}

fn alive_pids(shared: &SharedRef, filter: impl Fn(&ExtState) -> bool) -> Vec<u32> {
    shared
        .lock()
        .extensions
        .iter()
        .filter(|e| e.alive() && filter(e))
        .map(|e| e.stats.pid)
        .collect()
}
