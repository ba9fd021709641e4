//! Evaluation results in the run database: one `eval_runs` row per `so8t eval --run-dir` (model,
//! summary, settings as JSON) and one `eval_items` row per scored item, so the dashboard and the
//! pipeline find a run's benchmarks next to its training metrics.

use rusqlite::params;
use serde_json::Value;

use crate::{Result, Store};

/// One stored evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRun {
    /// Row id.
    pub id: i64,
    /// When it was stored (ms since the epoch).
    pub time_ms: i64,
    /// A name for it (e.g. `base`, `so8t_q4_k_m`).
    pub label: String,
    /// What was evaluated (path, sha256, backend …).
    pub model: Value,
    /// `{task: {metric: value, …}}`.
    pub summary: Value,
    /// Settings (limit, seed, threads …).
    pub settings: Value,
}

/// One scored item to store.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalItem {
    /// The task's name.
    pub task: String,
    /// The item's id.
    pub item_id: String,
    /// Right by the task's headline metric.
    pub correct: bool,
    /// The full per-item result.
    pub result: Value,
}

impl Store {
    /// Stores an evaluation and its items in one transaction; returns its id.
    pub fn add_eval_run(
        &mut self,
        label: &str,
        model: &Value,
        summary: &Value,
        settings: &Value,
        items: &[EvalItem],
    ) -> Result<i64> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO eval_runs (time_ms, label, model, summary, settings) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    crate::now_ms(),
                    label,
                    model.to_string(),
                    summary.to_string(),
                    settings.to_string()
                ],
            )?;
            let id = tx.last_insert_rowid();
            let mut st = tx.prepare(
                "INSERT INTO eval_items (run_id, task, item_id, correct, result) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for it in items {
                st.execute(params![
                    id,
                    it.task,
                    it.item_id,
                    it.correct,
                    it.result.to_string()
                ])?;
            }
            Ok(id)
        })
    }

    /// All stored evaluations, oldest first.
    pub fn eval_runs(&self) -> Result<Vec<EvalRun>> {
        self.sql(|c| {
            let mut st = c.prepare(
                "SELECT id, time_ms, label, model, summary, settings FROM eval_runs ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                let json = |s: Option<String>| {
                    s.and_then(|s| serde_json::from_str(&s).ok())
                        .unwrap_or(Value::Null)
                };
                Ok(EvalRun {
                    id: r.get(0)?,
                    time_ms: r.get(1)?,
                    label: r.get(2)?,
                    model: json(r.get(3)?),
                    summary: json(r.get(4)?),
                    settings: json(r.get(5)?),
                })
            })?;
            rows.collect()
        })
    }

    /// The items of evaluation `run_id`, by task and id.
    pub fn eval_items(&self, run_id: i64) -> Result<Vec<EvalItem>> {
        self.sql(|c| {
            let mut st = c.prepare(
                "SELECT task, item_id, correct, result FROM eval_items WHERE run_id = ?1 \
                 ORDER BY task, item_id",
            )?;
            let rows = st.query_map([run_id], |r| {
                let text: String = r.get(3)?;
                Ok(EvalItem {
                    task: r.get(0)?,
                    item_id: r.get(1)?,
                    correct: r.get(2)?,
                    result: serde_json::from_str(&text).unwrap_or(Value::Null),
                })
            })?;
            rows.collect()
        })
    }
}
