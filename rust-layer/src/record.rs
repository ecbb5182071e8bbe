//! The records of the decorator → extension protocol (docs/protocol.md, version 1) and the
//! Embedded Metric Format line printed when no extension listens.
//!
//! The version, the kinds and the EMF renderer are the protocol crate's (`lmp_protocol`), shared
//! with the extension: the records parse there, and the fallback line has the extension's shape.

use lmp_protocol::emf::{self, Header, Unit};
use lmp_protocol::{Kind, VERSION_1};
use serde::Serialize;
use serde_json::{json, Number};

use crate::config::{Config, Dimensions};
use crate::procfs::RssScope;

/// `runtime` of every record.
pub const RUNTIME: &str = "rust";
/// `agent` of the `hello` record.
pub const AGENT: &str = concat!("lambda_memory_profile/", env!("CARGO_PKG_VERSION"));

/// `hello`: sent once per process, before the first invocation record.
#[derive(Debug, Clone, Serialize)]
pub struct Hello {
    /// Protocol version: 1 (the layer sends no `heap` object).
    pub v: u64,
    /// Record kind: `hello`.
    pub kind: &'static str,
    /// This process's id: the extension reads `/proc/<pid>` and watches it.
    pub pid: u32,
    /// The sender's runtime: [`RUNTIME`] (`rust`).
    pub runtime: &'static str,
    /// The sender and its version: [`AGENT`].
    pub agent: &'static str,
}

impl Hello {
    /// The `hello` of this process (version 1, no `sink` object).
    pub fn new() -> Self {
        Self {
            // Version 1: the layer has no `heap` object to send.
            v: VERSION_1,
            kind: Kind::Hello.as_str(),
            pid: std::process::id(),
            runtime: RUNTIME,
            agent: AGENT,
        }
    }
}

impl Default for Hello {
    fn default() -> Self {
        Self::new()
    }
}

/// The allocator's figures for one invocation, in the protocol's `trace` object.
///
/// The counting allocator sees every allocation and every free, so these are net figures:
/// `growth_bytes` is the exact change of the live heap over the invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeapTrace {
    /// Always `always`: every invocation is measured (counting costs nanoseconds per allocation).
    pub reason: &'static str,
    /// `allocator`: figures from the counting global allocator.
    pub mode: &'static str,
    /// Peak of the live heap during the invocation minus the live heap at its start.
    pub peak_bytes: u64,
    /// Net heap growth, floored at 0.
    pub retained_bytes: u64,
    /// Net change of live blocks, floored at 0.
    pub retained_blocks: u64,
    /// Net heap change over the invocation (negative when it freed more than it kept).
    pub growth_bytes: i64,
    /// Live blocks at the end minus at the start.
    pub heap_blocks_delta: i64,
    /// No allocation sites: the allocator does not walk stacks.
    pub top: [(); 0],
    /// Sites dropped from `top` for the size limit: always 0 (there are none).
    pub top_truncated: u64,
}

/// `invocation`: one per invocation, after the handler returned or failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvocationRecord {
    /// Protocol version: 1.
    pub v: u64,
    /// Record kind: `invocation`.
    pub kind: &'static str,
    /// The Lambda request id (`context.request_id`), which the extension joins on.
    pub request_id: String,
    /// This process's id (the extension reads `/proc/<pid>/status` with it).
    pub pid: u32,
    /// The sender's runtime: [`RUNTIME`] (`rust`).
    pub runtime: &'static str,
    /// Wall-clock start of the invocation, epoch milliseconds (0.1 ms precision).
    pub start_ms: f64,
    /// Duration measured by the layer, milliseconds (µs precision); published as `Duration`.
    pub duration_ms: f64,
    /// First invocation of this process; published as `ColdStart`.
    pub cold_start: bool,
    /// The handler's `errorType` (its `Diagnostic`, or the panic type the runtime reports);
    /// `None` on success.
    pub error_type: Option<String>,
    /// `VmRSS` at the end of the invocation (the extension reads its own; the fallback line
    /// publishes this one as `RuntimeRss`).
    pub rss_bytes: Option<u64>,
    /// `VmHWM` at the end of the invocation, bytes; `None` when `/proc/self/status` is unreadable.
    pub rss_peak_bytes: Option<u64>,
    /// `invocation` when the peak mark was reset at the start (`/proc/self/clear_refs`), else
    /// `process` (`rss_peak_bytes` is then the process's lifetime peak).
    pub rss_peak_scope: &'static str,
    /// Live blocks of the counting allocator at the end; `null` without it.
    pub heap_blocks: Option<u64>,
    /// No garbage collector in Rust.
    pub gc: Option<()>,
    /// `null` when no counting allocator is installed.
    pub trace: Option<HeapTrace>,
}

/// Serializes a record; the records hold no map keys or floats that JSON cannot carry except
/// non-finite durations, which are written as 0.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // ok: serializing plain structs of strings, integers and finite floats cannot fail; a
    // non-finite float becomes `null` rather than an error in serde_json.
    serde_json::to_vec(record).unwrap_or_default()
}

/// A figure of a record as its metric's value; `None` when the record lacks it.
type Figure = fn(&InvocationRecord) -> Option<Number>;

/// The fallback line's metrics, in order: each name and unit is a row of the extension's metric
/// table (scripts/check-alarms.py checks them against the README's).
const EMF_METRICS: &[(&str, Unit, Figure)] = &[
    ("Duration", Unit::Milliseconds, |r| {
        Number::from_f64(r.duration_ms)
    }),
    ("ColdStart", Unit::Count, |r| {
        Some(u8::from(r.cold_start).into())
    }),
    ("RuntimeRss", Unit::Bytes, |r| r.rss_bytes.map(Number::from)),
    // A lifetime peak is not this invocation's: it stays a plain property.
    ("RuntimeRssPeak", Unit::Bytes, |r| {
        r.rss_peak_bytes
            .filter(|_| r.rss_peak_scope == RssScope::Invocation.as_str())
            .map(Number::from)
    }),
    ("PythonHeapPeak", Unit::Bytes, |r| {
        r.trace.as_ref().map(|t| t.peak_bytes.into())
    }),
    ("PythonHeapRetained", Unit::Bytes, |r| {
        r.trace.as_ref().map(|t| t.retained_bytes.into())
    }),
    ("PythonHeapGrowth", Unit::Bytes, |r| {
        r.trace.as_ref().map(|t| t.growth_bytes.into())
    }),
];

/// One Embedded Metric Format line carrying the figures of `record`: the same metric names,
/// units and dimension sets as the extension's EMF lines, each metric only when its figure is
/// present.
pub fn emf_line(
    record: &InvocationRecord,
    config: &Config,
    function_name: &str,
    function_version: &str,
) -> String {
    let mut dimensions = vec![("FunctionName".to_string(), function_name.to_string())];
    if config.dimensions == Dimensions::FunctionNameAndVersion {
        dimensions.push(("FunctionVersion".to_string(), function_version.to_string()));
    }
    let header = Header {
        namespace: &config.namespace,
        // Saturating: a clock before 1970 gives 0, never a wrapped figure.
        timestamp_ms: record.start_ms as u64,
        dimensions: &dimensions,
        storage_resolution: config.storage_resolution,
    };
    let metrics: Vec<emf::Metric<'_>> = EMF_METRICS
        .iter()
        .map(|(name, unit, figure)| emf::Metric {
            name,
            unit: *unit,
            values: figure(record).into_iter().collect(),
        })
        .collect();
    // Plain properties: searchable in CloudWatch Logs, never dimensions (unbounded values).
    let mut properties = vec![
        ("RequestId", json!(record.request_id)),
        ("ErrorType", json!(record.error_type)),
        ("RssPeakScope", json!(record.rss_peak_scope)),
        ("RssPeakBytes", json!(record.rss_peak_bytes)),
        ("HeapBlocks", json!(record.heap_blocks)),
    ];
    if let Some(t) = &record.trace {
        properties.push(("TraceReason", json!(t.reason)));
    }
    emf::render(&header, &metrics, properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn record(trace: bool) -> InvocationRecord {
        InvocationRecord {
            v: 1,
            kind: "invocation",
            request_id: "req-1".into(),
            pid: 8,
            runtime: RUNTIME,
            start_ms: 1764000000123.4,
            duration_ms: 12.5,
            cold_start: true,
            error_type: None,
            rss_bytes: Some(30_000_000),
            rss_peak_bytes: Some(40_000_000),
            rss_peak_scope: "invocation",
            heap_blocks: Some(120),
            gc: None,
            trace: trace.then_some(HeapTrace {
                reason: "always",
                mode: "allocator",
                peak_bytes: 8 << 20,
                retained_bytes: 1 << 20,
                retained_blocks: 1,
                growth_bytes: 1 << 20,
                heap_blocks_delta: 1,
                top: [],
                top_truncated: 0,
            }),
        }
    }

    #[test]
    fn invocation_record_has_the_protocol_fields() {
        let v: Value = serde_json::from_slice(&encode(&record(true))).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["kind"], "invocation");
        assert_eq!(v["runtime"], "rust");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["cold_start"], true);
        assert_eq!(v["error_type"], Value::Null);
        assert_eq!(v["gc"], Value::Null);
        assert_eq!(v["rss_peak_scope"], "invocation");
        assert_eq!(v["trace"]["peak_bytes"], 8 << 20);
        assert_eq!(v["trace"]["growth_bytes"], 1 << 20);
        assert_eq!(v["trace"]["top"], json!([]));
        let none: Value = serde_json::from_slice(&encode(&record(false))).unwrap();
        assert_eq!(none["trace"], Value::Null);
    }

    #[test]
    fn hello_record() {
        let v: Value = serde_json::from_slice(&encode(&Hello::new())).unwrap();
        assert_eq!(v["kind"], "hello");
        assert_eq!(v["runtime"], "rust");
        assert_eq!(v["pid"], std::process::id());
        assert!(v["agent"]
            .as_str()
            .unwrap()
            .starts_with("lambda_memory_profile/"));
    }

    #[test]
    fn emf_line_names_and_units() {
        let cfg = Config {
            dimensions: Dimensions::FunctionNameAndVersion,
            namespace: "Ns".into(),
            ..Config::default()
        };
        let v: Value = serde_json::from_str(&emf_line(&record(true), &cfg, "f", "7")).unwrap();
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "Ns");
        // Both sets, as the extension publishes: {FunctionName} alone too.
        assert_eq!(
            m["Dimensions"],
            json!([["FunctionName"], ["FunctionName", "FunctionVersion"]])
        );
        assert_eq!(v["_aws"]["Timestamp"], 1764000000123u64);
        let names: Vec<(&str, &str)> = m["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["Name"].as_str().unwrap(), x["Unit"].as_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("Duration", "Milliseconds"),
                ("ColdStart", "Count"),
                ("RuntimeRss", "Bytes"),
                ("RuntimeRssPeak", "Bytes"),
                ("PythonHeapPeak", "Bytes"),
                ("PythonHeapRetained", "Bytes"),
                ("PythonHeapGrowth", "Bytes"),
            ]
        );
        assert_eq!(v["FunctionName"], "f");
        assert_eq!(v["FunctionVersion"], "7");
        assert_eq!(v["ColdStart"], 1);
        assert_eq!(v["PythonHeapGrowth"], 1 << 20);
        assert_eq!(v["RequestId"], "req-1");
        assert_eq!(v["TraceReason"], "always");
    }

    #[test]
    fn emf_line_leaves_absent_figures_out() {
        let mut r = record(false);
        r.rss_peak_scope = "process";
        r.rss_bytes = None;
        let v: Value =
            serde_json::from_str(&emf_line(&r, &Config::default(), "f", "$LATEST")).unwrap();
        let names: Vec<&str> = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Duration", "ColdStart"]);
        assert_eq!(v["RssPeakBytes"], 40_000_000);
        assert!(v.get("FunctionVersion").is_none());
        assert!(v.get("PythonHeapPeak").is_none());
    }
}
