//! The report as data: what `--format json` prints, field for field (the schema is
//! `report/schema/report.schema.json`, described in docs/report.md). Text and Markdown are
//! renderings of the same values. Memory sizes are MiB (Lambda's "MB"), byte figures bytes,
//! times RFC 3339 UTC.

use crate::logs::Engine;
use serde::Serialize;

/// Version of the JSON document; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub schema_version: u32,
    pub generated_at: String,
    pub namespace: String,
    pub region: String,
    pub endpoint_url: Option<String>,
    pub window: WindowInfo,
    /// Where the log figures come from: Logs Insights, or FilterLogEvents aggregated here.
    pub logs_engine: Option<Engine>,
    pub notes: Vec<String>,
    pub functions: Vec<FunctionReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowInfo {
    pub start: String,
    pub end: String,
    pub seconds: i64,
    /// Bin of the memory series (milliseconds; Logs Insights bins are whole seconds).
    pub bin_ms: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionReport {
    pub function: String,
    pub log_group: String,
    /// Invocations in the window (SampleCount of `Duration`).
    pub invocations: u64,
    pub environments: Environments,
    /// `MemorySize` (Maximum).
    pub memory_size_mb: Option<f64>,
    /// `MaxMemoryUsed` (Maximum): the largest environment high-water mark.
    pub max_memory_used_mb: Option<f64>,
    pub utilization_percent: Utilization,
    /// `PythonHeapPeak` (Maximum), traced invocations.
    pub python_heap_peak_bytes: Option<f64>,
    pub heap_growth_bytes_per_invoke: HeapGrowth,
    /// `None` when the log group could not be read.
    pub leak: Option<Leak>,
    /// Ranked by bytes per invocation; `None` when the log group could not be read.
    pub growing_sites: Option<Vec<GrowingSite>>,
    pub out_of_memory: OutOfMemory,
    pub right_size: Option<RightSize>,
    /// Memory over time per environment (from the platform's report lines).
    pub memory_series: Vec<EnvironmentSeries>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Environments {
    /// Log streams with report or verdict lines in the window.
    pub seen: u64,
    /// `ColdStart` (Sum): runtime inits, one per environment plus one per restart.
    pub cold_starts: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Utilization {
    /// `MemoryUtilization` (Maximum).
    pub max: Option<f64>,
    /// `MemoryUtilization` (p99); `None` where the endpoint computes no percentiles.
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeapGrowth {
    /// Mean of `HeapGrowthPerInvoke` over the judged invocations (Sum ÷ SampleCount).
    pub mean: Option<f64>,
    /// `HeapGrowthPerInvoke` (Maximum).
    pub max: Option<f64>,
    /// Invocations judged (SampleCount).
    pub judged_invocations: u64,
}

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
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentStatus::Leak => "leak",
            EnvironmentStatus::Withdrawn => "withdrawn",
            EnvironmentStatus::OutOfMemory => "out_of_memory",
        }
    }
}

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
    pub hours_to_out_of_memory: Option<f64>,
    /// `InvocationsToOutOfMemory` (Minimum) over the window, standing or not since.
    pub invocations_to_out_of_memory_metric_min: Option<f64>,
    pub environments: Vec<EnvironmentVerdict>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvironmentVerdict {
    pub log_stream: String,
    pub status: EnvironmentStatus,
    /// When the episode's verdict was raised (its first leak line).
    pub since: String,
    pub last_line_at: String,
    pub raised_at_invocation: Option<u64>,
    pub invocations: Option<u64>,
    pub heap_growth_bytes_per_invoke: Option<f64>,
    pub invocations_to_out_of_memory: Option<f64>,
    pub hours_to_out_of_memory: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GrowingSite {
    pub site: String,
    pub via: Option<String>,
    /// Mean `bytes_per_traced_invoke` over the leak lines naming it.
    pub bytes_per_invoke: f64,
    pub environments: u64,
    pub traced_invocations: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutOfMemory {
    /// `OutOfMemory` (Sum).
    pub count: u64,
    /// `out_of_memory` lines, by cause; `None` when the log group could not be read.
    pub causes: Option<Vec<OomCause>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OomCause {
    pub cause: String,
    pub count: u64,
    pub environments: u64,
    pub last_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RightSize {
    pub memory_size_mb: f64,
    /// `RecommendedMemorySize` (Maximum): what the most demanding environment needs.
    pub recommended_mb: u32,
    /// 128 MiB, Lambda's smallest size, is what was recommended.
    pub at_minimum: bool,
    pub invocations_per_month: Option<f64>,
    pub mean_billed_ms: Option<f64>,
    /// Positive: a saving; negative: the change costs more.
    pub monthly_saving_usd: Option<f64>,
    pub price_per_gb_second: f64,
    /// Set when the recommendation is smaller: CPU shrinks with memory.
    pub cpu_note: Option<String>,
    /// The recommendation in one sentence.
    pub advice: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvironmentSeries {
    pub log_stream: String,
    pub points: Vec<MemoryPoint>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemoryPoint {
    pub at: String,
    /// Epoch milliseconds of `at` (bin start).
    pub at_ms: i64,
    pub max_memory_used_mb: f64,
    pub invocations: u64,
}
