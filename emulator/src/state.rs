//! Shared state of the environment, guarded by one mutex; a watch counter wakes every waiter
//! (long-polls, the invoke driver) whenever anything changes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::telemetry::{self, Msg, Subscription};
use crate::{EmulatorConfig, ExitInfo, ExtensionStats, OutputSource, TelemetryEvent};

/// Phase of the current environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No live environment (before the first init, or after a reset): the next invoke inits.
    Empty,
    Init,
    Ready,
    ShuttingDown,
}

pub struct ExtState {
    pub stats: ExtensionStats,
    pub id: String,
    pub spawned_at: Instant,
    pub registered: bool,
    pub first_next_done: bool,
    /// Events waiting for the extension's next `/next`.
    pub queue: VecDeque<Value>,
    /// Request id of the last INVOKE handed to it.
    pub last_invoke: Option<String>,
    /// Request id of the invocation it finished (called `/next` after receiving its INVOKE).
    pub done_invoke: Option<String>,
    pub subscriber: Option<mpsc::UnboundedSender<Msg>>,
    pub exited_at: Option<Instant>,
}

impl ExtState {
    pub fn alive(&self) -> bool {
        !self.stats.exit.exited
    }
    pub fn wants(&self, event: &str) -> bool {
        self.stats.events.iter().any(|e| e == event)
    }
}

#[derive(Default)]
pub struct RuntimeState {
    pub pid: Option<u32>,
    pub spawned_at: Option<Instant>,
    /// The runtime asked for its first event (init done).
    pub ready: bool,
    pub init_error: Option<String>,
    pub exit: Option<ExitInfo>,
    pub oom_killed: bool,
    pub rss: u64,
}

/// What the runtime reported for the current invocation.
pub struct Current {
    pub request_id: String,
    pub response: Option<Vec<u8>>,
    pub error: Option<(String, Vec<u8>)>,
    pub responded_at: Option<Instant>,
}

pub struct State {
    pub phase: Phase,
    pub generation: u32,
    pub shutdown_started: Option<Instant>,
    pub extensions: Vec<ExtState>,
    /// Extensions of earlier generations.
    pub archived: Vec<ExtensionStats>,
    pub runtime: RuntimeState,
    /// Event waiting for the runtime's `/next`: (request id, deadline epoch ms, body).
    pub runtime_pending: Option<(String, u64, Vec<u8>)>,
    pub current: Option<Current>,
    pub telemetry: Vec<TelemetryEvent>,
    pub output: HashMap<OutputSource, Vec<String>>,
    /// Output pipes not yet at end-of-file: shutdown waits for them so no last line is lost.
    pub open_pipes: usize,
    /// High-water mark of the summed RSS of the current environment.
    pub hwm_bytes: u64,
    pub closed: bool,
    pub last_init: Option<crate::InitInfo>,
    /// Index in `telemetry` of the current environment's `platform.initStart`.
    pub init_telemetry_start: usize,
    /// Init duration to report as `initDurationMs` on the next invocation's report.
    pub pending_init: Option<Duration>,
}

pub struct Shared {
    pub config: EmulatorConfig,
    pub state: Mutex<State>,
    pub changed: watch::Sender<u64>,
}

pub type SharedRef = Arc<Shared>;

impl Shared {
    pub fn new(config: EmulatorConfig) -> SharedRef {
        let (changed, _) = watch::channel(0);
        Arc::new(Shared {
            config,
            state: Mutex::new(State {
                phase: Phase::Empty,
                generation: 0,
                shutdown_started: None,
                extensions: Vec::new(),
                archived: Vec::new(),
                runtime: RuntimeState::default(),
                runtime_pending: None,
                current: None,
                telemetry: Vec::new(),
                output: HashMap::new(),
                open_pipes: 0,
                hwm_bytes: 0,
                closed: false,
                last_init: None,
                init_telemetry_start: 0,
                pending_init: None,
            }),
            changed,
        })
    }

    /// Locks the state; a poisoned lock (a panic elsewhere) still yields the data.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiter.
    pub fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn watcher(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Emits one telemetry record: kept in order and forwarded to the matching subscribers.
    pub fn emit(&self, event_type: &str, record: Value) {
        let mut st = self.lock();
        st.emit(event_type, record);
    }

    pub fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.config.region, self.config.function_name
        )
    }

    /// Samples the RSS of every live process once; returns the summed RSS.
    pub fn sample_memory(&self) -> u64 {
        let pids: Vec<(Option<usize>, u32)> = {
            let st = self.lock();
            let mut v: Vec<(Option<usize>, u32)> = st
                .extensions
                .iter()
                .enumerate()
                .filter(|(_, e)| e.alive())
                .map(|(i, e)| (Some(i), e.stats.pid))
                .collect();
            if let (Some(pid), None) = (st.runtime.pid, &st.runtime.exit) {
                v.push((None, pid));
            }
            v
        };
        let readings: Vec<(Option<usize>, u64)> = pids
            .into_iter()
            .filter_map(|(i, pid)| crate::process::rss_bytes(pid).map(|r| (i, r)))
            .collect();
        let mut st = self.lock();
        let mut total = 0;
        for (i, rss) in readings {
            total += rss;
            match i {
                Some(i) => {
                    if let Some(e) = st.extensions.get_mut(i) {
                        if e.alive() {
                            e.stats.final_rss_bytes = rss;
                            e.stats.peak_rss_bytes = e.stats.peak_rss_bytes.max(rss);
                        }
                    }
                }
                None => st.runtime.rss = rss,
            }
        }
        if st.phase != Phase::Empty {
            st.hwm_bytes = st.hwm_bytes.max(total);
        }
        total
    }
}

impl State {
    pub fn emit(&mut self, event_type: &str, record: Value) {
        let ev = TelemetryEvent {
            time: clock::iso8601(SystemTime::now()),
            event_type: event_type.to_string(),
            record,
        };
        let category = event_type.split('.').next().unwrap_or(event_type);
        let mut line: Option<String> = None;
        for ext in &self.extensions {
            let Some(tx) = &ext.subscriber else { continue };
            if !ext.stats.telemetry_types.iter().any(|t| t == category) {
                continue;
            }
            let s = line.get_or_insert_with(|| {
                serde_json::to_string(&ev).unwrap_or_else(|_| "{}".to_string())
            });
            let _ = tx.send(Msg::Record(s.clone()));
        }
        self.telemetry.push(ev);
    }

    pub fn ext_by_id(&mut self, id: &str) -> Option<&mut ExtState> {
        self.extensions.iter_mut().find(|e| e.id == id)
    }

    /// Starts (or replaces) the delivery task of an extension's subscription.
    pub fn subscribe(&mut self, id: &str, sub: Subscription) -> bool {
        let Some(ext) = self.ext_by_id(id) else {
            return false;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        ext.stats.telemetry_types = sub.types.clone();
        let types = sub.types.clone();
        tokio::spawn(telemetry::deliver_loop(sub, ext.stats.name.clone(), rx));
        // Records of this init phase emitted before the subscription are delivered too
        // (a subscriber sees its environment's platform.initStart, like on Lambda).
        for ev in self.telemetry.iter().skip(self.init_telemetry_start) {
            let category = ev.event_type.split('.').next().unwrap_or("");
            if types.iter().any(|t| t == category) {
                if let Ok(line) = serde_json::to_string(ev) {
                    let _ = tx.send(Msg::Record(line));
                }
            }
        }
        if let Some(ext) = self.ext_by_id(id) {
            ext.subscriber = Some(tx);
        }
        true
    }

    pub fn all_stats(&self) -> Vec<ExtensionStats> {
        let mut v = self.archived.clone();
        v.extend(self.extensions.iter().map(|e| e.stats.clone()));
        v
    }

    /// An extension of the live environment exited on its own before SHUTDOWN.
    pub fn crashed_extension(&self) -> Option<&ExtState> {
        self.extensions
            .iter()
            .find(|e| e.stats.exit.exited_before_shutdown)
    }
}

/// `Lambda-Runtime-Trace-Id`-style X-Ray header for a request.
pub fn trace_id(request_id: &str) -> String {
    let secs = clock::epoch_ms(SystemTime::now()) / 1000;
    let hex: String = request_id.chars().filter(|c| *c != '-').take(24).collect();
    let parent: String = request_id
        .chars()
        .filter(|c| *c != '-')
        .skip(16)
        .take(16)
        .collect();
    format!("Root=1-{secs:08x}-{hex};Parent={parent};Sampled=0")
}

pub fn invoke_event(request_id: &str, deadline_ms: u64, arn: &str) -> Value {
    json!({
        "eventType": "INVOKE",
        "deadlineMs": deadline_ms,
        "requestId": request_id,
        "invokedFunctionArn": arn,
        "tracing": {"type": "X-Amzn-Trace-Id", "value": trace_id(request_id)},
    })
}

pub fn duration_since(t: Instant) -> Duration {
    Instant::now().saturating_duration_since(t)
}
