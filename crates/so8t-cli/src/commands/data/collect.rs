//! `so8t data collect`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use so8t_data::collect::{collect, CollectOptions};
use so8t_data::neardup::NearDedupConfig;

use super::split::{parse_ratios, split_into};

/// `data collect`.
#[derive(clap::Args)]
pub struct CollectArgs {
    /// Input files or folders: .jsonl/.ndjson, .json, .csv, .tsv, .parquet, .arrow, an HF `save_to_disk` folder, or a folder of such files.
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Output JSONL of unified records.
    #[arg(long)]
    pub output: PathBuf,
    /// Field mapping overrides FIELD=SOURCE_NAME (fields: text, input, output, system, label, id, source).
    #[arg(long = "map")]
    pub map: Vec<String>,
    /// Field mapping file (TOML): `text = ["question", "prompt"]`, `label = "class"`, … (see README).
    #[arg(long)]
    pub map_file: Option<PathBuf>,
    /// Count and skip bad records; write them with their reason to the rejects file.
    #[arg(long)]
    pub skip_bad: bool,
    /// Rejects file (default: OUTPUT.rejects.jsonl).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Keep exact duplicates.
    #[arg(long)]
    pub no_dedup: bool,
    /// Keep near-duplicates.
    #[arg(long)]
    pub no_near_dedup: bool,
    /// Jaccard similarity (of 5-character shingles, MinHash/LSH) from which a record is a near-duplicate.
    #[arg(long, default_value_t = 0.8)]
    pub near_dup_threshold: f64,
    /// Keep PII (e-mail, phone, card, IP, postal code) instead of replacing it with placeholders.
    #[arg(long)]
    pub no_pii_scrub: bool,
    /// Also write the stats report as JSON here.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Also split the output into train/validation/test by these ratios, e.g. 0.8,0.1,0.1.
    #[arg(long)]
    pub split: Option<String>,
    /// Folder of the split files (default: OUTPUT's folder).
    #[arg(long)]
    pub split_dir: Option<PathBuf>,
    /// Seed of the split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs `data collect`.
pub fn run(a: CollectArgs) -> Result<()> {
    let ratios = a.split.as_deref().map(parse_ratios).transpose()?;
    let mut opts = CollectOptions::new(a.input, a.output.clone());
    opts.map = super::field_map(a.map_file.as_deref(), &a.map)?;
    opts.skip_bad = a.skip_bad;
    opts.rejects = a.rejects;
    opts.dedup = !a.no_dedup;
    opts.scrub_pii = !a.no_pii_scrub;
    opts.near_dup = (!a.no_near_dedup).then(|| NearDedupConfig {
        threshold: a.near_dup_threshold,
        ..NearDedupConfig::default()
    });
    let stats = super::with_progress("collect", |p| {
        opts.progress = Some(p);
        collect(&opts)
    })
    .with_context(|| format!("collecting into {}", a.output.display()))?;
    let mut report = serde_json::to_value(&stats)?;
    if let Some(r) = ratios {
        let dir = a.split_dir.clone().unwrap_or_else(|| {
            a.output
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
        });
        report["split"] = serde_json::to_value(split_into(&a.output, &dir, r, a.seed)?)?;
    }
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &a.stats {
        so8t_model::io::write_string_atomic(p, &format!("{text}\n"))?;
    }
    println!("{text}");
    Ok(())
}
