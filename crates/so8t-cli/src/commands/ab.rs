//! `so8t ab`: the paired A/B test of two eval results (or of two models, evaluated first on the
//! same items), with `ab.json` and a Markdown/HTML report with charts.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use so8t_eval::ab::{compare, read_eval_dir, AbReport, AbSettings};
use so8t_eval::run::write_atomic;
use so8t_eval::stats::Verdict;
use so8t_eval::tasks::TaskSpec;

use super::eval::{load_tasks, run_eval, threads, BackendArgs, EvalPlan};
use super::store::StoreArg;

/// `so8t ab`.
#[derive(clap::Args, Debug)]
pub struct AbArgs {
    /// Model A's results: the `--out` folder of `so8t eval`.
    #[arg(long, conflicts_with = "model_a")]
    pub a: Option<PathBuf>,
    /// Model B's results.
    #[arg(long, conflicts_with = "model_b")]
    pub b: Option<PathBuf>,
    /// Or evaluate model A first (a GGUF file, HF folder, store name or URL) …
    #[arg(long, requires = "model_b")]
    pub model_a: Option<String>,
    /// … and model B, on the same `--task` items.
    #[arg(long, requires = "model_a")]
    pub model_b: Option<String>,
    /// Tasks for `--model-a/--model-b`, as in `so8t eval`.
    #[arg(long = "task")]
    pub tasks: Vec<TaskSpec>,
    /// Items per task (`--model-a/--model-b`), sampled with `--seed`.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the item sample and of the bootstrap.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    /// Significance level of the verdicts (after Holm's correction across tasks).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Requests in flight at once (server backends).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Worker threads for CPU kernels (default: all cores).
    #[arg(long, env = "SO8T_THREADS")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub store: StoreArg,
    /// Output folder: `ab.json`, `report.md`, `report.html`, `charts/` (and `a/`, `b/` when
    /// the models are evaluated here).
    #[arg(long)]
    pub out: PathBuf,
}

fn verdict_words(v: Verdict) -> &'static str {
    match v {
        Verdict::BBetter => "B better",
        Verdict::BWorse => "B worse",
        Verdict::NoSignificantDifference => "no significant difference",
    }
}

/// `so8t ab`.
pub fn ab(a: AbArgs, global_threads: Option<usize>) -> Result<()> {
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        bail!("--alpha must be between 0 and 1, got {}", a.alpha);
    }
    if a.resamples < 100 {
        bail!("--resamples must be at least 100, got {}", a.resamples);
    }
    let (dir_a, dir_b) = match (&a.a, &a.b, &a.model_a, &a.model_b) {
        (Some(x), Some(y), None, None) => (x.clone(), y.clone()),
        (None, None, Some(ma), Some(mb)) => {
            if a.tasks.is_empty() {
                bail!("--model-a/--model-b need at least one --task");
            }
            let loaded = load_tasks(&a.tasks, a.limit, a.seed)?;
            let plan = EvalPlan {
                tasks: &loaded,
                backend: &a.backend,
                concurrency: a.concurrency,
                threads: threads(a.threads, global_threads),
                store: &a.store,
                limit: a.limit,
                seed: a.seed,
            };
            let (da, db) = (a.out.join("a"), a.out.join("b"));
            eprintln!("A: {ma}");
            run_eval(ma, &plan, &da)?;
            eprintln!("B: {mb}");
            run_eval(mb, &plan, &db)?;
            (da, db)
        }
        _ => bail!("give --a DIR --b DIR (results of `so8t eval`) or --model-a M --model-b M"),
    };
    let (ra, run_a) = read_eval_dir(&dir_a).map_err(|e| anyhow::anyhow!("A: {e}"))?;
    let (rb, run_b) = read_eval_dir(&dir_b).map_err(|e| anyhow::anyhow!("B: {e}"))?;
    let settings = AbSettings {
        resamples: a.resamples,
        seed: a.seed,
        alpha: a.alpha,
    };
    let tasks = compare(&ra, &rb, settings).map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = AbReport {
        a: run_a,
        b: run_b,
        settings,
        tasks,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    write_atomic(
        &a.out.join("ab.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    for t in &report.tasks {
        println!(
            "{:<12} n={:<5} acc A {:.4}  B {:.4}  Δ {:+.4} [{:+.4}, {:+.4}]  McNemar p {:.4} (Holm {:.4})  → {}",
            t.task,
            t.n,
            t.acc_a.value,
            t.acc_b.value,
            t.acc_delta.estimate,
            t.acc_delta.low,
            t.acc_delta.high,
            t.mcnemar.p_value,
            t.p_holm,
            verdict_words(t.verdict)
        );
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let files = so8t_eval::report::write_report(&report, &command, &a.out)
        .with_context(|| format!("writing the report into {}", a.out.display()))?;
    println!(
        "wrote {}, {} and {} and {} charts",
        a.out.join("ab.json").display(),
        files.markdown.display(),
        files.html.display(),
        files.charts.len()
    );
    Ok(())
}
