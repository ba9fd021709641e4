//! `so8t data pull`: a dataset repository from the Hugging Face hub.

use std::path::PathBuf;

use anyhow::{Context, Result};
use so8t_model::hub::{pull, PullOptions, RepoKind};

/// `data pull`.
#[derive(clap::Args)]
pub struct DataPullArgs {
    /// Dataset repository id, e.g. `org/four-class-safety`.
    pub repo_id: String,
    /// Output folder (then `so8t data collect --input FOLDER`).
    #[arg(long)]
    pub out: PathBuf,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Only files matching these globs, e.g. `data/*.parquet` (default: every file).
    #[arg(long)]
    pub include: Vec<String>,
    /// Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co).
    #[arg(long, env = "HF_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Download cache (default: hf-hub's, under $HF_HOME).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Runs `data pull`.
pub fn run(a: DataPullArgs) -> Result<()> {
    let opts = PullOptions {
        repo_id: a.repo_id.clone(),
        repo_type: RepoKind::Dataset,
        revision: a.revision,
        endpoint: a.endpoint,
        cache_dir: a.cache_dir,
        token: std::env::var("HF_TOKEN").ok(),
        include: a.include,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let r = pull(&opts, &a.out).with_context(|| format!("pulling dataset {}", a.repo_id))?;
    eprintln!(
        "pulled {} files ({:.1} MB, commit {}) into {}",
        r.files.len(),
        r.bytes as f64 / 1e6,
        r.commit,
        a.out.display()
    );
    Ok(())
}
