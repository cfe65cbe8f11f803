//! The statistics the privacy experiments report: exact binomial intervals
//! (Clopper–Pearson), an adversary's advantage, Shannon entropy, and a
//! rank-based AUC. Plain functions over numbers, no I/O.

/// A figure with a 95 % interval around it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// The estimate.
    pub value: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

/// The regularized incomplete beta function I_x(a, b), by the continued
/// fraction (modified Lentz), switching sides where it converges slowly.
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..500 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        for step in [
            even,
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + step * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + step / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = COEFFICIENTS[1..]
        .iter()
        .enumerate()
        .fold(COEFFICIENTS[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The p such that I_p(a, b) = q, by bisection.
fn beta_quantile(a: f64, b: f64, q: f64) -> f64 {
    let (mut low, mut high) = (0.0, 1.0);
    for _ in 0..100 {
        let mid = 0.5 * (low + high);
        if incomplete_beta(a, b, mid) < q {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// The exact (Clopper–Pearson) 95 % interval of a proportion, `k` of `n`.
pub fn clopper_pearson(k: u64, n: u64) -> Interval {
    if n == 0 {
        return Interval {
            value: f64::NAN,
            low: 0.0,
            high: 1.0,
        };
    }
    let (k_f, n_f) = (k as f64, n as f64);
    let low = if k == 0 {
        0.0
    } else {
        beta_quantile(k_f, n_f - k_f + 1.0, 0.025)
    };
    let high = if k == n {
        1.0
    } else {
        beta_quantile(k_f + 1.0, n_f - k_f, 0.975)
    };
    Interval {
        value: k_f / n_f,
        low,
        high,
    }
}

/// An adversary's advantage 2·Pr[win] − 1 over `n` games it won `wins` of,
/// with the Clopper–Pearson interval carried through.
pub fn advantage(wins: u64, n: u64) -> Interval {
    let p = clopper_pearson(wins, n);
    Interval {
        value: 2.0 * p.value - 1.0,
        low: 2.0 * p.low - 1.0,
        high: 2.0 * p.high - 1.0,
    }
}

/// Shannon entropy in bits of the distribution proportional to `weights`.
pub fn entropy_bits(weights: impl IntoIterator<Item = f64> + Clone) -> f64 {
    let total: f64 = weights.clone().into_iter().filter(|w| *w > 0.0).sum();
    if total <= 0.0 {
        return 0.0;
    }
    -weights
        .into_iter()
        .filter(|w| *w > 0.0)
        .map(|w| {
            let p = w / total;
            p * p.log2()
        })
        .sum::<f64>()
}

/// The mean of `samples` with a normal 95 % interval (1.96 standard
/// errors); fine for the hundreds of samples an experiment takes.
pub fn mean_interval(samples: &[f64]) -> Interval {
    let n = samples.len() as f64;
    if samples.is_empty() {
        return Interval {
            value: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let half = 1.96 * (var / n).sqrt();
    Interval {
        value: mean,
        low: mean - half,
        high: mean + half,
    }
}

/// The area under the ROC curve: the probability that a positive's score
/// exceeds a negative's, ties counting half (the Mann–Whitney statistic).
pub fn auc(positives: &[f64], negatives: &[f64]) -> f64 {
    if positives.is_empty() || negatives.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks over ties, then the rank sum of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j + 1) as f64 / 2.0;
        rank_sum += rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// Equal-frequency bins of `values`: each value's bin is `bins` times the
/// share of values below it, so equal values share a bin.
fn quantile_bins(values: &[f64], bins: usize) -> Vec<usize> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = values.len().max(1);
    values
        .iter()
        .map(|v| {
            let below = sorted.partition_point(|x| x < v);
            (below * bins / n).min(bins - 1)
        })
        .collect()
}

/// The `q` quantile of `sorted` (ascending) by the nearest rank, NaN when
/// it is empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Mutual information in bits between `xs` and `ys` (paired), each cut
/// into `bins` equal-frequency bins, with the Miller–Madow correction for
/// the plug-in estimate's bias; clamped at 0.
pub fn mutual_information_bits(xs: &[f64], ys: &[f64], bins: usize) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 2 || bins < 2 {
        return f64::NAN;
    }
    let (bx, by) = (quantile_bins(&xs[..n], bins), quantile_bins(&ys[..n], bins));
    let mut joint = vec![0.0f64; bins * bins];
    let (mut px, mut py) = (vec![0.0f64; bins], vec![0.0f64; bins]);
    for (&a, &b) in bx.iter().zip(&by) {
        joint[a * bins + b] += 1.0;
        px[a] += 1.0;
        py[b] += 1.0;
    }
    let entropy = |counts: &[f64]| {
        let occupied = counts.iter().filter(|&&c| c > 0.0).count() as f64;
        let plug_in = -counts
            .iter()
            .filter(|&&c| c > 0.0)
            .map(|&c| {
                let p = c / n as f64;
                p * p.log2()
            })
            .sum::<f64>();
        plug_in + (occupied - 1.0).max(0.0) / (2.0 * n as f64 * std::f64::consts::LN_2)
    };
    (entropy(&px) + entropy(&py) - entropy(&joint)).max(0.0)
}

/// The adjusted Rand index of a clustering against the truth (Hubert and
/// Arabie): 1 when they agree, about 0 for a clustering no better than
/// chance. Both slices give each item's label.
pub fn adjusted_rand_index(truth: &[u64], clusters: &[u64]) -> f64 {
    use std::collections::HashMap;
    let pairs = |n: f64| n * (n - 1.0) / 2.0;
    let mut cells: HashMap<(u64, u64), f64> = HashMap::new();
    let mut rows: HashMap<u64, f64> = HashMap::new();
    let mut columns: HashMap<u64, f64> = HashMap::new();
    for (&t, &c) in truth.iter().zip(clusters) {
        *cells.entry((t, c)).or_default() += 1.0;
        *rows.entry(t).or_default() += 1.0;
        *columns.entry(c).or_default() += 1.0;
    }
    let index: f64 = cells.values().map(|&n| pairs(n)).sum();
    let a: f64 = rows.values().map(|&n| pairs(n)).sum();
    let b: f64 = columns.values().map(|&n| pairs(n)).sum();
    let total = pairs(truth.len().min(clusters.len()) as f64);
    if total <= 0.0 {
        return f64::NAN;
    }
    let expected = a * b / total;
    let most = 0.5 * (a + b);
    if (most - expected).abs() < f64::EPSILON {
        return if (index - expected).abs() < f64::EPSILON {
            1.0
        } else {
            0.0
        };
    }
    (index - expected) / (most - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjusted_rand_index_matches_a_worked_example() {
        // Pairs together in both: 2; expected by chance 1.2; best 4.5.
        let ari = adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]);
        assert!((ari - 0.8 / 3.3).abs() < 1e-12, "{ari}");
        assert_eq!(adjusted_rand_index(&[3, 3, 5], &[1, 1, 0]), 1.0);
    }

    #[test]
    fn clopper_pearson_matches_published_values() {
        // 7 of 20: 0.1539 – 0.5922 (the exact interval, as R's binom.test gives).
        let i = clopper_pearson(7, 20);
        assert!((i.low - 0.1539).abs() < 1e-3, "{i:?}");
        assert!((i.high - 0.5922).abs() < 1e-3, "{i:?}");
        let all = clopper_pearson(50, 50);
        assert_eq!(all.high, 1.0);
        assert!((all.low - 0.9289).abs() < 1e-3, "{all:?}");
    }

    #[test]
    fn entropy_and_auc_of_known_cases() {
        assert!((entropy_bits([1.0; 8]) - 3.0).abs() < 1e-12);
        assert_eq!(entropy_bits([5.0, 0.0]), 0.0);
        assert_eq!(auc(&[2.0, 3.0], &[0.0, 1.0]), 1.0);
        assert_eq!(auc(&[1.0], &[1.0]), 0.5);
        assert!((auc(&[0.0, 3.0], &[1.0, 2.0]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn mutual_information_of_known_cases() {
        let xs: Vec<f64> = (0..4_000).map(|i| ((i * 7_919) % 4_000) as f64).collect();
        // A copy carries all log2(bins) bits; a constant carries none.
        assert!((mutual_information_bits(&xs, &xs, 8) - 3.0).abs() < 0.01);
        assert_eq!(mutual_information_bits(&xs, &vec![1.0; xs.len()], 8), 0.0);
        // An unrelated sequence carries (almost) none.
        let ys: Vec<f64> = (0..4_000)
            .map(|i| ((i * 104_729 + 13) % 3_989) as f64)
            .collect();
        assert!(mutual_information_bits(&xs, &ys, 8) < 0.02);
    }
}
