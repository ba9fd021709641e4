//! `so8t eval`: benchmarks (MMLU, HellaSwag, GSM8K, four-class) on a GGUF file, an HF folder, a
//! model of the store or a server URL, with per-item results and `summary.json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use so8t_eval::backend::{Backend, HttpBackend, HttpFlavor, LocalBackend};
use so8t_eval::run::{peak_rss_bytes, run_task, summarize, timed, write_atomic, write_results};
use so8t_eval::tasks::{self, TaskSpec};

use super::store::StoreArg;

/// `so8t eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The model: a GGUF file, an HF folder, a model of the store, or a server URL
    /// (`http://127.0.0.1:11434`, with `--backend openai|ollama` and `--model-name`).
    #[arg(long)]
    pub model: String,
    /// A task, `KIND=FILE[,fewshot=FILE][,num_fewshot=N][,max_tokens=N][,name=NAME]`; KIND is mmlu,
    /// hellaswag, gsm8k or four_class (JSONL in the public datasets' shapes). Repeatable.
    #[arg(long = "task", required = true)]
    pub tasks: Vec<TaskSpec>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Items per task, sampled with `--seed` (default: all, in file order).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the `--limit` sample.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Requests in flight at once (servers; the in-process engine runs one at a time).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Output folder: `TASK.jsonl` per task, `summary.json`, `run.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Also store the results in this run folder's database (`run.db`, e.g. the training run
    /// that made the model), for the dashboard and the pipeline.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// The name of this evaluation in the run database (default: the output folder's name).
    #[arg(long)]
    pub label: Option<String>,
    /// Worker threads for CPU kernels (default: all cores).
    #[arg(long, env = "SO8T_THREADS")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub store: StoreArg,
}

/// How to reach a model (shared by `so8t eval` and `so8t ab`).
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// Where answers come from: `local` (the engine in this process; the default for files,
    /// folders and store names), `openai` or `ollama` (the default for URLs is openai).
    #[arg(long)]
    pub backend: Option<String>,
    /// The model name sent to a server (default: `default`).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Bearer token for a server.
    #[arg(long, env = "SO8T_API_KEY")]
    pub api_key: Option<String>,
    /// Seconds before a server request times out.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Extra tries of a failed server request (with backoff) before the item is reported.
    #[arg(long, default_value_t = 2)]
    pub retries: usize,
}

/// Opens the backend `--model` names, with what identifies the model for the report.
pub fn open_backend(
    model: &str,
    opts: &BackendArgs,
    threads: usize,
    store: &StoreArg,
) -> Result<(Box<dyn Backend>, Value)> {
    let (backend, model_name) = (opts.backend.as_deref(), opts.model_name.as_deref());
    let (timeout, retries) = (Duration::from_secs(opts.timeout), opts.retries);
    let is_url = model.starts_with("http://") || model.starts_with("https://");
    let kind = backend.unwrap_or(if is_url { "openai" } else { "local" });
    let flavor = match kind {
        "local" => None,
        "openai" => Some(HttpFlavor::OpenAi),
        "ollama" => Some(HttpFlavor::Ollama),
        other => bail!("unknown --backend {other:?} (expected local, openai or ollama)"),
    };
    if let Some(flavor) = flavor {
        if !is_url {
            bail!("--backend {kind} needs --model http://HOST:PORT, got {model:?}");
        }
        let name = model_name.unwrap_or("default");
        let b = HttpBackend::new(model, name, flavor, timeout, retries, opts.api_key.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = json!({"backend": kind, "url": model, "model_name": name});
        return Ok((Box::new(b), info));
    }
    if is_url {
        bail!("--backend local cannot use a URL ({model}); use --backend openai or ollama");
    }
    let path = PathBuf::from(model);
    let (path, template, info) = if path.exists() {
        let sha = if path.is_file() {
            Some(
                so8t_store::audit::sha256_file(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
        } else {
            None
        };
        let info = json!({"backend": "local", "path": path.display().to_string(), "sha256": sha});
        (path, None, info)
    } else {
        let lib = store.open()?;
        let r = lib.resolve(model).with_context(|| {
            format!(
                "--model {model:?} is neither a file, a folder, a URL nor a model of the store {}",
                lib.dir().display()
            )
        })?;
        let info = json!({"backend": "local", "store_model": r.name, "path": r.model_path.display().to_string(),
                          "sha256": r.model_path.file_name().and_then(|n| n.to_str())
                              .and_then(|n| n.strip_prefix("sha256-")).map(str::to_string)});
        (r.model_path, r.template, info)
    };
    let describe = format!("{model} ({})", path.display());
    let b = LocalBackend::load(&path, template.as_deref(), threads, describe)
        .map_err(|e| anyhow::anyhow!("loading {}: {e}", path.display()))?;
    Ok((Box::new(b), info))
}

/// The tasks of a run, read and checked (before any model loads), sampled to `limit`.
pub fn load_tasks(
    specs: &[TaskSpec],
    limit: Option<usize>,
    seed: u64,
) -> Result<Vec<(TaskSpec, Vec<tasks::Item>)>> {
    let mut loaded = Vec::new();
    let mut names = std::collections::HashSet::new();
    for spec in specs {
        if !names.insert(spec.name.clone()) {
            bail!(
                "task name {:?} is used twice (give one `name=…`)",
                spec.name
            );
        }
        let items = tasks::load(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
        loaded.push((spec.clone(), tasks::sample(items, limit, seed)));
    }
    Ok(loaded)
}

/// What one eval run needs besides the model.
pub struct EvalPlan<'a> {
    /// The tasks with their items.
    pub tasks: &'a [(TaskSpec, Vec<tasks::Item>)],
    /// How to reach the model.
    pub backend: &'a BackendArgs,
    /// Requests in flight.
    pub concurrency: usize,
    /// CPU threads of the in-process engine.
    pub threads: usize,
    /// The model store (store names).
    pub store: &'a StoreArg,
    /// `--limit` and `--seed`, for run.json.
    pub limit: Option<usize>,
    /// The sample seed.
    pub seed: u64,
}

/// Evaluates `model` on the plan's tasks into `out` (`TASK.jsonl`, `summary.json`, `run.json`)
/// and returns the summary.
pub fn run_eval(model: &str, plan: &EvalPlan<'_>, out: &Path) -> Result<Value> {
    if plan.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let (backend, model_info) = open_backend(model, plan.backend, plan.threads, plan.store)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut summary = Map::new();
    let mut task_info = Vec::new();
    for (spec, items) in plan.tasks {
        let (results, wall) = timed(|| {
            run_task(
                &spec.name,
                spec.kind,
                items,
                backend.as_ref(),
                plan.concurrency,
                true,
            )
        });
        let file = out.join(format!("{}.jsonl", spec.name));
        write_results(&file, &results).with_context(|| format!("writing {}", file.display()))?;
        let s = summarize(spec.kind, &results, wall);
        let headline = spec.kind.metrics()[0];
        eprintln!(
            "{}: {headline} {:.4} ± {:.4} on {} items ({} errors) in {wall:.1}s",
            spec.name,
            s[headline].as_f64().unwrap_or(f64::NAN),
            s[&format!("{headline}_stderr")]
                .as_f64()
                .unwrap_or(f64::NAN),
            results.len(),
            s["errors"]
        );
        summary.insert(spec.name.clone(), Value::Object(s));
        task_info.push(json!({"name": spec.name, "kind": spec.kind.name(),
            "file": spec.path.display().to_string(),
            "fewshot": spec.fewshot.as_ref().map(|p| p.display().to_string()),
            "items": items.len(), "results": format!("{}.jsonl", spec.name)}));
    }
    let summary = Value::Object(summary);
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    let run = json!({
        "so8t_version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "time_ms": so8t_store::now_ms(),
        "model": model_info,
        "backend": backend.describe(),
        "tasks": task_info,
        "settings": {"limit": plan.limit, "seed": plan.seed, "concurrency": plan.concurrency,
                     "threads": plan.threads, "timeout_s": plan.backend.timeout,
                     "retries": plan.backend.retries},
        "peak_rss_bytes": peak_rss_bytes(),
    });
    write_atomic(
        &out.join("run.json"),
        serde_json::to_string_pretty(&run)?.as_bytes(),
    )?;
    Ok(summary)
}

/// The thread count: `--threads`, the global flag, else all cores.
pub fn threads(own: Option<usize>, global: Option<usize>) -> usize {
    own.or(global)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `so8t eval`.
pub fn eval(a: EvalArgs, global_threads: Option<usize>) -> Result<()> {
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
    let summary = run_eval(&a.model, &plan, &a.out)?;
    if let Some(dir) = &a.run_dir {
        let label = a.label.clone().unwrap_or_else(|| {
            a.out
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("eval")
                .to_string()
        });
        let id = store_in_run(dir, &label, &a.out, &summary)?;
        eprintln!(
            "stored as evaluation {id} ({label}) in {}",
            dir.join("run.db").display()
        );
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Copies an eval output folder into `run_dir/run.db`.
fn store_in_run(run_dir: &Path, label: &str, out: &Path, summary: &Value) -> Result<i64> {
    let (tasks, run) = so8t_eval::ab::read_eval_dir(out).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut items = Vec::new();
    for (task, results) in tasks {
        for r in results {
            items.push(so8t_store::EvalItem {
                task: task.clone(),
                item_id: r.id.clone(),
                correct: r.correct,
                result: serde_json::to_value(&r)?,
            });
        }
    }
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let mut store = so8t_store::Store::open(run_dir)?;
    Ok(store.add_eval_run(label, &run["model"], summary, &run["settings"], &items)?)
}
