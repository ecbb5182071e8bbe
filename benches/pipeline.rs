//! In-process costs of the extension's hot paths, per record: the intake datagram parser, the
//! telemetry batch parser, the join, and the sinks (CloudWatch packing/batching, EMF rendering).
//! Throughputs are per element on one core; `make bench` runs this file.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lambda_memory_profiler::config::DimensionSet;
use lambda_memory_profiler::config::StorageResolution;
use lambda_memory_profiler::invocation::{InvocationProfile, Join, JoinConfig, SourceEvent};
use lambda_memory_profiler::metrics::{profile_datums, Datum, Dimensions};
use lambda_memory_profiler::sinks::{cloudwatch, emf};
use lambda_memory_profiler::sources::intake::{parse_datagram, IntakeRecord};
use lambda_memory_profiler::sources::telemetry::{parse_batch, TelemetryEvent};
use std::time::{Duration, Instant};

/// What the decorator sends on an untraced invocation (its common case).
fn untraced_datagram(i: usize) -> String {
    format!(
        r#"{{"v":1,"kind":"invocation","request_id":"8f3c0d1e-1b7a-4f0a-9c55-{i:012}","pid":8,"runtime":"python3.11","start_ms":1764000000123.4,"duration_ms":12.7,"cold_start":false,"error_type":null,"rss_peak_bytes":61341696,"rss_peak_scope":"invocation","heap_blocks":183421,"gc":{{"collections":2,"collected":140,"uncollectable":0,"garbage":0}},"trace":null}}"#
    )
}

/// A traced invocation naming 10 allocation sites.
fn traced_datagram(i: usize) -> String {
    let top: Vec<String> = (0..10)
        .map(|k| {
            format!(
                r#"{{"file":"/var/task/orders/handlers/module_{k}.py","line":{},"size":{},"count":{}}}"#,
                40 + k,
                10_485_793 - k * 1000,
                k + 1
            )
        })
        .collect();
    format!(
        r#"{{"v":1,"kind":"invocation","request_id":"8f3c0d1e-1b7a-4f0a-9c55-{i:012}","pid":8,"runtime":"python3.11","start_ms":1764000000123.4,"duration_ms":12.7,"cold_start":false,"error_type":null,"rss_peak_bytes":61341696,"rss_peak_scope":"invocation","heap_blocks":183421,"gc":{{"collections":2,"collected":140,"uncollectable":0,"garbage":0}},"trace":{{"reason":"rate","peak_bytes":52436992,"retained_bytes":10486272,"retained_blocks":3,"growth_bytes":10486272,"top":[{}],"top_truncated":0}}}}"#,
        top.join(",")
    )
}

/// A telemetry batch as Lambda posts it: per invocation start, a log line, runtimeDone, report.
fn telemetry_batch(invocations: usize) -> (String, usize) {
    let mut items = Vec::new();
    for i in 0..invocations {
        let id = format!("req-{i:08}");
        items.push(format!(
            r#"{{"time":"2026-11-24T06:00:00.413Z","type":"platform.start","record":{{"requestId":"{id}","version":"$LATEST"}}}}"#
        ));
        items.push(format!(
            r#"{{"time":"2026-11-24T06:00:00.414Z","type":"function","record":"handling order {i}\n"}}"#
        ));
        items.push(format!(
            r#"{{"time":"2026-11-24T06:00:00.425Z","type":"platform.runtimeDone","record":{{"requestId":"{id}","status":"success","metrics":{{"durationMs":11.9,"producedBytes":52}},"spans":[{{"name":"responseLatency","start":"2026-11-24T06:00:00.413Z","durationMs":11.5}}]}}}}"#
        ));
        items.push(format!(
            r#"{{"time":"2026-11-24T06:00:00.430Z","type":"platform.report","record":{{"requestId":"{id}","status":"success","metrics":{{"durationMs":12.1,"billedDurationMs":13,"memorySizeMB":256,"maxMemoryUsedMB":71}}}}}}"#
        ));
    }
    let n = items.len();
    (format!("[{}]", items.join(",")), n)
}

fn bench_intake(c: &mut Criterion) {
    let mut g = c.benchmark_group("intake_parse");
    g.throughput(Throughput::Elements(1));
    for (name, d) in [
        ("untraced", untraced_datagram(1)),
        ("traced_10_sites", traced_datagram(1)),
    ] {
        assert!(matches!(
            parse_datagram(d.as_bytes()),
            Ok(IntakeRecord::Invocation(_))
        ));
        g.bench_function(name, |b| b.iter(|| parse_datagram(black_box(d.as_bytes()))));
    }
    g.finish();
}

fn bench_telemetry(c: &mut Criterion) {
    let (body, records) = telemetry_batch(250);
    let parsed = parse_batch(body.as_bytes()).expect("batch parses");
    assert_eq!(parsed.events.len() + parsed.skipped, records);
    let mut g = c.benchmark_group("telemetry_parse");
    g.throughput(Throughput::Elements(records as u64));
    g.bench_function("batch_1000_records", |b| {
        b.iter(|| parse_batch(black_box(body.as_bytes())))
    });
    g.finish();
}

/// The events of `n` invocations in the order they reach the join: INVOKE, the decorator's
/// record, runtimeDone, and the previous invocation's report.
struct JoinInput {
    ids: Vec<String>,
    decorator: Vec<SourceEvent>,
    runtime_done: Vec<SourceEvent>,
    report: Vec<SourceEvent>,
}

fn join_input(n: usize) -> JoinInput {
    let mut input = JoinInput {
        ids: Vec::new(),
        decorator: Vec::new(),
        runtime_done: Vec::new(),
        report: Vec::new(),
    };
    let (body, _) = telemetry_batch(n);
    for ev in parse_batch(body.as_bytes()).expect("batch parses").events {
        match ev {
            TelemetryEvent::RuntimeDone(_) => input.runtime_done.push(SourceEvent::Telemetry(ev)),
            TelemetryEvent::Report(_) => input.report.push(SourceEvent::Telemetry(ev)),
            _ => {}
        }
    }
    for i in 0..n {
        let id = format!("req-{i:08}");
        let d = untraced_datagram(i).replace(&format!("8f3c0d1e-1b7a-4f0a-9c55-{i:012}"), &id);
        let Ok(IntakeRecord::Invocation(record)) = parse_datagram(d.as_bytes()) else {
            panic!("datagram parses");
        };
        input.decorator.push(SourceEvent::Decorator {
            record,
            proc_mem: None,
        });
        input.ids.push(id);
    }
    input
}

fn run_join(input: JoinInput) -> Vec<InvocationProfile> {
    let mut join = Join::new(JoinConfig {
        max_parked: lambda_memory_profiler::invocation::DEFAULT_MAX_PARKED,
        concurrent: false,
        max_pending: 64,
        pending_timeout: Duration::from_millis(2000),
    });
    let now = Instant::now();
    let mut out = Vec::new();
    let mut reports = input.report.into_iter();
    let parts = input.decorator.into_iter().zip(input.runtime_done);
    for (id, (dec, done)) in input.ids.iter().zip(parts) {
        out.extend(join.on_invoke(id, now, 1_764_000_000_000));
        out.extend(join.on_event(dec, now, 1_764_000_000_000));
        out.extend(join.on_event(done, now, 1_764_000_000_000));
        // The report of invocation N arrives during N+1.
        if out.len() + join.pending_len() > 1 {
            if let Some(r) = reports.next() {
                out.extend(join.on_event(r, now, 1_764_000_000_000));
            }
        }
    }
    for r in reports {
        out.extend(join.on_event(r, now, 1_764_000_000_000));
    }
    out.extend(join.drain());
    out
}

fn bench_join(c: &mut Criterion) {
    let n = 1000;
    let complete = run_join(join_input(n));
    assert_eq!(complete.len(), n);
    assert!(complete.iter().all(|p| !p.partial && p.report.is_some()));
    let mut g = c.benchmark_group("join");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("1000_invocations_4_events_each", |b| {
        b.iter_batched(|| join_input(n), run_join, BatchSize::LargeInput)
    });
    g.finish();
}

fn bench_sinks(c: &mut Criterion) {
    let n = 1000;
    let profiles = run_join(join_input(n));
    let datums: Vec<Datum> = profiles.iter().flat_map(profile_datums).collect();
    let dims = Dimensions::new(
        DimensionSet {
            function_version: true,
        },
        "orders",
        "$LATEST",
    );
    let mut g = c.benchmark_group("sinks");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("profile_to_datums_1000", |b| {
        b.iter(|| {
            black_box(&profiles)
                .iter()
                .map(|p| profile_datums(p).len())
                .sum::<usize>()
        })
    });
    g.bench_function("cloudwatch_pack_and_batch_1000", |b| {
        b.iter(|| {
            cloudwatch::batches(
                cloudwatch::pack(black_box(&datums), StorageResolution::Standard),
                &dims,
            )
        })
    });
    g.bench_function("emf_render_1000", |b| {
        b.iter(|| {
            emf::lines(
                "LambdaMemoryProfiler",
                &dims,
                black_box(&datums),
                StorageResolution::Standard,
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_intake,
    bench_telemetry,
    bench_join,
    bench_sinks
);
criterion_main!(benches);
