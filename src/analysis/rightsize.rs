//! Right-size recommendation: the smallest memory size that holds the observed peak with headroom,
//! and what the change would save or cost at the observed rate and duration.

/// Lambda's memory bounds and step (MB).
pub const MIN_MEMORY_MB: u32 = 128;
/// Largest memory size Lambda allows (MB); no recommendation goes above it.
pub const MAX_MEMORY_MB: u32 = 10_240;
/// Memory size at which a function gets one full vCPU; CPU share is proportional to memory.
pub const ONE_VCPU_MB: u32 = 1_769;
/// Lambda's on-demand price per GB-second (us-east-1), by architecture.
pub const PRICE_X86_64: f64 = 0.000_016_666_7;
/// Lambda's on-demand price per GB-second (us-east-1) on arm64 (Graviton), USD.
pub const PRICE_ARM64: f64 = 0.000_013_333_4;
const SECONDS_PER_MONTH: f64 = 30.0 * 24.0 * 3600.0;

/// Settings of the right-size recommendation (`LMP_HEADROOM`, `LMP_PRICE_PER_GB_SECOND`).
#[derive(Debug, Clone, PartialEq)]
pub struct RightSizeConfig {
    /// Fraction added to the observed peak (`LMP_HEADROOM`, default 0.3).
    pub headroom: f64,
    /// Price per GB-second (`LMP_PRICE_PER_GB_SECOND`; default by architecture).
    pub price_per_gb_second: f64,
}

impl Default for RightSizeConfig {
    fn default() -> Self {
        Self {
            headroom: 0.3,
            price_per_gb_second: if cfg!(target_arch = "aarch64") {
                PRICE_ARM64
            } else {
                PRICE_X86_64
            },
        }
    }
}

/// What the environment has shown so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Highest memory use observed (platform `maxMemoryUsedMB`, or RSS figures without telemetry).
    pub peak_mb: f64,
    /// Configured memory size.
    pub memory_size_mb: u32,
    /// Invocations seen and the wall-clock span they were seen over.
    pub invocations: u64,
    /// Seconds from the first to the last invocation seen; 0 after a single invocation.
    pub observed_seconds: f64,
    /// Mean billed duration per invocation.
    pub mean_billed_ms: f64,
}

/// A recommended memory size and what the change would save (the `right_size` log line).
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// `RecommendedMemorySize`: peak × (1 + headroom), rounded up to a whole MB, in 128–10,240.
    pub recommended_mb: u32,
    /// Invocations per month extrapolated from this environment alone (a lower bound when the
    /// function runs in several environments at once).
    pub invocations_per_month: Option<f64>,
    /// Monthly saving in USD at that rate (negative: the change costs more).
    pub monthly_saving_usd: Option<f64>,
    /// Set when a smaller size also means less CPU.
    pub cpu_note: Option<String>,
}

/// Recommend a memory size, or `None` when no peak has been observed yet.
pub fn recommend(usage: &Usage, config: &RightSizeConfig) -> Option<Recommendation> {
    if !(usage.peak_mb.is_finite() && usage.peak_mb > 0.0) {
        return None;
    }
    let headroom = if config.headroom.is_finite() {
        config.headroom.max(0.0)
    } else {
        0.0
    };
    let wanted = (usage.peak_mb * (1.0 + headroom)).ceil();
    let recommended_mb = (wanted.min(f64::from(MAX_MEMORY_MB)) as u32).max(MIN_MEMORY_MB);

    let invocations_per_month = (usage.observed_seconds > 0.0 && usage.invocations > 0)
        .then(|| usage.invocations as f64 / usage.observed_seconds * SECONDS_PER_MONTH);
    let monthly_saving_usd = invocations_per_month.map(|per_month| {
        let delta_gb = (f64::from(usage.memory_size_mb) - f64::from(recommended_mb)) / 1024.0;
        delta_gb * (usage.mean_billed_ms / 1000.0) * per_month * config.price_per_gb_second
    });
    let cpu_note = (recommended_mb < usage.memory_size_mb).then(|| {
        let now = usage.memory_size_mb.min(ONE_VCPU_MB);
        let then = recommended_mb.min(ONE_VCPU_MB);
        let share = f64::from(then) / f64::from(now);
        format!(
            "CPU is allocated in proportion to memory ({ONE_VCPU_MB} MB = one vCPU): at {recommended_mb} MB a \
             CPU-bound function gets {:.0}% of the CPU it has at {} MB and may run longer, which \
             reduces the saving",
            share * 100.0,
            usage.memory_size_mb
        )
    });
    Some(Recommendation {
        recommended_mb,
        invocations_per_month,
        monthly_saving_usd,
        cpu_note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(peak_mb: f64, memory_size_mb: u32) -> Usage {
        Usage {
            peak_mb,
            memory_size_mb,
            invocations: 3_600,
            observed_seconds: 3_600.0,
            mean_billed_ms: 100.0,
        }
    }

    #[test]
    fn recommends_peak_plus_headroom() {
        let r = recommend(&usage(200.0, 1024), &RightSizeConfig::default()).unwrap();
        assert_eq!(r.recommended_mb, 260);
        // One invocation a second for a month, 100 ms each, 764 MB less, x86 price.
        let expected = (764.0 / 1024.0) * 0.1 * SECONDS_PER_MONTH * PRICE_X86_64;
        assert!((r.monthly_saving_usd.unwrap() - expected).abs() < 1e-9);
        assert!(r.cpu_note.unwrap().contains("25%"));
    }

    #[test]
    fn never_below_128_nor_above_10240() {
        let small = recommend(&usage(40.0, 512), &RightSizeConfig::default()).unwrap();
        assert_eq!(small.recommended_mb, MIN_MEMORY_MB);
        let huge = recommend(&usage(9_900.0, 10_240), &RightSizeConfig::default()).unwrap();
        assert_eq!(huge.recommended_mb, MAX_MEMORY_MB);
    }

    #[test]
    fn growing_costs_money_and_has_no_cpu_note() {
        let r = recommend(&usage(120.0, 128), &RightSizeConfig::default()).unwrap();
        assert_eq!(r.recommended_mb, 156);
        assert!(r.monthly_saving_usd.unwrap() < 0.0);
        assert_eq!(r.cpu_note, None);
    }

    #[test]
    fn no_peak_no_recommendation_and_no_rate_no_saving() {
        assert_eq!(
            recommend(&usage(0.0, 128), &RightSizeConfig::default()),
            None
        );
        assert_eq!(
            recommend(&usage(f64::NAN, 128), &RightSizeConfig::default()),
            None
        );
        let once = Usage {
            observed_seconds: 0.0,
            ..usage(100.0, 512)
        };
        let r = recommend(&once, &RightSizeConfig::default()).unwrap();
        assert_eq!(r.monthly_saving_usd, None);
    }
}
