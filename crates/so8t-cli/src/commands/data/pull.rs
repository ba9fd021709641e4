//! `so8t data pull`: a dataset repository from the Hugging Face hub.

use std::path::PathBuf;

use anyhow::Result;

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

/// Runs `data pull`: `so8t pull --dataset` with these arguments.
pub fn run(a: DataPullArgs) -> Result<()> {
    crate::commands::pull::run(crate::commands::pull::PullArgs {
        repo_id: a.repo_id,
        out: a.out,
        revision: a.revision,
        dataset: true,
        include: a.include,
        endpoint: a.endpoint,
        cache_dir: a.cache_dir,
    })
}
