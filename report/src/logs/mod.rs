//! What the log lines say, per execution environment (log stream): the rows of the four
//! queries in [`crate::queries`], from Logs Insights (the service aggregates, however many
//! environments) or, where an endpoint has no Insights, from FilterLogEvents with the same
//! aggregation done here.

mod filter;
mod insights;
mod lines;

use crate::aws::Clients;
use crate::cli::LogsEngine;
use crate::error::ReportError;
use crate::window::Window;

/// One row of the site ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteRow {
    /// `file:line` of the newest frame in the function's own code (`site.site`).
    pub site: String,
    /// The allocating line when it is another one (a library's), as the latest line named it.
    pub via: Option<String>,
    /// Environments whose leak lines named the site.
    pub environments: u64,
    /// Mean over those lines of the site's `bytes_per_traced_invoke`.
    pub bytes_per_invoke: f64,
    /// Most traced invocations one environment saw the site in.
    pub traced_invocations: Option<u64>,
}

/// Which verdict line a [`VerdictRow`] counts (the line's `lmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictKind {
    /// `leak_suspected`: the environment raised (or repeated) its leak verdict.
    Suspected,
    /// `leak_withdrawn`: the environment withdrew its verdict.
    Withdrawn,
}

/// The leak lines of one environment and episode, of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictRow {
    /// The environment's log stream (`@logStream`).
    pub log_stream: String,
    /// Whether the row counts `leak_suspected` or `leak_withdrawn` lines.
    pub kind: VerdictKind,
    /// The invocation at which the episode's verdict was raised.
    pub episode: Option<u64>,
    /// Number of lines in the group.
    pub lines: u64,
    /// Timestamp of the group's first line, epoch ms (for a raise: when the verdict was raised).
    pub first_at_ms: i64,
    /// Timestamp of the group's latest line, epoch ms.
    pub last_at_ms: i64,
    /// `heap_growth_bytes_per_invoke` of the latest line, bytes; `None` when it carries none.
    pub heap_growth_bytes_per_invoke: Option<f64>,
    /// `invocations_to_out_of_memory` of the latest line; `None` when it carries none.
    pub invocations_to_out_of_memory: Option<f64>,
    /// `hours_to_out_of_memory` of the latest line; `None` when it carries none.
    pub hours_to_out_of_memory: Option<f64>,
    /// Highest `invocations` among the lines: the environment's invocation count at the latest.
    pub invocations: Option<u64>,
}

/// Out-of-memory lines of one environment and cause.
#[derive(Debug, Clone, PartialEq)]
pub struct OomRow {
    /// The environment's log stream (`@logStream`).
    pub log_stream: String,
    /// The lines' `cause`, e.g. `Runtime.OutOfMemory` or `MemoryError`.
    pub cause: String,
    /// Number of `out_of_memory` lines of this environment and cause.
    pub count: u64,
    /// Timestamp of the latest of them, epoch ms.
    pub last_at_ms: i64,
    /// Highest `utilization` among them (fraction of the memory size, 1.0 at the limit); `None`
    /// when none carries it.
    pub utilization: Option<f64>,
}

/// Memory used by one environment in one bin.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRow {
    /// The environment's log stream (`@logStream`).
    pub log_stream: String,
    /// Start of the bin, epoch ms (the report lines' timestamps floored to the window's bin).
    pub bin_start_ms: i64,
    /// Highest Max Memory Used of the bin's report lines, MiB (Lambda's "MB").
    pub max_memory_used_mb: f64,
    /// Report lines in the bin: the environment's invocations in it.
    pub invocations: u64,
}

/// Which engine produced the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Logs Insights ran the queries; the service aggregated.
    Insights,
    /// FilterLogEvents pulled the lines and the report aggregated them (endpoints without Insights).
    FilterLogEvents,
}

/// Everything the log lines say about one function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFacts {
    /// Site ranking (query `growing-sites`), most bytes per invocation first.
    pub sites: Vec<SiteRow>,
    /// Leak lines per environment, episode and kind (query `leak-verdicts`).
    pub verdicts: Vec<VerdictRow>,
    /// Out-of-memory lines per environment and cause (query `out-of-memory`).
    pub ooms: Vec<OomRow>,
    /// Memory used per environment and bin (query `memory-by-environment`).
    pub memory: Vec<MemoryRow>,
    /// A query hit its row limit (or the scan its event limit): figures are partial.
    pub truncated: bool,
}

/// The log group one function writes to, and the window.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The function's log group (`--log-group`, name substituted).
    pub log_group: &'a str,
    /// The report's window; the memory series uses its bin.
    pub window: &'a Window,
}

/// Why the Insights rows cannot be used.
#[derive(Debug)]
pub enum InsightsError {
    /// The endpoint answered, but not with the query's aggregates (it ignores `stats`).
    NotAggregated(&'static str),
    /// The endpoint rejected or failed the call.
    Report(ReportError),
}

/// The engine in use, decided at the first function and kept for the rest of the report.
#[derive(Debug)]
pub struct Reader {
    choice: LogsEngine,
    /// Why `auto` switched to FilterLogEvents (becomes a report note); `None` while Insights serves.
    pub fallback_reason: Option<String>,
}

impl Reader {
    /// A reader starting with the `--logs-engine` choice.
    pub fn new(choice: LogsEngine) -> Self {
        Reader {
            choice,
            fallback_reason: None,
        }
    }

    /// The rows for one function, or `None` when its log group does not exist.
    pub async fn read(
        &mut self,
        clients: &Clients,
        source: &Source<'_>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(Option<LogFacts>, Engine), ReportError> {
        if self.choice != LogsEngine::Filter {
            match insights::read(&clients.logs, source, progress).await {
                Ok(facts) => return Ok((facts, Engine::Insights)),
                Err(InsightsError::Report(e))
                    if self.choice == LogsEngine::Insights || !e.is_unsupported() =>
                {
                    return Err(e)
                }
                Err(InsightsError::NotAggregated(name)) if self.choice == LogsEngine::Insights => {
                    return Err(ReportError::QueryFailed {
                        name,
                        status: "the endpoint returned rows without the query's aggregates".into(),
                    })
                }
                Err(InsightsError::NotAggregated(name)) => {
                    self.fallback(format!(
                        "the endpoint's Logs Insights returned rows without the aggregates of \
                         {name} (it does not run `stats`): FilterLogEvents used, aggregated here"
                    ));
                }
                Err(InsightsError::Report(e)) => {
                    self.fallback(format!(
                        "the endpoint has no Logs Insights ({e}): FilterLogEvents used, aggregated here"
                    ));
                }
            }
        }
        let facts = filter::read(&clients.logs, source, progress).await?;
        Ok((facts, Engine::FilterLogEvents))
    }

    fn fallback(&mut self, reason: String) {
        self.choice = LogsEngine::Filter;
        self.fallback_reason = Some(reason);
    }
}
