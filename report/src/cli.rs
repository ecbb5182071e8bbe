//! The command line: `lambda-memory-profiler-report --function NAME [--since 24h] …`.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// The memory report of deployed functions, read from what the lambda-memory-profiler extension
/// published: CloudWatch metrics (GetMetricData) and its log lines (Logs Insights, or
/// FilterLogEvents where an endpoint has no Insights), across every execution environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "lambda-memory-profiler-report", version)]
pub struct Args {
    /// Function name (the FunctionName dimension). Repeat for several functions.
    #[arg(long = "function", value_name = "NAME", required = true)]
    pub functions: Vec<String>,

    /// How far back to look, e.g. 30m, 24h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_since)]
    pub since: Duration,

    /// Bin of the memory-over-time series, e.g. 5m or 100ms (default: the window / 150; Logs
    /// Insights bins are whole seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_bin)]
    pub bin: Option<Duration>,

    /// CloudWatch namespace the layer publishes to (its LMP_NAMESPACE).
    #[arg(long, value_name = "NAMESPACE", env = "LMP_NAMESPACE", default_value_t = default_namespace())]
    pub namespace: String,

    /// Only the metrics published with this FunctionVersion (LMP_DIMENSIONS=FunctionName,FunctionVersion).
    #[arg(long, value_name = "VERSION")]
    pub function_version: Option<String>,

    /// Output format: text, json (report/schema/report.schema.json) or markdown.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write an SVG chart: memory over time per environment, growing sites as bars.
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,

    /// AWS region (default: from the environment or profile).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Endpoint for both services (a local server such as LocalStack).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Log group of the function; `{function}` is replaced by its name.
    #[arg(long, value_name = "NAME", default_value = "/aws/lambda/{function}")]
    pub log_group: String,

    /// Logs Insights, FilterLogEvents, or Insights with FilterLogEvents where an endpoint has no Insights.
    #[arg(long, value_enum, default_value_t = LogsEngine::Auto)]
    pub logs_engine: LogsEngine,

    /// Growing sites listed per function.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// The functions' architecture, for the price of the saving.
    #[arg(long, value_enum, default_value_t = Architecture::X86_64)]
    pub architecture: Architecture,

    /// Price per GB-second instead of the architecture's on-demand price.
    #[arg(long, value_name = "USD")]
    pub price_per_gb_second: Option<f64>,

    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What `--format` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Plain text, one block per function and one figure per line.
    Text,
    /// One JSON document following report/schema/report.schema.json.
    Json,
    /// Markdown tables, for pasting into an issue or a pull request.
    Markdown,
}

/// Where the per-environment log figures come from (`--logs-engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogsEngine {
    /// Logs Insights, with FilterLogEvents where the endpoint has no Insights.
    Auto,
    /// Logs Insights only: an endpoint without it is an error.
    Insights,
    /// FilterLogEvents only, aggregated by the report (meant for local endpoints).
    Filter,
}

/// The functions' architecture (`--architecture`): picks the on-demand price of the saving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Architecture {
    /// x86_64, at Lambda's x86 on-demand price.
    #[value(name = "x86_64")]
    X86_64,
    /// arm64 (Graviton), at Lambda's lower arm64 price.
    Arm64,
}

impl Args {
    /// Parses a command line (the first item is the program name).
    pub fn from_argv<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Args::try_parse_from(argv)
    }

    /// The log group of `function`.
    pub fn log_group_of(&self, function: &str) -> String {
        self.log_group.replace("{function}", function)
    }

    /// Price per GB-second used for the saving.
    pub fn price(&self) -> f64 {
        use lambda_memory_profiler::analysis::rightsize::{PRICE_ARM64, PRICE_X86_64};
        self.price_per_gb_second.unwrap_or(match self.architecture {
            Architecture::X86_64 => PRICE_X86_64,
            Architecture::Arm64 => PRICE_ARM64,
        })
    }
}

/// The extension's own default namespace.
fn default_namespace() -> String {
    lambda_memory_profiler::config::Config::default().namespace
}

fn parse_bin(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 100ms, 5m)"))?;
    if d < Duration::from_millis(1) {
        return Err("at least 1ms".into());
    }
    Ok(d)
}

/// At least a minute, at most 455 days (CloudWatch's retention of 1-hour metrics).
fn parse_since(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 30m, 24h, 7d)"))?;
    if d < Duration::from_secs(60) {
        return Err("at least 1m".into());
    }
    if d > Duration::from_secs(455 * 86_400) {
        return Err("at most 455d (CloudWatch keeps metrics 15 months)".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_repeated_functions() {
        let a = Args::try_parse_from(["r", "--function", "a", "--function", "b"]).unwrap();
        assert_eq!(a.functions, ["a", "b"]);
        assert_eq!(a.since, Duration::from_secs(86_400));
        assert_eq!(a.format, Format::Text);
        assert_eq!(a.log_group_of("a"), "/aws/lambda/a");
        assert_eq!(a.logs_engine, LogsEngine::Auto);
        assert!(a.price() > 0.0);
    }

    #[test]
    fn since_is_a_duration_of_at_least_a_minute() {
        let a = Args::try_parse_from(["r", "--function", "a", "--since", "7d"]).unwrap();
        assert_eq!(a.since, Duration::from_secs(7 * 86_400));
        assert!(Args::try_parse_from(["r", "--function", "a", "--since", "10s"]).is_err());
        assert!(Args::try_parse_from(["r", "--function", "a", "--since", "soon"]).is_err());
        assert!(
            Args::try_parse_from(["r"]).is_err(),
            "--function is required"
        );
    }

    #[test]
    fn formats_and_architectures_parse() {
        let a = Args::try_parse_from([
            "r",
            "--function",
            "a",
            "--format",
            "markdown",
            "--architecture",
            "arm64",
        ])
        .unwrap();
        assert_eq!(a.format, Format::Markdown);
        assert!(
            a.price()
                < Args::try_parse_from(["r", "--function", "a"])
                    .unwrap()
                    .price()
        );
    }
}
