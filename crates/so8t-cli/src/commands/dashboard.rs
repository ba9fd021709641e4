//! `so8t dashboard`: the live web dashboard over a folder of runs and pipelines.

use std::path::PathBuf;

use anyhow::{Context, Result};
use so8t_dashboard::DashboardConfig;

/// `so8t dashboard`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DashboardArgs {
    #[command(subcommand)]
    pub cmd: Option<DashboardCmd>,
    /// Folder with run folders (`run.db`) and pipelines (`pipeline.json`), searched a few levels
    /// deep (default: `runs`, or `runs_dir` of the config).
    #[arg(long)]
    pub runs: Option<PathBuf>,
    /// Port (default 8501; 0 picks a free one and prints it).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to bind (default 127.0.0.1: this machine only).
    #[arg(long)]
    pub host: Option<String>,
    /// `dashboard.yaml` (runs folder, refresh interval, port, warning thresholds, alerts).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seconds between live updates, 1–30 (the page's slider starts here).
    #[arg(long)]
    pub refresh: Option<u64>,
    /// Require this token for the API (also `SO8T_DASHBOARD_TOKEN`); open the page as `/?token=T`.
    #[arg(long, env = "SO8T_DASHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// POST newly raised alerts as JSON to this URL.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Serve the page's files from this folder instead of the embedded copy (for editing it).
    #[arg(long)]
    pub static_dir: Option<PathBuf>,
}

/// `so8t dashboard …` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DashboardCmd {
    /// Write synthetic run folders (a real run.db each) for a demo or the scale benchmark.
    Synth(SynthArgs),
}

/// `so8t dashboard synth`.
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Folder to write the runs into (`synth-000`, `synth-001`, …).
    pub out: PathBuf,
    /// How many runs.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Metric rows (optimizer steps) per run.
    #[arg(long, default_value_t = 2000)]
    pub steps: u64,
    /// Seconds between steps (sets the runs' time axis).
    #[arg(long, default_value_t = 1.0)]
    pub step_secs: f64,
}

fn synth(a: &SynthArgs) -> Result<()> {
    use so8t_dashboard::synth::{write_run, SynthRun};
    use so8t_store::Status;
    let step_ms = (a.step_secs * 1000.0).max(1.0) as i64;
    let now = so8t_dashboard::now_ms();
    for i in 0..a.runs {
        let dir = a.out.join(format!("synth-{i:03}"));
        let status = [Status::Completed, Status::Interrupted, Status::Failed][i % 3];
        let spec = SynthRun {
            steps: a.steps,
            total_steps: a.steps,
            status,
            seed: i as u64,
            step_ms,
            started_ms: now - (a.runs - i) as i64 * 3_600_000 - a.steps as i64 * step_ms,
        };
        write_run(&dir, &spec).with_context(|| format!("writing {}", dir.display()))?;
        eprint!("\rwrote {}/{} runs", i + 1, a.runs);
    }
    eprintln!();
    println!(
        "{} runs of {} steps in {}",
        a.runs,
        a.steps,
        a.out.display()
    );
    Ok(())
}

/// Builds the settings: the config file, then the flags.
pub fn settings(a: &DashboardArgs) -> Result<DashboardConfig> {
    let mut cfg = match &a.config {
        Some(p) => DashboardConfig::load(p)?,
        None => DashboardConfig::default(),
    };
    if let Some(r) = &a.runs {
        cfg.runs_dir = r.clone();
    }
    if let Some(p) = a.port {
        cfg.port = p;
    }
    if let Some(h) = &a.host {
        cfg.host = h.clone();
    }
    if let Some(r) = a.refresh {
        cfg.refresh_interval = r;
    }
    if a.token.is_some() {
        cfg.token = a.token.clone();
    }
    if a.webhook.is_some() {
        cfg.webhook = a.webhook.clone();
    }
    cfg.validate().map_err(|m| anyhow::anyhow!("{m}"))?;
    if !cfg.runs_dir.is_dir() {
        anyhow::bail!(
            "runs folder {} does not exist (give --runs DIR, or runs_dir in dashboard.yaml)",
            cfg.runs_dir.display()
        );
    }
    Ok(cfg)
}

/// Runs the dashboard until Ctrl-C.
pub fn run(a: DashboardArgs) -> Result<()> {
    if let Some(DashboardCmd::Synth(s)) = &a.cmd {
        return synth(s);
    }
    let cfg = settings(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let runs = cfg.runs_dir.clone();
        let token = cfg.token.is_some();
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let (addr, serve) = so8t_dashboard::bind(cfg, a.static_dir, shutdown).await?;
        let url = format!("http://{addr}/");
        println!(
            "so8t dashboard: {url}{} (runs in {}; Ctrl-C stops)",
            if token { "?token=…" } else { "" },
            runs.display()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        serve.await?;
        Ok(())
    })
}
