//! The log lines the fallback reads, parsed: the extension's JSON lines (`"lmp": …`, the
//! fields documented in docs/analysis.md) and the platform's per-invocation report, as the text
//! `REPORT RequestId: …` line or the JSON `platform.report` record.

use serde::Deserialize;

/// One event of the log group.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    pub log_stream: String,
    pub timestamp_ms: i64,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(super) struct GrowingSite {
    pub site: String,
    #[serde(default)]
    pub via: Option<String>,
    #[serde(default)]
    pub bytes_per_traced_invoke: Option<f64>,
    #[serde(default)]
    pub seen_in: Option<u64>,
}

/// The fields of the extension's lines the report reads (others are ignored).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(super) struct LmpLine {
    pub lmp: String,
    #[serde(default)]
    pub since_invocation: Option<u64>,
    #[serde(default)]
    pub raised_at_invocation: Option<u64>,
    #[serde(default)]
    pub invocations: Option<u64>,
    #[serde(default)]
    pub heap_growth_bytes_per_invoke: Option<f64>,
    #[serde(default)]
    pub invocations_to_out_of_memory: Option<f64>,
    #[serde(default)]
    pub hours_to_out_of_memory: Option<f64>,
    #[serde(default)]
    pub growing_sites: Vec<GrowingSite>,
    #[serde(default)]
    pub cause: Option<String>,
    #[serde(default)]
    pub utilization: Option<f64>,
}

/// An extension line of one of the kinds the report reads.
pub(super) fn lmp_line(message: &str) -> Option<LmpLine> {
    let line: LmpLine = serde_json::from_str(message.trim()).ok()?;
    matches!(
        line.lmp.as_str(),
        "leak_suspected" | "leak_withdrawn" | "out_of_memory"
    )
    .then_some(line)
}

/// `maxMemoryUsedMB` of a platform report line, text or JSON.
pub(super) fn report_max_memory_mb(message: &str) -> Option<f64> {
    let m = message.trim_start();
    if let Some(rest) = m.strip_prefix("REPORT ") {
        return rest
            .split('\t')
            .filter_map(|part| part.trim().strip_prefix("Max Memory Used:"))
            .find_map(|v| v.trim().trim_end_matches("MB").trim().parse::<f64>().ok());
    }
    if m.starts_with('{') && m.contains("platform.report") {
        #[derive(Deserialize)]
        struct Record {
            #[serde(rename = "type")]
            kind: String,
            record: serde_json::Value,
        }
        let r: Record = serde_json::from_str(m).ok()?;
        if r.kind == "platform.report" {
            return r.record["metrics"]["maxMemoryUsedMB"].as_f64();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_report_lines() {
        let text = "REPORT RequestId: 3f1c\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 71 MB\tInit Duration: 230.10 ms\t";
        assert_eq!(report_max_memory_mb(text), Some(71.0));
        let json = r#"{"time":"2026-01-01T00:00:00.000Z","type":"platform.report","record":{"requestId":"x","metrics":{"durationMs":1.0,"billedDurationMs":2,"memorySizeMB":128,"maxMemoryUsedMB":64}}}"#;
        assert_eq!(report_max_memory_mb(json), Some(64.0));
        assert_eq!(report_max_memory_mb("START RequestId: x"), None);
        assert_eq!(report_max_memory_mb(r#"{"type":"platform.start"}"#), None);
    }

    #[test]
    fn extension_lines_of_the_kinds_read() {
        let leak = r#"{"lmp":"leak_suspected","function_name":"f","invocations":37,"since_invocation":37,"heap_growth_bytes_per_invoke":16384.0,"hours_to_out_of_memory":7.8,"growing_sites":[{"site":"/var/task/app.py:42","via":"json/decoder.py:353","bytes_per_traced_invoke":14120.0,"held_bytes_per_traced_invoke":14699.0,"seen_in":3}]}"#;
        let l = lmp_line(leak).unwrap();
        assert_eq!(l.since_invocation, Some(37));
        assert_eq!(l.growing_sites[0].site, "/var/task/app.py:42");
        assert_eq!(l.growing_sites[0].seen_in, Some(3));
        let oom = r#"{"lmp":"out_of_memory","cause":"Runtime.OutOfMemory","utilization":1.0}"#;
        assert_eq!(
            lmp_line(oom).unwrap().cause.as_deref(),
            Some("Runtime.OutOfMemory")
        );
        assert!(lmp_line(r#"{"lmp":"top_sites","sites":[]}"#).is_none());
        assert!(lmp_line("REPORT RequestId: x").is_none());
    }
}
