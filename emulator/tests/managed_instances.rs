//! Lambda Managed Instances mode: the real `awslambdaric` starts its own workers
//! (`AWS_LAMBDA_MAX_CONCURRENCY`), invocations run concurrently, extensions get SHUTDOWN only
//! and the 2025-01-29 telemetry schema, and the memory limit holds for all processes together.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{of_type, typed, Bed};
use lambda_emulator::{Emulator, InvokeOutcome, InvokeStatus, ShutdownReason};
use serde_json::{json, Value};

const WORKERS: u32 = 4;

/// Each call may hold `hold_mb` more (every page written) and sleep; answers with its process.
const WORKER_HANDLER: &str = r#"
import os, time
HOLD = []
def main(event, context):
    if event.get("hold_mb"):
        HOLD.append(b"x" * (event["hold_mb"] << 20))
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "ppid": os.getppid(),
            "max_concurrency": os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY"),
            "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")}
"#;

/// An extension that tries what the platform refuses there, then does what it allows.
const MANAGED_EXTENSION: &str = r#"
register(("INVOKE", "SHUTDOWN"))
ext_id = register(("SHUTDOWN",))
port = listen()
subscribe(ext_id, port, schema="2022-12-13")
subscribe(ext_id, port, schema="2025-01-29")
run(ext_id)
"#;

fn bed(tag: &str, memory_mb: u32) -> (Bed, lambda_emulator::EmulatorConfig) {
    let bed = Bed::new(tag);
    std::fs::write(bed.dir.path().join("fn/workers.py"), WORKER_HANDLER).unwrap();
    let mut config = bed.config();
    config.handler = "workers.main".into();
    config.managed_instances = Some(WORKERS);
    config.memory_mb = memory_mb;
    (bed, config)
}

/// `n` invocations at once.
async fn wave(emu: &Emulator, n: u32, event: Value) -> Vec<InvokeOutcome> {
    futures::future::join_all((0..n).map(|_| emu.invoke(event.clone())))
        .await
        .into_iter()
        .map(|o| o.expect("invoke"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtimes_workers_serve_invocations_concurrently_with_the_2025_records() {
    let (bed, config) = bed("lmi-workers", 512);
    bed.script("lmi-ext", MANAGED_EXTENSION);
    let emu = Emulator::start(config).await.expect("start");
    assert_eq!(emu.last_init().expect("init").status, "success");
    let mut pids = BTreeSet::new();
    let mut parents = BTreeSet::new();
    for _ in 0..3 {
        let outs = wave(&emu, WORKERS, json!({"sleep": 0.3})).await;
        let wave_pids: BTreeSet<u64> = outs
            .iter()
            .map(|o| {
                assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
                let r = o.response.as_ref().expect("response");
                assert_eq!(r["max_concurrency"], "4");
                assert_eq!(r["init_type"], "lambda-managed-instances");
                parents.insert(r["ppid"].as_u64().unwrap());
                r["pid"].as_u64().unwrap()
            })
            .collect();
        // Four at once: each worker is busy with one, so four different processes answer.
        assert_eq!(wave_pids.len(), WORKERS as usize, "{outs:?}");
        pids.extend(wave_pids);
    }
    assert_eq!(
        pids.len(),
        WORKERS as usize,
        "the same four workers throughout"
    );
    assert_eq!(parents.len(), 1, "forked by one bootstrap");
    let telemetry = emu.telemetry_emitted();
    let shut = emu
        .shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");

    // Every wave's four starts come before its first report: they ran at the same time.
    let kinds: Vec<&str> = telemetry
        .iter()
        .map(|e| e.event_type.as_str())
        .filter(|t| *t == "platform.start" || *t == "platform.report")
        .collect();
    for chunk in kinds.chunks(2 * WORKERS as usize) {
        assert_eq!(
            chunk[..WORKERS as usize],
            ["platform.start"; 4],
            "{kinds:?}"
        );
    }
    assert!(of_type(&telemetry, "platform.runtimeDone").is_empty());
    assert_eq!(
        of_type(&telemetry, "platform.initStart")[0].record["initializationType"],
        "lambda-managed-instances"
    );
    for r in of_type(&telemetry, "platform.report") {
        let metrics = &r.record["metrics"];
        assert!(metrics["durationMs"].as_f64().unwrap() >= 300.0, "{r:?}");
        assert_eq!(metrics.get("maxMemoryUsedMB"), None, "{r:?}");
        assert_eq!(r.record["spans"][0]["name"], "responseLatency");
    }

    // The extension: INVOKE refused, SHUTDOWN accepted; the old schema refused, the 2025 one
    // accepted; it saw the reports and no event but SHUTDOWN.
    let statuses = |kind| -> Vec<Value> {
        bed.entries("lmi-ext", kind)
            .iter()
            .map(|e| e["status"].clone())
            .collect()
    };
    assert_eq!(statuses("register"), [json!(400), json!(200)]);
    assert_eq!(statuses("subscribe"), [json!(400), json!(200)]);
    let got = bed.received("lmi-ext");
    assert_eq!(typed(&got, "platform.report").len(), 3 * WORKERS as usize);
    let events = bed.entries("lmi-ext", "event");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["eventType"], "SHUTDOWN");
    let ext = &shut.extensions[0];
    assert!(
        !ext.exit.exited_before_shutdown && ext.exit.code == Some(0),
        "{ext:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_holds_for_all_workers_together() {
    let (_bed, config) = bed("lmi-limit", 256);
    let emu = Emulator::start(config).await.expect("start");
    // One worker holding 60 MB: far below the limit on its own.
    let one = wave(&emu, 1, json!({"hold_mb": 60})).await;
    assert_eq!(one[0].status, InvokeStatus::Success, "{one:?}");
    // Four holding 60 MB each (and the one already held): over 256 MB only together.
    let all = wave(&emu, WORKERS, json!({"hold_mb": 60, "sleep": 0.5})).await;
    assert!(
        all.iter()
            .any(|o| o.error_type.as_deref() == Some("Runtime.OutOfMemory")),
        "{all:?}"
    );
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_resets_the_environment_once_and_never_touches_the_next_one() {
    let (_bed, mut config) = bed("lmi-timeout", 512);
    config.timeout = std::time::Duration::from_secs(1);
    let emu = Emulator::start(config).await.expect("start");
    let late = |ms: u64, event: Value| {
        let emu = &emu;
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            emu.invoke(event).await.expect("invoke")
        }
    };
    // A times out at 1 s and resets the environment (every worker with it); B, started later,
    // loses its worker in that reset; C starts after it, in a new environment, and must not be
    // killed by B's deadline (1.5 s) nor reset by B's failure.
    let (a, b, c) = tokio::join!(
        late(0, json!({"sleep": 3})),
        late(500, json!({"sleep": 3})),
        late(1300, json!({"sleep": 0.8})),
    );
    assert_eq!(a.status, InvokeStatus::Timeout, "{a:?}");
    assert!(a.reset);
    assert_ne!(b.status, InvokeStatus::Success, "{b:?}");
    assert_eq!(c.status, InvokeStatus::Success, "{c:?}");
    assert!(c.cold_start, "a new environment");
    let after = wave(&emu, WORKERS, json!({})).await;
    assert!(
        after.iter().all(|o| o.status == InvokeStatus::Success),
        "{after:?}"
    );
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_beyond_the_workers_wait_for_one_outside_their_invocation_time() {
    let (_bed, mut config) = bed("lmi-queue", 512);
    config.timeout = std::time::Duration::from_secs(1);
    let emu = Emulator::start(config).await.expect("start");
    // Twice as many callers as workers, each call 0.6 s: the second four wait for a worker
    // (0.6 s) and still have their whole second once one takes them.
    let outs = wave(&emu, 2 * WORKERS, json!({"sleep": 0.6})).await;
    assert!(
        outs.iter()
            .all(|o| o.status == InvokeStatus::Success && !o.reset),
        "{outs:?}"
    );
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
}
