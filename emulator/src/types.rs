//! Public result types: invocation outcomes, extension measurements, shutdown report, errors.

use std::time::Duration;

use serde::Serialize;

/// Errors of the emulator itself (not of the emulated function: those are [`InvokeOutcome`]s).
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The API server could not bind its address.
    #[error("cannot bind the API server on {addr}: {source}")]
    Bind {
        /// The loopback address asked for (the configured API address).
        addr: std::net::SocketAddr,
        /// The bind error (address in use, permission denied, ...).
        source: std::io::Error,
    },
    /// A process (extension or runtime) could not be started.
    #[error("cannot start {what} ({program}): {source}")]
    Spawn {
        /// Which process: `runtime`, or `extension <file name>`.
        what: String,
        /// The executable (first word of the command).
        program: String,
        /// The error from starting it (not found, not executable, ...).
        source: std::io::Error,
    },
    /// The extensions directory (or a layer's) could not be listed.
    #[error("cannot read extensions directory {path}: {source}")]
    ExtensionsDir {
        /// The directory that could not be listed.
        path: std::path::PathBuf,
        /// The error from listing it.
        source: std::io::Error,
    },
    /// The configuration is unusable (empty runtime command, zero memory, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The event could not be serialized.
    #[error("cannot serialize the event: {0}")]
    Event(#[from] serde_json::Error),
    /// The emulator was already shut down.
    #[error("the emulator is shut down")]
    ShutDown,
}

/// How an invocation ended, as Lambda reports it in `platform.runtimeDone` / `platform.report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InvokeStatus {
    /// The runtime posted a response and every extension called `/next`.
    Success,
    /// The function failed: the handler raised (`/error`), or the runtime was killed for
    /// exceeding the memory limit (`Runtime.OutOfMemory`).
    Error,
    /// The function timeout elapsed.
    Timeout,
    /// The environment failed: the runtime exited (`Runtime.ExitError`), an extension crashed
    /// (`Extension.Crash`), or init failed.
    Failure,
}

impl InvokeStatus {
    /// The status string used in telemetry records.
    pub fn as_str(self) -> &'static str {
        match self {
            InvokeStatus::Success => "success",
            InvokeStatus::Error => "error",
            InvokeStatus::Timeout => "timeout",
            InvokeStatus::Failure => "failure",
        }
    }
}

/// The result of one [`crate::Emulator::invoke`].
#[derive(Debug, Clone, Serialize)]
pub struct InvokeOutcome {
    /// `Lambda-Runtime-Aws-Request-Id` of this invocation.
    pub request_id: String,
    /// How it ended: the `status` of its `platform.runtimeDone` and `platform.report`.
    pub status: InvokeStatus,
    /// The runtime's response body, parsed as JSON (a JSON string when it is not JSON).
    pub response: Option<serde_json::Value>,
    /// `Runtime.OutOfMemory`, `Extension.Crash`, `Runtime.ExitError`, or the function's error type.
    pub error_type: Option<String>,
    /// The body the runtime posted to `/error`, when it did.
    pub error_body: Option<serde_json::Value>,
    /// Whether an init phase ran for this invocation (the first one, or after a reset).
    pub cold_start: bool,
    /// The `platform.report` record emitted for this invocation (the `record` part).
    pub report: serde_json::Value,
    /// The `platform.runtimeDone` record emitted for this invocation (the `record` part).
    pub runtime_done: serde_json::Value,
    /// `maxMemoryUsedMB` of the report (environment high-water mark, capped at the memory size).
    pub max_memory_used_mb: u64,
    /// Whole invoke phase: `platform.start` to the last extension's `/next`.
    #[serde(serialize_with = "ser_ms")]
    pub duration: Duration,
    /// Runtime phase: `platform.start` to the runtime's response or error.
    #[serde(serialize_with = "ser_opt_ms")]
    pub runtime_duration: Option<Duration>,
    /// Whether the environment was reset after this invocation (next invoke re-initialises).
    pub reset: bool,
}

/// How a process ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// Whether the process has exited (false while it still runs).
    pub exited: bool,
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    /// It exited on its own before any SHUTDOWN was sent: an `Extension.Crash`.
    pub exited_before_shutdown: bool,
    /// It was still running at the shutdown deadline and was SIGKILLed.
    pub killed_at_deadline: bool,
    /// Time from the SHUTDOWN event to the process's exit.
    #[serde(serialize_with = "ser_opt_ms")]
    pub exit_after_shutdown: Option<Duration>,
}

/// What the emulator measured for one extension process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtensionStats {
    /// File name of the executable (= `Lambda-Extension-Name` it should register with).
    pub name: String,
    /// Process id of the started executable (leader of its process group); 0 if unknown.
    pub pid: u32,
    /// Environment number: 1 for the first init, +1 after every reset.
    pub generation: u32,
    /// Events it registered for (`INVOKE`, `SHUTDOWN`).
    pub events: Vec<String>,
    /// Spawn to `POST /register`.
    #[serde(serialize_with = "ser_opt_ms")]
    pub spawn_to_register: Option<Duration>,
    /// Spawn to its first `GET /event/next` (its share of the cold start).
    #[serde(serialize_with = "ser_opt_ms")]
    pub spawn_to_first_next: Option<Duration>,
    /// Per completed invocation: runtime response → this extension's `/next` (zero when it called
    /// `/next` before the runtime responded).
    #[serde(serialize_with = "ser_vec_ms")]
    pub post_runtime: Vec<Duration>,
    /// Highest sampled RSS of the extension: the summed RSS of every process of its process
    /// group (a launcher script and the program it started without `exec` count together).
    pub peak_rss_bytes: u64,
    /// Last sampled RSS (of the whole group) before it exited (or now, while it runs).
    pub final_rss_bytes: u64,
    /// Most processes seen at once in its process group.
    pub peak_processes: u32,
    /// The types it subscribed to (Telemetry API or Logs API).
    pub telemetry_types: Vec<String>,
    /// `telemetry` or `logs`: the API it subscribed through, if any.
    pub subscribed_api: Option<String>,
    /// Error type it posted to `/init/error` or `/exit/error`.
    pub reported_error: Option<String>,
    /// How the process ended (`exited` false while it still runs).
    pub exit: ExitInfo,
}

/// Why the environment shuts down (`shutdownReason` of the SHUTDOWN event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownReason {
    /// A normal end of the environment (the caller's [`crate::Emulator::shutdown`]).
    Spindown,
    /// The function timed out: the environment is reset.
    Timeout,
    /// The environment failed (runtime exit, extension crash, out of memory, failed init).
    Failure,
}

impl ShutdownReason {
    /// The wire form (lower case, like the Lambda emulator sends).
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownReason::Spindown => "spindown",
            ShutdownReason::Timeout => "timeout",
            ShutdownReason::Failure => "failure",
        }
    }
}

/// Result of [`crate::Emulator::shutdown`].
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// The reason the SHUTDOWN event carried to the extensions.
    pub reason: ShutdownReason,
    /// Extensions of the environment that was shut down (empty when it was already reset).
    pub extensions: Vec<ExtensionStats>,
    /// How the runtime ended.
    pub runtime_exit: Option<ExitInfo>,
    /// SHUTDOWN event to the end of the last process.
    #[serde(serialize_with = "ser_ms")]
    pub duration: Duration,
    /// Every line the runtime printed, across all generations, including those printed during
    /// shutdown (the emulator is consumed by `shutdown`, so they are handed over here).
    #[serde(skip)]
    pub runtime_output: Vec<String>,
    /// Every line each extension printed, by extension name, including its SHUTDOWN-time output.
    #[serde(skip)]
    pub extension_output: std::collections::BTreeMap<String, Vec<String>>,
    /// Every telemetry record the emulator generated, including those of the shutdown.
    #[serde(skip)]
    pub telemetry: Vec<TelemetryEvent>,
}

/// One telemetry record as the Telemetry API delivers it: `{"time","type","record"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetryEvent {
    /// ISO 8601, UTC, millisecond precision.
    pub time: String,
    /// The record type (`type` on the wire), e.g. `platform.report`, `platform.runtimeDone`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The type's payload (`record`), as the Telemetry schema defines it for that type.
    pub record: serde_json::Value,
}

/// Whose output lines to return from [`crate::Emulator::output_lines`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum OutputSource {
    /// The runtime process (function logs).
    Runtime,
    /// The extension with this file name.
    Extension(String),
}

/// Outcome of an init phase.
#[derive(Debug, Clone, Serialize)]
pub struct InitInfo {
    /// Environment number: 1 for the first init, +1 after every reset.
    pub generation: u32,
    /// `success`, `error` or `failure`, as in `platform.initReport`.
    pub status: String,
    /// The init error (e.g. `Runtime.ExitError`, `Sandbox.Timedout`); `None` on success.
    pub error_type: Option<String>,
    /// `platform.initStart` to the runtime's first `/next` (`durationMs` of `initReport`).
    #[serde(serialize_with = "ser_ms")]
    pub duration: Duration,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ms(*d))
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&ms(*d)),
        None => s.serialize_none(),
    }
}

fn ser_vec_ms<S: serde::Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(d.iter().map(|d| ms(*d)))
}

/// Milliseconds with microsecond precision, as Lambda writes `durationMs`.
pub(crate) fn duration_ms(d: Duration) -> f64 {
    ms(d)
}
