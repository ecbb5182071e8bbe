//! `lambda-emulator run ...`: run a function with its extensions in a local Lambda environment.
//!
//! Exit status (so that a script can tell): 0 when init and every invocation succeeded (or
//! `--allow-failures`), 3 when an init phase failed, 4 when an invocation did not succeed
//! (error, timeout, failure), 1 when the emulator itself could not run, 2 for a bad command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use lambda_emulator::{
    Emulator, EmulatorConfig, InvokeOutcome, InvokeStatus, LogFormat, ShutdownReason,
};

/// An init phase failed (the first one, or one after a reset).
const EXIT_INIT_FAILED: u8 = 3;
/// An invocation ended with `error`, `timeout` or `failure`.
const EXIT_INVOKE_FAILED: u8 = 4;
/// The emulator itself could not run (configuration, bind, spawn).
const EXIT_EMULATOR: u8 = 1;

#[derive(Parser)]
#[command(
    name = "lambda-emulator",
    version,
    about = "A local AWS Lambda execution environment with the Runtime, Extensions, Telemetry and Logs APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the extensions and the runtime, invoke N times, shut down, print what was measured.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory whose executables are started as extensions (like /opt/extensions).
    #[arg(long)]
    extensions_dir: Option<PathBuf>,
    /// The function's code directory (LAMBDA_TASK_ROOT).
    #[arg(long)]
    function_dir: PathBuf,
    /// Handler, `module.function`.
    #[arg(long)]
    handler: String,
    /// Unpacked layer (like /opt): extensions/ is started, python/ goes on PYTHONPATH. Repeatable.
    #[arg(long = "layer")]
    layers: Vec<PathBuf>,
    /// Number of invocations.
    #[arg(long, default_value_t = 1)]
    invocations: u32,
    /// Event: inline JSON, or @path to a JSON file.
    #[arg(long, default_value = "{}")]
    event: String,
    /// Memory size in MB: the limit for the summed RSS of runtime and extensions.
    #[arg(long, default_value_t = 128)]
    memory_mb: u32,
    /// Function timeout in seconds.
    #[arg(long, default_value_t = 3.0)]
    timeout_s: f64,
    /// Function environment variable K=V. Repeatable.
    #[arg(long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Runtime command (split on whitespace) instead of `PYTHON -m awslambdaric HANDLER`,
    /// e.g. a custom runtime's bootstrap.
    #[arg(long)]
    runtime_command: Option<String>,
    /// Python interpreter with awslambdaric.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// AWS_LAMBDA_FUNCTION_NAME.
    #[arg(long, default_value = "local-function")]
    function_name: String,
    /// Shutdown budget in milliseconds (Lambda: 2000).
    #[arg(long, default_value_t = 2000)]
    shutdown_timeout_ms: u64,
    /// Print one JSON document (outcomes, telemetry-derived numbers, extension stats) on stdout.
    #[arg(long)]
    json: bool,
    /// The function's log format: `text` (Lambda's default: log records are strings) or `json`
    /// (JSON-object lines are delivered as objects; the runtime logs JSON).
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
    /// Do not give the processes a private /etc/hosts naming sandbox.localdomain.
    #[arg(long)]
    no_sandbox_hosts: bool,
    /// Exit 0 even when init or invocations failed (the outcomes are still printed).
    #[arg(long)]
    allow_failures: bool,
    /// Answer telemetry and logs subscriptions `202 Telemetry.NotSupported`, like `sam local`.
    #[arg(long)]
    telemetry_not_supported: bool,
    /// Lambda Managed Instances with N runtime workers (`AWS_LAMBDA_MAX_CONCURRENCY=N`):
    /// invocations run N at a time, extensions may register for SHUTDOWN only, telemetry
    /// needs schema 2025-01-29, and the memory limit holds for all processes together.
    #[arg(long, value_name = "N")]
    managed_instances: Option<u32>,
    /// SnapStart: init ends at the snapshot point (after the runtime's before-snapshot hooks);
    /// the first invocation restores from it (restore telemetry, after-restore hooks).
    #[arg(long)]
    snapstart: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected K=V, got {s}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if std::env::var_os("LAMBDA_EMULATOR_DEBUG").is_some() {
            tracing::Level::DEBUG
        } else {
            tracing::Level::WARN
        })
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_EMULATOR);
        }
    };
    let result = match cli.command {
        Command::Run(args) => rt.block_on(run(args)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(EXIT_EMULATOR)
        }
    }
}

/// Runs the invocations; returns the exit status their outcomes call for.
async fn run(args: RunArgs) -> Result<u8> {
    let event: serde_json::Value = match args.event.strip_prefix('@') {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?
        }
        None => serde_json::from_str(&args.event).context("--event is not JSON")?,
    };
    if !(args.timeout_s > 0.0 && args.timeout_s.is_finite()) {
        bail!("--timeout-s must be positive");
    }
    let config = EmulatorConfig {
        extensions_dir: args.extensions_dir,
        function_dir: args.function_dir,
        handler: args.handler,
        layer_dirs: args.layers,
        python: args.python,
        runtime_command: args
            .runtime_command
            .map(|c| c.split_whitespace().map(str::to_string).collect()),
        memory_mb: args.memory_mb,
        timeout: Duration::from_secs_f64(args.timeout_s),
        function_name: args.function_name,
        env: args.env,
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        // With --json the output lines are part of the document; otherwise echo them.
        echo_output: !args.json,
        log_format: args.log_format,
        sandbox_hosts: !args.no_sandbox_hosts,
        telemetry_not_supported: args.telemetry_not_supported,
        managed_instances: args.managed_instances,
        snapstart: args.snapstart,
        ..EmulatorConfig::default()
    };
    let emulator = std::sync::Arc::new(Emulator::start(config).await?);
    for w in emulator.warnings() {
        eprintln!("warning: {w}");
    }
    let mut init_failed = false;
    let tty = std::io::stderr().is_terminal();
    if let Some(init) = emulator.last_init() {
        init_failed |= init.status != "success";
        if !args.json {
            eprintln!(
                "init: {} in {:.1} ms{}",
                init.status,
                init.duration.as_secs_f64() * 1000.0,
                init.error_type
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            );
        }
    }
    let mut outcomes: Vec<InvokeOutcome> = Vec::new();
    // One at a time, or on Managed Instances one wave per worker count at a time.
    let wave_size = args.managed_instances.unwrap_or(1).max(1) as usize;
    let total = args.invocations as usize;
    while outcomes.len() < total {
        let mut wave = tokio::task::JoinSet::new();
        for _ in 0..(total - outcomes.len()).min(wave_size) {
            let (em, ev) = (emulator.clone(), event.clone());
            wave.spawn(async move { em.invoke(ev).await });
        }
        for o in wave.join_all().await {
            let o = o?;
            let i = outcomes.len() as u32 + 1;
            // A cold invocation after a reset ran its own init phase: it counts like the first.
            if o.cold_start {
                init_failed |= emulator.last_init().is_some_and(|i| i.status != "success");
            }
            if !args.json {
                let line = progress(i, args.invocations, &o);
                if tty {
                    eprintln!("\x1b[1m{line}\x1b[0m");
                } else {
                    eprintln!("{line}");
                }
            }
            outcomes.push(o);
        }
    }
    let all_exts = emulator.extension_stats();
    let Ok(emulator) = std::sync::Arc::try_unwrap(emulator) else {
        bail!("an invocation still holds the environment");
    };
    let report = emulator.shutdown(ShutdownReason::Spindown).await?;
    if args.json {
        let doc = serde_json::json!({
            "invocations": outcomes,
            "shutdown": report,
            "extensions": all_exts_after(&all_exts, &report),
            "telemetry": report.telemetry,
            "output": {"runtime": report.runtime_output, "extensions": report.extension_output},
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for e in &report.extensions {
            eprintln!(
                "extension {}: register {} ms, first /next {} ms, post-runtime {:?} ms, peak RSS {:.1} MB, exit {}",
                e.name,
                opt_ms(e.spawn_to_register),
                opt_ms(e.spawn_to_first_next),
                e.post_runtime.iter().map(|d| (d.as_secs_f64() * 1e4).round() / 10.0).collect::<Vec<_>>(),
                e.peak_rss_bytes as f64 / 1048576.0,
                if e.exit.killed_at_deadline {
                    "KILLED at the deadline".to_string()
                } else {
                    format!("after {} ms (code {:?}, signal {:?})", opt_ms(e.exit.exit_after_shutdown), e.exit.code, e.exit.signal)
                }
            );
        }
    }
    let invoke_failed = outcomes.iter().any(|o| o.status != InvokeStatus::Success);
    Ok(if args.allow_failures {
        0
    } else if init_failed {
        EXIT_INIT_FAILED
    } else if invoke_failed {
        EXIT_INVOKE_FAILED
    } else {
        0
    })
}

/// Stats of every extension, with the final state of the last generation from the shutdown report.
fn all_exts_after(
    before: &[lambda_emulator::ExtensionStats],
    report: &lambda_emulator::ShutdownReport,
) -> Vec<lambda_emulator::ExtensionStats> {
    before
        .iter()
        .map(|e| {
            report
                .extensions
                .iter()
                .find(|r| r.pid == e.pid && r.generation == e.generation)
                .cloned()
                .unwrap_or_else(|| e.clone())
        })
        .collect()
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn progress(i: u32, n: u32, o: &InvokeOutcome) -> String {
    format!(
        "invoke {i}/{n}: {}{} {:.1} ms (runtime {:.1} ms), max memory {} MB{}",
        o.status.as_str(),
        o.error_type
            .as_ref()
            .map(|t| format!(" {t}"))
            .unwrap_or_default(),
        o.duration.as_secs_f64() * 1000.0,
        o.runtime_duration.unwrap_or_default().as_secs_f64() * 1000.0,
        o.max_memory_used_mb,
        if o.cold_start { ", cold start" } else { "" }
    )
}
