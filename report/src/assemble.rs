//! Metric figures and log rows → one function's report. No new judgement: counts, rankings and
//! the latest state of each environment's own verdict lines; the saving is the extension's
//! right-size rule (`rightsize::recommend`) applied to the fleet's observed rate.

use crate::cloudwatch::{MetricFigures, Stat};
use crate::logs::{LogFacts, VerdictKind, VerdictRow};
use crate::model::*;
use crate::window::{format_utc, Window};
use lambda_memory_profiler::analysis::rightsize::{
    self, RightSizeConfig, Usage, MIN_MEMORY_MB, ONE_VCPU_MB,
};
use lambda_memory_profiler::metrics::Metric;
use std::collections::{BTreeMap, BTreeSet};

/// What one function's report is made from.
pub struct Inputs<'a> {
    /// The `FunctionName` the figures were read for.
    pub function: &'a str,
    /// Log group the log figures came from (named in the note when it is missing).
    pub log_group: &'a str,
    /// The report's window (the saving's rate falls back to its length).
    pub window: &'a Window,
    /// What GetMetricData returned for the function.
    pub metrics: &'a MetricFigures,
    /// The log rows; `None` when the log group does not exist.
    pub logs: Option<&'a LogFacts>,
    /// Growing sites kept (`--top`).
    pub top: usize,
    /// USD per GB-second the saving is priced at ([`crate::cli::Args::price`]).
    pub price_per_gb_second: f64,
}

/// Joins one function's metric figures and log rows into its section of the report.
pub fn function_report(i: &Inputs<'_>) -> FunctionReport {
    let m = i.metrics;
    let count = |metric, stat| {
        m.get(metric, stat)
            .map_or(0, |v: f64| v.max(0.0).round() as u64)
    };
    let mut notes = Vec::new();
    let leak = i.logs.map(leak_of);
    let streams: BTreeSet<&str> = i.logs.map_or_else(BTreeSet::new, |l| {
        l.memory
            .iter()
            .map(|r| r.log_stream.as_str())
            .chain(l.verdicts.iter().map(|r| r.log_stream.as_str()))
            .chain(l.ooms.iter().map(|r| r.log_stream.as_str()))
            .collect()
    });
    let mut leak = leak;
    if let Some(l) = leak.as_mut() {
        l.share_of_judged_invocations = m.mean(Metric::LeakSuspected);
        l.invocations_to_out_of_memory_metric_min =
            m.get(Metric::InvocationsToOutOfMemory, Stat::Minimum);
    }
    if i.logs.is_none() {
        notes.push(format!(
            "log group {} not found: no verdicts, sites or OOM causes (set --log-group)",
            i.log_group
        ));
    }
    if i.logs.is_some_and(|l| l.truncated) {
        notes.push("a log query reached its row limit: log figures are partial".into());
    }
    let holding = leak
        .as_ref()
        .is_some_and(|l| l.environments_with_verdict > 0);
    FunctionReport {
        function: i.function.to_string(),
        log_group: i.log_group.to_string(),
        invocations: count(Metric::Duration, Stat::SampleCount),
        environments: Environments {
            seen: streams.len() as u64,
            cold_starts: m
                .get(Metric::ColdStart, Stat::Sum)
                .map(|v| v.max(0.0).round() as u64),
        },
        memory_size_mb: m.get(Metric::MemorySize, Stat::Maximum),
        max_memory_used_mb: m.get(Metric::MaxMemoryUsed, Stat::Maximum),
        utilization_percent: Utilization {
            max: m.get(Metric::MemoryUtilization, Stat::Maximum),
            p99: m.utilization_p99,
        },
        python_heap_peak_bytes: m.get(Metric::PythonHeapPeak, Stat::Maximum),
        heap_growth_bytes_per_invoke: HeapGrowth {
            mean: m.mean(Metric::HeapGrowthPerInvoke),
            max: m.get(Metric::HeapGrowthPerInvoke, Stat::Maximum),
            judged_invocations: count(Metric::HeapGrowthPerInvoke, Stat::SampleCount),
        },
        leak,
        growing_sites: i.logs.map(|l| {
            l.sites
                .iter()
                .take(i.top)
                .map(|s| GrowingSite {
                    site: s.site.clone(),
                    via: s.via.clone(),
                    bytes_per_invoke: s.bytes_per_invoke,
                    environments: s.environments,
                    traced_invocations: s.traced_invocations,
                })
                .collect()
        }),
        out_of_memory: out_of_memory(m, i.logs),
        right_size: right_size(i, holding),
        memory_series: series(i.logs),
        notes,
    }
}

/// Each environment's state from its latest verdict line (and an OOM after it).
fn leak_of(logs: &LogFacts) -> Leak {
    let mut by_stream: BTreeMap<&str, (Option<&VerdictRow>, i64)> = BTreeMap::new();
    for r in &logs.verdicts {
        let e = by_stream.entry(&r.log_stream).or_insert((None, i64::MIN));
        match r.kind {
            VerdictKind::Suspected if e.0.is_none_or(|s| r.last_at_ms > s.last_at_ms) => {
                e.0 = Some(r);
            }
            VerdictKind::Withdrawn => e.1 = e.1.max(r.last_at_ms),
            VerdictKind::Suspected => {}
        }
    }
    let mut environments: Vec<EnvironmentVerdict> = by_stream
        .into_iter()
        .filter_map(|(stream, (suspected, withdrawn_at))| {
            let s = suspected?;
            let oom_at = logs
                .ooms
                .iter()
                .filter(|o| o.log_stream == stream)
                .map(|o| o.last_at_ms)
                .max()
                .unwrap_or(i64::MIN);
            let status = if withdrawn_at >= s.last_at_ms {
                EnvironmentStatus::Withdrawn
            } else if oom_at >= s.last_at_ms {
                EnvironmentStatus::OutOfMemory
            } else {
                EnvironmentStatus::Leak
            };
            Some(EnvironmentVerdict {
                log_stream: stream.to_string(),
                status,
                since: format_utc(s.first_at_ms),
                last_line_at: format_utc(s.last_at_ms),
                raised_at_invocation: s.episode,
                invocations: s.invocations,
                heap_growth_bytes_per_invoke: s.heap_growth_bytes_per_invoke,
                invocations_to_out_of_memory: s.invocations_to_out_of_memory,
                hours_to_out_of_memory: s.hours_to_out_of_memory,
            })
        })
        .collect();
    environments.sort_by(|a, b| a.since.cmp(&b.since).then(a.log_stream.cmp(&b.log_stream)));
    let standing: Vec<&EnvironmentVerdict> = environments
        .iter()
        .filter(|e| e.status == EnvironmentStatus::Leak)
        .collect();
    let min = |f: fn(&EnvironmentVerdict) -> Option<f64>| {
        standing.iter().filter_map(|e| f(e)).reduce(f64::min)
    };
    Leak {
        environments_with_verdict: standing.len() as u64,
        since: standing.iter().map(|e| e.since.clone()).min(),
        share_of_judged_invocations: None,
        invocations_to_out_of_memory: min(|e| e.invocations_to_out_of_memory),
        hours_to_out_of_memory: min(|e| e.hours_to_out_of_memory),
        invocations_to_out_of_memory_metric_min: None,
        environments,
    }
}

fn out_of_memory(m: &MetricFigures, logs: Option<&LogFacts>) -> OutOfMemory {
    let causes = logs.map(|l| {
        let mut by_cause: BTreeMap<&str, (u64, BTreeSet<&str>, i64)> = BTreeMap::new();
        for o in &l.ooms {
            let e = by_cause
                .entry(&o.cause)
                .or_insert((0, BTreeSet::new(), i64::MIN));
            e.0 += o.count;
            e.1.insert(&o.log_stream);
            e.2 = e.2.max(o.last_at_ms);
        }
        let mut v: Vec<OomCause> = by_cause
            .into_iter()
            .map(|(cause, (count, envs, last))| OomCause {
                cause: cause.to_string(),
                count,
                environments: envs.len() as u64,
                last_at: format_utc(last),
            })
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.count));
        v
    });
    OutOfMemory {
        count: m
            .get(Metric::OutOfMemory, Stat::Sum)
            .map_or(0, |v| v.max(0.0).round() as u64),
        causes,
    }
}

/// The extension's recommendation, with its saving at the fleet's observed rate.
fn right_size(i: &Inputs<'_>, leak_stands: bool) -> Option<RightSize> {
    let m = i.metrics;
    let recommended = m.get(Metric::RecommendedMemorySize, Stat::Maximum)?;
    let size = m.get(Metric::MemorySize, Stat::Maximum)?;
    let invocations = m.get(Metric::Duration, Stat::SampleCount).unwrap_or(0.0);
    let observed_seconds = m
        .active_span_ms
        .map_or(i.window.seconds() as f64, |(a, b)| (b - a) as f64 / 1000.0);
    let mean_billed_ms = m
        .mean(Metric::BilledDuration)
        .or_else(|| m.mean(Metric::Duration));
    // Headroom 0 on the recommended size itself: the rule prices exactly that size.
    let usage = Usage {
        peak_mb: recommended,
        memory_size_mb: size.round() as u32,
        invocations: invocations.round() as u64,
        observed_seconds,
        mean_billed_ms: mean_billed_ms.unwrap_or(0.0),
    };
    let config = RightSizeConfig {
        headroom: 0.0,
        price_per_gb_second: i.price_per_gb_second,
    };
    let rec = rightsize::recommend(&usage, &config)?;
    let saving = mean_billed_ms.and(rec.monthly_saving_usd);
    let cpu_note = (rec.recommended_mb < usage.memory_size_mb).then(|| {
        let share = f64::from(rec.recommended_mb.min(ONE_VCPU_MB))
            / f64::from(usage.memory_size_mb.min(ONE_VCPU_MB));
        format!(
            "CPU is allocated in proportion to memory ({} MiB = one vCPU): at {} MiB a \
             CPU-bound function gets {:.0}% of the CPU it has at {} MiB and may run longer, which \
             reduces the saving",
            crate::render::thousands(u64::from(ONE_VCPU_MB)),
            rec.recommended_mb,
            share * 100.0,
            usage.memory_size_mb
        )
    });
    let at_minimum = rec.recommended_mb == MIN_MEMORY_MB;
    let advice = advice(
        usage.memory_size_mb,
        rec.recommended_mb,
        saving,
        at_minimum,
        leak_stands,
    );
    Some(RightSize {
        memory_size_mb: size,
        recommended_mb: rec.recommended_mb,
        at_minimum,
        invocations_per_month: rec.invocations_per_month,
        mean_billed_ms,
        monthly_saving_usd: saving,
        price_per_gb_second: i.price_per_gb_second,
        cpu_note,
        advice,
    })
}

fn advice(size: u32, rec: u32, saving: Option<f64>, at_minimum: bool, leak: bool) -> String {
    let minimum = if at_minimum {
        format!("; {MIN_MEMORY_MB} MiB is Lambda's minimum")
    } else {
        String::new()
    };
    let money = |s: f64| {
        if s >= 0.0 {
            format!("saves ~{} USD/month at the observed rate", usd(s))
        } else {
            format!("costs ~{} USD/month more at the observed rate", usd(-s))
        }
    };
    let mut out = match rec.cmp(&size) {
        std::cmp::Ordering::Less => format!(
            "lower to {rec} MiB: {}{minimum}",
            saving.map_or_else(|| "saving unknown (no billed duration)".into(), money)
        ),
        std::cmp::Ordering::Greater => format!(
            "raise to {rec} MiB: the peak leaves less than the headroom; {}",
            saving.map_or_else(|| "cost unknown (no billed duration)".into(), money)
        ),
        std::cmp::Ordering::Equal => format!("keep {size} MiB{minimum}"),
    };
    if leak {
        out.push_str(" — but fix the leak first: a leaking function's peak keeps rising");
    }
    out
}

/// Dollars with the precision small amounts need.
pub fn usd(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn series(logs: Option<&LogFacts>) -> Vec<EnvironmentSeries> {
    let Some(l) = logs else { return Vec::new() };
    let mut by_stream: BTreeMap<&str, Vec<MemoryPoint>> = BTreeMap::new();
    for r in &l.memory {
        by_stream
            .entry(&r.log_stream)
            .or_default()
            .push(MemoryPoint {
                at: format_utc(r.bin_start_ms),
                at_ms: r.bin_start_ms,
                max_memory_used_mb: r.max_memory_used_mb,
                invocations: r.invocations,
            });
    }
    by_stream
        .into_iter()
        .map(|(s, mut points)| {
            points.sort_by_key(|p| p.at_ms);
            EnvironmentSeries {
                log_stream: s.to_string(),
                points,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{OomRow, VerdictRow};

    fn verdict(stream: &str, kind: VerdictKind, first: i64, last: i64) -> VerdictRow {
        VerdictRow {
            log_stream: stream.into(),
            kind,
            episode: Some(37),
            lines: 1,
            first_at_ms: first,
            last_at_ms: last,
            heap_growth_bytes_per_invoke: Some(4096.0),
            invocations_to_out_of_memory: Some(last as f64),
            hours_to_out_of_memory: None,
            invocations: Some(40),
        }
    }

    #[test]
    fn an_environment_is_in_the_state_of_its_latest_line() {
        let logs = LogFacts {
            verdicts: vec![
                verdict("a", VerdictKind::Suspected, 10, 50),
                verdict("b", VerdictKind::Suspected, 20, 20),
                verdict("b", VerdictKind::Withdrawn, 30, 30),
                // Withdrawn, then raised again later: it stands.
                verdict("c", VerdictKind::Withdrawn, 5, 5),
                verdict("c", VerdictKind::Suspected, 40, 60),
                verdict("d", VerdictKind::Suspected, 15, 15),
            ],
            ooms: vec![OomRow {
                log_stream: "d".into(),
                cause: "Runtime.OutOfMemory".into(),
                count: 1,
                last_at_ms: 16,
                utilization: None,
            }],
            ..LogFacts::default()
        };
        let l = leak_of(&logs);
        let status = |s: &str| {
            l.environments
                .iter()
                .find(|e| e.log_stream == s)
                .map(|e| e.status)
        };
        assert_eq!(status("a"), Some(EnvironmentStatus::Leak));
        assert_eq!(status("b"), Some(EnvironmentStatus::Withdrawn));
        assert_eq!(status("c"), Some(EnvironmentStatus::Leak));
        assert_eq!(status("d"), Some(EnvironmentStatus::OutOfMemory));
        assert_eq!(l.environments_with_verdict, 2);
        assert_eq!(l.since.as_deref(), Some(format_utc(10).as_str()));
        assert_eq!(
            l.invocations_to_out_of_memory,
            Some(50.0),
            "soonest standing"
        );
    }

    #[test]
    fn advice_says_which_way_and_what_it_costs() {
        assert_eq!(
            advice(512, 128, Some(1.234), true, false),
            "lower to 128 MiB: saves ~1.23 USD/month at the observed rate; 128 MiB is Lambda's minimum"
        );
        assert_eq!(
            advice(128, 200, Some(-0.5), false, false),
            "raise to 200 MiB: the peak leaves less than the headroom; costs ~0.50 USD/month more at the observed rate"
        );
        assert_eq!(advice(256, 256, Some(0.0), false, false), "keep 256 MiB");
        assert!(advice(256, 256, None, false, true)
            .ends_with("fix the leak first: a leaking function's peak keeps rising"));
        assert_eq!(usd(0.004_21), "0.0042");
        assert_eq!(usd(1234.4), "1234");
    }
}
