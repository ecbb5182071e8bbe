//! The queries through Logs Insights: StartQuery for the four, GetQueryResults until each is
//! complete; the service scans and aggregates, the report receives a few rows per environment.

use super::{InsightsError, LogFacts, MemoryRow, OomRow, SiteRow, Source, VerdictKind, VerdictRow};
use crate::error::ReportError;
use crate::queries::{self, Query};
use crate::window::parse_timestamp;
use aws_sdk_cloudwatchlogs::types::QueryStatus;
use aws_sdk_cloudwatchlogs::Client;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Longest wait for all queries of one function.
const DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(500);
/// Rows a query returns at most (its `limit`): reaching it means the figures are partial.
const ROW_LIMIT: usize = 10_000;

type Row = HashMap<String, String>;

/// Runs the queries; `Ok(None)` when the log group does not exist.
pub(super) async fn read(
    client: &Client,
    source: &Source<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<LogFacts>, InsightsError> {
    let bin_s = source.window.bin_s();
    let texts: Vec<(Query, String)> = queries::ALL
        .iter()
        .map(|q| {
            let text = if q.name == queries::MEMORY_BY_ENVIRONMENT.name {
                queries::memory_query(bin_s)
            } else {
                q.text.to_string()
            };
            (*q, text)
        })
        .collect();
    let mut ids = Vec::new();
    for (q, text) in &texts {
        let started = client
            .start_query()
            .log_group_name(source.log_group)
            .start_time(source.window.start_ms / 1000)
            .end_time(source.window.end_ms / 1000)
            .query_string(text)
            .send()
            .await;
        match started {
            Ok(out) => ids.push((*q, out.query_id().unwrap_or_default().to_string())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(InsightsError::Report(ReportError::aws("StartQuery", e))),
        }
    }
    let results = wait_all(client, &ids, progress).await?;

    let mut facts = LogFacts::default();
    for (q, rows) in &results {
        if rows
            .iter()
            .any(|r| q.columns.iter().any(|c| !r.contains_key(*c)))
        {
            return Err(InsightsError::NotAggregated(q.name));
        }
        facts.truncated |= rows.len() >= ROW_LIMIT;
        match q.name {
            n if n == queries::GROWING_SITES.name => {
                facts.sites = rows.iter().filter_map(site_row).collect();
            }
            n if n == queries::LEAK_VERDICTS.name => {
                facts.verdicts = rows.iter().filter_map(verdict_row).collect();
            }
            n if n == queries::OUT_OF_MEMORY.name => {
                facts.ooms = rows.iter().filter_map(oom_row).collect();
            }
            _ => facts.memory = rows.iter().filter_map(memory_row).collect(),
        }
    }
    Ok(Some(facts))
}

/// Polls until every query is complete; rows without `@ptr`.
async fn wait_all(
    client: &Client,
    ids: &[(Query, String)],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<(Query, Vec<Row>)>, InsightsError> {
    let started = Instant::now();
    let mut done: Vec<Option<Vec<Row>>> = vec![None; ids.len()];
    loop {
        for (slot, (q, id)) in done.iter_mut().zip(ids) {
            if slot.is_some() {
                continue;
            }
            let out = client
                .get_query_results()
                .query_id(id)
                .send()
                .await
                .map_err(|e| InsightsError::Report(ReportError::aws("GetQueryResults", e)))?;
            match out.status() {
                Some(QueryStatus::Complete) => {
                    *slot = Some(
                        out.results()
                            .iter()
                            .map(|fields| {
                                fields
                                    .iter()
                                    .filter_map(|f| {
                                        Some((f.field()?.to_string(), f.value()?.to_string()))
                                    })
                                    .filter(|(k, _)| k != "@ptr")
                                    .collect()
                            })
                            .collect(),
                    );
                }
                Some(QueryStatus::Running | QueryStatus::Scheduled) | None => {}
                Some(other) => {
                    return Err(InsightsError::Report(ReportError::QueryFailed {
                        name: q.name,
                        status: other.as_str().to_string(),
                    }))
                }
            }
        }
        let complete = done.iter().filter(|d| d.is_some()).count();
        progress(&format!(
            "Logs Insights: {complete}/{} queries complete ({:.0} s)",
            ids.len(),
            started.elapsed().as_secs_f64()
        ));
        if complete == ids.len() {
            break;
        }
        if started.elapsed() > DEADLINE {
            return Err(InsightsError::Report(ReportError::QueryFailed {
                name: ids[done.iter().position(Option::is_none).unwrap_or(0)]
                    .0
                    .name,
                status: format!("still running after {} s", DEADLINE.as_secs()),
            }));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(ids
        .iter()
        .zip(done)
        .map(|((q, _), rows)| (*q, rows.unwrap_or_default()))
        .collect())
}

fn num(row: &Row, key: &str) -> Option<f64> {
    row.get(key)?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

fn count(row: &Row, key: &str) -> Option<u64> {
    num(row, key).map(|v| v.max(0.0).round() as u64)
}

fn text(row: &Row, key: &str) -> Option<String> {
    row.get(key).filter(|v| !v.is_empty()).cloned()
}

fn time(row: &Row, key: &str) -> Option<i64> {
    parse_timestamp(row.get(key)?)
}

fn site_row(row: &Row) -> Option<SiteRow> {
    Some(SiteRow {
        site: text(row, "site.site")?,
        via: text(row, "via"),
        environments: count(row, "environments")?,
        bytes_per_invoke: num(row, "bytes_per_invoke").unwrap_or(0.0),
        traced_invocations: count(row, "traced_invocations"),
    })
}

fn verdict_row(row: &Row) -> Option<VerdictRow> {
    let kind = match row.get("lmp")?.as_str() {
        "leak_suspected" => VerdictKind::Suspected,
        "leak_withdrawn" => VerdictKind::Withdrawn,
        _ => return None,
    };
    let last_at_ms = time(row, "last_at")?;
    Some(VerdictRow {
        log_stream: text(row, "@logStream")?,
        kind,
        episode: count(row, "episode"),
        lines: count(row, "lines")?,
        first_at_ms: time(row, "first_at").unwrap_or(last_at_ms),
        last_at_ms,
        heap_growth_bytes_per_invoke: num(row, "heap_growth_bytes_per_invoke"),
        invocations_to_out_of_memory: num(row, "invocations_to_out_of_memory"),
        hours_to_out_of_memory: num(row, "hours_to_out_of_memory"),
        invocations: count(row, "invocations"),
    })
}

fn oom_row(row: &Row) -> Option<OomRow> {
    Some(OomRow {
        log_stream: text(row, "@logStream")?,
        cause: text(row, "cause")?,
        count: count(row, "out_of_memory")?,
        last_at_ms: time(row, "last_at")?,
        utilization: num(row, "utilization"),
    })
}

fn memory_row(row: &Row) -> Option<MemoryRow> {
    let bin = row
        .iter()
        .find(|(k, _)| k.starts_with("bin("))
        .and_then(|(_, v)| parse_timestamp(v))?;
    Some(MemoryRow {
        log_stream: text(row, "@logStream")?,
        bin_start_ms: bin,
        max_memory_used_mb: num(row, "max_memory_used_mb")?,
        invocations: count(row, "invocations")?,
    })
}
