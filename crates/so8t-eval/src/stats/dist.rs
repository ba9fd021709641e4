//! Distribution helpers: Binomial(n, 1/2) CDF in log space, Wilcoxon null distributions by
//! dynamic programming, and the standard normal tail via `erfc`.

/// Natural log of the binomial coefficient `C(n, k)` as a compensated sum of
/// `ln((n - k + i) / i)`, `i = 1..=k` (with `k` replaced by `min(k, n - k)`).
pub(crate) fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    let k = k.min(n - k);
    let nk = (n - k) as f64;
    // Kahan summation keeps the error at a few ulps even for k ~ 50_000.
    let mut sum = 0.0_f64;
    let mut comp = 0.0_f64;
    for i in 1..=k {
        let i = i as f64;
        let term = ((nk + i) / i).ln() - comp;
        let t = sum + term;
        comp = (t - sum) - term;
        sum = t;
    }
    sum
}

/// `P(X <= k)` for `X ~ Binomial(n, 1/2)`, accurate for `n` up to millions.
///
/// For `k < n/2` the terms `C(n, i)` grow with `i`, so the sum is taken backwards from the
/// largest term using the ratio `C(n, i-1)/C(n, i) = i/(n-i+1)` and scaled by
/// `exp(ln C(n,k) - n ln 2)`. For `k >= n/2` the symmetry `P(X <= k) = 1 - P(X <= n-k-1)` is used.
pub(crate) fn binom_half_cdf(k: u64, n: u64) -> f64 {
    if k >= n {
        return 1.0;
    }
    if 2 * k >= n {
        return 1.0 - binom_half_cdf(n - k - 1, n);
    }
    let mut ratio_sum = 1.0_f64;
    let mut term = 1.0_f64;
    let mut i = k;
    while i > 0 {
        term *= i as f64 / (n - i + 1) as f64;
        ratio_sum += term;
        if term < ratio_sum * 1e-18 {
            break;
        }
        i -= 1;
    }
    let ln_p = ln_choose(n, k) - n as f64 * std::f64::consts::LN_2 + ratio_sum.ln();
    ln_p.exp()
}

/// Null distribution of the sum of the (integer) `weights` whose sign is positive when each sign
/// is an independent fair coin: `counts[s]` is the number of the `2^m` sign patterns with sum `s`.
///
/// Counts are exact in `u64` while `weights.len() <= 63`.
pub(crate) fn signed_sum_counts(weights: &[u64]) -> Vec<u64> {
    let total: u64 = weights.iter().sum();
    let mut counts = vec![0_u64; total as usize + 1];
    counts[0] = 1;
    let mut reach = 0_usize;
    for &w in weights {
        let w = w as usize;
        for s in (0..=reach).rev() {
            let c = counts[s];
            if c != 0 {
                counts[s + w] += c;
            }
        }
        reach += w;
    }
    counts
}

/// Two-sided p-value from exact counts: `min(1, 2 * min(P(T <= lo), P(T >= hi)))` where
/// `counts` is the null distribution (see [`signed_sum_counts`]).
pub(crate) fn two_sided_from_counts(counts: &[u64], lo: usize, hi: usize) -> f64 {
    let total: u64 = counts.iter().sum();
    let le: u64 = counts.iter().take(lo + 1).sum();
    let ge: u64 = counts.iter().skip(hi).sum();
    let tail = le.min(ge) as f64 / total as f64;
    (2.0 * tail).min(1.0)
}

/// Complementary error function, relative accuracy ~1e-14 over the whole real line.
///
/// Uses the Maclaurin series of `erf` for `|x| < 2` and the Laplace continued fraction
/// `erfc(x) = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))` (modified Lentz) for
/// `x >= 2`.
pub(crate) fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let x2 = x * x;
        let mut term = x; // (-1)^n x^(2n+1) / n!
        let mut sum = x;
        for n in 1..200 {
            let n = f64::from(n);
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        return 1.0 - sum * std::f64::consts::FRAC_2_SQRT_PI;
    }
    if x > 27.3 {
        return 0.0;
    }
    // Continued fraction K = 1/(x + a1/(x + a2/(x + ...))), a_k = k/2, via modified Lentz.
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0_f64;
    for k in 1..5000 {
        let a = k as f64 * 0.5;
        d = x + a * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = x + a / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

/// Two-sided standard normal p-value `2 · P(Z > |z|)`.
pub(crate) fn normal_two_sided_p(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_known_values() {
        // Reference values: scipy.special.erfc (SciPy 1.17.1).
        let cases = [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_16),
            (2.0, 0.004_677_734_981_047_266),
            (3.0, 2.209_049_699_858_544_5e-5),
            (5.0, 1.537_459_794_428_034_7e-12),
        ];
        for (x, want) in cases {
            let got = erfc(x);
            assert!(
                ((got - want) / want).abs() < 1e-13,
                "erfc({x}) = {got}, want {want}"
            );
        }
        assert!((erfc(-1.0) - (2.0 - 0.157_299_207_050_285_13)).abs() < 1e-15);
    }

    #[test]
    fn binom_small_exact() {
        // n = 10: P(X <= 2) = (1 + 10 + 45) / 1024
        let got = binom_half_cdf(2, 10);
        assert!((got - 56.0 / 1024.0).abs() < 1e-15);
        // k >= n/2 branch: P(X <= 5) = 638/1024
        let got = binom_half_cdf(5, 10);
        assert!((got - 638.0 / 1024.0).abs() < 1e-15);
        assert_eq!(binom_half_cdf(0, 0), 1.0);
    }

    #[test]
    fn signed_sum_counts_small() {
        // weights 1, 2, 3: sums over 8 sign patterns
        assert_eq!(signed_sum_counts(&[1, 2, 3]), vec![1, 1, 1, 2, 1, 1, 1]);
    }
}
