//! A suite: several tasks run on one backend into one results folder (`TASK.jsonl`,
//! `summary.json`, `run.json`), and optionally recorded in a run folder's `run.db`. What
//! `so8t eval`, `so8t ab` and the pipeline's eval steps share.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::backend::Backend;
use crate::run::{peak_rss_bytes, run_task, summarize, timed, write_atomic, write_results};
use crate::tasks::{self, Item, TaskSpec};

/// Tasks with their (sampled) items.
pub struct Suite {
    /// Each task and the items it runs, in the order given.
    pub tasks: Vec<(TaskSpec, Vec<Item>)>,
}

impl Suite {
    /// Loads every task file (errors name the file and line) and samples `limit` items of each
    /// with `seed`. Task names must be unique.
    pub fn load(specs: &[TaskSpec], limit: Option<usize>, seed: u64) -> Result<Self, String> {
        if specs.is_empty() {
            return Err("give at least one task (KIND=FILE)".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut out = Vec::new();
        for spec in specs {
            if !names.insert(spec.name.clone()) {
                return Err(format!(
                    "task name {:?} is used twice (give one `name=…`)",
                    spec.name
                ));
            }
            let items = tasks::load(spec).map_err(|e| e.to_string())?;
            out.push((spec.clone(), tasks::sample(items, limit, seed)));
        }
        Ok(Self { tasks: out })
    }
}

/// Runs every task of `suite` on `backend` and writes `out/TASK.jsonl`, `out/summary.json` and
/// `out/run.json` (`run_info`'s fields plus the backend, tasks and peak RSS). Returns the summary
/// (`{task: {metric, metric_stderr, …}}`). `progress` shows a bar per task on stderr.
pub fn run_suite(
    backend: &dyn Backend,
    suite: &Suite,
    concurrency: usize,
    progress: bool,
    out: &Path,
    run_info: Map<String, Value>,
) -> Result<Value, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut summary = Map::new();
    let mut task_info = Vec::new();
    for (spec, items) in &suite.tasks {
        let (results, wall) =
            timed(|| run_task(&spec.name, spec.kind, items, backend, concurrency, progress));
        let file = out.join(format!("{}.jsonl", spec.name));
        write_results(&file, &results).map_err(|e| format!("writing {}: {e}", file.display()))?;
        let s = summarize(spec.kind, &results, wall);
        if progress {
            let headline = spec.kind.metrics()[0];
            let stderr_key = format!("{headline}_stderr");
            eprintln!(
                "{}: {headline} {:.4} ± {:.4} on {} items ({} errors) in {wall:.1}s",
                spec.name,
                s[headline].as_f64().unwrap_or(f64::NAN),
                s[&stderr_key].as_f64().unwrap_or(f64::NAN),
                results.len(),
                s["errors"]
            );
        }
        summary.insert(spec.name.clone(), Value::Object(s));
        task_info.push(json!({"name": spec.name, "kind": spec.kind.name(),
            "file": spec.path.display().to_string(),
            "fewshot": spec.fewshot.as_ref().map(|p| p.display().to_string()),
            "items": items.len(), "results": format!("{}.jsonl", spec.name)}));
    }
    let summary = Value::Object(summary);
    let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    let path = out.join("summary.json");
    write_atomic(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut run = run_info;
    run.insert("backend".into(), json!(backend.describe()));
    run.insert("tasks".into(), Value::Array(task_info));
    run.insert("peak_rss_bytes".into(), json!(peak_rss_bytes()));
    let text = serde_json::to_string_pretty(&Value::Object(run)).map_err(|e| e.to_string())?;
    let path = out.join("run.json");
    write_atomic(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(summary)
}

/// Records the results folder `out` (written by [`run_suite`]) in `run_dir/run.db` as an
/// evaluation named `label`; returns its id.
pub fn store_in_run(
    run_dir: &Path,
    label: &str,
    out: &Path,
    summary: &Value,
) -> Result<i64, String> {
    let (tasks, run) = crate::ab::read_eval_dir(out).map_err(|e| e.to_string())?;
    let mut items = Vec::new();
    for (task, results) in tasks {
        for r in results {
            items.push(so8t_store::EvalItem {
                task: task.clone(),
                item_id: r.id.clone(),
                correct: r.correct,
                result: serde_json::to_value(&r).map_err(|e| e.to_string())?,
            });
        }
    }
    std::fs::create_dir_all(run_dir).map_err(|e| format!("creating {}: {e}", run_dir.display()))?;
    let mut store = so8t_store::Store::open(run_dir).map_err(|e| e.to_string())?;
    store
        .add_eval_run(label, &run["model"], summary, &run["settings"], &items)
        .map_err(|e| e.to_string())
}
