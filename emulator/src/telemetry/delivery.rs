//! Per-subscriber buffered delivery: batches of records POSTed to the subscriber's listener
//! (the same machinery for the Telemetry API and the Logs API).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Subscription;

/// Messages to a subscriber's delivery task.
pub enum Msg {
    /// One serialized `{"time","type","record"}` object.
    Record(String),
    /// Deliver everything buffered now; answer when done (or given up).
    Flush(oneshot::Sender<()>),
}

const MAX_ATTEMPTS: u32 = 5;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one subscriber: buffers records and POSTs JSON arrays when `maxItems`/`maxBytes` is
/// reached or `timeoutMs` after the first buffered record; ends when the sender is dropped
/// (after delivering what is left).
pub async fn deliver_loop(sub: Subscription, name: String, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut buf: Vec<String> = Vec::new();
    let mut bytes = 2usize;
    let mut first_at: Option<Instant> = None;
    loop {
        let wake = first_at.map(|t| t + sub.timeout);
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = sleep_until_opt(wake) => {
                send_batch(&sub, &name, &mut buf, &mut bytes).await;
                first_at = None;
                continue;
            }
        };
        match msg {
            Some(Msg::Record(r)) => {
                // A batch never exceeds maxBytes: send what is buffered first.
                if !buf.is_empty() && bytes + r.len() + 1 > sub.max_bytes {
                    send_batch(&sub, &name, &mut buf, &mut bytes).await;
                    first_at = None;
                }
                bytes += r.len() + 1;
                buf.push(r);
                first_at.get_or_insert_with(Instant::now);
                if buf.len() >= sub.max_items || bytes >= sub.max_bytes {
                    send_batch(&sub, &name, &mut buf, &mut bytes).await;
                    first_at = None;
                }
            }
            Some(Msg::Flush(done)) => {
                send_batch(&sub, &name, &mut buf, &mut bytes).await;
                first_at = None;
                let _ = done.send(());
            }
            None => {
                send_batch(&sub, &name, &mut buf, &mut bytes).await;
                return;
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn send_batch(sub: &Subscription, name: &str, buf: &mut Vec<String>, bytes: &mut usize) {
    if buf.is_empty() {
        return;
    }
    let body = format!("[{}]", buf.join(","));
    let count = buf.len();
    buf.clear();
    *bytes = 2;
    let mut backoff = Duration::from_millis(50);
    for attempt in 1..=MAX_ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(sub, body.clone())).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                tracing::debug!(extension = name, count, "telemetry batch delivered");
                return;
            }
            Ok(Ok(status)) => {
                tracing::debug!(extension = name, status, attempt, "telemetry batch refused")
            }
            Ok(Err(e)) => {
                tracing::debug!(extension = name, error = %e, attempt, "telemetry delivery failed")
            }
            Err(_) => tracing::debug!(extension = name, attempt, "telemetry delivery timed out"),
        }
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::warn!(
        extension = name,
        count,
        "telemetry batch dropped after {MAX_ATTEMPTS} attempts"
    );
}

#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
}

async fn post(sub: &Subscription, body: String) -> Result<u16, PostError> {
    let stream = tokio::net::TcpStream::connect(sub.addr).await?;
    // Lambda's header casing (`Content-Type`), for listeners that compare names exactly.
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(stream))
        .await?;
    let conn_task = tokio::spawn(conn);
    let req = hyper::Request::post(sub.path.as_str())
        .header(hyper::header::HOST, sub.host_header.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    // Drain the body so the listener sees a complete exchange.
    let _ = resp.into_body().collect().await;
    drop(sender);
    conn_task.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Api;
    use serde_json::Value;

    /// A loopback listener that records the body of every POST it answers (with `status`).
    async fn listener(status: u16) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Vec<Value>>>>) {
        use hyper::service::service_fn;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let got2 = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let got = got2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let got = got.clone();
                        async move {
                            let b = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Vec<Value> = serde_json::from_slice(&b).unwrap();
                            got.lock().unwrap().push(v);
                            let mut r = hyper::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (port, got)
    }

    fn sub(port: u16, max_items: usize, max_bytes: usize, timeout_ms: u64) -> Subscription {
        Subscription {
            api: Api::Telemetry,
            schema: "2022-12-13".into(),
            types: vec!["platform".into()],
            max_items,
            max_bytes,
            timeout: Duration::from_millis(timeout_ms),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            host_header: format!("sandbox.localdomain:{port}"),
            path: "/".into(),
        }
    }

    fn record(i: usize, pad: usize) -> String {
        serde_json::json!({"time": "t", "type": "function", "record": format!("{i}:{}", "x".repeat(pad))})
            .to_string()
    }

    #[tokio::test]
    async fn batches_are_cut_at_max_items() {
        let (port, got) = listener(200).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(deliver_loop(
            sub(port, 1000, 1_048_576, 30_000),
            "t".into(),
            rx,
        ));
        for i in 0..2500 {
            tx.send(Msg::Record(record(i, 1))).unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let sizes: Vec<usize> = got.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        let all: Vec<String> = got
            .lock()
            .unwrap()
            .concat()
            .iter()
            .map(|r| r["record"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(all.len(), 2500);
        assert!(
            all[0].starts_with("0:") && all[2499].starts_with("2499:"),
            "order kept"
        );
    }

    #[tokio::test]
    async fn batches_never_exceed_max_bytes() {
        let (port, got) = listener(200).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(deliver_loop(
            sub(port, 10_000, 262_144, 30_000),
            "t".into(),
            rx,
        ));
        for i in 0..100 {
            tx.send(Msg::Record(record(i, 10_000))).unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let batches = got.lock().unwrap().clone();
        assert!(batches.len() >= 4, "{} batches", batches.len());
        for b in &batches {
            assert!(serde_json::to_string(b).unwrap().len() <= 262_144);
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 100);
    }

    #[tokio::test]
    async fn a_partial_batch_is_sent_after_timeout_ms_without_any_flush() {
        let (port, got) = listener(200).await;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(deliver_loop(sub(port, 1000, 262_144, 25), "t".into(), rx));
        for i in 0..3 {
            tx.send(Msg::Record(record(i, 1))).unwrap();
        }
        let mut delivered = 0;
        for _ in 0..500 {
            delivered = got.lock().unwrap().iter().map(Vec::len).sum::<usize>();
            if delivered == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(delivered, 3);
        drop(tx);
    }

    #[tokio::test]
    async fn a_refusing_listener_gets_bounded_retries() {
        let (port, got) = listener(500).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(deliver_loop(sub(port, 1000, 262_144, 25), "t".into(), rx));
        tx.send(Msg::Record(record(1, 1))).unwrap();
        let (done_tx, done_rx) = oneshot::channel();
        tx.send(Msg::Flush(done_tx)).unwrap();
        done_rx.await.unwrap();
        assert_eq!(got.lock().unwrap().len(), MAX_ATTEMPTS as usize);
        drop(tx);
        task.await.unwrap();
    }
}
