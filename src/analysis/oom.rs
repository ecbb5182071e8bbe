//! Out-of-memory detection from what the platform reports about an invocation.
//!
//! Lambda says `Runtime.OutOfMemory` when it notices, but an invocation that times out or fails
//! while pinned at the memory limit (swapping allocator, a C extension's abort) is the same
//! problem under another name: those count too.

/// What the platform said about one invocation (`platform.runtimeDone` / `platform.report`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReportFacts<'a> {
    /// `success`, `failure`, `error` or `timeout`.
    pub status: Option<&'a str>,
    pub error_type: Option<&'a str>,
    pub max_memory_used_mb: Option<f64>,
    pub memory_size_mb: Option<f64>,
}

/// Why an invocation is counted as out of memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OomCause {
    /// The platform reported `Runtime.OutOfMemory`.
    ReportedOutOfMemory,
    /// The environment's memory high-water mark reached the configured size.
    ReachedMemoryLimit,
    /// The invocation timed out or failed with utilization at or above the threshold.
    FailedNearLimit { utilization: f64 },
    /// The handler raised Python's `MemoryError` (an allocation failed inside the runtime).
    PythonMemoryError,
}

impl OomCause {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ReportedOutOfMemory => "Runtime.OutOfMemory",
            Self::ReachedMemoryLimit => "max_memory_used_reached_memory_size",
            Self::FailedNearLimit { .. } => "failed_near_memory_limit",
            Self::PythonMemoryError => "MemoryError",
        }
    }
}

/// Utilization (0..1) at or above which a timeout or error counts as out of memory.
pub const DEFAULT_NEAR_LIMIT: f64 = 0.95;

/// Memory utilization as a fraction, when both figures are known and the size is positive.
pub fn utilization(facts: &ReportFacts<'_>) -> Option<f64> {
    match (facts.max_memory_used_mb, facts.memory_size_mb) {
        (Some(used), Some(size)) if size > 0.0 && used.is_finite() => Some(used / size),
        _ => None,
    }
}

/// The reason this invocation ran out of memory, or `None` when it did not.
pub fn detect(facts: &ReportFacts<'_>, near_limit: f64) -> Option<OomCause> {
    if facts
        .error_type
        .is_some_and(|e| e.eq_ignore_ascii_case("Runtime.OutOfMemory"))
    {
        return Some(OomCause::ReportedOutOfMemory);
    }
    let utilization = utilization(facts)?;
    if utilization >= 1.0 {
        return Some(OomCause::ReachedMemoryLimit);
    }
    let failed = facts
        .status
        .is_some_and(|s| !s.eq_ignore_ascii_case("success"));
    (failed && utilization >= near_limit).then_some(OomCause::FailedNearLimit { utilization })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: &'static str, error: Option<&'static str>, used: f64) -> ReportFacts<'static> {
        ReportFacts {
            status: Some(status),
            error_type: error,
            max_memory_used_mb: Some(used),
            memory_size_mb: Some(128.0),
        }
    }

    #[test]
    fn reported_out_of_memory_counts_whatever_the_figures() {
        let f = facts("error", Some("Runtime.OutOfMemory"), 60.0);
        assert_eq!(
            detect(&f, DEFAULT_NEAR_LIMIT),
            Some(OomCause::ReportedOutOfMemory)
        );
    }

    #[test]
    fn reaching_the_limit_counts_even_on_success() {
        let f = facts("success", None, 128.0);
        assert_eq!(
            detect(&f, DEFAULT_NEAR_LIMIT),
            Some(OomCause::ReachedMemoryLimit)
        );
    }

    #[test]
    fn timeout_near_the_limit_counts_but_not_far_from_it() {
        let near = facts("timeout", None, 123.0);
        assert!(matches!(
            detect(&near, DEFAULT_NEAR_LIMIT),
            Some(OomCause::FailedNearLimit { utilization }) if (utilization - 123.0 / 128.0).abs() < 1e-12
        ));
        assert_eq!(
            detect(&facts("timeout", None, 90.0), DEFAULT_NEAR_LIMIT),
            None
        );
        assert_eq!(
            detect(&facts("success", None, 127.0), DEFAULT_NEAR_LIMIT),
            None
        );
    }

    #[test]
    fn missing_figures_are_not_an_oom() {
        assert_eq!(detect(&ReportFacts::default(), DEFAULT_NEAR_LIMIT), None);
        let zero_size = ReportFacts {
            memory_size_mb: Some(0.0),
            max_memory_used_mb: Some(5.0),
            ..Default::default()
        };
        assert_eq!(detect(&zero_size, DEFAULT_NEAR_LIMIT), None);
    }
}
