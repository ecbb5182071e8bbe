//! Functions without the decorator, and the extension's own switches, under the emulator with the
//! real extension: an undecorated Python handler (real awslambdaric) and a Node.js runtime are
//! never held after their response, in any flush mode; a process that imports the decorator
//! without wrapping its handler is waited for a few invocations only; `LMP_DISABLE=true` makes
//! a do-nothing extension; the decorator's sink arguments reach the extension.
//!
//! The hold bounds are structural: telemetry is buffered 1 s (`LMP_TELEMETRY_TIMEOUT_MS`), and
//! a pause after the first invocation lets a first batch arrive, so an extension that waited for
//! `platform.runtimeDone` would hold each later invocation for most of a second; the bound
//! (400 ms) sits far below that and far above any scheduling delay of a loaded machine.
//! The within-1-ms comparison with a do-nothing extension is a benchmark
//! (`bench/undecorated_wait.py`, BENCHMARKS.md), not a test.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, EmulatorConfig, InvokeStatus};
use serde_json::Value;
use std::time::Duration;

const NEVER_HELD: Duration = Duration::from_millis(400);

/// A handler that does not know the profiler.
const PLAIN: &str = r#"
_kept = []

def handler(event, context):
    _kept.append(bytearray(64 * 1024))
    return {"n": len(_kept)}
"#;

/// Imports the decorator and wraps a helper, not the handler: a hello, then no records.
const HELPER_ONLY: &str = r#"
from lambda_memory_profiler import memory_profile

@memory_profile
def helper():
    return 1

def handler(event, context):
    return {"ok": True}
"#;

/// A Lambda custom runtime in Node.js (no Python in the function at all).
const NODE_RUNTIME: &str = include_str!("fixtures/node_runtime.js");

fn base_env(flush: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LMP_SINK", "emf".to_string()),
        ("LMP_FLUSH", flush.to_string()),
        ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ("LMP_TELEMETRY_TIMEOUT_MS", "1000".into()),
    ]
}

/// What one run left: the extension's figures, its lines and the runtime's.
struct Ran {
    ext: lambda_emulator::ExtensionStats,
    lines: Vec<String>,
    runtime: Vec<String>,
}

/// Runs `n` invocations, pausing after the first until telemetry delivered its first batch,
/// each a success; the extension must end cleanly at SHUTDOWN.
async fn run(cfg: EmulatorConfig, n: usize) -> Ran {
    let em = Emulator::start(cfg).await.expect("emulator starts");
    for i in 0..n {
        let out = em.invoke(serde_json::json!({})).await.expect("invoke");
        assert_eq!(out.status, InvokeStatus::Success, "{out:?}");
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    let (shut, ext) = common::shut_down_checked(em).await;
    Ran {
        lines: common::ext_output(&shut),
        runtime: shut.runtime_output,
        ext,
    }
}

fn worst(held: &[Duration]) -> Duration {
    held.iter().max().copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecorated_python_handler_is_never_held_in_any_flush_mode() {
    let py = common::python();
    for flush in ["end", "periodic:1", "adaptive"] {
        let dir = common::temp_dir("undecorated-py");
        let cfg = common::config(py.clone(), &dir, PLAIN, &base_env(flush));
        let Ran { ext, lines, .. } = run(cfg, 15).await;
        let held = ext.post_runtime;
        eprintln!(
            "{flush}: post-runtime max {:?} over {}",
            worst(&held),
            held.len()
        );
        assert_eq!(held.len(), 15);
        assert!(worst(&held) < NEVER_HELD, "{flush}: held {held:?}");
        // The platform's figures are still published for every invocation.
        let docs = common::emf_docs(&lines);
        assert!(
            common::metric_values(&docs, "MaxMemoryUsed").len() >= 14,
            "{flush}: {}",
            lines.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runtime_is_never_held_in_any_flush_mode() {
    let py = common::python();
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("node not installed: skipped");
        return;
    }
    for flush in ["end", "periodic:1", "adaptive"] {
        let dir = common::temp_dir("undecorated-node");
        let mut cfg = common::config(py.clone(), &dir, "", &base_env(flush));
        let script = cfg.function_dir.join("runtime.js");
        std::fs::write(&script, NODE_RUNTIME).unwrap();
        cfg.runtime_command = Some(vec!["node".into(), script.to_string_lossy().into()]);
        let Ran { ext, lines, .. } = run(cfg, 15).await;
        let held = ext.post_runtime;
        eprintln!("node {flush}: post-runtime max {:?}", worst(&held));
        assert_eq!(held.len(), 15);
        assert!(worst(&held) < NEVER_HELD, "{flush}: held {held:?}");
        let docs = common::emf_docs(&lines);
        assert!(common::metric_values(&docs, "MaxMemoryUsed").len() >= 14);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_without_records_is_waited_for_a_few_invocations_only() {
    let py = common::python();
    let dir = common::temp_dir("helper-only");
    let cfg = common::config(py, &dir, HELPER_ONLY, &base_env("end"));
    let Ran { ext, lines, .. } = run(cfg, 12).await;
    let held = ext.post_runtime;
    // The first invocations wait (a record was announced); from the fourth on, none does.
    let silent = lambda_memory_profiler::presence::SILENT_INVOCATIONS as usize;
    assert!(worst(&held[silent..]) < NEVER_HELD, "held {held:?}");
    let notices = lines
        .iter()
        .filter(|l| l.contains("no decorator record for these invocations"))
        .count();
    assert_eq!(notices, 1, "{}", lines.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_the_extension_does_nothing_and_exits_cleanly() {
    let py = common::python();
    let dir = common::temp_dir("disabled");
    let mut env = base_env("end");
    env.push(("LMP_DISABLE", "true".into()));
    let cfg = common::config(py, &dir, common::DECORATED, &env);
    let Ran {
        ext,
        lines,
        runtime,
    } = run(cfg, 5).await;
    assert_eq!(ext.events, vec!["SHUTDOWN".to_string()], "{ext:?}");
    assert!(ext.post_runtime.is_empty(), "never waited on: {ext:?}");
    assert!(ext.telemetry_types.is_empty(), "{ext:?}");
    // Nobody publishes anything: not the extension, not the decorator's fallback.
    assert!(common::emf_docs(&lines).is_empty(), "{}", lines.join("\n"));
    assert!(
        common::emf_docs(&runtime).is_empty(),
        "{}",
        runtime.join("\n")
    );
}

const WITH_SINK_ARGS: &str = r#"
from lambda_memory_profiler import memory_profile

@memory_profile(namespace="Team/Checkout", dimensions="FunctionName,FunctionVersion", storage_resolution=1)
def handler(event, context):
    return {"ok": True}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decorators_sink_arguments_configure_the_extension() {
    let py = common::python();
    let dir = common::temp_dir("sink-args");
    let cfg = common::config(py, &dir, WITH_SINK_ARGS, &base_env("end"));
    let lines = run(cfg, 4).await.lines;
    let docs = common::emf_docs(&lines);
    assert!(!docs.is_empty(), "{}", lines.join("\n"));
    for d in &docs {
        let m = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "Team/Checkout", "{d}");
        let sets: Vec<Vec<String>> = serde_json::from_value(m["Dimensions"].clone()).unwrap();
        assert_eq!(
            sets,
            vec![
                vec!["FunctionName".to_string()],
                vec!["FunctionName".to_string(), "FunctionVersion".to_string()]
            ],
            "{d}"
        );
        let resolutions: Vec<&Value> = m["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| &x["StorageResolution"])
            .collect();
        assert!(resolutions.iter().all(|r| **r == 1), "{d}");
    }
    // Platform figures (not only the decorator's) go there too.
    assert!(!common::metric_values(&docs, "MaxMemoryUsed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_initialization_type_is_logged_and_profiled_like_on_demand() {
    let py = common::python();
    let dir = common::temp_dir("unknown-init");
    let mut cfg = common::config(py, &dir, common::DECORATED, &base_env("end"));
    cfg.initialization_type = "some-future-mode".into();
    let lines = run(cfg, 3).await.lines;
    let warned = lines
        .iter()
        .filter(|l| l.contains("unknown AWS_LAMBDA_INITIALIZATION_TYPE"))
        .count();
    assert_eq!(warned, 1, "{}", lines.join("\n"));
    let docs = common::emf_docs(&lines);
    assert!(!common::metric_values(&docs, "RuntimeRssPeak").is_empty());
}
