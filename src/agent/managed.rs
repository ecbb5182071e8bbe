//! Lambda Managed Instances: an extension gets no INVOKE events there, the runtime runs one
//! process per concurrent request, and `platform.report` carries no memory figure. So a
//! request id becomes real when `platform.start` names it, every runtime process keeps its own
//! history ([`ProcessAnalyses`]), and the environment's memory is read from `/proc`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::Agent;
use crate::analysis::processes::{ProcessAnalyses, MAX_PROCESSES};
use crate::invocation::{InvocationProfile, SourceEvent};
use crate::metrics::{Datum, Metric};
use crate::sources::procfs;
use crate::sources::telemetry::TelemetryEvent;

/// The environment's memory is read at most this often (a scan of `/proc`).
const MEMORY_EVERY: Duration = Duration::from_secs(1);

/// What the agent keeps on Lambda Managed Instances.
pub(super) struct Managed {
    /// One history per runtime process.
    pub(super) analyses: ProcessAnalyses,
    /// Runtime processes named by records that joined an invocation, bounded.
    workers: BTreeSet<u32>,
    memory_read_at: Option<Instant>,
    memory_mb: Option<u32>,
}

impl Managed {
    pub(super) fn new(analyses: ProcessAnalyses, memory_mb: Option<u32>) -> Self {
        Managed {
            analyses,
            workers: BTreeSet::new(),
            memory_read_at: None,
            memory_mb,
        }
    }

    /// A record of process `pid` joined an invocation. Beyond the bound it is not kept: the
    /// exited workers are dropped at each reading.
    pub(super) fn note_worker(&mut self, pid: u32) {
        if self.workers.len() < MAX_PROCESSES || self.workers.contains(&pid) {
            self.workers.insert(pid);
        }
    }

    /// The environment's memory (`EnvironmentMemory`, `MemorySize`, `MemoryUtilization`),
    /// when a second has passed since the last reading.
    pub(super) fn memory_datums(&mut self, now: Instant, timestamp_ms: u64) -> Vec<Datum> {
        if self
            .memory_read_at
            .is_some_and(|t| now.saturating_duration_since(t) < MEMORY_EVERY)
        {
            return Vec::new();
        }
        self.memory_read_at = Some(now);
        // A worker that exited is forgotten before its pid can be another process's.
        self.workers.retain(|p| procfs::alive(*p));
        let workers: Vec<u32> = self.workers.iter().copied().collect();
        let Some(memory) = procfs::runtime_tree_memory(&workers) else {
            return Vec::new();
        };
        let mb = memory.bytes as f64 / (1024.0 * 1024.0);
        let at = |metric, value| Datum {
            metric,
            value,
            timestamp_ms,
        };
        let mut out = vec![at(Metric::EnvironmentMemory, mb)];
        if let Some(size) = self.memory_mb.filter(|s| *s > 0) {
            out.push(at(Metric::MemorySize, f64::from(size)));
            out.push(at(Metric::MemoryUtilization, mb / f64::from(size) * 100.0));
        }
        out
    }
}

impl Agent {
    /// On Managed Instances `platform.start` stands in for the INVOKE event: it is what makes
    /// a request id real for the join (telemetry comes from the platform, records from any
    /// process that can send a datagram).
    pub(super) fn start_of_managed_invocation(
        &mut self,
        ev: &SourceEvent,
    ) -> Vec<InvocationProfile> {
        let SourceEvent::Telemetry(TelemetryEvent::Start { request_id }) = ev else {
            return Vec::new();
        };
        if self.managed.is_none() {
            return Vec::new();
        }
        self.current_invocations.started(request_id);
        self.join
            .on_invoke(request_id, Instant::now(), crate::epoch_ms())
    }
}
