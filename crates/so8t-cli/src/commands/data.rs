//! `so8t data …`: dataset collection (more data commands arrive with issue 4's later slices).

use std::path::PathBuf;

use anyhow::{Context, Result};
use so8t_data::collect::{collect, CollectOptions};
use so8t_data::FieldMap;

/// Data subcommands.
#[derive(clap::Subcommand)]
pub enum DataCmd {
    /// Read JSONL/JSON datasets into unified four-class records (labels normalized, PII scrubbed, exact duplicates dropped).
    Collect(CollectArgs),
}

/// `data collect`.
#[derive(clap::Args)]
pub struct CollectArgs {
    /// Input files (.jsonl, .ndjson, .json).
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Output JSONL of unified records.
    #[arg(long)]
    pub output: PathBuf,
    /// Field mapping overrides FIELD=SOURCE_NAME (fields: text, input, output, system, label, id, source).
    #[arg(long = "map")]
    pub map: Vec<String>,
    /// Count and skip bad records; write them with their reason to the rejects file.
    #[arg(long)]
    pub skip_bad: bool,
    /// Rejects file (default: OUTPUT.rejects.jsonl).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Keep exact duplicates.
    #[arg(long)]
    pub no_dedup: bool,
    /// Keep PII (e-mail, phone, card, IP, postal code) instead of replacing it with placeholders.
    #[arg(long)]
    pub no_pii_scrub: bool,
    /// Also write the stats report as JSON here.
    #[arg(long)]
    pub stats: Option<PathBuf>,
}

/// Runs a data subcommand.
pub fn run(cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::Collect(a) => {
            let mut map = FieldMap::default();
            for m in &a.map {
                map = map.with_override(m).map_err(anyhow::Error::msg)?;
            }
            let opts = CollectOptions {
                inputs: a.input,
                output: a.output.clone(),
                map,
                skip_bad: a.skip_bad,
                rejects: a.rejects,
                dedup: !a.no_dedup,
                scrub_pii: !a.no_pii_scrub,
            };
            let stats = collect(&opts)
                .with_context(|| format!("collecting into {}", a.output.display()))?;
            let text = serde_json::to_string_pretty(&stats)?;
            if let Some(p) = &a.stats {
                so8t_model::io::write_string_atomic(p, &format!("{text}\n"))?;
            }
            println!("{text}");
            Ok(())
        }
    }
}
