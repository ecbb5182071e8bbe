//! The Rust truth of the decorator → extension hand-off (docs/protocol.md): the accepted
//! versions, the datagram limit, the defaults both sides read, the record envelope, the
//! `/proc/<pid>/status` parser and the Embedded Metric Format renderer.
//!
//! The extension (the `lambda-memory-profiler` crate) and the Rust layer (`rust-layer/`) both
//! build on it, so what one sends and the other accepts cannot drift apart. It depends on serde
//! and serde_json only: every Rust function that uses the layer links it. The Python decorator
//! keeps its own copies (it is stdlib only); its tests check them against this crate's source and
//! against the same fixtures (`tests/fixtures/protocol/`).

#![warn(missing_docs)]

pub mod emf;
pub mod envelope;
pub mod status;

pub use emf::{StorageResolution, Unit};
pub use envelope::{parse_envelope, Envelope, EnvelopeError, Kind};
pub use status::{parse_status, ProcMemory};

/// Protocol version 1: `hello` and `invocation` records without a `heap` object.
pub const VERSION_1: u64 = 1;
/// Protocol version 2: version 1 plus the `heap` object of `invocation` records.
pub const VERSION_2: u64 = 2;
/// The versions a receiver accepts, oldest first: the one list of them.
pub const PROTOCOL_VERSIONS: [u64; 2] = [VERSION_1, VERSION_2];
/// The first version whose `invocation` records may carry a `heap` object.
pub const HEAP_SINCE_VERSION: u64 = VERSION_2;
/// Largest datagram, in bytes: a sender trims its least significant entries to stay within it,
/// and the receiver drops (and counts) any larger one.
pub const MAX_DATAGRAM: usize = 16_384;
/// Default UDP port of the extension's intake on 127.0.0.1 (`LMP_INTAKE_PORT`).
pub const DEFAULT_INTAKE_PORT: u16 = 4243;
/// Default CloudWatch namespace of every metric (`LMP_NAMESPACE`).
pub const DEFAULT_NAMESPACE: &str = "LambdaMemoryProfiler";
