//! Out of memory, counted once, end to end: an invocation killed at the memory limit is published
//! with `OutOfMemory` = 1 although the decorator never got to send its record (the report arrives
//! at the SHUTDOWN that resets the environment); touching the limit once, a `MemoryError` and a
//! timeout at the limit count 1 each; a business error at 96% and the healthy invocations after
//! the mark reached the size count 0.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, InvokeStatus, ShutdownReason};
use std::time::Duration;

const HANDLER: &str = r#"
from lambda_memory_profiler import memory_profile

_hold = []

@memory_profile
def handler(event, context):
    if event.get("oom"):
        while True:
            _hold.append(b"\x01" * (8 * 1024 * 1024))
    return {"ok": True}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_published_as_out_of_memory() {
    let py = common::python();
    let dir = common::temp_dir("oom");
    let mut cfg = common::config(
        py,
        &dir,
        HANDLER,
        &[
            ("LMP_SINK", "emf".into()),
            ("LMP_FLUSH", "end".into()),
            ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ],
    );
    cfg.memory_mb = 160;
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let ok = em.invoke(serde_json::json!({})).await.expect("invoke");
    assert_eq!(ok.status, InvokeStatus::Success, "{ok:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let oom = em
        .invoke(serde_json::json!({"oom": true}))
        .await
        .expect("invoke");
    assert_eq!(oom.status, InvokeStatus::Error, "{oom:?}");
    assert_eq!(oom.error_type.as_deref(), Some("Runtime.OutOfMemory"));
    assert!(oom.reset, "the environment is reset after an OOM");

    // The reset shut the first environment down; its extension flushed on the way out.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = common::ext_lines(&em);
        if common::metric_values(&common::emf_docs(&lines), "OutOfMemory").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut oom_values = common::metric_values(&common::emf_docs(&lines), "OutOfMemory");
    oom_values.sort_by(f64::total_cmp);
    assert_eq!(oom_values, vec![0.0, 1.0], "{}", lines.join("\n"));
    // The analysis logs the OOM with the figures of the invocation before it.
    let oom_line = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["lmp"] == "out_of_memory")
        .unwrap_or_else(|| panic!("no out_of_memory line:\n{}", lines.join("\n")));
    assert_eq!(oom_line["cause"], "Runtime.OutOfMemory", "{oom_line}");
    assert_eq!(
        oom_line["invocation"]["request_id"],
        oom.request_id.as_str()
    );
    assert_eq!(oom_line["previous"]["request_id"], ok.request_id.as_str());
    let first = em
        .extension_stats()
        .into_iter()
        .next()
        .expect("first extension");
    assert!(
        !first.exit.exited_before_shutdown && !first.exit.killed_at_deadline,
        "{:?}",
        first.exit
    );
    let _ = em.shutdown(ShutdownReason::Spindown).await;
}

/// A handler that brings the environment's memory (runtime + extensions, as the emulator sums
/// it) to a share of the limit on request, then behaves as told.
const AT_THE_LIMIT: &str = r#"
import os, time
from lambda_memory_profiler import memory_profile

API = b"AWS_LAMBDA_RUNTIME_API=" + os.environ["AWS_LAMBDA_RUNTIME_API"].encode() + b"\0"
LIMIT = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]) * 1024 * 1024

def environment_rss():
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if API not in f.read():
                    continue
            with open(f"/proc/{pid}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024
        except (OSError, StopIteration):
            pass
    return total

def fill_to(target):
    held = []
    while True:
        missing = target - environment_rss()
        if missing <= 64 * 1024:
            return held
        held.append(b"\x01" * min(missing, 4 * 1024 * 1024))

@memory_profile
def handler(event, context):
    if "fill" in event:
        held = fill_to(LIMIT - event["fill"])
        time.sleep(event.get("hold_s", 0.1))
        if event.get("raise"):
            raise ValueError("business error")
        del held
    if event.get("memory_error"):
        bytearray(1 << 50)
    return {"ok": True}
"#;

/// Runs `events` in one environment; returns each outcome and every `OutOfMemory` value.
async fn oom_values(
    tag: &str,
    events: &[serde_json::Value],
    timeout: Duration,
) -> Option<(Vec<lambda_emulator::InvokeOutcome>, Vec<f64>, Vec<String>)> {
    let py = common::python();
    let dir = common::temp_dir(tag);
    let mut cfg = common::config(
        py,
        &dir,
        AT_THE_LIMIT,
        &[
            ("LMP_SINK", "emf".into()),
            ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ],
    );
    cfg.memory_mb = 128;
    cfg.timeout = timeout;
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let mut outcomes = Vec::new();
    for event in events {
        outcomes.push(em.invoke(event.clone()).await.expect("invoke"));
    }
    let (shut, _) = common::shut_down(em).await;
    let lines = common::ext_output(&shut);
    let values = common::metric_values(&common::emf_docs(&lines), "OutOfMemory");
    Some((outcomes, values, lines))
}

fn ones(values: &[f64]) -> usize {
    values.iter().filter(|v| **v == 1.0).count()
}

/// A success whose mark (whole MB, rounded up) reads the size is near the limit, not out of
/// memory: it answered. `MemoryUtilization` says 100% (the near-OOM warning's business); an
/// out-of-memory page for it would be a false alarm, and would count the kill that usually
/// follows twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touching_the_limit_without_a_kill_is_not_out_of_memory() {
    let mut events = vec![serde_json::json!({}); 3];
    // The environment's memory to within 512 KiB of the limit: the platform's mark (whole MB,
    // rounded up) reaches the size, and nothing is killed.
    events.push(serde_json::json!({"fill": 512 * 1024, "hold_s": 0.2}));
    events.extend(vec![serde_json::json!({}); 8]);
    let Some((outcomes, values, lines)) =
        oom_values("oom-touch", &events, Duration::from_secs(10)).await
    else {
        return;
    };
    let touch = &outcomes[3];
    assert_eq!(touch.status, InvokeStatus::Success, "{touch:?}");
    assert_eq!(
        touch.report["metrics"]["maxMemoryUsedMB"], 128,
        "{:?}",
        touch.report
    );
    // Healthy invocations after it keep the mark at the size.
    assert_eq!(outcomes[11].report["metrics"]["maxMemoryUsedMB"], 128);
    assert_eq!(values.len(), events.len(), "{}", lines.join("\n"));
    assert_eq!(ones(&values), 0, "{values:?}");
    let utilization = common::metric_values(&common::emf_docs(&lines), "MemoryUtilization");
    assert_eq!(utilization.get(3), Some(&100.0), "{utilization:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_error_at_96_percent_is_not_out_of_memory() {
    let mut events = vec![serde_json::json!({}); 2];
    events.push(serde_json::json!({"fill": 128 * 1024 * 1024 / 25, "raise": true}));
    events.extend(vec![serde_json::json!({}); 3]);
    let Some((outcomes, values, lines)) =
        oom_values("oom-business", &events, Duration::from_secs(10)).await
    else {
        return;
    };
    assert_eq!(outcomes[2].status, InvokeStatus::Error, "{:?}", outcomes[2]);
    let mark = outcomes[2].report["metrics"]["maxMemoryUsedMB"]
        .as_f64()
        .unwrap();
    assert!((120.0..=124.0).contains(&mark), "mark {mark}");
    assert_eq!(values.len(), events.len(), "{}", lines.join("\n"));
    assert_eq!(ones(&values), 0, "{values:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_error_counts_once() {
    let events = [
        serde_json::json!({}),
        serde_json::json!({"memory_error": true}),
        serde_json::json!({}),
    ];
    let Some((outcomes, values, _)) =
        oom_values("oom-memoryerror", &events, Duration::from_secs(10)).await
    else {
        return;
    };
    assert_eq!(outcomes[1].status, InvokeStatus::Error);
    assert_eq!(values, vec![0.0, 1.0, 0.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_while_at_the_limit_counts_once() {
    let events = [
        serde_json::json!({}),
        serde_json::json!({"fill": 2 * 1024 * 1024, "hold_s": 5.0}),
        serde_json::json!({}),
        serde_json::json!({}),
    ];
    let Some((outcomes, values, lines)) =
        oom_values("oom-timeout", &events, Duration::from_secs(2)).await
    else {
        return;
    };
    assert_eq!(
        outcomes[1].status,
        InvokeStatus::Timeout,
        "{:?}",
        outcomes[1]
    );
    assert_eq!(ones(&values), 1, "{values:?}\n{}", lines.join("\n"));
    let line = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["lmp"] == "out_of_memory")
        .expect("logged");
    assert_eq!(line["cause"], "failed_at_memory_limit", "{line}");
    assert_eq!(
        line["invocation"]["request_id"],
        outcomes[1].request_id.as_str()
    );
}
