//! `so8t eval`: benchmarks (MMLU, HellaSwag, GSM8K, four-class) on a GGUF file, an HF folder, a
//! model of the store or a server URL, with per-item results and `summary.json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use so8t_eval::backend::{Backend, HttpBackend, HttpFlavor, LocalBackend};
use so8t_eval::suite::{run_suite, Suite};
use so8t_eval::tasks::TaskSpec;

use super::store::StoreArg;

/// `so8t eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The model: a GGUF file, an HF folder, a model of the store, or a server URL
    /// (`http://127.0.0.1:11434`, with `--backend openai|ollama` and `--model-name`).
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub eval: EvalOpts,
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
}

/// The items and how to ask them (shared by `so8t eval` and `so8t ab --model-a/--model-b`).
#[derive(clap::Args, Debug)]
pub struct EvalOpts {
    /// A task, `KIND=FILE[,fewshot=FILE][,num_fewshot=N][,max_tokens=N][,name=NAME]`; KIND is
    /// mmlu, hellaswag, gsm8k, four_class or jcommonsenseqa (JSONL in the public datasets'
    /// shapes). Repeatable; at least one.
    #[arg(long = "task")]
    pub tasks: Vec<TaskSpec>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Items per task, sampled with `--seed` (default: all, in file order).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the `--limit` sample (and, in `so8t ab`, of the bootstrap).
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Requests in flight at once (servers; the in-process engine runs one at a time).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
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

/// The options with their tasks read, checked (before any model loads) and sampled.
pub struct EvalPlan<'a> {
    /// The options.
    pub opts: &'a EvalOpts,
    /// The tasks with their items.
    pub suite: Suite,
    /// CPU threads of the in-process engine.
    pub threads: usize,
}

impl<'a> EvalPlan<'a> {
    /// Loads and samples every task; checks the options.
    pub fn new(opts: &'a EvalOpts, global_threads: Option<usize>) -> Result<Self> {
        if opts.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        let suite = Suite::load(&opts.tasks, opts.limit, opts.seed).map_err(|e| {
            if opts.tasks.is_empty() {
                anyhow::anyhow!("give at least one --task KIND=FILE")
            } else {
                anyhow::anyhow!("{e}")
            }
        })?;
        let threads = opts
            .threads
            .or(global_threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok(Self {
            opts,
            suite,
            threads,
        })
    }
}

/// Evaluates `model` on the plan's tasks into `out` (`TASK.jsonl`, `summary.json`, `run.json`)
/// and returns the summary.
pub fn run_eval(model: &str, plan: &EvalPlan<'_>, out: &Path) -> Result<Value> {
    let o = plan.opts;
    let (backend, model_info) = open_backend(model, &o.backend, plan.threads, &o.store)?;
    let mut info = Map::new();
    info.insert("so8t_version".into(), json!(env!("CARGO_PKG_VERSION")));
    info.insert(
        "command".into(),
        json!(std::env::args().collect::<Vec<_>>()),
    );
    info.insert("time_ms".into(), json!(so8t_store::now_ms()));
    info.insert("model".into(), model_info);
    info.insert(
        "settings".into(),
        json!({"limit": o.limit, "seed": o.seed, "concurrency": o.concurrency,
               "threads": plan.threads, "timeout_s": o.backend.timeout,
               "retries": o.backend.retries}),
    );
    run_suite(
        backend.as_ref(),
        &plan.suite,
        o.concurrency,
        true,
        out,
        info,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `so8t eval`.
pub fn eval(a: EvalArgs, global_threads: Option<usize>) -> Result<()> {
    let plan = EvalPlan::new(&a.eval, global_threads)?;
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
    so8t_eval::suite::store_in_run(run_dir, label, out, summary).map_err(|e| anyhow::anyhow!("{e}"))
}
