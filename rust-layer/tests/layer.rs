//! The layer with the counting allocator installed, records received on a real UDP socket
//! standing in for the extension (or printed as EMF when nobody listens).
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lambda_memory_profile::{Config, CountingAlloc, MemoryProfileLayer};
use lambda_runtime::{Context, Diagnostic, Error, LambdaEvent, LambdaInvocation};
use serde_json::{json, Value};
use tower::{service_fn, Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::system();

const MIB: i64 = 1 << 20;

/// The counters are process-wide: one test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

struct Intake {
    sock: UdpSocket,
}

impl Intake {
    fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Intake { sock }
    }

    fn layer(&self) -> MemoryProfileLayer {
        MemoryProfileLayer::with_config(Config {
            intake_port: self.sock.local_addr().unwrap().port(),
            ..Config::default()
        })
    }

    /// Every datagram received until the socket stays quiet.
    fn records(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push(serde_json::from_slice(&buf[..n]).unwrap());
        }
        out
    }

    fn invocations(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == "invocation")
            .collect()
    }
}

fn event(id: &str, payload: Value) -> LambdaEvent<Value> {
    let mut ctx = Context::default();
    ctx.request_id = id.to_string();
    LambdaEvent::new(payload, ctx)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn within(v: i64, want: i64, tolerance: f64) -> bool {
    (v - want).abs() as f64 <= want as f64 * tolerance
}

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

async fn keep_one_mib(_: LambdaEvent<Value>) -> Result<Value, Error> {
    let mut kept = KEPT.lock().unwrap();
    kept.push(vec![7u8; MIB as usize]);
    Ok(json!({"chunks": kept.len()}))
}

async fn transient_eight_mib(e: LambdaEvent<Value>) -> Result<Value, Error> {
    let buf = vec![1u8; 8 * MIB as usize];
    let sum: u64 = buf.iter().step_by(4096).map(|b| u64::from(*b)).sum();
    drop(buf);
    Ok(json!({"sum": sum, "echo": e.payload}))
}

#[test]
fn keeping_one_mib_per_call_shows_one_mib_of_growth() {
    let _g = serial();
    let intake = Intake::new();
    let mut svc = intake.layer().layer(service_fn(keep_one_mib));
    rt().block_on(async {
        for i in 0..5 {
            let id = format!("keep-{i}");
            svc.ready()
                .await
                .unwrap()
                .call(event(&id, json!({})))
                .await
                .unwrap();
        }
    });
    let records = intake.records();
    assert_eq!(records[0]["kind"], "hello", "{records:?}");
    assert_eq!(records[0]["runtime"], "rust");
    let inv = intake_invocations(&records);
    assert_eq!(inv.len(), 5, "{records:?}");
    for (i, r) in inv.iter().enumerate() {
        assert_eq!(r["request_id"], format!("keep-{i}"));
        assert_eq!(r["runtime"], "rust");
        assert_eq!(r["error_type"], Value::Null);
        assert_eq!(r["pid"], std::process::id());
        let t = &r["trace"];
        let growth = t["growth_bytes"].as_i64().unwrap();
        assert!(within(growth, MIB, 0.02), "growth {growth} in {r}");
        assert_eq!(t["retained_bytes"].as_i64().unwrap(), growth.max(0));
        let peak = t["peak_bytes"].as_i64().unwrap();
        assert!(peak >= growth && within(peak, MIB, 0.02), "peak {peak}");
        assert!(t["heap_blocks_delta"].as_i64().unwrap() >= 1, "{r}");
        assert!(r["heap_blocks"].as_u64().unwrap() > 0);
        assert!(r["duration_ms"].as_f64().unwrap() >= 0.0);
        assert!(r["rss_peak_bytes"].as_u64().unwrap() >= MIB as u64);
        assert!(r["rss_bytes"].as_u64().unwrap() > 0);
    }
    KEPT.lock().unwrap().clear();
}

fn intake_invocations(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "invocation")
        .collect()
}

#[test]
fn a_transient_eight_mib_shows_as_peak_without_growth() {
    let _g = serial();
    let intake = Intake::new();
    let mut svc = intake.layer().layer(service_fn(transient_eight_mib));
    rt().block_on(async {
        for i in 0..3 {
            svc.ready()
                .await
                .unwrap()
                .call(event(&format!("t-{i}"), json!({"i": i})))
                .await
                .unwrap();
        }
    });
    let inv = intake.invocations();
    assert_eq!(inv.len(), 3);
    for r in &inv {
        let t = &r["trace"];
        let peak = t["peak_bytes"].as_i64().unwrap();
        assert!(within(peak, 8 * MIB, 0.02), "peak {peak} in {r}");
        let growth = t["growth_bytes"].as_i64().unwrap();
        // "No growth": under 0.2% of the transient (the response value stays allocated).
        assert!(growth.abs() < 16 * 1024, "growth {growth} in {r}");
        // The 8 MiB were touched: the RSS peak of the invocation saw them.
        if r["rss_peak_scope"] == "invocation" {
            let hwm = r["rss_peak_bytes"].as_i64().unwrap();
            assert!(hwm >= 8 * MIB, "{r}");
        }
    }
}

#[derive(Debug, PartialEq)]
struct Teapot;

impl From<Teapot> for Diagnostic {
    fn from(_: Teapot) -> Self {
        Diagnostic {
            error_type: "Teapot".into(),
            error_message: "short and stout".into(),
        }
    }
}

#[test]
fn results_and_errors_are_unchanged() {
    let _g = serial();
    let intake = Intake::new();
    let layer = intake.layer();
    rt().block_on(async {
        // Success: the same value as the bare handler.
        let bare = transient_eight_mib(event("a", json!({"x": [1, 2]})))
            .await
            .unwrap();
        let mut svc = layer.layer(service_fn(transient_eight_mib));
        let got = svc
            .ready()
            .await
            .unwrap()
            .call(event("a", json!({"x": [1, 2]})))
            .await
            .unwrap();
        assert_eq!(got, bare);

        // A boxed error: the Diagnostic the runtime would have built from it.
        async fn fails(_: LambdaEvent<Value>) -> Result<Value, Error> {
            Err("no such order".into())
        }
        let want: Diagnostic = fails(event("b", json!({}))).await.unwrap_err().into();
        let mut svc = layer.layer(service_fn(fails));
        let got = svc
            .ready()
            .await
            .unwrap()
            .call(event("b", json!({})))
            .await
            .unwrap_err();
        assert_eq!(got, want);

        // A custom error with its own conversion.
        async fn teapot(_: LambdaEvent<Value>) -> Result<Value, Teapot> {
            Err(Teapot)
        }
        let mut svc = layer.layer(service_fn(teapot));
        let got = svc
            .ready()
            .await
            .unwrap()
            .call(event("c", json!({})))
            .await
            .unwrap_err();
        assert_eq!(got, Diagnostic::from(Teapot));
    });
    let inv = intake.invocations();
    let types: Vec<&Value> = inv.iter().map(|r| &r["error_type"]).collect();
    let boxed: Diagnostic = Error::from("x").into();
    assert_eq!(
        types,
        vec![&Value::Null, &json!(boxed.error_type), &json!("Teapot")]
    );
}

fn invocation(id: &str) -> LambdaInvocation {
    let mut ctx = Context::default();
    ctx.request_id = id.to_string();
    let (parts, ()) = http::Response::new(()).into_parts();
    LambdaInvocation {
        parts,
        body: bytes::Bytes::from_static(b"{}"),
        context: ctx,
    }
}

#[test]
fn runtime_level_measures_and_takes_the_handler_level_error_type() {
    let _g = serial();
    let intake = Intake::new();
    let layer = intake.layer();
    // The handler-level clone of the same layer, as the runtime would call it.
    async fn flaky(e: LambdaEvent<Value>) -> Result<Value, Error> {
        KEPT.lock().unwrap().push(vec![3u8; MIB as usize]);
        if e.payload["fail"] == true {
            return Err("boom".into());
        }
        Ok(json!({}))
    }
    let handler = Arc::new(tokio::sync::Mutex::new(layer.layer(service_fn(flaky))));
    let results = Arc::new(Mutex::new(Vec::new()));
    let (h, res) = (handler.clone(), results.clone());
    // Stands in for the runtime's own services: parse the event, call the handler, answer ().
    let runtime_inner = service_fn(move |inv: LambdaInvocation| {
        let (h, res) = (h.clone(), res.clone());
        async move {
            let payload: Value = serde_json::from_slice(&inv.body)?;
            let mut h = h.lock().await;
            let out = h
                .ready()
                .await
                .map_err(|d| d.error_message)?
                .call(LambdaEvent::new(payload, inv.context))
                .await;
            res.lock().unwrap().push(out.is_ok());
            Ok::<(), Error>(())
        }
    });
    let mut svc = layer.layer(runtime_inner);
    rt().block_on(async {
        svc.ready()
            .await
            .unwrap()
            .call(invocation("r-0"))
            .await
            .unwrap();
        let mut fail = invocation("r-1");
        fail.body = bytes::Bytes::from_static(br#"{"fail": true}"#);
        svc.ready().await.unwrap().call(fail).await.unwrap();
        svc.ready()
            .await
            .unwrap()
            .call(invocation("r-2"))
            .await
            .unwrap();
    });
    assert_eq!(*results.lock().unwrap(), vec![true, false, true]);
    let inv = intake.invocations();
    // One record per invocation: the handler level only noted the error.
    let ids: Vec<&str> = inv
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["r-0", "r-1", "r-2"]);
    let boxed: Diagnostic = Error::from("x").into();
    assert_eq!(inv[0]["error_type"], Value::Null);
    assert_eq!(inv[1]["error_type"], json!(boxed.error_type));
    assert_eq!(inv[2]["error_type"], Value::Null);
    for r in &inv {
        let g = r["trace"]["growth_bytes"].as_i64().unwrap();
        assert!(within(g, MIB, 0.02), "{r}");
    }
    KEPT.lock().unwrap().clear();
}

#[test]
fn a_panicking_handler_is_recorded_with_the_runtimes_error_type() {
    let _g = serial();
    let intake = Intake::new();
    let layer = intake.layer();
    async fn panics(_: LambdaEvent<Value>) -> Result<Value, Error> {
        panic!("handler bug");
    }
    let joined = rt().block_on(async {
        let mut svc = layer.layer(service_fn(panics));
        let fut = svc.ready().await.unwrap().call(event("p", json!({})));
        tokio::spawn(fut).await
    });
    assert!(joined.unwrap_err().is_panic());
    let inv = intake.invocations();
    assert_eq!(inv.len(), 1);
    let t = inv[0]["error_type"].as_str().unwrap();
    assert!(t.contains("Box<dyn core::any::Any"), "{t}");
}

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn without_an_extension_every_record_becomes_one_emf_line() {
    let _g = serial();
    // A port nobody listens on.
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let out = Lines::default();
    let layer = MemoryProfileLayer::with_config(Config {
        intake_port: port,
        namespace: "RustIt".into(),
        ..Config::default()
    })
    .with_emf_writer(out.clone());
    let mut svc = layer.clone().layer(service_fn(transient_eight_mib));
    rt().block_on(async {
        for i in 0..3 {
            svc.ready()
                .await
                .unwrap()
                .call(event(&format!("e-{i}"), json!({})))
                .await
                .unwrap();
        }
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The record whose send found the extension absent is printed too: none is lost.
    assert_eq!(lines.len(), 3, "{text}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["RequestId"], format!("e-{i}"));
        let m = &l["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "RustIt");
        assert_eq!(m["Dimensions"], json!([["FunctionName"]]));
        let peak = l["PythonHeapPeak"].as_i64().unwrap();
        assert!(within(peak, 8 * MIB, 0.02), "{l}");
        assert!(l["Duration"].as_f64().is_some());
    }
    let stats = layer.handoff_stats();
    assert!(stats.extension_absent);
    assert_eq!(stats.emf_lines, 3);
}

#[test]
fn disabled_layer_passes_through_without_records() {
    let _g = serial();
    let intake = Intake::new();
    let layer = MemoryProfileLayer::with_config(Config {
        disabled: true,
        intake_port: intake.sock.local_addr().unwrap().port(),
        ..Config::default()
    });
    let mut svc = layer.layer(service_fn(transient_eight_mib));
    let out = rt().block_on(async {
        svc.ready()
            .await
            .unwrap()
            .call(event("d", json!(5)))
            .await
            .unwrap()
    });
    assert_eq!(out["echo"], 5);
    assert!(intake.records().is_empty());
}

/// An example record of docs/protocol.md (`tests/fixtures/protocol/<name>`).
fn fixture(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/protocol")
        .join(name);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// The JSON shape of a value: its keys, recursively, and the type of every leaf (an integer is
/// not a float).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), shape(v))).collect(),
        Value::Array(a) => a.iter().map(shape).collect(),
        Value::Number(n) if n.is_f64() => json!("float"),
        Value::Number(_) => json!("integer"),
        Value::String(_) => json!("string"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

#[test]
fn a_record_built_from_the_fixtures_figures_encodes_to_the_fixture() {
    use lambda_memory_profile::record::{encode, HeapTrace, InvocationRecord, RUNTIME};
    use lmp_protocol::{parse_envelope, Kind, VERSION_1};
    let f = fixture("invocation-rust.json");
    let (t, u) = (&f["trace"], |v: &Value| v.as_u64().unwrap());
    let record = InvocationRecord {
        v: VERSION_1,
        kind: Kind::Invocation.as_str(),
        request_id: f["request_id"].as_str().unwrap().into(),
        pid: u(&f["pid"]) as u32,
        runtime: RUNTIME,
        start_ms: f["start_ms"].as_f64().unwrap(),
        duration_ms: f["duration_ms"].as_f64().unwrap(),
        cold_start: f["cold_start"].as_bool().unwrap(),
        error_type: None,
        rss_bytes: f["rss_bytes"].as_u64(),
        rss_peak_bytes: f["rss_peak_bytes"].as_u64(),
        rss_peak_scope: "invocation",
        heap_blocks: f["heap_blocks"].as_u64(),
        gc: None,
        trace: Some(HeapTrace {
            reason: "always",
            mode: "allocator",
            peak_bytes: u(&t["peak_bytes"]),
            retained_bytes: u(&t["retained_bytes"]),
            retained_blocks: u(&t["retained_blocks"]),
            growth_bytes: t["growth_bytes"].as_i64().unwrap(),
            heap_blocks_delta: t["heap_blocks_delta"].as_i64().unwrap(),
            top: [],
            top_truncated: u(&t["top_truncated"]),
        }),
    };
    let bytes = encode(&record);
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), f);
    // The receiver's envelope check (the extension's first step) takes it.
    let e = parse_envelope(&bytes).unwrap();
    assert_eq!((e.version, e.kind), (VERSION_1, Kind::Invocation));
}

#[test]
fn the_records_of_a_real_invocation_have_the_fixtures_shape() {
    use lmp_protocol::{parse_envelope, Kind};
    let _g = serial();
    let intake = Intake::new();
    let mut svc = intake.layer().layer(service_fn(transient_eight_mib));
    rt().block_on(async {
        let call = svc.ready().await.unwrap().call(event("shape-1", json!(1)));
        call.await.unwrap();
    });
    let records = intake.records();
    assert_eq!(records.len(), 2, "{records:?}");
    for (record, name, kind) in [
        (&records[0], "hello-rust.json", Kind::Hello),
        (&records[1], "invocation-rust.json", Kind::Invocation),
    ] {
        let e = parse_envelope(&serde_json::to_vec(record).unwrap()).unwrap();
        assert_eq!(e.kind, kind);
        let want = fixture(name);
        assert_eq!(record["v"], want["v"], "{name}");
        assert_eq!(shape(record), shape(&want), "{name}: {record}");
    }
}
