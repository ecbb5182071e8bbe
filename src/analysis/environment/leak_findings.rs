//! The leak part of the environment's analysis: the judged series and the growing-site tables
//! fed from each profile, the verdict turned into figures and log lines (raised, withdrawn, once
//! per window), and the time to out of memory at the observed growth.

use super::{EnvironmentAnalysis, Findings, LeakFigures, LEAK_SITES, MIB};
use crate::analysis::leak::{LeakObservation, LeakReport, Signal, Transition, Verdict};
use crate::analysis::lines::{LeakLine, WithdrawnLine};
use crate::analysis::sites::{GrowingSite, HeapSiteSample, SiteSample};
use crate::invocation::InvocationProfile;
use crate::sources::intake::DecoratorRecord;

impl EnvironmentAnalysis {
    /// The growing sites: the sampler's net growth when its records name sites, else the traced
    /// invocations' weighted retention.
    pub(super) fn growing_sites(&self, n: usize) -> Vec<GrowingSite> {
        if self.heap_sites.has_sites() {
            self.heap_sites.top(n)
        } else {
            self.sites.top(n)
        }
    }

    /// The leak rule over this profile: its level and sites observed, the verdict published,
    /// raised and withdrawn verdicts logged.
    pub(super) fn leak_trend(
        &mut self,
        p: &InvocationProfile,
        function_name: &str,
        findings: &mut Findings,
    ) {
        let record = p.decorator.as_deref();
        let level = match self.leak.signal() {
            // The sampler's estimate; a record without it (lost, malformed) is a missing sample.
            Signal::PythonHeap => record.and_then(|d| d.heap.as_ref()?.live_bytes),
            // The sender's own reading, at the handler's end, is taken at the same point of
            // every invocation; the extension's, when the record arrives, as a fallback.
            Signal::ResidentAnon => record
                .and_then(|d| d.anon_bytes)
                .or_else(|| p.runtime_proc.and_then(|m| m.anon)),
        };
        let transition = self.leak.observe(LeakObservation {
            bytes: level.map(|b| b as f64),
            heap_blocks: record.and_then(|d| d.heap_blocks).map(|b| b as f64),
            traced: record.is_some_and(|d| d.trace.is_some()),
        });
        self.observe_sites(record);

        let report = self.leak.assess();
        let Some(growth) = report.growth_bytes_per_invoke else {
            return;
        };
        let suspected = report.verdict == Verdict::Leak;
        let to_oom = suspected
            .then(|| self.invocations_to_oom(p, growth))
            .flatten();
        findings.leak = Some(LeakFigures {
            suspected,
            growth_bytes_per_invoke: growth,
            invocations_to_out_of_memory: to_oom,
        });
        match transition {
            Transition::Raised => self.leak_raised_at = Some(self.invocations),
            Transition::Withdrawn => {
                let line = WithdrawnLine {
                    lmp: "leak_withdrawn",
                    function_name,
                    request_id: &p.request_id,
                    invocations: self.invocations,
                    raised_at_invocation: self.leak_raised_at.unwrap_or(0),
                    heap_growth_bytes_per_invoke: growth,
                };
                if let Ok(text) = serde_json::to_string(&line) {
                    findings.log_lines.push(text);
                }
                self.leak_raised_at = None;
                self.leak_logged_at = None;
                self.leak_logged_without_sites = false;
            }
            Transition::Unchanged => {}
        }
        if suspected {
            // Logged when raised, then once per window, so the log keeps the current sites,
            // and as soon as a traced invocation names sites the last line did not have.
            let window = self.leak.config().window.max(1) as u64;
            let sites_now = self.leak_logged_without_sites && !self.growing_sites(1).is_empty();
            let due = sites_now
                || self
                    .leak_logged_at
                    .is_none_or(|at| self.invocations >= at + window);
            if due {
                self.leak_logged_at = Some(self.invocations);
                self.leak_logged_without_sites = self.growing_sites(1).is_empty();
                findings
                    .log_lines
                    .extend(self.leak_line(p, function_name, &report, to_oom));
            }
        }
    }

    fn leak_line(
        &self,
        p: &InvocationProfile,
        function_name: &str,
        report: &LeakReport,
        to_oom: Option<f64>,
    ) -> Option<String> {
        let line = LeakLine {
            lmp: "leak_suspected",
            function_name,
            request_id: &p.request_id,
            invocations: self.invocations,
            since_invocation: self.leak_raised_at.unwrap_or(self.invocations),
            signal: report.signal.describe(),
            heap_growth_bytes_per_invoke: report.memory.slope,
            p_value: report.memory.p_value,
            heap_blocks_per_invoke: self.leak.heap_blocks_per_invoke(),
            invocations_to_out_of_memory: to_oom,
            hours_to_out_of_memory: to_oom.and_then(|n| self.hours_for(n)),
            growing_sites: self.growing_sites(LEAK_SITES),
        };
        serde_json::to_string(&line).ok()
    }

    /// Invocations until the memory size is reached at `growth` bytes per invocation, from the
    /// environment's memory now (the platform's mark, which a leak keeps at the current level;
    /// the runtime's RSS without telemetry).
    fn invocations_to_oom(&self, p: &InvocationProfile, growth: f64) -> Option<f64> {
        if growth <= 0.0 {
            return None;
        }
        let size = f64::from(self.memory_size_mb.or(self.configured_memory_mb)?) * MIB;
        let used = p
            .report
            .as_ref()
            .and_then(|r| r.max_memory_used_mb)
            .or(self.last_mark_mb)
            .map(|mb| mb * MIB)
            .or_else(|| p.runtime_proc.and_then(|m| m.rss).map(|b| b as f64))?;
        Some(((size - used) / growth).max(0.0).floor())
    }

    /// Hours that `invocations` take at this environment's observed rate.
    fn hours_for(&self, invocations: f64) -> Option<f64> {
        let elapsed_ms = self.last_ms.saturating_sub(self.first_ms?) as f64;
        if elapsed_ms <= 0.0 || self.invocations < 2 {
            return None;
        }
        let per_hour = (self.invocations - 1) as f64 / (elapsed_ms / 3_600_000.0);
        Some(invocations / per_hour)
    }

    /// Feeds the growing-site tables: the sampler's per-site changes, and the traced
    /// invocation's retained sites.
    fn observe_sites(&mut self, record: Option<&DecoratorRecord>) {
        // The sampler's sites: each names its change since the previous record.
        if let Some(heap) = record.and_then(|d| d.heap.as_ref()) {
            let keys: Vec<(String, Option<&str>, i64, Option<u64>)> = heap
                .sites
                .iter()
                .map(|s| {
                    let site = format!("{}:{}", s.file, s.line);
                    (site, s.via.as_deref(), s.delta_bytes, s.live_bytes)
                })
                .collect();
            self.heap_sites.observe(
                self.invocations,
                keys.iter()
                    .map(|(site, via, delta_bytes, live_bytes)| HeapSiteSample {
                        site,
                        via: *via,
                        delta_bytes: *delta_bytes,
                        live_bytes: *live_bytes,
                    }),
            );
        }
        // Sites: what this traced invocation held, weighted by what the process really keeps
        // per invocation now (the window's growth; all of it before a window is judged). Not
        // this invocation's own change: tracing itself moves the memory of the invocation it
        // traces (its tables, and the free pages returned after it).
        if let Some(trace) = record.and_then(|d| d.trace.as_ref()) {
            let held = trace.retained_bytes.unwrap_or(0);
            let share = match self.leak.assess().growth_bytes_per_invoke {
                Some(growth) if held > 0 => growth / held as f64,
                Some(_) => 0.0,
                None => 1.0,
            };
            let keys: Vec<(String, Option<&str>, u64)> = trace
                .top
                .iter()
                .map(|s| (format!("{}:{}", s.file, s.line), s.via.as_deref(), s.size))
                .collect();
            self.sites.observe(
                keys.iter().map(|(site, via, bytes)| SiteSample {
                    site,
                    via: *via,
                    bytes: *bytes,
                }),
                share,
            );
        }
    }
}
