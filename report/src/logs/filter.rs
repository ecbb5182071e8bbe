//! The fallback where an endpoint has no Logs Insights: FilterLogEvents pulls the matching lines
//! (the extension's verdict and OOM lines, the platform's report lines) and the rows of the four
//! queries are computed here with the queries' semantics (`latest` = the value in the group's
//! latest event, `bin` = floor of the timestamp). It pulls one line per invocation for the memory
//! series: meant for local endpoints, not for a busy deployed function.

use super::lines::{self, Event, LmpLine};
use super::{LogFacts, MemoryRow, OomRow, SiteRow, Source, VerdictKind, VerdictRow};
use crate::error::ReportError;
use aws_sdk_cloudwatchlogs::Client;
use std::collections::{BTreeMap, BTreeSet};

/// Events read at most per scan; beyond it the figures are marked partial.
const MAX_EVENTS: usize = 200_000;
/// Server-side filters (an endpoint that ignores them returns everything; lines are checked here).
const LMP_PATTERN: &str =
    r#"{ $.lmp = "leak_suspected" || $.lmp = "leak_withdrawn" || $.lmp = "out_of_memory" }"#;
const REPORT_PATTERN: &str = r#"?"REPORT RequestId" ?"platform.report""#;

/// Reads and aggregates; `Ok(None)` when the log group does not exist.
pub(super) async fn read(
    client: &Client,
    source: &Source<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<LogFacts>, ReportError> {
    let Some((lmp_events, t1)) = scan(client, source, LMP_PATTERN, progress).await? else {
        return Ok(None);
    };
    let Some((report_events, t2)) = scan(client, source, REPORT_PATTERN, progress).await? else {
        return Ok(None);
    };
    let parsed: Vec<(&Event, LmpLine)> = lmp_events
        .iter()
        .filter_map(|e| Some((e, lines::lmp_line(&e.message)?)))
        .collect();
    let reports: Vec<(&Event, f64)> = report_events
        .iter()
        .filter_map(|e| Some((e, lines::report_max_memory_mb(&e.message)?)))
        .collect();
    Ok(Some(LogFacts {
        sites: sites(&parsed),
        verdicts: verdicts(&parsed),
        ooms: ooms(&parsed),
        memory: memory(&reports, source.window.bin_ms),
        truncated: t1 || t2,
    }))
}

/// All events matching `pattern` in the window, oldest first; `None` without the log group.
async fn scan(
    client: &Client,
    source: &Source<'_>,
    pattern: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<(Vec<Event>, bool)>, ReportError> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .filter_log_events()
            .log_group_name(source.log_group)
            .start_time(source.window.start_ms)
            .end_time(source.window.end_ms)
            .filter_pattern(pattern)
            .set_next_token(token.take())
            .send()
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(ReportError::aws("FilterLogEvents", e)),
        };
        events.extend(page.events().iter().map(|e| Event {
            log_stream: e.log_stream_name().unwrap_or_default().to_string(),
            timestamp_ms: e.timestamp().unwrap_or(0),
            message: e.message().unwrap_or_default().to_string(),
        }));
        progress(&format!(
            "FilterLogEvents: {} lines read from {}",
            events.len(),
            source.log_group
        ));
        let truncated = events.len() >= MAX_EVENTS;
        match page.next_token() {
            Some(t) if !t.is_empty() && !truncated => token = Some(t.to_string()),
            _ => {
                events.sort_by_key(|e| e.timestamp_ms);
                return Ok(Some((events, truncated)));
            }
        }
    }
}

fn sites(lines: &[(&Event, LmpLine)]) -> Vec<SiteRow> {
    #[derive(Default)]
    struct Acc {
        streams: BTreeSet<String>,
        sum: f64,
        n: u64,
        seen_in: Option<u64>,
        via: Option<String>,
    }
    let mut by_site: BTreeMap<&str, Acc> = BTreeMap::new();
    for (e, l) in lines.iter().filter(|(_, l)| l.lmp == "leak_suspected") {
        for s in &l.growing_sites {
            let acc = by_site.entry(&s.site).or_default();
            acc.streams.insert(e.log_stream.clone());
            if let Some(b) = s.bytes_per_traced_invoke {
                acc.sum += b;
                acc.n += 1;
            }
            acc.seen_in = acc.seen_in.max(s.seen_in);
            acc.via.clone_from(&s.via);
        }
    }
    let mut rows: Vec<SiteRow> = by_site
        .into_iter()
        .map(|(site, a)| SiteRow {
            site: site.to_string(),
            via: a.via,
            environments: a.streams.len() as u64,
            bytes_per_invoke: if a.n > 0 { a.sum / a.n as f64 } else { 0.0 },
            traced_invocations: a.seen_in,
        })
        .collect();
    rows.sort_by(|a, b| b.bytes_per_invoke.total_cmp(&a.bytes_per_invoke));
    rows.truncate(100);
    rows
}

fn verdicts(lines: &[(&Event, LmpLine)]) -> Vec<VerdictRow> {
    let mut groups: BTreeMap<(String, bool, Option<u64>), VerdictRow> = BTreeMap::new();
    for (e, l) in lines {
        let kind = match l.lmp.as_str() {
            "leak_suspected" => VerdictKind::Suspected,
            "leak_withdrawn" => VerdictKind::Withdrawn,
            _ => continue,
        };
        let episode = l.since_invocation.or(l.raised_at_invocation);
        let key = (
            e.log_stream.clone(),
            kind == VerdictKind::Withdrawn,
            episode,
        );
        let row = groups.entry(key).or_insert_with(|| VerdictRow {
            log_stream: e.log_stream.clone(),
            kind,
            episode,
            lines: 0,
            first_at_ms: e.timestamp_ms,
            last_at_ms: e.timestamp_ms,
            heap_growth_bytes_per_invoke: None,
            invocations_to_out_of_memory: None,
            hours_to_out_of_memory: None,
            invocations: None,
        });
        // Events come oldest first: the last one seen is the group's latest.
        row.lines += 1;
        row.first_at_ms = row.first_at_ms.min(e.timestamp_ms);
        row.last_at_ms = row.last_at_ms.max(e.timestamp_ms);
        row.heap_growth_bytes_per_invoke = l.heap_growth_bytes_per_invoke;
        row.invocations_to_out_of_memory = l.invocations_to_out_of_memory;
        row.hours_to_out_of_memory = l.hours_to_out_of_memory;
        row.invocations = row.invocations.max(l.invocations);
    }
    let mut rows: Vec<VerdictRow> = groups.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.last_at_ms));
    rows
}

fn ooms(lines: &[(&Event, LmpLine)]) -> Vec<OomRow> {
    let mut groups: BTreeMap<(String, String), OomRow> = BTreeMap::new();
    for (e, l) in lines.iter().filter(|(_, l)| l.lmp == "out_of_memory") {
        let cause = l.cause.clone().unwrap_or_else(|| "unknown".into());
        let row = groups
            .entry((e.log_stream.clone(), cause.clone()))
            .or_insert_with(|| OomRow {
                log_stream: e.log_stream.clone(),
                cause,
                count: 0,
                last_at_ms: e.timestamp_ms,
                utilization: None,
            });
        row.count += 1;
        row.last_at_ms = row.last_at_ms.max(e.timestamp_ms);
        row.utilization = match (row.utilization, l.utilization) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let mut rows: Vec<OomRow> = groups.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.last_at_ms));
    rows
}

fn memory(reports: &[(&Event, f64)], bin_ms: i64) -> Vec<MemoryRow> {
    let bin_ms = bin_ms.max(1);
    let mut groups: BTreeMap<(String, i64), MemoryRow> = BTreeMap::new();
    for (e, mb) in reports {
        let bin = e.timestamp_ms.div_euclid(bin_ms) * bin_ms;
        let row = groups
            .entry((e.log_stream.clone(), bin))
            .or_insert_with(|| MemoryRow {
                log_stream: e.log_stream.clone(),
                bin_start_ms: bin,
                max_memory_used_mb: *mb,
                invocations: 0,
            });
        row.max_memory_used_mb = row.max_memory_used_mb.max(*mb);
        row.invocations += 1;
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(stream: &str, t: i64, message: &str) -> Event {
        Event {
            log_stream: stream.into(),
            timestamp_ms: t,
            message: message.into(),
        }
    }

    fn leak(since: u64, inv: u64, sites: &[(&str, f64)]) -> String {
        let sites: Vec<String> = sites
            .iter()
            .map(|(s, b)| format!(r#"{{"site":"{s}","bytes_per_traced_invoke":{b},"seen_in":2}}"#))
            .collect();
        format!(
            r#"{{"lmp":"leak_suspected","since_invocation":{since},"invocations":{inv},"heap_growth_bytes_per_invoke":4096.0,"invocations_to_out_of_memory":{},"growing_sites":[{}]}}"#,
            1000 - inv,
            sites.join(",")
        )
    }

    fn parse(events: &[Event]) -> Vec<(&Event, LmpLine)> {
        events
            .iter()
            .filter_map(|e| Some((e, lines::lmp_line(&e.message)?)))
            .collect()
    }

    #[test]
    fn sites_are_ranked_across_environments() {
        let events = vec![
            ev(
                "a",
                1,
                &leak(37, 37, &[("app.py:10", 4000.0), ("app.py:20", 100.0)]),
            ),
            ev("a", 2, &leak(37, 77, &[("app.py:10", 5000.0)])),
            ev(
                "b",
                3,
                &leak(40, 40, &[("app.py:10", 3000.0), ("lib.py:5", 9000.0)]),
            ),
        ];
        let rows = sites(&parse(&events));
        assert_eq!(rows[0].site, "lib.py:5");
        assert_eq!(rows[0].environments, 1);
        assert_eq!(rows[1].site, "app.py:10");
        assert_eq!(rows[1].environments, 2, "seen in a and b");
        assert_eq!(
            rows[1].bytes_per_invoke, 4000.0,
            "mean over the three lines"
        );
        assert_eq!(rows[2].site, "app.py:20");
    }

    #[test]
    fn verdicts_group_by_environment_kind_and_episode() {
        let events = vec![
            ev("a", 10, &leak(37, 37, &[])),
            ev("a", 20, &leak(37, 77, &[])),
            ev(
                "a",
                30,
                r#"{"lmp":"leak_withdrawn","invocations":120,"raised_at_invocation":37,"heap_growth_bytes_per_invoke":10.0}"#,
            ),
            ev("b", 15, &leak(38, 38, &[])),
        ];
        let rows = verdicts(&parse(&events));
        assert_eq!(rows.len(), 3);
        let a_leak = rows
            .iter()
            .find(|r| r.log_stream == "a" && r.kind == VerdictKind::Suspected)
            .unwrap();
        assert_eq!(
            (a_leak.lines, a_leak.first_at_ms, a_leak.last_at_ms),
            (2, 10, 20)
        );
        assert_eq!(a_leak.invocations, Some(77));
        assert_eq!(
            a_leak.invocations_to_out_of_memory,
            Some(923.0),
            "the latest line's"
        );
        let a_out = rows
            .iter()
            .find(|r| r.kind == VerdictKind::Withdrawn)
            .unwrap();
        assert_eq!((a_out.episode, a_out.last_at_ms), (Some(37), 30));
        assert_eq!(rows[0].last_at_ms, 30, "latest first");
    }

    #[test]
    fn ooms_count_per_environment_and_cause() {
        let o = |cause: &str| {
            format!(r#"{{"lmp":"out_of_memory","cause":"{cause}","utilization":0.99}}"#)
        };
        let events = vec![
            ev("a", 1, &o("Runtime.OutOfMemory")),
            ev("a", 5, &o("Runtime.OutOfMemory")),
            ev("b", 3, &o("MemoryError")),
        ];
        let rows = ooms(&parse(&events));
        let a = rows.iter().find(|r| r.log_stream == "a").unwrap();
        assert_eq!((a.count, a.last_at_ms), (2, 5));
        assert_eq!(a.utilization, Some(0.99));
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 3);
    }

    #[test]
    fn memory_is_binned_per_environment() {
        let a1 = ev("a", 1_000, "");
        let a2 = ev("a", 4_000, "");
        let a3 = ev("a", 6_000, "");
        let b1 = ev("b", 1_500, "");
        let rows = memory(&[(&a1, 50.0), (&a2, 60.0), (&a3, 70.0), (&b1, 40.0)], 5_000);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (
                rows[0].bin_start_ms,
                rows[0].max_memory_used_mb,
                rows[0].invocations
            ),
            (0, 60.0, 2)
        );
        assert_eq!(
            (rows[1].bin_start_ms, rows[1].max_memory_used_mb),
            (5_000, 70.0)
        );
        assert_eq!(rows[2].log_stream, "b");
    }
}
