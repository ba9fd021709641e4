//! `so8t ab`: the paired A/B test of two eval results (or of two models, evaluated first on the
//! same items), with `ab.json` and a Markdown/HTML report with charts.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use so8t_eval::ab::{compare, read_eval_dir, AbReport, AbSettings};
use so8t_eval::report::verdict_words;
use so8t_eval::run::write_atomic;

use super::eval::{run_eval, EvalOpts, EvalPlan};

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
    /// Tasks, backend and sampling for `--model-a/--model-b`, as in `so8t eval`; `--seed` also
    /// seeds the bootstrap.
    #[command(flatten)]
    pub eval: EvalOpts,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    /// Significance level of the verdicts (after Holm's correction across tasks).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Output folder: `ab.json`, `report.md`, `report.html`, `charts/` (and `a/`, `b/` when
    /// the models are evaluated here).
    #[arg(long)]
    pub out: PathBuf,
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
            let plan = EvalPlan::new(&a.eval, global_threads)?;
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
        seed: a.eval.seed,
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
            verdict_words(t.verdict, a.alpha)
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
