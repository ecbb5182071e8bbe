//! Property tests of every parser the extension runs on outside input: the intake datagram, the
//! telemetry batch, `/proc` text, the Extensions API event, the configuration, the limits
//! applied to what they produce, and the emulator's telemetry and Logs API subscription bodies. None may panic on any input; valid input must come out as it
//! went in; nothing out of the platform's range may come out of the limits.
//!
//! `make test` runs the default 256 cases per property; `make fuzz` runs each for 1,000,000
//! (`PROPTEST_CASES=1000000`).
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lambda_memory_profiler::config::Config;
use lambda_memory_profiler::invocation::SourceEvent;
use lambda_memory_profiler::lifecycle::{parse_next, NextEvent};
use lambda_memory_profiler::sources::intake::{parse_datagram, IntakeRecord, MAX_DATAGRAM};
use lambda_memory_profiler::sources::limits::{Limits, MAX_DURATION_MS, MAX_MEMORY_MB};
use lambda_memory_profiler::sources::procfs::{parse_status, parse_udp_socket};
use lambda_memory_profiler::sources::telemetry::{parse_batch, TelemetryEvent};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Arbitrary JSON, a few levels deep: what a confused or hostile sender can produce.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("v".to_string()),
                    Just("kind".to_string()),
                    Just("request_id".to_string()),
                    Just("pid".to_string()),
                    Just("trace".to_string()),
                    Just("top".to_string()),
                    Just("gc".to_string()),
                    Just("record".to_string()),
                    Just("type".to_string()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An intake record with every field present or absent, any value a runtime could send.
fn record() -> impl Strategy<Value = Value> {
    (
        "[a-f0-9-]{0,36}",
        proptest::option::of(1u32..4_000_000),
        proptest::option::of(0.0f64..900_000.0),
        proptest::option::of(0u64..(1 << 33)),
        proptest::option::of(0u64..(1 << 30)),
        any::<bool>(),
        proptest::option::of(prop::collection::vec(
            ("[a-z/_.]{1,30}", 1u64..100_000, 0u64..(1 << 30), 1u64..100_000),
            0..5,
        )),
    )
        .prop_map(|(rid, pid, duration, rss, blocks, cold, top)| {
            let trace = top.map(|sites| {
                json!({
                    "reason": "rate", "mode": "own", "peak_bytes": rss, "retained_bytes": rss,
                    "growth_bytes": null,
                    "top": sites.iter().map(|(f, l, s, c)| json!({"file": f, "line": l, "size": s, "count": c})).collect::<Vec<_>>(),
                    "top_truncated": 0,
                })
            });
            json!({
                "v": 1, "kind": "invocation", "request_id": rid, "pid": pid,
                "duration_ms": duration, "rss_peak_bytes": rss, "anon_bytes": rss,
                "heap_blocks": blocks, "cold_start": cold, "trace": trace,
            })
        })
}

proptest! {
    #[test]
    fn intake_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_datagram(&bytes);
    }

    #[test]
    fn intake_never_panics_on_json(value in any_json()) {
        let text = value.to_string();
        if text.len() <= MAX_DATAGRAM {
            let _ = parse_datagram(text.as_bytes());
        }
    }

    #[test]
    fn intake_records_come_out_as_they_went_in(value in record()) {
        let parsed = parse_datagram(value.to_string().as_bytes());
        let Ok(IntakeRecord::Invocation(r)) = parsed else {
            return Err(TestCaseError::fail(format!("{parsed:?}")));
        };
        prop_assert_eq!(&r.request_id, value["request_id"].as_str().unwrap_or_default());
        prop_assert_eq!(r.pid, value["pid"].as_u64().map(|p| p as u32));
        prop_assert_eq!(r.rss_peak_bytes, value["rss_peak_bytes"].as_u64());
        prop_assert_eq!(r.anon_bytes, value["anon_bytes"].as_u64());
        prop_assert_eq!(r.heap_blocks, value["heap_blocks"].as_u64());
        let sites = value["trace"]["top"].as_array().map_or(0, Vec::len);
        prop_assert_eq!(r.trace.as_ref().map_or(0, |t| t.top.len()), sites);
    }

    #[test]
    fn limits_let_nothing_impossible_through(value in any_json(), memory in 128u32..=10_240) {
        let text = value.to_string();
        if let Ok(IntakeRecord::Invocation(record)) = parse_datagram(text.as_bytes()) {
            let mut ev = SourceEvent::Decorator { record, proc_mem: None };
            Limits::for_memory(Some(memory)).sanitize(&mut ev);
            let SourceEvent::Decorator { record, .. } = ev else { unreachable!() };
            let max = u64::from(memory) << 20;
            prop_assert!(record.rss_peak_bytes.is_none_or(|b| b <= max));
            prop_assert!(record.anon_bytes.is_none_or(|b| b <= max));
            prop_assert!(record.duration_ms.is_none_or(|d| (0.0..=MAX_DURATION_MS).contains(&d)));
            if let Some(t) = &record.trace {
                prop_assert!(t.growth_bytes.is_none_or(|g| g.unsigned_abs() <= max));
                prop_assert!(t.top.iter().all(|s| s.size <= max));
            }
        }
    }

    #[test]
    fn telemetry_never_panics(value in any_json(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_batch(value.to_string().as_bytes());
        let _ = parse_batch(&bytes);
        let batch = json!([{"time": "2026-01-01T00:00:00Z", "type": "platform.report", "record": value}]);
        let _ = parse_batch(batch.to_string().as_bytes());
    }

    #[test]
    fn telemetry_reports_within_range_pass_the_limits(
        duration in 0.0f64..900_000.0, used in 1u32..=10_240, size in 128u32..=10_240,
    ) {
        let batch = json!([{"time": "2026-01-01T00:00:00Z", "type": "platform.report", "record": {
            "requestId": "r", "status": "success",
            "metrics": {"durationMs": duration, "billedDurationMs": duration.ceil(),
                        "memorySizeMB": size, "maxMemoryUsedMB": used.min(size)}}}]);
        let parsed = parse_batch(batch.to_string().as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Some(TelemetryEvent::Report(r)) = parsed.events.into_iter().next() else {
            return Err(TestCaseError::fail("no report"));
        };
        let mut ev = SourceEvent::Telemetry(TelemetryEvent::Report(r.clone()));
        prop_assert_eq!(Limits::for_memory(Some(MAX_MEMORY_MB)).sanitize(&mut ev), 0);
        prop_assert_eq!(r.max_memory_used_mb, Some(f64::from(used.min(size))));
    }

    #[test]
    fn proc_status_never_panics_and_reads_what_it_is_given(
        text in ".{0,400}", rss in 0u64..(1 << 40), anon in 0u64..(1 << 40),
    ) {
        let _ = parse_status(&text);
        let m = parse_status(&format!("Name:\tpython\nVmRSS:\t{rss} kB\nRssAnon:\t{anon} kB\n{text}"));
        // A later line may repeat a key; the first two are ours unless the text overrides them.
        if !text.contains("VmRSS") {
            prop_assert_eq!(m.rss, Some(rss * 1024));
        }
        if !text.contains("RssAnon") {
            prop_assert_eq!(m.anon, Some(anon * 1024));
        }
        let _ = parse_udp_socket(&text, 4243);
    }

    #[test]
    fn extensions_api_events_never_panic(value in any_json(), id in "[a-f0-9-]{1,36}") {
        let _ = parse_next(value.to_string().as_bytes());
        let invoke = json!({"eventType": "INVOKE", "requestId": id, "deadlineMs": 1_764_000_000_000u64});
        let parsed = parse_next(invoke.to_string().as_bytes());
        let named = matches!(parsed, Ok(NextEvent::Invoke { ref request_id, .. }) if *request_id == id);
        prop_assert!(named, "{:?}", parsed);
    }

    #[test]
    fn emulator_subscriptions_never_panic_and_honour_the_ranges(
        value in any_json(),
        items in 0u64..20_000, bytes in 0u64..2_000_000, timeout in 0u64..40_000,
    ) {
        use lambda_emulator::telemetry::{parse_logs_subscription, parse_subscription};
        let _ = parse_subscription(value.to_string().as_bytes());
        let _ = parse_logs_subscription(value.to_string().as_bytes());
        let body = json!({
            "schemaVersion": "2022-12-13", "types": ["platform"],
            "buffering": {"maxItems": items, "maxBytes": bytes, "timeoutMs": timeout},
            "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4321/t"},
        });
        let in_range = (1000..=10_000).contains(&items)
            && (262_144..=1_048_576).contains(&bytes)
            && (25..=30_000).contains(&timeout);
        let parsed = parse_subscription(body.to_string().as_bytes());
        prop_assert_eq!(parsed.is_ok(), in_range, "{:?}", parsed);
        if let Ok(sub) = parsed {
            prop_assert_eq!(sub.max_items as u64, items);
            prop_assert_eq!(sub.max_bytes as u64, bytes);
            prop_assert!(sub.addr.ip().is_loopback());
        }
    }

    #[test]
    fn configuration_never_panics_and_stays_in_range(value in ".{0,16}", var in 0usize..12) {
        const VARS: [&str; 12] = [
            "LMP_LEAK_WINDOW", "LMP_LEAK_WARMUP", "LMP_LEAK_MIN_POINTS", "LMP_LEAK_MIN_HEAP_BYTES",
            "LMP_LEAK_MAX_P", "LMP_LEAK_CONFIRM", "LMP_FLUSH", "LMP_INTAKE_PORT",
            "LMP_STORAGE_RESOLUTION", "LMP_MAX_PENDING", "LMP_HEADROOM", "LMP_DIMENSIONS",
        ];
        let (c, warnings) = Config::from_lookup(|k| (k == VARS[var]).then(|| value.clone()));
        prop_assert!(warnings.len() <= 1);
        prop_assert!((6..=500).contains(&c.leak.window));
        prop_assert!(c.leak.max_p_value > 0.0 && c.leak.max_p_value <= 0.5);
    }
}
