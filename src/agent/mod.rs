//! The event loop: lifecycle events, source events and flush timers in one task.
//!
//! `/next` is kept armed as a future so telemetry and intake events are joined while the
//! extension waits; a flush runs in the sink worker, so a slow sink never delays `/next`.
//! Start-up is in `start`, the sources' events in `events`, SHUTDOWN in `shutdown`.

mod events;
mod managed;
mod shutdown;
mod start;

use anyhow::Context;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::analysis::environment::EnvironmentAnalysis;
use crate::config::Config;
use crate::epoch_ms;
use crate::flush::FlushPolicy;
use crate::invocation::{Join, SourceEvent};
use crate::lifecycle::{ExtensionClient, LifecycleError, NextEvent};
use crate::presence::{Change, DecoratorPresence};
use crate::sinks::{Command, Destination, SinkSettings};
use crate::sources::intake;
use crate::sources::limits::Limits;
use crate::stats::{Counters, RateLimiter};

pub use start::register_with_retry;

type NextFuture = Pin<Box<dyn std::future::Future<Output = Result<NextEvent, LifecycleError>>>>;

/// Capacity of the source → join channel; beyond it events are dropped and counted.
const EVENT_CHANNEL: usize = 1024;
/// How often an `end` flush waiting for the runtime checks that the runtime still exists.
const RUNTIME_POLL: Duration = Duration::from_millis(50);

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
    /// Tells the sink worker a new destination (read before its next flush).
    destination_tx: tokio::sync::watch::Sender<Destination>,
    /// A warning about the decorator's sink arguments was logged (once per process).
    sink_warned: bool,
    function_version: String,
    /// The decorator settings applied (the first hello that carried any).
    decorator_sink: Option<SinkSettings>,
    /// Lambda Managed Instances: per-process analyses and the workers; `None` elsewhere.
    managed: Option<managed::Managed>,
}

/// Runs the extension until SHUTDOWN; returns when everything is flushed (or the deadline came).
pub async fn run(cfg: Config, counters: Arc<Counters>) -> anyhow::Result<()> {
    let api = cfg
        .lambda
        .runtime_api
        .clone()
        .context("AWS_LAMBDA_RUNTIME_API not set")?;
    let mut client = ExtensionClient::new(&api);
    let name = extension_name();
    if cfg.disabled {
        return crate::disabled::run(client, &name, "LMP_DISABLE").await;
    }
    let platform = Platform::of(cfg.lambda.initialization_type.as_deref());
    match &platform {
        Platform::Supported | Platform::ManagedInstances => {}
        Platform::Unknown(kind) => tracing::warn!(
            initialization_type = %kind,
            "unknown AWS_LAMBDA_INITIALIZATION_TYPE: handled like on-demand"
        ),
    }
    let managed = platform == Platform::ManagedInstances;
    let (mut agent, mut rx) = match start::start(cfg, &mut client, &name, counters, managed).await {
        Ok(started) => started,
        Err(e) => {
            // Exiting before SHUTDOWN would fail the function's init: after the INVOKE
            // registration failed, register for SHUTDOWN only and stay out of the way.
            tracing::error!(error = %format!("{e:#}"), "cannot start; continuing as a do-nothing extension");
            return crate::disabled::run(client, &name, "start-up failed").await;
        }
    };
    agent.event_loop(client, &mut rx).await;
    Ok(())
}

/// What the initialization type says about the platform.
#[derive(Debug, PartialEq, Eq)]
enum Platform<'a> {
    /// On-demand, provisioned concurrency, SnapStart (or not said: Lambda before the variable).
    Supported,
    /// `lambda-managed-instances`.
    ManagedInstances,
    /// Anything else: logged once, handled like on-demand.
    Unknown(&'a str),
}

impl<'a> Platform<'a> {
    fn of(initialization_type: Option<&'a str>) -> Platform<'a> {
        match initialization_type {
            None | Some("on-demand" | "provisioned-concurrency" | "snap-start") => {
                Platform::Supported
            }
            Some("lambda-managed-instances") => Platform::ManagedInstances,
            Some(other) => Platform::Unknown(other),
        }
    }
}

/// The event loop's own state between two turns.
struct LoopState {
    client: ExtensionClient,
    /// The armed `/next`, or `None` while an `end` flush holds it.
    next: Option<NextFuture>,
    /// Set while an `end` flush waits for the current invocation to finish: its id and the
    /// latest moment to give up.
    awaiting_end: Option<(String, tokio::time::Instant)>,
    /// When the background flush runs next, if one is due.
    next_flush: Option<tokio::time::Instant>,
    /// `/next` failures in a row (for the backoff).
    next_errors: u32,
    next_warn: RateLimiter,
}

impl LoopState {
    fn arm(&mut self) {
        let c = self.client.clone();
        self.next = Some(Box::pin(async move { c.next().await }));
    }
}

impl Agent {
    async fn event_loop(&mut self, client: ExtensionClient, rx: &mut mpsc::Receiver<SourceEvent>) {
        let mut st = LoopState {
            client,
            next: None,
            awaiting_end: None,
            next_flush: None,
            next_errors: 0,
            next_warn: RateLimiter::new(Duration::from_secs(60)),
        };
        st.arm();
        loop {
            let end_deadline = st.awaiting_end.as_ref().map(|(_, d)| *d);
            tokio::select! {
                // Only polled when the guard holds; the `None` arm never runs.
                ev = async {
                    match st.next.as_mut() {
                        Some(pending) => pending.await,
                        None => std::future::pending().await,
                    }
                }, if st.next.is_some() => {
                    st.next = None;
                    match ev {
                        Ok(NextEvent::Invoke { request_id, deadline_ms }) => {
                            st.next_errors = 0;
                            self.on_invoke(&mut st, request_id, deadline_ms).await;
                        }
                        Ok(NextEvent::Shutdown { reason, deadline_ms }) => {
                            self.shutdown(rx, &reason, deadline_ms).await;
                            return;
                        }
                        Ok(NextEvent::Other(t)) => {
                            tracing::debug!(event = %t, "ignoring event");
                            st.arm();
                        }
                        Err(e) => {
                            // Never exit before SHUTDOWN: back off and ask again.
                            st.next_errors = st.next_errors.saturating_add(1);
                            if let Some(s) = st.next_warn.check(Instant::now()) {
                                tracing::warn!(error = %crate::error_chain(&e), suppressed = s, "event/next failed; retrying");
                            }
                            let backoff = 50u64 << st.next_errors.min(5);
                            tokio::time::sleep(Duration::from_millis(backoff)).await;
                            st.arm();
                        }
                    }
                }
                Some(ev) = rx.recv() => {
                    let done = self.accept(ev);
                    self.publish(done).await;
                }
                // Wakes the loop to notice a runtime that died mid-invocation (no record comes).
                _ = tokio::time::sleep(RUNTIME_POLL), if st.awaiting_end.is_some() && self.runtime_pid.is_some() => {}
                _ = sleep_until_opt(end_deadline), if end_deadline.is_some() => {
                    tracing::debug!("invocation end not seen before its deadline");
                    st.awaiting_end = None;
                    self.flush_and_wait(Some(end_flush_deadline(self.cfg.end_flush_budget, None)))
                        .await;
                    st.arm();
                }
                _ = sleep_until_opt(st.next_flush), if st.next_flush.is_some() => {
                    st.next_flush = None;
                    let _ = self.sink_tx.try_send(Command::Flush(None));
                }
            }
            if let Some((id, d)) = &st.awaiting_end {
                if self.end_of_invoke_seen(id) {
                    let d = end_flush_deadline(self.cfg.end_flush_budget, Some(*d));
                    st.awaiting_end = None;
                    self.flush_and_wait(Some(d)).await;
                    st.arm();
                }
            }
            let period = self.policy.background_period(Instant::now());
            match (period, st.next_flush) {
                (Some(p), None) => st.next_flush = Some(tokio::time::Instant::now() + p),
                (None, Some(_)) => st.next_flush = None,
                _ => {}
            }
        }
    }

    /// An INVOKE: joined, then either `/next` at once or an `end` flush that waits for the
    /// invocation to finish.
    async fn on_invoke(&mut self, st: &mut LoopState, request_id: String, deadline_ms: u64) {
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
            let done = self.join.decorator_went_silent();
            self.publish(done).await;
        }
        if !self.policy.flush_at_end(now) {
            st.arm();
        } else if !self.presence.expect_record() {
            // No record will come: nothing this invocation produces can be sent before
            // `/next` (its report follows `/next`), so what is complete goes out now, without
            // holding the invocation.
            let _ = self.sink_tx.try_send(Command::Flush(None));
            st.arm();
        } else {
            // Give up waiting 50 ms before the function's own deadline.
            let left = deadline_ms.saturating_sub(epoch_ms() + 50);
            let d = tokio::time::Instant::now() + Duration::from_millis(left);
            st.awaiting_end = Some((request_id, d));
        }
    }

    /// The runtime finished the invocation (its record or `runtimeDone` arrived, or its process
    /// is gone), or the decorator went silent meanwhile: stop waiting.
    fn end_of_invoke_seen(&self, request_id: &str) -> bool {
        !self.presence.expect_record() || self.join.finished(request_id) || self.runtime_gone()
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
}

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

#[cfg(test)]
mod tests {
    use super::Platform;

    #[test]
    fn the_initialization_type_names_the_platform() {
        for supported in [
            None,
            Some("on-demand"),
            Some("provisioned-concurrency"),
            Some("snap-start"),
        ] {
            assert_eq!(
                Platform::of(supported),
                Platform::Supported,
                "{supported:?}"
            );
        }
        assert_eq!(
            Platform::of(Some("lambda-managed-instances")),
            Platform::ManagedInstances
        );
        assert_eq!(
            Platform::of(Some("warp-drive")),
            Platform::Unknown("warp-drive")
        );
    }
}
