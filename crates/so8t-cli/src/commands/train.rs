//! `so8t train`: SO8T fine-tuning in a crash-safe run directory; `so8t train status RUN_DIR`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use so8t_train::config::TrainConfig;
use so8t_train::run::{run, RunOptions};

/// `train`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrainArgs {
    #[command(subcommand)]
    sub: Option<StatusSub>,
    #[command(flatten)]
    run: RunFlags,
}

/// The flags `so8t train` and `so8t rl` share.
#[derive(clap::Args)]
pub struct RunFlags {
    /// The config (YAML; see docs/formats/train-config.md or rl-config.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The run folder (default: runs/<config name>-<config hash>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Override training.max_steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Stop after this many steps of the run (the schedules still span the whole run); resume later.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Continue the unfinished run of this config from its newest valid checkpoint.
    #[arg(long)]
    pub auto_resume: bool,
    /// Override training.device: auto, cpu, cuda, cuda:N.
    #[arg(long)]
    pub device: Option<String>,
}

/// `status`, the subcommand of `so8t train` and `so8t rl`.
#[derive(clap::Subcommand)]
pub enum StatusSub {
    /// Print a run's status: session, progress, last step, checkpoints, transitions.
    Status {
        /// The run folder.
        run_dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// What `so8t train` and `so8t rl` set up around a run.
pub(crate) struct Launch {
    /// The run folder.
    pub run_dir: PathBuf,
    /// SIGINT / SIGTERM (see [`interrupt_flag`]).
    pub interrupt: Arc<AtomicBool>,
    /// The step bar.
    pub bar: indicatif::ProgressBar,
    /// The power-on resume entry (with `--auto-resume`).
    resume_entry: Option<PathBuf>,
}

impl Launch {
    /// Picks the run folder (`hash` names the default), refuses a used one unless resuming,
    /// registers `so8t {command} …` for power-on resume with `--auto-resume`, and sets up the
    /// signal flag and the step bar.
    pub fn start(command: &str, f: &RunFlags, config: &Path, hash: &str) -> Result<Self> {
        let run_dir = f
            .run_dir
            .clone()
            .unwrap_or_else(|| default_run_dir(config, hash));
        refuse_existing_run(&run_dir, f.auto_resume)?;
        // Power-on resume: `so8t service resume` continues this run after a reboot.
        let resume_entry = f
            .auto_resume
            .then(|| {
                register_for_resume(command, config, &run_dir, f.max_steps, f.device.as_deref())
            })
            .flatten();
        Ok(Self {
            run_dir,
            interrupt: interrupt_flag()?,
            bar: step_bar()?,
            resume_entry,
        })
    }

    /// Clears the bar and, when the run completed, drops its power-on resume entry.
    pub fn finish(&self, session: &so8t_store::Session) {
        self.bar.finish_and_clear();
        if let Some(dir) = &self.resume_entry {
            if session.status == so8t_store::Status::Completed {
                if let Err(e) = so8t_pipeline::registry::unregister(dir) {
                    tracing::warn!("power-on resume registry: {e}");
                }
            }
        }
    }
}

/// Runs `train`.
pub fn run_cmd(a: TrainArgs) -> Result<()> {
    if let Some(StatusSub::Status { run_dir, json }) = a.sub {
        return super::train_status::status(&run_dir, json);
    }
    let f = a.run;
    let Some(config) = f.config.clone() else {
        bail!("--config FILE is required (or `so8t train status RUN_DIR`)");
    };
    let mut cfg = TrainConfig::from_file(&config)?;
    if let Some(n) = f.max_steps {
        cfg.training.max_steps = n;
    }
    if let Some(d) = &f.device {
        cfg.training.device = d.clone();
    }
    cfg.validate()?;
    let launch = Launch::start("train", &f, &config, &cfg.hash())?;
    let run_dir = launch.run_dir.clone();
    let started = std::time::Instant::now();
    let mut tokens = 0usize;
    let bar2 = launch.bar.clone();
    let session = run(RunOptions {
        config: cfg,
        run_dir: run_dir.clone(),
        stop_after: f.stop_after,
        interrupt: launch.interrupt.clone(),
        on_step: Some(Box::new(move |m, s| {
            tokens += m.tokens;
            bar2.set_length(s.total_steps);
            bar2.set_position(m.step);
            bar2.set_message(format!(
                "loss {:.4} (ce {:.4}) α {:.3} λ {:.2} lr {:.2e} {:.0} tok/s",
                m.loss,
                m.ce,
                m.alpha,
                m.pet_lambda,
                m.lr,
                tokens as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
        })),
    })
    .with_context(|| format!("training in {}", run_dir.display()))?;
    launch.finish(&session);
    eprintln!(
        "{} at step {}/{} (best loss {}); run folder {}",
        session.status.as_str(),
        session.step,
        session.total_steps,
        session.best_loss.map_or("-".into(), |b| format!("{b:.4}")),
        run_dir.display()
    );
    println!("{}", serde_json::to_string_pretty(&session)?);
    Ok(())
}

/// Refuses a run folder that already holds checkpoints unless the run is being resumed.
fn refuse_existing_run(run_dir: &std::path::Path, auto_resume: bool) -> Result<()> {
    let has_checkpoints = run_dir.join("checkpoints").is_dir()
        && std::fs::read_dir(run_dir.join("checkpoints"))?
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("step-"));
    if has_checkpoints && !auto_resume {
        bail!(
            "{} already holds a run: pass --auto-resume to continue it, or choose another --run-dir",
            run_dir.display()
        );
    }
    Ok(())
}

/// A flag set by SIGINT and SIGTERM (the loop then writes an emergency checkpoint and stops).
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupt.clone())?;
    }
    Ok(interrupt)
}

/// The step progress bar (hidden when stderr is not a terminal).
fn step_bar() -> Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(0);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_style(
            indicatif::ProgressStyle::with_template("step {pos}/{len} [{bar:30}] {msg} ETA {eta}")?
                .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    Ok(bar)
}

/// The default run folder of a config: `runs/<config name>-<first 8 of its hash>`.
fn default_run_dir(config: &std::path::Path, hash: &str) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(format!("{stem}-{}", &hash[..8]))
}

/// Registers the run (`so8t {command} … --auto-resume`) for power-on resume; returns its
/// absolute folder, or `None` (with a warning) when the registry cannot be written.
fn register_for_resume(
    command: &str,
    config: &std::path::Path,
    run_dir: &std::path::Path,
    max_steps: Option<u64>,
    device: Option<&str>,
) -> Option<PathBuf> {
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (config, dir) = (abs(config), abs(run_dir));
    let mut args: Vec<String> = vec![
        command.into(),
        "--config".into(),
        config.to_string_lossy().into_owned(),
        "--run-dir".into(),
        dir.to_string_lossy().into_owned(),
        "--auto-resume".into(),
    ];
    if let Some(n) = max_steps {
        args.extend(["--max-steps".into(), n.to_string()]);
    }
    if let Some(d) = device {
        args.extend(["--device".into(), d.to_string()]);
    }
    let entry = so8t_pipeline::registry::Entry {
        kind: command.into(),
        dir: dir.clone(),
        args,
        registered_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    match so8t_pipeline::registry::register(entry) {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::warn!("power-on resume registry: {e}");
            None
        }
    }
}
