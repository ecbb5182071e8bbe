//! Counters shared by the tasks, and a rate limiter for repeated warnings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a record was dropped. Every drop is counted; the sum is the `RecordsDropped` metric.
#[derive(Debug, Default)]
pub struct Counters {
    /// Intake datagrams dropped: not JSON, or not a valid record (no `v`/`kind`, bad field type).
    pub intake_malformed: AtomicU64,
    /// Intake datagrams dropped for exceeding the 16,384-byte limit.
    pub intake_oversized: AtomicU64,
    /// Intake datagrams dropped for another protocol version `v` or an unknown `kind`.
    pub intake_unknown_version: AtomicU64,
    /// Intake records accepted (`hello` and `invocation`); not a drop.
    pub intake_received: AtomicU64,
    /// Telemetry batches whose body could not be read or parsed, plus unusable items in
    /// parsed batches.
    pub telemetry_unparsed: AtomicU64,
    /// Telemetry events taken from parsed batches; not a drop.
    pub telemetry_received: AtomicU64,
    /// Events of either source lost because the channel to the join was full.
    pub events_channel_full: AtomicU64,
    /// Records and telemetry events for request ids that no INVOKE event named.
    pub records_untrusted: AtomicU64,
    /// Figures outside what the platform can produce, dropped from their record before the join
    /// (figures, not records: logged, not in `RecordsDropped`).
    pub values_out_of_range: AtomicU64,
    /// Datagrams the kernel dropped from the intake socket's full receive queue (its own
    /// running total, from `/proc/net/udp`).
    pub intake_kernel_drops: AtomicU64,
    /// The intake's port, once bound (0: none), for reading its kernel drop count.
    intake_port: AtomicU64,
    /// Profiles pushed out of a full join table (still published, flagged partial).
    pub profiles_evicted: AtomicU64,
    /// Metric values lost: buffer full, a failed request, the sink's queue full, or left
    /// unsent at SHUTDOWN's deadline.
    pub datums_dropped: AtomicU64,
    /// Metric values the sink holds, buffered or in a request not yet answered.
    pub values_pending: AtomicU64,
    /// Metric values handed to the sink (or lost on the way), the extension's own included.
    pub values_offered: AtomicU64,
    /// Metric values the sink delivered (accepted by CloudWatch, or printed as EMF).
    pub values_sent: AtomicU64,
}

impl Counters {
    /// Adds one to the counter `c`.
    pub fn incr(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to the counter `c`.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Follow the kernel's drop count of the intake socket on `port`.
    pub fn watch_intake_port(&self, port: u16) {
        self.intake_port.store(u64::from(port), Ordering::Relaxed);
    }

    /// The intake socket's state in `/proc/net/udp`, when it is watched.
    fn intake_socket(&self) -> Option<crate::sources::procfs::UdpSocketState> {
        let port = u16::try_from(self.intake_port.load(Ordering::Relaxed)).ok()?;
        (port != 0)
            .then(|| crate::sources::procfs::udp_socket(port))
            .flatten()
    }

    /// Reads the kernel's drop count of the intake socket (a running total, so the largest
    /// reading is kept). Cheap enough for every flush, not for every datagram.
    pub fn refresh_kernel_drops(&self) {
        if let Some(socket) = self.intake_socket() {
            self.intake_kernel_drops
                .fetch_max(socket.drops, Ordering::Relaxed);
        }
    }

    /// Bytes still queued in the intake socket (not yet read), when it is watched.
    pub fn intake_queued_bytes(&self) -> Option<u64> {
        self.intake_socket().map(|s| s.queued_bytes)
    }

    /// Total of every kind of drop so far (evicted profiles are published, so not counted).
    pub fn dropped_total(&self) -> u64 {
        [
            &self.intake_malformed,
            &self.intake_oversized,
            &self.intake_unknown_version,
            &self.telemetry_unparsed,
            &self.events_channel_full,
            &self.records_untrusted,
            &self.intake_kernel_drops,
            &self.datums_dropped,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// Lets the first warning through, then at most one per period, reporting how many were held back.
#[derive(Debug)]
pub struct RateLimiter {
    period: Duration,
    /// When the last warning was let through; `None` before the first.
    last: Option<Instant>,
    /// Warnings held back since the last one let through.
    suppressed: u64,
}

impl RateLimiter {
    /// A limiter letting one warning through per `period` (the first at once).
    pub fn new(period: Duration) -> Self {
        RateLimiter {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a warning may be logged now, `n` being how many were suppressed since the last.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_passes_then_one_per_period_with_count() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(Duration::from_secs(60));
        assert_eq!(r.check(t0), Some(0));
        assert_eq!(r.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.check(t0 + Duration::from_secs(59)), None);
        assert_eq!(r.check(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(r.check(t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn dropped_total_sums_drop_kinds_only() {
        let c = Counters::default();
        Counters::incr(&c.intake_malformed);
        Counters::incr(&c.intake_received);
        Counters::add(&c.datums_dropped, 5);
        assert_eq!(c.dropped_total(), 6);
    }
}
