//! Start-up: bind the intake and the telemetry listener, register, subscribe, start the sink
//! worker; everything before the first `/next`, which is the function's cold start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::managed::Managed;
use super::{Agent, EVENT_CHANNEL};
use crate::analysis::environment::EnvironmentAnalysis;
use crate::analysis::processes::ProcessAnalyses;
use crate::config::{Config, FlushMode, SinkKind};
use crate::flush::{FlushPolicy, ADAPTIVE_PERIOD};
use crate::invocation::{Join, JoinConfig, SourceEvent, DEFAULT_MAX_PARKED};
use crate::lifecycle::{
    Events, ExtensionClient, Subscription, MANAGED_INSTANCES_TELEMETRY_SCHEMA, TELEMETRY_SCHEMA,
};
use crate::metrics::Dimensions;
use crate::presence::DecoratorPresence;
use crate::sinks::{self, cloudwatch::CloudWatchSink, Destination, Sink};
use crate::sources::limits::Limits;
use crate::sources::{intake, telemetry};
use crate::stats::Counters;

/// Everything up to the first `/next`: the agent, and the receiver of the sources' events.
/// `managed`: Lambda Managed Instances (SHUTDOWN only, schema 2025-01-29, one history per
/// runtime process, background flushes).
pub(super) async fn start(
    mut cfg: Config,
    client: &mut ExtensionClient,
    name: &str,
    counters: Arc<Counters>,
    managed: bool,
) -> anyhow::Result<(Agent, mpsc::Receiver<SourceEvent>)> {
    // Finding the telemetry listener's address may need a DNS lookup (when /etc/hosts does not
    // name sandbox.localdomain): run it while registering, not after, since init time is cold
    // start time.
    let telemetry_listener = tokio::spawn(telemetry::bind());
    // The intake is bound before registering: Lambda starts the runtime once every extension
    // registered, and the decorator says hello while the handler's module is imported.
    let intake = intake::bind(cfg.intake_port).await;
    let events = if managed {
        // The platform allows no INVOKE there; the environment is never frozen, so a
        // background flush is always possible.
        if !matches!(cfg.flush, FlushMode::Periodic(_)) {
            cfg.flush = FlushMode::Periodic(ADAPTIVE_PERIOD);
        }
        tracing::info!(flush = ?cfg.flush, "Lambda Managed Instances: SHUTDOWN only, one history per runtime process");
        Events::ShutdownOnly
    } else {
        Events::InvokeAndShutdown
    };
    let reg = register_with_retry(client, name, events).await?;

    let (tx, rx) = mpsc::channel::<SourceEvent>(EVENT_CHANNEL);
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
        // Concurrent invocations' records all wait for their (buffered) `platform.start`.
        max_parked: if managed {
            cfg.max_pending.max(DEFAULT_MAX_PARKED)
        } else {
            DEFAULT_MAX_PARKED
        },
        concurrent: managed,
    });
    let schema = if managed {
        MANAGED_INSTANCES_TELEMETRY_SCHEMA
    } else {
        TELEMETRY_SCHEMA
    };
    let telemetry_addr = start_telemetry(
        telemetry_listener,
        client,
        &cfg,
        schema,
        tx.clone(),
        &counters,
    )
    .await;
    if telemetry_addr.is_none() {
        join.set_telemetry_active(false);
        if managed {
            // There `platform.start` is what makes a record's request id real.
            tracing::warn!("no telemetry on Lambda Managed Instances: decorator records cannot be joined, nothing per invocation is published");
        }
    }
    drop(tx);
    let function_name = cfg
        .lambda
        .function_name
        .clone()
        .unwrap_or_else(|| reg.function_name.clone());
    let destination = Destination {
        namespace: cfg.namespace.clone(),
        dims: Dimensions::new(cfg.dimensions, &function_name, &reg.function_version),
        storage_resolution: cfg.storage_resolution,
    };
    let (sink_tx, sink_rx) = mpsc::channel(256);
    let (destination_tx, destination_rx) = watch::channel(destination.clone());
    tokio::spawn(sinks::worker(
        sink_for(cfg.sink, destination.clone()),
        sink_rx,
        destination_rx,
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
    let memory_mb = cfg.lambda.memory_mb;
    let managed = managed.then(|| {
        Managed::new(
            ProcessAnalyses::new(cfg.leak.clone(), cfg.rightsize.clone(), memory_mb),
            memory_mb,
        )
    });
    let agent = Agent {
        current_invocations,
        limits: Limits::for_memory(memory_mb),
        analysis: EnvironmentAnalysis::new(cfg.leak.clone(), cfg.rightsize.clone(), memory_mb),
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
        destination_tx,
        function_version: reg.function_version,
        decorator_sink: None,
        sink_warned: false,
        managed,
    };
    Ok((agent, rx))
}

/// The configured sink, publishing to `to`.
fn sink_for(kind: SinkKind, to: Destination) -> Sink {
    match kind {
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
    }
}

/// Registers, trying three times (a refused first attempt must not fail the function).
pub async fn register_with_retry(
    client: &mut ExtensionClient,
    name: &str,
    events: Events,
) -> anyhow::Result<crate::lifecycle::Registration> {
    let mut attempt = 0u64;
    loop {
        match client.register(name, events).await {
            Ok(r) => return Ok(r),
            Err(e) if attempt < 2 => {
                tracing::warn!(attempt, error = %crate::error_chain(&e), "register failed");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            // The cause is kept: main logs the whole chain.
            Err(e) => return Err(anyhow::Error::new(e).context("register failed 3 times")),
        }
    }
}

/// Binds the listener and subscribes. `None` when telemetry is unavailable (logged once).
async fn start_telemetry(
    listener: tokio::task::JoinHandle<std::io::Result<tokio::net::TcpListener>>,
    client: &ExtensionClient,
    cfg: &Config,
    schema: &str,
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
    match client
        .subscribe(&uri, cfg.telemetry_timeout_ms, schema)
        .await
    {
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
            tracing::warn!(error = %crate::error_chain(&e), "telemetry subscription failed; decorator data only");
            None
        }
    }
}
