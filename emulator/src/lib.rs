//! A local AWS Lambda execution environment.
//!
//! [`Emulator`] runs one execution environment the way Lambda does: it serves the Runtime,
//! Extensions, Telemetry and Logs APIs on one loopback HTTP server, starts the extensions and the
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
#![warn(missing_docs)]

mod clock;
mod config;
mod env;
mod process;
mod procfs;
mod records;
mod sandbox;
mod server;
mod state;
pub mod telemetry;
pub mod testing;
mod types;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use config::{EmulatorConfig, LogFormat};
pub use sandbox::SANDBOX_HOST;
pub use types::{
    EmulatorError, ExitInfo, ExtensionStats, InitInfo, InvokeOutcome, InvokeStatus, OutputSource,
    ShutdownReason, ShutdownReport, TelemetryEvent,
};

use state::{Shared, SharedRef};

/// One running execution environment and its API server.
pub struct Emulator {
    shared: SharedRef,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
    /// Invocations run one at a time, like in one Lambda execution environment (on Managed
    /// Instances: the (re-)init only).
    busy: tokio::sync::Mutex<()>,
    /// Managed Instances: one permit per worker. Lambda routes an environment no more
    /// invocations than its concurrency; a caller beyond it waits here, outside the
    /// invocation's time.
    slots: Option<tokio::sync::Semaphore>,
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Emulator {
    /// Binds the API server, starts the extensions, waits until each registered and called
    /// `/next`, starts the runtime and waits until it asks for its first event (the init phase).
    /// A failed init is not an `Err`: it is reported by [`Emulator::last_init`] and telemetry, the
    /// environment is reset, and the next [`Emulator::invoke`] re-initialises, like Lambda.
    /// `Err` means the emulator itself could not run (bind, spawn, unreadable directories).
    pub async fn start(mut config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        if config.memory_mb == 0 {
            return Err(EmulatorError::Config("memory_mb must be > 0".into()));
        }
        if config.managed_instances == Some(0) {
            return Err(EmulatorError::Config(
                "managed_instances needs at least one worker".into(),
            ));
        }
        if config.is_managed_instances() && config.snapstart {
            return Err(EmulatorError::Config(
                "SnapStart is not available on Lambda Managed Instances".into(),
            ));
        }
        if config.is_managed_instances() {
            config.initialization_type = EmulatorConfig::MANAGED_INSTANCES.to_string();
        }
        if config.snapstart {
            config.initialization_type = EmulatorConfig::SNAP_START.to_string();
        }
        if config.runtime_argv().is_empty() {
            return Err(EmulatorError::Config("empty runtime command".into()));
        }
        // Absolute paths: the runtime runs in the function dir and PYTHONPATH must not depend on it.
        config.function_dir = absolute(&config.function_dir);
        config.layer_dirs = config.layer_dirs.iter().map(|p| absolute(p)).collect();
        config.extensions_dir = config.extensions_dir.as_deref().map(absolute);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.listen,
                source,
            })?;
        let config_workers = config.managed_instances;
        let shared = Shared::new(config);
        let server = tokio::spawn(server::serve(listener, shared.clone()));
        let sampler = tokio::spawn(env::sampler(shared.clone()));
        let emulator = Emulator {
            shared,
            addr,
            server,
            sampler,
            busy: tokio::sync::Mutex::new(()),
            slots: config_workers.map(|n| tokio::sync::Semaphore::new(n as usize)),
        };
        env::init(&emulator.shared, &addr.to_string()).await?;
        Ok(emulator)
    }

    /// `host:port` of the Runtime / Extensions / Telemetry APIs (`AWS_LAMBDA_RUNTIME_API`).
    pub fn runtime_api_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs one invocation and returns when it is complete: the runtime responded (or failed)
    /// and every INVOKE-subscribed extension called `/next` again. `platform.report` is emitted
    /// just before this returns. After a failure (crash, timeout, out of memory, init error) the
    /// environment is reset and the next call re-initialises (`cold_start`, `initDurationMs`).
    pub async fn invoke(&self, event: serde_json::Value) -> Result<InvokeOutcome, EmulatorError> {
        let addr = self.addr.to_string();
        if let Some(slots) = &self.slots {
            // Invocations run concurrently there, at most one per worker; only the (re-)init
            // is one at a time.
            let _slot = slots.acquire().await.map_err(|_| EmulatorError::ShutDown)?;
            let init_error = {
                let _busy = self.busy.lock().await;
                env::prepare(&self.shared, &addr).await?
            };
            return env::invoke(&self.shared, event, init_error).await;
        }
        let _busy = self.busy.lock().await;
        let init_error = env::prepare(&self.shared, &addr).await?;
        env::invoke(&self.shared, event, init_error).await
    }

    /// Sends SHUTDOWN (`deadlineMs` = now + `shutdown_timeout`), SIGTERMs the runtime, keeps the
    /// APIs up until every extension exited or the deadline passed, then SIGKILLs what is left.
    pub async fn shutdown(self, reason: ShutdownReason) -> Result<ShutdownReport, EmulatorError> {
        let _busy = self.busy.lock().await;
        let (extensions, runtime_exit, duration) = env::shutdown_env(&self.shared, reason).await;
        let (runtime_output, extension_output, telemetry) = {
            let mut st = self.shared.lock();
            st.closed = true;
            let mut by_extension = std::collections::BTreeMap::new();
            let mut runtime_output = Vec::new();
            for (source, lines) in &st.output {
                match source {
                    OutputSource::Runtime => runtime_output = lines.clone(),
                    OutputSource::Extension(name) => {
                        by_extension.insert(name.clone(), lines.clone());
                    }
                }
            }
            (runtime_output, by_extension, st.telemetry.clone())
        };
        self.shared.bump();
        Ok(ShutdownReport {
            reason,
            extensions,
            runtime_exit,
            duration,
            runtime_output,
            extension_output,
            telemetry,
        })
    }

    /// Every telemetry record the emulator generated, in order (whether or not anyone subscribed).
    pub fn telemetry_emitted(&self) -> Vec<TelemetryEvent> {
        self.shared.lock().telemetry.clone()
    }

    /// Measurements of every extension process started so far (all generations), in start order.
    pub fn extension_stats(&self) -> Vec<ExtensionStats> {
        self.shared.lock().all_stats()
    }

    /// Lines printed (stdout and stderr) by the runtime or one extension, across all generations.
    pub fn output_lines(&self, source: OutputSource) -> Vec<String> {
        self.shared
            .lock()
            .output
            .get(&source)
            .cloned()
            .unwrap_or_default()
    }

    /// Problems with how faithful this environment is (one line each, with the fix), e.g.
    /// that `sandbox.localdomain` does not resolve for the processes on this machine.
    pub fn warnings(&self) -> Vec<String> {
        self.shared.hosts.warning().into_iter().collect()
    }

    /// The most recent init phase.
    pub fn last_init(&self) -> Option<InitInfo> {
        self.shared.lock().last_init.clone()
    }

    /// Current high-water mark of the summed RSS of runtime and extensions, in bytes
    /// (of the current environment; 0 after a reset until the next init).
    pub fn max_memory_used_bytes(&self) -> u64 {
        self.shared.lock().hwm_bytes
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Never leave processes behind, even when shutdown() was not called.
        let mut st = self.shared.lock();
        st.closed = true;
        for ext in st.extensions.iter().filter(|e| e.alive()) {
            process::signal(ext.stats.pid, libc::SIGKILL);
        }
        if let (Some(pid), None) = (st.runtime.pid, &st.runtime.exit) {
            process::signal(pid, libc::SIGKILL);
        }
        drop(st);
        self.shared.bump();
        self.server.abort();
        self.sampler.abort();
    }
}
