//! When to flush: `end` (before `/next`), `periodic:<s>` (background), `adaptive` (default), and
//! always at SHUTDOWN (handled by the agent).
//!
//! Adaptive: time spent after the runtime's response is billed, so while invocations are rare
//! (the environment may be frozen for minutes right after `/next`) data go out at the end of each
//! invocation; once they are frequent, `/next` is called at once and a background flush runs every
//! [`ADAPTIVE_PERIOD`] while the environment is awake.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::FlushMode;

/// Invocations within [`ADAPTIVE_WINDOW`] that make a function "frequent".
pub const ADAPTIVE_FREQUENT: usize = 4;
/// Look-back window of the adaptive mode.
pub const ADAPTIVE_WINDOW: Duration = Duration::from_secs(60);
/// Background period of the adaptive mode once invocations are frequent.
pub const ADAPTIVE_PERIOD: Duration = Duration::from_secs(20);

/// The flush decision, fed with invocation start times.
#[derive(Debug)]
pub struct FlushPolicy {
    mode: FlushMode,
    recent: VecDeque<Instant>,
}

impl FlushPolicy {
    /// A policy for `mode` (`LMP_FLUSH`), with no invocation seen yet.
    pub fn new(mode: FlushMode) -> Self {
        FlushPolicy {
            mode,
            recent: VecDeque::with_capacity(ADAPTIVE_FREQUENT + 1),
        }
    }

    /// Records an invocation's start (the INVOKE event), for the adaptive rate.
    pub fn on_invoke(&mut self, now: Instant) {
        self.recent.push_back(now);
        while self.recent.len() > ADAPTIVE_FREQUENT {
            self.recent.pop_front();
        }
    }

    fn frequent(&self, now: Instant) -> bool {
        self.recent.len() >= ADAPTIVE_FREQUENT
            && self
                .recent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) <= ADAPTIVE_WINDOW)
    }

    /// Flush at the end of the current invocation, before calling `/next`?
    pub fn flush_at_end(&self, now: Instant) -> bool {
        match self.mode {
            FlushMode::End => true,
            FlushMode::Periodic(_) => false,
            FlushMode::Adaptive => !self.frequent(now),
        }
    }

    /// Period of the background flush, if one should run now.
    pub fn background_period(&self, now: Instant) -> Option<Duration> {
        match self.mode {
            FlushMode::End => None,
            FlushMode::Periodic(p) => Some(p),
            FlushMode::Adaptive => self.frequent(now).then_some(ADAPTIVE_PERIOD),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_and_periodic_are_fixed() {
        let now = Instant::now();
        let end = FlushPolicy::new(FlushMode::End);
        assert!(end.flush_at_end(now));
        assert_eq!(end.background_period(now), None);
        let p = FlushPolicy::new(FlushMode::Periodic(Duration::from_secs(5)));
        assert!(!p.flush_at_end(now));
        assert_eq!(p.background_period(now), Some(Duration::from_secs(5)));
    }

    #[test]
    fn adaptive_switches_to_background_when_frequent_and_back_when_rare() {
        let t0 = Instant::now();
        let mut a = FlushPolicy::new(FlushMode::Adaptive);
        a.on_invoke(t0);
        assert!(a.flush_at_end(t0), "rare: flush at end");
        assert_eq!(a.background_period(t0), None);
        for i in 1..ADAPTIVE_FREQUENT as u64 {
            a.on_invoke(t0 + Duration::from_secs(i));
        }
        let t = t0 + Duration::from_secs(5);
        assert!(!a.flush_at_end(t), "frequent: /next at once");
        assert_eq!(a.background_period(t), Some(ADAPTIVE_PERIOD));
        // A long pause: the next invocation is rare again.
        let later = t0 + Duration::from_secs(600);
        a.on_invoke(later);
        assert!(a.flush_at_end(later));
    }

    #[test]
    fn adaptive_needs_the_invocations_inside_the_window() {
        let t0 = Instant::now();
        let mut a = FlushPolicy::new(FlushMode::Adaptive);
        for i in 0..10u64 {
            a.on_invoke(t0 + Duration::from_secs(i * 30));
        }
        assert!(a.flush_at_end(t0 + Duration::from_secs(270)));
    }
}
