//! Counters shared by the tasks, and a rate limiter for repeated warnings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a record was dropped. Every drop is counted; the sum is the `RecordsDropped` metric.
#[derive(Debug, Default)]
pub struct Counters {
    pub intake_malformed: AtomicU64,
    pub intake_oversized: AtomicU64,
    pub intake_unknown_version: AtomicU64,
    pub intake_received: AtomicU64,
    pub telemetry_unparsed: AtomicU64,
    pub telemetry_received: AtomicU64,
    pub events_channel_full: AtomicU64,
    /// Profiles pushed out of a full join table (still published, flagged partial).
    pub profiles_evicted: AtomicU64,
    pub datums_dropped: AtomicU64,
}

impl Counters {
    pub fn incr(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Total of every kind of drop so far (evicted profiles are published, so not counted).
    pub fn dropped_total(&self) -> u64 {
        [
            &self.intake_malformed,
            &self.intake_oversized,
            &self.intake_unknown_version,
            &self.telemetry_unparsed,
            &self.events_channel_full,
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
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
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
