//! What the sources deliver, as the agent takes it in: figures outside the platform's limits
//! dropped (counted), the decorator's presence and sink arguments noted, then joined; completed
//! profiles analysed and handed to the sink worker.

use std::time::Instant;

use super::Agent;
use crate::analysis::environment::EnvironmentAnalysis;
use crate::epoch_ms;
use crate::invocation::{InvocationProfile, SourceEvent};
use crate::metrics::{self, Dimensions};
use crate::presence::Change;
use crate::sinks::{self, Command, SinkSettings};
use crate::sources::telemetry::TelemetryEvent;
use crate::stats::Counters;

impl Agent {
    /// One event from a source: its impossible figures dropped (counted), then joined.
    pub(super) fn accept(&mut self, mut ev: SourceEvent) -> Vec<InvocationProfile> {
        let cut = self.limits.sanitize(&mut ev);
        if cut > 0 {
            Counters::add(&self.counters.values_out_of_range, cut);
        }
        self.note_runtime_pid(&ev);
        let mut done = self.start_of_managed_invocation(&ev);
        match &ev {
            SourceEvent::Decorator { .. } => {
                if let Some(Change::CameBack) = self.presence.on_record() {
                    tracing::info!("decorator records again: waiting for them");
                }
            }
            SourceEvent::DecoratorHello { sink, .. } => {
                self.presence.on_hello();
                if let Some(s) = sink {
                    self.take_decorator_sink(s.clone());
                }
            }
            SourceEvent::Telemetry(TelemetryEvent::RestoreStart) => self.on_restore(),
            SourceEvent::Telemetry(_) => {}
        }
        done.extend(self.join.on_event(ev, Instant::now(), epoch_ms()));
        done
    }

    /// A SnapStart copy begins its life: what the analysis holds came before the snapshot,
    /// which every copy restored from it shares, so this copy's memory history starts now.
    fn on_restore(&mut self) {
        let cfg = &self.cfg;
        self.analysis = EnvironmentAnalysis::new(
            cfg.leak.clone(),
            cfg.rightsize.clone(),
            cfg.lambda.memory_mb,
        );
        tracing::info!("restored from a snapshot: a new memory history for this copy");
    }

    /// The decorator's own sink arguments, from its hello: the first that asks for anything is
    /// applied (the decorator's argument wins over `LMP_*`, as in the decorator); a later hello
    /// asking for something else is logged once and ignored.
    fn take_decorator_sink(&mut self, s: SinkSettings) {
        if !s.rejected.is_empty() && !std::mem::replace(&mut self.sink_warned, true) {
            tracing::warn!(rejected = ?s.rejected, "decorator sink arguments ignored; keeping the extension's values");
        }
        if s.is_empty() {
            return;
        }
        match &self.decorator_sink {
            None => {}
            Some(applied)
                if applied.namespace == s.namespace
                    && applied.function_version == s.function_version
                    && applied.storage_resolution == s.storage_resolution =>
            {
                return
            }
            Some(_) => {
                if !std::mem::replace(&mut self.sink_warned, true) {
                    tracing::warn!(asked = ?s, kept = ?self.destination, "another decorated handler asks for other sink settings; keeping the first");
                }
                return;
            }
        }
        let mut to = self.destination.clone();
        if let Some(ns) = &s.namespace {
            to.namespace = ns.clone();
        }
        if let Some(v) = s.function_version {
            let set = crate::config::DimensionSet {
                function_version: v,
            };
            to.dims = Dimensions::new(set, &self.function_name, &self.function_version);
        }
        if let Some(r) = s.storage_resolution {
            to.storage_resolution = r;
        }
        tracing::info!(namespace = %to.namespace, dimensions = ?to.dims.0, storage_resolution = to.storage_resolution.seconds(), "sink settings from the decorator's arguments");
        // A watch, not the command queue: the worker reads it before its next flush, so the
        // change cannot be lost to a full queue.
        self.destination_tx.send_replace(to.clone());
        self.destination = to;
        self.decorator_sink = Some(s);
    }

    fn note_runtime_pid(&mut self, ev: &SourceEvent) {
        if self.managed.is_some() {
            // Each worker says hello: they are all the runtime. A pid counts once its record
            // joined an invocation (see `publish`): anything can send a hello.
            return;
        }
        // A record's pid counts once it joined an invocation (see `publish`): anything can
        // send a datagram with an invented one.
        let pid = match ev {
            SourceEvent::DecoratorHello { pid, .. } => *pid,
            SourceEvent::Decorator { .. } | SourceEvent::Telemetry(_) => None,
        };
        // A child process that re-imports the handler's module (spawn, forkserver) says hello
        // too: it takes over only from a runtime that is gone.
        if pid.is_some() && (self.runtime_pid.is_none() || self.runtime_gone()) {
            self.runtime_pid = pid;
        }
    }

    /// The decorator's process no longer exists (killed, crashed): its record will not come.
    pub(super) fn runtime_gone(&self) -> bool {
        self.runtime_pid
            .is_some_and(|pid| !crate::sources::procfs::alive(pid))
    }

    pub(super) async fn publish(&mut self, profiles: Vec<InvocationProfile>) {
        let evicted = self.join.stats.evicted;
        if evicted > self.evicted_seen {
            Counters::add(&self.counters.profiles_evicted, evicted - self.evicted_seen);
            self.evicted_seen = evicted;
        }
        let untrusted = self.join.stats.untrusted;
        if untrusted > self.untrusted_seen {
            Counters::add(
                &self.counters.records_untrusted,
                untrusted - self.untrusted_seen,
            );
            self.untrusted_seen = untrusted;
        }
        if profiles.is_empty() {
            return;
        }
        let mut datums = Vec::new();
        for p in &profiles {
            if let Some(pid) = p.decorator.as_deref().and_then(|d| d.pid) {
                match self.managed.as_mut() {
                    Some(m) => m.note_worker(pid),
                    None => self.runtime_pid = Some(pid),
                }
            }
            if let Some(line) = metrics::top_sites_line(p, &self.function_name) {
                sinks::print_line(&line);
            }
            if p.partial {
                tracing::debug!(request_id = %p.request_id, "publishing a partial profile");
            }
            datums.extend(metrics::profile_datums(p));
            let findings = match self.managed.as_mut() {
                Some(m) => m.analyses.observe(p, &self.function_name),
                None => self.analysis.observe(p, &self.function_name),
            };
            for line in &findings.log_lines {
                sinks::print_line(line);
            }
            datums.extend(metrics::findings_datums(&findings));
        }
        if let Some(m) = self.managed.as_mut() {
            datums.extend(m.memory_datums(Instant::now(), epoch_ms()));
        }
        let values = datums.len() as u64;
        if self.sink_tx.try_send(Command::Data(datums)).is_err() {
            // Counted as values, like every other loss of metric data.
            Counters::add(&self.counters.values_offered, values);
            Counters::add(&self.counters.datums_dropped, values);
        }
    }
}
