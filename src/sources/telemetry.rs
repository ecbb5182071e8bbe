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
    pub request_id: String,
    pub status: Option<String>,
    pub error_type: Option<String>,
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<f64>,
    pub memory_size_mb: Option<f64>,
    pub max_memory_used_mb: Option<f64>,
    pub init_duration_ms: Option<f64>,
    pub restore_duration_ms: Option<f64>,
}

/// `platform.runtimeDone`: the runtime finished (or failed) an invocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeDone {
    pub request_id: String,
    pub status: Option<String>,
    pub error_type: Option<String>,
    pub duration_ms: Option<f64>,
}

/// The telemetry records this extension uses.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryEvent {
    InitStart {
        function_name: Option<String>,
        function_version: Option<String>,
    },
    InitReport {
        duration_ms: Option<f64>,
    },
    Start {
        request_id: String,
    },
    RuntimeDone(RuntimeDone),
    Report(Report),
    LogsDropped {
        dropped_records: Option<u64>,
    },
}

/// What came out of one batch.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedBatch {
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
    let v: Value = serde_json::from_slice(body).map_err(BatchError::NotJson)?;
    let items = v.as_array().ok_or(BatchError::NotAnArray)?;
    let mut out = ParsedBatch::default();
    for item in items {
        match parse_item(item) {
            Item::Event(e) => out.events.push(e),
            Item::Skipped => out.skipped += 1,
            Item::Invalid => out.invalid += 1,
        }
    }
    Ok(out)
}

enum Item {
    Event(TelemetryEvent),
    Skipped,
    Invalid,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn parse_item(item: &Value) -> Item {
    let Some(ty) = item.get("type").and_then(Value::as_str) else {
        return Item::Invalid;
    };
    let rec = item.get("record").unwrap_or(&Value::Null);
    let metrics = rec.get("metrics").unwrap_or(&Value::Null);
    let request_id = || s(rec, "requestId").filter(|r| !r.is_empty());
    let ev = match ty {
        "platform.initStart" => TelemetryEvent::InitStart {
            function_name: s(rec, "functionName"),
            function_version: s(rec, "functionVersion"),
        },
        "platform.initReport" => TelemetryEvent::InitReport {
            duration_ms: f(metrics, "durationMs"),
        },
        "platform.start" => match request_id() {
            Some(request_id) => TelemetryEvent::Start { request_id },
            None => return Item::Invalid,
        },
        "platform.runtimeDone" => match request_id() {
            Some(request_id) => TelemetryEvent::RuntimeDone(RuntimeDone {
                request_id,
                status: s(rec, "status"),
                error_type: s(rec, "errorType"),
                duration_ms: f(metrics, "durationMs"),
            }),
            None => return Item::Invalid,
        },
        "platform.report" => match request_id() {
            Some(request_id) => TelemetryEvent::Report(Report {
                request_id,
                status: s(rec, "status"),
                error_type: s(rec, "errorType"),
                duration_ms: f(metrics, "durationMs"),
                billed_duration_ms: f(metrics, "billedDurationMs"),
                memory_size_mb: f(metrics, "memorySizeMB"),
                max_memory_used_mb: f(metrics, "maxMemoryUsedMB"),
                init_duration_ms: f(metrics, "initDurationMs"),
                restore_duration_ms: f(metrics, "restoreDurationMs"),
            }),
            None => return Item::Invalid,
        },
        "platform.logsDropped" => TelemetryEvent::LogsDropped {
            dropped_records: rec.get("droppedRecords").and_then(Value::as_u64),
        },
        _ => return Item::Skipped,
    };
    Item::Event(ev)
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
        let Some(addr) = fields.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
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
            .map(|a| a.ip())
            .find(|ip| !ip.is_unspecified())
            .unwrap_or(from_hosts),
        _ => from_hosts,
    }
}

fn names_sandbox(hosts: &str) -> bool {
    hosts.lines().any(|l| {
        l.split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .any(|n| n.eq_ignore_ascii_case(SANDBOX_HOST))
    })
}

/// Binds the listener (sandbox address, falling back to 127.0.0.1) on an ephemeral port.
pub async fn bind() -> std::io::Result<TcpListener> {
    let ip = sandbox_ip().await;
    match TcpListener::bind(SocketAddr::new(ip, 0)).await {
        Ok(l) => Ok(l),
        Err(e) if !ip.is_loopback() => {
            tracing::warn!(%ip, error = %e, "cannot bind the sandbox address; using 127.0.0.1");
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await
        }
        Err(e) => Err(e),
    }
}

struct ListenerState {
    tx: mpsc::Sender<SourceEvent>,
    counters: Arc<Counters>,
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
                if let Some(s) = accept_warn.check(std::time::Instant::now()) {
                    tracing::warn!(error = %e, suppressed = s, "telemetry accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, state.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "telemetry connection ended with an error");
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<ListenerState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            Counters::incr(&state.counters.telemetry_unparsed);
            warn_limited(&state, &format!("telemetry body not read: {e}")).await;
            return Ok(ok());
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
            for ev in batch.events {
                if state.tx.try_send(SourceEvent::Telemetry(ev)).is_err() {
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
    Ok(ok())
}

async fn warn_limited(state: &ListenerState, msg: &str) {
    if let Some(s) = state.warn.lock().await.check(Instant::now()) {
        tracing::warn!(suppressed = s, "{msg}");
    }
}

fn ok() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/telemetry")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn parses_a_cold_invocation_batch() {
        let b = parse_batch(&fixture("cold_batch.json")).unwrap();
        assert_eq!(b.invalid, 0);
        // function log line (string), JSON function log (object), extension log: skipped.
        assert_eq!(b.skipped, 3);
        assert_eq!(b.events.len(), 5);
        assert_eq!(
            b.events[0],
            TelemetryEvent::InitStart {
                function_name: Some("orders".into()),
                function_version: Some("$LATEST".into())
            }
        );
        assert_eq!(
            b.events[1],
            TelemetryEvent::InitReport {
                duration_ms: Some(412.5)
            }
        );
        let TelemetryEvent::Report(r) = &b.events[4] else {
            panic!("{:?}", b.events[4])
        };
        assert_eq!(r.request_id, "req-1");
        assert_eq!(r.status.as_deref(), Some("success"));
        assert_eq!(r.duration_ms, Some(12.3));
        assert_eq!(r.billed_duration_ms, Some(13.0));
        assert_eq!(r.memory_size_mb, Some(128.0));
        assert_eq!(r.max_memory_used_mb, Some(71.0));
        assert_eq!(r.init_duration_ms, Some(412.5));
    }

    #[test]
    fn unknown_types_and_fields_are_skipped() {
        let b = parse_batch(&fixture("unknown_types.json")).unwrap();
        assert_eq!(b.skipped, 2, "{b:?}");
        assert_eq!(b.invalid, 0);
        let TelemetryEvent::Report(r) = &b.events[0] else {
            panic!()
        };
        assert_eq!(r.error_type.as_deref(), Some("Runtime.OutOfMemory"));
        assert_eq!(r.init_duration_ms, None);
    }

    #[test]
    fn invalid_items_are_counted_and_the_rest_kept() {
        let b = parse_batch(&fixture("invalid_items.json")).unwrap();
        assert_eq!(b.invalid, 4, "{b:?}");
        assert_eq!(b.events.len(), 1);
        assert_eq!(
            b.events[0],
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
        let l = bind().await.expect("bind");
        let addr = l.local_addr().unwrap();
        assert!(!addr.ip().is_unspecified(), "{addr}");
        assert_ne!(addr.port(), 0);
    }

    async fn post(addr: SocketAddr, body: &'static [u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /telemetry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        resp.split_whitespace().nth(1).unwrap().parse().unwrap()
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
        let ev = rx.recv().await.unwrap();
        assert!(matches!(
            ev,
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
