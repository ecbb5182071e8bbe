//! Configuration of one emulated execution environment.

use std::path::PathBuf;
use std::time::Duration;

/// Everything needed to run one Lambda execution environment locally.
///
/// `EmulatorConfig::default()` gives a 128 MB, 3 s function named `local-function` with handler
/// `lambda_function.handler` in the current directory, run by `python3 -m awslambdaric`.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Every executable file in this directory is started as an external extension (like
    /// `/opt/extensions`), in file-name order.
    pub extensions_dir: Option<PathBuf>,
    /// The function's code (`LAMBDA_TASK_ROOT`): the runtime's working directory, last on `PYTHONPATH`.
    pub function_dir: PathBuf,
    /// The handler, `module.function` for Python.
    pub handler: String,
    /// Unpacked layers (each like `/opt`): executables in `<layer>/extensions/` are started as
    /// extensions, `<layer>/python/` is put on the runtime's `PYTHONPATH` (before the function dir).
    pub layer_dirs: Vec<PathBuf>,
    /// The runtime command. `None` runs `[python, "-m", "awslambdaric", handler]`.
    pub runtime_command: Option<Vec<String>>,
    /// The Python interpreter used for the default runtime command (it needs `awslambdaric`).
    pub python: PathBuf,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`; the summed RSS of runtime and extensions may not exceed it.
    pub memory_mb: u32,
    /// Function timeout: the whole invoke phase (runtime and extensions) must end within it.
    pub timeout: Duration,
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub function_name: String,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: String,
    /// The function's own environment variables, given to the runtime and to every extension.
    pub env: Vec<(String, String)>,
    /// Time from the SHUTDOWN event to SIGKILL (Lambda: 2,000 ms with external extensions).
    pub shutdown_timeout: Duration,
    /// Budget for the whole init phase (extensions, runtime and function init). Lambda: 10 s.
    pub init_timeout: Duration,
    /// Address to serve the APIs on. Port 0 picks a free port.
    pub listen: std::net::SocketAddr,
    /// Echo every line the runtime and extensions print to this process's stderr, prefixed with
    /// the source (`[runtime]`, `[ext-name]`). Lines are always kept for [`crate::Emulator::output_lines`].
    pub echo_output: bool,
    /// Interval of the `/proc` RSS sampling.
    pub sample_interval: Duration,
    /// The function's log format (Lambda's `LoggingConfig.LogFormat`): with [`LogFormat::Text`]
    /// (Lambda's default) every `function` / `extension` record is a string; with
    /// [`LogFormat::Json`] a line holding a JSON object is delivered as that object and the
    /// runtime gets `AWS_LAMBDA_LOG_FORMAT=JSON`.
    pub log_format: LogFormat,
    /// Give the processes a view of `/etc/hosts` in which `sandbox.localdomain` resolves to
    /// 127.0.0.1 (a private mount namespace), where the machine allows one. When it does not, a
    /// warning is reported by [`crate::Emulator::warnings`] and the processes see the host's file.
    pub sandbox_hosts: bool,
    /// `runtimeVersion` of `platform.initStart`. `None`: `lambda-emulator:<version>`.
    pub runtime_version: Option<String>,
    /// Answer every Telemetry and Logs API subscription `202 Telemetry.NotSupported`, as
    /// `sam local` and other local runtimes do: no telemetry reaches any extension.
    pub telemetry_not_supported: bool,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE` and the `initializationType` of the init records. Only
    /// the variable and the records change: the environment still runs on-demand.
    pub initialization_type: String,
    /// Lambda Managed Instances with this many runtime workers: the runtime gets
    /// `AWS_LAMBDA_MAX_CONCURRENCY` and starts its workers itself (`awslambdaric` forks one
    /// process per worker), invocations run concurrently (one per free worker), extensions may register
    /// for `SHUTDOWN` only, telemetry needs schema `2025-01-29` and carries no
    /// `platform.runtimeDone` and no `maxMemoryUsedMB`, and the memory limit holds for the sum
    /// of all processes. Sets `initialization_type` to `lambda-managed-instances`. `None`: one
    /// runtime process, one invocation at a time.
    pub managed_instances: Option<u32>,
    /// SnapStart: init ends at the snapshot point (the runtime's `restore/next`, after its
    /// before-snapshot hooks), and the first invocation restores the environment from it
    /// (`platform.restoreStart`, the runtime's after-restore hooks, `restoreRuntimeDone`,
    /// `restoreReport`, `restoreDurationMs` in that invocation's report). Sets
    /// `initialization_type` to `snap-start`. The "snapshot" is the same processes, paused:
    /// each environment is one copy (see the README).
    pub snapstart: bool,
}

/// Lambda's log format setting for a function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text: log records are strings (Lambda's default).
    #[default]
    Text,
    /// Structured JSON: JSON-object lines are delivered as objects.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format must be text or json, got {other}")),
        }
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            extensions_dir: None,
            function_dir: PathBuf::from("."),
            handler: "lambda_function.handler".to_string(),
            layer_dirs: Vec::new(),
            runtime_command: None,
            python: PathBuf::from("python3"),
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            function_name: "local-function".to_string(),
            region: "us-east-1".to_string(),
            env: Vec::new(),
            shutdown_timeout: Duration::from_millis(2000),
            init_timeout: Duration::from_secs(10),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            echo_output: false,
            sample_interval: Duration::from_millis(10),
            log_format: LogFormat::Text,
            sandbox_hosts: true,
            runtime_version: None,
            telemetry_not_supported: false,
            initialization_type: "on-demand".to_string(),
            managed_instances: None,
            snapstart: false,
        }
    }
}

impl EmulatorConfig {
    /// `runtimeVersion` reported in `platform.initStart`.
    pub fn runtime_version(&self) -> String {
        self.runtime_version
            .clone()
            .unwrap_or_else(|| format!("lambda-emulator:{}", env!("CARGO_PKG_VERSION")))
    }

    /// The `initializationType` of Lambda Managed Instances.
    pub const MANAGED_INSTANCES: &'static str = "lambda-managed-instances";

    /// The `initializationType` of SnapStart environments.
    pub const SNAP_START: &'static str = "snap-start";

    /// Whether this is a Lambda Managed Instances environment.
    pub fn is_managed_instances(&self) -> bool {
        self.managed_instances.is_some()
    }

    /// The runtime command line: the configured one, or `python -m awslambdaric <handler>`.
    pub fn runtime_argv(&self) -> Vec<String> {
        match &self.runtime_command {
            Some(cmd) => cmd.clone(),
            None => vec![
                self.python.to_string_lossy().into_owned(),
                "-m".to_string(),
                "awslambdaric".to_string(),
                self.handler.clone(),
            ],
        }
    }
}
