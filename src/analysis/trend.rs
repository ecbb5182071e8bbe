//! Robust trend of a series: Theil–Sen slope and the Mann–Kendall test.
//!
//! Theil–Sen (the median of all pairwise slopes) ignores up to ~29% outliers, which is what RSS
//! and heap series of a real process look like (a collection here, an arena returned there).
//! Mann–Kendall gives the confidence that a monotonic trend exists at all, without assuming noise
//! is normal. Both are O(n²); the windows here hold at most a few hundred points.

/// Slope and confidence of a series of `(x, y)` points, `x` the invocation number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Theil–Sen slope, in the series' unit per point.
    pub slope: f64,
    /// Two-sided p-value of the Mann–Kendall test for "no monotonic trend".
    pub p_value: f64,
    /// Number of points the trend was computed from.
    pub points: usize,
}

/// Theil–Sen slope of `(x, y)` points, in y per unit of x (`None` without two distinct x).
///
/// Points need not be equally spaced: a figure sampled every few invocations keeps its real x.
pub fn theil_sen_slope(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dx = b.0 - a.0;
            if dx != 0.0 {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    median(&mut slopes)
}

/// Median of a slice (reorders it). NaN-free input is assumed: callers filter non-finite values.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Two-sided p-value of the Mann–Kendall trend test (on the values in x order), with the tie
/// correction.
pub fn mann_kendall_p(ys: &[f64]) -> f64 {
    let n = ys.len();
    if n < 3 {
        return 1.0;
    }
    let mut s: i64 = 0;
    for i in 0..n {
        for j in (i + 1)..n {
            s += match ys[j].total_cmp(&ys[i]) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    let nf = n as f64;
    let mut variance = nf * (nf - 1.0) * (2.0 * nf + 5.0);
    for t in tie_group_sizes(ys) {
        let t = t as f64;
        variance -= t * (t - 1.0) * (2.0 * t + 5.0);
    }
    variance /= 18.0;
    if variance <= 0.0 {
        return 1.0; // every value equal: no trend
    }
    let z = if s > 0 {
        (s as f64 - 1.0) / variance.sqrt()
    } else if s < 0 {
        (s as f64 + 1.0) / variance.sqrt()
    } else {
        0.0
    };
    (2.0 * (1.0 - standard_normal_cdf(z.abs()))).clamp(0.0, 1.0)
}

fn tie_group_sizes(ys: &[f64]) -> Vec<usize> {
    let mut sorted = ys.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut groups = Vec::new();
    let mut run = 1;
    for pair in sorted.windows(2) {
        if pair[0] == pair[1] {
            run += 1;
        } else {
            if run > 1 {
                groups.push(run);
            }
            run = 1;
        }
    }
    if run > 1 {
        groups.push(run);
    }
    groups
}

/// Φ(z) via the Abramowitz–Stegun 7.1.26 approximation of erf (error < 1.5e-7).
fn standard_normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

/// Slope and confidence of points in x order, in one call (`None` for fewer than three points).
pub fn trend(points: &[(f64, f64)]) -> Option<Trend> {
    if points.len() < 3 {
        return None;
    }
    let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    Some(Trend {
        slope: theil_sen_slope(points)?,
        p_value: mann_kendall_p(&ys),
        points: points.len(),
    })
}

/// Interquartile mean of the slopes over `lag` invocations: `(y_j - y_i) / (x_j - x_i)` for
/// each point `i` and the first point `j` at least `lag` after it (`None` without such a pair).
///
/// Robust to isolated steps where Theil–Sen is not: one allocator arena mapped, one page table
/// grown, moves only the `lag` differences that straddle it — a quarter at most when `lag` is a
/// fifth of the window, and the trimmed quarters drop them — while Theil–Sen's median moves as
/// soon as half of all pairs straddle the step, which a step in the middle of the window does.
/// A steady leak moves every lagged difference alike. The mean of the middle half (rather than
/// its median) keeps a resolution finer than one 4 KiB page per `lag` invocations.
pub fn lagged_slope(points: &[(f64, f64)], lag: f64) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len());
    let mut j = 0;
    for (i, a) in points.iter().enumerate() {
        j = j.max(i + 1);
        while j < points.len() && points[j].0 - a.0 < lag {
            j += 1;
        }
        let Some(b) = points.get(j) else {
            break;
        };
        slopes.push((b.1 - a.1) / (b.0 - a.0));
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let quarter = slopes.len() / 4;
    let middle = &slopes[quarter..slopes.len() - quarter];
    Some(middle.iter().sum::<f64>() / middle.len() as f64)
}

/// One-sided p-value that a series of levels rose beyond the noise of its own increments: the
/// rise from the first point to the last against the root of the sum of the squared increments
/// between consecutive points (uncentred), read on the standard normal (1 for fewer than two
/// points or no movement).
///
/// Made for a level that moves in whole jumps that do not depend on each other — a sampled
/// estimate, which changes only when a sample is born or freed. With no drift, the rise is a sum
/// of zero-mean increments whose variance is the expected sum of their squares, whatever their
/// sizes: a random walk is judged as noise however trend-like it looks, where the Mann–Kendall
/// test, which assumes independent levels, calls it a trend. Against growth the sum of squares is
/// not centred, so it also holds the growth's own jumps: `n` equal jumps up and none down give
/// `z = √n`. Noise that returns at once (a value alive at one reading only) adds to the squares
/// and not to the rise: it costs sensitivity, never a false verdict.
pub fn drift_p_value(points: &[(f64, f64)]) -> f64 {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return 1.0;
    };
    let squares: f64 = points.windows(2).map(|w| (w[1].1 - w[0].1).powi(2)).sum();
    if !(squares > 0.0 && squares.is_finite()) {
        return 1.0;
    }
    let z = (last.1 - first.1) / squares.sqrt();
    (1.0 - standard_normal_cdf(z)).clamp(0.0, 1.0)
}

/// `(index, y)` points of an equally spaced series.
pub fn indexed(ys: &[f64]) -> Vec<(f64, f64)> {
    ys.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagged_slope_ignores_an_isolated_step_and_follows_a_steady_rise() {
        // Flat with one 56 KiB step in the middle: Theil–Sen reads it as growth.
        let step: Vec<f64> = (0..40)
            .map(|i| if i >= 20 { 57_344.0 } else { 0.0 })
            .collect();
        assert_eq!(lagged_slope(&indexed(&step), 8.0), Some(0.0));
        assert!(theil_sen_slope(&indexed(&step)).unwrap() > 1000.0);
        // Page-granular rise of ~1 KiB per invocation.
        let rise: Vec<f64> = (0..40)
            .map(|i| (f64::from(i) * 1024.0 / 4096.0).floor() * 4096.0)
            .collect();
        let s = lagged_slope(&indexed(&rise), 8.0).unwrap();
        assert!((s - 1024.0).abs() <= 128.0, "{s}");
        // A page every 12 invocations reads as its true 341 B, not as a whole page per lag.
        let drift: Vec<f64> = (0..40).map(|i| f64::from(i / 12) * 4096.0).collect();
        let s = lagged_slope(&indexed(&drift), 8.0).unwrap();
        assert!((s - 341.0).abs() <= 120.0, "{s}");
        // Missing points keep their real distance.
        let sparse: Vec<(f64, f64)> = (0..40)
            .filter(|i| i % 3 != 1)
            .map(|i| (f64::from(i), f64::from(i) * 5.0))
            .collect();
        assert_eq!(lagged_slope(&sparse, 8.0), Some(5.0));
        assert_eq!(lagged_slope(&indexed(&[1.0, 2.0]), 8.0), None);
    }

    #[test]
    fn slope_of_a_line_is_exact() {
        let ys: Vec<f64> = (0..20).map(|i| 5.0 + 3.0 * i as f64).collect();
        assert_eq!(theil_sen_slope(&indexed(&ys)), Some(3.0));
        // Every third point only, at its real x: same slope.
        let sparse: Vec<(f64, f64)> = (0..20).step_by(3).map(|i| (i as f64, ys[i])).collect();
        assert_eq!(theil_sen_slope(&sparse), Some(3.0));
    }

    #[test]
    fn slope_ignores_a_few_outliers() {
        let mut ys: Vec<f64> = (0..30).map(|i| 2.0 * i as f64).collect();
        ys[4] = 10_000.0;
        ys[17] = -10_000.0;
        let slope = theil_sen_slope(&indexed(&ys)).unwrap();
        assert!((slope - 2.0).abs() < 0.05, "slope {slope}");
    }

    #[test]
    fn mann_kendall_separates_trend_from_flat() {
        let rising: Vec<f64> = (0..20).map(|i| i as f64).collect();
        assert!(mann_kendall_p(&rising) < 1e-6);
        let flat = vec![7.0; 20];
        assert_eq!(mann_kendall_p(&flat), 1.0);
        let alternating: Vec<f64> = (0..20).map(|i| (i % 2) as f64).collect();
        assert!(mann_kendall_p(&alternating) > 0.5);
    }

    #[test]
    fn drift_test_counts_jumps_not_their_look() {
        let jumps = |steps: &[f64]| -> Vec<(f64, f64)> {
            let mut level = 1e6;
            let mut out = vec![(0.0, level)];
            for (i, s) in steps.iter().enumerate() {
                level += s;
                out.push((i as f64 + 1.0, level));
            }
            out
        };
        // 16 jumps of one sample up, none down: z = 4.
        let mut up = vec![0.0; 40];
        for i in (0..40).step_by(5).chain((2..40).step_by(5)) {
            up[i] = 65_536.0;
        }
        let p = drift_p_value(&jumps(&up));
        assert!((p - (1.0 - standard_normal_cdf(4.0))).abs() < 1e-9, "{p}");
        // Nine up, one down: z = 8 / √10 ≈ 2.5, whatever the Mann–Kendall test says of it.
        let mut walk = vec![0.0; 40];
        for i in [1, 4, 9, 13, 17, 22, 26, 30, 35] {
            walk[i] = 65_536.0;
        }
        walk[38] = -65_536.0;
        let p = drift_p_value(&jumps(&walk));
        let ys: Vec<f64> = jumps(&walk).iter().map(|p| p.1).collect();
        assert!(mann_kendall_p(&ys) < 1e-6, "a trend to Mann–Kendall");
        assert!((0.005..0.01).contains(&p), "{p}");
        // A value alive at one reading only: up and down again, no rise.
        let mut spikes = up.clone();
        for i in (3..40).step_by(10) {
            spikes[i] += 65_536.0;
            spikes[i + 1] -= 65_536.0;
        }
        assert!(drift_p_value(&jumps(&spikes)) > drift_p_value(&jumps(&up)));
        assert_eq!(drift_p_value(&jumps(&[0.0; 40])), 1.0);
        assert_eq!(drift_p_value(&[(0.0, 5.0)]), 1.0);
        assert_eq!(drift_p_value(&[]), 1.0);
    }

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!((standard_normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((standard_normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((standard_normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
    }

    #[test]
    fn too_short_series_have_no_trend() {
        assert_eq!(trend(&indexed(&[1.0, 2.0])), None);
        assert_eq!(theil_sen_slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
        assert_eq!(median(&mut []), None);
    }
}
