//! Lambda Managed Instances: the Python runtime runs one process per concurrent request, each
//! with its own heap, so each has its own memory history and leak verdict. One
//! [`EnvironmentAnalysis`] per runtime process, keyed by pid; the environment-level verdict is
//! "some process leaks".
//!
//! Still pure: profiles in, findings out. A process that stops sending records (it exited, or
//! the table is full of newer ones) is forgotten, least recently seen first.

use std::collections::BTreeMap;

use super::environment::{EnvironmentAnalysis, Findings};
use super::leak::LeakConfig;
use super::rightsize::RightSizeConfig;
use crate::invocation::InvocationProfile;

/// Runtime processes tracked at once (Lambda's default is 16 per vCPU; beyond this, the least
/// recently seen is forgotten).
pub const MAX_PROCESSES: usize = 256;

struct Process {
    analysis: EnvironmentAnalysis,
    /// The standing verdict of this process's own history.
    suspected: bool,
    /// `seq` of its latest profile (for eviction).
    last_seen: u64,
}

/// The analyses of every runtime process of one environment.
pub struct ProcessAnalyses {
    by_pid: BTreeMap<u32, Process>,
    /// Profiles that name no process (no decorator record: an invocation killed before it
    /// could send one, an undecorated worker): the platform's figures alone, for the
    /// out-of-memory rule.
    unnamed: EnvironmentAnalysis,
    leak: LeakConfig,
    rightsize: RightSizeConfig,
    configured_memory_mb: Option<u32>,
    seq: u64,
}

impl ProcessAnalyses {
    /// No process seen yet; `configured_memory_mb` is the environment's memory size.
    pub fn new(
        leak: LeakConfig,
        rightsize: RightSizeConfig,
        configured_memory_mb: Option<u32>,
    ) -> Self {
        Self {
            by_pid: BTreeMap::new(),
            unnamed: EnvironmentAnalysis::for_one_process(
                leak.clone(),
                rightsize.clone(),
                configured_memory_mb,
            ),
            leak,
            rightsize,
            configured_memory_mb,
            seq: 0,
        }
    }

    /// Feeds one completed profile to its process's history. A profile without a decorator
    /// record names no process: it only goes through the out-of-memory rule (the platform's
    /// records alone say nothing about one process's memory). Log lines carry the process's
    /// pid and memory; the published `LeakSuspected` is 1 while any process's verdict stands.
    pub fn observe(&mut self, p: &InvocationProfile, function_name: &str) -> Findings {
        let Some(pid) = p.decorator.as_deref().and_then(|d| d.pid) else {
            let mut findings = self.unnamed.observe(p, function_name);
            findings.leak = None;
            return findings;
        };
        self.seq += 1;
        if !self.by_pid.contains_key(&pid) && self.by_pid.len() >= MAX_PROCESSES {
            self.forget_least_recent();
        }
        let (leak, rightsize, size) = (&self.leak, &self.rightsize, self.configured_memory_mb);
        let process = self.by_pid.entry(pid).or_insert_with(|| Process {
            analysis: EnvironmentAnalysis::for_one_process(leak.clone(), rightsize.clone(), size),
            suspected: false,
            last_seen: 0,
        });
        process.last_seen = self.seq;
        let mut findings = process.analysis.observe(p, function_name);
        if let Some(leak) = &findings.leak {
            process.suspected = leak.suspected;
        }
        let memory = ProcessMemory {
            rss: p.runtime_proc.and_then(|m| m.rss),
            anon: p
                .decorator
                .as_deref()
                .and_then(|d| d.anon_bytes)
                .or_else(|| p.runtime_proc.and_then(|m| m.anon)),
        };
        findings.log_lines = findings
            .log_lines
            .into_iter()
            .map(|line| tagged(&line, pid, memory))
            .collect();
        let any = self.suspected_pids().next().is_some();
        if let Some(leak) = findings.leak.as_mut() {
            leak.suspected = any;
        }
        findings
    }

    /// The processes whose own leak verdict stands, in pid order.
    pub fn suspected_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_pid
            .iter()
            .filter(|(_, p)| p.suspected)
            .map(|(pid, _)| *pid)
    }

    /// Runtime processes with a history.
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    fn forget_least_recent(&mut self) {
        if let Some(pid) = self
            .by_pid
            .iter()
            .min_by_key(|(_, p)| p.last_seen)
            .map(|(pid, _)| *pid)
        {
            self.by_pid.remove(&pid);
        }
    }
}

/// One process's memory at the invocation's end, as its log lines show it.
#[derive(Debug, Clone, Copy, Default)]
struct ProcessMemory {
    /// Resident set size, when the extension read the process's `/proc` for this invocation.
    rss: Option<u64>,
    /// Resident anonymous memory (the leak signal), from the record or `/proc`.
    anon: Option<u64>,
}

/// A log line of one process's analysis with `pid` (and its memory) in front. The lines are
/// JSON objects serialized by the analysis, so they start with `{`.
fn tagged(line: &str, pid: u32, memory: ProcessMemory) -> String {
    let Some(rest) = line.strip_prefix('{') else {
        return line.to_string();
    };
    let mut head = format!(r#"{{"pid":{pid}"#);
    if let Some(b) = memory.rss {
        head.push_str(&format!(r#","process_rss_bytes":{b}"#));
    }
    if let Some(b) = memory.anon {
        head.push_str(&format!(r#","process_anon_bytes":{b}"#));
    }
    if rest.starts_with('}') {
        format!("{head}{rest}")
    } else {
        format!("{head},{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Invocation `i` of process `pid`, which keeps `kept` bytes of anonymous memory per call.
    use crate::analysis::environment::tests::profile;

    const KIB: u64 = 1024;

    fn analyses() -> ProcessAnalyses {
        ProcessAnalyses::new(
            LeakConfig::default(),
            RightSizeConfig::default(),
            Some(2048),
        )
    }

    /// Four processes served round-robin, the third leaking 64 KiB per call.
    fn run(a: &mut ProcessAnalyses, rounds: u64) -> Vec<Findings> {
        let mut out = Vec::new();
        for i in 0..rounds {
            for pid in [101, 102, 103, 104] {
                let kept = if pid == 103 { 64 * KIB } else { 0 };
                out.push(a.observe(&profile(i, pid, kept), "fn"));
            }
        }
        out
    }

    #[test]
    fn only_the_leaking_process_is_flagged_and_the_environment_says_so() {
        let mut a = analyses();
        let findings = run(&mut a, 120);
        assert_eq!(a.len(), 4);
        assert_eq!(a.suspected_pids().collect::<Vec<_>>(), vec![103]);
        let leak_lines: Vec<serde_json::Value> = findings
            .iter()
            .flat_map(|f| &f.log_lines)
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v["lmp"] == "leak_suspected")
            .collect();
        assert!(!leak_lines.is_empty());
        assert!(leak_lines.iter().all(|l| l["pid"] == 103), "{leak_lines:?}");
        assert!(leak_lines[0]["process_rss_bytes"].as_u64().unwrap_or(0) > 40_000 * KIB);
        assert!(leak_lines[0]["process_anon_bytes"].as_u64().unwrap_or(0) > 40_000 * KIB);
        // Once the verdict stands, every process's published verdict is the environment's.
        let last = findings.last().and_then(|f| f.leak).expect("judged");
        assert!(last.suspected);
        assert!(
            last.growth_bytes_per_invoke.abs() < 4.0 * KIB as f64,
            "pid 104's own slope"
        );
    }

    #[test]
    fn no_process_leaking_means_no_verdict_and_no_right_size() {
        let mut a = analyses();
        let mut findings = Vec::new();
        for i in 0..150 {
            for pid in [7, 8] {
                findings.push(a.observe(&profile(i, pid, 0), "fn"));
            }
        }
        assert_eq!(a.suspected_pids().count(), 0);
        assert!(findings.iter().all(|f| f.leak.is_none_or(|l| !l.suspected)));
        assert!(findings.iter().all(|f| f.recommended_memory_mb.is_none()));
    }

    #[test]
    fn a_profile_without_a_record_names_no_process_but_can_be_out_of_memory() {
        let mut a = analyses();
        let mut p = profile(1, 5, 0);
        p.decorator = None;
        let f = a.observe(&p, "fn");
        assert!(a.is_empty());
        assert_eq!(f.leak, None);
        assert_eq!(f.out_of_memory, Some(false));
        assert!(f.log_lines.is_empty());
        // A worker killed at the limit sends no record; the platform says what happened.
        let mut killed = profile(2, 5, 0);
        killed.decorator = None;
        if let Some(r) = killed.report.as_mut() {
            r.status = Some("error".into());
            r.error_type = Some("Runtime.OutOfMemory".into());
        }
        let f = a.observe(&killed, "fn");
        assert_eq!(f.out_of_memory, Some(true));
        assert!(
            f.log_lines.iter().any(|l| l.contains("out_of_memory")),
            "{f:?}"
        );
        assert!(a.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recently_seen() {
        let mut a = analyses();
        for pid in 0..(MAX_PROCESSES as u32 + 10) {
            a.observe(&profile(1, pid, 0), "fn");
        }
        assert_eq!(a.len(), MAX_PROCESSES);
        assert!(!a.by_pid.contains_key(&0));
        assert!(a.by_pid.contains_key(&(MAX_PROCESSES as u32 + 9)));
    }

    #[test]
    fn lines_get_the_pid_in_front() {
        let both = ProcessMemory {
            rss: Some(4),
            anon: Some(3),
        };
        assert_eq!(
            tagged(r#"{"lmp":"x"}"#, 9, both),
            r#"{"pid":9,"process_rss_bytes":4,"process_anon_bytes":3,"lmp":"x"}"#
        );
        assert_eq!(tagged("{}", 9, ProcessMemory::default()), r#"{"pid":9}"#);
        assert_eq!(tagged("not json", 9, both), "not json");
    }
}
