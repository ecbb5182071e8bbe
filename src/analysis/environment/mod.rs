//! The running analysis of one execution environment: every completed profile goes through the
//! leak, out-of-memory and right-size rules, which say what to publish and what to log.
//!
//! Still pure: profiles in, typed findings and JSON log lines out; time comes from the profiles.
//! [`crate::metrics`] turns the findings into metric data.

use super::leak::{LeakConfig, LeakDetector, Signal};
use super::lines::{OomLine, ProfileSummary, RightSizeLine};
use super::oom;
use super::rightsize::{self, RightSizeConfig, Usage};
use super::sites::{HeapSiteGrowth, SiteGrowth};
use crate::invocation::InvocationProfile;

mod leak_findings;
use crate::sources::intake::DecoratorRecord;

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
    /// Epoch milliseconds of the invocation the findings are about.
    pub timestamp_ms: u64,
    /// Whether this invocation ran out of memory; `None` when no source said anything about it.
    pub out_of_memory: Option<bool>,
    /// The leak verdict, once a full window has been judged.
    pub leak: Option<LeakFigures>,
    /// The smallest memory size with headroom, once a peak and a size are known.
    pub recommended_memory_mb: Option<u32>,
    /// Structured JSON lines for the function's log (leak suspected or withdrawn, out of
    /// memory, right-size).
    pub log_lines: Vec<String>,
}

/// The leak figures of one judged window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakFigures {
    /// A leak verdict stands for this environment.
    pub suspected: bool,
    /// Growth per invocation over the window, bytes: of the Python heap's live bytes when the
    /// records carry the native sampler's figures, else of the runtime's resident anonymous
    /// memory.
    pub growth_bytes_per_invoke: f64,
    /// While a leak stands: invocations until the memory size is reached at the current slope.
    pub invocations_to_out_of_memory: Option<f64>,
}

/// Which series a record feeds, and so which history it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Series {
    ResidentAnon,
    /// The sampler's estimate, within one sampler epoch.
    PythonHeap {
        epoch: Option<u64>,
    },
}

impl Series {
    /// The series of a record; `None` when it says nothing about it (a `heap` object that did
    /// not parse is a missing sample of the heap series, not a change of source).
    fn of(record: &DecoratorRecord, judge_python_heap: bool) -> Option<Series> {
        if !judge_python_heap {
            return Some(Series::ResidentAnon);
        }
        match &record.heap {
            Some(h) => Some(Series::PythonHeap { epoch: h.epoch }),
            None if record.heap_malformed => None,
            None => Some(Series::ResidentAnon),
        }
    }

    fn signal(self) -> Signal {
        match self {
            Series::ResidentAnon => Signal::ResidentAnon,
            Series::PythonHeap { .. } => Signal::PythonHeap,
        }
    }
}

/// Running state of the analysis for one execution environment.
#[derive(Debug)]
pub struct EnvironmentAnalysis {
    leak: LeakDetector,
    /// The series the current history judges (`None` before the first record).
    series: Option<Series>,
    /// Sites from traced invocations (the fallback ranking).
    sites: SiteGrowth,
    /// Sites from the native sampler's records (the ranking when they name any).
    heap_sites: HeapSiteGrowth,
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
    /// The platform's high-water mark after the last invocation that reported one.
    last_mark_mb: Option<f64>,
    /// The last invocation succeeded with the mark reaching the size (see `oom::touched_limit`).
    touched_limit: bool,
    previous: Option<ProfileSummary>,
    /// The invocation at which the standing leak verdict was raised.
    leak_raised_at: Option<u64>,
    leak_logged_at: Option<u64>,
    /// The last leak line named no site (no traced invocation yet): log again once one does.
    leak_logged_without_sites: bool,
    recommendation_logged: Option<(u32, u64)>,
    /// Whether the right-size rule runs (not for one process among several: its peak is not
    /// the environment's).
    right_size_on: bool,
}

impl EnvironmentAnalysis {
    /// A fresh analysis of one environment; `configured_memory_mb` is
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (`None` if unset), used until a report gives the size.
    pub fn new(
        leak: LeakConfig,
        rightsize: RightSizeConfig,
        configured_memory_mb: Option<u32>,
    ) -> Self {
        let window = leak.window;
        Self {
            leak: LeakDetector::new(leak),
            series: None,
            sites: SiteGrowth::default(),
            heap_sites: HeapSiteGrowth::new(window),
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
            last_mark_mb: None,
            touched_limit: false,
            previous: None,
            leak_raised_at: None,
            leak_logged_at: None,
            leak_logged_without_sites: false,
            recommendation_logged: None,
            right_size_on: true,
        }
    }

    /// The analysis of one runtime process among several (Lambda Managed Instances): leak and
    /// out-of-memory rules only.
    pub fn for_one_process(
        leak: LeakConfig,
        rightsize: RightSizeConfig,
        configured_memory_mb: Option<u32>,
    ) -> Self {
        Self {
            right_size_on: false,
            ..Self::new(leak, rightsize, configured_memory_mb)
        }
    }

    /// Feeds one completed profile; returns what it adds (figures to publish and log lines).
    pub fn observe(&mut self, p: &InvocationProfile, function_name: &str) -> Findings {
        let mut findings = Findings {
            timestamp_ms: p.timestamp_ms,
            ..Findings::default()
        };
        let record = p.decorator.as_deref();
        let report = p.report.as_ref();

        // A new runtime process (after a crash or OOM kill) starts a new memory history.
        if let Some(pid) = record.and_then(|d| d.pid) {
            if self.runtime_pid.is_some_and(|old| old != pid) {
                self.restart_history(self.leak.signal());
            }
            self.runtime_pid = Some(pid);
        }
        // So does a change of the judged series: the sampler appeared or went away, or it
        // restarted (a new epoch) — levels of two sources are never compared.
        let judge_heap = self.leak.config().judge_python_heap;
        if let Some(series) = record.and_then(|r| Series::of(r, judge_heap)) {
            if self.series != Some(series) {
                if self.series.is_some() || self.leak.signal() != series.signal() {
                    self.restart_history(series.signal());
                }
                self.series = Some(series);
            }
        }
        self.invocations += 1;
        self.first_ms.get_or_insert(p.timestamp_ms);
        self.last_ms = self.last_ms.max(p.timestamp_ms);
        if let Some(size) = report.and_then(|r| r.memory_size_mb) {
            self.memory_size_mb = Some(size as u32);
        }
        let summary = ProfileSummary::of(p);

        self.out_of_memory(p, function_name, &summary, &mut findings);
        self.leak_trend(p, function_name, &mut findings);
        if self.right_size_on {
            self.right_size(p, function_name, &mut findings);
        }
        if let Some(mark) = report.and_then(|r| r.max_memory_used_mb) {
            self.last_mark_mb = Some(mark);
        }
        self.previous = Some(summary);
        findings
    }

    /// Forgets the leak history (its series, sites and log state); judges `signal` from now on.
    fn restart_history(&mut self, signal: Signal) {
        self.leak.restart(signal);
        self.sites = SiteGrowth::default();
        self.heap_sites = HeapSiteGrowth::new(self.leak.config().window);
        self.leak_raised_at = None;
        self.leak_logged_at = None;
        self.leak_logged_without_sites = false;
    }

    /// Counted once: the invocation that ran out, never a later one because the mark stays high.
    fn out_of_memory(
        &mut self,
        p: &InvocationProfile,
        function_name: &str,
        summary: &ProfileSummary,
        findings: &mut Findings,
    ) {
        if p.report.is_none() && p.runtime_done.is_none() && p.decorator.is_none() {
            return;
        }
        let facts = oom::facts_of(p, self.last_mark_mb, self.touched_limit);
        let cause = oom::detect(&facts, oom::DEFAULT_NEAR_LIMIT);
        self.touched_limit = oom::touched_limit(&facts);
        findings.out_of_memory = Some(cause.is_some());
        let Some(cause) = cause else {
            return;
        };
        // Logged with the profile before it, which shows what led there.
        let line = OomLine {
            lmp: "out_of_memory",
            function_name,
            request_id: &p.request_id,
            cause: cause.as_str(),
            utilization: match cause {
                oom::OomCause::FailedAtLimit { utilization } => Some(utilization),
                _ => oom::utilization(&facts),
            },
            invocation: summary.clone(),
            previous: self.previous.as_ref(),
        };
        if let Ok(text) = serde_json::to_string(&line) {
            findings.log_lines.push(text);
        }
    }

    fn right_size(&mut self, p: &InvocationProfile, function_name: &str, findings: &mut Findings) {
        let record = p.decorator.as_deref();
        let report = p.report.as_ref();
        if let Some(used) = report.and_then(|r| r.max_memory_used_mb) {
            self.platform_peak_mb = Some(self.platform_peak_mb.map_or(used, |p| p.max(used)));
        }
        let rss_peak = record
            .and_then(|d| d.rss_peak_bytes)
            .or_else(|| p.runtime_proc.and_then(|m| m.hwm))
            .map(|b| b as f64 / MIB);
        if let Some(mb) = rss_peak {
            self.rss_peak_mb = Some(self.rss_peak_mb.map_or(mb, |p| p.max(mb)));
        }
        if let Some(billed) = report
            .and_then(|r| r.billed_duration_ms)
            .or_else(|| record.and_then(|d| d.duration_ms))
        {
            self.billed_ms_total += billed;
            self.billed_count += 1;
        }
        if let Some((recommended, line)) = self.recommendation(function_name) {
            findings.recommended_memory_mb = Some(recommended);
            findings.log_lines.extend(line);
        }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sources::intake::{DecoratorRecord, Heap, HeapSite, TopSite, Trace};
    use crate::sources::procfs::ProcMemory;
    use crate::sources::telemetry::Report;

    const KIB: u64 = 1024;

    /// Invocation `i` of a runtime that keeps `kept_per_invoke` bytes of anonymous memory each
    /// time; every tenth is traced and names its sites.
    pub(crate) fn profile(i: u64, pid: u32, kept_per_invoke: u64) -> InvocationProfile {
        let trace = i.is_multiple_of(10).then(|| Trace {
            retained_bytes: Some(kept_per_invoke + 64),
            retained_blocks: Some(2),
            top: vec![
                TopSite {
                    file: "app.py".into(),
                    line: 12,
                    size: kept_per_invoke,
                    count: 1,
                    via: Some("json/decoder.py:353".into()),
                },
                TopSite {
                    file: "lib.py".into(),
                    line: 3,
                    size: 64,
                    count: 1,
                    via: None,
                },
            ],
            ..Default::default()
        });
        let anon = 40_000 * KIB + i * kept_per_invoke;
        InvocationProfile {
            request_id: format!("r{i}"),
            timestamp_ms: 1_764_000_000_000 + i * 1000,
            report: Some(Report {
                request_id: format!("r{i}"),
                status: Some("success".into()),
                billed_duration_ms: Some(20.0),
                memory_size_mb: Some(1024.0),
                max_memory_used_mb: Some(200.0 + (i * kept_per_invoke) as f64 / MIB),
                ..Default::default()
            }),
            decorator: Some(Box::new(DecoratorRecord {
                request_id: format!("r{i}"),
                pid: Some(pid),
                heap_blocks: Some(50_000 + i),
                trace,
                ..Default::default()
            })),
            runtime_proc: Some(ProcMemory {
                rss: Some(anon + 20_000 * KIB),
                hwm: None,
                anon: Some(anon / 4096 * 4096),
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

    /// With `LMP_LEAK_SIGNAL=heap`: the sampler's estimate is judged when records carry it.
    fn heap_judging_analysis() -> EnvironmentAnalysis {
        EnvironmentAnalysis::new(
            LeakConfig {
                judge_python_heap: true,
                ..LeakConfig::default()
            },
            RightSizeConfig::default(),
            Some(1024),
        )
    }

    fn lines_of(all: &[String], kind: &str) -> Vec<serde_json::Value> {
        all.iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["lmp"] == kind)
            .collect()
    }

    #[test]
    fn a_leak_is_published_and_logged_with_its_site_and_time_to_oom() {
        let mut a = analysis();
        let mut lines = Vec::new();
        let mut last = Findings::default();
        // Warm-up (3), a full window (40), confirmation (5).
        for i in 0..50 {
            last = a.observe(&profile(i, 7, 10 * KIB), "fn");
            lines.extend(last.log_lines.clone());
        }
        let leak = last.leak.expect("judged");
        assert!(leak.suspected);
        let growth = leak.growth_bytes_per_invoke;
        assert!((growth - 10_240.0).abs() < 512.0, "growth {growth}");
        let leaks = lines_of(&lines, "leak_suspected");
        assert_eq!(leaks.len(), 1, "logged once per window: {lines:?}");
        assert_eq!(leaks[0]["growing_sites"][0]["site"], "app.py:12");
        assert_eq!(leaks[0]["growing_sites"][0]["via"], "json/decoder.py:353");
        assert_eq!(leaks[0]["heap_blocks_per_invoke"], 1.0);
        // 1024 MB size, ~200.5 MB used, 10 KiB per invocation, one invocation per second.
        let used = 200.0 * MIB + 49.0 * 10_240.0;
        let expected = (1024.0 * MIB - used) / growth;
        let to_oom = leak.invocations_to_out_of_memory.unwrap();
        assert!((to_oom - expected).abs() <= 1.0, "{to_oom} vs {expected}");
        let hours = leaks[0]["hours_to_out_of_memory"].as_f64().unwrap();
        let logged = leaks[0]["invocations_to_out_of_memory"].as_f64().unwrap();
        assert!((hours - logged / 3600.0).abs() < 0.01, "{hours} h");
    }

    #[test]
    fn a_leak_line_without_sites_is_followed_by_one_when_sites_are_known() {
        let mut a = analysis();
        let mut lines = Vec::new();
        for i in 0..60 {
            let mut p = profile(i, 7, 10 * KIB);
            if i != 50 {
                if let Some(d) = p.decorator.as_mut() {
                    d.trace = None; // no traced invocation but the 50th
                }
            }
            lines.extend(a.observe(&p, "fn").log_lines);
        }
        let leaks = lines_of(&lines, "leak_suspected");
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert_eq!(leaks[0]["growing_sites"].as_array().map(Vec::len), Some(0));
        assert_eq!(leaks[1]["invocations"], 51);
        assert_eq!(leaks[1]["growing_sites"][0]["site"], "app.py:12");
    }

    #[test]
    fn a_flat_process_is_published_as_no_leak_once_a_window_is_full() {
        let mut a = analysis();
        for i in 0..50 {
            let f = a.observe(&profile(i, 7, 0), "fn");
            assert!(lines_of(&f.log_lines, "leak_suspected").is_empty());
            // Nothing is published before a window is full (warm-up 3 + 30 spanned).
            if i < 32 {
                assert_eq!(f.leak, None, "invocation {i}");
            }
            if i == 49 {
                let leak = f.leak.expect("judged");
                assert!(!leak.suspected);
                assert_eq!(leak.growth_bytes_per_invoke, 0.0);
                assert_eq!(leak.invocations_to_out_of_memory, None);
            }
        }
    }

    #[test]
    fn a_withdrawn_verdict_is_logged_once() {
        let mut a = analysis();
        let mut lines = Vec::new();
        let mut last = Findings::default();
        for i in 0..200 {
            // A cache that grows 16 KiB per invocation for 80 invocations, then stays full.
            let mut p = profile(i, 7, 16 * KIB);
            if let Some(m) = p.runtime_proc.as_mut() {
                m.anon = Some((40_000 + 16 * i.min(80)) * KIB);
            }
            last = a.observe(&p, "fn");
            lines.extend(last.log_lines.clone());
        }
        assert_eq!(
            lines_of(&lines, "leak_suspected").len(),
            2,
            "raised, relogged once"
        );
        let withdrawn = lines_of(&lines, "leak_withdrawn");
        assert_eq!(withdrawn.len(), 1, "{lines:?}");
        assert!(withdrawn[0]["invocations"].as_u64().unwrap() < 80 + 40);
        assert!(!last.leak.unwrap().suspected);
    }

    #[test]
    fn a_new_runtime_process_starts_a_new_history() {
        let mut a = analysis();
        for i in 0..50 {
            a.observe(&profile(i, 7, 10 * KIB), "fn");
        }
        let after_crash = a.observe(&profile(50, 8, 10 * KIB), "fn");
        assert_eq!(after_crash.leak, None, "not enough data again");
    }

    fn with_report(
        mut p: InvocationProfile,
        status: &str,
        error: Option<&str>,
        mark: f64,
    ) -> InvocationProfile {
        if let Some(r) = p.report.as_mut() {
            r.status = Some(status.into());
            r.error_type = error.map(str::to_owned);
            r.max_memory_used_mb = Some(mark);
        }
        p
    }

    #[test]
    fn out_of_memory_is_logged_with_the_profile_before_it() {
        let mut a = analysis();
        a.observe(&profile(0, 7, 0), "fn");
        let oom = with_report(
            profile(1, 7, 0),
            "error",
            Some("Runtime.OutOfMemory"),
            1024.0,
        );
        let f = a.observe(&oom, "fn");
        assert_eq!(f.out_of_memory, Some(true));
        let logged = lines_of(&f.log_lines, "out_of_memory");
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0]["cause"], "Runtime.OutOfMemory");
        assert_eq!(logged[0]["previous"]["request_id"], "r0");
        assert_eq!(logged[0]["invocation"]["request_id"], "r1");
    }

    #[test]
    fn the_failure_that_reaches_the_limit_counts_one_out_of_memory() {
        let mut a = analysis();
        let mut count = 0;
        for i in 0..30 {
            // A success touches the limit (its rounded mark reads the size) at 10; the kill
            // follows at 11; then healthy invocations, and one business error at 20.
            let mark = if i < 10 { 500.0 } else { 1024.0 };
            let (status, error) = match i {
                11 => ("error", Some("Runtime.OutOfMemory")),
                20 => ("error", None),
                _ => ("success", None),
            };
            let f = a.observe(&with_report(profile(i, 7, 0), status, error, mark), "fn");
            count += u32::from(f.out_of_memory == Some(true));
            assert_eq!(f.out_of_memory == Some(true), i == 11, "invocation {i}");
        }
        assert_eq!(count, 1);
    }

    #[test]
    fn a_kill_reported_as_exit_error_right_after_a_touch_is_the_out_of_memory() {
        let mut a = analysis();
        let mut counted = Vec::new();
        for i in 0..20 {
            let mark = if i < 10 { 500.0 } else { 1024.0 };
            let (status, error) = match i {
                11 => ("error", Some("Runtime.ExitError")),
                15 => ("error", Some("Runtime.ExitError")),
                _ => ("success", None),
            };
            let f = a.observe(&with_report(profile(i, 7, 0), status, error, mark), "fn");
            if f.out_of_memory == Some(true) {
                counted.push(i);
            }
        }
        // 10 touched the limit and succeeded; 11 is its kill. 15 is an error later on, with
        // the mark still at the size: not an out-of-memory.
        assert_eq!(counted, vec![11]);
    }

    #[test]
    fn right_size_is_published_every_time_and_logged_when_it_moves() {
        let mut a = analysis();
        let first = a.observe(&profile(0, 7, 0), "fn");
        assert_eq!(first.recommended_memory_mb, Some(260));
        let logged = lines_of(&first.log_lines, "right_size");
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0]["recommended_mb"], 260);
        assert!(logged[0]["cpu_note"].as_str().unwrap().contains("CPU"));
        let second = a.observe(&profile(1, 7, 0), "fn");
        assert_eq!(second.recommended_memory_mb, Some(260));
        assert!(lines_of(&second.log_lines, "right_size").is_empty());
        let bigger = with_report(profile(2, 7, 0), "success", None, 400.0);
        let third = a.observe(&bigger, "fn");
        assert_eq!(
            lines_of(&third.log_lines, "right_size")[0]["recommended_mb"],
            520
        );
    }

    #[test]
    fn python_memory_error_counts_as_out_of_memory() {
        let mut a = analysis();
        let mut p = profile(0, 7, 0);
        p.report = None;
        if let Some(d) = p.decorator.as_mut() {
            d.error_type = Some("MemoryError".into());
        }
        let f = a.observe(&p, "fn");
        assert_eq!(f.out_of_memory, Some(true));
        assert_eq!(
            lines_of(&f.log_lines, "out_of_memory")[0]["cause"],
            "MemoryError"
        );
    }

    /// Invocation `i` of a runtime whose records carry the sampler's `heap`: `live` bytes,
    /// `epoch`, a site that grew by `delta` and one that churned; `anon` for the resident memory.
    fn heap_profile(i: u64, anon: u64, live: u64, epoch: u64, delta: i64) -> InvocationProfile {
        let mut p = profile(i, 7, 0);
        if let Some(d) = p.decorator.as_mut() {
            d.anon_bytes = Some(anon);
            d.trace = None;
            d.heap = Some(Heap {
                live_bytes: Some(live),
                allocated_bytes: Some(1 << 20),
                sample_bytes: Some(16_384),
                epoch: Some(epoch),
                sites: vec![
                    HeapSite {
                        file: "app.py".into(),
                        line: 42,
                        via: Some("json/decoder.py:353".into()),
                        delta_bytes: delta,
                        live_bytes: Some(i * 10 * KIB),
                        ..Default::default()
                    },
                    HeapSite {
                        file: "cache.py".into(),
                        line: 9,
                        delta_bytes: if i.is_multiple_of(2) { 65_536 } else { -65_536 },
                        ..Default::default()
                    },
                ],
                ..Default::default()
            });
        }
        p
    }

    #[test]
    fn by_default_resident_memory_is_judged_even_when_records_carry_the_heap() {
        // Resident memory rising 16 KiB per invocation, live heap flat: the default signal
        // (resident) calls it; the growing sites still come from the heap's net deltas.
        let mut a = analysis();
        let mut last = Findings::default();
        for i in 0..120 {
            let p = heap_profile(i, 40_000 * KIB + i * 16 * KIB, 30_000 * KIB, 1, 0);
            last = a.observe(&p, "fn");
        }
        let leak = last.leak.expect("judged");
        assert!(leak.suspected, "{leak:?}");
        assert!(
            (leak.growth_bytes_per_invoke - 16_384.0).abs() < 1024.0,
            "{leak:?}"
        );
    }

    #[test]
    fn the_heap_series_is_judged_when_records_carry_it() {
        // Resident memory rising 16 KiB per invocation (fragmentation), live heap flat.
        let mut a = heap_judging_analysis();
        let mut lines = Vec::new();
        let mut last = Findings::default();
        for i in 0..120 {
            let p = heap_profile(i, 40_000 * KIB + i * 16 * KIB, 30_000 * KIB, 1, 0);
            last = a.observe(&p, "fn");
            lines.extend(last.log_lines.clone());
        }
        let leak = last.leak.expect("judged");
        assert!(!leak.suspected);
        assert!(leak.growth_bytes_per_invoke.abs() < 1.0, "{leak:?}");
        assert!(lines_of(&lines, "leak_suspected").is_empty());
        // The live heap growing 10 KiB per invocation (a sample of 16 KiB every 1.6), resident
        // memory flat: a leak, its sites ranked by net growth.
        let mut a = heap_judging_analysis();
        let mut lines = Vec::new();
        for i in 0..80 {
            let samples = i * 10 / 16;
            let grew = samples - (i.max(1) - 1) * 10 / 16;
            let p = heap_profile(
                i,
                40_000 * KIB,
                30_000 * KIB + samples * 16 * KIB,
                1,
                (grew * 16 * KIB) as i64,
            );
            last = a.observe(&p, "fn");
            lines.extend(last.log_lines.clone());
        }
        let leak = last.leak.expect("judged");
        assert!(leak.suspected);
        let growth = leak.growth_bytes_per_invoke;
        assert!((growth - 10_240.0).abs() < 1024.0, "growth {growth}");
        let leaks = lines_of(&lines, "leak_suspected");
        assert!(!leaks.is_empty());
        assert_eq!(
            leaks[0]["signal"],
            "Python heap live bytes (native sampler estimate)"
        );
        let sites = leaks[0]["growing_sites"].as_array().unwrap();
        assert_eq!(sites[0]["site"], "app.py:42");
        // The churning cache nets one sample at most over the window.
        assert!(
            sites[1..]
                .iter()
                .all(|s| s["bytes_per_traced_invoke"].as_f64().unwrap() < 2048.0),
            "{sites:?}"
        );
        assert_eq!(sites[0]["via"], "json/decoder.py:353");
        let per_invoke = sites[0]["bytes_per_traced_invoke"].as_f64().unwrap();
        assert!((per_invoke - 10_240.0).abs() < 1024.0, "{per_invoke}");
    }

    #[test]
    fn traced_sites_are_the_fallback_when_the_sampler_names_none() {
        let mut a = analysis();
        let mut lines = Vec::new();
        for i in 0..60 {
            let mut p = profile(i, 7, 10 * KIB);
            if let Some(d) = p.decorator.as_mut() {
                d.heap = Some(Heap {
                    live_bytes: Some(30_000 * KIB + i * 10 * KIB),
                    epoch: Some(1),
                    ..Default::default()
                });
            }
            lines.extend(a.observe(&p, "fn").log_lines);
        }
        let leaks = lines_of(&lines, "leak_suspected");
        assert!(!leaks.is_empty());
        let last = leaks.last().unwrap();
        assert_eq!(last["growing_sites"][0]["site"], "app.py:12", "{last}");
    }

    #[test]
    fn a_change_of_source_or_epoch_starts_a_new_history() {
        let leaking = |i: u64, epoch: u64| {
            heap_profile(i, 40_000 * KIB, 30_000 * KIB + i * 32 * KIB, epoch, 32_768)
        };
        let judged = |a: &mut EnvironmentAnalysis,
                      from: u64,
                      to: u64,
                      make: &dyn Fn(u64) -> InvocationProfile| {
            let mut last = None;
            for i in from..to {
                last = a.observe(&make(i), "fn").leak;
            }
            last
        };
        // The sampler appears in a process judged on resident memory: a new history.
        let mut a = heap_judging_analysis();
        assert!(judged(&mut a, 0, 50, &|i| profile(i, 7, 10 * KIB)).is_some_and(|l| l.suspected));
        assert_eq!(a.observe(&leaking(50, 1), "fn").leak, None, "heap appeared");
        assert!(judged(&mut a, 51, 100, &|i| leaking(i, 1)).is_some_and(|l| l.suspected));
        // It restarted (a new epoch): the levels are not comparable.
        assert_eq!(
            a.observe(&leaking(100, 2), "fn").leak,
            None,
            "epoch changed"
        );
        assert!(judged(&mut a, 101, 150, &|i| leaking(i, 2)).is_some_and(|l| l.suspected));
        // A heap object that did not parse is a missing sample, not a change of source.
        let mut malformed = leaking(150, 2);
        if let Some(d) = malformed.decorator.as_mut() {
            d.heap = None;
            d.heap_malformed = true;
        }
        assert!(a
            .observe(&malformed, "fn")
            .leak
            .is_some_and(|l| l.suspected));
        assert!(a
            .observe(&leaking(151, 2), "fn")
            .leak
            .is_some_and(|l| l.suspected));
        // A record without it (the sampler stopped): resident memory again, a new history.
        assert_eq!(
            a.observe(&profile(152, 7, 10 * KIB), "fn").leak,
            None,
            "heap gone"
        );
        // A new process, same epoch number: a new history too.
        assert!(judged(&mut a, 153, 200, &|i| leaking(i, 2)).is_some_and(|l| l.suspected));
        let mut other_pid = leaking(200, 2);
        if let Some(d) = other_pid.decorator.as_mut() {
            d.pid = Some(8);
        }
        assert_eq!(a.observe(&other_pid, "fn").leak, None, "pid changed");
    }
}
