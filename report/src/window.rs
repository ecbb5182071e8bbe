//! The time window a report covers, its bins, and the timestamp formats it reads and writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `[start_ms, end_ms)` in epoch milliseconds, aligned so that CloudWatch accepts the window as
/// one period (a multiple of 60 s; of 300 s beyond 15 days and 3600 s beyond 63 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Window start, epoch ms (inclusive).
    pub start_ms: i64,
    /// Window end, epoch ms (exclusive): now, rounded up to the period granularity.
    pub end_ms: i64,
    /// Bin of the memory series from the logs.
    pub bin_ms: i64,
}

/// Bin widths used for the memory-over-time series (seconds).
const NICE_BINS: &[i64] = &[
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
];
/// Points per environment the memory series aims at.
const POINTS: i64 = 150;

impl Window {
    /// The `since` before now, the end rounded up to the granularity; `bin` of the memory
    /// series, or about 150 bins (`POINTS`) per window.
    pub fn ending_now(since: Duration, bin: Option<Duration>) -> Window {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Window::ending_at(now_ms, since, bin)
    }

    /// As [`Window::ending_now`], with now given as `now_ms` (epoch ms).
    pub fn ending_at(now_ms: i64, since: Duration, bin: Option<Duration>) -> Window {
        let since_s = since.as_secs().max(60) as i64;
        let g = granularity_s(since_s) * 1000;
        let end_ms = (now_ms + g - 1) / g * g;
        let period_ms = (since_s * 1000 + g - 1) / g * g;
        let bin_ms = bin.map_or_else(
            || {
                let wanted = period_ms / 1000 / POINTS;
                NICE_BINS
                    .iter()
                    .copied()
                    .find(|b| *b >= wanted)
                    .unwrap_or(86_400)
                    * 1000
            },
            |b| (b.as_millis() as i64).max(1),
        );
        Window {
            start_ms: end_ms - period_ms,
            end_ms,
            bin_ms,
        }
    }

    /// Length of the window in seconds.
    pub fn seconds(&self) -> i64 {
        (self.end_ms - self.start_ms) / 1000
    }

    /// The whole window as one GetMetricData period.
    pub fn period_s(&self) -> i32 {
        i32::try_from(self.seconds()).unwrap_or(i32::MAX)
    }

    /// The memory bin in whole seconds (Logs Insights' `bin()` takes no fractions here).
    pub fn bin_s(&self) -> i64 {
        ((self.bin_ms + 999) / 1000).max(1)
    }

    /// Bin of metric series: the log bin rounded up to what CloudWatch accepts.
    pub fn metric_bin_s(&self) -> i32 {
        let g = granularity_s(self.seconds());
        let bin = (self.bin_s() + g - 1) / g * g;
        i32::try_from(bin).unwrap_or(86_400)
    }
}

/// Smallest period CloudWatch returns for data of that age.
fn granularity_s(age_s: i64) -> i64 {
    if age_s > 63 * 86_400 {
        3600
    } else if age_s > 15 * 86_400 {
        300
    } else {
        60
    }
}

/// Epoch milliseconds as `2026-01-31T12:00:00Z`.
pub fn format_utc(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Epoch milliseconds as `12:00:00` (the day is in the report's header), with tenths when
/// `fine`.
pub fn format_clock(ms: i64, fine: bool) -> String {
    let full = format_utc(ms);
    let clock = full.get(11..19).unwrap_or(&full).to_string();
    if fine {
        format!("{clock}.{}", ms.rem_euclid(1000) / 100)
    } else {
        clock
    }
}

/// A timestamp as Logs Insights returns it: epoch milliseconds (aggregates of `@timestamp`) or
/// `2026-01-31 12:00:00.000` in UTC (`@timestamp`, `bin()`).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(ms) = s.parse::<f64>() {
        return ms.is_finite().then_some(ms as i64);
    }
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// A duration in words: `40 s`, `45 min`, `3.2 h`, `2.5 days`.
pub fn format_hours(hours: f64) -> String {
    if hours < 1.5 / 60.0 {
        format!("{:.0} s", hours * 3600.0)
    } else if hours < 1.0 {
        format!("{:.0} min", hours * 60.0)
    } else if hours < 48.0 {
        format!("{hours:.1} h")
    } else {
        format!("{:.1} days", hours / 24.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_aligned_to_whole_minutes() {
        let w = Window::ending_at(1_700_000_030_500, Duration::from_secs(86_400), None);
        assert_eq!(w.end_ms % 60_000, 0);
        assert!(w.end_ms >= 1_700_000_030_500);
        assert_eq!(w.seconds(), 86_400);
        assert_eq!(w.bin_s(), 600, "24h / 150 points = 576 s, next nice bin");
        assert_eq!(w.metric_bin_s(), 600);
    }

    #[test]
    fn short_windows_bin_in_seconds_and_metrics_in_minutes() {
        let w = Window::ending_at(1_700_000_000_000, Duration::from_secs(600), None);
        assert_eq!(w.bin_s(), 5);
        assert_eq!(w.metric_bin_s(), 60);
        let fine = Window::ending_at(
            0,
            Duration::from_secs(600),
            Some(Duration::from_millis(100)),
        );
        assert_eq!((fine.bin_ms, fine.bin_s()), (100, 1));
    }

    #[test]
    fn old_windows_use_coarser_periods() {
        let w = Window::ending_at(1_700_000_000_000, Duration::from_secs(30 * 86_400), None);
        assert_eq!(w.end_ms % 300_000, 0);
        assert_eq!(w.period_s() % 300, 0);
        assert_eq!(w.metric_bin_s() % 300, 0);
    }

    #[test]
    fn insights_timestamps_in_both_forms() {
        assert_eq!(parse_timestamp("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(
            parse_timestamp("2023-11-14 22:13:20.123"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_timestamp("2023-11-14 22:13:20"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(format_clock(1_700_000_000_123, false), "22:13:20");
        assert_eq!(format_clock(1_700_000_000_123, true), "22:13:20.1");
    }

    #[test]
    fn hours_in_words() {
        assert_eq!(format_hours(0.5), "30 min");
        assert_eq!(format_hours(0.01), "36 s");
        assert_eq!(format_hours(3.25), "3.2 h");
        assert_eq!(format_hours(72.0), "3.0 days");
    }
}
