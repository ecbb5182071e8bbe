//! Byte-interval sampling: where the next sample falls, and what a sampled block stands for.
//!
//! Sample points form a Poisson process on the line of bytes allocated, with a mean gap of
//! `mean` bytes: the gaps are exponential. A block of `size` bytes holds at least one point
//! with probability `1 - exp(-size / mean)`, so weighting each sampled block by the inverse of
//! that probability makes the sum over live sampled blocks an unbiased estimate of live bytes.
//! After a sampled block the next gap is drawn afresh: the process is memoryless, so that is
//! exact whatever part of the block the point fell in.

/// Largest gap drawn (bytes): a cap that keeps counters far from overflow.
const MAX_GAP: f64 = (1u64 << 40) as f64;

/// A small, fast generator (xorshift64*): sampling needs speed and independence from the
/// user's own random state, not cryptographic quality.
#[derive(Debug, Clone)]
pub struct Gaps {
    state: u64,
    mean: f64,
}

impl Gaps {
    /// A generator of gaps with the given mean (bytes, at least 1), seeded with `seed`.
    pub fn new(mean: u64, seed: u64) -> Self {
        let mut gaps = Gaps {
            state: 0,
            mean: mean.max(1) as f64,
        };
        gaps.reseed(seed);
        gaps
    }

    /// Restarts the sequence (a restored snapshot must not repeat its siblings' samples).
    pub fn reseed(&mut self, seed: u64) {
        // splitmix64 of the seed: any seed, 0 included, gives a good non-zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        self.state = if z == 0 { 0x2545_F491_4F6C_DD1D } else { z };
    }

    /// The mean gap, bytes.
    pub fn mean(&self) -> u64 {
        self.mean as u64
    }

    fn next_unit(&mut self) -> f64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        let bits = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        // (0, 1]: never 0, so the logarithm is finite.
        (bits as f64 + 1.0) * (1.0 / (1u64 << 53) as f64)
    }

    /// The next gap between sample points, bytes (at least 1).
    pub fn next_gap(&mut self) -> i64 {
        let gap = -self.next_unit().ln() * self.mean;
        if gap.is_nan() || gap < 1.0 {
            1
        } else if gap > MAX_GAP {
            MAX_GAP as i64
        } else {
            gap as i64
        }
    }

    /// The bytes a sampled block of `size` bytes stands for: `size / P(sampled)`.
    pub fn weight(&self, size: u64) -> u64 {
        if size == 0 {
            return self.mean as u64;
        }
        let s = size as f64;
        let p = -(-s / self.mean).exp_m1();
        if p <= 0.0 || p.is_nan() {
            return self.mean as u64;
        }
        let w = s / p;
        if w >= u64::MAX as f64 {
            u64::MAX
        } else {
            w.round() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_have_the_asked_mean() {
        let mut g = Gaps::new(65_536, 7);
        let n = 200_000;
        let sum: i64 = (0..n).map(|_| g.next_gap()).sum();
        let mean = sum as f64 / n as f64;
        assert!((mean / 65_536.0 - 1.0).abs() < 0.01, "mean gap {mean}");
    }

    #[test]
    fn weights_are_the_inverse_probability() {
        let g = Gaps::new(1000, 1);
        // A tiny block stands for about one mean gap; a huge one for itself.
        assert!((g.weight(1) as i64 - 1000).abs() <= 1);
        assert_eq!(g.weight(1_000_000), 1_000_000);
        let w = g.weight(1000) as f64;
        assert!((w - 1000.0 / (1.0 - (-1.0f64).exp())).abs() < 1.0);
        assert_eq!(g.weight(0), 1000);
    }

    #[test]
    fn seeds_give_different_sequences_and_reseed_repeats() {
        let mut a = Gaps::new(100, 1);
        let mut b = Gaps::new(100, 2);
        let xa: Vec<i64> = (0..8).map(|_| a.next_gap()).collect();
        let xb: Vec<i64> = (0..8).map(|_| b.next_gap()).collect();
        assert_ne!(xa, xb);
        a.reseed(2);
        let again: Vec<i64> = (0..8).map(|_| a.next_gap()).collect();
        assert_eq!(again, xb);
    }

    /// The estimator itself: blocks of mixed sizes through the Poisson process, the weighted
    /// sum of the sampled ones against the true total, over many seeds.
    #[test]
    fn estimate_is_unbiased_on_mixed_sizes() {
        let sizes: Vec<u64> = (0..20_000u64)
            .map(|i| [16, 48, 200, 4096, 70_000][(i % 5) as usize])
            .collect();
        let truth: u64 = sizes.iter().sum();
        let mut total_err = 0.0;
        let seeds = 40;
        for seed in 0..seeds {
            let mut g = Gaps::new(65_536, seed);
            let mut remaining = g.next_gap();
            let mut est = 0u64;
            for &s in &sizes {
                remaining -= s as i64;
                if remaining <= 0 {
                    est += g.weight(s);
                    remaining = g.next_gap();
                }
            }
            total_err += est as f64 / truth as f64 - 1.0;
        }
        let bias = total_err / seeds as f64;
        assert!(bias.abs() < 0.01, "mean relative error {bias}");
    }
}
