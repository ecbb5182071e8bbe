//! lambda-memory-profiler: an AWS Lambda extension that joins the platform's memory figures, the
//! runtime's `/proc` figures and the Python decorator's measurements into one record per invocation.

use std::sync::Arc;

use lambda_memory_profiler::{agent, config::Config, stats::Counters};

fn main() {
    let (cfg, warnings) = Config::from_env();
    tracing_subscriber::fmt()
        .with_max_level(cfg.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
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
