//! What the platform can produce: every figure a source delivers is checked against it before
//! the join, and one outside it is dropped (the rest of its record kept) and counted.
//!
//! A datagram is easy to forge from the function's own code, and a bug can send anything; a
//! figure no runtime can produce (a duration of 1e308 ms, an RSS of 1.8e19 bytes, a negative
//! growth of 9e18) must never become a metric, nor an out-of-memory verdict, nor a
//! recommendation of 10,240 MB.

use crate::invocation::SourceEvent;
use crate::sources::intake::DecoratorRecord;
use crate::sources::procfs::ProcMemory;
use crate::sources::telemetry::{Report, RuntimeDone, TelemetryEvent};

const MIB: u64 = 1024 * 1024;
/// Lambda's largest memory size.
pub const MAX_MEMORY_MB: u32 = 10_240;
/// Lambda's longest timeout, and so the longest invocation or init phase.
pub const MAX_DURATION_MS: f64 = 900_000.0;
/// Smallest Python object: a count of live objects cannot exceed the memory over this.
const MIN_OBJECT_BYTES: u64 = 16;
/// Linux's largest `pid_max`.
const MAX_PID: u32 = 4_194_304;
/// Epoch milliseconds after which a start time is not plausible (the year 2286).
const MAX_EPOCH_MS: f64 = 1e13;
/// Bytes requested from the Python allocator during one invocation (a cumulative count, freed
/// memory included, so not bounded by the memory size): 1 PiB, far above what 900 s of
/// allocation can request.
pub const MAX_ALLOCATED_BYTES: u64 = 1 << 50;
/// The native sampler's mean sampling interval: 1 byte to 1 GiB.
pub const MAX_SAMPLE_BYTES: u64 = 1 << 30;

/// The bounds of one execution environment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The configured memory size (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`), else Lambda's largest:
    /// no process of the environment can hold more.
    pub memory_mb: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: MAX_MEMORY_MB,
        }
    }
}

impl Limits {
    /// Limits for a function of `memory_mb` (bounded to what Lambda allows).
    pub fn for_memory(memory_mb: Option<u32>) -> Self {
        Self {
            memory_mb: memory_mb.map_or(MAX_MEMORY_MB, |m| m.clamp(1, MAX_MEMORY_MB)),
        }
    }

    fn max_bytes(&self) -> u64 {
        u64::from(self.memory_mb) * MIB
    }

    /// Drops every figure of the event outside the limits; returns how many it dropped.
    pub fn sanitize(&self, event: &mut SourceEvent) -> u64 {
        let mut dropped = 0;
        match event {
            SourceEvent::Decorator { record, proc_mem } => {
                self.record(record, &mut dropped);
                if let Some(m) = proc_mem {
                    self.proc_memory(m, &mut dropped);
                }
            }
            SourceEvent::DecoratorHello { pid, .. } => {
                keep(pid, |p| (1..=MAX_PID).contains(p), &mut dropped);
            }
            SourceEvent::Telemetry(TelemetryEvent::Report(r)) => self.report(r, &mut dropped),
            SourceEvent::Telemetry(TelemetryEvent::RuntimeDone(r)) => {
                self.runtime_done(r, &mut dropped)
            }
            SourceEvent::Telemetry(_) => {}
        }
        dropped
    }

    fn record(&self, r: &mut DecoratorRecord, dropped: &mut u64) {
        let max_bytes = self.max_bytes();
        let max_count = max_bytes / MIN_OBJECT_BYTES;
        let bytes = |b: &u64| *b <= max_bytes;
        let count = |c: &u64| *c <= max_count;
        keep(&mut r.pid, |p| (1..=MAX_PID).contains(p), dropped);
        keep(
            &mut r.start_ms,
            |t| (0.0..=MAX_EPOCH_MS).contains(t),
            dropped,
        );
        keep(&mut r.duration_ms, duration, dropped);
        keep(&mut r.rss_peak_bytes, bytes, dropped);
        keep(&mut r.anon_bytes, bytes, dropped);
        keep(&mut r.heap_blocks, count, dropped);
        if let Some(gc) = r.gc.as_mut() {
            keep(&mut gc.collections, count, dropped);
            keep(&mut gc.collected, count, dropped);
            keep(&mut gc.uncollectable, count, dropped);
            keep(&mut gc.garbage, count, dropped);
        }
        if let Some(t) = r.trace.as_mut() {
            keep(&mut t.peak_bytes, bytes, dropped);
            keep(&mut t.retained_bytes, bytes, dropped);
            keep(&mut t.retained_blocks, count, dropped);
            keep(
                &mut t.growth_bytes,
                |g| g.unsigned_abs() <= max_bytes,
                dropped,
            );
            let before = t.top.len();
            t.top
                .retain(|s| s.size <= max_bytes && s.count <= max_count);
            *dropped += (before - t.top.len()) as u64;
        }
        if let Some(h) = r.heap.as_mut() {
            keep(&mut h.live_bytes, bytes, dropped);
            keep(
                &mut h.allocated_bytes,
                |b| *b <= MAX_ALLOCATED_BYTES,
                dropped,
            );
            keep(
                &mut h.sample_bytes,
                |b| (1..=MAX_SAMPLE_BYTES).contains(b),
                dropped,
            );
            keep(&mut h.samples, count, dropped);
            // Cumulative since the process started: bounded like a cumulative allocation count.
            keep(&mut h.dropped, |c| *c <= MAX_ALLOCATED_BYTES, dropped);
            keep(&mut h.sites_truncated, count, dropped);
            let before = h.sites.len();
            h.sites.retain(|s| {
                s.delta_bytes.unsigned_abs() <= max_bytes
                    && s.live_bytes.is_none_or(|b| b <= max_bytes)
            });
            *dropped += (before - h.sites.len()) as u64;
        }
    }

    fn proc_memory(&self, m: &mut ProcMemory, dropped: &mut u64) {
        let max = self.max_bytes();
        keep(&mut m.rss, |b| *b <= max, dropped);
        keep(&mut m.hwm, |b| *b <= max, dropped);
        keep(&mut m.anon, |b| *b <= max, dropped);
    }

    fn report(&self, r: &mut Report, dropped: &mut u64) {
        let memory = |mb: &f64| (0.0..=f64::from(MAX_MEMORY_MB)).contains(mb);
        keep(&mut r.duration_ms, duration, dropped);
        keep(&mut r.billed_duration_ms, duration, dropped);
        keep(&mut r.init_duration_ms, duration, dropped);
        keep(&mut r.restore_duration_ms, duration, dropped);
        keep(
            &mut r.memory_size_mb,
            |mb| memory(mb) && *mb >= 1.0,
            dropped,
        );
        keep(&mut r.max_memory_used_mb, memory, dropped);
        // The platform caps the mark at the size: above it, one of the two is false.
        if let (Some(used), Some(size)) = (r.max_memory_used_mb, r.memory_size_mb) {
            if used > size {
                r.max_memory_used_mb = None;
                *dropped += 1;
            }
        }
    }

    fn runtime_done(&self, r: &mut RuntimeDone, dropped: &mut u64) {
        keep(&mut r.duration_ms, duration, dropped);
    }
}

fn duration(ms: &f64) -> bool {
    (0.0..=MAX_DURATION_MS).contains(ms)
}

/// Clears `value` (counting it) unless it passes `ok`.
fn keep<T>(value: &mut Option<T>, ok: impl Fn(&T) -> bool, dropped: &mut u64) {
    if value.as_ref().is_some_and(|v| !ok(v)) {
        *value = None;
        *dropped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::intake::{GcStats, Heap, HeapSite, TopSite, Trace};

    fn forged() -> SourceEvent {
        SourceEvent::Decorator {
            record: Box::new(DecoratorRecord {
                request_id: "r".into(),
                pid: Some(0),
                start_ms: Some(f64::MAX),
                duration_ms: Some(1e308),
                rss_peak_bytes: Some(18_000_000_000_000_000_000),
                anon_bytes: Some(60 * MIB),
                heap_blocks: Some(u64::MAX),
                gc: Some(GcStats {
                    collections: Some(2),
                    ..Default::default()
                }),
                trace: Some(Trace {
                    growth_bytes: Some(-9_200_000_000_000_000_000),
                    peak_bytes: Some(1024),
                    top: vec![
                        TopSite {
                            size: u64::MAX,
                            ..Default::default()
                        },
                        TopSite {
                            file: "app.py".into(),
                            size: 100,
                            count: 1,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            proc_mem: Some(ProcMemory {
                rss: Some(u64::MAX),
                hwm: Some(70 * MIB),
                anon: Some(50 * MIB),
            }),
        }
    }

    #[test]
    fn impossible_figures_are_dropped_and_the_rest_kept() {
        let mut ev = forged();
        let dropped = Limits::for_memory(Some(1024)).sanitize(&mut ev);
        let SourceEvent::Decorator { record, proc_mem } = ev else {
            panic!()
        };
        assert_eq!(dropped, 8);
        assert_eq!(record.pid, None);
        assert_eq!(record.start_ms, None);
        assert_eq!(record.duration_ms, None);
        assert_eq!(record.rss_peak_bytes, None);
        assert_eq!(record.heap_blocks, None);
        assert_eq!(record.anon_bytes, Some(60 * MIB), "kept");
        assert_eq!(record.gc.unwrap().collections, Some(2), "kept");
        let trace = record.trace.unwrap();
        assert_eq!(trace.growth_bytes, None);
        assert_eq!(trace.peak_bytes, Some(1024));
        assert_eq!(trace.top.len(), 1);
        let proc_mem = proc_mem.unwrap();
        assert_eq!((proc_mem.rss, proc_mem.hwm), (None, Some(70 * MIB)));
    }

    #[test]
    fn memory_above_the_configured_size_is_impossible() {
        let mut ev = SourceEvent::Decorator {
            record: Box::new(DecoratorRecord {
                rss_peak_bytes: Some(300 * MIB),
                ..Default::default()
            }),
            proc_mem: None,
        };
        assert_eq!(Limits::for_memory(Some(256)).sanitize(&mut ev), 1);
        assert_eq!(
            Limits::for_memory(Some(512)).sanitize(&mut forged_rss(300)),
            0
        );
    }

    fn forged_rss(mib: u64) -> SourceEvent {
        SourceEvent::Decorator {
            record: Box::new(DecoratorRecord {
                rss_peak_bytes: Some(mib * MIB),
                ..Default::default()
            }),
            proc_mem: None,
        }
    }

    fn with_heap(heap: Heap) -> SourceEvent {
        SourceEvent::Decorator {
            record: Box::new(DecoratorRecord {
                heap: Some(heap),
                ..Default::default()
            }),
            proc_mem: None,
        }
    }

    fn heap_of(ev: SourceEvent) -> Heap {
        let SourceEvent::Decorator { record, .. } = ev else {
            panic!()
        };
        record.heap.expect("the object is kept")
    }

    fn site(file: &str, delta_bytes: i64, live_bytes: Option<u64>) -> HeapSite {
        HeapSite {
            file: file.into(),
            line: 1,
            delta_bytes,
            live_bytes,
            ..Default::default()
        }
    }

    #[test]
    fn heap_figures_outside_the_platform_are_cut() {
        let limits = Limits::for_memory(Some(1024));
        let mut ev = with_heap(Heap {
            live_bytes: Some(1025 * MIB),
            allocated_bytes: Some(MAX_ALLOCATED_BYTES + 1),
            sample_bytes: Some(0),
            samples: Some(u64::MAX),
            dropped: Some(u64::MAX),
            epoch: Some(u64::MAX),
            sites: vec![
                site("over.py", 1025 * MIB as i64, None),
                site("under.py", -(1025 * MIB as i64), None),
                site("live.py", 10, Some(2048 * MIB)),
                site("ok.py", -4096, Some(MIB)),
            ],
            sites_truncated: Some(u64::MAX),
        });
        assert_eq!(limits.sanitize(&mut ev), 9);
        let h = heap_of(ev);
        assert_eq!(
            (h.live_bytes, h.allocated_bytes, h.sample_bytes),
            (None, None, None)
        );
        assert_eq!(
            (h.samples, h.dropped, h.sites_truncated),
            (None, None, None)
        );
        assert_eq!(h.epoch, Some(u64::MAX), "any epoch is possible");
        assert_eq!(h.sites, vec![site("ok.py", -4096, Some(MIB))]);
    }

    #[test]
    fn allocation_over_an_invocation_may_exceed_the_memory() {
        // 128 MB function, 40 GB requested (and freed) during one long invocation.
        let mut ev = with_heap(Heap {
            live_bytes: Some(128 * MIB),
            allocated_bytes: Some(40 << 30),
            sample_bytes: Some(MAX_SAMPLE_BYTES),
            samples: Some(812),
            dropped: Some(1 << 40),
            sites: vec![site("a.py", -(128 * MIB as i64), Some(0))],
            ..Default::default()
        });
        let before = ev.clone();
        assert_eq!(Limits::for_memory(Some(128)).sanitize(&mut ev), 0);
        assert_eq!(ev, before);
        let mut ev = with_heap(Heap {
            allocated_bytes: Some(MAX_ALLOCATED_BYTES),
            sample_bytes: Some(1),
            ..Default::default()
        });
        assert_eq!(Limits::for_memory(Some(128)).sanitize(&mut ev), 0);
        let mut ev = with_heap(Heap {
            sample_bytes: Some(MAX_SAMPLE_BYTES + 1),
            ..Default::default()
        });
        assert_eq!(Limits::for_memory(Some(128)).sanitize(&mut ev), 1);
    }

    #[test]
    fn reports_outside_the_platform_are_cut() {
        let mut ev = SourceEvent::Telemetry(TelemetryEvent::Report(Report {
            request_id: "r".into(),
            duration_ms: Some(-1.0),
            billed_duration_ms: Some(f64::INFINITY),
            memory_size_mb: Some(128.0),
            max_memory_used_mb: Some(200.0),
            init_duration_ms: Some(250.0),
            ..Default::default()
        }));
        assert_eq!(Limits::default().sanitize(&mut ev), 3);
        let SourceEvent::Telemetry(TelemetryEvent::Report(r)) = ev else {
            panic!()
        };
        assert_eq!(
            (r.duration_ms, r.billed_duration_ms, r.max_memory_used_mb),
            (None, None, None)
        );
        assert_eq!(
            (r.memory_size_mb, r.init_duration_ms),
            (Some(128.0), Some(250.0))
        );
    }

    #[test]
    fn true_figures_pass_untouched() {
        let mut ev = SourceEvent::Telemetry(TelemetryEvent::Report(Report {
            request_id: "r".into(),
            duration_ms: Some(12.5),
            billed_duration_ms: Some(13.0),
            memory_size_mb: Some(10_240.0),
            max_memory_used_mb: Some(10_240.0),
            ..Default::default()
        }));
        let before = ev.clone();
        assert_eq!(Limits::default().sanitize(&mut ev), 0);
        assert_eq!(ev, before);
    }
}
