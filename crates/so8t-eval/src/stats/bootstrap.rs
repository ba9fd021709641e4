//! Seeded paired percentile bootstrap over items.
//!
//! Each resample draws `n_items` item indices uniformly with replacement (the same indices for
//! A and B, i.e. SciPy `bootstrap(..., paired=True)`), evaluates the statistic on them, and the
//! confidence interval is the pair of `(1 − confidence)/2` and `(1 + confidence)/2` percentiles
//! of the bootstrap distribution with linear interpolation (SciPy `method='percentile'`, NumPy's
//! default percentile rule). The generator is `rand::rngs::StdRng::seed_from_u64(seed)`, so a
//! run is reproducible for a given seed and `rand` version.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::classify::macro_f1_indexed;
use super::{
    check_finite, check_min_len, check_same_len, confusion_matrix, sample_std, Result, StatsError,
};

/// Confidence level used by the convenience wrappers (95 %).
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// A bootstrap percentile confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapCi {
    /// The statistic on the original (non-resampled) items.
    pub estimate: f64,
    /// Lower percentile bound.
    pub low: f64,
    /// Upper percentile bound.
    pub high: f64,
    /// Confidence level, e.g. 0.95.
    pub confidence: f64,
    /// Number of resamples drawn.
    pub resamples: usize,
    /// Resamples on which the statistic was undefined and that were left out of the percentiles.
    pub skipped: usize,
    /// Seed of the `StdRng` used for resampling.
    pub seed: u64,
}

/// Paired percentile bootstrap CI of a statistic of item indices.
///
/// `stat` receives the resampled indices (length `n_items`, with repetition) and returns the
/// statistic, typically a delta `metric_B − metric_A`. Non-finite values are treated like
/// undefined ones (see [`paired_bootstrap_ci_opt`]). Errors if `n_items == 0`, `resamples == 0`,
/// `confidence` is not in `(0, 1)`, or the statistic is undefined on the original items or on
/// every resample.
pub fn paired_bootstrap_ci<F>(
    n_items: usize,
    resamples: usize,
    seed: u64,
    confidence: f64,
    mut stat: F,
) -> Result<BootstrapCi>
where
    F: FnMut(&[usize]) -> f64,
{
    paired_bootstrap_ci_opt(n_items, resamples, seed, confidence, |idx| Some(stat(idx)))
}

/// Like [`paired_bootstrap_ci`] for a statistic that may be undefined on some resamples.
///
/// Resamples where `stat` returns `None` (or a non-finite value) are skipped and counted in
/// [`BootstrapCi::skipped`]; the percentiles are taken over the remaining ones.
pub fn paired_bootstrap_ci_opt<F>(
    n_items: usize,
    resamples: usize,
    seed: u64,
    confidence: f64,
    mut stat: F,
) -> Result<BootstrapCi>
where
    F: FnMut(&[usize]) -> Option<f64>,
{
    check_min_len("items", n_items, 1)?;
    check_min_len("resamples", resamples, 1)?;
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(StatsError::InvalidArgument(format!(
            "confidence must be in (0, 1), got {confidence}"
        )));
    }
    let all: Vec<usize> = (0..n_items).collect();
    let estimate = stat(&all)
        .filter(|v| v.is_finite())
        .ok_or_else(|| StatsError::Undefined("statistic on the original items".to_string()))?;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut idx = vec![0_usize; n_items];
    let mut values = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for slot in idx.iter_mut() {
            *slot = rng.gen_range(0..n_items);
        }
        if let Some(v) = stat(&idx).filter(|v| v.is_finite()) {
            values.push(v);
        }
    }
    if values.is_empty() {
        return Err(StatsError::Undefined(
            "statistic on every bootstrap resample".to_string(),
        ));
    }
    let skipped = resamples - values.len();
    values.sort_by(f64::total_cmp);
    let alpha = (1.0 - confidence) / 2.0;
    Ok(BootstrapCi {
        estimate,
        low: percentile_sorted(&values, alpha),
        high: percentile_sorted(&values, 1.0 - alpha),
        confidence,
        resamples,
        skipped,
        seed,
    })
}

/// Quantile `q ∈ [0, 1]` of `values` with linear interpolation between order statistics
/// (NumPy `percentile(values, 100 q)` default `method='linear'`).
///
/// Errors on empty input, non-finite values, or `q` outside `[0, 1]`.
pub fn percentile_linear(values: &[f64], q: f64) -> Result<f64> {
    check_min_len("values", values.len(), 1)?;
    check_finite("values", values)?;
    if !(0.0..=1.0).contains(&q) {
        return Err(StatsError::InvalidArgument(format!(
            "quantile must be in [0, 1], got {q}"
        )));
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Ok(percentile_sorted(&sorted, q))
}

/// Linear-interpolation quantile of an ascending, non-empty slice (NumPy's `_lerp`).
fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    if lo + 1 >= sorted.len() {
        return sorted[sorted.len() - 1];
    }
    let t = pos - lo as f64;
    let (a, b) = (sorted[lo], sorted[lo + 1]);
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

fn correct_counts(a: &[bool], b: &[bool], idx: &[usize]) -> (usize, usize) {
    idx.iter().fold((0, 0), |(ca, cb), &i| {
        (ca + usize::from(a[i]), cb + usize::from(b[i]))
    })
}

fn check_pair(a: usize, b: usize) -> Result<()> {
    check_same_len(a, b)?;
    check_min_len("items", a, 1)
}

/// 95 % paired bootstrap CI of the accuracy delta `acc_B − acc_A`.
///
/// Errors on a length mismatch, empty input or `resamples == 0`.
pub fn accuracy_delta_ci(
    a_correct: &[bool],
    b_correct: &[bool],
    resamples: usize,
    seed: u64,
) -> Result<BootstrapCi> {
    check_pair(a_correct.len(), b_correct.len())?;
    let n = a_correct.len() as f64;
    paired_bootstrap_ci(
        a_correct.len(),
        resamples,
        seed,
        DEFAULT_CONFIDENCE,
        |idx| {
            let (ca, cb) = correct_counts(a_correct, b_correct, idx);
            (cb as f64 - ca as f64) / n
        },
    )
}

/// 95 % paired bootstrap CI of the relative accuracy improvement `(acc_B − acc_A) / acc_A`.
///
/// The ratio is undefined when `acc_A = 0`: on the original items that is an
/// [`StatsError::Undefined`] error; on a resample the resample is skipped (counted in
/// [`BootstrapCi::skipped`]) and the percentiles use the others, which conditions the interval
/// on `acc_A > 0`. Check `skipped` when A's accuracy is very low.
pub fn relative_improvement_ci(
    a_correct: &[bool],
    b_correct: &[bool],
    resamples: usize,
    seed: u64,
) -> Result<BootstrapCi> {
    check_pair(a_correct.len(), b_correct.len())?;
    paired_bootstrap_ci_opt(
        a_correct.len(),
        resamples,
        seed,
        DEFAULT_CONFIDENCE,
        |idx| {
            let (ca, cb) = correct_counts(a_correct, b_correct, idx);
            (ca > 0).then(|| (cb as f64 - ca as f64) / ca as f64)
        },
    )
}

/// 95 % paired bootstrap CI of the macro-F1 delta `F1_B − F1_A` over classes `0..n_classes`.
///
/// Macro-F1 as in [`super::macro_f1`] (unparseable predictions count as wrong, no false
/// positive). Errors on length mismatches, empty input, `n_classes == 0`, out-of-range labels or
/// predictions, or `resamples == 0`.
pub fn macro_f1_delta_ci(
    labels: &[usize],
    pred_a: &[Option<usize>],
    pred_b: &[Option<usize>],
    n_classes: usize,
    resamples: usize,
    seed: u64,
) -> Result<BootstrapCi> {
    // Validates lengths and ranges once, so the resampling loop cannot index out of bounds.
    confusion_matrix(labels, pred_a, n_classes)?;
    confusion_matrix(labels, pred_b, n_classes)?;
    let mut tp = vec![0_u64; n_classes];
    let mut pred_count = vec![0_u64; n_classes];
    let mut support = vec![0_u64; n_classes];
    paired_bootstrap_ci(labels.len(), resamples, seed, DEFAULT_CONFIDENCE, |idx| {
        let mut f1 = |preds: &[Option<usize>]| {
            macro_f1_indexed(
                labels,
                preds,
                n_classes,
                idx,
                &mut tp,
                &mut pred_count,
                &mut support,
            )
        };
        let fa = f1(pred_a);
        let fb = f1(pred_b);
        fb - fa
    })
}

/// Bootstrap standard error of the mean: sample standard deviation (ddof = 1) of the means of
/// `resamples` seeded resamples of `values`.
///
/// Errors on empty or non-finite input, or `resamples < 2`.
pub fn bootstrap_stderr(values: &[f64], resamples: usize, seed: u64) -> Result<f64> {
    check_min_len("values", values.len(), 1)?;
    check_min_len("resamples", resamples, 2)?;
    check_finite("values", values)?;
    let n = values.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    Ok(sample_std(&means))
}
