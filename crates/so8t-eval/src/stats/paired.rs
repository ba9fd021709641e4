//! Paired significance tests: exact McNemar and Wilcoxon signed-rank.

use super::dist::{binom_half_cdf, normal_two_sided_p, signed_sum_counts, two_sided_from_counts};
use super::{check_finite, check_min_len, check_same_len, Result};

/// Result of the exact McNemar test on paired correctness of systems A and B.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct McNemar {
    /// Number of paired items.
    pub n: usize,
    /// Items A got right and B got wrong.
    pub b01: u64,
    /// Items A got wrong and B got right.
    pub b10: u64,
    /// Test statistic `min(b01, b10)` (statsmodels' exact statistic).
    pub statistic: u64,
    /// Two-sided exact p-value `min(1, 2 · BinomCDF(min(b01, b10); b01 + b10, 1/2))`.
    pub p_value: f64,
}

/// Exact (binomial) McNemar test on two equally long correctness vectors.
///
/// Matches statsmodels `mcnemar([[_, b01], [b10, _]], exact=True)`. With no discordant pairs the
/// p-value is 1. The binomial tail is computed in log space, so hundreds of thousands of
/// discordant pairs are fine. Errors on a length mismatch or empty input.
pub fn mcnemar_exact(a_correct: &[bool], b_correct: &[bool]) -> Result<McNemar> {
    check_same_len(a_correct.len(), b_correct.len())?;
    check_min_len("a_correct", a_correct.len(), 1)?;
    let mut b01 = 0_u64;
    let mut b10 = 0_u64;
    for (&a, &b) in a_correct.iter().zip(b_correct) {
        match (a, b) {
            (true, false) => b01 += 1,
            (false, true) => b10 += 1,
            _ => {}
        }
    }
    let statistic = b01.min(b10);
    let p_value = (2.0 * binom_half_cdf(statistic, b01 + b10)).min(1.0);
    Ok(McNemar {
        n: a_correct.len(),
        b01,
        b10,
        statistic,
        p_value,
    })
}

/// How the Wilcoxon p-value was obtained (mirrors SciPy's `method='auto'` choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WilcoxonMethod {
    /// Exact null distribution of `W+` (n ≤ 50, no ties, no zero differences).
    Exact,
    /// Exact enumeration of all `2^n` sign flips (n ≤ 13 with ties or zero differences);
    /// SciPy's deterministic `PermutationMethod` result.
    Permutation,
    /// Normal approximation with tie-corrected variance, no continuity correction.
    Normal,
}

/// Result of the Wilcoxon signed-rank test on `d = b − a`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Wilcoxon {
    /// Number of pairs given (zero differences included).
    pub n: usize,
    /// Number of zero differences (dropped, `zero_method='wilcox'`).
    pub n_zero: usize,
    /// Sum of the ranks of positive differences (B above A).
    pub w_plus: f64,
    /// Sum of the ranks of negative differences (B below A).
    pub w_minus: f64,
    /// Two-sided statistic `min(W+, W−)` as reported by SciPy.
    pub statistic: f64,
    /// z-score `(W+ − mean) / sd` of the normal approximation (`None` for the exact methods).
    pub z: Option<f64>,
    /// Two-sided p-value.
    pub p_value: f64,
    /// How the p-value was computed.
    pub method: WilcoxonMethod,
}

/// Wilcoxon signed-rank test on the paired differences `d = b − a` (two-sided).
///
/// Mirrors `scipy.stats.wilcoxon(b, a)` with its defaults (`zero_method='wilcox'`,
/// `correction=False`, `method='auto'`, SciPy 1.17):
/// * zero differences are dropped before ranking; `|d|` gets average ranks for ties;
/// * n (all pairs, zeros included) > 50 → normal approximation;
/// * n ≤ 50 with no ties and no zeros → exact null distribution of `W+`;
/// * n ≤ 13 with ties or zeros → exact enumeration of all sign flips (SciPy's permutation test,
///   deterministic at that size);
/// * otherwise → normal approximation, variance `n(n+1)(2n+1)/24 − Σ(t³−t)/48`.
///
/// When every difference is zero the statistic is 0 and the p-value is 1 (SciPy returns NaN in
/// its asymptotic branch). Errors on a length mismatch, empty input or non-finite values.
pub fn wilcoxon_signed_rank(a: &[f64], b: &[f64]) -> Result<Wilcoxon> {
    check_same_len(a.len(), b.len())?;
    check_min_len("a", a.len(), 1)?;
    check_finite("a", a)?;
    check_finite("b", b)?;
    let n = a.len();
    let d: Vec<f64> = b.iter().zip(a).map(|(x, y)| x - y).collect();
    if d.iter().any(|v| !v.is_finite()) {
        return Err(super::StatsError::NonFinite("b - a"));
    }
    let nonzero: Vec<f64> = d.iter().copied().filter(|&v| v != 0.0).collect();
    let n_zero = n - nonzero.len();
    let count = nonzero.len();

    // Average ranks of |d|; doubled so that every rank is an integer.
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by(|&i, &j| nonzero[i].abs().total_cmp(&nonzero[j].abs()));
    let mut rank2 = vec![0_u64; count];
    let mut tie_term = 0.0_f64; // Σ (t³ − t)
    let mut has_ties = false;
    let mut start = 0;
    while start < count {
        let value = nonzero[order[start]].abs();
        let mut end = start + 1;
        while end < count && nonzero[order[end]].abs() == value {
            end += 1;
        }
        let t = (end - start) as u64;
        if t > 1 {
            has_ties = true;
            let tf = t as f64;
            tie_term += tf * tf * tf - tf;
        }
        // ranks start+1 ..= end; average = (start + 1 + end) / 2; doubled = start + 1 + end
        let avg2 = (start + 1 + end) as u64;
        for &idx in &order[start..end] {
            rank2[idx] = avg2;
        }
        start = end;
    }
    let w_plus2: u64 = (0..count)
        .filter(|&i| nonzero[i] > 0.0)
        .map(|i| rank2[i])
        .sum();
    let total2: u64 = rank2.iter().sum();
    let w_plus = w_plus2 as f64 / 2.0;
    let w_minus = (total2 - w_plus2) as f64 / 2.0;
    let statistic = w_plus.min(w_minus);

    if count == 0 {
        return Ok(Wilcoxon {
            n,
            n_zero,
            w_plus: 0.0,
            w_minus: 0.0,
            statistic: 0.0,
            z: None,
            p_value: 1.0,
            method: if n <= 13 {
                WilcoxonMethod::Permutation
            } else {
                WilcoxonMethod::Normal
            },
        });
    }

    let method = if n > 50 {
        WilcoxonMethod::Normal
    } else if !has_ties && n_zero == 0 {
        WilcoxonMethod::Exact
    } else if n <= 13 {
        WilcoxonMethod::Permutation
    } else {
        WilcoxonMethod::Normal
    };

    let (p_value, z) = match method {
        WilcoxonMethod::Exact => {
            // No ties: ranks are 1..=count and W+ is an integer.
            let weights: Vec<u64> = (1..=count as u64).collect();
            let counts = signed_sum_counts(&weights);
            let k = (w_plus2 / 2) as usize;
            (two_sided_from_counts(&counts, k, k), None)
        }
        WilcoxonMethod::Permutation => {
            // Null distribution of 2·W+ over all sign flips of the nonzero differences (flipping
            // a zero changes nothing, so each pattern is counted 2^n_zero times: same ratios).
            let counts = signed_sum_counts(&rank2);
            let k = w_plus2 as usize;
            (two_sided_from_counts(&counts, k, k), None)
        }
        WilcoxonMethod::Normal => {
            let c = count as f64;
            let mean = c * (c + 1.0) / 4.0;
            let var = (c * (c + 1.0) * (2.0 * c + 1.0) - tie_term / 2.0) / 24.0;
            let z = (w_plus - mean) / var.sqrt();
            (normal_two_sided_p(z), Some(-z.abs()))
        }
    };

    Ok(Wilcoxon {
        n,
        n_zero,
        w_plus,
        w_minus,
        statistic,
        z,
        p_value,
        method,
    })
}
