//! The extension as a do-nothing one: with `LMP_DISABLE=true`, on a platform it does not support
//! (Lambda Managed Instances), or when it could not start. It registers for SHUTDOWN only, so
//! Lambda never waits on it during invocations; it binds nothing, subscribes to nothing, sends
//! nothing, and exits cleanly at SHUTDOWN. The layer can stay attached while profiling is off.

use std::time::Duration;

use crate::lifecycle::{Events, ExtensionClient, NextEvent};

/// Registers for SHUTDOWN, waits for it, returns. An error of `/next` is retried (backing off):
/// exiting before SHUTDOWN would fail the function.
pub async fn run(mut client: ExtensionClient, name: &str, why: &str) -> anyhow::Result<()> {
    crate::agent::register_with_retry(&mut client, name, Events::ShutdownOnly).await?;
    tracing::info!(extension = %name, %why, "registered for SHUTDOWN only; profiling off");
    let mut failures = 0u32;
    loop {
        match client.next().await {
            Ok(NextEvent::Shutdown { reason, .. }) => {
                tracing::info!(%reason, "shutdown");
                return Ok(());
            }
            Ok(_) => failures = 0,
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %crate::error_chain(&e), "event/next failed; retrying");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(Duration::from_millis(50 << failures.min(5))).await;
            }
        }
    }
}
