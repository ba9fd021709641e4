//! `so8t rl`: PPO or GRPO with alpha-gate annealing on the four-class /think task, in a
//! crash-safe run folder (the flags of `so8t train`); `so8t rl status RUN_DIR`.

use anyhow::{bail, Context, Result};
use so8t_train::rl::config::RlConfig;
use so8t_train::rl::run::{run, RlOptions};

use super::train::{Launch, RunFlags, StatusSub};

/// `rl`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RlArgs {
    #[command(subcommand)]
    sub: Option<StatusSub>,
    #[command(flatten)]
    run: RunFlags,
}

/// Runs `rl`.
pub fn run_cmd(a: RlArgs) -> Result<()> {
    if let Some(StatusSub::Status { run_dir, json }) = a.sub {
        return super::train_status::status(&run_dir, json);
    }
    let f = a.run;
    let Some(config) = f.config.clone() else {
        bail!("--config FILE is required (or `so8t rl status RUN_DIR`)");
    };
    let mut cfg = RlConfig::from_file(&config)?;
    if let Some(n) = f.max_steps {
        cfg.training.max_steps = n;
    }
    if let Some(d) = &f.device {
        cfg.training.device = d.clone();
    }
    cfg.validate()?;
    let launch = Launch::start("rl", &f, &config, &cfg.hash())?;
    let run_dir = launch.run_dir.clone();
    let bar2 = launch.bar.clone();
    let session = run(RlOptions {
        config: cfg,
        run_dir: run_dir.clone(),
        stop_after: f.stop_after,
        interrupt: launch.interrupt.clone(),
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
    launch.finish(&session);
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
