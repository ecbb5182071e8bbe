//! A CloudWatch that fails, end to end: the real extension (`LMP_SINK=cloudwatch`,
//! `LMP_FLUSH=end`) under the emulator, its SDK pointed at a stand-in on loopback that answers
//! 500, or takes 8 s to answer. No invocation waits for the endpoint (the 100 ms end-flush
//! budget binds, far below the slow stand-in's 8 s), each failure class is warned about once,
//! and what could not be sent by SHUTDOWN is counted as dropped in the last log line.
//!
//! The hold bound is structural, not a timing: it sits far above the budget and far below what
//! waiting for the slow endpoint would cost, so a loaded machine's scheduling delays of a few
//! hundred milliseconds cannot fail it.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lambda_emulator::{Emulator, InvokeStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const HANDLER: &str = r#"
from lambda_memory_profiler import memory_profile

@memory_profile
def handler(event, context):
    return {"ok": True}
"#;

/// Above every hold the 100 ms budget allows on a loaded machine; far below the 8 s that waiting
/// for the slow endpoint would cost.
const NEVER_WAITED: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy)]
enum Mode {
    ServerError,
    Throttled,
    Slow,
}

/// A CloudWatch stand-in on 127.0.0.1 answering every request as `mode` says; counts requests.
async fn stand_in(mode: Mode) -> (u16, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::Relaxed);
                        if let Mode::Slow = mode {
                            tokio::time::sleep(Duration::from_secs(8)).await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *resp.status_mut() = match mode {
                            Mode::Throttled => StatusCode::TOO_MANY_REQUESTS,
                            _ => StatusCode::INTERNAL_SERVER_ERROR,
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, requests)
}

/// Runs 20 invocations against the stand-in; returns the post-runtime time of each, the
/// extension's output lines and the requests the stand-in saw.
async fn run(mode: Mode, tag: &str) -> Option<(Vec<Duration>, Vec<String>, u64)> {
    let py = common::python();
    let (port, requests) = stand_in(mode).await;
    let dir = common::temp_dir(tag);
    let mut env = vec![
        ("LMP_SINK", "cloudwatch".to_string()),
        ("LMP_FLUSH", "end".into()),
        ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    env.extend(common::aws_env(&format!("http://127.0.0.1:{port}")));
    let cfg = common::config(py, &dir, HANDLER, &env);
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let mut held = Vec::new();
    for _ in 0..20 {
        let out = em.invoke(serde_json::json!({})).await.expect("invoke");
        assert_eq!(out.status, InvokeStatus::Success, "{out:?}");
        if !out.cold_start {
            held.push(
                out.duration
                    .saturating_sub(out.runtime_duration.unwrap_or_default()),
            );
        }
    }
    let lines = common::shut_down_cleanly(em).await;
    Some((held, lines, requests.load(Ordering::Relaxed)))
}

fn final_count(lines: &[String], field: &str) -> u64 {
    let last = lines
        .iter()
        .find(|l| l.contains("flushed; exiting"))
        .unwrap_or_else(|| panic!("no final line:\n{}", lines.join("\n")));
    last.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in {last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cloudwatch_does_not_hold_invocations_and_unsent_values_are_counted() {
    let Some((held, lines, requests)) = run(Mode::Slow, "cw-slow").await else {
        return;
    };
    let worst = held.iter().max().copied().unwrap_or_default();
    eprintln!(
        "post-runtime max {worst:?} over {} warm invocations; {requests} requests",
        held.len()
    );
    // The default end-flush budget is 100 ms; waiting for the stand-in would hold 8 s.
    assert!(worst < NEVER_WAITED, "held {held:?}");
    // Queued invocations went out together, not one request each.
    assert!(requests < 10, "{requests} requests for 20 invocations");
    let dropped = final_count(&lines, "dropped");
    let lost = final_count(&lines, "values_lost");
    assert!(lost > 0 && dropped >= lost, "{}", lines.join("\n"));
    // Exactly: every value the sink was given was either taken by the endpoint (none here) or
    // counted as lost, the ones still in flight at the deadline included.
    assert_eq!(final_count(&lines, "values_sent"), 0);
    assert_eq!(final_count(&lines, "values"), lost, "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("shutdown deadline: metric values not sent")),
        "{}",
        lines.join("\n")
    );
}

/// Runs against a stand-in that always fails in `mode`: one warning of `class`, values counted.
async fn failing(mode: Mode, tag: &str, class: &str) {
    let Some((held, lines, requests)) = run(mode, tag).await else {
        return;
    };
    let worst = held.iter().max().copied().unwrap_or_default();
    eprintln!("{tag}: post-runtime max {worst:?}; {requests} requests");
    assert!(worst < NEVER_WAITED, "held {held:?}");
    assert!(requests > 0);
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("PutMetricData failed"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning per failure class per minute: {warnings:?}"
    );
    assert!(
        warnings[0].contains(&format!("class=\"{class}\"")),
        "{}",
        warnings[0]
    );
    let lost = final_count(&lines, "values_lost");
    assert!(lost > 0);
    assert_eq!(
        final_count(&lines, "values"),
        final_count(&lines, "values_sent") + lost,
        "every value sent or counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cloudwatch_is_warned_about_once_and_its_values_counted() {
    failing(Mode::ServerError, "cw-500", "server error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_cloudwatch_is_warned_about_once_and_its_values_counted() {
    failing(Mode::Throttled, "cw-429", "throttled").await;
}
