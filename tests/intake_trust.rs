//! Nothing false published, nothing lost unseen, end to end: a handler that floods the intake
//! with malformed datagrams and with well-formed records of invented request ids, under the
//! emulator with the real runtime client and decorator. Exactly its real invocations are
//! published, complete, every value in range, and `RecordsDropped` adds up to what was sent
//! and not joined (the kernel's own drops included).
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lambda_emulator::{Emulator, InvokeStatus};
use std::time::Duration;

const INVOCATIONS: usize = 100;
const MALFORMED_PER_INVOCATION: usize = 10_000;
const FORGED_PER_INVOCATION: usize = 1_000;
/// Malformed datagrams sent at once in one invocation (the kernel's drops, if the queue
/// overflows, are part of the count).
const BURST: usize = 20_000;

/// Sends, at every invocation, malformed datagrams and forged records (plausible in shape,
/// impossible in value, for request ids no INVOKE named), paced in bursts so that the real
/// record sent after the handler returns is not the one the kernel drops.
const FLOODER: &str = r#"
import json, os, socket, time, uuid
from lambda_memory_profiler import memory_profile

PORT = int(os.environ["LMP_INTAKE_PORT"])
_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_sent = {"malformed": 0, "forged": 0}

def forged():
    return json.dumps({
        "v": 1, "kind": "invocation", "request_id": str(uuid.uuid4()), "pid": os.getpid(),
        "duration_ms": 1e308, "rss_peak_bytes": 18 * 10**18, "anon_bytes": 10**12,
        "heap_blocks": 10**15, "cold_start": False,
        "trace": {"reason": "rate", "growth_bytes": -9 * 10**18, "retained_bytes": 10**18,
                  "top": [{"file": "evil.py", "line": 1, "size": 10**18, "count": 1}]},
    }).encode()

def send(data, kind):
    try:
        _sock.sendto(data, ("127.0.0.1", PORT))
        _sent[kind] += 1
    except OSError:
        pass  # not sent: not counted

@memory_profile
def handler(event, context):
    # One unpaced burst, more than the receive queue holds: the kernel drops some (counted).
    for _ in range(event.get("burst", 0)):
        send(b"not json", "malformed")
    for burst in range(10):
        for _ in range(event["malformed"] // 10):
            send(b"{\"v\":1,\"kind\":\"invocation\",\"request_id\":", "malformed")
        for _ in range(event["forged"] // 10):
            send(forged(), "forged")
        time.sleep(0.005)
    time.sleep(0.1)  # the extension reads the burst before the real record comes
    return dict(_sent)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_false_records_publishes_only_the_real_invocations() {
    let py = common::python();
    let dir = common::temp_dir("intake-trust");
    let mut cfg = common::config(
        py,
        &dir,
        FLOODER,
        &[
            ("LMP_SINK", "emf".into()),
            ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ],
    );
    cfg.memory_mb = 512;
    cfg.timeout = Duration::from_secs(30);
    let em = Emulator::start(cfg).await.expect("emulator starts");
    let mut sent = serde_json::Value::Null;
    for i in 0..INVOCATIONS {
        let out = em
            .invoke(serde_json::json!({
                "malformed": MALFORMED_PER_INVOCATION,
                "forged": FORGED_PER_INVOCATION,
                "burst": if i == INVOCATIONS / 2 { BURST } else { 0 },
            }))
            .await
            .expect("invoke");
        assert_eq!(out.status, InvokeStatus::Success, "{out:?}");
        sent = out.response.unwrap_or_default();
    }
    let lines = common::shut_down_cleanly(em).await;
    let emf = common::emf_docs(&lines);
    let values = |m: &str| common::metric_values(&emf, m);
    let last = lines
        .iter()
        .find(|l| l.contains("flushed; exiting"))
        .cloned()
        .unwrap_or_default();
    eprintln!("{last}");
    assert!(last.contains(" kernel_drops="), "{last}");

    // Exactly the real invocations, each complete (the report and the decorator's record).
    let durations = values("Duration");
    assert_eq!(durations.len(), INVOCATIONS, "Duration values");
    assert_eq!(values("ColdStart").len(), INVOCATIONS);
    assert_eq!(
        values("MaxMemoryUsed").len(),
        INVOCATIONS,
        "platform reports"
    );
    assert_eq!(
        values("RuntimeRssPeak").len(),
        INVOCATIONS,
        "decorator records"
    );
    assert_eq!(values("OutOfMemory").iter().sum::<f64>(), 0.0);
    // Every value in range: nothing of the forged records got through.
    assert!(
        durations.iter().all(|d| (0.0..=30_000.0).contains(d)),
        "{durations:?}"
    );
    for m in [
        "RuntimeRssPeak",
        "RuntimeRss",
        "PythonHeapRetained",
        "PythonHeapPeak",
    ] {
        assert!(
            values(m)
                .iter()
                .all(|b| (0.0..=512.0 * 1048576.0).contains(b)),
            "{m}: {:?}",
            values(m)
        );
    }
    assert!(values("RecommendedMemorySize")
        .iter()
        .all(|mb| *mb <= 512.0));
    assert!(
        !lines.iter().any(|l| l.contains("evil.py")),
        "a forged site was logged"
    );

    // Every datagram sent and not joined is counted: the malformed and the forged ones.
    let sent_total =
        sent["malformed"].as_f64().unwrap_or(0.0) + sent["forged"].as_f64().unwrap_or(0.0);
    assert_eq!(
        sent_total,
        (INVOCATIONS * (MALFORMED_PER_INVOCATION + FORGED_PER_INVOCATION) + BURST) as f64
    );
    let dropped: f64 = values("RecordsDropped").iter().sum();
    eprintln!("sent {sent_total} false datagrams; RecordsDropped {dropped}");
    assert_eq!(dropped, sent_total, "RecordsDropped = sent - joined");
    // Bounded output: the extension's own lines do not grow with the flood.
    let own_lines = lines.iter().filter(|l| !l.contains("\"_aws\"")).count();
    assert!(own_lines < 4 * INVOCATIONS, "{own_lines} lines");
}
