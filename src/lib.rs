//! lambda-memory-profiler: an AWS Lambda extension that joins the platform's memory figures, the
//! runtime's `/proc` figures and the Python decorator's measurements into one record per invocation.
//!
//! Data flows one way: `sources` → `invocation` (the join) → `metrics` → `sinks`; `lifecycle`
//! talks to the Extensions API and `flush` decides when the sinks send.

pub mod config;
pub mod invocation;
pub mod metrics;
pub mod sinks;
pub mod sources;
pub mod stats;
