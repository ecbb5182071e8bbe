//! lambda-memory-profiler: an AWS Lambda extension that joins the platform's memory figures, the
//! runtime's `/proc` figures and the Python decorator's measurements into one record per invocation.
//!
//! Data flows one way: `sources` → `invocation` (the join) → `analysis` → `metrics` → `sinks`; `lifecycle`
//! talks to the Extensions API and `flush` decides when the sinks send.
#![warn(missing_docs)]

pub mod agent;
pub mod analysis;
pub mod config;
pub mod disabled;
pub mod flush;
pub mod invocation;
pub mod lifecycle;
pub mod metrics;
pub mod presence;
pub mod sinks;
pub mod sources;
pub mod stats;

/// Wall-clock time in epoch milliseconds (0 if the clock is before 1970).
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An error with its causes, `outer: cause: root cause`, for one log field: typed errors keep
/// their source (`#[source]`), and a log line should still say what went wrong underneath.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_chain_names_every_cause() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let batch = crate::sources::telemetry::BatchError::NotJson(json);
        let text = super::error_chain(&batch);
        assert!(
            text.starts_with("batch is not JSON: EOF while parsing"),
            "{text}"
        );
    }
}
