//! The event loop: lifecycle events, source events and flush timers in one task.
//!
//! `/next` is kept armed as a future so telemetry and intake events are joined while the
//! extension waits; a flush runs in the sink worker, so a slow sink never delays `/next`.

use anyhow::Context;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::analysis::environment::EnvironmentAnalysis;
use crate::config::{Config, SinkKind};
use crate::epoch_ms;
use crate::flush::FlushPolicy;
use crate::invocation::{InvocationProfile, Join, JoinConfig, SourceEvent};
use crate::lifecycle::{Events, ExtensionClient, LifecycleError, NextEvent, Subscription};
use crate::metrics::{self, Dimensions};
use crate::presence::{Change, DecoratorPresence};
use crate::sinks::{self, cloudwatch::CloudWatchSink, Command, Destination, Sink, SinkSettings};
use crate::sources::limits::Limits;
use crate::sources::{intake, telemetry};
use crate::stats::{Counters, RateLimiter};

type NextFuture = Pin<Box<dyn std::future::Future<Output = Result<NextEvent, LifecycleError>>>>;

/// Capacity of the source → join channel; beyond it events are dropped and counted.
const EVENT_CHANNEL: usize = 1024;
/// How often an `end` flush waiting for the runtime checks that the runtime still exists.
const RUNTIME_POLL: Duration = Duration::from_millis(50);
/// Longest wait at SHUTDOWN for the last `platform.report`.
const SHUTDOWN_REPORT_WAIT: Duration = Duration::from_millis(600);

/// The extension's name: its executable's file name (Lambda requires them to match).
pub fn extension_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "lambda-memory-profiler".to_string())
}

struct Agent {
    cfg: Config,
    join: Join,
    policy: FlushPolicy,
    sink_tx: mpsc::Sender<Command>,
    function_name: String,
    counters: Arc<Counters>,
    evicted_seen: u64,
    /// `join.stats.untrusted` already added to the counters.
    untrusted_seen: u64,
    /// What the platform can produce: figures outside it never reach the join.
    limits: Limits,
    /// The INVOKE ids the intake reads `/proc` for.
    current_invocations: Arc<intake::CurrentInvocations>,
    /// The runtime process the decorator reported, watched while an `end` flush waits for it.
    runtime_pid: Option<u32>,
    /// Leak, out-of-memory and right-size rules over the completed profiles.
    analysis: EnvironmentAnalysis,
    /// Whether an `end` flush waits for the decorator's record.
    presence: DecoratorPresence,
    /// Where the sink publishes; the decorator's own arguments may change it once.
    destination: Destination,
    function_version: String,
    /// The decorator settings applied (the first hello that carried any).
    decorator_sink: Option<SinkSettings>,
}

/// Runs the extension until SHUTDOWN; returns when everything is flushed (or the deadline came).
pub async fn run(cfg: Config, counters: Arc<Counters>) -> anyhow::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").context("AWS_LAMBDA_RUNTIME_API not set")?;
    let mut client = ExtensionClient::new(&api);
    let name = extension_name();
    if cfg.disabled {
        return crate::disabled::run(client, &name).await;
    }
    // Finding the telemetry listener's address may need a DNS lookup (when /etc/hosts does not
    // name sandbox.localdomain): run it while registering, not after, since init time is cold
    // start time.
    let telemetry_listener = tokio::spawn(telemetry::bind());
    // The intake is bound before registering: Lambda starts the runtime once every extension
    // registered, and the decorator says hello while the handler's module is imported.
    let intake = intake::bind(cfg.intake_port).await;
    let reg = register_with_retry(&mut client, &name, Events::InvokeAndShutdown).await?;

    let (tx, mut rx) = mpsc::channel::<SourceEvent>(EVENT_CHANNEL);
    let current_invocations = Arc::new(intake::CurrentInvocations::default());
    match intake {
        Ok((sock, granted)) => {
            if granted < intake::RECEIVE_BUFFER {
                tracing::info!(
                    granted,
                    asked = intake::RECEIVE_BUFFER,
                    "intake receive buffer capped by net.core.rmem_max; bursts may drop records (counted)"
                );
            }
            counters.watch_intake_port(cfg.intake_port);
            tokio::spawn(intake::run(
                sock,
                tx.clone(),
                counters.clone(),
                current_invocations.clone(),
            ));
        }
        Err(e) => tracing::error!(port = cfg.intake_port, error = %e,
            "cannot bind the intake; continuing without decorator data"),
    }
    let mut join = Join::new(JoinConfig {
        max_pending: cfg.max_pending,
        pending_timeout: cfg.pending_timeout,
    });
    let telemetry_addr =
        start_telemetry(telemetry_listener, &client, &cfg, tx.clone(), &counters).await;
    if telemetry_addr.is_none() {
        join.set_telemetry_active(false);
    }
    drop(tx);
    let function_name = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| reg.function_name.clone());
    let destination = Destination {
        namespace: cfg.namespace.clone(),
        dims: Dimensions::new(cfg.dimensions, &function_name, &reg.function_version),
        storage_resolution: cfg.storage_resolution,
    };
    let to = destination.clone();
    let sink = match cfg.sink {
        SinkKind::CloudWatch => Sink::CloudWatch(CloudWatchSink::new(
            to.namespace,
            to.dims,
            to.storage_resolution,
        )),
        SinkKind::Emf => Sink::Emf {
            namespace: to.namespace,
            dims: to.dims,
            storage_resolution: to.storage_resolution,
        },
    };
    let (sink_tx, sink_rx) = mpsc::channel(256);
    tokio::spawn(sinks::worker(
        sink,
        sink_rx,
        cfg.buffer_max,
        counters.clone(),
    ));
    tracing::info!(
        extension = %name,
        function = %function_name,
        intake_port = cfg.intake_port,
        telemetry = ?telemetry_addr,
        sink = ?cfg.sink,
        flush = ?cfg.flush,
        "ready"
    );

    let configured_memory_mb = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let analysis = EnvironmentAnalysis::new(
        cfg.leak.clone(),
        cfg.rightsize.clone(),
        configured_memory_mb,
    );
    let mut agent = Agent {
        current_invocations,
        limits: Limits::for_memory(configured_memory_mb),
        analysis,
        policy: FlushPolicy::new(cfg.flush),
        cfg,
        join,
        sink_tx,
        function_name,
        counters,
        evicted_seen: 0,
        untrusted_seen: 0,
        runtime_pid: None,
        presence: DecoratorPresence::default(),
        destination,
        function_version: reg.function_version,
        decorator_sink: None,
    };
    agent.event_loop(client, &mut rx).await;
    Ok(())
}

/// Registers, trying three times (a refused first attempt must not fail the function).
pub async fn register_with_retry(
    client: &mut ExtensionClient,
    name: &str,
    events: Events,
) -> anyhow::Result<crate::lifecycle::Registration> {
    let mut last = None;
    for attempt in 0..3u64 {
        match client.register(name, events).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "register failed");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
        }
    }
    Err(anyhow::anyhow!("register failed: {last:?}"))
}

/// Binds the listener and subscribes. `None` when telemetry is unavailable (logged once).
async fn start_telemetry(
    listener: tokio::task::JoinHandle<std::io::Result<tokio::net::TcpListener>>,
    client: &ExtensionClient,
    cfg: &Config,
    tx: mpsc::Sender<SourceEvent>,
    counters: &Arc<Counters>,
) -> Option<SocketAddr> {
    let listener = match listener.await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot bind the telemetry listener; decorator data only");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "telemetry listener setup failed; decorator data only");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    tokio::spawn(telemetry::serve(listener, tx, counters.clone()));
    let uri = format!(
        "http://{}:{}{}",
        telemetry::SANDBOX_HOST,
        addr.port(),
        telemetry::LISTENER_PATH
    );
    match client.subscribe(&uri, cfg.telemetry_timeout_ms).await {
        Ok(Subscription::Active) => Some(addr),
        Ok(Subscription::NotSupported(body)) => {
            tracing::info!(%body, "telemetry not supported here; using decorator data only");
            None
        }
        Ok(Subscription::Refused(status, body)) => {
            tracing::warn!(status, %body, "telemetry subscription refused; decorator data only");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "telemetry subscription failed; decorator data only");
            None
        }
    }
}

impl Agent {
    async fn event_loop(&mut self, client: ExtensionClient, rx: &mut mpsc::Receiver<SourceEvent>) {
        let arm = |c: &ExtensionClient| -> NextFuture {
            let c = c.clone();
            Box::pin(async move { c.next().await })
        };
        let mut next: Option<NextFuture> = Some(arm(&client));
        // Set while an `end` flush waits for the current invocation to finish.
        let mut awaiting_end: Option<(String, tokio::time::Instant)> = None;
        let mut next_flush: Option<tokio::time::Instant> = None;
        let mut next_errors = 0u32;
        let mut next_warn = RateLimiter::new(Duration::from_secs(60));
        loop {
            let end_deadline = awaiting_end.as_ref().map(|(_, d)| *d);
            tokio::select! {
                // Only polled when the guard holds; the `None` arm never runs.
                ev = async {
                    match next.as_mut() {
                        Some(pending) => pending.await,
                        None => std::future::pending().await,
                    }
                }, if next.is_some() => {
                    next = None;
                    match ev {
                        Ok(NextEvent::Invoke { request_id, deadline_ms }) => {
                            next_errors = 0;
                            let now = Instant::now();
                            self.current_invocations.started(&request_id);
                            let done = self.join.on_invoke(&request_id, now, epoch_ms());
                            self.publish(done).await;
                            self.policy.on_invoke(now);
                            if let Some(Change::WentSilent) = self.presence.on_invoke() {
                                tracing::info!(
                                    invocations = crate::presence::SILENT_INVOCATIONS,
                                    "no decorator record for these invocations: not waiting for one until a record arrives"
                                );
                            }
                            if self.policy.flush_at_end(now) && !self.presence.expect_record() {
                                // No record will come: nothing this invocation produces can be
                                // sent before `/next` (its report follows `/next`), so what is
                                // complete goes out now, without holding the invocation.
                                let _ = self.sink_tx.try_send(Command::Flush(None));
                                next = Some(arm(&client));
                            } else if self.policy.flush_at_end(now) {
                                // Give up waiting 50 ms before the function's own deadline.
                                let left = deadline_ms.saturating_sub(epoch_ms() + 50);
                                let d = tokio::time::Instant::now() + Duration::from_millis(left);
                                awaiting_end = Some((request_id, d));
                            } else {
                                next = Some(arm(&client));
                            }
                        }
                        Ok(NextEvent::Shutdown { reason, deadline_ms }) => {
                            self.shutdown(rx, &reason, deadline_ms).await;
                            return;
                        }
                        Ok(NextEvent::Other(t)) => {
                            tracing::debug!(event = %t, "ignoring event");
                            next = Some(arm(&client));
                        }
                        Err(e) => {
                            // Never exit before SHUTDOWN: back off and ask again.
                            next_errors = next_errors.saturating_add(1);
                            if let Some(s) = next_warn.check(Instant::now()) {
                                tracing::warn!(error = %e, suppressed = s, "event/next failed; retrying");
                            }
                            let backoff = 50u64 << next_errors.min(5);
                            tokio::time::sleep(Duration::from_millis(backoff)).await;
                            next = Some(arm(&client));
                        }
                    }
                }
                Some(ev) = rx.recv() => {
                    let done = self.accept(ev);
                    self.publish(done).await;
                }
                // Wakes the loop to notice a runtime that died mid-invocation (no record comes).
                _ = tokio::time::sleep(RUNTIME_POLL), if awaiting_end.is_some() && self.runtime_pid.is_some() => {}
                _ = sleep_until_opt(end_deadline), if end_deadline.is_some() => {
                    tracing::debug!("invocation end not seen before its deadline");
                    awaiting_end = None;
                    self.flush_and_wait(Some(end_flush_deadline(self.cfg.end_flush_budget, None)))
                        .await;
                    next = Some(arm(&client));
                }
                _ = sleep_until_opt(next_flush), if next_flush.is_some() => {
                    next_flush = None;
                    let _ = self.sink_tx.try_send(Command::Flush(None));
                }
            }
            if let Some((id, d)) = &awaiting_end {
                if self.end_of_invoke_seen(id) {
                    let d = end_flush_deadline(self.cfg.end_flush_budget, Some(*d));
                    awaiting_end = None;
                    self.flush_and_wait(Some(d)).await;
                    next = Some(arm(&client));
                }
            }
            let period = self.policy.background_period(Instant::now());
            match (period, next_flush) {
                (Some(p), None) => next_flush = Some(tokio::time::Instant::now() + p),
                (None, Some(_)) => next_flush = None,
                _ => {}
            }
        }
    }

    /// The runtime finished the invocation (its record or `runtimeDone` arrived, or its process
    /// is gone), or the decorator went silent meanwhile: stop waiting.
    fn end_of_invoke_seen(&self, request_id: &str) -> bool {
        !self.presence.expect_record() || self.join.finished(request_id) || self.runtime_gone()
    }

    /// One event from a source: its impossible figures dropped (counted), then joined.
    fn accept(&mut self, mut ev: SourceEvent) -> Vec<InvocationProfile> {
        let cut = self.limits.sanitize(&mut ev);
        if cut > 0 {
            Counters::add(&self.counters.values_out_of_range, cut);
        }
        self.note_runtime_pid(&ev);
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
            SourceEvent::Telemetry(_) => {}
        }
        self.join.on_event(ev, Instant::now(), epoch_ms())
    }

    /// The decorator's own sink arguments, from its hello: the first that asks for anything is
    /// applied (the decorator's argument wins over `LMP_*`, as in the decorator); a later hello
    /// asking for something else is logged once and ignored.
    fn take_decorator_sink(&mut self, s: SinkSettings) {
        if !s.rejected.is_empty() {
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
                tracing::warn!(asked = ?s, kept = ?self.destination, "another decorated handler asks for other sink settings; keeping the first");
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
        if self
            .sink_tx
            .try_send(Command::Retarget(to.clone()))
            .is_err()
        {
            // The sink's queue is full: the next hello (one per decorated handler) tries again.
            tracing::warn!("sink busy: the decorator's sink settings are not applied yet");
            return;
        }
        tracing::info!(namespace = %to.namespace, dimensions = ?to.dims.0, storage_resolution = to.storage_resolution, "sink settings from the decorator's arguments");
        self.destination = to;
        self.decorator_sink = Some(s);
    }

    fn note_runtime_pid(&mut self, ev: &SourceEvent) {
        // A record's pid counts once it joined an invocation (see `publish`): anything can
        // send a datagram with an invented one.
        let pid = match ev {
            SourceEvent::DecoratorHello { pid, .. } => *pid,
            SourceEvent::Decorator { .. } | SourceEvent::Telemetry(_) => None,
        };
        if pid.is_some() {
            self.runtime_pid = pid;
        }
    }

    /// The decorator's process no longer exists (killed, crashed): its record will not come.
    fn runtime_gone(&self) -> bool {
        self.runtime_pid
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    }

    async fn publish(&mut self, profiles: Vec<InvocationProfile>) {
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
                self.runtime_pid = Some(pid);
            }
            if let Some(line) = metrics::top_sites_line(p, &self.function_name) {
                sinks::print_line(&line);
            }
            if p.partial {
                tracing::debug!(request_id = %p.request_id, "publishing a partial profile");
            }
            datums.extend(metrics::profile_datums(p));
            let findings = self.analysis.observe(p, &self.function_name);
            for line in &findings.log_lines {
                sinks::print_line(line);
            }
            datums.extend(metrics::findings_datums(&findings));
        }
        let values = datums.len() as u64;
        if self.sink_tx.try_send(Command::Data(datums)).is_err() {
            // Counted as values, like every other loss of metric data.
            Counters::add(&self.counters.values_offered, values);
            Counters::add(&self.counters.datums_dropped, values);
        }
    }

    /// Asks the worker to flush and waits for it, at most until `deadline`; false when the
    /// flush did not finish in time (it goes on in the worker).
    async fn flush_and_wait(&self, deadline: Option<tokio::time::Instant>) -> bool {
        let (ack_tx, ack_rx) = oneshot::channel();
        // Sending can block too (the queue fills while a flush hangs): bound both.
        let wait = async {
            if self
                .sink_tx
                .send(Command::Flush(Some(ack_tx)))
                .await
                .is_ok()
            {
                let _ = ack_rx.await;
            }
        };
        match deadline {
            // Not a warning: a slow endpoint is the sink's to report (once per minute per
            // failure class); here the invocation just stops waiting for it.
            Some(d) => {
                let done = tokio::time::timeout_at(d, wait).await.is_ok();
                if !done {
                    tracing::debug!("flush goes on after the invocation");
                }
                done
            }
            None => {
                wait.await;
                true
            }
        }
    }

    async fn shutdown(
        &mut self,
        rx: &mut mpsc::Receiver<SourceEvent>,
        reason: &str,
        deadline_ms: u64,
    ) {
        let margin = self.cfg.shutdown_margin.as_millis() as u64;
        let left = deadline_ms.saturating_sub(epoch_ms() + margin);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(left);
        tracing::info!(%reason, budget_ms = left, pending = self.join.pending_len(), "shutdown");
        // Let the intake read what is still queued in its socket (briefly): unread datagrams
        // would be neither joined nor counted.
        let drain_until =
            tokio::time::Instant::now() + INTAKE_DRAIN_WAIT.min(Duration::from_millis(left / 4));
        while self.counters.intake_queued_bytes().is_some_and(|b| b > 0)
            && tokio::time::Instant::now() < drain_until
        {
            while let Ok(ev) = rx.try_recv() {
                let done = self.accept(ev);
                self.publish(done).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Whatever the sources already delivered.
        while let Ok(ev) = rx.try_recv() {
            let done = self.accept(ev);
            self.publish(done).await;
        }
        // The last invocation's report arrives now: wait for it, briefly.
        let wait_until =
            tokio::time::Instant::now() + SHUTDOWN_REPORT_WAIT.min(Duration::from_millis(left / 2));
        while self.join.awaiting_reports() {
            match tokio::time::timeout_at(wait_until, rx.recv()).await {
                Ok(Some(ev)) => {
                    let done = self.accept(ev);
                    self.publish(done).await;
                }
                _ => break,
            }
        }
        let rest = self.join.drain();
        self.publish(rest).await;
        if !self.flush_and_wait(Some(deadline)).await {
            // What the endpoint did not take before the deadline is lost with the process.
            let unsent = self.counters.values_pending.load(Ordering::Relaxed);
            Counters::add(&self.counters.datums_dropped, unsent);
            tracing::warn!(
                unsent,
                "shutdown deadline: metric values not sent (dropped)"
            );
        }
        let c = &self.counters;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        tracing::info!(
            dropped = c.dropped_total(),
            received = n(&c.intake_received),
            malformed =
                n(&c.intake_malformed) + n(&c.intake_oversized) + n(&c.intake_unknown_version),
            untrusted = n(&c.records_untrusted),
            out_of_range = n(&c.values_out_of_range),
            kernel_drops = n(&c.intake_kernel_drops),
            channel_full = n(&c.events_channel_full),
            values = n(&c.values_offered),
            values_sent = n(&c.values_sent),
            values_lost = n(&c.datums_dropped),
            "flushed; exiting"
        );
    }
}

/// Longest wait at SHUTDOWN for the intake to read what its socket still holds.
const INTAKE_DRAIN_WAIT: Duration = Duration::from_millis(300);

/// When an end-of-invoke flush stops holding `/next` (`LMP_END_FLUSH_BUDGET_MS`): a slow sink
/// must not stretch every invocation; the flush goes on in the worker after `/next`.
fn end_flush_deadline(
    budget: Duration,
    invoke_deadline: Option<tokio::time::Instant>,
) -> tokio::time::Instant {
    let budget = tokio::time::Instant::now() + budget;
    invoke_deadline.map_or(budget, |d| d.min(budget))
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
