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
        let wave = futures::future::join_all((0..WORKERS).map(|i| em.invoke(json!({ "i": i }))));
        for o in wave.await {
            let o = o.expect("invoke");
            assert_eq!(o.status, InvokeStatus::Success, "{o:?}");
            pids.insert(o.response.as_ref().unwrap()["pid"].as_u64().unwrap());
        }
    }
    assert_eq!(pids.len(), WORKERS as usize, "{pids:?}");
    // A last wave after a pause longer than the extension's reading interval (1 s), then
    // another pause for its reports: the extension's last reading is of a still environment.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for o in futures::future::join_all((0..WORKERS).map(|i| em.invoke(json!({ "i": i })))).await {
        assert_eq!(o.expect("invoke").status, InvokeStatus::Success);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let leaker: u64 = std::fs::read_to_string(marks.join("leaker"))
        .unwrap()
        .parse()
        .unwrap();
    // The environment's memory read here, independently, at the end: every worker, their
    // parent (the runtime's bootstrap, which forked them) and the extension, each page once.
    let pss_mb = |pid: u64| -> f64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
        let line = text.lines().find(|l| l.starts_with("Pss:")).unwrap();
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
    let expected_mb: f64 = members.iter().map(|p| pss_mb(*p)).sum();
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
    // The sum: the largest reading (memory only grows here) is what the test reads at the end.
    eprintln!("EnvironmentMemory: published {most:.1} MB, read here {expected_mb:.1} MB");
    assert!(
        (most - expected_mb).abs() < 0.02 * expected_mb,
        "published {most:.1} MB, read {expected_mb:.1} MB: {env_mb:?}"
    );
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
