//! Paired A/B statistics and classification metrics (spec §7).
//!
//! Everything here is written from the textbook formulas; the reference values the tests compare
//! against come from SciPy / statsmodels / scikit-learn (see
//! `crates/so8t-eval/scripts/make_stats_reference.py`).
//!
//! * [`mcnemar_exact`]: exact McNemar test on paired correctness (statsmodels
//!   `mcnemar(table, exact=True)`).
//! * [`wilcoxon_signed_rank`]: Wilcoxon signed-rank test on paired scores (SciPy
//!   `stats.wilcoxon` defaults, `method='auto'`).
//! * [`paired_bootstrap_ci`] and the convenience wrappers [`accuracy_delta_ci`],
//!   [`macro_f1_delta_ci`], [`relative_improvement_ci`]: seeded percentile bootstrap over items.
//! * [`holm`]: Holm–Bonferroni adjusted p-values.
//! * [`confusion_matrix`], [`per_class_prf`], [`macro_f1`], [`accuracy`]: classification metrics
//!   with explicit handling of unparseable predictions.
//! * [`mean_stderr`], [`bootstrap_stderr`]: standard errors of a mean.
//! * [`Verdict`]: the A/B decision from an adjusted p-value and a delta.
//!
//! No function panics on user input: problems are reported as [`StatsError`].

mod bootstrap;
mod classify;
mod dist;
mod paired;

pub use bootstrap::{
    accuracy_delta_ci, bootstrap_stderr, macro_f1_delta_ci, paired_bootstrap_ci,
    paired_bootstrap_ci_opt, percentile_linear, relative_improvement_ci, BootstrapCi,
    DEFAULT_CONFIDENCE,
};
pub use classify::{
    accuracy, confusion_matrix, macro_f1, per_class_prf, ClassPrf, ConfusionMatrix,
};
pub use paired::{mcnemar_exact, wilcoxon_signed_rank, McNemar, Wilcoxon, WilcoxonMethod};

/// Result alias used by every fallible function of this module.
pub type Result<T> = std::result::Result<T, StatsError>;

/// Default significance level for [`Verdict::decide`] callers.
pub const DEFAULT_ALPHA: f64 = 0.05;

/// Errors for invalid inputs to the statistics functions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// Two paired inputs have different lengths.
    #[error("length mismatch: {left} vs {right} items")]
    LengthMismatch {
        /// Length of the first input.
        left: usize,
        /// Length of the second input.
        right: usize,
    },
    /// An input that needs at least `needed` items had fewer.
    #[error("{what}: need at least {needed} item(s), got {got}")]
    TooFew {
        /// Which input was too short.
        what: &'static str,
        /// Minimum number of items.
        needed: usize,
        /// Number of items given.
        got: usize,
    },
    /// An input contained NaN or an infinity.
    #[error("{0}: non-finite value")]
    NonFinite(&'static str),
    /// A class label or prediction is not below `n_classes`.
    #[error("label {label} out of range for {n_classes} classes")]
    LabelOutOfRange {
        /// The offending label.
        label: usize,
        /// Number of classes.
        n_classes: usize,
    },
    /// A scalar argument is outside its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The statistic is undefined on the data (for example a ratio with a zero denominator).
    #[error("statistic undefined: {0}")]
    Undefined(String),
}

pub(crate) fn check_same_len(left: usize, right: usize) -> Result<()> {
    if left != right {
        return Err(StatsError::LengthMismatch { left, right });
    }
    Ok(())
}

pub(crate) fn check_min_len(what: &'static str, got: usize, needed: usize) -> Result<()> {
    if got < needed {
        return Err(StatsError::TooFew { what, needed, got });
    }
    Ok(())
}

pub(crate) fn check_finite(what: &'static str, values: &[f64]) -> Result<()> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite(what));
    }
    Ok(())
}

/// Holm–Bonferroni step-down adjusted p-values, in the input order.
///
/// Same as statsmodels `multipletests(p, method='holm')[1]`: sort ascending, multiply the
/// i-th smallest (0-based) by `m - i`, take the running maximum, cap at 1. Tied p-values get
/// the same adjusted value. An empty input gives an empty output. Errors if a p-value is NaN or
/// outside `[0, 1]`.
pub fn holm(p_values: &[f64]) -> Result<Vec<f64>> {
    if p_values.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(StatsError::InvalidArgument(
            "p-values must lie in [0, 1]".to_string(),
        ));
    }
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0_f64;
    for (rank, &idx) in order.iter().enumerate() {
        let raw = p_values[idx] * (m - rank) as f64;
        running = running.max(raw);
        adjusted[idx] = running.min(1.0);
    }
    Ok(adjusted)
}

/// Standard error of the mean: sample standard deviation (ddof = 1) divided by `sqrt(n)`.
///
/// This is what lm-evaluation-harness reports as `acc_stderr` for per-item 0/1 scores. Needs at
/// least two finite values.
pub fn mean_stderr(values: &[f64]) -> Result<f64> {
    check_min_len("values", values.len(), 2)?;
    check_finite("values", values)?;
    let n = values.len() as f64;
    Ok(sample_std(values) / n.sqrt())
}

/// Sample standard deviation (ddof = 1) of at least two values (two-pass algorithm).
pub(crate) fn sample_std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (ss / (n - 1.0)).sqrt()
}

/// Outcome of an A/B comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// B is significantly better than A.
    BBetter,
    /// B is significantly worse than A.
    BWorse,
    /// The difference is not significant at the chosen level.
    NoSignificantDifference,
}

impl Verdict {
    /// Decide from an (adjusted) p-value and the effect `delta = metric_B − metric_A`.
    ///
    /// Significant means `p_value < alpha`; then the sign of `delta` picks [`Verdict::BBetter`]
    /// or [`Verdict::BWorse`]. A zero, NaN or otherwise non-comparable input (NaN p-value, NaN
    /// delta) yields [`Verdict::NoSignificantDifference`]. Use [`DEFAULT_ALPHA`] for 0.05.
    pub fn decide(p_value: f64, delta: f64, alpha: f64) -> Verdict {
        if p_value < alpha {
            if delta > 0.0 {
                return Verdict::BBetter;
            }
            if delta < 0.0 {
                return Verdict::BWorse;
            }
        }
        Verdict::NoSignificantDifference
    }
}
