//! Shared state of the environment, guarded by one mutex; a watch counter wakes every waiter
//! (long-polls, the invoke driver) whenever anything changes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::procfs::GroupScanner;
use crate::sandbox::HostsView;
use crate::telemetry::{self, render::render, Msg, Subscription};
use crate::{EmulatorConfig, ExitInfo, ExtensionStats, OutputSource, TelemetryEvent};

/// An extension's live subscription (Telemetry API or Logs API) and its delivery task's inbox.
pub(crate) struct Subscriber {
    pub sub: Subscription,
    pub tx: mpsc::UnboundedSender<Msg>,
}

/// Phase of the current environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No live environment (before the first init, or after a reset): the next invoke inits.
    Empty,
    Init,
    Ready,
    ShuttingDown,
}

pub(crate) struct ExtState {
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
    pub subscriber: Option<Subscriber>,
    pub exited_at: Option<Instant>,
}

impl ExtState {
    pub(crate) fn alive(&self) -> bool {
        !self.stats.exit.exited
    }
    pub(crate) fn wants(&self, event: &str) -> bool {
        self.stats.events.iter().any(|e| e == event)
    }
}

impl RuntimeState {
    /// Why the runtime is gone, as an init or restore error type: killed at the memory
    /// limit, or exited.
    pub(crate) fn gone(&self) -> Option<String> {
        if self.oom_killed {
            return Some("Runtime.OutOfMemory".to_string());
        }
        self.exit.as_ref().map(|_| "Runtime.ExitError".to_string())
    }
}

#[derive(Default)]
pub(crate) struct RuntimeState {
    pub pid: Option<u32>,
    pub spawned_at: Option<Instant>,
    /// The runtime asked for its first event (init done).
    pub ready: bool,
    pub init_error: Option<String>,
    pub exit: Option<ExitInfo>,
    pub oom_killed: bool,
    pub rss: u64,
    /// SnapStart: the runtime called `restore/next` (its init is done: the snapshot point).
    pub at_snapshot: bool,
    /// SnapStart: the restore began; `restore/next` answers.
    pub restoring: bool,
    /// SnapStart: the runtime's after-restore hooks failed (`restore/error`), with its type.
    pub restore_error: Option<String>,
}

/// What the runtime reported for the current invocation.
pub(crate) struct Current {
    pub request_id: String,
    pub response: Option<Vec<u8>>,
    pub error: Option<(String, Vec<u8>)>,
    /// The runtime's `/response` (or `/error`) request arrived: its headers, then its whole body.
    pub response_started: Option<(Instant, SystemTime)>,
    pub responded_at: Option<Instant>,
}

/// The invocation waiting for the runtime's `/next`.
pub(crate) struct Pending {
    pub request_id: String,
    pub deadline_ms: u64,
    pub body: Vec<u8>,
    /// `Lambda-Runtime-Trace-Id`: the same value the INVOKE event and the records carry.
    pub trace: String,
}

pub(crate) struct State {
    pub phase: Phase,
    pub generation: u32,
    pub shutdown_started: Option<Instant>,
    pub extensions: Vec<ExtState>,
    /// Extensions of earlier generations.
    pub archived: Vec<ExtensionStats>,
    pub runtime: RuntimeState,
    /// Invocations waiting for a runtime `/next`, oldest first (more than one only on Lambda
    /// Managed Instances, where several run at once).
    pub runtime_pending: VecDeque<Pending>,
    /// Invocations handed to the runtime and not yet complete, by request id.
    pub in_flight: HashMap<String, Current>,
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
    /// SnapStart: the environment waits at its snapshot point for its restore.
    pub snapshotted: bool,
    /// SnapStart: restore duration to report as `restoreDurationMs` on the next report.
    pub pending_restore: Option<Duration>,
}

pub(crate) struct Shared {
    pub config: EmulatorConfig,
    pub state: Mutex<State>,
    pub changed: watch::Sender<u64>,
    /// How the processes get a hosts file naming the sandbox.
    pub hosts: HostsView,
    /// Process-group membership cache of the memory sampler.
    pub scanner: Mutex<GroupScanner>,
}

pub(crate) type SharedRef = Arc<Shared>;

impl Shared {
    pub(crate) fn new(config: EmulatorConfig) -> SharedRef {
        let (changed, _) = watch::channel(0);
        let hosts = HostsView::prepare(config.sandbox_hosts);
        Arc::new(Shared {
            hosts,
            scanner: Mutex::new(GroupScanner::default()),
            config,
            state: Mutex::new(State {
                phase: Phase::Empty,
                generation: 0,
                shutdown_started: None,
                extensions: Vec::new(),
                archived: Vec::new(),
                runtime: RuntimeState::default(),
                runtime_pending: VecDeque::new(),
                in_flight: HashMap::new(),
                telemetry: Vec::new(),
                output: HashMap::new(),
                open_pipes: 0,
                hwm_bytes: 0,
                closed: false,
                last_init: None,
                init_telemetry_start: 0,
                pending_init: None,
                snapshotted: false,
                pending_restore: None,
            }),
            changed,
        })
    }

    /// Locks the state; a poisoned lock (a panic elsewhere) still yields the data.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiter.
    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn watcher(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Emits one telemetry record: kept in order and forwarded to the matching subscribers.
    pub(crate) fn emit(&self, event_type: &str, record: Value) {
        let mut st = self.lock();
        st.emit(event_type, record);
    }

    pub(crate) fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.config.region, self.config.function_name
        )
    }

    /// Samples the RSS of every live process group once (each process with the helpers it
    /// started, like the sandbox's memory limit counts them); returns the summed RSS.
    pub(crate) fn sample_memory(&self) -> u64 {
        let (ext_pids, runtime_pid): (Vec<u32>, Option<u32>) = {
            let st = self.lock();
            let exts = st
                .extensions
                .iter()
                .filter(|e| e.alive())
                .map(|e| e.stats.pid)
                .collect();
            let runtime = st.runtime.pid.filter(|_| st.runtime.exit.is_none());
            (exts, runtime)
        };
        let mut leaders = ext_pids.clone();
        leaders.extend(runtime_pid);
        let usage = match self.scanner.lock() {
            Ok(mut scanner) => scanner.sample(&leaders),
            Err(e) => e.into_inner().sample(&leaders),
        };
        let mut st = self.lock();
        let mut total = 0;
        for ext in st.extensions.iter_mut().filter(|e| e.alive()) {
            if let Some(u) = usage.get(&ext.stats.pid) {
                total += u.bytes;
                ext.stats.final_rss_bytes = u.bytes;
                ext.stats.peak_rss_bytes = ext.stats.peak_rss_bytes.max(u.bytes);
                ext.stats.peak_processes = ext.stats.peak_processes.max(u.processes);
            }
        }
        if let Some(u) = runtime_pid.and_then(|pid| usage.get(&pid)) {
            total += u.bytes;
            st.runtime.rss = u.bytes;
        }
        if st.phase != Phase::Empty {
            st.hwm_bytes = st.hwm_bytes.max(total);
        }
        total
    }
}

impl State {
    pub(crate) fn emit(&mut self, event_type: &str, record: Value) {
        let ev = TelemetryEvent {
            time: clock::iso8601(SystemTime::now()),
            event_type: event_type.to_string(),
            record,
        };
        for ext in &self.extensions {
            if let Some(s) = &ext.subscriber {
                forward(s, &ev);
            }
        }
        self.telemetry.push(ev);
    }

    pub(crate) fn ext_by_id(&mut self, id: &str) -> Option<&mut ExtState> {
        self.extensions.iter_mut().find(|e| e.id == id)
    }

    /// Starts (or replaces) the delivery task of an extension's subscription.
    pub(crate) fn subscribe(&mut self, id: &str, sub: Subscription) -> bool {
        let Some(ext) = self.ext_by_id(id) else {
            return false;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        ext.stats.telemetry_types = sub.types.clone();
        ext.stats.subscribed_api = Some(
            match sub.api {
                telemetry::Api::Telemetry => "telemetry",
                telemetry::Api::Logs => "logs",
            }
            .to_string(),
        );
        let name = ext.stats.name.clone();
        tokio::spawn(telemetry::deliver_loop(sub.clone(), name, rx));
        let subscriber = Subscriber { sub, tx };
        // Records of this init phase emitted before the subscription are delivered too
        // (a subscriber sees its environment's platform.initStart, like on Lambda).
        for ev in self.telemetry.iter().skip(self.init_telemetry_start) {
            forward(&subscriber, ev);
        }
        if let Some(ext) = self.ext_by_id(id) {
            ext.subscriber = Some(subscriber);
        }
        true
    }

    pub(crate) fn all_stats(&self) -> Vec<ExtensionStats> {
        let mut v = self.archived.clone();
        v.extend(self.extensions.iter().map(|e| e.stats.clone()));
        v
    }

    /// An extension of the live environment exited on its own before SHUTDOWN.
    pub(crate) fn crashed_extension(&self) -> Option<&ExtState> {
        self.extensions
            .iter()
            .find(|e| e.stats.exit.exited_before_shutdown)
    }
}

/// Sends `ev` to one subscriber in its API's shape, when it subscribed to the record's category.
fn forward(s: &Subscriber, ev: &TelemetryEvent) {
    let category = ev.event_type.split('.').next().unwrap_or("");
    if !s.sub.types.iter().any(|t| t == category) {
        return;
    }
    for line in render(&s.sub, ev) {
        let _ = s.tx.send(Msg::Record(line));
    }
}

/// `Lambda-Runtime-Trace-Id`-style X-Ray header for a request.
pub(crate) fn trace_id(request_id: &str) -> String {
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

/// A 16-hex-digit span id, as in the records' `tracing.spanId`.
pub(crate) fn span_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

pub(crate) fn invoke_event(request_id: &str, deadline_ms: u64, arn: &str, trace: &str) -> Value {
    json!({
        "eventType": "INVOKE",
        "deadlineMs": deadline_ms,
        "requestId": request_id,
        "invokedFunctionArn": arn,
        "tracing": {"type": "X-Amzn-Trace-Id", "value": trace},
    })
}

pub(crate) fn duration_since(t: Instant) -> Duration {
    Instant::now().saturating_duration_since(t)
}
