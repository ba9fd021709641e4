//! `so8t quickstart`: the whole pipeline on the embedded default — the tiny Phi-3 of `model
//! init` (model A) and the bundled four-class sample — ending with the A/B report in which the
//! SO8T-trained model B is compared with A on the held-out four-class test split.
//!
//! It is `so8t pipeline run` on `examples/pipeline-quickstart.yaml` with the store inside the
//! output folder; running it again resumes (finished steps are skipped).

use std::path::PathBuf;

use anyhow::Result;
use so8t_pipeline::config::PipelineConfig;

use super::pipeline::{apply_overrides, run_pipeline};

/// The quickstart pipeline config.
pub const QUICKSTART_YAML: &str = include_str!("../../../../examples/pipeline-quickstart.yaml");

/// `quickstart`.
#[derive(clap::Args)]
pub struct QuickstartArgs {
    /// Working folder: the pipeline (steps/, work/, pipeline.json) and its model store.
    #[arg(long, default_value = "so8t-quickstart")]
    pub out: PathBuf,
    /// Optimizer steps of model B's training (default: the config's 1200).
    #[arg(long)]
    pub train_steps: Option<u64>,
    /// Items of the four-class test split to evaluate (default: all).
    #[arg(long)]
    pub eval_limit: Option<usize>,
}

/// Runs `quickstart`.
pub fn run(a: QuickstartArgs) -> Result<()> {
    let mut cfg = PipelineConfig::from_yaml(
        QUICKSTART_YAML,
        "examples/pipeline-quickstart.yaml".as_ref(),
    )?;
    apply_overrides(&mut cfg, a.train_steps, a.eval_limit)?;
    let out = run_pipeline(cfg, a.out.clone(), a.out.clone(), false)?;
    eprintln!("\nquickstart done in {}", a.out.display());
    if let Some(ab) = out.journal.steps.get("ab") {
        for t in ab.info["tasks"].as_array().into_iter().flatten() {
            eprintln!(
                "{}: model A {:.1} % → model B {:.1} % (McNemar p = {:.2e}): {}",
                t["task"].as_str().unwrap_or(""),
                100.0 * t["acc_a"].as_f64().unwrap_or(f64::NAN),
                100.0 * t["acc_b"].as_f64().unwrap_or(f64::NAN),
                t["p_mcnemar"].as_f64().unwrap_or(f64::NAN),
                t["verdict"].as_str().unwrap_or("")
            );
        }
    }
    eprintln!(
        "chat with model B: SO8T_MODELS={}/store so8t run quickstart-so8t_q8_0",
        a.out.display()
    );
    if let Some(r) = &out.report {
        println!("{}", r.display());
    }
    Ok(())
}
