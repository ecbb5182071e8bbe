//! Telemetry API: the listener Lambda POSTs batches to, and a tolerant parser for the batches.
//!
//! Every batch gets `200 OK`, even one that cannot be parsed (otherwise Lambda resends it
//! forever). Unknown record types and fields are skipped.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

use crate::invocation::SourceEvent;
use crate::stats::{Counters, RateLimiter};

/// Host name Lambda delivers telemetry to; it names the sandbox's own address.
pub const SANDBOX_HOST: &str = "sandbox.localdomain";
/// Path of the listener in the subscribe URI.
pub const LISTENER_PATH: &str = "/telemetry";
/// Larger than Lambda's maximum `maxBytes` (1 MiB) with room for framing.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// `platform.report`: the platform's figures for one finished invocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// `record.requestId`: the invocation the report is about (never empty).
    pub request_id: String,
    /// `record.status`: `success`, `failure`, `error` or `timeout`; `None` when absent.
    pub status: Option<String>,
    /// `record.errorType` (e.g. `Runtime.OutOfMemory`); `None` when the invocation did not fail.
    pub error_type: Option<String>,
    /// `metrics.durationMs`: the invocation's duration as Lambda measured it, milliseconds.
    pub duration_ms: Option<f64>,
    /// `metrics.billedDurationMs`: the duration billed, milliseconds.
    pub billed_duration_ms: Option<f64>,
    /// `metrics.memorySizeMB`: the function's configured memory, megabytes.
    pub memory_size_mb: Option<f64>,
    /// `metrics.maxMemoryUsedMB`: the environment's memory high-water mark (runtime and
    /// extensions, never decreasing), megabytes.
    pub max_memory_used_mb: Option<f64>,
    /// `metrics.initDurationMs`: the init phase's duration, milliseconds; only on a cold start.
    pub init_duration_ms: Option<f64>,
    /// `metrics.restoreDurationMs`: the snapshot restore's duration (SnapStart), milliseconds;
    /// `None` for environments not restored from a snapshot.
    pub restore_duration_ms: Option<f64>,
}

/// `platform.runtimeDone`: the runtime finished (or failed) an invocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeDone {
    /// `record.requestId`: the invocation the runtime finished (never empty).
    pub request_id: String,
    /// `record.status`: `success`, `failure`, `error` or `timeout`; `None` when absent.
    pub status: Option<String>,
    /// `record.errorType` (e.g. `Runtime.OutOfMemory`); `None` when the runtime did not fail.
    pub error_type: Option<String>,
    /// `metrics.durationMs`: time the runtime spent on the invocation, milliseconds.
    pub duration_ms: Option<f64>,
}

/// The telemetry records this extension uses.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryEvent {
    /// `platform.initStart`: the environment's init phase began.
    InitStart {
        /// `record.functionName`; `None` when absent.
        function_name: Option<String>,
        /// `record.functionVersion` (`$LATEST` or a number); `None` when absent.
        function_version: Option<String>,
    },
    /// `platform.initReport`: the init phase ended.
    InitReport {
        /// `record.metrics.durationMs`: the init phase's duration, milliseconds.
        duration_ms: Option<f64>,
    },
    /// `platform.start`: an invocation began.
    Start {
        /// `record.requestId` (never empty).
        request_id: String,
    },
    /// `platform.runtimeDone`: the runtime answered (or failed) an invocation.
    RuntimeDone(RuntimeDone),
    /// `platform.report`: the platform's figures for a finished invocation.
    Report(Report),
    /// `platform.restoreStart`: this environment is a copy being restored from a SnapStart
    /// snapshot (what came before it is the snapshot's, shared by every copy).
    RestoreStart,
    /// `platform.logsDropped`: Lambda dropped telemetry records this extension did not take in
    /// time.
    LogsDropped {
        /// `record.droppedRecords`: how many were dropped; `None` when absent.
        dropped_records: Option<u64>,
    },
}

/// What came out of one batch.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedBatch {
    /// The records this extension uses, in the order of the batch.
    pub events: Vec<TelemetryEvent>,
    /// Well-formed records of types this extension does not use (function logs, new types, ...).
    pub skipped: usize,
    /// Items that were not records, or known records missing what they must carry.
    pub invalid: usize,
}

/// Why a telemetry batch was not used (answered 200 all the same, counted).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The body is not JSON.
    #[error("batch is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not the array of records the Telemetry API sends.
    #[error("batch is not a JSON array")]
    NotAnArray,
}

/// Parses a batch body. `Err` only when the body is not a JSON array.
pub fn parse_batch(body: &[u8]) -> Result<ParsedBatch, BatchError> {
    let parsed: Value = serde_json::from_slice(body).map_err(BatchError::NotJson)?;
    let items = parsed.as_array().ok_or(BatchError::NotAnArray)?;
    let mut batch = ParsedBatch::default();
    for item in items {
        match parse_item(item) {
            Item::Event(event) => batch.events.push(event),
            Item::Skipped => batch.skipped += 1,
            Item::Invalid => batch.invalid += 1,
        }
    }
    Ok(batch)
}

/// What one item of a batch turned out to be.
enum Item {
    Event(TelemetryEvent),
    Skipped,
    Invalid,
}

/// The string field `key` of `object`; `None` when absent or not a string.
fn string_field(object: &Value, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The number field `key` of `object`; `None` when absent, not a number, or not finite.
fn finite_number_field(object: &Value, key: &str) -> Option<f64> {
    object
        .get(key)
        .and_then(Value::as_f64)
        .filter(|number| number.is_finite())
}

fn parse_item(item: &Value) -> Item {
    let Some(record_type) = item.get("type").and_then(Value::as_str) else {
        return Item::Invalid;
    };
    let record = item.get("record").unwrap_or(&Value::Null);
    let metrics = record.get("metrics").unwrap_or(&Value::Null);
    let request_id = || string_field(record, "requestId").filter(|id| !id.is_empty());
    let event = match record_type {
        "platform.initStart" => TelemetryEvent::InitStart {
            function_name: string_field(record, "functionName"),
            function_version: string_field(record, "functionVersion"),
        },
        "platform.initReport" => TelemetryEvent::InitReport {
            duration_ms: finite_number_field(metrics, "durationMs"),
        },
        "platform.start" => match request_id() {
            Some(request_id) => TelemetryEvent::Start { request_id },
            None => return Item::Invalid,
        },
        "platform.runtimeDone" => match request_id() {
            Some(request_id) => TelemetryEvent::RuntimeDone(RuntimeDone {
                request_id,
                status: string_field(record, "status"),
                error_type: string_field(record, "errorType"),
                duration_ms: finite_number_field(metrics, "durationMs"),
            }),
            None => return Item::Invalid,
        },
        "platform.report" => match request_id() {
            Some(request_id) => TelemetryEvent::Report(Report {
                request_id,
                status: string_field(record, "status"),
                error_type: string_field(record, "errorType"),
                duration_ms: finite_number_field(metrics, "durationMs"),
                billed_duration_ms: finite_number_field(metrics, "billedDurationMs"),
                memory_size_mb: finite_number_field(metrics, "memorySizeMB"),
                max_memory_used_mb: finite_number_field(metrics, "maxMemoryUsedMB"),
                init_duration_ms: finite_number_field(metrics, "initDurationMs"),
                restore_duration_ms: finite_number_field(metrics, "restoreDurationMs"),
            }),
            None => return Item::Invalid,
        },
        "platform.restoreStart" => TelemetryEvent::RestoreStart,
        "platform.logsDropped" => TelemetryEvent::LogsDropped {
            dropped_records: record.get("droppedRecords").and_then(Value::as_u64),
        },
        _ => return Item::Skipped,
    };
    Item::Event(event)
}

/// The address to bind: the one `sandbox.localdomain` names in `/etc/hosts` (that is where Lambda
/// delivers), else 127.0.0.1. Never a wildcard address. Reads the file rather than resolving the
/// name, so no DNS query can slow the init path.
pub fn listen_ip(hosts_text: Option<&str>) -> IpAddr {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Some(text) = hosts_text else {
        return loopback;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(addr) = fields.next().and_then(|text| text.parse::<IpAddr>().ok()) else {
            continue;
        };
        if fields.any(|name| name.eq_ignore_ascii_case(SANDBOX_HOST)) && !addr.is_unspecified() {
            return addr;
        }
    }
    loopback
}

/// How long the name may take to resolve when `/etc/hosts` does not list it.
const RESOLVE_TIMEOUT: Duration = Duration::from_millis(100);

/// The sandbox address: `/etc/hosts` first (no query at all), else the resolver, bounded by
/// [`RESOLVE_TIMEOUT`]; 127.0.0.1 when neither names it.
async fn sandbox_ip() -> IpAddr {
    let hosts = std::fs::read_to_string("/etc/hosts").ok();
    let from_hosts = listen_ip(hosts.as_deref());
    if !from_hosts.is_loopback() || hosts.as_deref().is_some_and(names_sandbox) {
        return from_hosts;
    }
    let lookup = tokio::net::lookup_host((SANDBOX_HOST, 0));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => addrs
            .map(|socket_addr| socket_addr.ip())
            .find(|ip| !ip.is_unspecified())
            .unwrap_or(from_hosts),
        _ => from_hosts,
    }
}

/// True when some (uncommented) line of a hosts file lists `sandbox.localdomain` as a name.
fn names_sandbox(hosts: &str) -> bool {
    hosts.lines().any(|line| {
        line.split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .any(|name| name.eq_ignore_ascii_case(SANDBOX_HOST))
    })
}

/// Binds the listener (sandbox address, falling back to 127.0.0.1) on an ephemeral port.
pub async fn bind() -> std::io::Result<TcpListener> {
    let ip = sandbox_ip().await;
    match TcpListener::bind(SocketAddr::new(ip, 0)).await {
        Ok(listener) => Ok(listener),
        Err(e) if !ip.is_loopback() => {
            tracing::warn!(%ip, error = %e, "cannot bind the sandbox address; using 127.0.0.1");
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await
        }
        Err(e) => Err(e),
    }
}

/// What every connection of the listener shares.
struct ListenerState {
    /// Where parsed events go (to the join).
    tx: mpsc::Sender<SourceEvent>,
    counters: Arc<Counters>,
    /// Rate limit of the warnings about unusable batches.
    warn: Mutex<RateLimiter>,
}

/// Serves the listener forever. Accept and connection errors are logged and survived.
pub async fn serve(listener: TcpListener, tx: mpsc::Sender<SourceEvent>, counters: Arc<Counters>) {
    let state = Arc::new(ListenerState {
        tx,
        counters,
        warn: Mutex::new(RateLimiter::new(Duration::from_secs(60))),
    });
    let mut accept_warn = RateLimiter::new(Duration::from_secs(60));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if let Some(suppressed) = accept_warn.check(std::time::Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "telemetry accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "telemetry connection ended with an error");
            }
        });
    }
}

/// Answers one POST of a batch: counts it, forwards its events, and always answers `200 OK`.
async fn handle(
    req: Request<Incoming>,
    state: Arc<ListenerState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            Counters::incr(&state.counters.telemetry_unparsed);
            warn_limited(&state, &format!("telemetry body not read: {e}")).await;
            return Ok(empty_ok());
        }
    };
    match parse_batch(&body) {
        Ok(batch) => {
            Counters::add(
                &state.counters.telemetry_received,
                batch.events.len() as u64,
            );
            if batch.invalid > 0 {
                Counters::add(&state.counters.telemetry_unparsed, batch.invalid as u64);
                warn_limited(
                    &state,
                    &format!("{} telemetry records could not be used", batch.invalid),
                )
                .await;
            }
            for event in batch.events {
                if state.tx.try_send(SourceEvent::Telemetry(event)).is_err() {
                    Counters::incr(&state.counters.events_channel_full);
                }
            }
        }
        Err(e) => {
            Counters::incr(&state.counters.telemetry_unparsed);
            warn_limited(
                &state,
                &format!("telemetry batch not parsed: {}", crate::error_chain(&e)),
            )
            .await;
        }
    }
    Ok(empty_ok())
}

/// Logs `msg` as a warning unless one was logged less than a minute ago.
async fn warn_limited(state: &ListenerState, msg: &str) {
    if let Some(suppressed) = state.warn.lock().await.check(Instant::now()) {
        tracing::warn!(suppressed, "{msg}");
    }
}

/// `200 OK` with an empty body: the answer to every batch.
fn empty_ok() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/telemetry")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn parses_a_cold_invocation_batch() {
        let batch = parse_batch(&fixture("cold_batch.json")).unwrap();
        assert_eq!(batch.invalid, 0);
        // function log line (string), JSON function log (object), extension log: skipped.
        assert_eq!(batch.skipped, 3);
        assert_eq!(batch.events.len(), 5);
        assert_eq!(
            batch.events[0],
            TelemetryEvent::InitStart {
                function_name: Some("orders".into()),
                function_version: Some("$LATEST".into())
            }
        );
        assert_eq!(
            batch.events[1],
            TelemetryEvent::InitReport {
                duration_ms: Some(412.5)
            }
        );
        let TelemetryEvent::Report(report) = &batch.events[4] else {
            panic!("{:?}", batch.events[4])
        };
        assert_eq!(report.request_id, "req-1");
        assert_eq!(report.status.as_deref(), Some("success"));
        assert_eq!(report.duration_ms, Some(12.3));
        assert_eq!(report.billed_duration_ms, Some(13.0));
        assert_eq!(report.memory_size_mb, Some(128.0));
        assert_eq!(report.max_memory_used_mb, Some(71.0));
        assert_eq!(report.init_duration_ms, Some(412.5));
    }

    #[test]
    fn unknown_types_and_fields_are_skipped() {
        let batch = parse_batch(&fixture("unknown_types.json")).unwrap();
        // `platform.restoreStart` is one of ours now (SnapStart); the rest is skipped.
        assert_eq!(batch.skipped, 1, "{batch:?}");
        assert_eq!(batch.invalid, 0);
        assert_eq!(batch.events[0], TelemetryEvent::RestoreStart);
        let TelemetryEvent::Report(report) = &batch.events[1] else {
            panic!()
        };
        assert_eq!(report.error_type.as_deref(), Some("Runtime.OutOfMemory"));
        assert_eq!(report.init_duration_ms, None);
    }

    #[test]
    fn invalid_items_are_counted_and_the_rest_kept() {
        let batch = parse_batch(&fixture("invalid_items.json")).unwrap();
        assert_eq!(batch.invalid, 4, "{batch:?}");
        assert_eq!(batch.events.len(), 1);
        assert_eq!(
            batch.events[0],
            TelemetryEvent::Start {
                request_id: "ok".into()
            }
        );
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        assert!(parse_batch(&fixture("malformed.json")).is_err());
        assert!(parse_batch(b"{}").is_err());
        assert!(parse_batch(b"").is_err());
        assert_eq!(parse_batch(b"[]").unwrap(), ParsedBatch::default());
    }

    #[test]
    fn listen_ip_prefers_the_sandbox_entry() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.9 sandbox.localdomain\n169.254.100.1 sandbox.localdomain sandbox\n";
        assert_eq!(
            listen_ip(Some(hosts)),
            "169.254.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            listen_ip(Some("127.0.0.1 localhost\n")),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            listen_ip(Some("0.0.0.0 sandbox.localdomain\n")),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(listen_ip(None), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(names_sandbox(hosts));
        assert!(!names_sandbox(
            "127.0.0.1 localhost\n# 1.2.3.4 sandbox.localdomain\n"
        ));
    }

    #[tokio::test]
    async fn binds_a_non_wildcard_address() {
        let listener = bind().await.expect("bind");
        let addr = listener.local_addr().unwrap();
        assert!(!addr.ip().is_unspecified(), "{addr}");
        assert_ne!(addr.port(), 0);
    }

    async fn post(addr: SocketAddr, body: &'static [u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /telemetry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        // The status code: the second word of the status line.
        response.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn listener_answers_200_to_everything_and_forwards_events() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let counters = Arc::new(Counters::default());
        tokio::spawn(serve(listener, tx, counters.clone()));
        assert_eq!(post(addr, b"garbage{").await, 200);
        assert_eq!(post(addr, b"[1, {\"type\": 3}]").await, 200);
        assert_eq!(
            post(
                addr,
                br#"[{"time":"t","type":"platform.start","record":{"requestId":"r9"}}]"#
            )
            .await,
            200
        );
        let event = rx.recv().await.unwrap();
        assert!(matches!(
            event,
            SourceEvent::Telemetry(TelemetryEvent::Start { .. })
        ));
        assert_eq!(
            counters
                .telemetry_unparsed
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }
}
