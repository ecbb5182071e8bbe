//! The no-code path: `AWS_LAMBDA_EXEC_WRAPPER=/opt/lambda-memory-profiler` (the layer's
//! `lambda-memory-profiler` script) under the emulator, which starts the runtime through the
//! wrapper like Lambda, with the real awslambdaric runtime, the real decorator package and the real
//! extension. An undecorated handler gets the decorator's figures; handler faults reach the
//! Runtime API as without the wrapper; a decorated handler is measured once.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, EmulatorConfig, InvokeStatus};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const WRAPPER: &str = "lambda-memory-profiler";

/// Undecorated: it only says how many invocations the (wrapper's) decorator measured.
const PLAIN: &str = r#"
import lambda_memory_profiler

_kept = []

def handler(event, context):
    _kept.append(bytearray(256 * 1024))
    return {"stats": lambda_memory_profiler.stats()}
"#;

/// The same handler with the decorator.
const DECORATED: &str = r#"
import lambda_memory_profiler
from lambda_memory_profiler import memory_profile

_kept = []

@memory_profile
def handler(event, context):
    _kept.append(bytearray(256 * 1024))
    return {"stats": lambda_memory_profiler.stats()}
"#;

/// Figures only the decorator's records give the extension.
const DECORATOR_FIGURES: &[&str] = &["GcCollections", "PythonHeapLive", "RuntimeRssPeak"];

/// A function with `files` (path, source) in its code dir and `handler`; through the exec wrapper
/// (linked into the layer dir, as the layer zip ships it at `/opt/lambda-memory-profiler`) when
/// `wrapped`.
fn function(
    py: &Path,
    tag: &str,
    files: &[(&str, &str)],
    handler: &str,
    wrapped: bool,
) -> (common::TempDir, EmulatorConfig) {
    let dir = common::temp_dir(tag);
    let port = common::free_port();
    let mut env = vec![
        ("LMP_SINK", "emf".to_string()),
        ("LMP_INTAKE_PORT", port.to_string()),
        ("LMP_SAMPLE_RATE", "1".into()),
        ("LMP_FLUSH", "end".into()),
        ("LMP_NATIVE", "true".into()),
    ];
    let wrapper = dir.join("layer").join(WRAPPER);
    if wrapped {
        env.push(("AWS_LAMBDA_EXEC_WRAPPER", wrapper.to_string_lossy().into()));
    }
    let mut cfg = common::config(py.to_path_buf(), &dir, "", &env);
    std::fs::remove_file(cfg.function_dir.join("app.py")).unwrap();
    for (path, source) in files {
        let p = cfg.function_dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, source).unwrap();
    }
    std::os::unix::fs::symlink(common::repo().join("layer").join(WRAPPER), &wrapper).unwrap();
    cfg.handler = handler.into();
    (dir, cfg)
}

/// Runs 4 invocations (the first 3 are reported and flushed by the 4th); returns the responses
/// and the extension's EMF documents.
async fn run_four(cfg: EmulatorConfig) -> (Vec<Value>, Vec<Value>) {
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let mut responses = Vec::new();
    for i in 0..4 {
        let out = em.invoke(json!({ "i": i })).await.expect("invoke");
        assert_eq!(out.status, InvokeStatus::Success, "{out:?}");
        responses.push(out.response.clone().unwrap_or(Value::Null));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = common::ext_lines(&em);
        if common::metric_values(&common::emf_docs(&lines), "MaxMemoryUsed").len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, ext) = common::shut_down(em).await;
    assert_eq!(ext.exit.code, Some(0), "{:?}", ext.exit);
    (responses, common::emf_docs(&lines))
}

fn counts(docs: &[Value]) -> Vec<(&'static str, usize)> {
    DECORATOR_FIGURES
        .iter()
        .map(|m| (*m, common::metric_values(docs, m).len()))
        .collect()
}

fn measured(responses: &[Value]) -> Vec<i64> {
    responses
        .iter()
        .map(|r| r["stats"]["invocations"].as_i64().unwrap_or(-1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecorated_handlers_get_the_decorated_twins_figures() {
    let py = common::python();
    let all3: Vec<(&str, usize)> = DECORATOR_FIGURES.iter().map(|m| (*m, 3)).collect();

    // The decorated twin, no wrapper: the reference.
    let (d0, cfg) = function(
        &py,
        "xw-twin",
        &[("app.py", DECORATED)],
        "app.handler",
        false,
    );
    let (resp, docs) = run_four(cfg).await;
    assert_eq!(measured(&resp), [1, 2, 3, 4]);
    assert_eq!(counts(&docs), all3, "decorated twin");

    // Undecorated without the wrapper: no decorator figures.
    let (d1, cfg) = function(&py, "xw-bare", &[("app.py", PLAIN)], "app.handler", false);
    let (resp, docs) = run_four(cfg).await;
    assert_eq!(measured(&resp), [0, 0, 0, 0]);
    assert!(counts(&docs).iter().all(|(_, n)| *n == 0), "{docs:?}");

    // Undecorated through the wrapper: a top-level module, and a folder path.
    let (d2, cfg) = function(&py, "xw-top", &[("app.py", PLAIN)], "app.handler", true);
    let (resp, docs) = run_four(cfg).await;
    assert_eq!(measured(&resp), [1, 2, 3, 4]);
    assert_eq!(counts(&docs), all3, "top-level module through the wrapper");

    let (d3, cfg) = function(
        &py,
        "xw-pkg",
        &[("pkg/sub/app.py", PLAIN)],
        "pkg/sub/app.handler",
        true,
    );
    let (resp, docs) = run_four(cfg).await;
    assert_eq!(measured(&resp), [1, 2, 3, 4]);
    assert_eq!(
        counts(&docs),
        all3,
        "pkg/sub/app.handler through the wrapper"
    );

    // A dotted module path too.
    let (d4, cfg) = function(
        &py,
        "xw-dot",
        &[("pkg/__init__.py", ""), ("pkg/mod.py", PLAIN)],
        "pkg.mod.handler",
        true,
    );
    let (resp, docs) = run_four(cfg).await;
    assert_eq!(measured(&resp), [1, 2, 3, 4]);
    assert_eq!(counts(&docs), all3, "pkg.mod.handler through the wrapper");
    drop((d0, d1, d2, d3, d4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decorated_handler_under_the_wrapper_is_measured_once() {
    let py = common::python();
    let (_dir, cfg) = function(
        &py,
        "xw-once",
        &[("app.py", DECORATED)],
        "app.handler",
        true,
    );
    let (resp, docs) = run_four(cfg).await;
    // One measured invocation per call, one record sent per measured invocation (the response is
    // built before the call's own record is sent).
    assert_eq!(measured(&resp), [1, 2, 3, 4]);
    // The process's one hello datagram went at init, when the module decorated its handler
    // (the wrapper hands a decorated handler over as it is).
    let sent: Vec<i64> = resp
        .iter()
        .map(|r| r["stats"]["sent"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(sent[0], 1, "{sent:?}");
    assert_eq!([sent[2] - sent[1], sent[3] - sent[2]], [1, 1], "{sent:?}");
    let all3: Vec<(&str, usize)> = DECORATOR_FIGURES.iter().map(|m| (*m, 3)).collect();
    assert_eq!(counts(&docs), all3);
    assert_eq!(common::metric_values(&docs, "MaxMemoryUsed").len(), 3);
}

/// What the Runtime API received for one faulty function: the init error type (if init failed),
/// the invocation's error type and the `errorType` / `errorMessage` of the posted error body.
async fn fault(
    py: &Path,
    tag: &str,
    files: &[(&str, &str)],
    handler: &str,
    wrapped: bool,
) -> Value {
    let (_dir, cfg) = function(py, tag, files, handler, wrapped);
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let init = em.last_init().and_then(|i| i.error_type);
    let out = em.invoke(json!({})).await.expect("invoke");
    // The runtime's own log of the fault (`[ERROR] Runtime.ImportModuleError: Unable to import
    // module 'app': ...`): the init error's message, which the emulator does not keep.
    let logged: Vec<String> = em
        .output_lines(lambda_emulator::OutputSource::Runtime)
        .into_iter()
        .filter(|l| l.contains("[ERROR]"))
        .take(1)
        .map(|l| {
            let e = l.split_once("[ERROR]").map_or(l.as_str(), |(_, e)| e);
            // The message line (the traceback names the function's temp dir).
            e.split('\r').next().unwrap_or_default().trim().to_string()
        })
        .collect();
    let _ = em.shutdown(lambda_emulator::ShutdownReason::Spindown).await;
    json!({
        "init": init,
        "status": format!("{:?}", out.status),
        "error_type": out.error_type,
        "body_type": out.error_body.as_ref().map(|b| b["errorType"].clone()),
        "body_message": out.error_body.as_ref().map(|b| b["errorMessage"].clone()),
        "logged": logged,
    })
}

/// Tag, function files, handler, the error type expected without the wrapper.
type FaultCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_reach_the_runtime_api_as_without_the_wrapper() {
    let py = common::python();
    let cases: &[FaultCase] = &[
        (
            "import",
            &[("app.py", "import no_such_module_lmp\n")],
            "app.handler",
            "Runtime.ImportModuleError",
        ),
        (
            "nomodule",
            &[("app.py", PLAIN)],
            "missing.handler",
            "Runtime.ImportModuleError",
        ),
        (
            "attr",
            &[("app.py", PLAIN)],
            "app.nope",
            "Runtime.HandlerNotFound",
        ),
        (
            "malformed",
            &[("app.py", PLAIN)],
            "apphandler",
            "Runtime.MalformedHandlerName",
        ),
        (
            "syntax",
            &[("app.py", "def handler(event, context)\n    return 1\n")],
            "app.handler",
            "Runtime.UserCodeSyntaxError",
        ),
        (
            "raises",
            &[(
                "app.py",
                "class PaymentDeclined(Exception):\n    pass\n\ndef handler(event, context):\n    raise PaymentDeclined('card 4242')\n",
            )],
            "app.handler",
            "PaymentDeclined",
        ),
    ];
    for (tag, files, handler, want) in cases {
        let bare = fault(&py, &format!("xw-f-{tag}"), files, handler, false).await;
        let wrapped = fault(&py, &format!("xw-fw-{tag}"), files, handler, true).await;
        eprintln!("{tag}: without {bare}\n{tag}: with    {wrapped}");
        assert_eq!(bare["error_type"], json!(want), "{tag}: {bare}");
        assert_eq!(
            wrapped, bare,
            "{tag}: the wrapper changed what the Runtime API got"
        );
    }
}

/// The wrapper's added cold start: init duration (`platform.initReport`) over fresh environments,
/// undecorated handler without and with the wrapper, and the decorated twin without and with it.
/// `LMP_BENCH_ENVS` (default 10) environments each; the medians are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapper_cold_start_cost() {
    let py = common::python();
    let n: usize = std::env::var("LMP_BENCH_ENVS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let variants = [
        ("undecorated, no wrapper", PLAIN, false),
        ("undecorated, wrapper", PLAIN, true),
        ("decorated, no wrapper", DECORATED, false),
        ("decorated, wrapper", DECORATED, true),
    ];
    let mut inits: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // Interleaved, so machine load drifts hit every variant alike.
    for round in 0..n {
        for (k, (_, source, wrapped)) in variants.iter().enumerate() {
            let (_dir, cfg) = function(
                &py,
                &format!("xw-cold-{k}-{round}"),
                &[("app.py", source)],
                "app.handler",
                *wrapped,
            );
            let em = Emulator::start(cfg).await.expect("emulator starts");
            let init = em.last_init().expect("init ran");
            assert_eq!(init.status, "success", "{init:?}");
            inits[k].push(init.duration.as_secs_f64() * 1000.0);
            let _ = common::shut_down(em).await;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m: Vec<f64> = inits.iter_mut().map(median).collect();
    for (k, (name, _, _)) in variants.iter().enumerate() {
        eprintln!("init duration, {name}: median {:.1} ms over {n}", m[k]);
    }
    eprintln!(
        "wrapper added cold start: undecorated {:+.1} ms (script + decorator import), decorated {:+.1} ms (script alone)",
        m[1] - m[0],
        m[3] - m[2]
    );
}
