//! Lambda Managed Instances end to end: the real extension in the emulator's managed-instances
//! mode, the real `awslambdaric` forking four workers, each with the real decorator. One
//! worker leaks; only it is flagged, and the environment's memory is the sum over them all.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use lambda_emulator::{Emulator, InvokeStatus};
use serde_json::{json, Value};

const WORKERS: u32 = 4;
const WAVES: usize = 90;
const MEMORY_MB: u32 = 512;
const BALLAST_MB: u64 = 24;

/// The first worker to import the module claims the marker file and leaks 256 KiB per call;
/// every worker holds a 24 MB ballast (every page written), so the environment's memory is
/// at least four of them.
const APP: &str = r#"
import os, time
from lambda_memory_profiler import memory_profile

MARK = os.path.join(os.environ["LMI_MARK_DIR"], "leaker")

def _claim():
    try:
        fd = os.open(MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True

LEAKS = _claim()
KEPT = []
BALLAST = b"x" * (24 << 20)

@memory_profile
def handler(event, context):
    if LEAKS:
        KEPT.append(os.urandom(256 << 10))
    time.sleep(0.01)
    return {"pid": os.getpid(), "leaks": LEAKS}
"#;

/// `n` invocations of `event` at once, each successful.
async fn wave(em: &Emulator, n: u32, event: Value) -> Vec<lambda_emulator::InvokeOutcome> {
    let outs = futures::future::join_all((0..n).map(|_| em.invoke(event.clone()))).await;
    outs.into_iter()
        .map(|o| {
            let o = o.expect("invoke");
            assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
            o
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_four_workers_only_the_leaking_one_is_flagged_and_memory_is_their_sum() {
    let python = common::python();
    let dir = common::temp_dir("managed-instances");
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let port = common::free_port();
    let mut cfg = common::config(
        python,
        &dir,
        APP,
        &[
            ("LMP_SINK", "emf".into()),
            ("LMP_INTAKE_PORT", port.to_string()),
            ("LMI_MARK_DIR", marks.to_string_lossy().into_owned()),
        ],
    );
    cfg.managed_instances = Some(WORKERS);
    cfg.memory_mb = MEMORY_MB;
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let mut pids = BTreeSet::new();
    for _ in 0..WAVES {
        for o in wave(&em, WORKERS, json!({})).await {
            pids.insert(o.response.as_ref().unwrap()["pid"].as_u64().unwrap());
        }
    }
    assert_eq!(pids.len(), WORKERS as usize, "{pids:?}");
    // A last wave after a pause well past the extension's reading interval (1 s, counted from
    // its last publication, which may come late on a loaded machine), then
    // another pause for its reports: the extension's last reading is of a still environment.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    wave(&em, WORKERS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let leaker: u64 = std::fs::read_to_string(marks.join("leaker"))
        .unwrap()
        .parse()
        .unwrap();
    // The environment's memory read here, independently, at the end: every worker, their
    // parent (the runtime's bootstrap, which forked them) and the extension, each page once.
    let rollup_mb = |pid: u64, field: &str| -> f64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
        let line = text.lines().find(|l| l.starts_with(field)).unwrap();
        let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb / 1024.0
    };
    let first = *pids.iter().next().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{first}/stat")).unwrap();
    let parent: u64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let ext_pid = em
        .extension_stats()
        .iter()
        .find(|e| e.name == common::EXT)
        .map(|e| u64::from(e.pid))
        .unwrap();
    let members: BTreeSet<u64> = pids.iter().copied().chain([parent, ext_pid]).collect();
    let sum = |field: &str| -> f64 { members.iter().map(|p| rollup_mb(*p, field)).sum() };
    let (expected_mb, anon_mb, rss_mb) = (sum("Pss:"), sum("Pss_Anon:"), sum("Rss:"));
    let (shut, ext) = common::shut_down_checked(em).await;
    assert_eq!(ext.events, ["SHUTDOWN"], "the platform allows no INVOKE");
    assert!(ext.post_runtime.is_empty(), "never waited on: {ext:?}");
    let lines = common::ext_output(&shut);
    let emf = common::emf_docs(&lines);
    let logged: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();

    // Only the leaking worker is flagged, by its own history, named by pid with its memory.
    let flagged: Vec<&Value> = logged
        .iter()
        .filter(|d| d["lmp"] == "leak_suspected")
        .collect();
    assert!(!flagged.is_empty(), "no leak flagged: {lines:#?}");
    for line in &flagged {
        assert_eq!(line["pid"], leaker, "{line}");
        assert!(
            line["process_anon_bytes"].as_u64().unwrap() > BALLAST_MB << 20,
            "{line}"
        );
    }
    assert!(common::metric_values(&emf, "LeakSuspected").contains(&1.0));

    // No record lost: one profile per invocation, each with the platform's duration.
    let durations = common::metric_values(&emf, "Duration");
    assert_eq!(durations.len(), (WAVES + 1) * WORKERS as usize);

    // The environment's memory: all four ballasts and more, never over the memory size, and
    // the utilization is that sum against the memory size.
    let env_mb = common::metric_values(&emf, "EnvironmentMemory");
    let utilization = common::metric_values(&emf, "MemoryUtilization");
    assert!(!env_mb.is_empty() && env_mb.len() == utilization.len());
    let most = env_mb.iter().copied().fold(0.0, f64::max);
    assert!(
        most > (WORKERS as u64 * BALLAST_MB) as f64 && most < f64::from(MEMORY_MB),
        "{env_mb:?}"
    );
    // The sum over exactly these processes. A file page's Pss share moves with every other
    // process mapping it (the other tests' interpreters on this machine, not in a Lambda
    // sandbox), so the reading is bounded by what no sharing moves: their anonymous memory
    // (each page once) below, their resident memory (shared pages once per process) above.
    eprintln!(
        "EnvironmentMemory: published {most:.1} MB; read here {expected_mb:.1} MB Pss, \
         {anon_mb:.1} MB Pss_Anon, {rss_mb:.1} MB Rss"
    );
    assert!(anon_mb <= most && most <= rss_mb, "{env_mb:?}");
    for (m, u) in env_mb.iter().zip(&utilization) {
        assert!(
            (m / f64::from(MEMORY_MB) * 100.0 - u).abs() < 1e-6,
            "{m} {u}"
        );
    }
    assert!(
        common::metric_values(&emf, "MaxMemoryUsed").is_empty(),
        "no such figure there"
    );
}

/// A handler that sleeps as long as its event says.
const SLEEPER: &str = r#"
import time
from lambda_memory_profiler import memory_profile

@memory_profile
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return "ok"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_longer_than_the_join_wait_is_published_whole() {
    let python = common::python();
    let dir = common::temp_dir("managed-instances-long");
    let mut cfg = common::config(
        python,
        &dir,
        SLEEPER,
        &[
            ("LMP_SINK", "emf".into()),
            ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ],
    );
    cfg.managed_instances = Some(WORKERS);
    let em = Emulator::start(cfg).await.expect("emulator starts");
    // One worker busy for 3.5 s (past the join's 2 s wait) while the others serve 90 quick
    // invocations: later starts must not expire it.
    let quick = async {
        for _ in 0..30 {
            wave(&em, WORKERS - 1, json!({ "sleep": 0.01 })).await;
        }
    };
    let (long, ()) = tokio::join!(em.invoke(json!({ "sleep": 3.5 })), quick);
    assert_eq!(long.expect("invoke").status, InvokeStatus::Success);
    let lines = common::shut_down_cleanly(em).await;
    let emf = common::emf_docs(&lines);
    let durations = common::metric_values(&emf, "Duration");
    assert_eq!(
        durations.len(),
        1 + 30 * (WORKERS as usize - 1),
        "{durations:?}"
    );
    assert!(durations.iter().any(|d| *d >= 3500.0), "{durations:?}");
    // Its record was joined to it, not lost: every invocation's decorator figures are there.
    assert_eq!(
        common::metric_values(&emf, "GcCollections").len(),
        durations.len()
    );
}
