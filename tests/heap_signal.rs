//! The native sampler's `heap` object (protocol version 2), end to end and on synthetic series.
//!
//! - Under the emulator, with the real runtime client and the real extension (`LMP_SINK=emf`), a
//!   handler that sends its own records: a version 2 record's `heap` is joined and published as
//!   `PythonHeapLive` / `PythonHeapAllocated`; version 1 records are still accepted; a malformed
//!   `heap` object costs only itself; the leak analysis judges the heap series it is handed (a
//!   leak is flagged with its site, resident memory rising under a flat heap is not).
//! - Fed straight into the analysis through the intake's parser and limits, the series a
//!   simulated sampler produces (allocations sampled by bytes with exponential gaps, each sample
//!   weighted by the inverse of its probability, as the decorator's sampler does): a leak of
//!   10 KiB per invocation is flagged over every seed, full bounded caches are not, rising
//!   resident memory with a flat heap is not, and a sampler restart (new epoch) starts a new
//!   history.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, InvokeStatus};
use lambda_memory_profiler::analysis::environment::{EnvironmentAnalysis, Findings};
use lambda_memory_profiler::analysis::leak::LeakConfig;
use lambda_memory_profiler::analysis::rightsize::RightSizeConfig;
use lambda_memory_profiler::invocation::{InvocationProfile, SourceEvent};
use lambda_memory_profiler::metrics::{findings_datums, profile_datums, Metric};
use lambda_memory_profiler::sources::intake::{parse_datagram, IntakeRecord};
use lambda_memory_profiler::sources::limits::Limits;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

// ---- end to end: a handler that sends its own records ------------------------------------------

/// Sends, for each invocation, the record the event describes (no decorator, so exactly one
/// record per invocation): its version, its `heap` object (raw JSON text, so a malformed one can
/// be sent), `anon_bytes` and a `rss_peak_bytes` that names the invocation.
const SENDER: &str = r#"
import json, os, socket

PORT = int(os.environ["LMP_INTAKE_PORT"])
_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_hello = []

def handler(event, context):
    if not _hello:
        hello = {"v": event["v"], "kind": "hello", "pid": os.getpid(), "runtime": "python3.11"}
        _sock.sendto(json.dumps(hello).encode(), ("127.0.0.1", PORT))
        _hello.append(1)
    record = json.dumps({
        "v": event["v"], "kind": "invocation", "request_id": context.aws_request_id,
        "pid": os.getpid(), "runtime": "python3.11", "duration_ms": 1.0, "cold_start": False,
        "error_type": None, "rss_peak_bytes": event["rss_peak"], "rss_peak_scope": "invocation",
        "heap_blocks": event.get("blocks", 50000), "anon_bytes": event["anon"],
        "gc": {"collections": 0, "collected": 0, "uncollectable": 0, "garbage": 0},
        "trace": None,
    })
    heap = event.get("heap")
    if heap is not None:
        record = record[:-1] + ', "heap": ' + heap + "}"
    _sock.sendto(record.encode(), ("127.0.0.1", PORT))
    return {"ok": True}
"#;

/// What the extension printed over a run.
struct Run {
    lines: Vec<Value>,
    emf: Vec<Value>,
}

impl Run {
    fn values(&self, metric: &str) -> Vec<f64> {
        common::metric_values(&self.emf, metric)
    }

    fn sorted(&self, metric: &str) -> Vec<f64> {
        let mut v = self.values(metric);
        v.sort_by(f64::total_cmp);
        v
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["lmp"] == kind).collect()
    }
}

/// Runs `events` (one invocation each) through the emulator with the sender above.
async fn run(tag: &str, events: &[Value]) -> Option<Run> {
    let python = common::python();
    let dir = common::temp_dir(tag);
    let vars: Vec<(&str, String)> = vec![
        ("LMP_SINK", "emf".into()),
        ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ("LMP_LEAK_SIGNAL", "heap".into()),
    ];
    let mut cfg = common::config(python, &dir, SENDER, &vars);
    cfg.memory_mb = 512;
    cfg.timeout = Duration::from_secs(20);
    let em = Emulator::start(cfg).await.expect("emulator starts");
    for (i, event) in events.iter().enumerate() {
        let out = em.invoke(event.clone()).await.expect("invoke");
        assert_eq!(out.status, InvokeStatus::Success, "#{i}: {out:?}");
    }
    let raw = common::shut_down_cleanly(em).await;
    let run = Run {
        lines: raw
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|d| d.get("lmp").is_some())
            .collect(),
        emf: common::emf_docs(&raw),
    };
    Some(run)
}

fn heap_text(live: u64, allocated: u64, epoch: u64) -> String {
    json!({
        "live_bytes": live, "allocated_bytes": allocated, "sample_bytes": 65536,
        "samples": live / 65536, "dropped": 0, "epoch": epoch,
        "sites": [{"file": "/var/task/app.py", "line": 42, "function": "handler",
                   "via": "/var/lang/lib/python3.11/json/decoder.py:353",
                   "delta_bytes": 65600, "live_bytes": 1312000}],
        "sites_truncated": 0,
    })
    .to_string()
}

fn event(v: u64, i: u64, heap: Option<String>) -> Value {
    json!({"v": v, "rss_peak": 50 * MIB + i, "anon": 40 * MIB, "heap": heap})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_record_is_joined_and_its_heap_published() {
    let events: Vec<Value> = (0..5)
        .map(|i| event(2, i, Some(heap_text(30 * MIB + i * KIB, MIB + i, 1))))
        .collect();
    let Some(run) = run("heap-v2", &events).await else {
        return;
    };
    let expected = |f: &dyn Fn(u64) -> u64| (0..5).map(|i| f(i) as f64).collect::<Vec<_>>();
    assert_eq!(
        run.sorted("PythonHeapLive"),
        expected(&|i| 30 * MIB + i * KIB)
    );
    assert_eq!(run.sorted("PythonHeapAllocated"), expected(&|i| MIB + i));
    // Joined with the platform's figures, one profile per invocation.
    assert_eq!(run.sorted("RuntimeRssPeak"), expected(&|i| 50 * MIB + i));
    assert_eq!(run.values("MaxMemoryUsed").len(), 5);
    assert_eq!(run.values("RecordsDropped").iter().sum::<f64>(), 0.0);
    // The EMF line names the units the metric table gives them.
    let doc = run
        .emf
        .iter()
        .find(|d| d.get("PythonHeapLive").is_some())
        .unwrap();
    let defs = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap();
    let live = defs.iter().find(|m| m["Name"] == "PythonHeapLive").unwrap();
    assert_eq!(live["Unit"], "Bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_records_are_still_accepted() {
    // Version 1 records, one of them with a `heap` field (not one of version 1: ignored), then
    // version 2 ones, in one environment.
    let mut events: Vec<Value> = (0..3).map(|i| event(1, i, None)).collect();
    events.push(event(1, 3, Some(heap_text(30 * MIB, MIB, 1))));
    events.extend((4..6).map(|i| event(2, i, Some(heap_text(31 * MIB, MIB, 1)))));
    let Some(run) = run("heap-v1", &events).await else {
        return;
    };
    let expected: Vec<f64> = (0..6).map(|i| (50 * MIB + i) as f64).collect();
    assert_eq!(
        run.sorted("RuntimeRssPeak"),
        expected,
        "every record joined"
    );
    assert_eq!(run.values("Duration").len(), 6);
    assert_eq!(
        run.sorted("PythonHeapLive"),
        vec![(31 * MIB) as f64; 2],
        "only the version 2 records carry a heap"
    );
    assert_eq!(run.values("RecordsDropped").iter().sum::<f64>(), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_heap_object_drops_only_itself() {
    let bad = [
        r#"{"live_bytes": "big", "epoch": 1}"#,
        r#"{"live_bytes": -5, "epoch": 1}"#,
        r#"[1, 2]"#,
        r#""heap""#,
    ];
    let mut events: Vec<Value> = bad
        .iter()
        .enumerate()
        .map(|(i, h)| event(2, i as u64, Some((*h).to_string())))
        .collect();
    // A good object whose sites are partly malformed, and one with an impossible live_bytes.
    let sites = r#"{"live_bytes": 1000000, "allocated_bytes": 5, "epoch": 1, "sites": [
        {"file": "a.py", "line": 1, "delta_bytes": 5}, {"file": "b.py"}, "junk"]}"#;
    events.push(event(2, 4, Some(sites.into())));
    events.push(event(2, 5, Some(heap_text(600 * MIB, 7, 1))));
    let Some(run) = run("heap-bad", &events).await else {
        return;
    };
    let expected: Vec<f64> = (0..6).map(|i| (50 * MIB + i) as f64).collect();
    assert_eq!(
        run.sorted("RuntimeRssPeak"),
        expected,
        "every record kept its other figures"
    );
    assert_eq!(run.values("PythonHeapLive"), vec![1_000_000.0]);
    // 600 MiB of live heap in a 512 MB function is impossible: that figure alone is dropped.
    assert_eq!(run.sorted("PythonHeapAllocated"), vec![5.0, 7.0]);
    assert_eq!(
        run.values("RecordsDropped").iter().sum::<f64>(),
        0.0,
        "no record dropped"
    );
}

// ---- a simulated sampler -----------------------------------------------------------------------

/// splitmix64: deterministic, so every failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A sampler of the Python heap as the decorator's works: sample points fall on the line of
/// allocated bytes as a Poisson process of mean gap `sample_bytes`, so a block of `s` bytes is
/// sampled with probability `1 − exp(−s/R)` and weighted by `s` over it; the estimate is the
/// sum of the live samples' weights. Sites are `file:line`; the ground truth is kept beside.
struct Sampler {
    sample_bytes: f64,
    rng: Rng,
    /// block → (site, weight) of the sampled live blocks.
    sampled: HashMap<u64, (&'static str, f64)>,
    /// block → size of every live block (the ground truth).
    live: HashMap<u64, u64>,
    next_block: u64,
    estimate: f64,
    allocated: u64,
    epoch: u64,
    /// Each site's estimate at the last read.
    site_at_read: HashMap<&'static str, f64>,
    site_now: HashMap<&'static str, f64>,
}

impl Sampler {
    fn new(sample_bytes: u64, seed: u64) -> Self {
        Sampler {
            sample_bytes: sample_bytes as f64,
            rng: Rng(seed),
            sampled: HashMap::new(),
            live: HashMap::new(),
            next_block: 0,
            estimate: 0.0,
            allocated: 0,
            epoch: 1,
            site_at_read: HashMap::new(),
            site_now: HashMap::new(),
        }
    }

    fn alloc(&mut self, site: &'static str, size: u64) -> u64 {
        self.next_block += 1;
        let block = self.next_block;
        self.allocated += size;
        self.live.insert(block, size);
        let p = 1.0 - (-(size as f64) / self.sample_bytes).exp();
        if self.rng.uniform() < p {
            let w = size as f64 / p;
            self.sampled.insert(block, (site, w));
            self.estimate += w;
            *self.site_now.entry(site).or_default() += w;
        }
        block
    }

    fn free(&mut self, block: u64) {
        self.live.remove(&block);
        if let Some((site, w)) = self.sampled.remove(&block) {
            self.estimate -= w;
            *self.site_now.entry(site).or_default() -= w;
        }
    }

    /// The sampler restarted: its samples are gone, the estimate starts again from what is
    /// sampled from now on.
    fn restart(&mut self) {
        self.sampled.clear();
        self.estimate = 0.0;
        self.site_now.clear();
        self.site_at_read.clear();
        self.epoch += 1;
    }

    fn true_live(&self) -> u64 {
        self.live.values().sum()
    }

    /// The `heap` object of this invocation's record (at most 10 sites, by |delta|).
    fn read(&mut self) -> Value {
        let mut deltas: Vec<(&'static str, f64, f64)> = self
            .site_now
            .iter()
            .map(|(site, now)| {
                let before = self.site_at_read.get(site).copied().unwrap_or(0.0);
                (*site, now - before, *now)
            })
            .filter(|d| d.1.round() != 0.0)
            .collect();
        deltas.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(b.0)));
        self.site_at_read = self.site_now.clone();
        let truncated = deltas.len().saturating_sub(10);
        let sites: Vec<Value> = deltas
            .iter()
            .take(10)
            .map(|(site, delta, now)| {
                let (file, line) = site.rsplit_once(':').unwrap();
                json!({"file": file, "line": line.parse::<u64>().unwrap(), "function": "work",
                       "delta_bytes": delta.round() as i64, "live_bytes": now.round().max(0.0) as u64})
            })
            .collect();
        let heap = json!({
            "live_bytes": self.estimate.round().max(0.0) as u64,
            "allocated_bytes": self.allocated,
            "sample_bytes": self.sample_bytes as u64,
            "samples": self.sampled.len(),
            "dropped": 0,
            "epoch": self.epoch,
            "sites": sites,
            "sites_truncated": truncated,
        });
        self.allocated = 0;
        heap
    }
}

/// What a workload keeps per invocation.
#[derive(Clone, Copy, Debug)]
enum Workload {
    /// `bytes` kept per invocation, in objects of `object` bytes, at `app.py:42`.
    Leak { bytes: u64, object: u64 },
    /// A cache of `entries` entries of `bytes`, in objects of `object` bytes (`cache.py:7`),
    /// the oldest evicted once full.
    Cache {
        entries: usize,
        bytes: u64,
        object: u64,
    },
    /// Nothing kept: the heap is flat.
    Flat,
}

impl Workload {
    /// Invocations after which the cache is full (0 for the others).
    fn full_at(self) -> usize {
        match self {
            Workload::Cache { entries, .. } => entries,
            _ => 0,
        }
    }
}

/// One simulated process: an 8 MB heap allocated at import, then per invocation 64 KB of
/// transient objects (freed before the end), the workload, and the read.
struct Process {
    sampler: Sampler,
    workload: Workload,
    cache: VecDeque<Vec<u64>>,
    rng: Rng,
}

impl Process {
    fn new(workload: Workload, sample_bytes: u64, seed: u64) -> Self {
        let mut sampler = Sampler::new(sample_bytes, seed);
        let mut rng = Rng(seed ^ 0x5eed);
        let mut size = 0;
        while size < 8 * MIB {
            let s = 64 + rng.below(960);
            sampler.alloc("init.py:1", s);
            size += s;
        }
        sampler.read();
        Process {
            sampler,
            workload,
            cache: VecDeque::new(),
            rng,
        }
    }

    /// One invocation; the `heap` object of its record.
    fn invoke(&mut self) -> Value {
        let mut transient = Vec::new();
        let mut size = 0;
        while size < 64 * KIB {
            let s = 32 + self.rng.below(2000);
            transient.push(self.sampler.alloc("work.py:5", s));
            size += s;
        }
        match self.workload {
            Workload::Leak { bytes, object } => {
                for _ in 0..bytes / object {
                    self.sampler.alloc("app.py:42", object);
                }
            }
            Workload::Cache {
                entries,
                bytes,
                object,
            } => {
                let entry = (0..bytes / object)
                    .map(|_| self.sampler.alloc("cache.py:7", object))
                    .collect();
                self.cache.push_back(entry);
                while self.cache.len() > entries {
                    for b in self.cache.pop_front().unwrap_or_default() {
                        self.sampler.free(b);
                    }
                }
            }
            Workload::Flat => {}
        }
        for b in transient {
            self.sampler.free(b);
        }
        self.sampler.read()
    }
}

/// The extension's analysis fed with version 2 datagrams: parsed by the intake, cut by the
/// limits, analysed, turned into metric data.
struct Extension {
    analysis: EnvironmentAnalysis,
    limits: Limits,
    invocations: u64,
}

/// What one invocation yielded.
struct Published {
    findings: Findings,
    heap_live: Option<f64>,
}

impl Extension {
    fn new() -> Self {
        Extension {
            // LMP_LEAK_SIGNAL=heap: these tests are about judging the sampler's estimate.
            analysis: EnvironmentAnalysis::new(
                LeakConfig {
                    judge_python_heap: true,
                    ..LeakConfig::default()
                },
                RightSizeConfig::default(),
                Some(1024),
            ),
            limits: Limits::for_memory(Some(1024)),
            invocations: 0,
        }
    }

    fn feed(&mut self, pid: u32, anon: u64, heap: Option<&Value>) -> Published {
        self.invocations += 1;
        let id = format!("r{}", self.invocations);
        let mut record = json!({
            "v": 2, "kind": "invocation", "request_id": id, "pid": pid, "runtime": "python3.11",
            "duration_ms": 3.0, "cold_start": self.invocations == 1, "rss_peak_bytes": anon,
            "heap_blocks": 50_000, "anon_bytes": anon, "trace": null,
        });
        if let Some(h) = heap {
            record["heap"] = h.clone();
        }
        let Ok(IntakeRecord::Invocation(record)) = parse_datagram(record.to_string().as_bytes())
        else {
            panic!("not parsed: {record}");
        };
        let mut event = SourceEvent::Decorator {
            record,
            proc_mem: None,
        };
        assert_eq!(self.limits.sanitize(&mut event), 0, "every figure in range");
        let SourceEvent::Decorator { record, .. } = event else {
            unreachable!()
        };
        let profile = InvocationProfile {
            request_id: id,
            timestamp_ms: 1_764_000_000_000 + self.invocations * 1000,
            decorator: Some(record),
            ..Default::default()
        };
        let heap_live = profile_datums(&profile)
            .iter()
            .find(|d| d.metric == Metric::PythonHeapLive)
            .map(|d| d.value);
        let findings = self.analysis.observe(&profile, "fn");
        // Every value the findings yield is one CloudWatch accepts.
        assert!(findings_datums(&findings)
            .iter()
            .all(|d| d.metric.accepts(d.value)));
        Published {
            findings,
            heap_live,
        }
    }
}

fn leak_lines(findings: &[Findings], kind: &str) -> Vec<Value> {
    findings
        .iter()
        .flat_map(|f| f.log_lines.iter())
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["lmp"] == kind)
        .collect()
}

/// A simulated process run for `invocations`, fed to a fresh extension.
fn simulate(workload: Workload, sample_bytes: u64, seed: u64, invocations: usize) -> Vec<Findings> {
    let mut process = Process::new(workload, sample_bytes, seed);
    let mut ext = Extension::new();
    (0..invocations)
        .map(|_| {
            let heap = process.invoke();
            // Resident memory as the page-granular sum of what is live, plus the runtime.
            let anon = (40 * MIB + process.sampler.true_live()) / 4096 * 4096;
            let out = ext.feed(8, anon, Some(&heap));
            assert_eq!(out.heap_live, heap["live_bytes"].as_f64(), "published");
            out.findings
        })
        .collect()
}

const SEEDS: std::ops::RangeInclusive<u64> = 1..=20;
/// Fewer for the caches: 300 invocations each, six of them.
const CACHE_SEEDS: std::ops::RangeInclusive<u64> = 1..=10;

// ---- leaks ----------------------------------------------------------------------------------

#[test]
fn a_sampled_leak_of_10_kib_per_invocation_is_flagged_over_every_seed() {
    // 10 KiB per invocation in 160 objects of 64 B, sampled every 16 KiB on average: about
    // 25 samples of it per 40-invocation window, each ~16 KiB.
    let workload = Workload::Leak {
        bytes: 10 * KIB,
        object: 64,
    };
    let mut flagged_at = Vec::new();
    let mut end_growth = Vec::new();
    let mut first_growth = Vec::new();
    for seed in SEEDS {
        let findings = simulate(workload, 16 * KIB, seed, 150);
        let lines = leak_lines(&findings, "leak_suspected");
        let first = lines
            .first()
            .unwrap_or_else(|| panic!("seed {seed}: not flagged in 150 invocations"));
        let at = first["invocations"].as_u64().unwrap();
        flagged_at.push(at);
        assert_eq!(
            first["signal"],
            "Python heap live bytes (native sampler estimate)"
        );
        // The growth is the sampled series' slope: one window holds ~25 samples of the leak, so
        // one window's figure is within ±20% typically, and the first line's is biased up (it
        // is raised when a window happens to hold more samples); the means over the seeds are
        // checked below. The site is the leaking line, by net growth.
        let growth = first["heap_growth_bytes_per_invoke"].as_f64().unwrap();
        assert!(
            (0.5 * 10_240.0..=2.0 * 10_240.0).contains(&growth),
            "seed {seed}: growth {growth}"
        );
        first_growth.push(growth);
        end_growth.push(
            findings
                .last()
                .unwrap()
                .leak
                .unwrap()
                .growth_bytes_per_invoke,
        );
        let site = &first["growing_sites"][0];
        assert_eq!(site["site"], "app.py:42", "seed {seed}: {first}");
        let per_invoke = site["bytes_per_traced_invoke"].as_f64().unwrap();
        assert!(
            (per_invoke - 10_240.0).abs() <= 0.5 * 10_240.0,
            "seed {seed}: site growth {per_invoke}"
        );
        // Never a churning or transient site.
        for s in first["growing_sites"].as_array().unwrap() {
            assert!(s["site"] != "work.py:5", "seed {seed}: {s}");
        }
        // Once raised it stands: no withdrawal over the run.
        assert!(
            leak_lines(&findings, "leak_withdrawn").is_empty(),
            "seed {seed}"
        );
        assert!(findings.last().unwrap().leak.unwrap().suspected);
    }
    flagged_at.sort_unstable();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mean_first, mean_growth) = (mean(&first_growth), mean(&end_growth));
    eprintln!(
        "10 KiB/invoke at R = 16 KiB: flagged at invocations {flagged_at:?}; HeapGrowthPerInvoke {mean_first:.0} B at the first leak line, {mean_growth:.0} B after 150 invocations, on average"
    );
    assert!(
        (mean_first - 10_240.0).abs() <= 0.25 * 10_240.0,
        "{first_growth:?}"
    );
    assert!(
        flagged_at[flagged_at.len() / 2] <= 50,
        "typically like resident memory: {flagged_at:?}"
    );
    assert!(
        (mean_growth - 10_240.0).abs() <= 0.15 * 10_240.0,
        "{end_growth:?}"
    );
}

#[test]
fn a_leak_is_flagged_at_the_default_interval_once_it_outgrows_the_sampling_noise() {
    // At 64 KiB per sample a 10 KiB leak is ~6 samples per window — under the noise rule's
    // resolution (about 12) — while 48 KiB per invocation is ~30.
    let workload = Workload::Leak {
        bytes: 48 * KIB,
        object: 512,
    };
    let mut flagged_at = Vec::new();
    for seed in SEEDS {
        let findings = simulate(workload, 64 * KIB, seed, 100);
        let lines = leak_lines(&findings, "leak_suspected");
        let at = lines.first().and_then(|l| l["invocations"].as_u64());
        assert!(at.is_some_and(|at| at <= 100), "seed {seed}: {at:?}");
        flagged_at.extend(at);
    }
    flagged_at.sort_unstable();
    eprintln!("48 KiB/invoke at R = 64 KiB: flagged at invocations {flagged_at:?}");
    assert!(flagged_at[flagged_at.len() / 2] <= 50, "{flagged_at:?}");
}

// ---- bounded caches ---------------------------------------------------------------------------

/// No verdict stands once the cache has been full for a window and a quarter (a verdict raised
/// while it filled is withdrawn by then), and `HeapGrowthPerInvoke` stays within the noise.
fn cache_is_not_a_leak(workload: Workload, sample_bytes: u64) {
    const INVOCATIONS: usize = 300;
    let settled = 3 + workload.full_at() + 50;
    let mut raised_while_filling = 0;
    for seed in CACHE_SEEDS {
        let findings = simulate(workload, sample_bytes, seed, INVOCATIONS);
        for (i, f) in findings.iter().enumerate().skip(settled) {
            let leak = f.leak.expect("judged");
            assert!(
                !leak.suspected,
                "{workload:?} at {sample_bytes}: seed {seed}, invocation {i}: {leak:?}"
            );
        }
        let raised = leak_lines(&findings, "leak_suspected");
        for line in &raised {
            assert!(
                line["invocations"].as_u64().unwrap() as usize <= workload.full_at() + 40,
                "{workload:?}: seed {seed}: raised once full: {line}"
            );
        }
        raised_while_filling += usize::from(!raised.is_empty());
    }
    eprintln!(
        "{workload:?} at {sample_bytes} B per sample: no verdict once full over {} seeds ({raised_while_filling} raised one while it filled, withdrawn)",
        CACHE_SEEDS.count()
    );
}

#[test]
fn full_bounded_caches_are_not_leaks_on_the_sampled_heap() {
    for sample_bytes in [16 * KIB, 64 * KIB] {
        // Large values, one block each: each a sample with probability 1 − e^(−40/64) at
        // 64 KiB, so the estimate jumps by ~87 KiB whenever a sampled entry comes or goes.
        cache_is_not_a_leak(
            Workload::Cache {
                entries: 100,
                bytes: 40 * KIB,
                object: 40 * KIB,
            },
            sample_bytes,
        );
        cache_is_not_a_leak(
            Workload::Cache {
                entries: 80,
                bytes: 16 * KIB,
                object: 16 * KIB,
            },
            sample_bytes,
        );
        // Entries of many small objects.
        cache_is_not_a_leak(
            Workload::Cache {
                entries: 200,
                bytes: 100 * KIB,
                object: 512,
            },
            sample_bytes,
        );
    }
}

#[test]
fn a_flat_heap_with_sampling_noise_is_not_a_leak() {
    // A cache that is already full when the window starts: the series is flat, noisy by
    // whole samples born and freed, and its verdict is "no leak" from the first judged window.
    let mut process = Process::new(
        Workload::Cache {
            entries: 60,
            bytes: 24 * KIB,
            object: 24 * KIB,
        },
        64 * KIB,
        7,
    );
    for _ in 0..100 {
        process.invoke();
    }
    let mut ext = Extension::new();
    let mut levels = Vec::new();
    for i in 0..300 {
        let heap = process.invoke();
        levels.push(heap["live_bytes"].as_f64().unwrap());
        let f = ext.feed(8, 60 * MIB, Some(&heap)).findings;
        if let Some(leak) = f.leak {
            assert!(!leak.suspected, "invocation {i}: {leak:?}");
        }
    }
    let (lo, hi) = levels
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    eprintln!(
        "flat heap: estimate between {:.0} and {:.0} KiB over 300 invocations",
        lo / 1024.0,
        hi / 1024.0
    );
    assert!(hi - lo >= 256.0 * 1024.0, "the noise is real: {lo}..{hi}");
}

// ---- fragmentation ----------------------------------------------------------------------------

#[test]
fn rising_resident_memory_under_a_flat_heap_is_not_a_leak() {
    // Resident memory grows 16 KiB per invocation (malloc extending its heap for values no
    // freed hole fits, or native memory), the Python heap does not.
    for seed in SEEDS {
        let mut process = Process::new(Workload::Flat, 64 * KIB, seed);
        let mut with_heap = Extension::new();
        let mut without = Extension::new();
        let (mut raised_with, mut raised_without) = (false, false);
        for i in 0..150u64 {
            let heap = process.invoke();
            let anon = 60 * MIB + i * 16 * KIB;
            let f = with_heap.feed(8, anon, Some(&heap)).findings;
            raised_with |= f.leak.is_some_and(|l| l.suspected);
            // The same process judged on resident memory (no sampler): called a leak.
            let f = without.feed(8, anon, None).findings;
            raised_without |= f.leak.is_some_and(|l| l.suspected);
        }
        assert!(!raised_with, "seed {seed}: flagged with the heap present");
        assert!(
            raised_without,
            "seed {seed}: the resident-memory rule sees the growth"
        );
    }
}

// ---- history ----------------------------------------------------------------------------------

#[test]
fn a_sampler_restart_starts_a_new_history() {
    let mut process = Process::new(
        Workload::Leak {
            bytes: 32 * KIB,
            object: 256,
        },
        16 * KIB,
        3,
    );
    let mut ext = Extension::new();
    let mut findings = Vec::new();
    for i in 0..200 {
        if i == 100 {
            // Its samples are dropped: the estimate falls to what it samples from now on, which
            // compared with the epoch before would look like an 8 MB free.
            process.sampler.restart();
        }
        let heap = process.invoke();
        findings.push(ext.feed(8, 60 * MIB, Some(&heap)).findings);
    }
    let judged: Vec<bool> = findings.iter().map(|f| f.leak.is_some()).collect();
    assert!(findings[99].leak.is_some_and(|l| l.suspected));
    // A new warm-up and window: nothing judged for 32 invocations, then the leak again.
    assert!(
        judged[100..132].iter().all(|j| !j),
        "{:?}",
        &judged[100..140]
    );
    assert!(findings[199].leak.is_some_and(|l| l.suspected));
    // Never withdrawn on the way: the history was restarted, not judged across the drop.
    assert!(leak_lines(&findings, "leak_withdrawn").is_empty());
    let raised = leak_lines(&findings, "leak_suspected");
    assert!(raised
        .iter()
        .any(|l| l["invocations"].as_u64().unwrap() > 130));
}

#[test]
fn the_sampler_appearing_or_going_away_starts_a_new_history() {
    let mut process = Process::new(
        Workload::Leak {
            bytes: 32 * KIB,
            object: 256,
        },
        16 * KIB,
        5,
    );
    let mut ext = Extension::new();
    let mut judged = Vec::new();
    for i in 0..180u64 {
        let heap = process.invoke();
        let anon = 60 * MIB + i * 32 * KIB;
        // Resident memory only for 60 invocations, the sampler's figures for 60, then none.
        let with_heap = (60..120).contains(&i);
        let f = ext.feed(8, anon, with_heap.then_some(&heap)).findings;
        judged.push(f.leak.map(|l| l.suspected));
    }
    for start in [60, 120] {
        assert!(
            judged[start - 1] == Some(true),
            "{start}: {:?}",
            judged[start - 1]
        );
        assert!(
            judged[start..start + 32].iter().all(Option::is_none),
            "no verdict right after the change at {start}: {:?}",
            &judged[start..start + 40]
        );
    }
    assert_eq!(judged[179], Some(true));
}

// ---- end to end: the heap series through the real extension -------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_judges_the_heap_series_it_is_sent() {
    // A sampled 12 KiB-per-invocation leak under flat resident memory, then (another
    // environment) resident memory rising 16 KiB per invocation under a flat sampled heap.
    let mut leak = Process::new(
        Workload::Leak {
            bytes: 12 * KIB,
            object: 128,
        },
        16 * KIB,
        11,
    );
    let events: Vec<Value> = (0..70u64)
        .map(|i| {
            let heap = leak.invoke();
            json!({"v": 2, "rss_peak": 60 * MIB + i, "anon": 60 * MIB, "heap": heap.to_string()})
        })
        .collect();
    let Some(run_leak) = run("heap-e2e-leak", &events).await else {
        return;
    };
    let lines = run_leak.of_kind("leak_suspected");
    let first = lines.first().expect("flagged");
    eprintln!(
        "sampled leak flagged at invocation {}: {first}",
        first["invocations"]
    );
    assert!(first["invocations"].as_u64().unwrap() <= 60);
    assert_eq!(
        first["signal"],
        "Python heap live bytes (native sampler estimate)"
    );
    assert_eq!(first["growing_sites"][0]["site"], "app.py:42");
    assert!(run_leak.values("LeakSuspected").contains(&1.0));
    assert_eq!(run_leak.values("PythonHeapLive").len(), 70);

    let mut flat = Process::new(Workload::Flat, 16 * KIB, 12);
    let events: Vec<Value> = (0..120u64)
        .map(|i| {
            let heap = flat.invoke();
            json!({"v": 2, "rss_peak": 60 * MIB + i, "anon": 60 * MIB + i * 16 * KIB,
                   "heap": heap.to_string()})
        })
        .collect();
    let Some(run_flat) = run("heap-e2e-fragmentation", &events).await else {
        return;
    };
    assert!(run_flat.of_kind("leak_suspected").is_empty());
    let verdicts = run_flat.values("LeakSuspected");
    assert!(
        verdicts.len() >= 80 && verdicts.iter().all(|v| *v == 0.0),
        "{verdicts:?}"
    );
    // HeapGrowthPerInvoke is the heap's, not resident memory's 16 KiB.
    let growth = run_flat.values("HeapGrowthPerInvoke");
    assert!(growth.iter().all(|g| g.abs() < 4096.0), "{growth:?}");
}
