//! A local AWS Lambda execution environment.
//!
//! [`Emulator`] runs one execution environment the way Lambda does: it serves the Runtime,
//! Extensions and Telemetry APIs on one loopback HTTP server, starts the extensions and the
//! runtime (e.g. `python -m awslambdaric`), drives invocations, measures real memory from
//! `/proc`, enforces timeout and memory limit, and shuts down with Lambda's SHUTDOWN protocol.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lambda_emulator::EmulatorError> {
//! use lambda_emulator::{Emulator, EmulatorConfig, ShutdownReason};
//! let config = EmulatorConfig {
//!     function_dir: "examples/fn".into(),
//!     handler: "app.handler".into(),
//!     extensions_dir: Some("target/extensions".into()),
//!     ..EmulatorConfig::default()
//! };
//! let emulator = Emulator::start(config).await?;
//! let outcome = emulator.invoke(serde_json::json!({"hello": "world"})).await?;
//! println!("{:?} {}", outcome.status, outcome.max_memory_used_mb);
//! let report = emulator.shutdown(ShutdownReason::Spindown).await?;
//! for ext in report.extensions {
//!     println!("{} exited in time: {}", ext.name, !ext.exit.killed_at_deadline);
//! }
//! # Ok(()) }
//! ```

mod config;
mod types;

use std::net::SocketAddr;

pub use config::EmulatorConfig;
pub use types::{
    EmulatorError, ExitInfo, ExtensionStats, InitInfo, InvokeOutcome, InvokeStatus, OutputSource,
    ShutdownReason, ShutdownReport, TelemetryEvent,
};

/// One running execution environment and its API server.
pub struct Emulator {
    addr: SocketAddr,
}

impl Emulator {
    /// Binds the API server, starts the extensions, waits until each registered and called
    /// `/next`, starts the runtime and waits until it asks for its first event (the init phase).
    /// A failed init is not an `Err`: it is reported by [`Emulator::last_init`] and telemetry, and
    /// the next [`Emulator::invoke`] re-initialises, like Lambda.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let _ = config;
        Err(EmulatorError::Config("not implemented yet".into()))
    }

    /// `host:port` of the Runtime / Extensions / Telemetry APIs (`AWS_LAMBDA_RUNTIME_API`).
    pub fn runtime_api_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs one invocation and returns when it is complete: the runtime responded (or failed)
    /// and every INVOKE-subscribed extension called `/next` again. `platform.report` is emitted
    /// just before this returns. After a failure (crash, timeout, out of memory) the environment
    /// is reset and the next call re-initialises.
    pub async fn invoke(&self, event: serde_json::Value) -> Result<InvokeOutcome, EmulatorError> {
        let _ = event;
        Err(EmulatorError::ShutDown)
    }

    /// Sends SHUTDOWN (`deadlineMs` = now + `shutdown_timeout`), SIGTERMs the runtime, keeps the
    /// APIs up until every extension exited or the deadline passed, then SIGKILLs what is left.
    pub async fn shutdown(self, reason: ShutdownReason) -> Result<ShutdownReport, EmulatorError> {
        let _ = reason;
        Err(EmulatorError::ShutDown)
    }

    /// Every telemetry record the emulator generated, in order (whether or not anyone subscribed).
    pub fn telemetry_emitted(&self) -> Vec<TelemetryEvent> {
        Vec::new()
    }

    /// Measurements of every extension process started so far (all generations), in start order.
    pub fn extension_stats(&self) -> Vec<ExtensionStats> {
        Vec::new()
    }

    /// Lines printed (stdout and stderr) by the runtime or one extension, across all generations.
    pub fn output_lines(&self, source: OutputSource) -> Vec<String> {
        let _ = source;
        Vec::new()
    }

    /// The most recent init phase.
    pub fn last_init(&self) -> Option<InitInfo> {
        None
    }

    /// Current high-water mark of the summed RSS of runtime and extensions, in bytes.
    pub fn max_memory_used_bytes(&self) -> u64 {
        0
    }
}
