//! lambda-memory-profiler: an AWS Lambda extension that joins the platform's memory figures, the
//! runtime's `/proc` figures and the Python decorator's measurements into one record per invocation.

use std::sync::Arc;

use lambda_memory_profiler::{agent, config::Config, stats::Counters};

fn main() {
    let (cfg, warnings) = Config::from_env();
    init_logging(cfg.log_level);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    // One thread: the extension shares the function's memory and CPU.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(agent::run(cfg, Arc::new(Counters::default())));
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "extension stopped");
            1
        }
    };
    // Exit at once: background tasks (listeners, a stuck flush) must not hold the process.
    std::process::exit(code);
}

/// Logs to stderr (Lambda ships it). Our own events at `level`; the libraries' (HTTP, SDK) at most
/// `warn`, so `LMP_LOG_LEVEL=debug` stays readable.
fn init_logging(level: tracing::Level) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level.min(tracing::Level::WARN))
        .with_target("lambda_memory_profiler", level);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false),
        )
        .with(filter)
        .init();
}
