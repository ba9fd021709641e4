//! `so8t data split`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use so8t_data::split::{split, SplitOptions, SplitStats};

/// `data split`.
#[derive(clap::Args)]
pub struct SplitArgs {
    /// Unified records (`data collect` output).
    #[arg(long)]
    pub input: PathBuf,
    /// Folder for train.jsonl, validation.jsonl and test.jsonl.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Train, validation and test shares, summing to 1.
    #[arg(long, default_value = "0.8,0.1,0.1")]
    pub ratios: String,
    /// Seed of the shuffle within each class.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// `"0.8,0.1,0.1"` → `[0.8, 0.1, 0.1]`.
pub fn parse_ratios(s: &str) -> Result<[f64; 3]> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("split ratios {s:?}: expected three numbers, e.g. 0.8,0.1,0.1"))?;
    match v[..] {
        [a, b, c] => Ok([a, b, c]),
        _ => bail!(
            "split ratios {s:?}: expected three numbers (train,validation,test), got {}",
            v.len()
        ),
    }
}

/// Splits `input` into `dir`.
pub fn split_into(input: &Path, dir: &Path, ratios: [f64; 3], seed: u64) -> Result<SplitStats> {
    split(&SplitOptions {
        input: input.to_path_buf(),
        out_dir: dir.to_path_buf(),
        ratios,
        seed,
    })
    .with_context(|| format!("splitting {} into {}", input.display(), dir.display()))
}

/// Runs `data split`.
pub fn run(a: SplitArgs) -> Result<()> {
    let stats = split_into(&a.input, &a.out_dir, parse_ratios(&a.ratios)?, a.seed)?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}
