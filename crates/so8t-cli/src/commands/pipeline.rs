//! `so8t pipeline run|status`: the whole flow as resumable steps, and the post-training
//! workflow that `so8t watch` runs for a finished training run.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use so8t_pipeline::config::PipelineConfig;
use so8t_pipeline::runner::{self, RunOptions, CONFIG_COPY};

/// `pipeline` subcommands.
#[derive(clap::Subcommand)]
pub enum PipelineCmd {
    /// Run the pipeline (data → think → base → train → bake → export → import → eval A/B → A/B
    /// report → notify); finished steps whose inputs are unchanged are skipped.
    Run(RunArgs),
    /// Steps with state, durations, the running step's progress and ETA.
    Status(StatusArgs),
}

/// `pipeline run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The pipeline config (YAML; see docs/formats/pipeline-config.md). With `--resume` it may be
    /// left out: the copy in the pipeline folder is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The pipeline folder (default: `NAME-pipeline` next to the config).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Continue an unfinished pipeline in `--dir` (what the power-on service runs).
    #[arg(long)]
    pub resume: bool,
    /// Override `train.training.max_steps`.
    #[arg(long)]
    pub train_steps: Option<u64>,
    /// Override `eval.limit` (items per task).
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Do not record the pipeline for power-on resume.
    #[arg(long)]
    pub no_register: bool,
}

/// `pipeline status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The pipeline folder.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `pipeline` subcommand.
pub fn run(cmd: PipelineCmd, _threads: Option<usize>) -> Result<()> {
    match cmd {
        PipelineCmd::Run(a) => run_cmd(a),
        PipelineCmd::Status(a) => status(a),
    }
}

/// The config and the folder its relative paths start from.
fn load_config(a: &RunArgs) -> Result<(PipelineConfig, PathBuf, PathBuf)> {
    let (cfg, cfg_dir, dir) = match (&a.config, &a.dir) {
        (Some(c), dir) => {
            let cfg = PipelineConfig::from_file(c)?;
            let cfg_dir = c
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let dir = dir
                .clone()
                .unwrap_or_else(|| cfg_dir.join(format!("{}-pipeline", cfg.name)));
            (cfg, cfg_dir, dir)
        }
        (None, Some(dir)) if a.resume => {
            let copy = dir.join(CONFIG_COPY);
            let text = std::fs::read_to_string(&copy)
                .with_context(|| format!("{}: no pipeline here to resume", copy.display()))?;
            let cfg_dir = text
                .lines()
                .next()
                .and_then(|l| l.split("(cfg_dir: ").nth(1))
                .and_then(|r| r.split(')').next())
                .map_or_else(|| dir.clone(), PathBuf::from);
            (
                PipelineConfig::from_yaml(&text, &copy)?,
                cfg_dir,
                dir.clone(),
            )
        }
        _ => bail!("give --config FILE (or --dir DIR --resume to continue a pipeline)"),
    };
    Ok((cfg, cfg_dir, dir))
}

/// Applies the command-line overrides.
pub fn apply_overrides(
    cfg: &mut PipelineConfig,
    train_steps: Option<u64>,
    eval_limit: Option<usize>,
) -> Result<()> {
    if let Some(n) = train_steps {
        let map = cfg
            .train
            .as_mapping_mut()
            .context("`train` is not a mapping")?;
        let t = map
            .entry("training".into())
            .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()));
        t.as_mapping_mut()
            .context("`train.training` is not a mapping")?
            .insert("max_steps".into(), n.into());
    }
    if eval_limit.is_some() {
        cfg.eval.limit = eval_limit;
    }
    Ok(())
}

/// Runs a pipeline with SIGINT/SIGTERM stopping it at a safe point; progress on stderr.
pub fn run_pipeline(
    cfg: PipelineConfig,
    cfg_dir: PathBuf,
    dir: PathBuf,
    register: bool,
) -> Result<runner::Outcome> {
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupt.clone())?;
    }
    let out = runner::run(RunOptions {
        config: cfg,
        cfg_dir,
        dir: dir.clone(),
        interrupt,
        log: Arc::new(|s: &str| eprintln!("{s}")),
        register,
    })
    .with_context(|| format!("pipeline in {}", dir.display()))?;
    Ok(out)
}

fn run_cmd(a: RunArgs) -> Result<()> {
    let (mut cfg, cfg_dir, dir) = load_config(&a)?;
    apply_overrides(&mut cfg, a.train_steps, a.eval_limit)?;
    let out = run_pipeline(cfg, cfg_dir, dir.clone(), !a.no_register)?;
    eprintln!(
        "\npipeline completed: {} steps ran, {} unchanged",
        out.ran.len(),
        out.skipped.len()
    );
    if let Some(r) = &out.report {
        println!("{}", r.display());
    }
    Ok(())
}

fn status(a: StatusArgs) -> Result<()> {
    let st = so8t_pipeline::status::status(&a.dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!("pipeline  {} ({})", st.name, st.dir);
    let pid = st.pid.map(|p| format!(" (PID {p})")).unwrap_or_default();
    println!("status    {}{pid}", st.status);
    if let Some(e) = &st.error {
        println!("error     {e}");
    }
    for s in &st.steps {
        let secs = s.seconds.map(|x| format!("{x:>7.1} s")).unwrap_or_default();
        let mut line = format!("  {:<8} {:<11} {secs}", s.name, s.status);
        if s.attempts > 1 {
            line.push_str(&format!("  ({} attempts)", s.attempts));
        }
        if let Some(p) = &s.progress {
            line.push_str(&format!(
                "  step {}/{}{}",
                p["step"],
                p["total"],
                p["eta_s"]
                    .as_f64()
                    .map(|e| format!(", ETA {e:.0} s"))
                    .unwrap_or_default()
            ));
        }
        if let (Some(e), true) = (&s.error, s.status != "done") {
            line.push_str(&format!("  {e}"));
        }
        println!("{line}");
    }
    if let Some(r) = &st.report {
        println!("report    {r}");
    }
    Ok(())
}

/// The post-training workflow for the finished training run `run_dir` (what `so8t watch` runs
/// once per run): bake → GGUF → store → eval → A/B → report → notify, with the settings of the
/// workflow YAML (a pipeline config; `None`: the defaults). Its pipeline folder is
/// `run_dir/post-training/`; model A is the run's base model.
pub fn post_training(workflow: Option<&Path>, run_dir: &Path) -> Result<()> {
    let (mut cfg, cfg_dir) = match workflow {
        Some(w) => (
            PipelineConfig::from_file(w)?,
            w.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        ),
        None => (PipelineConfig::default(), run_dir.to_path_buf()),
    };
    let resolved = run_dir.join("config.resolved.yaml");
    let text = std::fs::read_to_string(&resolved)
        .with_context(|| format!("{}: not a training run", resolved.display()))?;
    let v: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{}", resolved.display()))?;
    let model = v["model"]
        .as_str()
        .with_context(|| format!("{}: no model", resolved.display()))?;
    let abs_run = std::fs::canonicalize(run_dir).with_context(|| run_dir.display().to_string())?;
    cfg.base_model = abs_run.join(model).display().to_string();
    cfg.train_run = Some(abs_run.clone());
    let out = run_pipeline(cfg, cfg_dir, abs_run.join("post-training"), false)?;
    if let Some(r) = out.report {
        eprintln!("report: {}", r.display());
    }
    Ok(())
}
