//! The built extension against a minimal Extensions API that answers the telemetry subscription
//! with `202 Telemetry.NotSupported` (what `sam local` does): it must keep working on the
//! decorator's records alone and flush them at SHUTDOWN, then exit 0 before the deadline.
//! Driving the API by hand also lets this test read the SHUTDOWN flush on the process's stdout.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Mutex};

struct Api {
    /// Events handed out by `/event/next`, one per call.
    events: Mutex<mpsc::Receiver<Value>>,
    /// Told every time the extension calls `/event/next`.
    next_called: mpsc::Sender<()>,
    subscribed: mpsc::Sender<Value>,
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    api: Arc<Api>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let resp = match path.as_str() {
        "/2020-01-01/extension/register" => Response::builder()
            .header("Lambda-Extension-Identifier", "ext-1")
            .body(Full::new(Bytes::from(
                json!({"functionName": "fake-fn", "functionVersion": "7", "handler": "app.handler"}).to_string(),
            ))),
        "/2022-07-01/telemetry" => {
            let _ = api.subscribed.send(serde_json::from_slice(&body).unwrap_or(Value::Null)).await;
            Response::builder().status(202).body(Full::new(Bytes::from(
                r#"{"errorType":"Telemetry.NotSupported","errorMessage":"Telemetry API is not supported"}"#,
            )))
        }
        "/2020-01-01/extension/event/next" => {
            let _ = api.next_called.send(()).await;
            let ev = api.events.lock().await.recv().await.unwrap_or(Value::Null);
            Response::builder().body(Full::new(Bytes::from(ev.to_string())))
        }
        _ => Response::builder().status(404).body(Full::new(Bytes::new())),
    };
    Ok(resp.unwrap())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Harness {
    ev_tx: mpsc::Sender<Value>,
    next_rx: mpsc::Receiver<()>,
    sub_rx: mpsc::Receiver<Value>,
    child: tokio::process::Child,
    out_task: tokio::task::JoinHandle<String>,
    err_task: tokio::task::JoinHandle<String>,
    intake_port: u16,
}

/// Serves the fake API and starts the extension against it with `env` (plus the basics).
async fn start(env: &[(&str, &str)]) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let (ev_tx, ev_rx) = mpsc::channel(8);
    let (next_tx, next_rx) = mpsc::channel(8);
    let (sub_tx, sub_rx) = mpsc::channel(1);
    let api = Arc::new(Api {
        events: Mutex::new(ev_rx),
        next_called: next_tx,
        subscribed: sub_tx,
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let api = api.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r| handle(r, api.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let intake_port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lambda-memory-profiler"));
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", api_addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "fake-fn")
        .env("LMP_SINK", "emf")
        .env("LMP_INTAKE_PORT", intake_port.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn extension");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s).await;
        s
    });
    let err_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    Harness {
        ev_tx,
        next_rx,
        sub_rx,
        child,
        out_task,
        err_task,
        intake_port,
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_decorator_data_alone_and_flushes_at_shutdown() {
    let h = start(&[
        ("LMP_FLUSH", "periodic:3600"),
        ("LMP_DIMENSIONS", "FunctionName,FunctionVersion"),
    ])
    .await;
    let Harness {
        ev_tx,
        mut next_rx,
        mut sub_rx,
        mut child,
        out_task,
        err_task,
        intake_port,
    } = h;
    let wait = WAIT;
    let sub = tokio::time::timeout(wait, sub_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub["buffering"]["timeoutMs"], 50);
    assert!(sub["destination"]["URI"]
        .as_str()
        .unwrap()
        .starts_with("http://sandbox.localdomain:"));
    tokio::time::timeout(wait, next_rx.recv())
        .await
        .expect("first /next")
        .unwrap();

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let pid = std::process::id();
    for i in 0..3u64 {
        let id = format!("req-{i}");
        ev_tx
            .send(
                json!({"eventType": "INVOKE", "requestId": id, "deadlineMs": now_ms() + 10_000,
                          "invokedFunctionArn": "arn:aws:lambda:us-east-1:1:function:fake-fn"}),
            )
            .await
            .unwrap();
        if i == 0 {
            let hello = json!({"v": 1, "kind": "hello", "pid": pid, "runtime": "python3.11"});
            udp.send_to(hello.to_string().as_bytes(), ("127.0.0.1", intake_port))
                .unwrap();
        }
        let rec = json!({"v": 1, "kind": "invocation", "request_id": id, "pid": pid,
            "runtime": "python3.11", "start_ms": now_ms() as f64, "duration_ms": 10.0 + i as f64,
            "cold_start": i == 0, "error_type": null, "rss_peak_bytes": 50_000_000 + i,
            "rss_peak_scope": "invocation", "heap_blocks": 1000,
            "gc": {"collections": i, "collected": 5, "uncollectable": 0, "garbage": 0}, "trace": null});
        udp.send_to(rec.to_string().as_bytes(), ("127.0.0.1", intake_port))
            .unwrap();
        tokio::time::timeout(wait, next_rx.recv())
            .await
            .expect("next /next")
            .unwrap();
    }
    let t0 = std::time::Instant::now();
    ev_tx
        .send(json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": now_ms() + 2_000}))
        .await
        .unwrap();
    let status = tokio::time::timeout(wait, child.wait())
        .await
        .expect("exits")
        .unwrap();
    let took = t0.elapsed();
    let out = out_task.await.unwrap();
    let err = err_task.await.unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    assert!(
        took < Duration::from_secs(2),
        "exit {took:?} after SHUTDOWN"
    );
    eprintln!("exit {took:?} after SHUTDOWN");
    assert!(err.contains("telemetry not supported"), "{err}");

    let docs: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    let values = |name: &str| -> Vec<f64> {
        let mut v: Vec<f64> = docs
            .iter()
            .flat_map(|d| match &d[name] {
                Value::Array(a) => a.iter().filter_map(Value::as_f64).collect(),
                Value::Number(n) => n.as_f64().into_iter().collect(),
                _ => vec![],
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    assert_eq!(values("Duration"), vec![10.0, 11.0, 12.0], "{out}");
    assert_eq!(values("ColdStart"), vec![0.0, 0.0, 1.0]);
    assert_eq!(values("GcCollections"), vec![0.0, 1.0, 2.0]);
    assert_eq!(
        values("RuntimeRssPeak"),
        vec![50_000_000.0, 50_000_001.0, 50_000_002.0]
    );
    assert_eq!(
        values("RuntimeRss").len(),
        3,
        "read from /proc/<pid> of this test process"
    );
    assert!(
        values("MaxMemoryUsed").is_empty(),
        "no telemetry, no platform figures"
    );
    for d in &docs {
        assert_eq!(d["FunctionName"], "fake-fn");
        assert_eq!(d["FunctionVersion"], "7");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_flush_does_not_wait_for_a_dead_runtime() {
    let mut h = start(&[("LMP_FLUSH", "end")]).await;
    tokio::time::timeout(WAIT, h.sub_rx.recv())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, h.next_rx.recv())
        .await
        .expect("first /next")
        .unwrap();
    // A "runtime" that serves invocation 0, then dies during invocation 1 without its record.
    let mut runtime = tokio::process::Command::new("sleep")
        .arg("1")
        .spawn()
        .unwrap();
    let pid = runtime.id().unwrap();
    let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let exited2 = exited.clone();
    // Reap it (a zombie keeps its /proc entry), and note when it is gone.
    tokio::spawn(async move {
        let _ = runtime.wait().await;
        exited2.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |v: Value| {
        udp.send_to(v.to_string().as_bytes(), ("127.0.0.1", h.intake_port))
            .unwrap();
    };
    h.ev_tx
        .send(json!({"eventType": "INVOKE", "requestId": "req-0", "deadlineMs": now_ms() + 60_000}))
        .await
        .unwrap();
    send(json!({"v": 1, "kind": "hello", "pid": pid, "runtime": "python3.11"}));
    send(
        json!({"v": 1, "kind": "invocation", "request_id": "req-0", "pid": pid, "duration_ms": 1.0}),
    );
    tokio::time::timeout(WAIT, h.next_rx.recv())
        .await
        .expect("/next after req-0")
        .unwrap();
    h.ev_tx
        .send(json!({"eventType": "INVOKE", "requestId": "req-1", "deadlineMs": now_ms() + 60_000}))
        .await
        .unwrap();
    // The decorator is known now, so the extension waits for req-1's record; it never comes.
    // Without the watch it would hold `/next` until the deadline, 60 s away.
    let t0 = std::time::Instant::now();
    tokio::time::timeout(WAIT, h.next_rx.recv())
        .await
        .expect("/next once the runtime was gone, long before the deadline")
        .unwrap();
    assert!(
        exited.load(std::sync::atomic::Ordering::SeqCst),
        "/next came while the runtime was alive: it should have waited for the record"
    );
    eprintln!("/next {:?} after the INVOKE", t0.elapsed());
    h.ev_tx
        .send(json!({"eventType": "SHUTDOWN", "shutdownReason": "failure", "deadlineMs": now_ms() + 2_000}))
        .await
        .unwrap();
    let status = tokio::time::timeout(WAIT, h.child.wait())
        .await
        .expect("exits")
        .unwrap();
    let err = h.err_task.await.unwrap();
    let _ = h.out_task.await;
    assert_eq!(status.code(), Some(0), "{err}");
}
