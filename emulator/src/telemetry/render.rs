//! What each API delivers for one emitted record.
//!
//! The emulator emits one stream of records in the Telemetry API's shapes
//! ([`crate::Emulator::telemetry_emitted`]). A Telemetry API subscriber gets them as they are,
//! except `platform.logsSubscription`, which only the Logs API knows. A Logs API subscriber gets
//! the Logs API's own shapes (runtimes-logs-api reference): no init records, `platform.start`
//! with `requestId` and `version`, `platform.end` before `platform.report`, a report holding
//! `requestId` and `metrics`, `platform.runtimeDone` (`requestId`, `status`) only with schema
//! `2021-03-18`, `platform.extension` and `platform.logsSubscription`, and log lines as strings.

use serde_json::{json, Map, Value};

use super::{Api, Subscription};
use crate::TelemetryEvent;

/// The serialized records `sub` receives for `ev`, in order (none, one, or two).
pub fn render(sub: &Subscription, ev: &TelemetryEvent) -> Vec<String> {
    match sub.api {
        Api::Telemetry => telemetry(ev),
        Api::Logs => logs(&sub.schema, ev),
    }
    .into_iter()
    .map(|(event_type, record)| {
        json!({"time": ev.time, "type": event_type, "record": record}).to_string()
    })
    .collect()
}

fn telemetry(ev: &TelemetryEvent) -> Vec<(String, Value)> {
    if ev.event_type == "platform.logsSubscription" {
        return Vec::new();
    }
    vec![(ev.event_type.clone(), ev.record.clone())]
}

fn logs(schema: &str, ev: &TelemetryEvent) -> Vec<(String, Value)> {
    let r = &ev.record;
    let one = |t: &str, v: Value| vec![(t.to_string(), v)];
    match ev.event_type.as_str() {
        // The Logs API's log records are documented as strings only.
        "function" | "extension" => one(&ev.event_type, Value::String(as_line(r))),
        "platform.start" => one("platform.start", pick(r, &["requestId", "version"])),
        "platform.runtimeDone" if schema == "2021-03-18" => {
            one("platform.runtimeDone", pick(r, &["requestId", "status"]))
        }
        "platform.report" => {
            let metrics = pick(
                r.get("metrics").unwrap_or(&Value::Null),
                &[
                    "durationMs",
                    "billedDurationMs",
                    "memorySizeMB",
                    "maxMemoryUsedMB",
                    "initDurationMs",
                ],
            );
            let mut report = pick(r, &["requestId"]);
            report["metrics"] = metrics;
            vec![
                ("platform.end".to_string(), pick(r, &["requestId"])),
                ("platform.report".to_string(), report),
            ]
        }
        "platform.extension" | "platform.logsSubscription" => one(&ev.event_type, r.clone()),
        _ => Vec::new(),
    }
}

/// A log record as one line of text (a JSON-object record back to compact JSON).
fn as_line(record: &Value) -> String {
    match record {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The listed fields of an object that are present.
fn pick(v: &Value, keys: &[&str]) -> Value {
    let mut out = Map::new();
    for k in keys {
        if let Some(x) = v.get(*k) {
            out.insert((*k).to_string(), x.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(api: Api, schema: &str) -> Subscription {
        Subscription {
            api,
            schema: schema.into(),
            types: vec!["platform".into()],
            max_items: 1000,
            max_bytes: 262_144,
            timeout: std::time::Duration::from_millis(25),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            host_header: "sandbox.localdomain:1".into(),
            path: "/".into(),
        }
    }

    fn ev(t: &str, record: Value) -> TelemetryEvent {
        TelemetryEvent {
            time: "2024-01-01T00:00:00.000Z".into(),
            event_type: t.into(),
            record,
        }
    }

    fn parsed(lines: Vec<String>) -> Vec<Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    #[test]
    fn the_logs_api_gets_end_before_report_and_no_init_records() {
        let report = ev(
            "platform.report",
            json!({"requestId": "r", "status": "success", "metrics": {"durationMs": 1.5,
                "billedDurationMs": 2, "memorySizeMB": 128, "maxMemoryUsedMB": 30},
                "tracing": {"type": "X-Amzn-Trace-Id", "value": "v"}}),
        );
        let got = parsed(render(&sub(Api::Logs, "2020-08-15"), &report));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["type"], "platform.end");
        assert_eq!(got[0]["record"], json!({"requestId": "r"}));
        assert_eq!(got[1]["record"]["metrics"]["maxMemoryUsedMB"], 30);
        assert!(got[1]["record"].get("tracing").is_none());
        let init = ev("platform.initStart", json!({"phase": "init"}));
        assert!(render(&sub(Api::Logs, "2021-03-18"), &init).is_empty());
        assert_eq!(render(&sub(Api::Telemetry, "2022-12-13"), &init).len(), 1);
    }

    #[test]
    fn runtime_done_reaches_the_logs_api_only_from_schema_2021_03_18() {
        let done = ev(
            "platform.runtimeDone",
            json!({"requestId": "r", "status": "success", "spans": []}),
        );
        assert!(render(&sub(Api::Logs, "2020-08-15"), &done).is_empty());
        let got = parsed(render(&sub(Api::Logs, "2021-03-18"), &done));
        assert_eq!(
            got[0]["record"],
            json!({"requestId": "r", "status": "success"})
        );
    }

    #[test]
    fn log_lines_are_strings_for_the_logs_api_and_subscription_records_stay_per_api() {
        let line = ev("function", json!({"level": "INFO", "message": "m"}));
        let got = parsed(render(&sub(Api::Logs, "2021-03-18"), &line));
        assert_eq!(got[0]["record"], r#"{"level":"INFO","message":"m"}"#);
        let logs_sub = ev("platform.logsSubscription", json!({"name": "x"}));
        assert!(render(&sub(Api::Telemetry, "2022-12-13"), &logs_sub).is_empty());
        assert_eq!(render(&sub(Api::Logs, "2021-03-18"), &logs_sub).len(), 1);
        let tele_sub = ev("platform.telemetrySubscription", json!({"name": "x"}));
        assert!(render(&sub(Api::Logs, "2021-03-18"), &tele_sub).is_empty());
    }
}
