//! SHUTDOWN: read what the intake still holds, wait briefly for the last `platform.report`,
//! publish every remaining profile, flush before the deadline, log the final counts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Agent;
use crate::epoch_ms;
use crate::invocation::SourceEvent;
use crate::stats::Counters;

/// Longest wait at SHUTDOWN for the last `platform.report`.
const SHUTDOWN_REPORT_WAIT: Duration = Duration::from_millis(600);
/// Longest wait at SHUTDOWN for the intake to read what its socket still holds.
const INTAKE_DRAIN_WAIT: Duration = Duration::from_millis(300);

impl Agent {
    pub(super) async fn shutdown(
        &mut self,
        rx: &mut mpsc::Receiver<SourceEvent>,
        reason: &str,
        deadline_ms: u64,
    ) {
        let margin = self.cfg.shutdown_margin.as_millis() as u64;
        let left = deadline_ms.saturating_sub(epoch_ms() + margin);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(left);
        tracing::info!(%reason, budget_ms = left, pending = self.join.pending_len(), "shutdown");
        // Let the intake read what is still queued in its socket (briefly): unread datagrams
        // would be neither joined nor counted.
        let drain_until =
            tokio::time::Instant::now() + INTAKE_DRAIN_WAIT.min(Duration::from_millis(left / 4));
        while self.counters.intake_queued_bytes().is_some_and(|b| b > 0)
            && tokio::time::Instant::now() < drain_until
        {
            while let Ok(ev) = rx.try_recv() {
                let done = self.accept(ev);
                self.publish(done).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Whatever the sources already delivered.
        while let Ok(ev) = rx.try_recv() {
            let done = self.accept(ev);
            self.publish(done).await;
        }
        // The last invocation's report arrives now: wait for it, briefly.
        let wait_until =
            tokio::time::Instant::now() + SHUTDOWN_REPORT_WAIT.min(Duration::from_millis(left / 2));
        while self.join.awaiting_reports() {
            match tokio::time::timeout_at(wait_until, rx.recv()).await {
                Ok(Some(ev)) => {
                    let done = self.accept(ev);
                    self.publish(done).await;
                }
                _ => break,
            }
        }
        let rest = self.join.drain();
        self.publish(rest).await;
        if !self.flush_and_wait(Some(deadline)).await {
            // What the endpoint did not take before the deadline is lost with the process.
            let unsent = self.counters.values_pending.load(Ordering::Relaxed);
            Counters::add(&self.counters.datums_dropped, unsent);
            tracing::warn!(
                unsent,
                "shutdown deadline: metric values not sent (dropped)"
            );
        }
        let c = &self.counters;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        tracing::info!(
            dropped = c.dropped_total(),
            received = n(&c.intake_received),
            malformed =
                n(&c.intake_malformed) + n(&c.intake_oversized) + n(&c.intake_unknown_version),
            untrusted = n(&c.records_untrusted),
            out_of_range = n(&c.values_out_of_range),
            kernel_drops = n(&c.intake_kernel_drops),
            channel_full = n(&c.events_channel_full),
            values = n(&c.values_offered),
            values_sent = n(&c.values_sent),
            values_lost = n(&c.datums_dropped),
            "flushed; exiting"
        );
    }
}
