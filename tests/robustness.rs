//! The extension keeps running — no `Extension.Crash`, every invocation succeeds, SHUTDOWN ends
//! with exit code 0 before the deadline — when fed garbage and when CloudWatch is unusable.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, InvokeStatus};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// The telemetry listener address from the extension's "ready" log line.
fn telemetry_addr(lines: &[String]) -> Option<SocketAddr> {
    let l = lines.iter().find(|l| l.contains(" ready "))?;
    let start = l.find("telemetry=Some(")? + "telemetry=Some(".len();
    let end = start + l[start..].find(')')?;
    l[start..end].parse().ok()
}

fn post(addr: SocketAddr, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /telemetry HTTP/1.1\r\nHost: sandbox.localdomain\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn wait_for_line(em: &Emulator, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..300 {
        lines = common::ext_lines(em);
        if lines.iter().any(|l| pred(l)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lines
}

async fn shutdown_cleanly(em: Emulator) {
    let (_, ext) = common::shut_down(em).await;
    eprintln!(
        "extension exit after SHUTDOWN: {:?}, post-runtime per invoke: {:?}",
        ext.exit.exit_after_shutdown, ext.post_runtime
    );
    assert!(
        !ext.exit.exited_before_shutdown,
        "Extension.Crash: {:?}",
        ext.exit
    );
    assert!(
        !ext.exit.killed_at_deadline,
        "killed at the deadline: {:?}",
        ext.exit
    );
    assert_eq!(ext.exit.code, Some(0), "{:?}", ext.exit);
    assert!(ext.reported_error.is_none(), "{:?}", ext.reported_error);
}

async fn invoke_ok(em: &Emulator, n: usize) {
    for i in 0..n {
        let out = em
            .invoke(serde_json::json!({ "i": i }))
            .await
            .expect("invoke");
        assert_eq!(out.status, InvokeStatus::Success, "{out:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_intake_and_telemetry_is_counted_and_survived() {
    let py = common::python();
    let dir = common::temp_dir("garbage");
    let port = common::free_port();
    let cfg = common::config(
        py,
        &dir,
        common::DECORATED,
        &[
            ("LMP_SINK", "emf".into()),
            ("LMP_FLUSH", "end".into()),
            ("LMP_INTAKE_PORT", port.to_string()),
        ],
    );
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let lines = wait_for_line(&em, |l| l.contains(" ready ")).await;
    let tel = telemetry_addr(&lines).expect("telemetry listener address logged");
    assert!(tel.ip().is_loopback(), "{tel}");

    // 4 bad datagrams: not JSON, oversized, unknown version, missing request id.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let intake = ("127.0.0.1", port);
    udp.send_to(b"\x00\xffnot json", intake).unwrap();
    udp.send_to(&vec![b'x'; 20_000], intake).unwrap();
    udp.send_to(br#"{"v":99,"kind":"invocation","request_id":"x"}"#, intake)
        .unwrap();
    udp.send_to(br#"{"v":1,"kind":"invocation"}"#, intake)
        .unwrap();
    // 4 bad telemetry items in 3 batches, all answered 200.
    assert_eq!(post(tel, b"garbage{"), 200);
    assert_eq!(post(tel, b"{\"not\":\"an array\"}"), 200);
    assert_eq!(
        post(
            tel,
            br#"[7, {"type":"platform.report","record":{}}, {"type":"platform.future"}]"#
        ),
        200
    );
    assert_eq!(
        post(tel, &vec![b'['; 3 * 1024 * 1024]),
        200,
        "oversized body"
    );

    invoke_ok(&em, 3).await;
    let lines = wait_for_line(&em, |l| l.contains("RecordsDropped")).await;
    let dropped: f64 = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["RecordsDropped"].as_f64())
        .sum();
    // 4 datagrams + 1 + 1 + 2 invalid items + 1 unreadable body.
    assert_eq!(dropped, 9.0, "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("MaxMemoryUsed")),
        "still publishing: {}",
        lines.join("\n")
    );
    shutdown_cleanly(em).await;
}

/// Runs 3 invocations with `LMP_FLUSH=end` (so every invocation flushes) against `env`.
async fn run_against(tag: &str, env: Vec<(&'static str, String)>, expect_log: &str) {
    let py = common::python();
    let dir = common::temp_dir(tag);
    let mut env = env;
    env.extend([
        ("LMP_FLUSH", "end".to_string()),
        ("LMP_INTAKE_PORT", common::free_port().to_string()),
    ]);
    let em = Emulator::start(common::config(py, &dir, common::DECORATED, &env))
        .await
        .expect("emulator starts");
    invoke_ok(&em, 3).await;
    let lines = wait_for_line(&em, |l| l.contains(expect_log)).await;
    assert!(
        lines.iter().any(|l| l.contains(expect_log)),
        "expected {expect_log:?} in:\n{}",
        lines.join("\n")
    );
    // And it still serves invocations afterwards.
    invoke_ok(&em, 1).await;
    shutdown_cleanly(em).await;
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_endpoint_down() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    run_against(
        "cw-down",
        common::aws_env(&endpoint),
        "PutMetricData failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_endpoint_slow() {
    // Accepts connections and never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    // The invocations do not wait for it (the end flush goes on in the background); the
    // request times out and is reported once, as a timeout.
    run_against("cw-slow", common::aws_env(&endpoint), "class=\"timeout\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    run_against(
        "no-creds",
        vec![
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ],
        "PutMetricData failed",
    )
    .await;
}
