//! The memory sampler: the environment's high-water mark, and the memory limit.

use super::MIB;
use crate::process;
use crate::state::{Phase, SharedRef};

/// Samples memory every interval; kills the runtime when the sum exceeds the memory size.
pub(crate) async fn sampler(shared: SharedRef) {
    let limit = u64::from(shared.config.memory_mb) * MIB;
    let mut tick = tokio::time::interval(shared.config.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let phase = {
            let st = shared.lock();
            if st.closed {
                return;
            }
            st.phase
        };
        if phase == Phase::Empty {
            continue;
        }
        let total = shared.sample_memory();
        if total > limit && matches!(phase, Phase::Init | Phase::Ready) {
            kill_at_limit(&shared, total, limit);
        }
    }
}

/// The cgroup's answer to `total` over `limit`: SIGKILL the runtime, once (marked
/// `oom_killed`, so the invocation or init reports `Runtime.OutOfMemory`). A runtime that
/// already exited is not signalled: its pid may be another process's now.
pub(super) fn kill_at_limit(shared: &SharedRef, total: u64, limit: u64) {
    let pid = {
        let mut st = shared.lock();
        match (st.runtime.pid, &st.runtime.exit, st.runtime.oom_killed) {
            (Some(pid), None, false) => {
                st.runtime.oom_killed = true;
                Some(pid)
            }
            _ => None,
        }
    };
    if let Some(pid) = pid {
        tracing::warn!(
            total_mb = total / MIB,
            limit_mb = limit / MIB,
            "memory limit exceeded: killing the runtime"
        );
        process::signal(pid, libc::SIGKILL);
        shared.bump();
    }
}
