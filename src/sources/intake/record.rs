//! The records of the hand-off as the extension reads them (docs/protocol.md, versions 1 and
//! 2): one datagram parsed into a typed `hello` or `invocation`, with every figure optional and a
//! malformed part dropped alone.

use lmp_protocol::{EnvelopeError, Kind, HEAP_SINCE_VERSION};
use serde::Deserialize;
use thiserror::Error;

use crate::config;
use crate::sinks::SinkSettings;

/// The limit and the accepted versions are the protocol crate's (one definition each).
pub use lmp_protocol::{MAX_DATAGRAM, PROTOCOL_VERSIONS};

/// Garbage-collector activity during one invocation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GcStats {
    /// `gc.collections`: collections (all generations) that ran during the invocation.
    pub collections: Option<u64>,
    /// `gc.collected`: objects the collector freed during the invocation.
    pub collected: Option<u64>,
    /// `gc.uncollectable`: objects the collector found uncollectable during the invocation.
    pub uncollectable: Option<u64>,
    /// `gc.garbage`: `len(gc.garbage)` at the invocation's end.
    pub garbage: Option<u64>,
}

/// One allocation site holding retained memory.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
pub struct TopSite {
    /// Path of the site's source file as the interpreter sees it; `""` when not sent.
    #[serde(default)]
    pub file: String,
    /// Line number in `file`; 0 when not sent.
    #[serde(default)]
    pub line: u64,
    /// Bytes allocated at the site during the invocation and still held at its end.
    #[serde(default)]
    pub size: u64,
    /// Number of blocks making up `size`.
    #[serde(default)]
    pub count: u64,
    /// `file:line` of the allocating frame when the site is a frame of the function's own code
    /// further up the stack (the library line the memory was allocated in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// What `tracemalloc` saw on a traced (sampled) invocation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Trace {
    /// `trace.reason`: why the invocation was traced (`cold`, `rate`, `suspect`, `always`).
    pub reason: Option<String>,
    /// `trace.peak_bytes`: peak of memory allocated during the invocation, bytes; `None` in
    /// `shared` mode when the invocation did not raise the session's peak.
    pub peak_bytes: Option<u64>,
    /// `trace.retained_bytes`: memory allocated during the invocation and still held at its
    /// end (gross), bytes.
    pub retained_bytes: Option<u64>,
    /// `trace.retained_blocks`: number of blocks of `retained_bytes`; `None` in `shared` mode.
    pub retained_blocks: Option<u64>,
    /// `trace.growth_bytes`: net growth of traced memory, bytes (may be negative); `None` in
    /// `own` mode, which cannot measure it.
    pub growth_bytes: Option<i64>,
    /// Entries that do not parse are skipped, never the record.
    #[serde(default, deserialize_with = "lenient_list")]
    pub top: Vec<TopSite>,
    /// `trace.top_truncated`: entries the sender dropped from `top` to fit the datagram limit.
    pub top_truncated: Option<u64>,
}

/// What the native sampling heap profiler saw (protocol version 2): the Python allocator's OBJ
/// and MEM domains, sampled by bytes, each sample weighted so that the sum is an unbiased
/// estimate of the live bytes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Heap {
    /// Estimated live bytes at the invocation's end (a sampled estimate).
    pub live_bytes: Option<u64>,
    /// Bytes requested from those domains during the invocation (an exact count, freed or not).
    pub allocated_bytes: Option<u64>,
    /// Mean sampling interval, bytes.
    pub sample_bytes: Option<u64>,
    /// Live samples held now.
    pub samples: Option<u64>,
    /// Samples not held (table full) since the process started.
    pub dropped: Option<u64>,
    /// Increments when the sampler restarted: `live_bytes` of another epoch are not comparable.
    pub epoch: Option<u64>,
    /// Top sites by |`delta_bytes`| since the previous record; entries that do not parse are
    /// skipped, never the object.
    #[serde(default, deserialize_with = "lenient_list")]
    pub sites: Vec<HeapSite>,
    /// `heap.sites_truncated`: sites left out of `sites` (beyond `LMP_TOP` or the size limit).
    pub sites_truncated: Option<u64>,
}

/// One allocation site of the sampler: its estimated live bytes and their change.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
pub struct HeapSite {
    /// Path of the site's source file as the interpreter sees it.
    pub file: String,
    /// Line number in `file`.
    pub line: u64,
    /// Name of the function the site is in; `None` when not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// `file:line` of the allocating frame when it is not the site itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Change of the site's estimated live bytes since the previous record (signed).
    pub delta_bytes: i64,
    /// The site's estimated live bytes now; `None` when not sent (an optional field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_bytes: Option<u64>,
}

/// The decorator's `invocation` record. Absent figures are `None` and produce no datum.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DecoratorRecord {
    /// `context.aws_request_id`, the join key; `""` when the handler ran without a Lambda
    /// context (such a record is never joined).
    pub request_id: String,
    /// The sender's process id, used to read `/proc/<pid>/status`.
    pub pid: Option<u32>,
    /// The sender's runtime: `python3.11`, `rust`, ...
    pub runtime: Option<String>,
    /// Wall-clock start of the invocation, epoch milliseconds.
    pub start_ms: Option<f64>,
    /// Handler duration measured by the decorator, milliseconds.
    pub duration_ms: Option<f64>,
    /// First invocation of the sender's process.
    pub cold_start: Option<bool>,
    /// Class name of the exception the handler raised; `None` when it returned.
    pub error_type: Option<String>,
    /// Peak resident set size of the process, bytes (of the invocation or the process's
    /// lifetime: see `rss_peak_scope`).
    pub rss_peak_bytes: Option<u64>,
    /// `invocation` when the high-water mark was reset at the invocation's start, `process`
    /// when `rss_peak_bytes` is the process's lifetime peak.
    pub rss_peak_scope: Option<String>,
    /// `sys.getallocatedblocks()` at the invocation's end (live allocator blocks); `None` on
    /// the invocations where the decorator skips it on large heaps.
    pub heap_blocks: Option<u64>,
    /// The sender's resident anonymous memory at the invocation's end (`/proc/self/statm`).
    pub anon_bytes: Option<u64>,
    /// A malformed `gc` or `trace` object is dropped alone: the core figures survive it.
    #[serde(default, deserialize_with = "lenient")]
    pub gc: Option<GcStats>,
    /// `tracemalloc` figures; `None` on untraced invocations (or when the object is malformed).
    #[serde(default, deserialize_with = "lenient")]
    pub trace: Option<Trace>,
    /// The native sampler's figures (version 2 only); a malformed object is dropped alone.
    #[serde(default, deserialize_with = "lenient")]
    pub heap: Option<Heap>,
    /// The record carried a `heap` object that did not parse (set by [`parse_datagram`]): the
    /// invocation has no heap sample, but its sender does run the sampler.
    #[serde(skip)]
    pub heap_malformed: bool,
}

/// Deserializes an optional object, `None` when it does not parse (instead of failing the record).
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// Deserializes a list keeping the entries that parse; empty when it is not an array.
fn lenient_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|i| serde_json::from_value(i).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// A record understood by this receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum IntakeRecord {
    /// `hello`: the decorator wraps a handler, so a record will come for each invocation.
    Hello {
        /// The sender's process id (the runtime's pid the extension watches).
        pid: Option<u32>,
        /// The sender's runtime: `python3.11`, `rust`, ...
        runtime: Option<String>,
        /// The decorator's explicit sink arguments; values no parser takes are in `rejected`.
        sink: Option<SinkSettings>,
    },
    /// `invocation`: one invocation's figures, sent after the handler returned or raised.
    Invocation(Box<DecoratorRecord>),
}

/// Why a datagram was not used.
#[derive(Debug, Error, PartialEq)]
pub enum IntakeError {
    /// Larger than [`MAX_DATAGRAM`]; carries the datagram's size in bytes.
    #[error("datagram of {0} bytes exceeds the {MAX_DATAGRAM}-byte limit")]
    Oversized(usize),
    /// JSON, but not a record: not an object, no `v` or `kind`, or a core field of the wrong
    /// type; carries the reason.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// Not JSON at all: no message is built (a flood of these must cost little).
    #[error("not JSON (line {line}, column {column})")]
    NotJson {
        /// Line of the first syntax error (1-based).
        line: usize,
        /// Column of the first syntax error (1-based).
        column: usize,
    },
    /// `v` is not one of [`PROTOCOL_VERSIONS`]; carries `v` as sent (JSON text).
    #[error("unsupported protocol version {0}")]
    UnknownVersion(String),
    /// `kind` is neither `hello` nor `invocation`; carries the kind sent.
    #[error("unknown record kind {0:?}")]
    UnknownKind(String),
}

impl From<EnvelopeError> for IntakeError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Oversized(n) => IntakeError::Oversized(n),
            EnvelopeError::NotJson { line, column } => IntakeError::NotJson { line, column },
            EnvelopeError::UnknownVersion(v) => IntakeError::UnknownVersion(v),
            EnvelopeError::UnknownKind(k) => IntakeError::UnknownKind(k),
            // The remaining faults are counted as malformed records, with the reason named.
            EnvelopeError::NotAnObject
            | EnvelopeError::MissingVersion
            | EnvelopeError::MissingKind => IntakeError::Malformed(e.to_string()),
        }
    }
}

/// The fields of a `hello` record this receiver reads.
#[derive(Deserialize)]
struct HelloBody {
    pid: Option<u32>,
    runtime: Option<String>,
    #[serde(default)]
    sink: Option<serde_json::Value>,
}

/// The `sink` object of a hello: each field checked by the rule of its `LMP_*` variable; a field
/// that fails is left out and named in `rejected` (the extension keeps its own value for it).
fn sink_settings(v: &serde_json::Value) -> Option<SinkSettings> {
    let obj = v.as_object()?;
    let mut out = SinkSettings::default();
    for (field, value) in obj {
        let raw = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let checked = match field.as_str() {
            "namespace" => config::parse_namespace(raw.trim()).map(|n| out.namespace = Some(n)),
            "dimensions" => config::parse_dimensions(&raw)
                .map(|d| out.function_version = Some(d.function_version)),
            "storage_resolution" => config::parse_storage_resolution(raw.trim())
                .map(|r| out.storage_resolution = Some(r)),
            _ => Err("not a sink setting".to_string()),
        };
        if let Err(reason) = checked {
            if out.rejected.len() < MAX_REJECTED_SETTINGS {
                let shown: String = raw.chars().take(80).collect();
                out.rejected.push(format!("{field}={shown:?} ({reason})"));
            }
        }
    }
    Some(out)
}

/// Rejected fields of one hello named in its warning (a hello is one datagram: a handful).
const MAX_REJECTED_SETTINGS: usize = 8;

/// Parses one datagram into a typed record.
pub fn parse_datagram(bytes: &[u8]) -> Result<IntakeRecord, IntakeError> {
    let envelope = lmp_protocol::parse_envelope(bytes)?;
    // The parsed value is handed over, not cloned: this runs once per invocation.
    let value = envelope.body;
    match envelope.kind {
        Kind::Hello => {
            let h: HelloBody =
                serde_json::from_value(value).map_err(|e| IntakeError::Malformed(e.to_string()))?;
            Ok(IntakeRecord::Hello {
                pid: h.pid,
                runtime: h.runtime,
                sink: h.sink.as_ref().and_then(sink_settings),
            })
        }
        Kind::Invocation => {
            let heap_sent = value.get("heap").is_some_and(|h| !h.is_null());
            let mut r: DecoratorRecord =
                serde_json::from_value(value).map_err(|e| IntakeError::Malformed(e.to_string()))?;
            if envelope.version < HEAP_SINCE_VERSION {
                // Not a field of version 1: ignored, as unknown fields are.
                r.heap = None;
            } else {
                r.heap_malformed = heap_sent && r.heap.is_none();
            }
            Ok(IntakeRecord::Invocation(Box::new(r)))
        }
    }
}
