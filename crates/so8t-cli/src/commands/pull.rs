//! `so8t pull`: download a repository from the Hugging Face hub into a plain folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use so8t_model::hub::{pull, PullOptions, RepoKind};

/// `pull`.
#[derive(clap::Args)]
pub struct PullArgs {
    /// Repository id, e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`.
    pub repo_id: String,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// A dataset repository instead of a model.
    #[arg(long)]
    pub dataset: bool,
    /// Only files matching these globs (default: weights, config and tokenizer files).
    #[arg(long)]
    pub include: Vec<String>,
    /// Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co).
    #[arg(long, env = "HF_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Download cache (default: hf-hub's, under $HF_HOME).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Runs `pull`.
pub fn run(a: PullArgs) -> Result<()> {
    let opts = PullOptions {
        repo_id: a.repo_id.clone(),
        repo_type: if a.dataset {
            RepoKind::Dataset
        } else {
            RepoKind::Model
        },
        revision: a.revision,
        endpoint: a.endpoint,
        cache_dir: a.cache_dir,
        token: std::env::var("HF_TOKEN").ok(),
        include: a.include,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let r = pull(&opts, &a.out).with_context(|| format!("pulling {}", a.repo_id))?;
    eprintln!(
        "pulled {} files ({:.1} MB, commit {}) into {}",
        r.files.len(),
        r.bytes as f64 / 1e6,
        r.commit,
        a.out.display()
    );
    Ok(())
}
