//! The report command end to end against LocalStack: two functions (a leaky one and its fixed
//! twin) run in three execution environments each under the emulator, with the real decorator and
//! the real extension publishing metrics to LocalStack's CloudWatch. Each environment's output —
//! the extension's lines and the platform's `REPORT` line per invocation — is written to its own
//! log stream, as Lambda does. One leaky environment gets larger requests and is killed out of
//! memory after its verdict. The report is then checked against what was written: environments,
//! invocations, verdicts, sites, OOMs, the right size; its JSON against the documented schema; its
//! chart parsed as SVG. LocalStack's Logs has StartQuery without `stats`, so this exercises the
//! FilterLogEvents fallback (the Insights path is tested with a mocked service in `report/tests`).
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../report/tests/support/schema.rs"]
mod schema;

use aws_sdk_cloudwatchlogs::config::{Credentials, Region};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use lambda_emulator::{Emulator, InvokeOutcome};
use lambda_memory_profiler_report::aws::Clients;
use lambda_memory_profiler_report::cli::Args;
use lambda_memory_profiler_report::error::ReportError;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const LEAKY: &str = r#"from lambda_memory_profiler import memory_profile

_kept = []


@memory_profile
def handler(event, context):
    _kept.append(b"\x01" * (event["kib"] * 1024))
    return {"kept": len(_kept)}
"#;

const FIXED: &str = r#"from collections import deque

from lambda_memory_profiler import memory_profile

_recent = deque(maxlen=4)


@memory_profile
def handler(event, context):
    _recent.append(b"\x01" * (event["kib"] * 1024))
    return {"kept": len(_recent)}
"#;

const LEAKY_FN: &str = "lmp-report-leaky";
const FIXED_FN: &str = "lmp-report-fixed";
const MEMORY_MB: u32 = 256;
/// Invocations of an ordinary environment: a verdict needs ~38.
const INVOCATIONS: usize = 45;

/// One environment to run.
#[derive(Clone)]
struct Plan {
    function: &'static str,
    source: &'static str,
    kib: u64,
    /// Stop this many invocations after an out-of-memory kill (`None`: run `INVOCATIONS`).
    until_oom: Option<usize>,
    stream: String,
    /// The function's code, shared by its environments (Lambda's /var/task): sites name one file.
    function_dir: PathBuf,
}

/// What one environment did and wrote.
struct EnvRun {
    plan: Plan,
    outcomes: Vec<InvokeOutcome>,
    /// (timestamp ms, line) in the order written.
    lines: Vec<(i64, String)>,
    /// Its directory, removed when the run is dropped.
    _dir: common::TempDir,
}

impl EnvRun {
    fn lmp(&self, kind: &str) -> Vec<(i64, Value)> {
        self.lines
            .iter()
            .filter_map(|(t, l)| Some((*t, serde_json::from_str::<Value>(l).ok()?)))
            .filter(|(_, v)| v["lmp"] == kind)
            .collect()
    }
}

fn now_ms() -> i64 {
    lambda_memory_profiler::epoch_ms() as i64
}

fn logs_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    use aws_smithy_http_client::{tls, Builder};
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .http_client(http)
            .build(),
    )
}

fn cloudwatch_client(endpoint: &str) -> aws_sdk_cloudwatch::Client {
    use aws_smithy_http_client::{tls, Builder};
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_cloudwatch::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .http_client(http)
            .build(),
    )
}

/// Runs one environment and returns what it wrote, stamped when the harness saw each line.
async fn run_environment(py: PathBuf, endpoint: String, ns: String, plan: Plan) -> EnvRun {
    let dir = common::temp_dir(&format!("report-{}", plan.function));
    let mut env = common::aws_env(&endpoint);
    env.extend([
        ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ("LMP_NAMESPACE", ns),
    ]);
    let mut cfg = common::config(py, &dir, plan.source, &env);
    cfg.function_dir = plan.function_dir.clone();
    cfg.function_name = plan.function.into();
    cfg.memory_mb = MEMORY_MB;
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let mut lines: Vec<(i64, String)> = Vec::new();
    let mut seen = 0;
    let mut outcomes = Vec::new();
    let mut after_oom: Option<usize> = None;
    let max = plan.until_oom.map_or(INVOCATIONS, |_| 120);
    for _ in 0..max {
        let out = em
            .invoke(serde_json::json!({ "kib": plan.kib }))
            .await
            .expect("invoke");
        let oom = out.error_type.as_deref() == Some("Runtime.OutOfMemory");
        if oom {
            // The reset shuts the environment down; its extension logs the OOM on the way out.
            for _ in 0..100 {
                if common::ext_lines(&em)[seen..]
                    .iter()
                    .any(|l| l.contains(r#""lmp":"out_of_memory""#))
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let t = now_ms();
        let all = common::ext_lines(&em);
        lines.extend(all[seen..].iter().map(|l| (t, l.clone())));
        seen = all.len();
        lines.extend(common::lambda_report_line(&out.report).map(|l| (t, l)));
        outcomes.push(out);
        if oom {
            after_oom = Some(0);
        }
        if let (Some(n), Some(stop)) = (after_oom.as_mut(), plan.until_oom) {
            if *n >= stop {
                break;
            }
            *n += 1;
        }
    }
    let (shut, _) = common::shut_down(em).await;
    let t = now_ms();
    let all = common::ext_output(&shut);
    lines.extend(all.iter().skip(seen).map(|l| (t, l.clone())));
    EnvRun {
        plan,
        outcomes,
        lines,
        _dir: dir,
    }
}

/// Writes each environment's lines to its own stream of `/aws/lambda/<function>`.
async fn ship(logs: &aws_sdk_cloudwatchlogs::Client, runs: &[EnvRun]) {
    let groups: BTreeSet<&str> = runs.iter().map(|r| r.plan.function).collect();
    for f in groups {
        logs.create_log_group()
            .log_group_name(format!("/aws/lambda/{f}"))
            .send()
            .await
            .expect("CreateLogGroup");
    }
    for r in runs {
        let group = format!("/aws/lambda/{}", r.plan.function);
        logs.create_log_stream()
            .log_group_name(&group)
            .log_stream_name(&r.plan.stream)
            .send()
            .await
            .expect("CreateLogStream");
        let events: Vec<InputLogEvent> = r
            .lines
            .iter()
            .map(|(t, l)| {
                InputLogEvent::builder()
                    .timestamp(*t)
                    .message(l)
                    .build()
                    .expect("event")
            })
            .collect();
        logs.put_log_events()
            .log_group_name(&group)
            .log_stream_name(&r.plan.stream)
            .set_log_events(Some(events))
            .send()
            .await
            .expect("PutLogEvents");
    }
}

fn args(endpoint: &str, ns: &str, extra: &[&str]) -> Args {
    let mut argv = vec![
        "lambda-memory-profiler-report",
        "--function",
        LEAKY_FN,
        "--function",
        FIXED_FN,
        "--namespace",
        ns,
        "--region",
        "us-east-1",
        "--endpoint-url",
        endpoint,
        "--since",
        "30m",
        "--quiet",
    ];
    argv.extend_from_slice(extra);
    Args::from_argv(argv).expect("arguments parse")
}

async fn report(clients: &Clients, args: &Args) -> (Result<(), ReportError>, String, Vec<String>) {
    let mut out = Vec::new();
    let mut progress = Vec::new();
    let r = lambda_memory_profiler_report::run_with(args, clients, &mut out, &mut |m| {
        progress.push(m.to_string())
    })
    .await
    .map(|_| ());
    (r, String::from_utf8(out).expect("utf-8"), progress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_of_a_leaky_and_a_fixed_fleet_matches_what_was_written() {
    let py = common::python();
    let dir = common::temp_dir("report-localstack");
    let Some(ls) = common::LocalStack::start(&dir) else {
        return;
    };
    let started = std::time::Instant::now();
    let endpoint = ls.endpoint();
    let ns = format!("LmpReport{}", std::process::id());
    let day = lambda_memory_profiler_report::window::format_utc(now_ms())[..10].replace('-', "/");
    let (leaky_dir, fixed_dir) = (
        common::function_dir(&dir.join("leaky"), LEAKY),
        common::function_dir(&dir.join("fixed"), FIXED),
    );
    let plans: Vec<Plan> = [
        (LEAKY_FN, LEAKY, 512, None),
        (LEAKY_FN, LEAKY, 512, None),
        (LEAKY_FN, LEAKY, 4096, Some(3)),
        (FIXED_FN, FIXED, 512, None),
        (FIXED_FN, FIXED, 512, None),
        (FIXED_FN, FIXED, 512, None),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (function, source, kib, until_oom))| Plan {
        function,
        source,
        kib,
        until_oom,
        function_dir: if function == LEAKY_FN {
            leaky_dir.clone()
        } else {
            fixed_dir.clone()
        },
        stream: format!("{day}/[$LATEST]{:032x}", 0xa11ce_u128 * (i as u128 + 1)),
    })
    .collect();
    let mut runs = Vec::new();
    for batch in plans.chunks(3) {
        let tasks: Vec<_> = batch
            .iter()
            .cloned()
            .map(|p| tokio::spawn(run_environment(py.clone(), endpoint.clone(), ns.clone(), p)))
            .collect();
        for t in tasks {
            runs.push(t.await.expect("environment task"));
        }
    }
    eprintln!(
        "environments ran in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let logs = logs_client(&endpoint);
    ship(&logs, &runs).await;
    let clients = Clients::from_parts(cloudwatch_client(&endpoint), logs, "us-east-1");

    let chart = dir.join("memory.svg");
    let chart_arg = chart.to_string_lossy().to_string();
    let (r, json, progress) = report(
        &clients,
        &args(&endpoint, &ns, &["--format", "json", "--chart", &chart_arg]),
    )
    .await;
    r.expect("report");
    assert!(
        progress.iter().any(|p| p.contains("GetMetricData")),
        "{progress:?}"
    );
    assert!(
        progress.iter().any(|p| p.contains("FilterLogEvents")),
        "{progress:?}"
    );
    let doc: Value = serde_json::from_str(&json).expect("JSON output");
    let schema: Value = serde_json::from_str(include_str!("../report/schema/report.schema.json"))
        .expect("schema is JSON");
    let errors = schema::validate(&schema, &doc);
    assert!(errors.is_empty(), "schema violations: {errors:#?}");
    // LocalStack's StartQuery ignores `stats`: the report says so and aggregates itself.
    assert_eq!(doc["logs_engine"], "filter_log_events", "{}", doc["notes"]);
    assert!(doc["notes"][0].as_str().unwrap_or("").contains("Insights"));

    let function = |name: &str| {
        doc["functions"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["function"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in the report"))
    };
    let leaky: Vec<&EnvRun> = runs
        .iter()
        .filter(|r| r.plan.function == LEAKY_FN)
        .collect();
    let fixed: Vec<&EnvRun> = runs
        .iter()
        .filter(|r| r.plan.function == FIXED_FN)
        .collect();
    check_fleet(&function(LEAKY_FN), &leaky);
    check_fleet(&function(FIXED_FN), &fixed);
    check_leaky(&function(LEAKY_FN), &leaky);
    check_fixed(&function(FIXED_FN));
    check_chart(&chart, &runs);

    // The same report as text and Markdown: one unit system, said once.
    let (r, text, _) = report(&clients, &args(&endpoint, &ns, &[])).await;
    r.expect("text report");
    assert_eq!(text.matches("Units: memory in MiB").count(), 1, "{text}");
    assert!(
        !text.contains(" MB ") && !text.contains(" MB)"),
        "MB beside MiB:\n{text}"
    );
    assert!(
        text.contains("LEAK SUSPECTED in 2 of 3 environments"),
        "{text}"
    );
    assert!(text.contains("128 MiB is Lambda's minimum"), "{text}");
    eprintln!("{text}");
    let (r, md, _) = report(&clients, &args(&endpoint, &ns, &["--format", "markdown"])).await;
    r.expect("markdown report");
    assert!(
        md.contains("| figure | value |") && md.contains("### Growing sites"),
        "{md}"
    );

    // Clear errors: a namespace without data, a function that never published.
    let (r, _, _) = report(&clients, &args(&endpoint, "LmpNothingHere", &[])).await;
    assert!(matches!(r, Err(ReportError::NoData { .. })), "{r:?}");
    let mut unknown = args(&endpoint, &ns, &[]);
    unknown.functions = vec!["no-such-function".into()];
    let (r, _, _) = report(&clients, &unknown).await;
    let msg = r
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        matches!(r, Err(ReportError::UnknownFunction { .. }))
            && msg.contains(LEAKY_FN)
            && msg.contains(FIXED_FN),
        "{msg}"
    );
    eprintln!("report test took {:.1} s", started.elapsed().as_secs_f64());
    drop(ls);
}

/// Invocations, environments, memory: against the outcomes and the REPORT lines written.
fn check_fleet(f: &Value, runs: &[&EnvRun]) {
    let name = &f["function"];
    let invocations: usize = runs.iter().map(|r| r.outcomes.len()).sum();
    assert_eq!(f["invocations"], invocations as u64, "{name}");
    assert_eq!(f["environments"]["seen"], runs.len() as u64, "{name}");
    let cold = runs
        .iter()
        .flat_map(|r| &r.outcomes)
        .filter(|o| o.cold_start)
        .count();
    assert_eq!(f["environments"]["cold_starts"], cold as u64, "{name}");
    assert_eq!(f["memory_size_mb"], f64::from(MEMORY_MB), "{name}");
    let max_used = runs
        .iter()
        .flat_map(|r| &r.outcomes)
        .map(|o| o.max_memory_used_mb)
        .max()
        .unwrap_or(0);
    assert_eq!(f["max_memory_used_mb"], max_used as f64, "{name}");
    let util = f["utilization_percent"]["max"].as_f64().unwrap_or(0.0);
    let want = max_used as f64 / f64::from(MEMORY_MB) * 100.0;
    assert!((util - want).abs() < 1e-6, "{name}: {util} vs {want}");
    assert!(
        f["utilization_percent"]["p99"].is_null(),
        "LocalStack has no percentiles"
    );
    // One series per environment, its points the REPORT lines written to that stream.
    let series = f["memory_series"].as_array().expect("series");
    assert_eq!(series.len(), runs.len(), "{name}");
    for r in runs {
        let s = series
            .iter()
            .find(|s| s["log_stream"] == r.plan.stream.as_str())
            .unwrap_or_else(|| panic!("{name}: no series for {}", r.plan.stream));
        let points = s["points"].as_array().expect("points");
        let n: u64 = points
            .iter()
            .filter_map(|p| p["invocations"].as_u64())
            .sum();
        let reported = r
            .lines
            .iter()
            .filter(|(_, l)| l.starts_with("REPORT "))
            .count();
        assert_eq!(n, reported as u64, "{name} {}", r.plan.stream);
        let peak = points
            .iter()
            .filter_map(|p| p["max_memory_used_mb"].as_f64())
            .fold(0.0, f64::max);
        let want = r
            .outcomes
            .iter()
            .map(|o| o.max_memory_used_mb)
            .max()
            .unwrap_or(0);
        assert_eq!(peak, want as f64, "{name} {}", r.plan.stream);
    }
}

/// Verdicts, sites and OOMs: against the extension's lines as written.
fn check_leaky(f: &Value, runs: &[&EnvRun]) {
    // Each environment's state is its latest verdict line, unless an OOM came after it.
    let mut standing = Vec::new();
    for r in runs {
        let leak = r.lmp("leak_suspected");
        let last = leak
            .last()
            .unwrap_or_else(|| panic!("{}: no leak line", r.plan.stream));
        let oom_after = r.lmp("out_of_memory").iter().any(|(t, _)| *t >= last.0);
        let episode = &last.1["since_invocation"];
        let raised = leak
            .iter()
            .find(|(_, v)| &v["since_invocation"] == episode)
            .map(|(t, _)| *t)
            .unwrap_or(last.0);
        let status = if oom_after { "out_of_memory" } else { "leak" };
        let env = f["leak"]["environments"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["log_stream"] == r.plan.stream.as_str()))
            .unwrap_or_else(|| panic!("{} not in the leak environments", r.plan.stream));
        assert_eq!(env["status"], status, "{env}");
        assert_eq!(
            env["since"],
            lambda_memory_profiler_report::window::format_utc(raised),
            "{env}"
        );
        assert_eq!(
            env["invocations_to_out_of_memory"],
            last.1["invocations_to_out_of_memory"]
        );
        if !oom_after {
            standing.push((raised, last.1["invocations_to_out_of_memory"].as_f64()));
        }
    }
    assert_eq!(
        standing.len(),
        2,
        "the two ordinary leaky environments hold a verdict"
    );
    assert_eq!(f["leak"]["environments_with_verdict"], 2);
    let since = standing.iter().map(|(t, _)| *t).min().unwrap_or(0);
    assert_eq!(
        f["leak"]["since"],
        lambda_memory_profiler_report::window::format_utc(since)
    );
    let soonest = standing.iter().filter_map(|(_, n)| *n).reduce(f64::min);
    assert_eq!(f["leak"]["invocations_to_out_of_memory"].as_f64(), soonest);

    // Sites: the handler's own line, in every environment, at the mean of what the lines said.
    let line = LEAKY
        .lines()
        .position(|l| l.contains("_kept.append"))
        .map(|i| i + 1)
        .unwrap_or(0);
    let top = &f["growing_sites"][0];
    let site = top["site"].as_str().unwrap_or("");
    assert!(site.ends_with(&format!("fn/app.py:{line}")), "{top}");
    let mut named_in = BTreeSet::new();
    let mut values = Vec::new();
    for r in runs {
        for (_, v) in r.lmp("leak_suspected") {
            for s in v["growing_sites"].as_array().into_iter().flatten() {
                if s["site"] == site {
                    named_in.insert(r.plan.stream.clone());
                    values.extend(s["bytes_per_traced_invoke"].as_f64());
                }
            }
        }
    }
    assert_eq!(top["environments"], named_in.len() as u64, "{top}");
    let leak_lines: Vec<String> = runs
        .iter()
        .flat_map(|r| r.lmp("leak_suspected"))
        .map(|(_, v)| format!("{} {}", v["invocations"], v["growing_sites"]))
        .collect();
    assert_eq!(
        named_in.len(),
        3,
        "every leaky environment named it: {leak_lines:#?}"
    );
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let got = top["bytes_per_invoke"].as_f64().unwrap_or(0.0);
    assert!((got - mean).abs() <= 1e-6 * mean, "{got} vs {mean}");

    // Out of memory: the kills the emulator made, with the causes the lines gave.
    let kills = runs
        .iter()
        .flat_map(|r| &r.outcomes)
        .filter(|o| o.error_type.as_deref() == Some("Runtime.OutOfMemory"))
        .count();
    assert!(kills >= 1, "the large-request environment was killed");
    // Counted by the extension: every invocation it judged out of memory (the kill, and one that
    // reached the memory size before it), one line each.
    let oom_lines = runs
        .iter()
        .map(|r| r.lmp("out_of_memory").len())
        .sum::<usize>();
    assert!(oom_lines >= kills, "{oom_lines} lines for {kills} kills");
    assert_eq!(f["out_of_memory"]["count"], oom_lines as u64);
    let mut causes: BTreeMap<String, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for r in runs {
        for (_, v) in r.lmp("out_of_memory") {
            let e = causes
                .entry(v["cause"].as_str().unwrap_or("").to_string())
                .or_default();
            e.0 += 1;
            e.1.insert(&r.plan.stream);
        }
    }
    let got: BTreeMap<String, (u64, u64)> = f["out_of_memory"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["cause"].as_str().unwrap_or("").to_string(),
                (
                    c["count"].as_u64().unwrap_or(0),
                    c["environments"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (u64, u64)> = causes
        .into_iter()
        .map(|(k, (n, e))| (k, (n, e.len() as u64)))
        .collect();
    assert_eq!(got, want);
    assert!(want.contains_key("Runtime.OutOfMemory"), "{want:?}");

    let advice = f["right_size"]["advice"].as_str().unwrap_or("");
    assert!(advice.contains("fix the leak first"), "{advice}");
}

fn check_fixed(f: &Value) {
    assert_eq!(f["leak"]["environments_with_verdict"], 0, "{}", f["leak"]);
    assert_eq!(f["growing_sites"], serde_json::json!([]));
    assert_eq!(f["out_of_memory"]["count"], 0);
    let rs = &f["right_size"];
    // ~35 MiB used of 256: the extension recommends Lambda's minimum; the saving is stated.
    assert_eq!(rs["recommended_mb"], 128, "{rs}");
    assert_eq!(rs["at_minimum"], true);
    assert!(
        rs["monthly_saving_usd"].as_f64().unwrap_or(0.0) > 0.0,
        "{rs}"
    );
    let advice = rs["advice"].as_str().unwrap_or("");
    assert!(
        advice.starts_with("lower to 128 MiB: saves ~")
            && advice.contains("USD/month at the observed rate")
            && advice.contains("128 MiB is Lambda's minimum"),
        "{advice}"
    );
    assert!(
        rs["cpu_note"].as_str().unwrap_or("").contains("one vCPU"),
        "{rs}"
    );
}

/// The chart parses as SVG, labels its axes and draws one series per environment.
fn check_chart(path: &std::path::Path, runs: &[EnvRun]) {
    let text = std::fs::read_to_string(path).expect("chart written");
    let svg = roxmltree::Document::parse(&text).expect("chart is XML");
    let root = svg.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let blocks: Vec<_> = root
        .descendants()
        .filter(|n| n.attribute("class") == Some("function"))
        .collect();
    assert_eq!(blocks.len(), 2);
    for g in blocks {
        let function = g.attribute("data-function").unwrap_or("");
        let labels: Vec<&str> = g
            .descendants()
            .filter(|n| {
                n.attribute("class")
                    .is_some_and(|c| c.starts_with("axis-label"))
            })
            .filter_map(|n| n.text())
            .collect();
        assert!(
            labels.contains(&"time (UTC)") && labels.contains(&"max memory used (MiB)"),
            "{labels:?}"
        );
        let drawn: BTreeSet<&str> = g
            .descendants()
            .filter(|n| n.attribute("class") == Some("series"))
            .filter_map(|n| n.attribute("data-log-stream"))
            .collect();
        let want: BTreeSet<&str> = runs
            .iter()
            .filter(|r| r.plan.function == function)
            .map(|r| r.plan.stream.as_str())
            .collect();
        assert_eq!(drawn, want, "{function}");
        let bars = g
            .descendants()
            .filter(|n| n.attribute("class") == Some("bar"))
            .count();
        assert_eq!(bars > 0, function == LEAKY_FN, "{function}: {bars} bars");
    }
}
