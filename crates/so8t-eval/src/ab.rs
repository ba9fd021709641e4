//! The paired A/B test (spec §7): two eval results on the same items, compared per task with
//! McNemar's exact test on per-item correctness, paired bootstrap CIs of the accuracy (and, for
//! the four-class task, macro-F1) deltas and of the relative improvement, Wilcoxon's
//! signed-rank test on latency, and Holm's correction of the McNemar p-values across tasks.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::run::read_results;
use crate::score::ItemResult;
use crate::stats::{
    accuracy_delta_ci, confusion_matrix, holm, macro_f1_delta_ci, mcnemar_exact, mean_stderr,
    relative_improvement_ci, wilcoxon_signed_rank, BootstrapCi, ClassPrf, ConfusionMatrix, McNemar,
    Verdict, Wilcoxon,
};

/// Settings of the comparison.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AbSettings {
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// Significance level of the verdicts (after Holm).
    pub alpha: f64,
}

impl Default for AbSettings {
    fn default() -> Self {
        Self {
            resamples: 10_000,
            seed: 1234,
            alpha: 0.05,
        }
    }
}

/// One model's accuracy with a normal-approximation 95% interval (±1.96 stderr).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Accuracy {
    /// Mean correctness.
    pub value: f64,
    /// Standard error of the mean.
    pub stderr: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// The four-class part of a task's comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassComparison {
    /// Macro-F1 of A.
    pub macro_f1_a: f64,
    /// Macro-F1 of B.
    pub macro_f1_b: f64,
    /// Paired bootstrap CI of macro-F1(B) − macro-F1(A).
    pub macro_f1_delta: BootstrapCi,
    /// Per-class precision/recall/F1 of A (ALLOW, ESCALATION, DENY, REFUSE).
    pub per_class_a: Vec<ClassPrf>,
    /// Per-class precision/recall/F1 of B.
    pub per_class_b: Vec<ClassPrf>,
    /// Confusion matrix of A (last column: unparseable).
    pub confusion_a: ConfusionMatrix,
    /// Confusion matrix of B.
    pub confusion_b: ConfusionMatrix,
}

/// Latency of both models on the same items.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyComparison {
    /// Median seconds per item of A.
    pub median_a: f64,
    /// Median seconds per item of B.
    pub median_b: f64,
    /// Wilcoxon signed-rank test on B − A (None when every pair is equal or too few items).
    pub wilcoxon: Option<Wilcoxon>,
    /// Seconds per item of A, in item order (for the charts).
    pub a: Vec<f64>,
    /// Seconds per item of B.
    pub b: Vec<f64>,
}

/// The comparison of one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskComparison {
    /// The task's name.
    pub task: String,
    /// Paired items.
    pub n: usize,
    /// Accuracy of A.
    pub acc_a: Accuracy,
    /// Accuracy of B.
    pub acc_b: Accuracy,
    /// Paired bootstrap CI of acc(B) − acc(A) (absolute improvement).
    pub acc_delta: BootstrapCi,
    /// Paired bootstrap CI of (acc(B) − acc(A)) / acc(A) (relative improvement; None when A
    /// has no item right).
    pub relative: Option<BootstrapCi>,
    /// McNemar's exact test on per-item correctness.
    pub mcnemar: McNemar,
    /// Its Holm-adjusted p-value across the tasks.
    pub p_holm: f64,
    /// B better / worse / no significant difference at `alpha`.
    pub verdict: Verdict,
    /// Latency.
    pub latency: LatencyComparison,
    /// Items that failed (backend errors) in A and in B.
    pub errors: (usize, usize),
    /// Four-class task only.
    pub classes: Option<ClassComparison>,
}

/// The whole A/B comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbReport {
    /// Model A's eval `run.json` (model, sha256, settings), if present.
    pub a: Value,
    /// Model B's.
    pub b: Value,
    /// The settings.
    pub settings: AbSettings,
    /// One entry per task both results have.
    pub tasks: Vec<TaskComparison>,
}

/// Results that cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum AbError {
    /// A file cannot be read.
    #[error("{0}")]
    Read(String),
    /// The two runs did not score the same items.
    #[error("task {task}: A and B scored different items: {detail}")]
    Mismatch {
        /// The task.
        task: String,
        /// Which ids are missing where.
        detail: String,
    },
    /// No task is in both.
    #[error("the two results share no task (A: {a:?}, B: {b:?})")]
    NoCommonTask {
        /// A's tasks.
        a: Vec<String>,
        /// B's tasks.
        b: Vec<String>,
    },
    /// A statistic failed.
    #[error("task {task}: {msg}")]
    Stats {
        /// The task.
        task: String,
        /// What failed.
        msg: String,
    },
}

/// An eval output folder: `TASK.jsonl` files (with `run.json`).
pub fn read_eval_dir(dir: &Path) -> Result<(BTreeMap<String, Vec<ItemResult>>, Value), AbError> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| AbError::Read(format!("{}: {e}", dir.display())))?;
    let mut tasks = BTreeMap::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) == Some("jsonl") {
            let name = p
                .file_stem()
                .and_then(|x| x.to_str())
                .unwrap_or("")
                .to_string();
            tasks.insert(name, read_results(&p).map_err(AbError::Read)?);
        }
    }
    if tasks.is_empty() {
        return Err(AbError::Read(format!(
            "{}: no TASK.jsonl results (the --out folder of `so8t eval`)",
            dir.display()
        )));
    }
    let run = std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Ok((tasks, run))
}

fn accuracy(correct: &[bool]) -> Accuracy {
    let v: Vec<f64> = correct.iter().map(|&c| c as u8 as f64).collect();
    let value = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let stderr = mean_stderr(&v).unwrap_or(0.0);
    Accuracy {
        value,
        stderr,
        low: (value - 1.96 * stderr).max(0.0),
        high: (value + 1.96 * stderr).min(1.0),
    }
}

fn median(v: &[f64]) -> f64 {
    crate::stats::percentile_linear(v, 0.5).unwrap_or(f64::NAN)
}

/// Pairs `a` and `b` by item id (same id set required; B reordered to A's order).
fn pair(task: &str, a: &[ItemResult], b: &[ItemResult]) -> Result<Vec<ItemResult>, AbError> {
    let by_id: HashMap<&str, &ItemResult> = b.iter().map(|r| (r.id.as_str(), r)).collect();
    let missing_in_b: Vec<&str> = a
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !by_id.contains_key(id))
        .collect();
    let a_ids: std::collections::HashSet<&str> = a.iter().map(|r| r.id.as_str()).collect();
    let missing_in_a: Vec<&str> = b
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !a_ids.contains(id))
        .collect();
    if !missing_in_a.is_empty() || !missing_in_b.is_empty() || a.len() != b.len() {
        let show = |v: &[&str]| {
            let mut s = v
                .iter()
                .take(5)
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            if v.len() > 5 {
                s.push_str(&format!(" and {} more", v.len() - 5));
            }
            s
        };
        return Err(AbError::Mismatch {
            task: task.to_string(),
            detail: format!(
                "{} items in A, {} in B; only in A: [{}]; only in B: [{}]",
                a.len(),
                b.len(),
                show(&missing_in_b),
                show(&missing_in_a)
            ),
        });
    }
    Ok(a.iter().map(|r| by_id[r.id.as_str()].clone()).collect())
}

/// Compares two eval results task by task.
pub fn compare(
    a: &BTreeMap<String, Vec<ItemResult>>,
    b: &BTreeMap<String, Vec<ItemResult>>,
    settings: AbSettings,
) -> Result<Vec<TaskComparison>, AbError> {
    let common: Vec<&String> = a.keys().filter(|k| b.contains_key(*k)).collect();
    if common.is_empty() {
        return Err(AbError::NoCommonTask {
            a: a.keys().cloned().collect(),
            b: b.keys().cloned().collect(),
        });
    }
    let mut out = Vec::new();
    for task in common {
        let ra = &a[task];
        let rb = pair(task, ra, &b[task])?;
        let st = |e: crate::stats::StatsError| AbError::Stats {
            task: task.clone(),
            msg: e.to_string(),
        };
        let ca: Vec<bool> = ra.iter().map(|r| r.correct).collect();
        let cb: Vec<bool> = rb.iter().map(|r| r.correct).collect();
        let mcnemar = mcnemar_exact(&ca, &cb).map_err(st)?;
        let acc_delta =
            accuracy_delta_ci(&ca, &cb, settings.resamples, settings.seed).map_err(st)?;
        let relative = relative_improvement_ci(&ca, &cb, settings.resamples, settings.seed).ok();
        let la: Vec<f64> = ra.iter().map(|r| r.latency_s).collect();
        let lb: Vec<f64> = rb.iter().map(|r| r.latency_s).collect();
        let classes = if ra.iter().all(|r| r.gold.is_some()) && task_is_four_class(ra) {
            let labels: Vec<usize> = ra.iter().map(|r| r.gold.unwrap_or(0)).collect();
            let pa: Vec<Option<usize>> = ra.iter().map(|r| r.pred).collect();
            let pb: Vec<Option<usize>> = rb.iter().map(|r| r.pred).collect();
            let cma = confusion_matrix(&labels, &pa, 4).map_err(st)?;
            let cmb = confusion_matrix(&labels, &pb, 4).map_err(st)?;
            Some(ClassComparison {
                macro_f1_a: cma.macro_f1(),
                macro_f1_b: cmb.macro_f1(),
                macro_f1_delta: macro_f1_delta_ci(
                    &labels,
                    &pa,
                    &pb,
                    4,
                    settings.resamples,
                    settings.seed,
                )
                .map_err(st)?,
                per_class_a: cma.per_class(),
                per_class_b: cmb.per_class(),
                confusion_a: cma,
                confusion_b: cmb,
            })
        } else {
            None
        };
        out.push(TaskComparison {
            task: task.clone(),
            n: ra.len(),
            acc_a: accuracy(&ca),
            acc_b: accuracy(&cb),
            acc_delta,
            relative,
            mcnemar,
            p_holm: f64::NAN,
            verdict: Verdict::NoSignificantDifference,
            latency: LatencyComparison {
                median_a: median(&la),
                median_b: median(&lb),
                wilcoxon: wilcoxon_signed_rank(&la, &lb).ok(),
                a: la,
                b: lb,
            },
            errors: (
                ra.iter().filter(|r| r.error.is_some()).count(),
                rb.iter().filter(|r| r.error.is_some()).count(),
            ),
            classes,
        });
    }
    let ps: Vec<f64> = out.iter().map(|t| t.mcnemar.p_value).collect();
    let adj = holm(&ps).map_err(|e| AbError::Stats {
        task: "all".into(),
        msg: e.to_string(),
    })?;
    for (t, p) in out.iter_mut().zip(adj) {
        t.p_holm = p;
        t.verdict = Verdict::decide(p, t.acc_delta.estimate, settings.alpha);
    }
    Ok(out)
}

/// Whether these are four-class results: by their `kind`, or (results without one) by their
/// shape: class ids 0–3, a generated output, no log-likelihoods and no GSM8K extraction.
fn task_is_four_class(r: &[ItemResult]) -> bool {
    if r.iter().any(|x| !x.kind.is_empty()) {
        return r.iter().all(|x| x.kind == "four_class");
    }
    r.iter().all(|x| {
        x.gold.is_some_and(|g| g < 4) && x.loglikelihoods.is_empty() && x.extracted.is_none()
    }) && r.iter().any(|x| x.output.is_some())
}
