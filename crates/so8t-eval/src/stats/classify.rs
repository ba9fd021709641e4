//! Classification metrics with explicit unparseable predictions.
//!
//! A prediction is `Option<usize>`: `None` means the model output could not be parsed into a
//! class. It always counts as wrong. For precision/recall/F1 it behaves like a prediction of a
//! label outside the class set (scikit-learn with `labels=range(n_classes)`): it lowers the recall
//! of its true class and adds no false positive to any class.

use super::{check_min_len, check_same_len, Result, StatsError};

/// Confusion matrix with an extra column for unparseable predictions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfusionMatrix {
    /// Number of classes.
    pub n_classes: usize,
    /// `counts[true][pred]`, `n_classes` rows of `n_classes + 1` columns; the last column counts
    /// unparseable predictions of items of that true class.
    pub counts: Vec<Vec<u64>>,
    /// Total number of unparseable predictions (sum of the last column).
    pub unparseable: u64,
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassPrf {
    /// `tp / (tp + fp)`, 0 when nothing was predicted as this class.
    pub precision: f64,
    /// `tp / support`, 0 when the class has no items.
    pub recall: f64,
    /// `2tp / (2tp + fp + fn)`, 0 when the denominator is 0.
    pub f1: f64,
    /// Number of items whose true label is this class.
    pub support: u64,
}

/// Build the confusion matrix of `labels` (true classes) against `preds`.
///
/// Errors on a length mismatch, empty input, `n_classes == 0`, or a label / prediction
/// `>= n_classes`.
pub fn confusion_matrix(
    labels: &[usize],
    preds: &[Option<usize>],
    n_classes: usize,
) -> Result<ConfusionMatrix> {
    check_same_len(labels.len(), preds.len())?;
    check_min_len("labels", labels.len(), 1)?;
    if n_classes == 0 {
        return Err(StatsError::InvalidArgument(
            "n_classes must be at least 1".to_string(),
        ));
    }
    let mut counts = vec![vec![0_u64; n_classes + 1]; n_classes];
    let mut unparseable = 0;
    for (&label, &pred) in labels.iter().zip(preds) {
        check_label(label, n_classes)?;
        let col = match pred {
            Some(p) => {
                check_label(p, n_classes)?;
                p
            }
            None => {
                unparseable += 1;
                n_classes
            }
        };
        counts[label][col] += 1;
    }
    Ok(ConfusionMatrix {
        n_classes,
        counts,
        unparseable,
    })
}

fn check_label(label: usize, n_classes: usize) -> Result<()> {
    if label >= n_classes {
        return Err(StatsError::LabelOutOfRange { label, n_classes });
    }
    Ok(())
}

impl ConfusionMatrix {
    /// Total number of items.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction of items predicted correctly (unparseable counts as wrong).
    pub fn accuracy(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let correct: u64 = (0..self.n_classes).map(|c| self.counts[c][c]).sum();
        correct as f64 / total as f64
    }

    /// Per-class precision, recall, F1 and support (scikit-learn `zero_division=0`).
    pub fn per_class(&self) -> Vec<ClassPrf> {
        let k = self.n_classes;
        (0..k)
            .map(|c| {
                let tp = self.counts[c][c];
                let predicted: u64 = (0..k).map(|r| self.counts[r][c]).sum();
                let support: u64 = self.counts[c].iter().sum();
                prf_from_counts(tp, predicted - tp, support - tp)
            })
            .collect()
    }

    /// Unweighted mean of the per-class F1 over all `n_classes` classes.
    pub fn macro_f1(&self) -> f64 {
        let per = self.per_class();
        per.iter().map(|p| p.f1).sum::<f64>() / per.len() as f64
    }
}

/// Precision/recall/F1 from true positives, false positives and false negatives.
pub(crate) fn prf_from_counts(tp: u64, fp: u64, fn_: u64) -> ClassPrf {
    let ratio = |num: u64, den: u64| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    ClassPrf {
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: ratio(2 * tp, 2 * tp + fp + fn_),
        support: tp + fn_,
    }
}

/// Per-class precision, recall, F1 and support for classes `0..n_classes`.
///
/// Like scikit-learn `precision_recall_fscore_support(labels=range(n), zero_division=0)` with
/// unparseable predictions mapped to a label outside the class set.
pub fn per_class_prf(
    labels: &[usize],
    preds: &[Option<usize>],
    n_classes: usize,
) -> Result<Vec<ClassPrf>> {
    Ok(confusion_matrix(labels, preds, n_classes)?.per_class())
}

/// Macro-averaged F1 over classes `0..n_classes` (scikit-learn
/// `f1_score(average='macro', labels=range(n), zero_division=0)`).
pub fn macro_f1(labels: &[usize], preds: &[Option<usize>], n_classes: usize) -> Result<f64> {
    Ok(confusion_matrix(labels, preds, n_classes)?.macro_f1())
}

/// Accuracy: fraction of items whose prediction equals the label (`None` is wrong).
///
/// Errors on a length mismatch or empty input; labels are not range-checked here.
pub fn accuracy(labels: &[usize], preds: &[Option<usize>]) -> Result<f64> {
    check_same_len(labels.len(), preds.len())?;
    check_min_len("labels", labels.len(), 1)?;
    let correct = labels
        .iter()
        .zip(preds)
        .filter(|(l, p)| **p == Some(**l))
        .count();
    Ok(correct as f64 / labels.len() as f64)
}

/// Macro-F1 of the items `idx` (with repetition), using scratch buffers of length `n_classes`.
pub(crate) fn macro_f1_indexed(
    labels: &[usize],
    preds: &[Option<usize>],
    n_classes: usize,
    idx: &[usize],
    tp: &mut [u64],
    pred_count: &mut [u64],
    support: &mut [u64],
) -> f64 {
    tp.iter_mut().for_each(|v| *v = 0);
    pred_count.iter_mut().for_each(|v| *v = 0);
    support.iter_mut().for_each(|v| *v = 0);
    for &i in idx {
        let l = labels[i];
        support[l] += 1;
        if let Some(p) = preds[i] {
            pred_count[p] += 1;
            if p == l {
                tp[l] += 1;
            }
        }
    }
    let sum: f64 = (0..n_classes)
        .map(|c| prf_from_counts(tp[c], pred_count[c] - tp[c], support[c] - tp[c]).f1)
        .sum();
    sum / n_classes as f64
}
