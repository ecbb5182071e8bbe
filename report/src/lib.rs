//! lambda-memory-profiler-report: the memory report of deployed functions, read from what the
//! extension published — CloudWatch metrics (GetMetricData) and its JSON log lines (Logs
//! Insights, or FilterLogEvents where an endpoint has no Insights) — across every execution
//! environment. A reader of the sinks' output, not a second analysis: the figures are the
//! extension's, counted, ranked and drawn.
//!
//! `cloudwatch` reads the metrics, `logs` the per-environment rows of the `queries`,
//! `assemble` joins them into the `model`, `render` and `chart` print it.
#![warn(missing_docs)]

pub mod assemble;
pub mod aws;
pub mod chart;
pub mod cli;
pub mod cloudwatch;
pub mod error;
pub mod logs;
pub mod model;
pub mod queries;
pub mod render;
pub mod window;

use cli::{Args, Format};
use error::ReportError;
use lambda_memory_profiler::metrics::Metric;
use model::{Report, WindowInfo};
use window::{format_utc, Window};

/// Connects with the default chain and writes the report to `out`; returns it.
pub async fn run(
    args: &Args,
    out: &mut dyn std::io::Write,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, ReportError> {
    progress("loading AWS configuration and credentials");
    let clients = aws::connect(args).await?;
    run_with(args, &clients, out, progress).await
}

/// The report with given clients.
pub async fn run_with(
    args: &Args,
    clients: &aws::Clients,
    out: &mut dyn std::io::Write,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, ReportError> {
    let window = Window::ending_now(args.since, args.bin);
    let mut reader = logs::Reader::new(args.logs_engine);
    let mut engine = None;
    let mut functions = Vec::new();
    let mut notes = Vec::new();
    for function in &args.functions {
        let target = cloudwatch::Target {
            namespace: &args.namespace,
            function,
            version: args.function_version.as_deref(),
        };
        progress(&format!("{function}: ListMetrics in {}", args.namespace));
        cloudwatch::check_target(&clients.cloudwatch, &target, &clients.region).await?;
        progress(&format!("{function}: GetMetricData"));
        let metrics = cloudwatch::read(&clients.cloudwatch, &target, &window).await?;
        if metrics
            .get(Metric::Duration, cloudwatch::Stat::SampleCount)
            .unwrap_or(0.0)
            < 1.0
        {
            return Err(ReportError::NoDataInWindow {
                function: function.clone(),
                namespace: args.namespace.clone(),
                since: humantime::format_duration(args.since).to_string(),
            });
        }
        if let Some(e) = &metrics.p99_error {
            let note = format!("no utilization p99: the endpoint computes no percentiles ({e})");
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        let log_group = args.log_group_of(function);
        let source = logs::Source {
            log_group: &log_group,
            window: &window,
        };
        let (facts, used) = reader.read(clients, &source, progress).await?;
        if facts.is_some() {
            engine = Some(used);
        }
        functions.push(assemble::function_report(&assemble::Inputs {
            function,
            log_group: &log_group,
            window: &window,
            metrics: &metrics,
            logs: facts.as_ref(),
            top: args.top,
            price_per_gb_second: args.price(),
        }));
    }
    let report = Report {
        schema_version: model::SCHEMA_VERSION,
        generated_at: format_utc(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        ),
        namespace: args.namespace.clone(),
        region: clients.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
        window: WindowInfo {
            start: format_utc(window.start_ms),
            end: format_utc(window.end_ms),
            seconds: window.seconds(),
            bin_ms: window.bin_ms,
        },
        logs_engine: engine,
        notes: reader
            .fallback_reason
            .take()
            .into_iter()
            .chain(notes)
            .collect(),
        functions,
    };
    progress("");
    let body = match args.format {
        Format::Text => render::text(&report),
        Format::Markdown => render::markdown(&report),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
            s.push('\n');
            s
        }
    };
    out.write_all(body.as_bytes())?;
    if let Some(path) = &args.chart {
        std::fs::write(path, chart::svg(&report)).map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(report)
}
