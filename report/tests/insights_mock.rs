//! The Logs Insights path, which LocalStack cannot run: the real SDK clients against mocked
//! services answering as CloudWatch and Logs Insights do (rows of field/value strings, aggregate
//! timestamps in epoch milliseconds, `bin()` in `YYYY-MM-DD HH:MM:SS.mmm`, a query that is still
//! running at the first poll). The report must rank, count and price from those rows, and its JSON
//! must match the documented schema.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
use aws_sdk_cloudwatch::operation::list_metrics::ListMetricsOutput;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataResult};
use aws_sdk_cloudwatchlogs::operation::get_query_results::GetQueryResultsOutput;
use aws_sdk_cloudwatchlogs::operation::start_query::StartQueryOutput;
use aws_sdk_cloudwatchlogs::types::{QueryStatus, ResultField};
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use lambda_memory_profiler::analysis::rightsize::PRICE_X86_64;
use lambda_memory_profiler_report::aws::Clients;
use lambda_memory_profiler_report::cli::Args;
use lambda_memory_profiler_report::error::ReportError;
use lambda_memory_profiler_report::queries;
use lambda_memory_profiler_report::window::format_utc;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const T0: i64 = 1_700_000_000_000;

/// CloudWatch with one function, `orders`, and these statistics over the window.
fn cloudwatch() -> aws_sdk_cloudwatch::Client {
    let list = mock!(aws_sdk_cloudwatch::Client::list_metrics).then_output(|| {
        ListMetricsOutput::builder()
            .metrics(
                Metric::builder()
                    .namespace("LambdaMemoryProfiler")
                    .metric_name("Duration")
                    .dimensions(
                        Dimension::builder()
                            .name("FunctionName")
                            .value("orders")
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let data = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_compute_output(|req| {
        let mut out = GetMetricDataOutput::builder();
        for q in req.metric_data_queries() {
            let id = q.id().unwrap_or_default();
            let stat = q.metric_stat().and_then(|s| s.stat()).unwrap_or_default();
            let name = q
                .metric_stat()
                .and_then(|s| s.metric())
                .and_then(|m| m.metric_name())
                .unwrap_or_default();
            let result = MetricDataResult::builder().id(id);
            let result = if id == "series" {
                // Invocations in the first and the last minute of a 10-minute span.
                result
                    .timestamps(DateTime::from_millis(T0))
                    .values(500.0)
                    .timestamps(DateTime::from_millis(T0 + 540_000))
                    .values(500.0)
            } else {
                let v = match (name, stat) {
                    ("Duration", "SampleCount") => 1000.0,
                    ("Duration", "Sum") => 6000.0,
                    ("BilledDuration", "Sum") => 5000.0,
                    ("BilledDuration", "SampleCount") => 1000.0,
                    ("MemorySize", _) => 512.0,
                    ("MaxMemoryUsed", _) => 300.0,
                    ("MemoryUtilization", "Maximum") => 58.6,
                    ("MemoryUtilization", "p99") => 57.0,
                    ("PythonHeapPeak", _) => 3_000_000.0,
                    ("HeapGrowthPerInvoke", "Sum") => 16_384.0 * 500.0,
                    ("HeapGrowthPerInvoke", "SampleCount") => 500.0,
                    ("HeapGrowthPerInvoke", "Maximum") => 20_000.0,
                    ("LeakSuspected", "Sum") => 250.0,
                    ("LeakSuspected", "SampleCount") => 500.0,
                    ("InvocationsToOutOfMemory", _) => 800.0,
                    ("OutOfMemory", _) => 1.0,
                    ("RecommendedMemorySize", _) => 390.0,
                    ("ColdStart", _) => 3.0,
                    _ => f64::NAN,
                };
                result.timestamps(DateTime::from_millis(T0)).values(v)
            };
            out = out.metric_data_results(result.build());
        }
        out.build()
    });
    mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&list, &data])
}

fn row(fields: &[(&str, &str)]) -> Vec<ResultField> {
    fields
        .iter()
        .map(|(k, v)| ResultField::builder().field(*k).value(*v).build())
        .chain([ResultField::builder().field("@ptr").value("CmQKKQ").build()])
        .collect()
}

/// What Logs Insights returns for each query, by query id.
fn insights_rows(id: &str) -> Vec<Vec<ResultField>> {
    let ms = |offset_s: i64| (T0 + offset_s * 1000).to_string();
    match id {
        "sites" => vec![
            row(&[
                ("site.site", "/var/task/app.py:42"),
                ("environments", "3"),
                ("bytes_per_invoke", "14120.5"),
                ("traced_invocations", "4"),
                ("via", "/var/lang/lib/python3.12/json/decoder.py:353"),
            ]),
            row(&[
                ("site.site", "/var/task/cache.py:7"),
                ("environments", "1"),
                ("bytes_per_invoke", "512"),
            ]),
        ],
        "verdicts" => vec![
            row(&[
                ("@logStream", "2026/01/31/[$LATEST]aaaa"),
                ("lmp", "leak_suspected"),
                ("episode", "37"),
                ("lines", "3"),
                ("first_at", &ms(0)),
                ("last_at", &ms(600)),
                ("heap_growth_bytes_per_invoke", "16384"),
                ("invocations_to_out_of_memory", "900"),
                ("hours_to_out_of_memory", "2.5"),
                ("invocations", "117"),
            ]),
            row(&[
                ("@logStream", "2026/01/31/[$LATEST]bbbb"),
                ("lmp", "leak_suspected"),
                ("episode", "40"),
                ("lines", "1"),
                ("first_at", &ms(300)),
                ("last_at", &ms(300)),
                ("invocations_to_out_of_memory", "5000"),
            ]),
            row(&[
                ("@logStream", "2026/01/31/[$LATEST]bbbb"),
                ("lmp", "leak_withdrawn"),
                ("episode", "40"),
                ("lines", "1"),
                ("first_at", &ms(400)),
                ("last_at", &ms(400)),
            ]),
            row(&[
                ("@logStream", "2026/01/31/[$LATEST]cccc"),
                ("lmp", "leak_suspected"),
                ("episode", "37"),
                ("lines", "1"),
                ("first_at", &ms(500)),
                ("last_at", &ms(500)),
                ("invocations_to_out_of_memory", "20"),
            ]),
        ],
        "oom" => vec![row(&[
            ("@logStream", "2026/01/31/[$LATEST]cccc"),
            ("cause", "Runtime.OutOfMemory"),
            ("out_of_memory", "1"),
            ("last_at", &ms(550)),
            ("utilization", "1"),
        ])],
        _ => ["aaaa", "bbbb", "cccc"]
            .iter()
            .flat_map(|env| {
                [
                    ("2023-11-14 22:13:20.000", "120"),
                    ("2023-11-14 22:13:25.000", "180"),
                ]
                .map(|(at, mb)| {
                    row(&[
                        ("@logStream", &format!("2026/01/31/[$LATEST]{env}")),
                        ("bin(5s)", at),
                        ("max_memory_used_mb", mb),
                        ("invocations", "50"),
                    ])
                })
            })
            .collect(),
    }
}

/// Logs whose Insights aggregates (`aggregating`) or, like LocalStack, returns `@ptr` rows only.
fn logs(aggregating: bool) -> aws_sdk_cloudwatchlogs::Client {
    let start = mock!(aws_sdk_cloudwatchlogs::Client::start_query).then_compute_output(|req| {
        let text = req.query_string().unwrap_or_default();
        let id = if text == queries::GROWING_SITES.text {
            "sites"
        } else if text == queries::LEAK_VERDICTS.text {
            "verdicts"
        } else if text == queries::OUT_OF_MEMORY.text {
            "oom"
        } else if text == queries::memory_query(5) {
            "memory"
        } else {
            "unknown"
        };
        StartQueryOutput::builder().query_id(id).build()
    });
    let polls = Arc::new(AtomicUsize::new(0));
    let results =
        mock!(aws_sdk_cloudwatchlogs::Client::get_query_results).then_compute_output(move |req| {
            let id = req.query_id().unwrap_or_default();
            if polls.fetch_add(1, Ordering::SeqCst) == 0 {
                return GetQueryResultsOutput::builder()
                    .status(QueryStatus::Running)
                    .build();
            }
            let rows = if aggregating {
                insights_rows(id)
            } else {
                vec![row(&[]), row(&[])]
            };
            GetQueryResultsOutput::builder()
                .status(QueryStatus::Complete)
                .set_results(Some(rows))
                .build()
        });
    mock_client!(
        aws_sdk_cloudwatchlogs,
        RuleMode::MatchAny,
        [&start, &results]
    )
}

async fn run(aggregating: bool, extra: &[&str]) -> (Result<(), ReportError>, String) {
    let mut argv = vec![
        "lambda-memory-profiler-report",
        "--function",
        "orders",
        "--since",
        "10m",
        "--quiet",
    ];
    argv.extend_from_slice(extra);
    let args = Args::from_argv(argv).expect("arguments");
    let clients = Clients::from_parts(cloudwatch(), logs(aggregating), "eu-west-1");
    let mut out = Vec::new();
    let r = lambda_memory_profiler_report::run_with(&args, &clients, &mut out, &mut |_| {})
        .await
        .map(|_| ());
    (r, String::from_utf8(out).expect("utf-8"))
}

#[tokio::test]
async fn insights_rows_become_the_fleet_report() {
    let (r, json) = run(true, &["--format", "json"]).await;
    r.expect("report");
    let doc: Value = serde_json::from_str(&json).expect("JSON");
    let schema: Value =
        serde_json::from_str(include_str!("../schema/report.schema.json")).expect("schema");
    let errors = support::schema::validate(&schema, &doc);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(doc["logs_engine"], "insights");
    let f = &doc["functions"][0];
    assert_eq!(f["invocations"], 1000);
    assert_eq!(f["environments"]["seen"], 3);
    assert_eq!(f["environments"]["cold_starts"], 3);
    assert_eq!(f["utilization_percent"]["max"], 58.6);
    assert_eq!(f["utilization_percent"]["p99"], 57.0);
    assert_eq!(f["heap_growth_bytes_per_invoke"]["mean"], 16_384.0);

    // One environment holds its verdict; one withdrew it; one ran out of memory after it.
    let leak = &f["leak"];
    assert_eq!(leak["environments_with_verdict"], 1);
    assert_eq!(leak["since"], format_utc(T0));
    assert_eq!(leak["invocations_to_out_of_memory"], 900.0);
    assert_eq!(leak["hours_to_out_of_memory"], 2.5);
    assert_eq!(leak["invocations_to_out_of_memory_metric_min"], 800.0);
    assert_eq!(leak["share_of_judged_invocations"], 0.5);
    let status = |env: &str| {
        leak["environments"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|e| e["log_stream"].as_str().is_some_and(|s| s.ends_with(env)))
            })
            .map(|e| e["status"].clone())
    };
    assert_eq!(status("aaaa"), Some("leak".into()));
    assert_eq!(status("bbbb"), Some("withdrawn".into()));
    assert_eq!(status("cccc"), Some("out_of_memory".into()));

    let sites = f["growing_sites"].as_array().expect("sites");
    assert_eq!(sites[0]["site"], "/var/task/app.py:42");
    assert_eq!(sites[0]["environments"], 3);
    assert_eq!(sites[0]["bytes_per_invoke"], 14_120.5);
    assert_eq!(sites[0]["traced_invocations"], 4);
    assert_eq!(sites[1]["via"], Value::Null);

    assert_eq!(f["out_of_memory"]["count"], 1);
    assert_eq!(
        f["out_of_memory"]["causes"][0]["cause"],
        "Runtime.OutOfMemory"
    );
    assert_eq!(f["out_of_memory"]["causes"][0]["environments"], 1);

    // The saving: (512 - 390) MiB for 5 ms at 1000 invocations per 10 minutes, at x86_64 prices.
    let rs = &f["right_size"];
    assert_eq!(rs["recommended_mb"], 390);
    let per_month = 1000.0 / 600.0 * 30.0 * 86_400.0;
    let want = (512.0 - 390.0) / 1024.0 * 0.005 * per_month * PRICE_X86_64;
    let got = rs["monthly_saving_usd"].as_f64().unwrap_or(0.0);
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    let advice = rs["advice"].as_str().unwrap_or("");
    assert!(
        advice.starts_with("lower to 390 MiB: saves ~") && advice.contains("fix the leak first"),
        "{advice}"
    );

    let series = f["memory_series"].as_array().expect("series");
    assert_eq!(series.len(), 3);
    assert_eq!(series[0]["points"][1]["max_memory_used_mb"], 180.0);
    assert_eq!(series[0]["points"][0]["at"], "2023-11-14T22:13:20Z");
}

#[tokio::test]
async fn text_names_every_figure_in_binary_units() {
    let (r, text) = run(true, &[]).await;
    r.expect("report");
    for want in [
        "max 58.6%, p99 57.0%",
        "Python heap peak          2.9 MiB",
        "mean 16.0 KiB, max 19.5 KiB over 500 judged invocations",
        "LEAK SUSPECTED in 1 of 3 environments",
        "withdrawn in 1; 1 ran out of memory after its verdict",
        "~900 invocations (~2.5 h at that environment's rate)",
        "13.8 KiB           3/3  /var/task/app.py:42 (via /var/lang/lib/python3.12/json/decoder.py:353)",
        "1: Runtime.OutOfMemory ×1 in 1 environment",
        "lower to 390 MiB: saves ~",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains(" MB ") && !text.contains(" MB)"), "{text}");
}

#[tokio::test]
async fn an_endpoint_without_insights_aggregates_is_an_error_when_insights_is_asked_for() {
    let (r, _) = run(false, &["--logs-engine", "insights"]).await;
    assert!(matches!(r, Err(ReportError::QueryFailed { .. })), "{r:?}");
}
