//! The join: every source's events for one request id become one [`InvocationProfile`].
//!
//! Pure (no I/O, time passed in), so every timing case is unit-tested. `platform.report` for
//! invocation N arrives only after the extension called `/next` for N, i.e. during N+1 or at
//! SHUTDOWN; the table holds profiles until their parts arrive, bounded by `max_pending`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

mod profile;

pub use profile::{InvocationProfile, SourceEvent};

use crate::sources::telemetry::TelemetryEvent;

/// Bounds of the join table.
#[derive(Debug, Clone, Copy)]
pub struct JoinConfig {
    /// Most profiles held at once (`LMP_MAX_PENDING`); when full, the oldest is published
    /// early. 0 counts as 1.
    pub max_pending: usize,
    /// Minimum wait of an incomplete profile; it also needs two later invocations to have started.
    pub pending_timeout: Duration,
    /// Events held until their request id is named ([`DEFAULT_MAX_PARKED`] where one
    /// invocation runs at a time); beyond it the oldest is dropped, counted as untrusted.
    pub max_parked: usize,
    /// Invocations run concurrently (Lambda Managed Instances): later starts say nothing about
    /// whether one finished, so an incomplete profile waits `pending_timeout` after its last
    /// part arrived, and one with no part yet only leaves the table full or at SHUTDOWN.
    pub concurrent: bool,
}

/// Events waiting for their INVOKE at most, where one invocation runs at a time; beyond it the
/// oldest is dropped (and counted), so records with invented request ids can never fill the
/// join table.
pub const DEFAULT_MAX_PARKED: usize = 16;

/// Counts of what left the table without being complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinStats {
    /// Profiles published with every expected part.
    pub completed: u64,
    /// Incomplete profiles that left after their wait ran out, or at SHUTDOWN (published
    /// partial, unless they had no data: see `discarded_empty`).
    pub expired: u64,
    /// Profiles pushed out (published partial) because the table was full.
    pub evicted: u64,
    /// Entries with no data at all that expired (nothing to publish).
    pub discarded_empty: u64,
    /// Events for a request id that no INVOKE event named: never joined, never published.
    pub untrusted: u64,
}

/// A profile in the table, waiting for its parts.
struct Pending {
    profile: InvocationProfile,
    /// When its entry was created (for `pending_timeout`).
    created: Instant,
    /// INVOKE events seen when it was created (for [`LATER_INVOKES`]).
    created_seq: u64,
    /// When an event about it last arrived (for `pending_timeout` on a concurrent platform).
    touched: Instant,
}

/// An event whose request id no INVOKE event has named yet. The decorator's record can overtake
/// its INVOKE in the extension's own loop (both arrive at once for a fast handler), so it waits
/// here; one that no INVOKE claims in time was not a real invocation's.
struct Parked {
    event: SourceEvent,
    created: Instant,
    created_seq: u64,
}

/// The join table.
pub struct Join {
    cfg: JoinConfig,
    pending: VecDeque<Pending>,
    /// Ids already published, so a straggler (a late report) does not publish twice.
    recent: VecDeque<String>,
    /// Ids the Extensions API named in INVOKE events, newest last (bounded).
    invoked: VecDeque<String>,
    parked: VecDeque<Parked>,
    /// INVOKE events seen so far.
    invoke_seq: u64,
    telemetry_active: bool,
    decorator_seen: bool,
    /// What left the table and how, since it was created.
    pub stats: JoinStats,
}

/// Number of "invocations later" an incomplete profile must wait: its report normally arrives
/// during the next one.
const LATER_INVOKES: u64 = 2;

impl Join {
    /// An empty table; telemetry is assumed active until [`Join::set_telemetry_active`] says not.
    pub fn new(cfg: JoinConfig) -> Self {
        Join {
            cfg: JoinConfig {
                max_pending: cfg.max_pending.max(1),
                ..cfg
            },
            pending: VecDeque::new(),
            recent: VecDeque::new(),
            invoked: VecDeque::new(),
            parked: VecDeque::new(),
            invoke_seq: 0,
            telemetry_active: true,
            decorator_seen: false,
            stats: JoinStats::default(),
        }
    }

    /// Telemetry was refused or stubbed: complete profiles on the decorator's data alone.
    pub fn set_telemetry_active(&mut self, active: bool) -> Vec<InvocationProfile> {
        self.telemetry_active = active;
        self.take_complete()
    }

    /// The decorator's records stopped coming (`presence` learned it): complete profiles without
    /// them from now on, until a record arrives again.
    pub fn decorator_went_silent(&mut self) -> Vec<InvocationProfile> {
        self.decorator_seen = false;
        self.take_complete()
    }

    /// True once any decorator record (or hello) arrived.
    pub fn decorator_seen(&self) -> bool {
        self.decorator_seen
    }

    /// False while the Telemetry API is refused or stubbed: profiles complete without a
    /// `platform.report`.
    pub fn telemetry_active(&self) -> bool {
        self.telemetry_active
    }

    /// Profiles held, waiting for their parts.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// True while some pending profile still waits for its `platform.report`.
    pub fn awaiting_reports(&self) -> bool {
        self.telemetry_active && self.pending.iter().any(|p| p.profile.report.is_none())
    }

    /// True once the runtime finished this invocation (decorator record or `runtimeDone` seen).
    pub fn finished(&self, request_id: &str) -> bool {
        self.recent.iter().any(|r| r == request_id)
            || self.pending.iter().any(|p| {
                p.profile.request_id == request_id
                    && (p.profile.decorator.is_some() || p.profile.runtime_done.is_some())
            })
    }

    /// An INVOKE event from the Extensions API: the only source that makes a request id real.
    pub fn on_invoke(
        &mut self,
        request_id: &str,
        now: Instant,
        epoch_ms: u64,
    ) -> Vec<InvocationProfile> {
        self.invoke_seq += 1;
        if self.invoked.len() >= 2 * self.cfg.max_pending {
            self.invoked.pop_front();
        }
        self.invoked.push_back(request_id.to_string());
        let mut out = Vec::new();
        if let Some(i) = self.entry(request_id, now, epoch_ms, &mut out) {
            if self.invoke_seq == 1 {
                self.pending[i].profile.first_in_environment = true;
            }
        }
        // Events that arrived before their INVOKE.
        let mut i = 0;
        while i < self.parked.len() {
            if event_request_id(&self.parked[i].event) == Some(request_id) {
                if let Some(p) = self.parked.remove(i) {
                    self.apply(p.event, now, epoch_ms, &mut out);
                }
            } else {
                i += 1;
            }
        }
        out.extend(self.take_complete());
        out.extend(self.sweep(now));
        out
    }

    /// An event from telemetry or the intake. One for a request id no INVOKE named waits (a
    /// little) for its INVOKE; one for an id already published is a straggler and ignored.
    pub fn on_event(
        &mut self,
        ev: SourceEvent,
        now: Instant,
        epoch_ms: u64,
    ) -> Vec<InvocationProfile> {
        let mut out = Vec::new();
        match event_request_id(&ev) {
            Some(id) if !id.is_empty() && !self.is_invoked(id) && !self.is_published(id) => {
                if self.parked.len() >= self.cfg.max_parked.max(1) {
                    self.parked.pop_front();
                    self.stats.untrusted += 1;
                }
                self.parked.push_back(Parked {
                    event: ev,
                    created: now,
                    created_seq: self.invoke_seq,
                });
            }
            _ => self.apply(ev, now, epoch_ms, &mut out),
        }
        out.extend(self.take_complete());
        out
    }

    /// True when an INVOKE event (among the last `2 × max_pending`) named `request_id`.
    fn is_invoked(&self, request_id: &str) -> bool {
        self.invoked.iter().rev().any(|r| r == request_id)
    }

    /// True when `request_id`'s profile was already published (among the last few).
    fn is_published(&self, request_id: &str) -> bool {
        self.recent.iter().rev().any(|r| r == request_id)
    }

    /// Puts an event's figures into its profile.
    fn apply(
        &mut self,
        ev: SourceEvent,
        now: Instant,
        epoch_ms: u64,
        out: &mut Vec<InvocationProfile>,
    ) {
        match ev {
            SourceEvent::DecoratorHello { .. } => self.decorator_seen = true,
            SourceEvent::Decorator { record, proc_mem } => {
                self.decorator_seen = true;
                let id = record.request_id.clone();
                if let Some(i) = self.entry(&id, now, epoch_ms, out) {
                    let p = &mut self.pending[i].profile;
                    p.decorator = Some(record);
                    p.runtime_proc = proc_mem;
                }
            }
            SourceEvent::Telemetry(TelemetryEvent::Report(r)) => {
                let id = r.request_id.clone();
                if let Some(i) = self.entry(&id, now, epoch_ms, out) {
                    self.pending[i].profile.report = Some(r);
                }
            }
            SourceEvent::Telemetry(TelemetryEvent::RuntimeDone(r)) => {
                let id = r.request_id.clone();
                if let Some(i) = self.entry(&id, now, epoch_ms, out) {
                    self.pending[i].profile.runtime_done = Some(r);
                }
            }
            SourceEvent::Telemetry(TelemetryEvent::Start { request_id }) => {
                self.entry(&request_id, now, epoch_ms, out);
            }
            SourceEvent::Telemetry(_) => {}
        }
    }

    /// Publishes incomplete profiles that waited long enough.
    pub fn sweep(&mut self, now: Instant) -> Vec<InvocationProfile> {
        let mut out = Vec::new();
        let before = self.parked.len();
        let (seq, timeout) = (self.invoke_seq, self.cfg.pending_timeout);
        self.parked.retain(|p| {
            seq.saturating_sub(p.created_seq) < LATER_INVOKES
                || now.saturating_duration_since(p.created) < timeout
        });
        self.stats.untrusted += (before - self.parked.len()) as u64;
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let expired = if self.cfg.concurrent {
                p.profile.has_data()
                    && now.saturating_duration_since(p.touched) >= self.cfg.pending_timeout
            } else {
                self.invoke_seq.saturating_sub(p.created_seq) >= LATER_INVOKES
                    && now.saturating_duration_since(p.created) >= self.cfg.pending_timeout
            };
            if expired {
                if let Some(p) = self.pending.remove(i) {
                    self.stats.expired += 1;
                    self.publish(p.profile, true, &mut out);
                }
            } else {
                i += 1;
            }
        }
        out
    }

    /// SHUTDOWN: everything left, incomplete ones flagged partial; events no INVOKE claimed are
    /// dropped (counted).
    pub fn drain(&mut self) -> Vec<InvocationProfile> {
        self.stats.untrusted += self.parked.len() as u64;
        self.parked.clear();
        let mut out = self.take_complete();
        while let Some(p) = self.pending.pop_front() {
            self.stats.expired += 1;
            self.publish(p.profile, true, &mut out);
        }
        out
    }

    fn is_complete(&self, p: &InvocationProfile) -> bool {
        let decorator_done = p.decorator.is_some() || !self.decorator_seen;
        let platform_done = p.report.is_some() || !self.telemetry_active;
        decorator_done && platform_done && p.has_data()
    }

    fn take_complete(&mut self) -> Vec<InvocationProfile> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if self.is_complete(&self.pending[i].profile) {
                if let Some(p) = self.pending.remove(i) {
                    self.stats.completed += 1;
                    self.publish(p.profile, false, &mut out);
                }
            } else {
                i += 1;
            }
        }
        out
    }

    fn publish(
        &mut self,
        mut p: InvocationProfile,
        partial: bool,
        out: &mut Vec<InvocationProfile>,
    ) {
        self.remember(&p.request_id);
        if !p.has_data() {
            self.stats.discarded_empty += 1;
            return;
        }
        p.partial = partial;
        out.push(p);
    }

    fn remember(&mut self, id: &str) {
        if self.recent.len() >= 2 * self.cfg.max_pending {
            self.recent.pop_front();
        }
        self.recent.push_back(id.to_string());
    }

    /// Index of the pending entry for `request_id`, created if needed (evicting the oldest when
    /// the table is full). `None` for an id already published or an empty id.
    fn entry(
        &mut self,
        request_id: &str,
        now: Instant,
        epoch_ms: u64,
        out: &mut Vec<InvocationProfile>,
    ) -> Option<usize> {
        if request_id.is_empty() || self.recent.iter().any(|r| r == request_id) {
            return None;
        }
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| p.profile.request_id == request_id)
        {
            self.pending[i].touched = now;
            return Some(i);
        }
        if self.pending.len() >= self.cfg.max_pending {
            if let Some(old) = self.pending.pop_front() {
                self.stats.evicted += 1;
                self.publish(old.profile, true, out);
            }
        }
        self.pending.push_back(Pending {
            profile: InvocationProfile {
                request_id: request_id.to_string(),
                timestamp_ms: epoch_ms,
                ..Default::default()
            },
            created: now,
            created_seq: self.invoke_seq,
            touched: now,
        });
        Some(self.pending.len() - 1)
    }
}

/// The request id an event is about, when it is about one.
fn event_request_id(ev: &SourceEvent) -> Option<&str> {
    match ev {
        SourceEvent::Decorator { record, .. } => Some(&record.request_id),
        SourceEvent::Telemetry(TelemetryEvent::Report(r)) => Some(&r.request_id),
        SourceEvent::Telemetry(TelemetryEvent::RuntimeDone(r)) => Some(&r.request_id),
        SourceEvent::Telemetry(TelemetryEvent::Start { request_id }) => Some(request_id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::intake::DecoratorRecord;
    use crate::sources::procfs::ProcMemory;
    use crate::sources::telemetry::{Report, RuntimeDone};

    fn cfg(max_pending: usize) -> JoinConfig {
        JoinConfig {
            max_parked: DEFAULT_MAX_PARKED,
            concurrent: false,
            max_pending,
            pending_timeout: Duration::from_millis(100),
        }
    }

    fn report(id: &str) -> SourceEvent {
        SourceEvent::Telemetry(TelemetryEvent::Report(Report {
            request_id: id.into(),
            status: Some("success".into()),
            duration_ms: Some(10.0),
            max_memory_used_mb: Some(70.0),
            memory_size_mb: Some(128.0),
            ..Default::default()
        }))
    }

    /// A decorator's hello, with nothing but its presence.
    fn hello() -> SourceEvent {
        SourceEvent::DecoratorHello {
            pid: None,
            sink: None,
        }
    }

    fn record(id: &str) -> SourceEvent {
        SourceEvent::Decorator {
            record: Box::new(DecoratorRecord {
                request_id: id.into(),
                pid: Some(8),
                ..Default::default()
            }),
            proc_mem: Some(ProcMemory {
                anon: None,
                rss: Some(1 << 20),
                hwm: Some(2 << 20),
            }),
        }
    }

    #[test]
    fn on_a_concurrent_platform_a_long_invocation_outlives_later_starts() {
        let t0 = Instant::now();
        let mut j = Join::new(JoinConfig {
            concurrent: true,
            ..cfg(64)
        });
        j.on_event(hello(), t0, 0);
        assert!(j.on_invoke("long", t0, 0).is_empty());
        // Many invocations start and finish while "long" still runs, for longer than the
        // pending timeout: it has no part yet, so it stays.
        let mut done = Vec::new();
        for i in 0..20u64 {
            let t = t0 + Duration::from_millis(50 * i);
            let id = format!("quick{i}");
            done.extend(j.on_invoke(&id, t, 0));
            done.extend(j.on_event(record(&id), t, 0));
            done.extend(j.on_event(report(&id), t, 0));
        }
        assert_eq!(done.len(), 20);
        assert!(done.iter().all(|p| !p.partial));
        let late = t0 + Duration::from_secs(5);
        assert!(j.on_invoke("next", late, 0).is_empty(), "nothing expired");
        let mut out = j.on_event(record("long"), late, 0);
        out.extend(j.on_event(report("long"), late, 0));
        assert_eq!(out.len(), 1);
        assert!(!out[0].partial && out[0].decorator.is_some() && out[0].report.is_some());
        // One part only: it waits the pending timeout after that part, then goes out partial.
        j.on_event(record("next"), late, 0);
        let later = late + Duration::from_millis(150);
        let out = j.on_invoke("after", later, 0);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].partial && out[0].request_id == "next");
    }

    #[test]
    fn report_arriving_during_the_next_invocation_completes_the_previous() {
        let t = Instant::now();
        let mut j = Join::new(cfg(8));
        assert!(j.on_invoke("a", t, 1000).is_empty());
        assert!(j
            .on_event(
                SourceEvent::DecoratorHello {
                    pid: None,
                    sink: None
                },
                t,
                1000
            )
            .is_empty());
        assert!(
            j.on_event(record("a"), t, 1000).is_empty(),
            "waits for the report"
        );
        assert!(j.finished("a"));
        assert!(j.on_invoke("b", t, 2000).is_empty());
        assert!(j.on_event(record("b"), t, 2000).is_empty());
        let out = j.on_event(report("a"), t, 2001);
        assert_eq!(out.len(), 1);
        let p = &out[0];
        assert_eq!(p.request_id, "a");
        assert!(!p.partial && p.first_in_environment);
        assert_eq!(p.timestamp_ms, 1000);
        assert!(p.report.is_some() && p.decorator.is_some());
        assert_eq!(p.runtime_proc.unwrap().hwm, Some(2 << 20));
        // SHUTDOWN: b's report arrives, then drain is empty.
        assert_eq!(j.on_event(report("b"), t, 3000).len(), 1);
        assert!(j.drain().is_empty());
        assert_eq!(j.stats.completed, 2);
    }

    #[test]
    fn undecorated_function_completes_on_the_report_alone() {
        let t = Instant::now();
        let mut j = Join::new(cfg(8));
        j.on_invoke("a", t, 0);
        let out = j.on_event(report("a"), t, 0);
        assert_eq!(out.len(), 1);
        assert!(!out[0].partial && out[0].decorator.is_none());
    }

    #[test]
    fn without_telemetry_the_decorator_record_completes() {
        let t = Instant::now();
        let mut j = Join::new(cfg(8));
        j.on_invoke("a", t, 0);
        assert!(j.on_event(record("a"), t, 0).is_empty());
        assert!(j.awaiting_reports());
        let out = j.set_telemetry_active(false);
        assert_eq!(out.len(), 1);
        assert!(!out[0].partial);
        assert!(!j.awaiting_reports());
        j.on_invoke("b", t, 0);
        assert_eq!(j.on_event(record("b"), t, 0).len(), 1);
    }

    #[test]
    fn missing_decorator_record_expires_as_partial_only_after_two_later_invokes() {
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(600);
        let mut j = Join::new(cfg(8));
        j.on_event(hello(), t0, 0);
        j.on_invoke("a", t0, 0);
        // The record for "a" was lost; its report arrives during "b".
        j.on_invoke("b", late, 0);
        assert!(j.on_event(report("a"), late, 0).is_empty());
        // A long freeze alone does not expire it: two later invocations are needed.
        assert!(j.sweep(late).is_empty());
        j.on_event(record("b"), late, 0);
        let out = j.on_invoke("c", late, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request_id, "a");
        assert!(out[0].partial && out[0].report.is_some());
        assert_eq!(j.stats.expired, 1);
        // A straggler for a published id does not publish again.
        assert!(j.on_event(record("a"), late, 0).is_empty());
        assert!(!j.finished("zzz"));
    }

    #[test]
    fn partial_waits_for_the_timeout_too() {
        let t0 = Instant::now();
        let mut j = Join::new(cfg(8));
        j.on_invoke("a", t0, 0);
        j.on_event(
            SourceEvent::Telemetry(TelemetryEvent::RuntimeDone(RuntimeDone {
                request_id: "a".into(),
                ..Default::default()
            })),
            t0,
            0,
        );
        j.on_invoke("b", t0, 0);
        assert!(j
            .on_invoke("c", t0 + Duration::from_millis(10), 0)
            .is_empty());
        let out = j.sweep(t0 + Duration::from_millis(100));
        assert_eq!(out.len(), 1);
        assert!(out[0].partial && out[0].runtime_done.is_some());
    }

    #[test]
    fn full_table_evicts_the_oldest_as_partial() {
        let t = Instant::now();
        let mut j = Join::new(cfg(2));
        j.on_event(hello(), t, 0);
        j.on_invoke("a", t, 0);
        j.on_event(record("a"), t, 0);
        j.on_invoke("b", t, 0);
        j.on_event(record("b"), t, 0);
        let out = j.on_invoke("c", t, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request_id, "a");
        assert!(out[0].partial);
        assert_eq!(j.stats.evicted, 1);
        assert_eq!(j.pending_len(), 2);
    }

    #[test]
    fn records_no_invoke_named_are_never_published_nor_push_real_ones_out() {
        let t = Instant::now();
        let mut j = Join::new(cfg(4));
        j.on_event(hello(), t, 0);
        let mut out = j.on_invoke("real-1", t, 0);
        for k in 0..1000 {
            out.extend(j.on_event(record(&format!("fake-{k}")), t, 0));
            out.extend(j.on_event(report(&format!("fake-{k}")), t, 0));
        }
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(j.pending_len(), 1, "only the real invocation waits");
        out.extend(j.on_event(record("real-1"), t, 0));
        out.extend(j.on_event(report("real-1"), t, 0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request_id, "real-1");
        assert!(!out[0].partial);
        let later = t + Duration::from_secs(1);
        j.on_invoke("real-2", later, 0);
        j.on_invoke("real-3", later, 0);
        j.drain();
        assert_eq!(j.stats.untrusted, 2000, "every fake event counted");
        assert_eq!(j.stats.evicted, 0);
    }

    #[test]
    fn a_record_that_overtakes_its_invoke_is_joined() {
        let t = Instant::now();
        let mut j = Join::new(cfg(4));
        j.on_event(hello(), t, 0);
        assert!(j.on_event(record("a"), t, 0).is_empty());
        assert!(j.on_event(report("a"), t, 0).is_empty());
        let out = j.on_invoke("a", t, 0);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].decorator.is_some() && out[0].report.is_some() && !out[0].partial);
        assert_eq!(j.stats.untrusted, 0);
    }

    #[test]
    fn drain_flags_incomplete_and_discards_empty() {
        let t = Instant::now();
        let mut j = Join::new(cfg(8));
        j.on_event(hello(), t, 0);
        j.on_invoke("a", t, 0);
        j.on_event(record("a"), t, 0);
        j.on_invoke("b", t, 0); // nothing ever arrived for b
        let out = j.drain();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request_id, "a");
        assert!(out[0].partial);
        assert_eq!(j.stats.discarded_empty, 1);
        assert_eq!(j.pending_len(), 0);
    }

    #[test]
    fn once_the_decorator_went_silent_profiles_complete_without_its_record() {
        let t = Instant::now();
        let mut j = Join::new(cfg(8));
        j.on_event(hello(), t, 0);
        j.on_invoke("a", t, 0);
        assert!(
            j.on_event(report("a"), t, 0).is_empty(),
            "waits for the record"
        );
        let done = j.decorator_went_silent();
        assert_eq!(done.len(), 1);
        assert!(!done[0].partial && done[0].decorator.is_none());
        // A record again: expected again.
        j.on_invoke("b", t, 0);
        j.on_event(record("b"), t, 0);
        j.on_invoke("c", t, 0);
        assert!(j.on_event(report("c"), t, 0).is_empty());
    }

    #[test]
    fn empty_request_ids_are_ignored() {
        let t = Instant::now();
        let mut j = Join::new(cfg(8));
        assert!(j.on_event(record(""), t, 0).is_empty());
        assert_eq!(j.pending_len(), 0);
    }
}
