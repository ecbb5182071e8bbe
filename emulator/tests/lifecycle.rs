//! The emulator against the real `awslambdaric` runtime and real extension processes.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{eventually, of_type, Bed};
use lambda_emulator::{Emulator, InvokeStatus, OutputSource, ShutdownReason};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dict_events_reach_the_handler_and_the_lifecycle_runs_in_order() {
    let bed = Bed::new("order");
    bed.extension("watcher", "good");
    let emu = Emulator::start(bed.config()).await.expect("start");
    let init = emu.last_init().expect("init ran");
    assert_eq!(init.status, "success");

    let a = emu
        .invoke(json!({"n": 1, "nested": {"k": [1, 2]}}))
        .await
        .expect("invoke 1");
    let b = emu.invoke(json!({"n": 2})).await.expect("invoke 2");
    for (o, n) in [(&a, 1), (&b, 2)] {
        assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
        let resp = o.response.as_ref().expect("response");
        assert_eq!(resp["event_type"], "dict");
        assert_eq!(resp["event"]["n"], n);
        assert_eq!(resp["request_id"], o.request_id.as_str());
    }
    let resp = a.response.as_ref().expect("response");
    assert_eq!(resp["event"]["nested"]["k"], json!([1, 2]));
    // Lambda's environment: configured vars, no AWS_LAMBDA_MAX_CONCURRENCY.
    assert_eq!(resp["env"]["AWS_LAMBDA_FUNCTION_NAME"], "emulator-test");
    assert_eq!(resp["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(resp["env"]["MY_VAR"], "my-value");
    assert_eq!(resp["env"]["_HANDLER"], "handler.main");
    assert_eq!(resp["env"]["AWS_LAMBDA_MAX_CONCURRENCY"], Value::Null);
    assert!(a.cold_start && !b.cold_start);

    let report = emu
        .shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    let ext = &report.extensions[0];
    assert_eq!(ext.name, "watcher");
    // What the extension printed on its way out is kept, though the emulator is gone.
    let printed = &report.extension_output["watcher"];
    assert_eq!(
        printed.last().map(String::as_str),
        Some("final line at shutdown")
    );
    assert!(report
        .telemetry
        .iter()
        .any(|t| t.event_type == "extension" && t.record == json!("final line at shutdown")));
    assert!(ext.exit.exited && !ext.exit.killed_at_deadline && !ext.exit.exited_before_shutdown);
    assert_eq!(ext.exit.code, Some(0));
    assert!(ext.exit.exit_after_shutdown.is_some());
    let reg = ext.spawn_to_register.expect("registered");
    let first = ext.spawn_to_first_next.expect("called /next");
    assert!(reg <= first && first < Duration::from_secs(30));
    assert_eq!(ext.post_runtime.len(), 2);
    assert!(
        ext.peak_rss_bytes > 1024 * 1024 && ext.final_rss_bytes > 0,
        "{ext:?}"
    );
    assert_eq!(ext.events, vec!["INVOKE", "SHUTDOWN"]);

    // The extension's own view: register, /next, INVOKE 1, /next, INVOKE 2, /next, SHUTDOWN.
    let steps: Vec<String> = bed
        .log("watcher")
        .into_iter()
        .filter(|l| {
            l.starts_with("register") || l.starts_with("next-call") || l.starts_with("event")
        })
        .collect();
    let expected = vec![
        "register 200 emulator-test".to_string(),
        "next-call None".to_string(),
        format!("event INVOKE {}", a.request_id),
        format!("next-call {}", a.request_id),
        format!("event INVOKE {}", b.request_id),
        format!("next-call {}", b.request_id),
        "event SHUTDOWN spindown".to_string(),
    ];
    assert_eq!(steps, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_batches_arrive_with_lambda_fields() {
    let bed = Bed::new("telemetry");
    bed.extension("tele", "late-subscribe");
    let emu = Emulator::start(bed.config()).await.expect("start");
    let a = emu.invoke(json!({"x": 1})).await.expect("invoke 1");
    let b = emu.invoke(json!({"x": 2})).await.expect("invoke 2");
    let emitted = emu.telemetry_emitted();
    let extension_lines = emu.output_lines(OutputSource::Extension("tele".into()));
    let runtime_lines = emu.output_lines(OutputSource::Runtime);
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");

    let log = bed.log("tele");
    // An out-of-range buffering is refused, a valid subscription accepted.
    assert!(
        log.contains(&"subscribe-invalid 400".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"subscribe 200".to_string()), "{log:?}");
    // Subscribing is only possible during init (before the first /next).
    assert!(log.contains(&"late-subscribe 403".to_string()), "{log:?}");

    let got = bed.delivered("tele");
    let find = |t: &str| -> Vec<&Value> { got.iter().filter(|r| r["type"] == t).collect() };
    for r in &got {
        let time = r["time"].as_str().expect("time");
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    }
    // Init records of the environment are delivered to the subscriber too.
    let init_start = find("platform.initStart");
    assert_eq!(init_start.len(), 1);
    assert_eq!(init_start[0]["record"]["functionName"], "emulator-test");
    assert_eq!(init_start[0]["record"]["initializationType"], "on-demand");
    assert_eq!(
        find("platform.initRuntimeDone")[0]["record"]["status"],
        "success"
    );
    let init_report = find("platform.initReport");
    assert_eq!(init_report[0]["record"]["status"], "success");
    assert!(
        init_report[0]["record"]["metrics"]["durationMs"]
            .as_f64()
            .expect("durationMs")
            > 0.0
    );

    let starts = find("platform.start");
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["record"]["requestId"], a.request_id.as_str());
    assert_eq!(starts[0]["record"]["version"], "$LATEST");

    let done = find("platform.runtimeDone");
    assert_eq!(done.len(), 2);
    let produced = serde_json::to_vec(a.response.as_ref().expect("response"))
        .expect("json")
        .len() as u64;
    assert_eq!(done[0]["record"]["status"], "success");
    assert!(
        done[0]["record"]["metrics"]["durationMs"]
            .as_f64()
            .expect("durationMs")
            > 0.0
    );
    // awslambdaric serializes with its own separators: compare loosely with our re-serialization.
    let pb = done[0]["record"]["metrics"]["producedBytes"]
        .as_u64()
        .expect("producedBytes");
    assert!(
        pb > 0 && pb.abs_diff(produced) < produced / 2 + 16,
        "{pb} vs {produced}"
    );

    let reports = find("platform.report");
    assert_eq!(reports.len(), 2, "{got:?}");
    for (r, o) in reports.iter().zip([&a, &b]) {
        let rec = &r["record"];
        assert_eq!(rec["requestId"], o.request_id.as_str());
        assert_eq!(rec["status"], "success");
        let m = &rec["metrics"];
        let dur = m["durationMs"].as_f64().expect("durationMs");
        assert!(dur > 0.0);
        assert_eq!(m["billedDurationMs"].as_f64().expect("billed"), dur.ceil());
        assert_eq!(m["memorySizeMB"], 256);
        assert!(m["maxMemoryUsedMB"].as_u64().expect("maxMemoryUsedMB") > 5);
        assert_eq!(rec, &o.report);
    }
    assert!(
        reports[0]["record"]["metrics"]["initDurationMs"]
            .as_f64()
            .expect("init")
            > 0.0
    );
    assert!(reports[1]["record"]["metrics"]
        .get("initDurationMs")
        .is_none());

    // Log records from the processes' output.
    let function_logs: Vec<&Value> = find("function");
    assert!(
        function_logs
            .iter()
            .any(|r| r["record"] == "handler-log echo"),
        "{function_logs:?}"
    );
    assert!(runtime_lines.contains(&"handler-log echo".to_string()));
    let ext_logs = find("extension");
    let registered = "tele registered MY_VAR=my-value HANDLER=None";
    assert!(
        ext_logs.iter().any(|r| r["record"] == registered),
        "{ext_logs:?}"
    );
    assert!(extension_lines.contains(&registered.to_string()));

    // What was delivered is what the emulator emitted, in the same order.
    let emitted_json: Vec<Value> = emitted
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect();
    let delivered_platform: Vec<&Value> = got
        .iter()
        .filter(|r| {
            r["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("platform."))
        })
        .collect();
    let emitted_platform: Vec<&Value> = emitted_json
        .iter()
        .filter(|r| {
            r["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("platform."))
        })
        .collect();
    assert_eq!(delivered_platform, emitted_platform);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_is_emitted_only_after_the_extension_calls_next() {
    let bed = Bed::new("slow");
    bed.extension("slowpoke", "slow");
    let emu = Emulator::start(bed.config()).await.expect("start");
    let mut outcomes = Vec::new();
    for i in 0..3 {
        outcomes.push(emu.invoke(json!({"i": i})).await.expect("invoke"));
    }
    let emitted = emu.telemetry_emitted();
    let report = emu
        .shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");

    let log = bed.log("slowpoke");
    assert_eq!(
        log.iter().filter(|l| *l == "saw-runtime-done True").count(),
        3,
        "{log:?}"
    );
    for o in &outcomes {
        assert_eq!(o.status, InvokeStatus::Success);
        // In the extension's log: its /next for N is written before any batch holding report N.
        let next_at = log
            .iter()
            .position(|l| *l == format!("next-call {}", o.request_id))
            .expect("extension called /next after the invoke");
        let report_at = log
            .iter()
            .position(|l| {
                l.starts_with("batch ")
                    && serde_json::from_str::<Value>(&l[6..])
                        .ok()
                        .is_some_and(|b| {
                            b.as_array().is_some_and(|a| {
                                a.iter().any(|r| {
                                    r["type"] == "platform.report"
                                        && r["record"]["requestId"] == o.request_id.as_str()
                                })
                            })
                        })
            })
            .expect("report delivered");
        assert!(
            next_at < report_at,
            "report for {} delivered before the extension's /next",
            o.request_id
        );
        // And the emulator emitted runtimeDone (runtime finished) before report.
        let pos = |t: &str| {
            emitted
                .iter()
                .position(|e| e.event_type == t && e.record["requestId"] == o.request_id.as_str())
        };
        assert!(pos("platform.runtimeDone") < pos("platform.report"));
        // The invoke phase includes the extension's post-runtime work.
        let rt = o.runtime_done["metrics"]["durationMs"]
            .as_f64()
            .expect("rt");
        let total = o.report["metrics"]["durationMs"].as_f64().expect("total");
        assert!(total > rt, "{total} <= {rt}");
    }
    let ext = &report.extensions[0];
    assert_eq!(ext.post_runtime.len(), 3);
    assert!(
        ext.post_runtime.iter().all(|d| *d > Duration::ZERO),
        "{:?}",
        ext.post_runtime
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_memory_used_rises_with_a_50_mb_allocation_and_never_falls() {
    let bed = Bed::new("mem");
    bed.extension("quiet", "no-telemetry");
    let emu = Emulator::start(bed.config()).await.expect("start");
    let before = emu.invoke(json!({"action": "echo"})).await.expect("echo");
    let alloc = emu.invoke(json!({"action": "alloc"})).await.expect("alloc");
    let after = emu
        .invoke(json!({"action": "echo"}))
        .await
        .expect("echo again");
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    for o in [&before, &alloc, &after] {
        assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
        assert_eq!(o.report["metrics"]["maxMemoryUsedMB"], o.max_memory_used_mb);
    }
    assert!(
        before.max_memory_used_mb > 10,
        "{}",
        before.max_memory_used_mb
    );
    assert!(
        alloc.max_memory_used_mb >= before.max_memory_used_mb + 45,
        "{} -> {}",
        before.max_memory_used_mb,
        alloc.max_memory_used_mb
    );
    assert!(after.max_memory_used_mb >= alloc.max_memory_used_mb);
}

/// An invocation that grows past the limit and answers before the next memory sample (a
/// sampling interval longer than the whole invocation) still fails as out of memory: a cgroup
/// would have killed it before its answer. It is not a success followed by a silent re-init.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_the_limit_between_two_samples_fails_that_invocation() {
    let bed = Bed::new("oom-fast");
    bed.extension("ext", "good");
    let mut config = bed.config();
    config.memory_mb = 128;
    config.sample_interval = Duration::from_secs(3600);
    let emu = Emulator::start(config).await.expect("start");
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let o = emu
            .invoke(json!({"action": "alloc"}))
            .await
            .expect("invoke");
        let stop = o.status != InvokeStatus::Success;
        outcomes.push(o);
        if stop {
            break;
        }
    }
    let last = outcomes.last().expect("an invocation");
    // 50 MB a call in 128 MB: the second or third call crosses the limit.
    assert!(
        outcomes.len() <= 3,
        "{:?}",
        outcomes.iter().map(|o| o.status).collect::<Vec<_>>()
    );
    assert_eq!(
        last.error_type.as_deref(),
        Some("Runtime.OutOfMemory"),
        "{last:?}"
    );
    assert_eq!(last.report["metrics"]["maxMemoryUsedMB"], 128);
    assert!(last.reset && last.response.is_none(), "{last:?}");
    assert!(outcomes
        .iter()
        .all(|o| !o.cold_start || o.request_id == outcomes[0].request_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_memory_limit_is_runtime_out_of_memory_then_reinit() {
    let bed = Bed::new("oom");
    bed.extension("ext", "good");
    let mut config = bed.config();
    config.memory_mb = 128;
    let emu = Emulator::start(config).await.expect("start");
    let oom = emu.invoke(json!({"action": "oom"})).await.expect("invoke");
    assert_eq!(oom.status, InvokeStatus::Error, "{oom:?}");
    assert_eq!(oom.error_type.as_deref(), Some("Runtime.OutOfMemory"));
    assert_eq!(oom.report["errorType"], "Runtime.OutOfMemory");
    assert_eq!(oom.runtime_done["errorType"], "Runtime.OutOfMemory");
    assert_eq!(oom.report["metrics"]["maxMemoryUsedMB"], 128);
    assert!(oom.reset);

    // The environment was reset: the next invoke initialises again, with new processes.
    let next = emu
        .invoke(json!({"action": "echo"}))
        .await
        .expect("invoke after reset");
    assert_eq!(next.status, InvokeStatus::Success, "{next:?}");
    assert!(next.cold_start);
    assert!(next.report["metrics"]["initDurationMs"].as_f64().is_some());
    let emitted = emu.telemetry_emitted();
    assert_eq!(of_type(&emitted, "platform.initStart").len(), 2);
    let stats = emu.extension_stats();
    assert_eq!(stats.len(), 2);
    assert_ne!(stats[0].pid, stats[1].pid);
    assert_eq!((stats[0].generation, stats[1].generation), (1, 2));
    // The first generation's extension got SHUTDOWN with reason failure and exited in time.
    assert!(bed.log("ext").iter().any(|l| l == "event SHUTDOWN failure"));
    assert!(stats[0].exit.exited && !stats[0].exit.exited_before_shutdown);
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_timeout_yields_status_timeout() {
    let bed = Bed::new("timeout");
    bed.extension("ext", "good");
    let mut config = bed.config();
    config.timeout = Duration::from_secs(1);
    let emu = Emulator::start(config).await.expect("start");
    let o = emu
        .invoke(json!({"action": "sleep", "seconds": 20}))
        .await
        .expect("invoke");
    assert_eq!(o.status, InvokeStatus::Timeout, "{o:?}");
    assert_eq!(o.report["status"], "timeout");
    assert_eq!(o.runtime_done["status"], "timeout");
    assert!(o.duration < Duration::from_secs(15));
    assert!(bed.log("ext").iter().any(|l| l == "event SHUTDOWN timeout"));
    let next = emu.invoke(json!({})).await.expect("after timeout");
    assert_eq!(next.status, InvokeStatus::Success);
    assert!(next.cold_start);
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_exception_is_a_function_error_without_reset() {
    let bed = Bed::new("raise");
    let emu = Emulator::start(bed.config()).await.expect("start");
    let o = emu
        .invoke(json!({"action": "raise"}))
        .await
        .expect("invoke");
    assert_eq!(o.status, InvokeStatus::Error, "{o:?}");
    assert!(o.error_type.is_some());
    let body = o.error_body.as_ref().expect("error body");
    assert_eq!(body["errorType"], "ValueError");
    assert_eq!(body["errorMessage"], "boom");
    assert!(!o.reset);
    let next = emu.invoke(json!({})).await.expect("next");
    assert_eq!(next.status, InvokeStatus::Success);
    assert!(!next.cold_start);
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_exiting_early_is_an_extension_crash() {
    let bed = Bed::new("crash");
    bed.extension("crashy", "exit-early");
    let emu = Emulator::start(bed.config()).await.expect("start");
    let o = emu.invoke(json!({"n": 1})).await.expect("invoke");
    assert_eq!(o.status, InvokeStatus::Failure, "{o:?}");
    assert_eq!(o.error_type.as_deref(), Some("Extension.Crash"));
    assert_eq!(o.report["errorType"], "Extension.Crash");
    assert_eq!(o.report["status"], "failure");
    assert!(o.reset);
    let stats = emu.extension_stats();
    assert!(stats[0].exit.exited_before_shutdown);
    assert_eq!(stats[0].exit.code, Some(3));
    assert!(bed.log("crashy").contains(&"exiting-early".to_string()));

    // Reset like Lambda: a new environment (the script crashes only once per directory).
    let next = emu
        .invoke(json!({"n": 2}))
        .await
        .expect("invoke after reset");
    assert_eq!(next.status, InvokeStatus::Success, "{next:?}");
    assert!(next.cold_start);
    assert_eq!(
        of_type(&emu.telemetry_emitted(), "platform.initStart").len(),
        2
    );
    let report = emu
        .shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    assert_eq!(report.extensions.len(), 1);
    assert!(!report.extensions[0].exit.exited_before_shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_ignoring_shutdown_is_killed_at_the_deadline() {
    let bed = Bed::new("stubborn");
    bed.extension("a-good", "no-telemetry");
    bed.extension("b-stubborn", "ignore-shutdown");
    let mut config = bed.config();
    config.shutdown_timeout = Duration::from_millis(800);
    let emu = Emulator::start(config).await.expect("start");
    assert_eq!(
        emu.invoke(json!({})).await.expect("invoke").status,
        InvokeStatus::Success
    );
    let report = emu
        .shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    let by_name = |n: &str| {
        report
            .extensions
            .iter()
            .find(|e| e.name == n)
            .expect("extension")
    };
    let good = by_name("a-good");
    assert!(!good.exit.killed_at_deadline && good.exit.code == Some(0));
    let stubborn = by_name("b-stubborn");
    assert!(stubborn.exit.killed_at_deadline, "{stubborn:?}");
    assert_eq!(stubborn.exit.signal, Some(9));
    assert!(stubborn.exit.exited && !stubborn.exit.exited_before_shutdown);
    // It did receive SHUTDOWN before being killed.
    assert!(bed
        .log("b-stubborn")
        .iter()
        .any(|l| l == "event SHUTDOWN spindown"));
    assert!(
        report.duration >= Duration::from_millis(800) && report.duration < Duration::from_secs(30)
    );
    let rt = report.runtime_exit.expect("runtime exit");
    assert!(rt.exited && !rt.exited_before_shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_delivery_is_retried_after_a_refused_batch() {
    let bed = Bed::new("retry");
    bed.extension("picky", "fail-first");
    let emu = Emulator::start(bed.config()).await.expect("start");
    emu.invoke(json!({})).await.expect("invoke");
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    let log = bed.log("picky");
    let rejected: Vec<Value> = log
        .iter()
        .filter_map(|l| l.strip_prefix("rejected "))
        .flat_map(|b| serde_json::from_str::<Vec<Value>>(b).expect("batch"))
        .collect();
    assert!(!rejected.is_empty(), "{log:?}");
    let delivered = bed.delivered("picky");
    for r in &rejected {
        assert!(
            delivered.contains(r),
            "refused record never redelivered: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_error_fails_init_and_is_retried_on_invoke() {
    let bed = Bed::new("initerr");
    let mut config = bed.config();
    config.handler = "missing_module.main".into();
    let emu = Emulator::start(config).await.expect("start");
    let init = emu.last_init().expect("init");
    assert_ne!(init.status, "success");
    assert!(
        init.error_type
            .as_deref()
            .is_some_and(|t| t.starts_with("Runtime.")),
        "{init:?}"
    );
    let o = emu.invoke(json!({})).await.expect("invoke");
    assert_eq!(o.status, InvokeStatus::Failure);
    assert!(o.cold_start);
    assert!(
        eventually(|| of_type(&emu.telemetry_emitted(), "platform.initReport").len() == 2).await
    );
    emu.shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_contributes_an_extension_and_python_modules() {
    let bed = Bed::new("layer");
    bed.extension("direct", "no-telemetry");
    let layer = bed.layer("from-layer", "no-telemetry");
    let mut config = bed.config();
    config.layer_dirs = vec![layer];
    let emu = Emulator::start(config).await.expect("start");
    let o = emu
        .invoke(json!({"action": "layer"}))
        .await
        .expect("invoke");
    assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
    let resp = o.response.expect("response");
    assert_eq!(resp["from_layer"], "from the layer");
    let pythonpath = resp["pythonpath"].as_str().expect("PYTHONPATH");
    let parts: Vec<&str> = pythonpath.split(':').collect();
    assert!(
        parts[0].ends_with("/layer/python") && parts[1].ends_with("/fn"),
        "{pythonpath}"
    );
    let report = emu
        .shutdown(ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    let names: Vec<&str> = report.extensions.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["direct", "from-layer"]);
    assert!(report.extensions.iter().all(|e| e.exit.code == Some(0)));
}
