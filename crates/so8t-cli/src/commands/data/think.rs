//! `so8t data think`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use so8t_data::think::{think, Renderer, ThinkFormat, ThinkOptions};

/// `data think`.
#[derive(clap::Args)]
pub struct ThinkArgs {
    /// Input files (`data collect` output, or records in any format `data collect` reads).
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Output JSONL of /think records (id, source, four_class_label, lang, format, messages, text).
    #[arg(long)]
    pub output: PathBuf,
    /// Assistant format: `steps` (# 思考ステップ / # 最終回答) or `tags` (<think-*> + <final>).
    #[arg(long, default_value = "steps")]
    pub format: ThinkFormat,
    /// Render `text` with this model folder's chat template instead of the built-in Phi-3.5 one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// System prompt for every chat (default: the record's own, else a built-in one per format and language).
    #[arg(long)]
    pub system: Option<String>,
    /// Field mapping overrides FIELD=SOURCE_NAME, as in `data collect`.
    #[arg(long = "map")]
    pub map: Vec<String>,
    /// Field mapping file (TOML), as in `data collect`.
    #[arg(long)]
    pub map_file: Option<PathBuf>,
}

/// Runs `data think`.
pub fn run(a: ThinkArgs) -> Result<()> {
    let renderer = match &a.model {
        Some(dir) => Renderer::from_model_dir(dir)?,
        None => Renderer::phi35()?,
    };
    let mut opts = ThinkOptions {
        inputs: a.input,
        output: a.output.clone(),
        format: a.format,
        system: a.system,
        map: super::field_map(a.map_file.as_deref(), &a.map)?,
        progress: None,
    };
    let stats = super::with_progress("think", |p| {
        opts.progress = Some(p);
        think(&opts, &renderer)
    })
    .with_context(|| format!("writing /think records to {}", a.output.display()))?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}
