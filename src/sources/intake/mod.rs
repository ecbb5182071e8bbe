//! The decorator's per-invocation records: UDP datagrams on 127.0.0.1 (docs/protocol.md, versions
//! 1 and 2).

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::invocation::SourceEvent;
use crate::sources::procfs;
use crate::stats::{Counters, RateLimiter};

mod record;

pub use record::{
    parse_datagram, DecoratorRecord, GcStats, Heap, HeapSite, IntakeError, IntakeRecord, TopSite,
    Trace, MAX_DATAGRAM, PROTOCOL_VERSIONS,
};

/// Receive buffer asked for: a burst of records (a handler's sub-millisecond invocations, a
/// flood) waits in the kernel while the extension is busy. The kernel's default (~208 KiB) holds
/// about 200 records; the kernel caps the request at `net.core.rmem_max`.
pub const RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// Binds the intake socket on 127.0.0.1 only, with a receive buffer sized for bursts; returns
/// it and the buffer the kernel granted.
pub async fn bind(port: u16) -> std::io::Result<(UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // A refused size is not fatal: the default buffer still works, with more drops.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    let granted = socket.recv_buffer_size().unwrap_or(0);
    socket.bind(&std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)).into())?;
    socket.set_nonblocking(true)?;
    Ok((UdpSocket::from_std(socket.into())?, granted))
}

/// The request ids of the last few INVOKE events, shared with the intake so that it reads the
/// runtime's `/proc` (a dozen microseconds) only for a record of a real invocation: a flood of
/// forged records must not cost that each.
#[derive(Debug, Default)]
pub struct CurrentInvocations(std::sync::Mutex<std::collections::VecDeque<String>>);

/// INVOKE ids kept for the intake: an invocation's record arrives during it or the next.
const CURRENT_INVOCATIONS: usize = 4;
/// `/proc` reads allowed per period for records whose id no INVOKE named yet.
const UNNAMED_READS_PER_PERIOD: u32 = 8;
/// The period of [`UNNAMED_READS_PER_PERIOD`].
const UNNAMED_READS_PERIOD: Duration = Duration::from_millis(100);

impl CurrentInvocations {
    /// An INVOKE event named `request_id`.
    pub fn started(&self, request_id: &str) {
        if let Ok(mut ids) = self.0.lock() {
            if ids.len() >= CURRENT_INVOCATIONS {
                ids.pop_front();
            }
            ids.push_back(request_id.to_owned());
        }
    }

    /// True when one of the last INVOKE events named `request_id`.
    fn contains(&self, request_id: &str) -> bool {
        self.0
            .lock()
            .map(|ids| ids.iter().any(|id| id == request_id))
            .unwrap_or(false)
    }
}

/// Receives datagrams forever, forwarding typed events. Never returns an error: every failure is
/// counted and logged (rate-limited).
pub async fn run(
    socket: UdpSocket,
    tx: mpsc::Sender<SourceEvent>,
    counters: Arc<Counters>,
    current: Arc<CurrentInvocations>,
) {
    // One byte more than the limit, so an oversized datagram is detectable (recv truncates).
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut warn = RateLimiter::new(Duration::from_secs(60));
    let (mut unnamed_since, mut unnamed_reads) = (Instant::now(), 0u32);
    loop {
        let n = match socket.recv_from(&mut buf).await {
            Ok((n, _)) => n,
            Err(e) => {
                if let Some(s) = warn.check(Instant::now()) {
                    tracing::warn!(error = %e, suppressed = s, "intake receive failed");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let datagram = buf.get(..n).unwrap_or(&[]);
        let event = match parse_datagram(datagram) {
            Ok(IntakeRecord::Hello { pid, runtime, sink }) => {
                Counters::incr(&counters.intake_received);
                tracing::debug!(?pid, ?runtime, ?sink, "decorator hello");
                SourceEvent::DecoratorHello { pid, sink }
            }
            Ok(IntakeRecord::Invocation(record)) => {
                Counters::incr(&counters.intake_received);
                // Sample the runtime's /proc now: the handler just returned. For an id no
                // INVOKE named yet (a fast handler's record can overtake it) only a few times a
                // tenth of a second: a flood of forged records must not cost a read each.
                let now = Instant::now();
                if now.saturating_duration_since(unnamed_since) >= UNNAMED_READS_PERIOD {
                    unnamed_since = now;
                    unnamed_reads = 0;
                }
                let named = current.contains(&record.request_id);
                let read = named || unnamed_reads < UNNAMED_READS_PER_PERIOD;
                if !named && read {
                    unnamed_reads += 1;
                }
                let proc_mem = record.pid.filter(|_| read).and_then(procfs::read_pid);
                SourceEvent::Decorator { record, proc_mem }
            }
            Err(e) => {
                let c = match &e {
                    IntakeError::Oversized(_) => &counters.intake_oversized,
                    IntakeError::UnknownVersion(_) | IntakeError::UnknownKind(_) => {
                        &counters.intake_unknown_version
                    }
                    IntakeError::Malformed(_) | IntakeError::NotJson { .. } => {
                        &counters.intake_malformed
                    }
                };
                Counters::incr(c);
                if let Some(s) = warn.check(Instant::now()) {
                    tracing::warn!(error = %e, suppressed = s, "intake record dropped");
                }
                continue;
            }
        };
        if tx.try_send(event).is_err() {
            Counters::incr(&counters.events_channel_full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::SinkSettings;

    const EXAMPLE: &str = r#"{
      "v": 1, "kind": "invocation",
      "request_id": "8f3c0d1e-1b7a-4f0a-9c55-3b1c7a0e2d11",
      "pid": 8, "runtime": "python3.11", "start_ms": 1764000000123.4, "duration_ms": 12.7,
      "cold_start": false, "error_type": null, "rss_peak_bytes": 61341696,
      "rss_peak_scope": "invocation", "heap_blocks": 183421,
      "gc": {"collections": 2, "collected": 140, "uncollectable": 0, "garbage": 0},
      "trace": {"reason": "rate", "peak_bytes": 52436992, "retained_bytes": 10486272,
        "retained_blocks": 3, "growth_bytes": 10486272,
        "top": [{"file": "app.py", "line": 42, "size": 10485793, "count": 1}],
        "top_truncated": 0}
    }"#;

    #[test]
    fn parses_the_protocol_example() {
        let IntakeRecord::Invocation(r) = parse_datagram(EXAMPLE.as_bytes()).unwrap() else {
            panic!("not an invocation");
        };
        assert_eq!(r.request_id, "8f3c0d1e-1b7a-4f0a-9c55-3b1c7a0e2d11");
        assert_eq!(r.pid, Some(8));
        assert_eq!(r.duration_ms, Some(12.7));
        assert_eq!(r.rss_peak_bytes, Some(61_341_696));
        assert_eq!(r.gc.as_ref().unwrap().collections, Some(2));
        let t = r.trace.as_ref().unwrap();
        assert_eq!(t.growth_bytes, Some(10_486_272));
        assert_eq!(t.top[0].line, 42);
        assert_eq!(t.top[0].file, "app.py");
    }

    #[test]
    fn parses_hello_and_ignores_unknown_fields() {
        let r = parse_datagram(
            br#"{"v":1,"kind":"hello","pid":8,"runtime":"python3.11","agent":"x","new_field":[1]}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            IntakeRecord::Hello {
                pid: Some(8),
                runtime: Some("python3.11".into()),
                sink: None,
            }
        );
    }

    #[test]
    fn a_hellos_sink_arguments_are_checked_field_by_field() {
        let hello = |sink: &str| -> Option<SinkSettings> {
            let text = format!(r#"{{"v":2,"kind":"hello","pid":8,"sink":{sink}}}"#);
            match parse_datagram(text.as_bytes()) {
                Ok(IntakeRecord::Hello { sink, .. }) => sink,
                other => panic!("{other:?}"),
            }
        };
        let all = hello(
            r#"{"namespace":"Team/Mem","dimensions":"FunctionName,FunctionVersion","storage_resolution":1}"#,
        )
        .unwrap();
        assert_eq!(all.namespace.as_deref(), Some("Team/Mem"));
        assert_eq!(all.function_version, Some(true));
        assert_eq!(
            all.storage_resolution,
            Some(crate::config::StorageResolution::High)
        );
        assert!(all.rejected.is_empty());
        // Each bad field is named and left out; the good ones stay.
        let some = hello(
            r#"{"namespace":":bad","dimensions":"FunctionName","storage_resolution":5,"color":"red"}"#,
        )
        .unwrap();
        assert_eq!(some.namespace, None);
        assert_eq!(some.function_version, Some(false));
        assert_eq!(some.storage_resolution, None);
        assert_eq!(some.rejected.len(), 3, "{:?}", some.rejected);
        assert!(some.rejected.iter().any(|r| r.starts_with("namespace=")));
        assert!(hello(r#""not an object""#).is_none());
        assert!(hello("{}").unwrap().is_empty());
    }

    #[test]
    fn nulls_and_missing_optionals_are_none() {
        let r = parse_datagram(
            br#"{"v":1,"kind":"invocation","request_id":"","rss_peak_bytes":null,"trace":null}"#,
        )
        .unwrap();
        let IntakeRecord::Invocation(r) = r else {
            panic!()
        };
        assert_eq!(r.request_id, "");
        assert_eq!(r.rss_peak_bytes, None);
        assert!(r.trace.is_none() && r.gc.is_none());
    }

    #[test]
    fn a_bad_gc_trace_or_site_does_not_cost_the_core_figures() {
        let r = parse_datagram(
            br#"{"v":1,"kind":"invocation","request_id":"r","rss_peak_bytes":5,
                "gc":{"collections":"two"},
                "trace":{"peak_bytes":10,"top":[{"file":"a.py","line":null},{"file":"b.py","line":3,"size":7,"count":1},"junk"]}}"#,
        )
        .unwrap();
        let IntakeRecord::Invocation(r) = r else {
            panic!()
        };
        assert_eq!(r.rss_peak_bytes, Some(5));
        assert!(r.gc.is_none());
        let t = r.trace.unwrap();
        assert_eq!(t.peak_bytes, Some(10));
        assert_eq!(t.top.len(), 1);
        assert_eq!(t.top[0].file, "b.py");
        let r = parse_datagram(br#"{"v":1,"kind":"invocation","request_id":"r","trace":[1]}"#);
        assert!(matches!(r, Ok(IntakeRecord::Invocation(ref x)) if x.trace.is_none()));
    }

    #[test]
    fn rejects_bad_datagrams_with_the_right_reason() {
        let oversized = vec![b' '; MAX_DATAGRAM + 1];
        assert_eq!(
            parse_datagram(&oversized),
            Err(IntakeError::Oversized(MAX_DATAGRAM + 1))
        );
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"kind\":\"invocation\"}",
            b"{\"v\":1}",
            b"{\"v\":1,\"kind\":\"invocation\"}",
            b"{\"v\":1,\"kind\":\"invocation\",\"request_id\":\"a\",\"pid\":-1}",
            b"\xff\xfe",
            b"",
        ] {
            assert!(
                matches!(
                    parse_datagram(bad),
                    Err(IntakeError::Malformed(_) | IntakeError::NotJson { .. })
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for v in ["0", "3", "\"2\"", "2.5", "-1", "null"] {
            let text = format!(r#"{{"v":{v},"kind":"invocation","request_id":"r"}}"#);
            assert_eq!(
                parse_datagram(text.as_bytes()),
                Err(IntakeError::UnknownVersion(v.into())),
                "{text}"
            );
        }
        assert_eq!(
            parse_datagram(br#"{"v":1,"kind":"metrics"}"#),
            Err(IntakeError::UnknownKind("metrics".into()))
        );
    }

    const HEAP_EXAMPLE: &str = r#"{
      "v": 2, "kind": "invocation", "request_id": "r2", "pid": 8, "anon_bytes": 50556928,
      "trace": null,
      "heap": {"live_bytes": 52428800, "allocated_bytes": 1048576, "sample_bytes": 65536,
        "samples": 812, "dropped": 0, "epoch": 1, "peak_bytes": 60000000,
        "sites": [
          {"file": "/var/task/app.py", "line": 42, "function": "handler",
           "via": "/var/lang/lib/python3.11/json/decoder.py:353",
           "delta_bytes": 65600, "live_bytes": 1312000},
          {"file": "/var/task/cache.py", "line": 7, "function": "evict", "delta_bytes": -131072}
        ],
        "sites_truncated": 3}
    }"#;

    fn invocation(text: &str) -> DecoratorRecord {
        match parse_datagram(text.as_bytes()) {
            Ok(IntakeRecord::Invocation(r)) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn both_versions_are_accepted_from_one_list() {
        assert_eq!(PROTOCOL_VERSIONS, [1, 2]);
        for v in PROTOCOL_VERSIONS {
            let hello = format!(r#"{{"v":{v},"kind":"hello","pid":8}}"#);
            assert!(matches!(
                parse_datagram(hello.as_bytes()),
                Ok(IntakeRecord::Hello { pid: Some(8), .. })
            ));
            let r = invocation(&format!(
                r#"{{"v":{v},"kind":"invocation","request_id":"r","rss_peak_bytes":5}}"#
            ));
            assert_eq!(
                (r.rss_peak_bytes, r.heap, r.heap_malformed),
                (Some(5), None, false)
            );
        }
    }

    #[test]
    fn parses_the_heap_object_of_version_2() {
        let r = invocation(HEAP_EXAMPLE);
        assert_eq!(r.anon_bytes, Some(50_556_928));
        assert!(!r.heap_malformed);
        let h = r.heap.expect("heap");
        assert_eq!(h.live_bytes, Some(52_428_800));
        assert_eq!(h.allocated_bytes, Some(1_048_576));
        assert_eq!(h.sample_bytes, Some(65_536));
        assert_eq!(
            (h.samples, h.dropped, h.epoch),
            (Some(812), Some(0), Some(1))
        );
        assert_eq!(h.sites_truncated, Some(3));
        assert_eq!(h.sites.len(), 2);
        assert_eq!(
            h.sites[0],
            HeapSite {
                file: "/var/task/app.py".into(),
                line: 42,
                function: Some("handler".into()),
                via: Some("/var/lang/lib/python3.11/json/decoder.py:353".into()),
                delta_bytes: 65_600,
                live_bytes: Some(1_312_000),
            }
        );
        // `via` and `live_bytes` are optional; `delta_bytes` is signed.
        assert_eq!(h.sites[1].via, None);
        assert_eq!(h.sites[1].live_bytes, None);
        assert_eq!(h.sites[1].delta_bytes, -131_072);
    }

    #[test]
    fn a_heap_object_may_be_null_absent_or_partly_null() {
        let r = invocation(r#"{"v":2,"kind":"invocation","request_id":"r","heap":null}"#);
        assert_eq!((r.heap, r.heap_malformed), (None, false));
        let r = invocation(r#"{"v":2,"kind":"invocation","request_id":"r"}"#);
        assert_eq!((r.heap, r.heap_malformed), (None, false));
        let r = invocation(
            r#"{"v":2,"kind":"invocation","request_id":"r","heap":{"live_bytes":null,"epoch":3}}"#,
        );
        let h = r.heap.expect("an object of nulls is an object");
        assert_eq!((h.live_bytes, h.epoch, h.sites.len()), (None, Some(3), 0));
    }

    #[test]
    fn a_version_1_record_never_carries_heap() {
        let text = HEAP_EXAMPLE.replacen("\"v\": 2", "\"v\": 1", 1);
        let r = invocation(&text);
        assert_eq!(r.heap, None, "not a field of version 1");
        assert!(!r.heap_malformed, "an unknown field, not a malformed one");
        assert_eq!(r.anon_bytes, Some(50_556_928));
    }

    #[test]
    fn a_malformed_heap_object_drops_only_itself() {
        for bad in [
            r#""heap":[1]"#,
            r#""heap":7"#,
            r#""heap":"x""#,
            r#""heap":{"live_bytes":"big"}"#,
            r#""heap":{"live_bytes":-1}"#,
            r#""heap":{"live_bytes":1.5}"#,
            r#""heap":{"epoch":{}}"#,
            r#""heap":{"sites_truncated":-2}"#,
        ] {
            let text = format!(
                r#"{{"v":2,"kind":"invocation","request_id":"r","rss_peak_bytes":5,
                    "gc":{{"collections":2}},"trace":{{"peak_bytes":10}},{bad}}}"#
            );
            let r = invocation(&text);
            assert_eq!(r.heap, None, "{bad}");
            assert!(r.heap_malformed, "{bad}");
            assert_eq!(r.rss_peak_bytes, Some(5), "{bad}");
            assert_eq!(r.gc.as_ref().and_then(|g| g.collections), Some(2));
            assert_eq!(r.trace.as_ref().and_then(|t| t.peak_bytes), Some(10));
        }
    }

    #[test]
    fn a_malformed_heap_site_drops_only_itself() {
        let r = invocation(
            r#"{"v":2,"kind":"invocation","request_id":"r","heap":{"live_bytes":9,"sites":[
                {"file":"a.py","line":1,"delta_bytes":5},
                {"file":"b.py","line":2},
                {"file":"c.py","line":null,"delta_bytes":5},
                {"file":"d.py","line":4,"delta_bytes":5.5},
                {"line":5,"delta_bytes":5},
                "junk",
                {"file":"f.py","line":6,"delta_bytes":-7,"via":null,"function":null}
            ]}}"#,
        );
        let h = r.heap.expect("heap kept");
        assert_eq!(h.live_bytes, Some(9));
        let files: Vec<&str> = h.sites.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(files, ["a.py", "f.py"]);
        let r = invocation(
            r#"{"v":2,"kind":"invocation","request_id":"r","heap":{"live_bytes":9,"sites":{}}}"#,
        );
        assert_eq!(
            r.heap.map(|h| (h.live_bytes, h.sites.len())),
            Some((Some(9), 0))
        );
    }

    #[test]
    fn a_record_at_the_size_limit_is_accepted() {
        let mut s = String::from(r#"{"v":1,"kind":"hello","pad":""#);
        let pad = MAX_DATAGRAM - s.len() - 2;
        s.push_str(&"x".repeat(pad));
        s.push_str("\"}");
        assert_eq!(s.len(), MAX_DATAGRAM);
        assert!(parse_datagram(s.as_bytes()).is_ok());
    }

    /// The example records of docs/protocol.md: `tests/fixtures/protocol/<name>`.
    fn protocol_fixture(name: &str) -> IntakeRecord {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/protocol")
            .join(name);
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        parse_datagram(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn parses_every_protocol_fixture() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // Each one is checked below: a new example needs its checks here.
        assert_eq!(
            names,
            [
                "hello-rust.json",
                "hello-sink.json",
                "hello.json",
                "invocation-rust.json",
                "invocation-v1.json",
                "invocation-v2.json"
            ]
        );

        let hello = |name| match protocol_fixture(name) {
            IntakeRecord::Hello { pid, runtime, sink } => (pid, runtime, sink),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(
            hello("hello.json"),
            (Some(8), Some("python3.11".into()), None)
        );
        assert_eq!(
            hello("hello-rust.json"),
            (Some(9), Some("rust".into()), None)
        );
        let (_, _, sink) = hello("hello-sink.json");
        assert_eq!(
            sink,
            Some(SinkSettings {
                namespace: Some("Team/Checkout".into()),
                function_version: Some(true),
                storage_resolution: Some(crate::config::StorageResolution::High),
                rejected: Vec::new(),
            })
        );

        let invocation = |name| match protocol_fixture(name) {
            IntakeRecord::Invocation(r) => *r,
            other => panic!("{name}: {other:?}"),
        };
        let v2 = invocation("invocation-v2.json");
        assert_eq!(v2.request_id, "8f3c0d1e-1b7a-4f0a-9c55-3b1c7a0e2d11");
        assert_eq!(
            (v2.pid, v2.runtime.as_deref()),
            (Some(8), Some("python3.11"))
        );
        assert_eq!(
            (v2.start_ms, v2.duration_ms),
            (Some(1_764_000_000_123.4), Some(12.7))
        );
        assert_eq!(
            (v2.cold_start, v2.error_type.as_deref()),
            (Some(false), None)
        );
        assert_eq!(v2.rss_peak_bytes, Some(61_341_696));
        assert_eq!(v2.rss_peak_scope.as_deref(), Some("invocation"));
        assert_eq!(
            (v2.heap_blocks, v2.anon_bytes),
            (Some(183_421), Some(50_556_928))
        );
        assert_eq!(v2.gc.as_ref().and_then(|g| g.collected), Some(140));
        let t = v2.trace.as_ref().expect("trace");
        assert_eq!((t.reason.as_deref(), t.growth_bytes), (Some("rate"), None));
        assert_eq!(
            (t.peak_bytes, t.retained_bytes),
            (Some(52_436_992), Some(10_617_600))
        );
        assert_eq!(t.top.len(), 2);
        assert_eq!((t.top[0].via.as_deref(), t.top[1].count), (None, 1200));
        assert_eq!(
            t.top[1].via.as_deref(),
            Some("/var/lang/lib/python3.11/json/decoder.py:353")
        );
        assert!(!v2.heap_malformed);
        let h = v2.heap.as_ref().expect("heap");
        assert_eq!(
            (h.live_bytes, h.allocated_bytes),
            (Some(52_428_800), Some(1_048_576))
        );
        assert_eq!(
            (h.sample_bytes, h.samples, h.epoch),
            (Some(16_384), Some(3240), Some(0))
        );
        assert_eq!(h.sites.len(), 1);
        assert_eq!(h.sites[0].function.as_deref(), Some("handler"));
        assert_eq!(
            (h.sites[0].delta_bytes, h.sites[0].live_bytes),
            (16_450, Some(1_312_000))
        );

        // Version 1 is version 2 without `heap`.
        let v1 = invocation("invocation-v1.json");
        assert_eq!(v1, DecoratorRecord { heap: None, ..v2 });

        // The Rust layer's record: its `rss_bytes` is a field this receiver does not read.
        let rust = invocation("invocation-rust.json");
        assert_eq!(rust.runtime.as_deref(), Some("rust"));
        assert_eq!((rust.cold_start, rust.gc), (Some(true), None));
        assert_eq!(rust.rss_peak_bytes, Some(41_943_040));
        assert_eq!((rust.heap, rust.heap_malformed), (None, false));
        let t = rust.trace.expect("trace");
        assert_eq!(
            (t.reason.as_deref(), t.growth_bytes),
            (Some("always"), Some(1_048_576))
        );
        assert_eq!((t.retained_bytes, t.top.len()), (Some(1_048_576), 0));
    }

    #[tokio::test]
    async fn receiver_counts_garbage_and_forwards_records() {
        let (sock, granted) = bind(0).await.unwrap();
        // Linux reports twice what it grants; at least the kernel's default either way.
        assert!(granted >= 200 * 1024, "receive buffer {granted}");
        let addr = sock.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let (tx, mut rx) = mpsc::channel(8);
        let counters = Arc::new(Counters::default());
        let current = Arc::new(CurrentInvocations::default());
        current.started("8f3c0d1e-1b7a-4f0a-9c55-3b1c7a0e2d11");
        tokio::spawn(run(sock, tx, counters.clone(), current));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"garbage", addr).unwrap();
        client
            .send_to(&vec![b'{'; MAX_DATAGRAM + 10], addr)
            .unwrap();
        client.send_to(br#"{"v":9,"kind":"hello"}"#, addr).unwrap();
        client.send_to(EXAMPLE.as_bytes(), addr).unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(ev, SourceEvent::Decorator { .. }));
        assert_eq!(
            counters
                .intake_malformed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            counters
                .intake_oversized
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            counters
                .intake_unknown_version
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
