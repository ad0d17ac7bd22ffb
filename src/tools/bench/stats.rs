//! Summaries of latency samples and of repeated measurements.

/// Percentiles and mean of a set of latency samples, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub min_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises `samples` (sorted in place). `None` for no samples.
    pub fn from_samples(samples: &mut [f64]) -> Option<LatencySummary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let sum: f64 = samples.iter().sum();
        Some(LatencySummary {
            count: samples.len(),
            mean_us: sum / samples.len() as f64,
            p50_us: percentile_sorted(samples, 50.0)?,
            p99_us: percentile_sorted(samples, 99.0)?,
            min_us: *samples.first()?,
            max_us: *samples.last()?,
        })
    }

    /// The summary as `key=value` pairs, for [`super::output::KeyValues`].
    pub fn pairs(&self) -> [(&'static str, f64); 5] {
        [
            ("p50_us", self.p50_us),
            ("p99_us", self.p99_us),
            ("mean_us", self.mean_us),
            ("min_us", self.min_us),
            ("max_us", self.max_us),
        ]
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `pct` % of the
/// samples at or below it. `None` for no samples.
pub fn percentile_sorted(sorted: &[f64], pct: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((pct / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// Median of repeated measurements (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v.get(mid).copied()
    } else {
        Some((v.get(mid - 1)? + v.get(mid)?) / 2.0)
    }
}

/// How far apart repeated measurements are: `(max - min) / median` in percent. Zero for one
/// value; `None` when the median is zero or there are no values.
pub fn spread_pct(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    if m == 0.0 {
        return None;
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((max - min) / m.abs() * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{seeds, Prng};

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&sorted, 50.0), Some(50.0));
        assert_eq!(percentile_sorted(&sorted, 99.0), Some(99.0));
        assert_eq!(percentile_sorted(&sorted, 100.0), Some(100.0));
        assert_eq!(percentile_sorted(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile_sorted(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile_sorted(&[], 50.0), None);
    }

    #[test]
    fn summary_of_known_samples() {
        let mut samples = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        let s = LatencySummary::from_samples(&mut samples).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.p50_us, 3.0);
        assert_eq!(s.p99_us, 5.0);
        assert_eq!(s.mean_us, 3.0);
        assert_eq!((s.min_us, s.max_us), (1.0, 5.0));
        assert!(LatencySummary::from_samples(&mut []).is_none());
    }

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(spread_pct(&[10.0]), Some(0.0));
        assert_eq!(spread_pct(&[9.0, 10.0, 11.0]), Some(20.0));
        assert_eq!(spread_pct(&[0.0, 0.0]), None);
    }

    /// Percentiles are order statistics: bounded by min and max, monotone in the percentage.
    #[test]
    fn summary_invariants_on_random_samples() {
        for seed in seeds(50) {
            let mut prng = Prng::new(seed);
            let n = 1 + prng.below(500) as usize;
            let mut samples: Vec<f64> = (0..n).map(|_| prng.f64()).collect();
            let s = LatencySummary::from_samples(&mut samples).unwrap();
            assert!(s.min_us <= s.p50_us, "seed {seed}");
            assert!(s.p50_us <= s.p99_us, "seed {seed}");
            assert!(s.p99_us <= s.max_us, "seed {seed}");
            assert!(
                s.min_us <= s.mean_us && s.mean_us <= s.max_us,
                "seed {seed}"
            );
            let m = median(&samples).unwrap();
            assert!(s.min_us <= m && m <= s.max_us, "seed {seed}");
        }
    }
}
