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
    pub site: String,
    pub via: Option<String>,
    /// Environments whose leak lines named the site.
    pub environments: u64,
    /// Mean over those lines of the site's `bytes_per_traced_invoke`.
    pub bytes_per_invoke: f64,
    /// Most traced invocations one environment saw the site in.
    pub traced_invocations: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictKind {
    Suspected,
    Withdrawn,
}

/// The leak lines of one environment and episode, of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictRow {
    pub log_stream: String,
    pub kind: VerdictKind,
    /// The invocation at which the episode's verdict was raised.
    pub episode: Option<u64>,
    pub lines: u64,
    pub first_at_ms: i64,
    pub last_at_ms: i64,
    pub heap_growth_bytes_per_invoke: Option<f64>,
    pub invocations_to_out_of_memory: Option<f64>,
    pub hours_to_out_of_memory: Option<f64>,
    pub invocations: Option<u64>,
}

/// Out-of-memory lines of one environment and cause.
#[derive(Debug, Clone, PartialEq)]
pub struct OomRow {
    pub log_stream: String,
    pub cause: String,
    pub count: u64,
    pub last_at_ms: i64,
    pub utilization: Option<f64>,
}

/// Memory used by one environment in one bin.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRow {
    pub log_stream: String,
    pub bin_start_ms: i64,
    pub max_memory_used_mb: f64,
    pub invocations: u64,
}

/// Which engine produced the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Insights,
    FilterLogEvents,
}

/// Everything the log lines say about one function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFacts {
    pub sites: Vec<SiteRow>,
    pub verdicts: Vec<VerdictRow>,
    pub ooms: Vec<OomRow>,
    pub memory: Vec<MemoryRow>,
    /// A query hit its row limit (or the scan its event limit): figures are partial.
    pub truncated: bool,
}

/// The log group one function writes to, and the window.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub log_group: &'a str,
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
    pub fallback_reason: Option<String>,
}

impl Reader {
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
