//! The lifecycle driver of one execution environment: init, invoke, shutdown, and the memory
//! sampler, with the processes' environment and output.

mod environ;
mod init;
mod invoke;
mod output;
mod restore;
mod sampler;
mod shutdown;

use std::time::{Duration, Instant};

use crate::state::{SharedRef, State};

pub(crate) use init::init;
pub(crate) use invoke::{invoke, prepare};
pub(crate) use sampler::sampler;
pub(crate) use shutdown::shutdown_env;

const MIB: u64 = 1024 * 1024;
/// Share of the shutdown budget the runtime gets after SIGTERM before SIGKILL (Lambda: 300 ms).
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(300);

/// Waits until `check` returns `Some`, re-checking on every state change; `None` at `deadline`.
pub(crate) async fn wait_for<T>(
    shared: &SharedRef,
    deadline: Option<tokio::time::Instant>,
    mut check: impl FnMut(&State) -> Option<T>,
) -> Option<T> {
    let mut rx = shared.watcher();
    loop {
        if let Some(v) = check(&shared.lock()) {
            return Some(v);
        }
        let changed = rx.changed();
        match deadline {
            Some(d) => match tokio::time::timeout_at(d, changed).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return None,
                Err(_) => return check(&shared.lock()),
            },
            None => {
                if changed.await.is_err() {
                    return None;
                }
            }
        }
    }
}

fn tokio_deadline(t: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(t)
}
