//! `so8t rl`: PPO or GRPO with alpha-gate annealing on the four-class /think task, in a
//! crash-safe run folder (the flags of `so8t train`); `so8t rl status RUN_DIR`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use so8t_train::rl::config::RlConfig;
use so8t_train::rl::run::{run, RlOptions};

use super::train::{
    default_run_dir, interrupt_flag, refuse_existing_run, register_for_resume, step_bar,
};

/// `rl`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RlArgs {
    #[command(subcommand)]
    sub: Option<RlSub>,
    /// The RL config (YAML; see docs/formats/rl-config.md).
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

#[derive(clap::Subcommand)]
enum RlSub {
    /// Print a run's status: session, progress, last step, checkpoints, transitions.
    Status {
        /// The run folder.
        run_dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `rl`.
pub fn run_cmd(a: RlArgs) -> Result<()> {
    if let Some(RlSub::Status { run_dir, json }) = a.sub {
        return super::train_status::status(&run_dir, json);
    }
    let Some(config) = a.config else {
        bail!("--config FILE is required (or `so8t rl status RUN_DIR`)");
    };
    let mut cfg = RlConfig::from_file(&config)?;
    if let Some(n) = a.max_steps {
        cfg.training.max_steps = n;
    }
    if let Some(d) = &a.device {
        cfg.training.device = d.clone();
    }
    cfg.validate()?;
    let run_dir = a
        .run_dir
        .unwrap_or_else(|| default_run_dir(&config, &cfg.hash()));
    refuse_existing_run(&run_dir, a.auto_resume)?;
    let resume_entry = a
        .auto_resume
        .then(|| register_for_resume("rl", &config, &run_dir, a.max_steps, a.device.as_deref()));
    let interrupt = interrupt_flag()?;
    let bar = step_bar()?;
    let bar2 = bar.clone();
    let session = run(RlOptions {
        config: cfg,
        run_dir: run_dir.clone(),
        stop_after: a.stop_after,
        interrupt,
        on_step: Some(Box::new(move |m, s| {
            bar2.set_length(s.total_steps);
            bar2.set_position(m.step);
            bar2.set_message(format!(
                "reward {:.3} (acc {:.2}) kl {:.3} α {:.3} lr {:.2e} {:.0} tok/s",
                m.reward,
                m.accuracy,
                m.kl,
                m.alpha,
                m.lr,
                m.tokens as f64 / m.rollout_secs.max(1e-9)
            ));
        })),
    })
    .with_context(|| format!("RL in {}", run_dir.display()))?;
    bar.finish_and_clear();
    if let Some(Some(dir)) = &resume_entry {
        if session.status == so8t_store::Status::Completed {
            if let Err(e) = so8t_pipeline::registry::unregister(dir) {
                tracing::warn!("power-on resume registry: {e}");
            }
        }
    }
    eprintln!(
        "{} at step {}/{}; run folder {}",
        session.status.as_str(),
        session.step,
        session.total_steps,
        run_dir.display()
    );
    println!("{}", serde_json::to_string_pretty(&session)?);
    Ok(())
}
