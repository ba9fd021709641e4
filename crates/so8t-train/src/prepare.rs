//! What a run needs before its first step: the built-in model and data (`builtin:tiny`,
//! `builtin:sample`) made in the run folder, and the training rows tokenized once into
//! `run_dir/data/train_tokens.jsonl`.

use std::path::{Path, PathBuf};

use so8t_data::tokenize::{tokenize, training_template, Example, TokenizeOptions};
use so8t_model::TextTokenizer;

use crate::config::TrainConfig;
use crate::error::{Error, Result};

/// Resolves `model: builtin:tiny` (the embedded tiny Phi-3, made in `run_dir/model`) and
/// `data.train: builtin:sample` (the bundled sample through `data collect` + `data think`, tags
/// format, in `run_dir/data/`).
pub fn prepare_builtins(
    model: &mut PathBuf,
    train: &mut PathBuf,
    seed: u64,
    run_dir: &Path,
) -> Result<()> {
    if model.as_os_str() == "builtin:tiny" {
        let dir = run_dir.join("model");
        if !dir.join("config.json").exists() {
            // Made beside and renamed into place: a crash never leaves a half-written model.
            let tmp = run_dir.join(format!(".model.tmp-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            so8t_model::init::init_model(
                &so8t_model::init::InitOptions {
                    arch: so8t_model::Arch::Phi3,
                    preset: so8t_model::init::Preset::Tiny,
                    seed,
                    tokenizer_corpus: vec![],
                    dtype: None,
                    vocab_size: None,
                },
                &tmp,
            )?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir)
                .map_err(|e| Error::invalid("model", format!("{}: {e}", dir.display())))?;
        }
        *model = dir;
    }
    if train.as_os_str() == "builtin:sample" {
        let data = run_dir.join("data");
        let chats = data.join("think_sample.jsonl");
        if !chats.exists() {
            let sample = data.join("sample_four_class.jsonl");
            so8t_model::io::write_string_atomic(&sample, so8t_data::SAMPLE_FOUR_CLASS)?;
            let records = data.join("records.jsonl");
            so8t_data::collect::collect(&so8t_data::collect::CollectOptions::new(
                vec![sample],
                records.clone(),
            ))?;
            so8t_data::think::think(
                &so8t_data::think::ThinkOptions {
                    inputs: vec![records],
                    output: chats.clone(),
                    format: so8t_data::think::ThinkFormat::Tags,
                    system: None,
                    map: Default::default(),
                    progress: None,
                },
                &so8t_data::think::Renderer::phi35()?,
            )?;
        }
        *train = chats;
    }
    Ok(())
}

/// Tokenized rows for the run (made once into `run_dir/data/`).
pub fn load_rows(cfg: &TrainConfig, run_dir: &Path) -> Result<Vec<Example>> {
    let out = run_dir.join("data").join("train_tokens.jsonl");
    if !out.exists() {
        if !cfg.data.train.exists() {
            return Err(Error::invalid(
                "data.train",
                format!("{}: no such file", cfg.data.train.display()),
            ));
        }
        let tok = TextTokenizer::from_dir(&cfg.model)?;
        let template = training_template(&tok)?;
        let stats = tokenize(
            &TokenizeOptions {
                inputs: vec![cfg.data.train.clone()],
                output: out.clone(),
                max_seq_len: cfg.data.max_seq_len,
                train_on_prompt: cfg.data.train_on_prompt,
                pack: cfg.data.packing,
                seed: None,
                keep_cut_class: false,
                progress: None,
            },
            &tok,
            &template,
        )?;
        tracing::info!(
            "tokenized {} chats into {} rows ({} truncated)",
            stats.chats,
            stats.rows,
            stats.truncated
        );
        let dropped = stats.class_line_cut_dropped + stats.no_labels_dropped;
        if dropped > 0 {
            tracing::warn!(
                "{dropped} chats dropped: {} whose 分類: line did not fit in data.max_seq_len = {}, {} with no trained token left",
                stats.class_line_cut_dropped,
                cfg.data.max_seq_len,
                stats.no_labels_dropped
            );
        }
    }
    let text = std::fs::read_to_string(&out)
        .map_err(|e| Error::invalid("data", format!("{}: {e}", out.display())))?;
    let rows: Vec<Example> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::invalid("data", format!("{}:{}: {e}", out.display(), i + 1)))
        })
        .collect::<Result<_>>()?;
    if rows.is_empty() {
        return Err(Error::invalid(
            "data.train",
            "no training examples after tokenization",
        ));
    }
    Ok(rows)
}
