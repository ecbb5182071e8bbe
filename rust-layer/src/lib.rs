//! Per-invocation memory figures for Rust AWS Lambda functions.
//!
//! Two parts, used together:
//! - [`CountingAlloc`], a global allocator wrapper (over the system allocator or any other)
//!   that counts live heap bytes, their peak and live blocks with relaxed atomics;
//! - [`MemoryProfileLayer`], a `tower` layer for `lambda_runtime` that, around each invocation,
//!   resets the heap and RSS peaks, then records the heap's peak and net growth, RSS and peak RSS
//!   (`/proc/self`), duration, cold start, request id and error type, and hands the record to the
//!   `lambda-memory-profiler` extension (UDP on 127.0.0.1, the same protocol as the Python
//!   decorator) — or prints one Embedded Metric Format line on stdout when no extension listens.
//!
//! ```no_run
//! use lambda_memory_profile::{CountingAlloc, MemoryProfileLayer};
//! use lambda_runtime::{service_fn, Error, LambdaEvent, Runtime};
//! use serde_json::Value;
//!
//! #[global_allocator]
//! static GLOBAL: CountingAlloc = CountingAlloc::system();
//!
//! async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
//!     Ok(event.payload)
//! }
//!
//! # async fn run() -> Result<(), Error> {
//! let profile = MemoryProfileLayer::new();
//! // On the handler as well, so the record carries the handler's error type.
//! let handler = tower::ServiceBuilder::new()
//!     .layer(profile.clone())
//!     .service_fn(handler);
//! Runtime::new(handler).layer(profile).run().await
//! # }
//! ```
//!
//! The figures are process-wide: they assume one invocation at a time (the runtime's default),
//! and allocations of background threads during an invocation count towards it.
#![warn(missing_docs)]

pub mod alloc;
pub mod config;
pub mod handoff;
pub mod layer;
mod measure;
pub mod procfs;
pub mod record;

pub use alloc::{CountingAlloc, HeapStats};
pub use config::Config;
pub use handoff::HandoffStats;
pub use layer::{MemoryProfile, MemoryProfileLayer};
