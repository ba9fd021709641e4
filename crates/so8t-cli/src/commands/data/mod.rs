//! `so8t data …`: four-class datasets → unified records → /think chats → training examples.

mod collect;
mod pull;
mod split;
mod think;
mod tokenize;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use so8t_data::progress::Progress;
use so8t_data::FieldMap;

/// Data subcommands.
#[derive(clap::Subcommand)]
pub enum DataCmd {
    /// Read datasets (JSONL, JSON, CSV/TSV, Parquet, Arrow, HF dataset folders) into unified four-class records: labels normalized, PII scrubbed, exact and near duplicates dropped, optional stratified split.
    Collect(collect::CollectArgs),
    /// Split unified records into train/validation/test, stratified by class, seeded.
    Split(split::SplitArgs),
    /// Turn four-class records into /think SFT chats (steps or tags format) rendered with a chat template.
    Think(think::ThinkArgs),
    /// Tokenize chats into training examples: assistant-only labels, truncation, packing, seeded shuffle.
    Tokenize(tokenize::TokenizeArgs),
    /// Download a dataset repository from the Hugging Face hub into a folder.
    Pull(pull::DataPullArgs),
}

/// Runs a data subcommand.
pub fn run(cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::Collect(a) => collect::run(a),
        DataCmd::Split(a) => split::run(a),
        DataCmd::Think(a) => think::run(a),
        DataCmd::Tokenize(a) => tokenize::run(a),
        DataCmd::Pull(a) => pull::run(a),
    }
}

/// The default field map with a mapping file's names, then `FIELD=SOURCE_NAME` overrides, first.
fn field_map(file: Option<&std::path::Path>, overrides: &[String]) -> Result<FieldMap> {
    let mut map = FieldMap::default();
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        map = map
            .with_toml(&text, &f.display().to_string())
            .map_err(anyhow::Error::msg)?;
    }
    for m in overrides {
        map = map.with_override(m).map_err(anyhow::Error::msg)?;
    }
    Ok(map)
}

/// Runs `work` with a byte progress bar (with rate and ETA) on stderr when it is a terminal.
fn with_progress<T>(label: &str, work: impl FnOnce(Arc<Progress>) -> T) -> T {
    let progress = Arc::new(Progress::new());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return work(progress);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let drawer = {
        let (progress, stop, label) = (progress.clone(), stop.clone(), label.to_string());
        std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(label);
            while !stop.load(Ordering::Relaxed) {
                let (done, total) = progress.get();
                bar.set_length(total.max(done));
                bar.set_position(done);
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        })
    };
    let out = work(progress);
    stop.store(true, Ordering::Relaxed);
    let _ = drawer.join();
    out
}
