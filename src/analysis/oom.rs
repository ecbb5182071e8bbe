//! Out-of-memory detection: which invocation ran out of memory, counted once.
//!
//! Lambda says `Runtime.OutOfMemory` when it notices, and Python says `MemoryError`. Beyond those,
//! the platform's `maxMemoryUsedMB` is the environment's high-water mark: it never comes down, so
//! "the mark is at the limit" is true of every invocation after the one that got there. Only a
//! failed invocation (error, failure, timeout) during which the mark *reached* the limit counts,
//! or one whose own peak was at the limit (the decorator's per-invocation RSS peak, or the mark
//! rising to the limit during it) — an ordinary error in an environment whose mark is high is
//! not an out-of-memory. A successful invocation never is: the mark is rounded up to whole MB, so
//! a success at 255.2 MB of 256 reads "256", and the kill that follows is the out-of-memory
//! (counting both would count one kill twice). Near the limit is the utilization's business.

use crate::invocation::InvocationProfile;

const MIB: f64 = 1024.0 * 1024.0;

/// What is known about one invocation's memory and outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OomFacts<'a> {
    /// `success`, `failure`, `error` or `timeout` (`platform.report` / `runtimeDone`).
    pub status: Option<&'a str>,
    /// The platform's error type, e.g. `Runtime.OutOfMemory`.
    pub error_type: Option<&'a str>,
    /// The environment's memory high-water mark after the invocation.
    pub max_memory_used_mb: Option<f64>,
    /// The mark after the last invocation that reported one; `None` for the first.
    pub previous_mark_mb: Option<f64>,
    /// Configured memory size (`platform.report` `memorySizeMB`); `None` without a report.
    pub memory_size_mb: Option<f64>,
    /// The runtime process's own peak RSS during this invocation (the decorator's figure).
    pub own_peak_mb: Option<f64>,
    /// The handler raised Python's `MemoryError`.
    pub python_memory_error: bool,
    /// The invocation just before this one succeeded with the mark reaching the size (so it was
    /// not counted): a failure now, with the mark still there, is the kill that touch led to.
    pub previous_touched_limit: bool,
}

/// Why an invocation is counted as out of memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OomCause {
    /// The platform reported `Runtime.OutOfMemory`.
    ReportedOutOfMemory,
    /// It failed, and the environment's memory high-water mark reached the configured size
    /// during it.
    ReachedMemoryLimit,
    /// The invocation timed out or failed with its own peak at the limit.
    FailedAtLimit {
        /// The invocation's own peak as a fraction of the memory size (at least `near_limit`).
        utilization: f64,
    },
    /// The handler raised Python's `MemoryError` (an allocation failed inside the runtime).
    PythonMemoryError,
}

impl OomCause {
    /// The cause as the log line and the report name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ReportedOutOfMemory => "Runtime.OutOfMemory",
            Self::ReachedMemoryLimit => "max_memory_used_reached_memory_size",
            Self::FailedAtLimit { .. } => "failed_at_memory_limit",
            Self::PythonMemoryError => "MemoryError",
        }
    }
}

/// Share of the memory size (0..1) at or above which a failed invocation's own peak counts as
/// "at the limit". Lambda has no swap: a function thrashing at its limit sits within a few MB of
/// it, while a business error at 95% of the size is just an error.
pub const DEFAULT_NEAR_LIMIT: f64 = 0.98;

/// Memory utilization as a fraction of the size, when both figures are known.
pub fn utilization(facts: &OomFacts<'_>) -> Option<f64> {
    match (facts.max_memory_used_mb, facts.memory_size_mb) {
        (Some(used), Some(size)) if size > 0.0 && used.is_finite() => Some(used / size),
        _ => None,
    }
}

/// The reason this invocation ran out of memory, or `None` when it did not.
pub fn detect(facts: &OomFacts<'_>, near_limit: f64) -> Option<OomCause> {
    if facts
        .error_type
        .is_some_and(|e| e.eq_ignore_ascii_case("Runtime.OutOfMemory"))
    {
        return Some(OomCause::ReportedOutOfMemory);
    }
    if facts.python_memory_error {
        return Some(OomCause::PythonMemoryError);
    }
    let failed = facts
        .status
        .is_some_and(|s| !s.eq_ignore_ascii_case("success"));
    if !failed {
        return None;
    }
    let size = facts.memory_size_mb.filter(|s| *s > 0.0)?;
    let mark = facts.max_memory_used_mb.filter(|m| m.is_finite());
    // The mark rose during this invocation (or this is the first one the environment reported).
    let mark_rose = mark.filter(|m| facts.previous_mark_mb.is_none_or(|prev| *m > prev));
    // Lambda often reports such a kill as `Runtime.ExitError` ("signal: killed"), with no
    // record from the killed process: the mark is all there is.
    let reached = mark_rose.or(mark.filter(|_| facts.previous_touched_limit));
    if reached.is_some_and(|m| m >= size) {
        return Some(OomCause::ReachedMemoryLimit);
    }
    let own_peak = match (facts.own_peak_mb, mark_rose) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }?;
    let utilization = own_peak / size;
    (utilization >= near_limit).then_some(OomCause::FailedAtLimit { utilization })
}

/// True for a successful invocation during which the mark reached the size: not an
/// out-of-memory itself, but a failure right after it is (see [`OomFacts::previous_touched_limit`]).
pub fn touched_limit(facts: &OomFacts<'_>) -> bool {
    let success = facts
        .status
        .is_some_and(|s| s.eq_ignore_ascii_case("success"));
    let rose = match (facts.max_memory_used_mb, facts.previous_mark_mb) {
        (Some(m), Some(prev)) => m > prev,
        (Some(_), None) => true,
        _ => false,
    };
    success
        && rose
        && matches!((facts.max_memory_used_mb, facts.memory_size_mb), (Some(m), Some(s)) if s > 0.0 && m >= s)
}

/// The facts of one profile, given the mark the environment reported before it and whether the
/// invocation before it touched the limit.
pub fn facts_of(
    p: &InvocationProfile,
    previous_mark_mb: Option<f64>,
    previous_touched_limit: bool,
) -> OomFacts<'_> {
    let r = p.report.as_ref();
    let rd = p.runtime_done.as_ref();
    let d = p.decorator.as_deref();
    // Only a per-invocation peak tells this invocation's own memory; a process-lifetime peak
    // is a high-water mark like the platform's.
    let own_peak_mb = d
        .filter(|d| d.rss_peak_scope.as_deref() == Some("invocation"))
        .and_then(|d| d.rss_peak_bytes)
        .map(|b| b as f64 / MIB);
    OomFacts {
        status: r
            .and_then(|r| r.status.as_deref())
            .or_else(|| rd.and_then(|rd| rd.status.as_deref())),
        error_type: r
            .and_then(|r| r.error_type.as_deref())
            .or_else(|| rd.and_then(|rd| rd.error_type.as_deref())),
        max_memory_used_mb: r.and_then(|r| r.max_memory_used_mb),
        previous_mark_mb,
        memory_size_mb: r.and_then(|r| r.memory_size_mb),
        own_peak_mb,
        python_memory_error: d.and_then(|d| d.error_type.as_deref()) == Some("MemoryError"),
        previous_touched_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: &'static str, used: f64, previous: Option<f64>) -> OomFacts<'static> {
        OomFacts {
            status: Some(status),
            max_memory_used_mb: Some(used),
            previous_mark_mb: previous,
            memory_size_mb: Some(128.0),
            ..Default::default()
        }
    }

    fn detect_default(f: &OomFacts<'_>) -> Option<OomCause> {
        detect(f, DEFAULT_NEAR_LIMIT)
    }

    #[test]
    fn reported_out_of_memory_counts_whatever_the_figures() {
        let f = OomFacts {
            error_type: Some("Runtime.OutOfMemory"),
            ..facts("error", 60.0, Some(60.0))
        };
        assert_eq!(detect_default(&f), Some(OomCause::ReportedOutOfMemory));
    }

    #[test]
    fn memory_error_counts() {
        let f = OomFacts {
            python_memory_error: true,
            ..facts("error", 60.0, Some(60.0))
        };
        assert_eq!(detect_default(&f), Some(OomCause::PythonMemoryError));
    }

    #[test]
    fn reaching_the_limit_counts_once() {
        assert_eq!(
            detect_default(&facts("error", 128.0, Some(100.0))),
            Some(OomCause::ReachedMemoryLimit)
        );
        assert_eq!(
            detect_default(&facts("timeout", 128.0, None)),
            Some(OomCause::ReachedMemoryLimit),
            "the first invocation reported"
        );
        // The mark stays at the limit: healthy invocations after it are not out of memory.
        assert_eq!(detect_default(&facts("success", 128.0, Some(128.0))), None);
        // Nor is an ordinary error in that environment.
        assert_eq!(detect_default(&facts("error", 128.0, Some(128.0))), None);
    }

    #[test]
    fn a_success_whose_rounded_mark_reads_the_size_is_not_the_kill_that_follows() {
        // 127.3 MB reads "128" (whole MB, rounded up): the invocation answered.
        assert_eq!(detect_default(&facts("success", 128.0, Some(126.0))), None);
        assert_eq!(detect_default(&facts("success", 128.0, None)), None);
        // The next one is killed: that one, alone, is the out-of-memory.
        let killed = OomFacts {
            error_type: Some("Runtime.OutOfMemory"),
            ..facts("error", 128.0, Some(128.0))
        };
        assert_eq!(detect_default(&killed), Some(OomCause::ReportedOutOfMemory));
    }

    #[test]
    fn a_failure_counts_only_with_its_own_peak_at_the_limit() {
        // A business error while the mark is at 96%: an error, not an out-of-memory.
        assert_eq!(detect_default(&facts("error", 123.0, Some(123.0))), None);
        assert_eq!(detect_default(&facts("error", 123.0, Some(100.0))), None);
        // A timeout during which the mark rose to 99%.
        assert!(matches!(
            detect_default(&facts("timeout", 127.0, Some(100.0))),
            Some(OomCause::FailedAtLimit { utilization }) if (utilization - 127.0 / 128.0).abs() < 1e-12
        ));
        // The mark was already there, but the decorator says this invocation itself peaked there.
        let own = OomFacts {
            own_peak_mb: Some(126.0),
            ..facts("timeout", 127.0, Some(127.0))
        };
        assert!(matches!(
            detect_default(&own),
            Some(OomCause::FailedAtLimit { .. })
        ));
        let small_own = OomFacts {
            own_peak_mb: Some(40.0),
            ..facts("timeout", 127.0, Some(127.0))
        };
        assert_eq!(detect_default(&small_own), None);
        assert_eq!(detect_default(&facts("success", 127.0, Some(100.0))), None);
    }

    #[test]
    fn a_kill_reported_as_exit_error_after_a_touch_counts_once() {
        // A success reads 128 of 128 (rounded up): not counted, but it touched the limit.
        let touch = facts("success", 128.0, Some(120.0));
        assert_eq!(detect_default(&touch), None);
        assert!(touched_limit(&touch));
        // The next one is killed, reported as Runtime.ExitError, the mark unchanged.
        let killed = OomFacts {
            error_type: Some("Runtime.ExitError"),
            previous_touched_limit: true,
            ..facts("error", 128.0, Some(128.0))
        };
        assert_eq!(detect_default(&killed), Some(OomCause::ReachedMemoryLimit));
        // Not an error long after the touch (the flag lasts one invocation), nor a success.
        assert_eq!(detect_default(&facts("error", 128.0, Some(128.0))), None);
        let fine = OomFacts {
            previous_touched_limit: true,
            ..facts("success", 128.0, Some(128.0))
        };
        assert_eq!(detect_default(&fine), None);
        assert!(!touched_limit(&fine), "the mark did not rise");
    }

    #[test]
    fn missing_figures_are_not_an_oom() {
        assert_eq!(detect_default(&OomFacts::default()), None);
        let zero_size = OomFacts {
            memory_size_mb: Some(0.0),
            max_memory_used_mb: Some(5.0),
            ..Default::default()
        };
        assert_eq!(detect_default(&zero_size), None);
    }
}
