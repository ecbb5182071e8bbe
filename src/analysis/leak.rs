//! Leak detection across the warm invocations of one execution environment.
//!
//! The platform's `maxMemoryUsedMB` only ever rises, so it cannot tell a leak from an allocator
//! that keeps freed memory. This module looks at level series sampled after every invocation —
//! the Python heap's live block count (a net counter that also sees frees of old blocks) scaled to
//! bytes by the traced invocations, and the runtime's RSS — and calls a leak only when all of
//! these hold over the recent window:
//! - the Theil–Sen slope is at least the configured minimum growth per invocation;
//! - the Mann–Kendall test says the rise is not chance (`p ≤ max_p_value`);
//! - the rise persists: each third of the window rises at no less than `persistence` × the
//!   window's slope. A cache that fills to its bound and then stays flat fails this in its flat
//!   third; a one-off warm-up step fails it in the thirds before and after the step.

use std::collections::{HashMap, VecDeque};

#[cfg(test)]
use super::trend::indexed;
use super::trend::{theil_sen_slope, trend};

/// Thresholds of the leak rule (`LMP_LEAK_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct LeakConfig {
    /// Warm invocations a verdict looks back over; a series must span all of them (a shorter
    /// one cannot tell a cache still filling from a leak).
    pub window: usize,
    /// Invocations ignored after the environment's cold start (imports, caches warming up).
    pub warmup: usize,
    /// Fewer samples than this in the window: not enough data (the heap may be counted only
    /// every few invocations on large heaps).
    pub min_points: usize,
    /// Python heap growth (bytes per invocation) below which no leak is called.
    pub min_heap_growth_bytes: f64,
    /// Heap growth in blocks per invocation below which no leak is called, when no traced
    /// invocation has told how large a block is yet.
    pub min_heap_growth_blocks: f64,
    /// RSS growth (bytes per invocation) below which no leak is called: RSS moves in pages and
    /// arenas, so this is coarser than the heap threshold.
    pub min_rss_growth_bytes: f64,
    /// Largest Mann–Kendall p-value accepted as a real trend.
    pub max_p_value: f64,
    /// Each third of the window must rise at least this fraction of the whole window's slope.
    pub persistence: f64,
    /// Consecutive invocations the rule must hold before a leak is called: a cache that has
    /// just reached its bound still looks like a leak for a few invocations.
    pub confirm: usize,
}

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            window: 40,
            warmup: 3,
            min_points: 8,
            min_heap_growth_bytes: 512.0,
            min_heap_growth_blocks: 1.0,
            min_rss_growth_bytes: 16_384.0,
            max_p_value: 0.01,
            persistence: 0.25,
            confirm: 5,
        }
    }
}

/// The verdict on one series or one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    NotEnoughData,
    NoLeak,
    Leak,
}

/// What one series says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesAssessment {
    pub verdict: Verdict,
    /// Theil–Sen slope, series unit per invocation (0 when not enough data).
    pub slope: f64,
    /// Mann–Kendall p-value (1 when not enough data).
    pub p_value: f64,
    pub points: usize,
}

const NO_DATA: SeriesAssessment = SeriesAssessment {
    verdict: Verdict::NotEnoughData,
    slope: 0.0,
    p_value: 1.0,
    points: 0,
};

/// Judge one level series (`(invocation number, level)`, oldest first) against a minimum slope
/// per invocation.
pub fn assess_series(
    levels: &[(f64, f64)],
    min_slope: f64,
    config: &LeakConfig,
) -> SeriesAssessment {
    let points = levels.len();
    let span = match (levels.first(), levels.last()) {
        (Some(a), Some(b)) => b.0 - a.0 + 1.0,
        _ => 0.0,
    };
    // Three quarters: samples taken every few invocations rarely sit on the window's first one.
    let enough = points >= config.min_points.max(3) && span >= 0.75 * config.window as f64;
    let Some(t) = trend(levels).filter(|_| enough) else {
        return SeriesAssessment { points, ..NO_DATA };
    };
    let rising = t.slope >= min_slope && t.p_value <= config.max_p_value;
    let verdict = if rising && persists(levels, t.slope, config.persistence) {
        Verdict::Leak
    } else {
        Verdict::NoLeak
    };
    SeriesAssessment {
        verdict,
        slope: t.slope,
        p_value: t.p_value,
        points,
    }
}

fn persists(levels: &[(f64, f64)], slope: f64, persistence: f64) -> bool {
    let third = levels.len() / 3;
    if third < 2 {
        return false;
    }
    levels
        .chunks(third)
        .filter(|c| c.len() >= 2)
        .all(|chunk| theil_sen_slope(chunk).is_some_and(|s| s >= persistence * slope))
}

/// Figures one invocation contributes to the leak series. `None` where a source is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LeakObservation {
    /// Live blocks of the Python object allocator after the invocation (`heap_blocks`).
    pub heap_blocks: Option<f64>,
    /// Bytes per retained block, from a traced invocation (`retained_bytes / retained_blocks`).
    pub bytes_per_block: Option<f64>,
    /// Runtime RSS after the invocation.
    pub rss_bytes: Option<f64>,
}

/// The environment's verdict and the figures behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakReport {
    pub verdict: Verdict,
    /// Python heap growth per invocation in bytes, when a traced invocation gave the block size.
    pub heap_growth_bytes_per_invoke: Option<f64>,
    pub heap: SeriesAssessment,
    pub rss: SeriesAssessment,
}

/// Rolling leak state of one execution environment.
#[derive(Debug, Clone)]
pub struct LeakDetector {
    config: LeakConfig,
    seen: usize,
    heap_blocks: VecDeque<(f64, f64)>,
    rss: VecDeque<(f64, f64)>,
    bytes_per_block: Option<f64>,
    /// Consecutive observations after which the rule said leak.
    streak: usize,
    /// The rule's report on the current window, computed once per observation (Theil–Sen is
    /// quadratic in the window, and the report is read after every invocation).
    last_rule: LeakReport,
}

impl LeakDetector {
    pub fn new(config: LeakConfig) -> Self {
        let mut detector = Self {
            config,
            seen: 0,
            heap_blocks: VecDeque::new(),
            rss: VecDeque::new(),
            bytes_per_block: None,
            streak: 0,
            last_rule: LeakReport {
                verdict: Verdict::NotEnoughData,
                heap_growth_bytes_per_invoke: None,
                heap: NO_DATA,
                rss: NO_DATA,
            },
        };
        detector.last_rule = detector.rule();
        detector
    }

    pub fn config(&self) -> &LeakConfig {
        &self.config
    }

    /// Forget everything: the runtime process was replaced (crash, OOM, new environment).
    pub fn reset(&mut self) {
        *self = Self::new(self.config.clone());
    }

    pub fn observe(&mut self, observation: LeakObservation) {
        self.seen += 1;
        if let Some(bpb) = observation
            .bytes_per_block
            .filter(|b| b.is_finite() && *b > 0.0)
        {
            // Smooth across traced invocations: one odd invocation should not rescale the series.
            self.bytes_per_block = Some(match self.bytes_per_block {
                Some(previous) => 0.7 * previous + 0.3 * bpb,
                None => bpb,
            });
        }
        if self.seen <= self.config.warmup {
            return;
        }
        let window = self.config.window.max(3);
        let x = self.seen as f64;
        push_bounded(&mut self.heap_blocks, x, observation.heap_blocks, window);
        push_bounded(&mut self.rss, x, observation.rss_bytes, window);
        self.last_rule = self.rule();
        self.streak = if self.last_rule.verdict == Verdict::Leak {
            self.streak + 1
        } else {
            0
        };
    }

    /// The verdict after the last observation: the rule, confirmed over `confirm` invocations.
    pub fn assess(&self) -> LeakReport {
        let mut report = self.last_rule;
        if report.verdict == Verdict::Leak && self.streak < self.config.confirm.max(1) {
            report.verdict = Verdict::NoLeak;
        }
        report
    }

    /// What the rule says of the current window, unconfirmed.
    fn rule(&self) -> LeakReport {
        let blocks: Vec<(f64, f64)> = self.heap_blocks.iter().copied().collect();
        let heap = match self.bytes_per_block {
            Some(bpb) => {
                let bytes: Vec<(f64, f64)> = blocks.iter().map(|(x, b)| (*x, b * bpb)).collect();
                assess_series(&bytes, self.config.min_heap_growth_bytes, &self.config)
            }
            None => assess_series(&blocks, self.config.min_heap_growth_blocks, &self.config),
        };
        let rss_levels: Vec<(f64, f64)> = self.rss.iter().copied().collect();
        let rss = assess_series(&rss_levels, self.config.min_rss_growth_bytes, &self.config);
        let verdict = match (heap.verdict, rss.verdict) {
            (Verdict::Leak, _) | (_, Verdict::Leak) => Verdict::Leak,
            (Verdict::NotEnoughData, Verdict::NotEnoughData) => Verdict::NotEnoughData,
            _ => Verdict::NoLeak,
        };
        let heap_growth_bytes_per_invoke = self
            .bytes_per_block
            .filter(|_| heap.verdict != Verdict::NotEnoughData)
            .map(|_| heap.slope);
        LeakReport {
            verdict,
            heap_growth_bytes_per_invoke,
            heap,
            rss,
        }
    }
}

/// Appends a sample and keeps only those of the last `window` invocations.
fn push_bounded(series: &mut VecDeque<(f64, f64)>, x: f64, value: Option<f64>, window: usize) {
    if let Some(v) = value.filter(|v| v.is_finite()) {
        series.push_back((x, v));
    }
    while series.front().is_some_and(|f| f.0 <= x - window as f64) {
        series.pop_front();
    }
}

/// Allocation sites that keep memory across invocations, from the traced invocations' top sites.
///
/// A traced invocation names the sites of the blocks it allocated and still holds. Weighting each
/// site by that invocation's net share (`growth_bytes / retained_bytes`, clamped to 0..1) keeps
/// a bounded cache — which retains an entry but frees an older one — from outranking a leak.
#[derive(Debug, Clone, Default)]
pub struct SiteGrowth {
    sites: HashMap<String, SiteTotals>,
    traced_invocations: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct SiteTotals {
    weighted_bytes: f64,
    invocations: u32,
}

/// A site and the net bytes it kept per traced invocation, on average.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GrowingSite {
    pub site: String,
    pub bytes_per_traced_invoke: f64,
    pub seen_in: u32,
}

/// Sites tracked at most; the smallest are dropped beyond it so memory stays bounded.
const MAX_SITES: usize = 256;

impl SiteGrowth {
    /// Add one traced invocation: its sites (`file:line`, bytes) and its net share.
    pub fn observe<'a>(&mut self, sites: impl IntoIterator<Item = (&'a str, u64)>, net_share: f64) {
        let share = if net_share.is_finite() {
            net_share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.traced_invocations += 1;
        for (site, bytes) in sites {
            let totals = self.sites.entry(site.to_owned()).or_default();
            totals.weighted_bytes += bytes as f64 * share;
            totals.invocations += 1;
        }
        if self.sites.len() > MAX_SITES {
            let mut by_size: Vec<(String, f64)> = self
                .sites
                .iter()
                .map(|(k, v)| (k.clone(), v.weighted_bytes))
                .collect();
            by_size.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (site, _) in by_size.into_iter().skip(MAX_SITES) {
                self.sites.remove(&site);
            }
        }
    }

    /// The `n` sites with the most net growth, largest first; sites with none are left out.
    pub fn top(&self, n: usize) -> Vec<GrowingSite> {
        let traced = f64::from(self.traced_invocations.max(1));
        let mut out: Vec<GrowingSite> = self
            .sites
            .iter()
            .filter(|(_, t)| t.weighted_bytes > 0.0)
            .map(|(site, t)| GrowingSite {
                site: site.clone(),
                bytes_per_traced_invoke: t.weighted_bytes / traced,
                seen_in: t.invocations,
            })
            .collect();
        out.sort_by(|a, b| {
            b.bytes_per_traced_invoke
                .total_cmp(&a.bytes_per_traced_invoke)
                .then_with(|| a.site.cmp(&b.site))
        });
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise (xorshift) so that failures reproduce.
    fn noise(seed: u64, n: usize, amplitude: f64) -> Vec<f64> {
        let mut state = seed.max(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state % 10_000) as f64 / 10_000.0 - 0.5) * 2.0 * amplitude
            })
            .collect()
    }

    fn linear(base: f64, per_invoke: f64, n: usize, amplitude: f64, seed: u64) -> Vec<f64> {
        noise(seed, n, amplitude)
            .into_iter()
            .enumerate()
            .map(|(i, e)| base + per_invoke * i as f64 + e)
            .collect()
    }

    fn cfg() -> LeakConfig {
        LeakConfig::default()
    }

    #[test]
    fn linear_leaks_are_detected_with_accurate_slope() {
        for (per_invoke, amplitude) in [(1024.0, 2_000.0), (10_240.0, 20_000.0), (1_048_576.0, 1e6)]
        {
            let series = linear(50e6, per_invoke, 40, amplitude, 7);
            let a = assess_series(&indexed(&series), cfg().min_heap_growth_bytes, &cfg());
            assert_eq!(a.verdict, Verdict::Leak, "{per_invoke} B/invoke: {a:?}");
            let error = (a.slope - per_invoke).abs() / per_invoke;
            assert!(
                error <= 0.10,
                "{per_invoke} B/invoke: slope {} (error {error})",
                a.slope
            );
        }
    }

    #[test]
    fn cache_filling_to_a_bound_then_flat_is_not_a_leak() {
        // Grows 64 KiB per invocation for 15 invocations, then stays at its bound.
        let series: Vec<f64> = (0..40)
            .map(|i| 30e6 + 65_536.0 * (i.min(15) as f64))
            .zip(noise(3, 40, 4_096.0))
            .map(|(v, e)| v + e)
            .collect();
        let a = assess_series(&indexed(&series), cfg().min_heap_growth_bytes, &cfg());
        assert_eq!(a.verdict, Verdict::NoLeak, "{a:?}");
    }

    #[test]
    fn pure_noise_is_not_a_leak() {
        for seed in 1..20 {
            let series = linear(40e6, 0.0, 40, 200_000.0, seed);
            let a = assess_series(&indexed(&series), cfg().min_rss_growth_bytes, &cfg());
            assert_eq!(a.verdict, Verdict::NoLeak, "seed {seed}: {a:?}");
        }
    }

    #[test]
    fn one_off_warm_up_step_is_not_a_leak() {
        for step_at in [5, 13, 20, 27, 35] {
            let series: Vec<f64> = (0..40)
                .map(|i| if i >= step_at { 80e6 } else { 60e6 })
                .zip(noise(11, 40, 8_192.0))
                .map(|(v, e)| v + e)
                .collect();
            let a = assess_series(&indexed(&series), cfg().min_rss_growth_bytes, &cfg());
            assert_eq!(a.verdict, Verdict::NoLeak, "step at {step_at}: {a:?}");
        }
    }

    #[test]
    fn short_series_are_not_enough_data() {
        let a = assess_series(&indexed(&[1.0, 2.0, 3.0]), 0.5, &cfg());
        assert_eq!(a.verdict, Verdict::NotEnoughData);
        // Plenty of samples, but over 20 invocations only: the window (30) is not covered.
        let dense: Vec<(f64, f64)> = (0..40)
            .map(|i| (f64::from(i) / 2.0, f64::from(i)))
            .collect();
        assert_eq!(
            assess_series(&dense, 0.5, &cfg()).verdict,
            Verdict::NotEnoughData
        );
    }

    #[test]
    fn detector_converts_blocks_to_bytes_and_skips_warm_up() {
        let mut d = LeakDetector::new(cfg());
        // Warm-up invocations with a big jump that must not count.
        for blocks in [10_000.0, 60_000.0, 61_000.0] {
            d.observe(LeakObservation {
                heap_blocks: Some(blocks),
                ..Default::default()
            });
        }
        // Then one 10 KiB block kept per invocation; one traced invocation says 10 KiB per block.
        for i in 0..50 {
            d.observe(LeakObservation {
                heap_blocks: Some(61_000.0 + i as f64),
                bytes_per_block: (i == 5).then_some(10_240.0),
                rss_bytes: Some(70e6 + 10_240.0 * i as f64),
            });
        }
        let report = d.assess();
        assert_eq!(report.verdict, Verdict::Leak);
        let growth = report.heap_growth_bytes_per_invoke.unwrap();
        assert!(
            (growth - 10_240.0).abs() / 10_240.0 < 0.10,
            "growth {growth}"
        );
        assert_eq!(report.heap.points, 40, "the window");
    }

    #[test]
    fn a_cache_reaching_its_bound_is_never_called_a_leak() {
        // A bounded deque fills for 20 invocations (4 blocks each), then stays at its bound.
        let mut d = LeakDetector::new(cfg());
        for i in 0..200 {
            d.observe(LeakObservation {
                heap_blocks: Some(60_000.0 + 4.0 * f64::from(i.min(20))),
                bytes_per_block: Some(350.0),
                rss_bytes: None,
            });
            assert_ne!(d.assess().verdict, Verdict::Leak, "invocation {i}");
        }
    }

    #[test]
    fn a_leak_is_called_after_the_confirmation_invocations() {
        let mut d = LeakDetector::new(LeakConfig {
            confirm: 5,
            ..cfg()
        });
        let mut first = None;
        let mut rule_first = None;
        for i in 0..60 {
            d.observe(LeakObservation {
                heap_blocks: Some(60_000.0 + 2.0 * f64::from(i)),
                bytes_per_block: Some(1024.0),
                rss_bytes: None,
            });
            if rule_first.is_none() && d.rule().verdict == Verdict::Leak {
                rule_first = Some(i);
            }
            if first.is_none() && d.assess().verdict == Verdict::Leak {
                first = Some(i);
            }
        }
        assert_eq!(first, rule_first.map(|r| r + 4));
    }

    #[test]
    fn rss_is_not_judged_before_a_full_window() {
        // A cache filling for the first 20 invocations looks like a leak on a short window.
        let mut d = LeakDetector::new(cfg());
        for i in 0..23 {
            d.observe(LeakObservation {
                rss_bytes: Some(60e6 + 65_536.0 * i as f64),
                ..Default::default()
            });
        }
        assert_eq!(d.assess().rss.verdict, Verdict::NotEnoughData);
    }

    #[test]
    fn detector_uses_the_real_invocation_number_of_sparse_samples() {
        let mut d = LeakDetector::new(cfg());
        for i in 0..120 {
            // The heap is counted every third invocation only; 2 blocks of 1 KiB kept per call.
            d.observe(LeakObservation {
                heap_blocks: (i % 3 == 0).then_some(40_000.0 + 2.0 * i as f64),
                bytes_per_block: Some(1024.0),
                rss_bytes: None,
            });
        }
        let report = d.assess();
        assert_eq!(report.verdict, Verdict::Leak);
        let growth = report.heap_growth_bytes_per_invoke.unwrap();
        assert!((growth - 2048.0).abs() < 1.0, "growth {growth}");
    }

    #[test]
    fn detector_without_data_says_so_and_reset_forgets() {
        let mut d = LeakDetector::new(cfg());
        assert_eq!(d.assess().verdict, Verdict::NotEnoughData);
        for i in 0..40 {
            d.observe(LeakObservation {
                heap_blocks: Some(i as f64 * 5.0),
                ..Default::default()
            });
        }
        assert_eq!(d.assess().verdict, Verdict::Leak);
        assert_eq!(d.assess().heap_growth_bytes_per_invoke, None);
        d.reset();
        assert_eq!(d.assess().verdict, Verdict::NotEnoughData);
    }

    #[test]
    fn flat_heap_but_rising_rss_is_a_native_leak() {
        let mut d = LeakDetector::new(cfg());
        // Warm-up, a full window, confirmation.
        for i in 0..50 {
            d.observe(LeakObservation {
                heap_blocks: Some(50_000.0),
                bytes_per_block: Some(64.0),
                rss_bytes: Some(80e6 + 262_144.0 * i as f64),
            });
        }
        let report = d.assess();
        assert_eq!(report.heap.verdict, Verdict::NoLeak);
        assert_eq!(report.rss.verdict, Verdict::Leak);
        assert_eq!(report.rss.points, 40);
        assert_eq!(report.verdict, Verdict::Leak);
    }

    #[test]
    fn site_growth_ranks_net_growth_over_churn() {
        let mut g = SiteGrowth::default();
        for _ in 0..4 {
            // A leaking invocation: everything it keeps is net growth.
            g.observe([("app.py:10", 10_000), ("lib.py:5", 100)], 1.0);
            // A cache invocation: keeps an entry but evicts an older one — no net growth.
            g.observe([("cache.py:3", 50_000)], 0.0);
        }
        let top = g.top(5);
        assert_eq!(top[0].site, "app.py:10");
        assert_eq!(top[0].seen_in, 4);
        assert!((top[0].bytes_per_traced_invoke - 5_000.0).abs() < 1e-9);
        assert!(top.iter().all(|s| s.site != "cache.py:3"));
    }

    #[test]
    fn site_growth_stays_bounded() {
        let mut g = SiteGrowth::default();
        for i in 0..1_000u64 {
            let site = format!("f.py:{i}");
            g.observe([(site.as_str(), i + 1)], 1.0);
        }
        assert!(g.sites.len() <= MAX_SITES);
        assert_eq!(g.top(1)[0].site, "f.py:999");
    }
}
