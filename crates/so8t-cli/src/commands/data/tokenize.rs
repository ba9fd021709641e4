//! `so8t data tokenize`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use so8t_data::tokenize::{tokenize, training_template, TokenizeOptions};
use so8t_model::TextTokenizer;

/// `data tokenize`.
#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// Chat JSONL files (`data think` output, or any rows with OpenAI-style `messages`).
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Output JSONL of examples (input_ids, labels with -100 for untrained tokens, seq_lens, ids).
    #[arg(long)]
    pub output: PathBuf,
    /// Model folder whose tokenizer and chat template to use (Phi-3.5's template if it has none).
    #[arg(long)]
    pub model: PathBuf,
    /// Longest row in tokens.
    #[arg(long, default_value_t = 1024)]
    pub max_seq_len: usize,
    /// Train on the prompt tokens too (default: the assistant's tokens only).
    #[arg(long)]
    pub train_on_prompt: bool,
    /// Pack several examples into each row (best fit); sequences stay separate in attention.
    #[arg(long)]
    pub pack: bool,
    /// Shuffle seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the input order.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Keep examples whose `分類:` line does not fit in max-seq-len (cut) instead of dropping them.
    #[arg(long)]
    pub keep_cut_class: bool,
}

/// Runs `data tokenize`.
pub fn run(a: TokenizeArgs) -> Result<()> {
    let tok = TextTokenizer::from_dir(&a.model)
        .with_context(|| format!("loading the tokenizer of {}", a.model.display()))?;
    let template = training_template(&tok)?;
    let mut opts = TokenizeOptions {
        inputs: a.input,
        output: a.output.clone(),
        max_seq_len: a.max_seq_len,
        train_on_prompt: a.train_on_prompt,
        pack: a.pack,
        seed: (!a.no_shuffle).then_some(a.seed),
        keep_cut_class: a.keep_cut_class,
        progress: None,
    };
    let stats = super::with_progress("tokenize", |p| {
        opts.progress = Some(p);
        tokenize(&opts, &tok, &template)
    })
    .with_context(|| format!("writing examples to {}", a.output.display()))?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}
