//! The evaluation steps: benchmarks of A and B through the in-process engine on their store
//! models, and the paired A/B test with its report.

use std::path::Path;

use serde_json::{json, Map, Value};
use so8t_eval::ab::{compare, read_eval_dir, AbReport, AbSettings};
use so8t_eval::backend::LocalBackend;
use so8t_eval::suite::{run_suite, store_in_run, Suite};
use so8t_eval::tasks::TaskSpec;
use so8t_serve::library::Library;

use super::model::{read_info, store_name};
use super::Ctx;
use crate::journal::sha256_file;

fn task_specs(ctx: &Ctx<'_>) -> Result<Vec<TaskSpec>, String> {
    let mut specs = Vec::new();
    if ctx.cfg.eval.four_class {
        let f = ctx.out("think").join("eval_four_class.jsonl");
        specs.push(format!("four_class={}", f.display()).parse::<TaskSpec>()?);
    }
    for t in &ctx.cfg.eval.tasks {
        let mut s: TaskSpec = t.parse().map_err(|e| format!("eval.tasks {t:?}: {e}"))?;
        s.path = ctx.resolve(&s.path);
        s.fewshot = s.fewshot.map(|f| ctx.resolve(&f));
        specs.push(s);
    }
    Ok(specs)
}

/// Content hashes of the extra task files.
pub fn fingerprint_tasks(ctx: &Ctx<'_>) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for s in task_specs(ctx)?
        .iter()
        .skip(usize::from(ctx.cfg.eval.four_class))
    {
        for p in std::iter::once(&s.path).chain(s.fewshot.as_ref()) {
            v.push(sha256_file(p).map_err(|e| format!("{}: {e}", p.display()))?);
        }
    }
    Ok(v)
}

/// `eval-a` / `eval-b`: the tasks on model `which` of the store (greedy, in-process engine).
pub fn eval_model(ctx: &Ctx<'_>, out: &Path, which: char) -> Result<Value, String> {
    let name = store_name(ctx, which)?;
    let lib = Library::open(&ctx.store_dir()).map_err(|e| e.to_string())?;
    let r = lib.resolve(&name).map_err(|e| e.to_string())?;
    let threads = ctx
        .cfg
        .eval
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let backend = LocalBackend::load(&r.model_path, r.template.as_deref(), threads, name.clone())
        .map_err(|e| format!("loading {name}: {e}"))?;
    let suite = Suite::load(&task_specs(ctx)?, ctx.cfg.eval.limit, ctx.cfg.eval.seed)?;
    let mut info = Map::new();
    info.insert(
        "model".into(),
        json!({"backend": "local", "store_model": name, "path": r.model_path.display().to_string()}),
    );
    info.insert(
        "settings".into(),
        json!({"limit": ctx.cfg.eval.limit, "seed": ctx.cfg.eval.seed, "concurrency": 1, "threads": threads}),
    );
    let summary = run_suite(&backend, &suite, 1, false, out, info)?;
    for (task, s) in summary.as_object().into_iter().flatten() {
        (ctx.log)(&format!(
            "   {name} · {task}: acc {:.3} on {} items",
            s["acc"].as_f64().unwrap_or(f64::NAN),
            s["n"]
        ));
    }
    // The dashboard shows evaluations next to the training run they belong to.
    if let Ok(train) = read_info(&ctx.out("train")) {
        if let Some(run) = train["run_dir"].as_str() {
            let label = if which == 'a' { "A (base)" } else { "B (so8t)" };
            if let Err(e) = store_in_run(Path::new(run), label, out, &summary) {
                tracing::warn!("could not record the evaluation in {run}/run.db: {e}");
            }
        }
    }
    Ok(json!({"model": name, "summary": summary}))
}

/// `ab`: McNemar, bootstrap CIs, Wilcoxon and Holm over the tasks of A and B; `ab.json`,
/// `report.md`, `report.html` and charts.
pub fn ab_step(ctx: &Ctx<'_>, out: &Path) -> Result<Value, String> {
    let (ra, run_a) = read_eval_dir(&ctx.out("eval-a")).map_err(|e| format!("A: {e}"))?;
    let (rb, run_b) = read_eval_dir(&ctx.out("eval-b")).map_err(|e| format!("B: {e}"))?;
    let settings = AbSettings {
        resamples: ctx.cfg.ab.resamples,
        seed: ctx.cfg.eval.seed,
        alpha: ctx.cfg.ab.alpha,
    };
    let tasks = compare(&ra, &rb, settings).map_err(|e| e.to_string())?;
    let report = AbReport {
        a: run_a,
        b: run_b,
        settings,
        tasks,
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(out.join("ab.json"), text).map_err(|e| e.to_string())?;
    let files = so8t_eval::report::write_report(&report, "so8t pipeline run", out)
        .map_err(|e| format!("writing the report: {e}"))?;
    let mut per_task = Vec::new();
    for t in &report.tasks {
        let words = so8t_eval::report::verdict_words(t.verdict, ctx.cfg.ab.alpha);
        (ctx.log)(&format!(
            "   {}: A {:.3} → B {:.3} (Δ {:+.3}, McNemar p {:.4}, Holm {:.4}): {words}",
            t.task, t.acc_a.value, t.acc_b.value, t.acc_delta.estimate, t.mcnemar.p_value, t.p_holm
        ));
        per_task.push(
            json!({"task": t.task, "n": t.n, "acc_a": t.acc_a.value, "acc_b": t.acc_b.value,
            "delta": t.acc_delta.estimate, "p_mcnemar": t.mcnemar.p_value, "p_holm": t.p_holm,
            "verdict": words}),
        );
    }
    Ok(
        json!({"report": files.markdown.strip_prefix(out).unwrap_or(&files.markdown).display().to_string(),
              "html": files.html.strip_prefix(out).unwrap_or(&files.html).display().to_string(),
              "tasks": per_task}),
    )
}
