//! The running analysis of one execution environment: every completed profile goes through the
//! leak, out-of-memory and right-size rules, which say what to publish and what to log.
//!
//! Still pure: profiles in, metric values and JSON log lines out; time comes from the profiles.

use serde::Serialize;

use super::leak::{GrowingSite, LeakConfig, LeakDetector, LeakObservation, SiteGrowth, Verdict};
use super::oom::{self, ReportFacts};
use super::rightsize::{self, RightSizeConfig, Usage};
use crate::invocation::InvocationProfile;
use crate::metrics::{Datum, Metric};

const MIB: f64 = 1024.0 * 1024.0;
/// Growing sites named in a leak log line.
const LEAK_SITES: usize = 5;
/// A new recommendation is logged when it moves by at least this fraction, and a standing one
/// every this many invocations (its saving estimate firms up as the rate is observed longer).
const RECOMMENDATION_LOG_STEP: f64 = 0.05;
const RECOMMENDATION_LOG_EVERY: u64 = 100;

/// What one profile adds to the environment's picture.
#[derive(Debug, Default, PartialEq)]
pub struct Findings {
    pub datums: Vec<Datum>,
    /// Structured JSON lines for the function's log (leak suspected, out of memory, right-size).
    pub log_lines: Vec<String>,
}

/// A profile's figures kept for the out-of-memory log line ("the last profile before it").
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct ProfileSummary {
    request_id: String,
    status: Option<String>,
    max_memory_used_mb: Option<f64>,
    memory_size_mb: Option<f64>,
    runtime_rss_bytes: Option<u64>,
    rss_peak_bytes: Option<u64>,
    heap_blocks: Option<u64>,
    python_heap_peak_bytes: Option<u64>,
    python_heap_retained_bytes: Option<u64>,
}

impl ProfileSummary {
    fn of(p: &InvocationProfile) -> Self {
        let r = p.report.as_ref();
        let d = p.decorator.as_deref();
        let t = d.and_then(|d| d.trace.as_ref());
        ProfileSummary {
            request_id: p.request_id.clone(),
            status: r.and_then(|r| r.status.clone()),
            max_memory_used_mb: r.and_then(|r| r.max_memory_used_mb),
            memory_size_mb: r.and_then(|r| r.memory_size_mb),
            runtime_rss_bytes: p.runtime_proc.and_then(|m| m.rss),
            rss_peak_bytes: d.and_then(|d| d.rss_peak_bytes),
            heap_blocks: d.and_then(|d| d.heap_blocks),
            python_heap_peak_bytes: t.and_then(|t| t.peak_bytes),
            python_heap_retained_bytes: t.and_then(|t| t.retained_bytes),
        }
    }
}

#[derive(Serialize)]
struct LeakLine<'a> {
    lmp: &'static str,
    function_name: &'a str,
    request_id: &'a str,
    invocations: u64,
    heap_growth_bytes_per_invoke: Option<f64>,
    heap_slope: f64,
    heap_p_value: f64,
    rss_growth_bytes_per_invoke: f64,
    rss_p_value: f64,
    growing_sites: Vec<GrowingSite>,
}

#[derive(Serialize)]
struct OomLine<'a> {
    lmp: &'static str,
    function_name: &'a str,
    request_id: &'a str,
    cause: &'static str,
    utilization: Option<f64>,
    invocation: ProfileSummary,
    previous: Option<&'a ProfileSummary>,
}

#[derive(Serialize)]
struct RightSizeLine<'a> {
    lmp: &'static str,
    function_name: &'a str,
    memory_size_mb: u32,
    peak_mb: f64,
    peak_source: &'static str,
    recommended_mb: u32,
    invocations_per_month: Option<f64>,
    monthly_saving_usd: Option<f64>,
    cpu_note: Option<&'a str>,
}

/// Running state of the analysis for one execution environment.
#[derive(Debug)]
pub struct EnvironmentAnalysis {
    leak: LeakDetector,
    sites: SiteGrowth,
    rightsize: RightSizeConfig,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, used until a report says it.
    configured_memory_mb: Option<u32>,
    runtime_pid: Option<u32>,
    invocations: u64,
    first_ms: Option<u64>,
    last_ms: u64,
    billed_ms_total: f64,
    billed_count: u64,
    platform_peak_mb: Option<f64>,
    rss_peak_mb: Option<f64>,
    memory_size_mb: Option<u32>,
    previous: Option<ProfileSummary>,
    leak_logged_at: Option<u64>,
    recommendation_logged: Option<(u32, u64)>,
}

impl EnvironmentAnalysis {
    pub fn new(
        leak: LeakConfig,
        rightsize: RightSizeConfig,
        configured_memory_mb: Option<u32>,
    ) -> Self {
        Self {
            leak: LeakDetector::new(leak),
            sites: SiteGrowth::default(),
            rightsize,
            configured_memory_mb,
            runtime_pid: None,
            invocations: 0,
            first_ms: None,
            last_ms: 0,
            billed_ms_total: 0.0,
            billed_count: 0,
            platform_peak_mb: None,
            rss_peak_mb: None,
            memory_size_mb: None,
            previous: None,
            leak_logged_at: None,
            recommendation_logged: None,
        }
    }

    /// Feeds one completed profile; returns the analysis metrics and log lines it produces.
    pub fn observe(&mut self, p: &InvocationProfile, function_name: &str) -> Findings {
        let mut findings = Findings::default();
        let d = p.decorator.as_deref();
        let r = p.report.as_ref();

        // A new runtime process (after a crash or OOM kill) starts a new heap history.
        if let Some(pid) = d.and_then(|d| d.pid) {
            if self.runtime_pid.is_some_and(|old| old != pid) {
                self.leak.reset();
                self.sites = SiteGrowth::default();
                self.leak_logged_at = None;
            }
            self.runtime_pid = Some(pid);
        }
        self.invocations += 1;
        self.first_ms.get_or_insert(p.timestamp_ms);
        self.last_ms = self.last_ms.max(p.timestamp_ms);
        let summary = ProfileSummary::of(p);
        let push = |findings: &mut Findings, metric: Metric, value: f64| {
            if value.is_finite() {
                findings.datums.push(Datum {
                    metric,
                    value,
                    timestamp_ms: p.timestamp_ms,
                });
            }
        };

        // Out of memory: logged with the profile before it, which shows what led there.
        if let Some(cause) = oom_cause(p) {
            let facts = report_facts(p);
            let line = OomLine {
                lmp: "out_of_memory",
                function_name,
                request_id: &p.request_id,
                cause: cause.as_str(),
                utilization: oom::utilization(&facts),
                invocation: summary.clone(),
                previous: self.previous.as_ref(),
            };
            if let Ok(text) = serde_json::to_string(&line) {
                findings.log_lines.push(text);
            }
        }

        // Leak trend.
        let trace = d.and_then(|d| d.trace.as_ref());
        let bytes_per_block = trace.and_then(|t| match (t.retained_bytes, t.retained_blocks) {
            (Some(bytes), Some(blocks)) if blocks > 0 => Some(bytes as f64 / blocks as f64),
            _ => None,
        });
        self.leak.observe(LeakObservation {
            heap_blocks: d.and_then(|d| d.heap_blocks).map(|b| b as f64),
            bytes_per_block,
            rss_bytes: p.runtime_proc.and_then(|m| m.rss).map(|b| b as f64),
        });
        if let Some(t) = trace.filter(|t| !t.top.is_empty()) {
            let share = match (t.growth_bytes, t.retained_bytes) {
                (Some(g), Some(r)) if r > 0 => g as f64 / r as f64,
                _ => 0.0,
            };
            let keys: Vec<(String, u64)> = t
                .top
                .iter()
                .map(|s| (format!("{}:{}", s.file, s.line), s.size))
                .collect();
            self.sites
                .observe(keys.iter().map(|(k, v)| (k.as_str(), *v)), share);
        }
        let report = self.leak.assess();
        if report.verdict != Verdict::NotEnoughData {
            push(
                &mut findings,
                Metric::LeakSuspected,
                f64::from(u8::from(report.verdict == Verdict::Leak)),
            );
        }
        if let Some(growth) = report.heap_growth_bytes_per_invoke {
            push(&mut findings, Metric::HeapGrowthPerInvoke, growth);
        }
        if report.verdict == Verdict::Leak {
            let window = self.leak_window();
            let due = self
                .leak_logged_at
                .is_none_or(|at| self.invocations >= at + window);
            if due {
                self.leak_logged_at = Some(self.invocations);
                let line = LeakLine {
                    lmp: "leak_suspected",
                    function_name,
                    request_id: &p.request_id,
                    invocations: self.invocations,
                    heap_growth_bytes_per_invoke: report.heap_growth_bytes_per_invoke,
                    heap_slope: report.heap.slope,
                    heap_p_value: report.heap.p_value,
                    rss_growth_bytes_per_invoke: report.rss.slope,
                    rss_p_value: report.rss.p_value,
                    growing_sites: self.sites.top(LEAK_SITES),
                };
                if let Ok(text) = serde_json::to_string(&line) {
                    findings.log_lines.push(text);
                }
            }
        }

        // Right-size.
        if let Some(used) = r.and_then(|r| r.max_memory_used_mb) {
            self.platform_peak_mb = Some(self.platform_peak_mb.map_or(used, |p| p.max(used)));
        }
        let rss_peak = d
            .and_then(|d| d.rss_peak_bytes)
            .or_else(|| p.runtime_proc.and_then(|m| m.hwm))
            .map(|b| b as f64 / MIB);
        if let Some(mb) = rss_peak {
            self.rss_peak_mb = Some(self.rss_peak_mb.map_or(mb, |p| p.max(mb)));
        }
        if let Some(size) = r.and_then(|r| r.memory_size_mb) {
            self.memory_size_mb = Some(size as u32);
        }
        if let Some(billed) = r
            .and_then(|r| r.billed_duration_ms)
            .or_else(|| d.and_then(|d| d.duration_ms))
        {
            self.billed_ms_total += billed;
            self.billed_count += 1;
        }
        if let Some(rec) = self.recommendation(function_name) {
            push(
                &mut findings,
                Metric::RecommendedMemorySize,
                f64::from(rec.0),
            );
            if let Some(line) = rec.1 {
                findings.log_lines.push(line);
            }
        }
        self.previous = Some(summary);
        findings
    }

    fn leak_window(&self) -> u64 {
        // Re-log a standing leak once per window, so the log keeps the current sites.
        self.leak.config().window.max(1) as u64
    }

    /// The recommended size, and a log line when it is new or moved noticeably.
    fn recommendation(&mut self, function_name: &str) -> Option<(u32, Option<String>)> {
        let memory_size_mb = self.memory_size_mb.or(self.configured_memory_mb)?;
        // The platform's figure covers the runtime and every extension; without telemetry the
        // runtime's own peak RSS is the best available (and an underestimate).
        let (peak_mb, peak_source) = match (self.platform_peak_mb, self.rss_peak_mb) {
            (Some(p), _) => (p, "platform.report maxMemoryUsedMB"),
            (None, Some(p)) => (p, "runtime peak RSS (no telemetry)"),
            (None, None) => return None,
        };
        let usage = Usage {
            peak_mb,
            memory_size_mb,
            invocations: self.invocations,
            observed_seconds: self
                .first_ms
                .map_or(0.0, |f| self.last_ms.saturating_sub(f) as f64 / 1000.0),
            mean_billed_ms: if self.billed_count > 0 {
                self.billed_ms_total / self.billed_count as f64
            } else {
                0.0
            },
        };
        let rec = rightsize::recommend(&usage, &self.rightsize)?;
        let invocations = self.invocations;
        let due = self.recommendation_logged.is_none_or(|(last, at)| {
            (f64::from(rec.recommended_mb) - f64::from(last)).abs()
                >= RECOMMENDATION_LOG_STEP * f64::from(last)
                || invocations >= at + RECOMMENDATION_LOG_EVERY
        });
        let line = due
            .then(|| {
                self.recommendation_logged = Some((rec.recommended_mb, invocations));
                serde_json::to_string(&RightSizeLine {
                    lmp: "right_size",
                    function_name,
                    memory_size_mb,
                    peak_mb,
                    peak_source,
                    recommended_mb: rec.recommended_mb,
                    invocations_per_month: rec.invocations_per_month,
                    monthly_saving_usd: rec.monthly_saving_usd,
                    cpu_note: rec.cpu_note.as_deref(),
                })
                .ok()
            })
            .flatten();
        Some((rec.recommended_mb, line))
    }
}

fn report_facts(p: &InvocationProfile) -> ReportFacts<'_> {
    let r = p.report.as_ref();
    let error_type = r.and_then(|r| r.error_type.as_deref()).or_else(|| {
        p.runtime_done
            .as_ref()
            .and_then(|rd| rd.error_type.as_deref())
    });
    ReportFacts {
        status: r
            .and_then(|r| r.status.as_deref())
            .or_else(|| p.runtime_done.as_ref().and_then(|rd| rd.status.as_deref())),
        error_type,
        max_memory_used_mb: r.and_then(|r| r.max_memory_used_mb),
        memory_size_mb: r.and_then(|r| r.memory_size_mb),
    }
}

/// Why this invocation counts as out of memory, if it does: the platform's report, or the
/// decorator's `MemoryError` (Python's own allocation failure, which the platform calls an error).
pub fn oom_cause(p: &InvocationProfile) -> Option<oom::OomCause> {
    oom::detect(&report_facts(p), oom::DEFAULT_NEAR_LIMIT).or_else(|| {
        (p.decorator.as_deref().and_then(|d| d.error_type.as_deref()) == Some("MemoryError"))
            .then_some(oom::OomCause::PythonMemoryError)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::intake::{DecoratorRecord, TopSite, Trace};
    use crate::sources::procfs::ProcMemory;
    use crate::sources::telemetry::Report;

    fn profile(i: u64, pid: u32, heap_blocks: u64, traced: bool) -> InvocationProfile {
        let trace = traced.then(|| Trace {
            retained_bytes: Some(10_240),
            retained_blocks: Some(1),
            growth_bytes: Some(10_240),
            top: vec![
                TopSite {
                    file: "app.py".into(),
                    line: 12,
                    size: 10_240,
                    count: 1,
                },
                TopSite {
                    file: "lib.py".into(),
                    line: 3,
                    size: 64,
                    count: 1,
                },
            ],
            ..Default::default()
        });
        InvocationProfile {
            request_id: format!("r{i}"),
            timestamp_ms: 1_764_000_000_000 + i * 1000,
            report: Some(Report {
                request_id: format!("r{i}"),
                status: Some("success".into()),
                billed_duration_ms: Some(20.0),
                memory_size_mb: Some(1024.0),
                max_memory_used_mb: Some(200.0),
                ..Default::default()
            }),
            decorator: Some(Box::new(DecoratorRecord {
                request_id: format!("r{i}"),
                pid: Some(pid),
                heap_blocks: Some(heap_blocks),
                trace,
                ..Default::default()
            })),
            runtime_proc: Some(ProcMemory {
                rss: Some(80_000_000 + i * 10_240),
                hwm: None,
            }),
            ..Default::default()
        }
    }

    fn analysis() -> EnvironmentAnalysis {
        EnvironmentAnalysis::new(
            LeakConfig::default(),
            RightSizeConfig::default(),
            Some(1024),
        )
    }

    fn value(f: &Findings, m: Metric) -> Option<f64> {
        f.datums.iter().find(|d| d.metric == m).map(|d| d.value)
    }

    fn lines_of(all: &[String], kind: &str) -> Vec<serde_json::Value> {
        all.iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["lmp"] == kind)
            .collect()
    }

    #[test]
    fn a_leak_is_published_and_logged_with_its_site() {
        let mut a = analysis();
        let mut lines = Vec::new();
        let mut last = Findings::default();
        // Warm-up (3), a full window (30), confirmation (5).
        for i in 0..40 {
            last = a.observe(&profile(i, 7, 50_000 + i, i % 10 == 0), "fn");
            lines.extend(last.log_lines.clone());
        }
        assert_eq!(value(&last, Metric::LeakSuspected), Some(1.0));
        let growth = value(&last, Metric::HeapGrowthPerInvoke).unwrap();
        assert!((growth - 10_240.0).abs() < 1_024.0, "growth {growth}");
        let leaks = lines_of(&lines, "leak_suspected");
        assert_eq!(leaks.len(), 1, "logged once per window: {lines:?}");
        assert_eq!(leaks[0]["growing_sites"][0]["site"], "app.py:12");
    }

    #[test]
    fn a_flat_heap_is_published_as_no_leak() {
        let mut a = analysis();
        let mut last = Findings::default();
        for i in 0..40 {
            let mut p = profile(i, 7, 50_000, i % 10 == 0);
            p.runtime_proc = Some(ProcMemory {
                rss: Some(80_000_000),
                hwm: None,
            });
            last = a.observe(&p, "fn");
            assert!(lines_of(&last.log_lines, "leak_suspected").is_empty());
        }
        assert_eq!(value(&last, Metric::LeakSuspected), Some(0.0));
    }

    #[test]
    fn a_new_runtime_process_starts_a_new_history() {
        let mut a = analysis();
        for i in 0..40 {
            a.observe(&profile(i, 7, 50_000 + i, false), "fn");
        }
        let after_crash = a.observe(&profile(40, 8, 50_000, false), "fn");
        assert_eq!(
            value(&after_crash, Metric::LeakSuspected),
            None,
            "not enough data again"
        );
    }

    #[test]
    fn out_of_memory_is_logged_with_the_profile_before_it() {
        let mut a = analysis();
        a.observe(&profile(0, 7, 50_000, false), "fn");
        let mut oom = profile(1, 7, 50_000, false);
        if let Some(r) = oom.report.as_mut() {
            r.status = Some("error".into());
            r.error_type = Some("Runtime.OutOfMemory".into());
        }
        let f = a.observe(&oom, "fn");
        let logged = lines_of(&f.log_lines, "out_of_memory");
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0]["cause"], "Runtime.OutOfMemory");
        assert_eq!(logged[0]["previous"]["request_id"], "r0");
        assert_eq!(logged[0]["invocation"]["request_id"], "r1");
    }

    #[test]
    fn right_size_is_published_every_time_and_logged_when_it_moves() {
        let mut a = analysis();
        let first = a.observe(&profile(0, 7, 50_000, false), "fn");
        assert_eq!(value(&first, Metric::RecommendedMemorySize), Some(260.0));
        let logged = lines_of(&first.log_lines, "right_size");
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0]["recommended_mb"], 260);
        assert!(logged[0]["cpu_note"].as_str().unwrap().contains("CPU"));
        let second = a.observe(&profile(1, 7, 50_000, false), "fn");
        assert_eq!(value(&second, Metric::RecommendedMemorySize), Some(260.0));
        assert!(lines_of(&second.log_lines, "right_size").is_empty());
        let mut bigger = profile(2, 7, 50_000, false);
        if let Some(r) = bigger.report.as_mut() {
            r.max_memory_used_mb = Some(400.0);
        }
        let third = a.observe(&bigger, "fn");
        assert_eq!(
            lines_of(&third.log_lines, "right_size")[0]["recommended_mb"],
            520
        );
    }

    #[test]
    fn python_memory_error_counts_as_out_of_memory() {
        let mut p = profile(0, 7, 1, false);
        p.report = None;
        if let Some(d) = p.decorator.as_mut() {
            d.error_type = Some("MemoryError".into());
        }
        assert_eq!(oom_cause(&p), Some(oom::OomCause::PythonMemoryError));
    }
}
