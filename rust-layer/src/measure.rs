//! The measurement itself, shared by every clone of the layer: what an invocation's start
//! takes (clock, heap snapshot, RSS peak reset) and what its end turns into the record handed to
//! the extension (or printed as EMF when none listens).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::alloc::{self, HeapStats};
use crate::config::Config;
use crate::handoff::{EmfWriter, Sender};
use crate::procfs::{RssProbe, RssScope};
use crate::record::{HeapTrace, InvocationRecord, RUNTIME};
use lmp_protocol::{Kind, VERSION_1};

/// The error type `lambda_runtime` reports for a panicking handler.
pub(crate) fn panic_error_type() -> String {
    std::any::type_name::<&Box<dyn std::any::Any + Send>>().to_string()
}

/// First invocation of this process (the record's `cold_start`).
pub(crate) static COLD: AtomicBool = AtomicBool::new(true);

pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) out: Option<EmfWriter>,
    pub(crate) sender: Option<Sender>,
    pub(crate) probe: Option<RssProbe>,
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// A runtime-level service is measuring the current invocation.
    pub(crate) runtime_active: AtomicBool,
    /// The handler's error type, noted by a handler-level service for the runtime-level one.
    pub(crate) error_slot: Mutex<Option<String>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain counters: still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What was taken at an invocation's start.
#[derive(Debug)]
pub(crate) struct Begin {
    pub(crate) request_id: String,
    pub(crate) start: Instant,
    pub(crate) start_ms: f64,
    pub(crate) cold_start: bool,
    pub(crate) scope: RssScope,
    pub(crate) counted: bool,
    pub(crate) heap: HeapStats,
}

impl Shared {
    pub(crate) fn begin(&self, request_id: &str) -> Option<Begin> {
        // Everything that allocates comes before the heap snapshot.
        let request_id = request_id.to_owned();
        let scope = {
            let mut st = lock(&self.state);
            if st.config.disabled {
                return None;
            }
            if st.sender.is_none() {
                let out = st.out.take().unwrap_or_else(|| Box::new(std::io::stdout()));
                st.sender = Some(Sender::new(st.config.intake_port, out));
            }
            st.probe.get_or_insert_with(RssProbe::open).reset_peak()
        };
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        let cold_start = COLD.swap(false, Ordering::Relaxed);
        let counted = alloc::installed();
        alloc::reset_peak();
        let heap = alloc::stats();
        Some(Begin {
            request_id,
            start: Instant::now(),
            start_ms,
            cold_start,
            scope,
            counted,
            heap,
        })
    }

    pub(crate) fn end(&self, b: Begin, error_type: Option<String>) {
        let duration = b.start.elapsed();
        let heap = alloc::stats();
        let trace = b.counted.then(|| {
            let growth = heap.current_bytes as i64 - b.heap.current_bytes as i64;
            let delta = heap.live_blocks as i64 - b.heap.live_blocks as i64;
            HeapTrace {
                reason: "always",
                mode: "allocator",
                peak_bytes: heap.peak_bytes.saturating_sub(b.heap.current_bytes) as u64,
                retained_bytes: growth.max(0) as u64,
                retained_blocks: delta.max(0) as u64,
                growth_bytes: growth,
                heap_blocks_delta: delta,
                top: [],
                top_truncated: 0,
            }
        });
        let mut st = lock(&self.state);
        let rss = st.probe.as_ref().map(RssProbe::read).unwrap_or_default();
        let record = InvocationRecord {
            v: VERSION_1,
            kind: Kind::Invocation.as_str(),
            request_id: b.request_id,
            pid: std::process::id(),
            runtime: RUNTIME,
            start_ms: (b.start_ms * 10.0).round() / 10.0,
            duration_ms: (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            cold_start: b.cold_start,
            error_type,
            rss_bytes: rss.rss,
            rss_peak_bytes: rss.hwm,
            rss_peak_scope: b.scope.as_str(),
            heap_blocks: b.counted.then_some(heap.live_blocks as u64),
            gc: None,
            trace,
        };
        let st = &mut *st;
        if let Some(sender) = st.sender.as_mut() {
            sender.send(&record, &st.config);
        }
    }

    pub(crate) fn note_error(&self, error_type: Option<String>) {
        *lock(&self.error_slot) = error_type;
    }

    pub(crate) fn take_error(&self) -> Option<String> {
        lock(&self.error_slot).take()
    }
}
