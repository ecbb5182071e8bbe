//! The report as data: what `--format json` prints, field for field (the schema is
//! `report/schema/report.schema.json`, described in docs/report.md). Text and Markdown are
//! renderings of the same values. Memory sizes are MiB (Lambda's "MB"), byte figures bytes,
//! times RFC 3339 UTC.

use crate::logs::Engine;
use serde::Serialize;

/// Version of the JSON document; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole report: the window, where the figures came from, and one section per `--function`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// [`SCHEMA_VERSION`] of this document's shape.
    pub schema_version: u32,
    /// When the report was made, RFC 3339 UTC.
    pub generated_at: String,
    /// CloudWatch namespace the metrics were read from (`--namespace`).
    pub namespace: String,
    /// AWS region the clients used (`--region` or the default chain).
    pub region: String,
    /// `--endpoint-url` when given (e.g. LocalStack); `None` for the services' own endpoints.
    pub endpoint_url: Option<String>,
    /// The window every figure covers.
    pub window: WindowInfo,
    /// Where the log figures come from: Logs Insights, or FilterLogEvents aggregated here.
    /// `None` when no function's log group could be read.
    pub logs_engine: Option<Engine>,
    /// Report-wide notes, e.g. why FilterLogEvents replaced Logs Insights or why there is no p99.
    pub notes: Vec<String>,
    /// One section per `--function`, in command-line order.
    pub functions: Vec<FunctionReport>,
}

/// The window the report covers, aligned so that CloudWatch takes it as one period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowInfo {
    /// Window start (inclusive), RFC 3339 UTC.
    pub start: String,
    /// Window end (exclusive): now, rounded up to the period granularity; RFC 3339 UTC.
    pub end: String,
    /// Length of the window in seconds (`--since`, rounded up to the granularity).
    pub seconds: i64,
    /// Bin of the memory series (milliseconds; Logs Insights bins are whole seconds).
    pub bin_ms: i64,
}

/// One function over all its execution environments: metric figures (fleet aggregates) and
/// log figures (per log stream).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionReport {
    /// The `FunctionName` dimension the figures were read for.
    pub function: String,
    /// Log group read for the per-environment figures (`--log-group`, name substituted).
    pub log_group: String,
    /// Invocations in the window (SampleCount of `Duration`).
    pub invocations: u64,
    /// How many execution environments served the function in the window.
    pub environments: Environments,
    /// `MemorySize` (Maximum).
    pub memory_size_mb: Option<f64>,
    /// `MaxMemoryUsed` (Maximum): the largest environment high-water mark.
    pub max_memory_used_mb: Option<f64>,
    /// `MemoryUtilization`: memory used as a percentage of the configured size.
    pub utilization_percent: Utilization,
    /// `PythonHeapPeak` (Maximum), traced invocations.
    pub python_heap_peak_bytes: Option<f64>,
    /// `HeapGrowthPerInvoke`: growth of the runtime's resident anonymous memory per warm invocation.
    pub heap_growth_bytes_per_invoke: HeapGrowth,
    /// `None` when the log group could not be read.
    pub leak: Option<Leak>,
    /// Ranked by bytes per invocation; `None` when the log group could not be read.
    pub growing_sites: Option<Vec<GrowingSite>>,
    /// Out-of-memory invocations: the `OutOfMemory` count and the causes the log lines name.
    pub out_of_memory: OutOfMemory,
    /// The extension's right-size recommendation, priced; `None` until a `RecommendedMemorySize`
    /// and a `MemorySize` are published.
    pub right_size: Option<RightSize>,
    /// Memory over time per environment (from the platform's report lines).
    pub memory_series: Vec<EnvironmentSeries>,
    /// What limits this function's figures (log group missing, a query reached its row limit).
    pub notes: Vec<String>,
}

/// Execution environments, counted from the log streams and the cold starts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Environments {
    /// Log streams with report or verdict lines in the window.
    pub seen: u64,
    /// `ColdStart` (Sum): runtime inits, one per environment plus one per restart.
    pub cold_starts: Option<u64>,
}

/// `MemoryUtilization` statistics, percent of the configured memory size.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Utilization {
    /// `MemoryUtilization` (Maximum).
    pub max: Option<f64>,
    /// `MemoryUtilization` (p99); `None` where the endpoint computes no percentiles.
    pub p99: Option<f64>,
}

/// `HeapGrowthPerInvoke` statistics, bytes per judged invocation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeapGrowth {
    /// Mean of `HeapGrowthPerInvoke` over the judged invocations (Sum ÷ SampleCount).
    pub mean: Option<f64>,
    /// `HeapGrowthPerInvoke` (Maximum).
    pub max: Option<f64>,
    /// Invocations judged (SampleCount).
    pub judged_invocations: u64,
}

/// Where an environment's latest leak episode stands at the end of the window.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentStatus {
    /// The latest verdict line is `leak_suspected`.
    Leak,
    /// The latest verdict line is `leak_withdrawn`.
    Withdrawn,
    /// Ran out of memory after its latest `leak_suspected` (its next runtime starts a new history).
    OutOfMemory,
}

impl EnvironmentStatus {
    /// The status as the JSON writes it: `leak`, `withdrawn` or `out_of_memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentStatus::Leak => "leak",
            EnvironmentStatus::Withdrawn => "withdrawn",
            EnvironmentStatus::OutOfMemory => "out_of_memory",
        }
    }
}

/// The leak verdicts across environments (query `leak-verdicts`, with the `LeakSuspected` and
/// `InvocationsToOutOfMemory` metrics).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Leak {
    /// Environments whose verdict stands.
    pub environments_with_verdict: u64,
    /// Earliest raise among them.
    pub since: Option<String>,
    /// `LeakSuspected` mean: share of the judged invocations served by an environment with a verdict.
    pub share_of_judged_invocations: Option<f64>,
    /// Soonest among standing verdicts (their latest leak lines).
    pub invocations_to_out_of_memory: Option<f64>,
    /// Soonest `hours_to_out_of_memory` among standing verdicts, at that environment's observed rate.
    pub hours_to_out_of_memory: Option<f64>,
    /// `InvocationsToOutOfMemory` (Minimum) over the window, standing or not since.
    pub invocations_to_out_of_memory_metric_min: Option<f64>,
    /// Every environment with a `leak_suspected` line in the window, by raise time, standing or not.
    pub environments: Vec<EnvironmentVerdict>,
}

/// One environment's latest leak episode, from its verdict lines.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvironmentVerdict {
    /// The environment's log stream (Lambda writes one per execution environment).
    pub log_stream: String,
    /// Whether the verdict stands, was withdrawn, or ended in an out-of-memory.
    pub status: EnvironmentStatus,
    /// When the episode's verdict was raised (its first leak line).
    pub since: String,
    /// Latest `leak_suspected` line of the episode, RFC 3339 UTC.
    pub last_line_at: String,
    /// `since_invocation` of the episode: the environment's invocation count when the verdict was
    /// raised; `None` when the lines do not carry it.
    pub raised_at_invocation: Option<u64>,
    /// The environment's invocation count at its latest leak line.
    pub invocations: Option<u64>,
    /// `heap_growth_bytes_per_invoke` of the latest leak line, bytes.
    pub heap_growth_bytes_per_invoke: Option<f64>,
    /// `invocations_to_out_of_memory` of the latest leak line: invocations left before the limit.
    pub invocations_to_out_of_memory: Option<f64>,
    /// `hours_to_out_of_memory` of the latest leak line, at this environment's rate.
    pub hours_to_out_of_memory: Option<f64>,
}

/// One allocation site that keeps growing, across environments (query `growing-sites`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GrowingSite {
    /// `file:line` of the newest frame in the function's own code.
    pub site: String,
    /// The line that allocated, when it is another one (a library's); `None` when the site itself did.
    pub via: Option<String>,
    /// Mean `bytes_per_traced_invoke` over the leak lines naming it.
    pub bytes_per_invoke: f64,
    /// Environments whose leak lines named the site.
    pub environments: u64,
    /// Most traced invocations one environment saw the site in (`seen_in`); `None` when not reported.
    pub traced_invocations: Option<u64>,
}

/// Out-of-memory invocations over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutOfMemory {
    /// `OutOfMemory` (Sum).
    pub count: u64,
    /// `out_of_memory` lines, by cause; `None` when the log group could not be read.
    pub causes: Option<Vec<OomCause>>,
}

/// The `out_of_memory` lines of one cause, across environments.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OomCause {
    /// `Runtime.OutOfMemory`, `MemoryError`, `max_memory_used_reached_memory_size` or
    /// `failed_at_memory_limit`.
    pub cause: String,
    /// Number of `out_of_memory` lines with this cause.
    pub count: u64,
    /// Distinct log streams (environments) they came from.
    pub environments: u64,
    /// When the latest of them was written, RFC 3339 UTC.
    pub last_at: String,
}

/// The extension's right-size recommendation, priced at the fleet's observed invocation rate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RightSize {
    /// Configured size (`MemorySize` Maximum), MiB.
    pub memory_size_mb: f64,
    /// `RecommendedMemorySize` (Maximum): what the most demanding environment needs.
    pub recommended_mb: u32,
    /// 128 MiB, Lambda's smallest size, is what was recommended.
    pub at_minimum: bool,
    /// Invocations in the window over the span they ran in, scaled to 30 days; `None` when no span
    /// with invocations was measured.
    pub invocations_per_month: Option<f64>,
    /// `BilledDuration` Sum ÷ SampleCount in ms (`Duration`'s without telemetry); `None` when neither
    /// was published.
    pub mean_billed_ms: Option<f64>,
    /// Positive: a saving; negative: the change costs more.
    pub monthly_saving_usd: Option<f64>,
    /// USD per GB-second the saving is priced at (`--price-per-gb-second`, or the architecture's).
    pub price_per_gb_second: f64,
    /// Set when the recommendation is smaller: CPU shrinks with memory.
    pub cpu_note: Option<String>,
    /// The recommendation in one sentence.
    pub advice: String,
}

/// One environment's memory over time (query `memory-by-environment`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvironmentSeries {
    /// The environment's log stream (Lambda writes one per execution environment).
    pub log_stream: String,
    /// One point per bin that has report lines, oldest first.
    pub points: Vec<MemoryPoint>,
}

/// One bin of an environment's memory series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemoryPoint {
    /// Bin start, RFC 3339 UTC.
    pub at: String,
    /// Epoch milliseconds of `at` (bin start).
    pub at_ms: i64,
    /// Highest `Max Memory Used` of the bin's `REPORT` lines, MiB.
    pub max_memory_used_mb: f64,
    /// `REPORT` lines in the bin: the environment's invocations in it.
    pub invocations: u64,
}
