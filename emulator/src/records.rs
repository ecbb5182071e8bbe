//! The platform records the emulator emits, in the Telemetry API's shapes (telemetry schema
//! reference): field names and which fields each record carries live here, in one place.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::clock;
use crate::types::duration_ms;
use crate::EmulatorConfig;

/// `tracing` of `platform.start`, `platform.runtimeDone` and `platform.report` (a TraceContext).
pub(crate) fn tracing(trace: &str, span_id: &str) -> Value {
    json!({"spanId": span_id, "type": "X-Amzn-Trace-Id", "value": trace})
}

/// `platform.initStart`.
pub(crate) fn init_start(c: &EmulatorConfig) -> Value {
    let version = c.runtime_version();
    json!({
        "initializationType": c.initialization_type,
        "phase": "init",
        "runtimeVersion": version,
        "runtimeVersionArn": runtime_version_arn(&c.region, &version),
        "functionName": c.function_name,
        "functionVersion": "$LATEST",
    })
}

/// `platform.restoreStart`: a copy resumes from the snapshot.
pub(crate) fn restore_start(c: &EmulatorConfig) -> Value {
    let version = c.runtime_version();
    json!({
        "runtimeVersion": version,
        "runtimeVersionArn": runtime_version_arn(&c.region, &version),
        "functionName": c.function_name,
        "functionVersion": "$LATEST",
    })
}

/// `arn:aws:lambda:<region>::runtime:<64 hex digits>`, Lambda's form, derived from the version
/// so that one version always has one ARN.
pub(crate) fn runtime_version_arn(region: &str, version: &str) -> String {
    // FNV-1a, four rounds with different seeds: a stable digest, not a security property.
    let mut hex = String::with_capacity(64);
    for seed in 0u64..4 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in version.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        hex.push_str(&format!("{h:016x}"));
    }
    format!("arn:aws:lambda:{region}::runtime:{hex}")
}

/// `platform.extension`: an extension is ready (it called `/next` for the first time).
pub(crate) fn extension(name: &str, events: &[String]) -> Value {
    json!({"name": name, "state": "Ready", "events": events})
}

/// `platform.telemetrySubscription` or `platform.logsSubscription` (same fields).
pub(crate) fn subscription(name: &str, types: &[String]) -> Value {
    json!({"name": name, "state": "Subscribed", "types": types})
}

/// `platform.start`.
pub(crate) fn start(request_id: &str, tracing: &Value) -> Value {
    json!({"requestId": request_id, "version": "$LATEST", "tracing": tracing})
}

/// How the runtime's answer to one invocation went, for `platform.runtimeDone`.
pub(crate) struct RuntimeDone<'a> {
    pub request_id: &'a str,
    pub status: &'a str,
    pub error_type: Option<&'a str>,
    pub started: SystemTime,
    /// Invocation start to the end of the runtime's answer.
    pub duration: Duration,
    /// Invocation start to the first byte of the answer, and the answer's own transfer, when
    /// the runtime answered at all.
    pub response: Option<(Duration, SystemTime, Duration)>,
    pub produced_bytes: usize,
    pub tracing: &'a Value,
}

/// `platform.runtimeDone` with the `responseLatency` and `responseDuration` spans.
pub(crate) fn runtime_done(d: &RuntimeDone<'_>) -> Value {
    let spans = match d.response {
        Some((latency, response_start, transfer)) => json!([
            {"name": "responseLatency", "start": clock::iso8601(d.started), "durationMs": duration_ms(latency)},
            {"name": "responseDuration", "start": clock::iso8601(response_start), "durationMs": duration_ms(transfer)},
        ]),
        None => json!([]),
    };
    let mut r = json!({
        "requestId": d.request_id,
        "status": d.status,
        "metrics": {"durationMs": duration_ms(d.duration), "producedBytes": d.produced_bytes},
        "spans": spans,
        "tracing": d.tracing,
    });
    if let Some(t) = d.error_type {
        r["errorType"] = json!(t);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_arn_is_lambdas_form_and_stable() {
        let a = runtime_version_arn("us-east-1", "python:3.11.v1");
        assert_eq!(a, runtime_version_arn("us-east-1", "python:3.11.v1"));
        assert_ne!(a, runtime_version_arn("us-east-1", "python:3.12.v1"));
        let hex = a
            .strip_prefix("arn:aws:lambda:us-east-1::runtime:")
            .unwrap_or("");
        assert_eq!(hex.len(), 64);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
