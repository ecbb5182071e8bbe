//! End to end through the project's Lambda emulator: the examples' leaky functions are flagged
//! by the extension's analysis within 50 warm invocations, naming a site in the example's code, and
//! their fixed twins are not flagged over 200 invocations. Real awslambdaric, real decorator,
//! real extension binary, `LMP_SINK=emf` (the verdicts are read from its stdout).
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, EmulatorConfig, InvokeStatus};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Warm invocations within which a leak must be flagged (after the warm-up the rule ignores).
const LEAK_WITHIN: usize = 50;
const FIXED_INVOCATIONS: usize = 200;

struct Run {
    /// `LeakSuspected` values in publication order.
    leak_suspected: Vec<f64>,
    /// The `leak_suspected` log lines.
    leak_lines: Vec<Value>,
    heap_growth_per_invoke: Vec<f64>,
}

async fn run_example(example: &str, variant: &str, invocations: usize) -> Option<Run> {
    let python = common::python();
    let dir = common::temp_dir(&format!("leak-{example}-{variant}"));
    let layer = dir.join("layer");
    std::fs::create_dir_all(&layer).unwrap();
    std::os::unix::fs::symlink(common::repo().join("layer/python"), layer.join("python")).unwrap();
    let port = common::free_port();
    let mut env: Vec<(String, String)> = vec![
        ("LMP_SINK".into(), "emf".into()),
        ("LMP_INTAKE_PORT".into(), port.to_string()),
    ];
    // As in analysis_truth: the function sees LMP_NATIVE when the test process has it (the
    // emulator does not pass its own environment on).
    if let Ok(native) = std::env::var("LMP_NATIVE") {
        env.push(("LMP_NATIVE".into(), native));
    }
    // Analysis aid: `LMP_TEST_DUMP=<dir>` keeps the extension's output lines of every run there.
    let dump = std::env::var("LMP_TEST_DUMP").ok().map(|d| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        format!("{d}/{example}-{variant}-{stamp}")
    });
    let cfg = EmulatorConfig {
        extensions_dir: Some(common::extensions_dir(&dir)),
        function_dir: common::repo().join("examples").join(example),
        handler: format!("{variant}.handler"),
        layer_dirs: vec![layer],
        python,
        memory_mb: 512,
        timeout: Duration::from_secs(30),
        function_name: format!("{example}-{variant}"),
        env,
        ..EmulatorConfig::default()
    };
    let em = Emulator::start(cfg).await.expect("emulator starts");
    for i in 0..invocations {
        let out = em
            .invoke(serde_json::json!({ "seq": i }))
            .await
            .expect("invoke");
        assert_eq!(
            out.status,
            InvokeStatus::Success,
            "{example}/{variant} #{i}: {out:?}"
        );
    }
    let lines = common::shut_down_cleanly(em).await;
    if let Some(d) = &dump {
        std::fs::write(format!("{d}.ext.jsonl"), lines.join("\n")).unwrap();
    }
    let emf = common::emf_docs(&lines);
    Some(Run {
        leak_suspected: common::metric_values(&emf, "LeakSuspected"),
        heap_growth_per_invoke: common::metric_values(&emf, "HeapGrowthPerInvoke"),
        leak_lines: lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|d| d["lmp"] == "leak_suspected")
            .collect(),
    })
}

async fn leaky_is_flagged_and_fixed_is_not(example: &str) {
    let Some(leaky) = run_example(example, "leaky", LEAK_WITHIN + 3).await else {
        return;
    };
    let first = leaky.leak_lines.first().unwrap_or_else(|| {
        panic!(
            "{example}: no leak flagged in {LEAK_WITHIN} warm invocations: {:?}",
            leaky.leak_suspected
        )
    });
    let detected_at = first["invocations"].as_u64().unwrap_or(0);
    let top = first["growing_sites"][0]["site"].as_str().unwrap_or("");
    eprintln!(
        "{example}: leak flagged at invocation {detected_at}, heap growth {:?} B/invoke, top site {top}",
        first["heap_growth_bytes_per_invoke"]
    );
    // tracemalloc names where a block was allocated, not who keeps it: the kept object may come
    // from the example's simulated AWS/Kubernetes client in the same folder. Either way the site
    // is the example's own code, never its fixed twin nor the standard library.
    let file = Path::new(top.rsplit_once(':').map_or(top, |(f, _)| f));
    assert!(
        file.parent() == Some(common::repo().join("examples").join(example).as_path())
            && file.file_name() != Some(std::ffi::OsStr::new("fixed.py")),
        "{example}: top growing site {top} is not in the leaky example's code: {first}"
    );
    assert!(leaky.leak_suspected.contains(&1.0));

    let fixed = run_example(example, "fixed", FIXED_INVOCATIONS)
        .await
        .expect("python present");
    assert!(
        fixed.leak_lines.is_empty(),
        "{example}: fixed twin flagged: {:?}",
        fixed.leak_lines
    );
    assert!(
        fixed.leak_suspected.len() > FIXED_INVOCATIONS / 2
            && fixed.leak_suspected.iter().all(|v| *v == 0.0),
        "{example}: fixed twin verdicts {:?}",
        fixed.leak_suspected
    );
    let median = {
        let mut g = fixed.heap_growth_per_invoke.clone();
        g.sort_by(f64::total_cmp);
        g.get(g.len() / 2).copied().unwrap_or(0.0)
    };
    eprintln!("{example}: fixed twin not flagged over {FIXED_INVOCATIONS} invocations (median heap growth {median:.0} B/invoke)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_aggregator_leaks_are_flagged() {
    leaky_is_flagged_and_fixed_is_not("log_aggregator").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn param_store_cache_leak_is_flagged() {
    leaky_is_flagged_and_fixed_is_not("param_store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_watcher_cache_leak_is_flagged() {
    leaky_is_flagged_and_fixed_is_not("pod_watcher").await;
}
