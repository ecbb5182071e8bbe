//! What the join takes in and gives out: the sources' typed events, and the profile of one
//! invocation that they become.

use crate::sources::intake::DecoratorRecord;
use crate::sources::procfs::ProcMemory;
use crate::sources::telemetry::{Report, RuntimeDone, TelemetryEvent};

/// A typed event from one of the sources, as it enters the join.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// A record of a Telemetry API batch (`platform.*`) the listener parsed.
    Telemetry(TelemetryEvent),
    /// The decorator's invocation record, with the runtime's `/proc` figures read when it arrived.
    Decorator {
        /// The `invocation` datagram, parsed.
        record: Box<DecoratorRecord>,
        /// `/proc/<pid>/status` of the record's `pid`, read on arrival; `None` when the record
        /// has no pid, the file could not be read, or the read was skipped (id no INVOKE named).
        proc_mem: Option<ProcMemory>,
    },
    /// The decorator announced itself: from now on its record is expected for every invocation.
    DecoratorHello {
        /// The `hello`'s `pid`: the runtime process the extension watches.
        pid: Option<u32>,
        /// The sink arguments given to `@memory_profile` in code, if any.
        sink: Option<crate::sinks::SinkSettings>,
    },
}

/// Everything known about one invocation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InvocationProfile {
    /// The request id an INVOKE event of the Extensions API named (the join key).
    pub request_id: String,
    /// Published without every expected part (timed out, evicted, or cut short by SHUTDOWN).
    pub partial: bool,
    /// Epoch milliseconds when the invocation was first seen.
    pub timestamp_ms: u64,
    /// The first invocation this extension saw in its environment.
    pub first_in_environment: bool,
    /// The invocation's `platform.report`; `None` until it arrives, or without the Telemetry API.
    pub report: Option<Report>,
    /// The invocation's `platform.runtimeDone`; `None` until it arrives, or without telemetry.
    pub runtime_done: Option<RuntimeDone>,
    /// The decorator's `invocation` record; `None` when it sent none (or not yet).
    pub decorator: Option<Box<DecoratorRecord>>,
    /// The runtime process's `/proc` figures when its record arrived.
    pub runtime_proc: Option<ProcMemory>,
}

impl InvocationProfile {
    pub(super) fn has_data(&self) -> bool {
        self.report.is_some() || self.decorator.is_some() || self.runtime_done.is_some()
    }
}
