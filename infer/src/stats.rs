//! Statistics for comparing methods on the same problems: mean and spread over seeds, McNemar's
//! exact test on paired right/wrong outcomes, and a paired bootstrap confidence interval of the
//! difference in accuracy.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation (`n - 1`; 0 for one value, NaN for none).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// McNemar's exact test of two methods scored right/wrong on the same problems.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// Problems only the first method gets right.
    pub only_a: usize,
    /// Problems only the second method gets right.
    pub only_b: usize,
    /// Two-sided exact p-value: `min(1, 2 P[X <= min(only_a, only_b)])` with
    /// `X ~ Binomial(only_a + only_b, 1/2)` (1 when no problem is discordant).
    pub p_value: f64,
}

/// McNemar's exact test on paired outcomes (`true` = right). Panics if the lengths differ.
pub fn mcnemar(a: &[bool], b: &[bool]) -> McNemar {
    assert_eq!(a.len(), b.len(), "paired outcomes");
    let only_a = a.iter().zip(b).filter(|(x, y)| **x && !**y).count();
    let only_b = a.iter().zip(b).filter(|(x, y)| !**x && **y).count();
    McNemar {
        only_a,
        only_b,
        p_value: mcnemar_p(only_a, only_b),
    }
}

/// The exact two-sided McNemar p-value for discordant counts `b` and `c`.
pub fn mcnemar_p(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // P[X <= k], X ~ Bin(n, 1/2), summed in log space (n can be in the thousands).
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// A paired bootstrap estimate of `mean(a) - mean(b)` over problems.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedDiff {
    /// The observed difference of means.
    pub diff: f64,
    /// Lower end of the confidence interval.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// The interval's level (e.g. 0.95).
    pub level: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
}

/// Percentile bootstrap interval of `mean(a) - mean(b)`, resampling problems (pairs) with
/// replacement `resamples` times from `seed`. Panics if the lengths differ or are zero.
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> PairedDiff {
    assert!(
        !a.is_empty() && a.len() == b.len(),
        "paired, non-empty scores"
    );
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    let diff = d.iter().sum::<f64>() / n as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| d[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if means.is_empty() {
            return diff;
        }
        let i = ((p * (means.len() - 1) as f64).round() as usize).min(means.len() - 1);
        means[i]
    };
    let tail = (1.0 - level) / 2.0;
    PairedDiff {
        diff,
        lo: q(tail),
        hi: q(1.0 - tail),
        level,
        resamples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        // Sum of squares 32, n - 1 = 7.
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[3.0]), (3.0, 0.0));
        assert!(mean_std(&[]).0.is_nan());
    }

    #[test]
    fn mcnemar_matches_hand_computed_binomial_tails() {
        // b = 1, c = 5: P[X <= 1] = (1 + 6) / 64, two-sided 14/64 = 0.21875.
        assert!((mcnemar_p(1, 5) - 14.0 / 64.0).abs() < 1e-12);
        // b = 0, c = 10: 2 / 1024.
        assert!((mcnemar_p(0, 10) - 2.0 / 1024.0).abs() < 1e-12);
        // b = 3, c = 3: symmetric, capped at 1.
        assert_eq!(mcnemar_p(3, 3), 1.0);
        assert_eq!(mcnemar_p(0, 0), 1.0);
        // b = 2, c = 8: (1 + 10 + 45) / 1024 * 2 = 112 / 1024.
        assert!((mcnemar_p(8, 2) - 112.0 / 1024.0).abs() < 1e-12);
        let t = mcnemar(
            &[true, true, false, false, true],
            &[true, false, true, true, true],
        );
        assert_eq!((t.only_a, t.only_b), (1, 2));
        // n = 3, k = 1: (1 + 3) / 8 * 2 = 1.
        assert_eq!(t.p_value, 1.0);
    }

    #[test]
    fn paired_bootstrap_brackets_the_difference() {
        // Constant differences: every resample has the same mean.
        let a = [1.0, 1.0, 0.0, 1.0];
        let b = [0.0, 0.0, -1.0, 0.0];
        let d = paired_bootstrap(&a, &b, 200, 0.95, 1);
        assert_eq!((d.diff, d.lo, d.hi), (1.0, 1.0, 1.0));
        // 0/1 differences: 30 of 100 problems better, none worse. The resampled mean is
        // Binomial(100, 0.3) / 100: its 95 % interval is about 0.30 +- 0.09.
        let a: Vec<f64> = (0..100).map(|i| f64::from(i < 30)).collect();
        let b = vec![0.0; 100];
        let d = paired_bootstrap(&a, &b, 2000, 0.95, 7);
        assert!((d.diff - 0.3).abs() < 1e-12);
        assert!(d.lo > 0.19 && d.lo < 0.23, "{d:?}");
        assert!(d.hi > 0.37 && d.hi < 0.41, "{d:?}");
        // Same seed, same interval.
        assert_eq!(d, paired_bootstrap(&a, &b, 2000, 0.95, 7));
    }
}
