//! `so8t train`: the training loop in a run directory. Tokenizes the data once, trains for
//! `total_steps` optimizer steps with seeded per-epoch order, logs every step to
//! `metrics.jsonl`, keeps `session.json` current, writes rolling checkpoints (every N steps or M
//! minutes), an emergency checkpoint on SIGINT/SIGTERM, and `final/` at the end. A run resumes
//! from its newest valid checkpoint and continues bit-identically.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use so8t_data::tokenize::{tokenize, training_template, Example, TokenizeOptions};
use so8t_model::{Model, TextTokenizer};

use crate::batch::make_batch;
use crate::checkpoint::{self, CheckpointKind, TrainState};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::step::{StepMetrics, Trainer};

/// The session record of a run (`session.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Run id (the run folder's name).
    pub id: String,
    /// Hash of the resolved config.
    pub config_hash: String,
    /// Start time, Unix ms.
    pub started_unix_ms: u64,
    /// `running`, `completed`, `interrupted` or `failed`.
    pub status: String,
    /// Optimizer steps done.
    pub step: u64,
    /// Optimizer steps in the run.
    pub total_steps: u64,
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Lowest step loss so far.
    pub best_loss: Option<f64>,
    /// Last checkpoint time, Unix ms.
    pub last_checkpoint_unix_ms: Option<u64>,
}

/// A function called after every optimizer step.
pub type StepCallback = Box<dyn FnMut(&StepMetrics, &Session)>;

/// How to run.
pub struct RunOptions {
    /// The configuration.
    pub config: TrainConfig,
    /// The run folder.
    pub run_dir: PathBuf,
    /// Stop after this many optimizer steps of the run (the schedules still span the full run).
    pub stop_after: Option<u64>,
    /// Set to stop at the next step boundary with an emergency checkpoint.
    pub interrupt: Arc<AtomicBool>,
    /// Called after every step.
    pub on_step: Option<StepCallback>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| Error::invalid("json", e.to_string()))?;
    so8t_model::io::write_string_atomic(path, &(text + "\n"))?;
    Ok(())
}

/// Resolves `model: builtin:tiny` (the embedded tiny Phi-3, made in `run_dir/model`) and
/// `data.train: builtin:sample` (the bundled sample through `data collect` + `data think`, tags
/// format, in `run_dir/data/`).
pub fn prepare_builtins(cfg: &mut TrainConfig, run_dir: &Path) -> Result<()> {
    if cfg.model.as_os_str() == "builtin:tiny" {
        let dir = run_dir.join("model");
        if !dir.join("config.json").exists() {
            // Made beside and renamed into place: a crash never leaves a half-written model.
            let tmp = run_dir.join(format!(".model.tmp-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            so8t_model::init::init_model(
                &so8t_model::init::InitOptions {
                    arch: so8t_model::Arch::Phi3,
                    preset: so8t_model::init::Preset::Tiny,
                    seed: cfg.training.seed,
                    tokenizer_corpus: vec![],
                    dtype: None,
                },
                &tmp,
            )?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir)
                .map_err(|e| Error::invalid("model", format!("{}: {e}", dir.display())))?;
        }
        cfg.model = dir;
    }
    if cfg.data.train.as_os_str() == "builtin:sample" {
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
        cfg.data.train = chats;
    }
    Ok(())
}

/// Tokenized rows for the run (made once into `run_dir/data/`).
fn load_rows(cfg: &TrainConfig, run_dir: &Path) -> Result<Vec<Example>> {
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

/// The row order of an epoch (seeded, the same on every run).
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    so8t_data::shuffle::shuffle(&mut order, seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    order
}

/// Runs (or resumes) training; returns the session at the end.
pub fn run(mut opts: RunOptions) -> Result<Session> {
    let mut cfg = opts.config.clone();
    let dir = opts.run_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::invalid("run_dir", format!("{}: {e}", dir.display())))?;
    prepare_builtins(&mut cfg, &dir)?;
    if !cfg.model.join("config.json").exists() {
        return Err(Error::invalid(
            "model",
            format!(
                "{}: not a model folder (no config.json)",
                cfg.model.display()
            ),
        ));
    }
    let resolved =
        serde_yaml_ng::to_string(&cfg).map_err(|e| Error::invalid("config", e.to_string()))?;
    so8t_model::io::write_string_atomic(&dir.join("config.resolved.yaml"), &resolved)?;
    let rows = load_rows(&cfg, &dir)?;
    let t = &cfg.training;
    let per_step = t.batch_size * t.gradient_accumulation_steps;
    let steps_per_epoch = rows.len().div_ceil(per_step) as u64;
    let total = if t.max_steps > 0 {
        t.max_steps
    } else {
        t.epochs * steps_per_epoch
    };
    let dtype = match t.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        o => {
            return Err(Error::invalid(
                "training.dtype",
                format!("{o:?}: expected f32, bf16 or f16"),
            ))
        }
    };
    let device = Device::Cpu;
    let model = Model::load(&cfg.model, dtype, &device)?;
    let longest = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
    if longest > model.cfg.max_position_embeddings {
        return Err(Error::invalid(
            "data.max_seq_len",
            format!(
                "rows of {longest} tokens exceed the model's context of {}",
                model.cfg.max_position_embeddings
            ),
        ));
    }
    let mut trainer = Trainer::new(model, cfg.step_config(total))?;
    let hash = cfg.hash();
    let mut state = TrainState {
        step: 0,
        epoch: 0,
        cursor: 0,
        rng_state: t.seed,
        best_loss: None,
        loss_history: Vec::new(),
        config_hash: hash.clone(),
        kind: CheckpointKind::Rolling,
        created_unix_ms: 0,
    };
    let mut session = Session {
        id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        config_hash: hash,
        started_unix_ms: now_ms(),
        status: "running".into(),
        step: 0,
        total_steps: total,
        epoch: 0,
        best_loss: None,
        last_checkpoint_unix_ms: None,
    };
    if let Some(loaded) = checkpoint::latest_valid(&dir)? {
        for (p, why) in &loaded.skipped {
            tracing::warn!("skipping damaged checkpoint {}: {why}", p.display());
        }
        if loaded.state.config_hash != session.config_hash {
            return Err(Error::invalid(
                "run_dir",
                format!(
                    "{} holds a run of another config; use a new --run-dir",
                    dir.display()
                ),
            ));
        }
        state = checkpoint::restore(&mut trainer, &loaded.dir)?;
        tracing::info!(
            "resumed from {} at step {}",
            loaded.dir.display(),
            state.step
        );
        if let Ok(old) = std::fs::read_to_string(dir.join("session.json")) {
            if let Ok(s) = serde_json::from_str::<Session>(&old) {
                session.started_unix_ms = s.started_unix_ms;
            }
        }
    }
    // Metrics of steps after the restored one are dropped: they will be recomputed identically.
    let metrics_path = dir.join("metrics.jsonl");
    let kept: String = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= state.step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    so8t_model::io::write_string_atomic(&metrics_path, &kept)?;
    let mut metrics = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::invalid("run_dir", format!("{}: {e}", metrics_path.display())))?;
    session.step = state.step;
    session.epoch = state.epoch;
    session.best_loss = state.best_loss;
    write_json(&dir.join("session.json"), &session)?;
    let stop = opts.stop_after.map_or(total, |s| s.min(total));
    let mut last_ckpt = Instant::now();
    let mut order = epoch_order(rows.len(), t.seed, state.epoch);
    while state.step < stop {
        if opts.interrupt.load(Ordering::SeqCst) {
            state.kind = CheckpointKind::Emergency;
            state.created_unix_ms = now_ms();
            checkpoint::save(&dir, &trainer, &state, cfg.checkpoint.keep_rolling)?;
            session.status = "interrupted".into();
            session.last_checkpoint_unix_ms = Some(state.created_unix_ms);
            write_json(&dir.join("session.json"), &session)?;
            return Err(Error::invalid(
                "run",
                format!(
                    "interrupted at step {}; an emergency checkpoint was written",
                    state.step
                ),
            ));
        }
        let mut micro = Vec::with_capacity(t.gradient_accumulation_steps);
        for _ in 0..t.gradient_accumulation_steps {
            if state.cursor as usize >= order.len() {
                state.epoch += 1;
                state.cursor = 0;
                order = epoch_order(rows.len(), t.seed, state.epoch);
            }
            let start = state.cursor as usize;
            let end = (start + t.batch_size).min(order.len());
            let picked: Vec<Example> = order[start..end]
                .iter()
                .map(|&i| rows[i as usize].clone())
                .collect();
            state.cursor = end as u64;
            micro.push(make_batch(&picked, &device)?);
        }
        let m = trainer.step(&micro)?;
        state.step = m.step;
        state.loss_history.push(m.loss);
        if state.best_loss.is_none_or(|b| m.loss < b) {
            state.best_loss = Some(m.loss);
        }
        let line = serde_json::to_string(&m).map_err(|e| Error::invalid("json", e.to_string()))?;
        metrics
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| Error::invalid("run_dir", format!("{}: {e}", metrics_path.display())))?;
        session.step = state.step;
        session.epoch = state.epoch;
        session.best_loss = state.best_loss;
        let c = &cfg.checkpoint;
        let due = (c.every_steps > 0 && state.step.is_multiple_of(c.every_steps))
            || (c.every_minutes > 0.0
                && last_ckpt.elapsed().as_secs_f64() >= 60.0 * c.every_minutes);
        if due && state.step < total {
            state.kind = CheckpointKind::Rolling;
            state.created_unix_ms = now_ms();
            metrics.sync_data().ok();
            checkpoint::save(&dir, &trainer, &state, c.keep_rolling)?;
            session.last_checkpoint_unix_ms = Some(state.created_unix_ms);
            last_ckpt = Instant::now();
        }
        write_json(&dir.join("session.json"), &session)?;
        if let Some(cb) = opts.on_step.as_mut() {
            cb(&m, &session);
        }
    }
    metrics.sync_data().ok();
    if state.step >= total {
        state.kind = CheckpointKind::Final;
        state.created_unix_ms = now_ms();
        checkpoint::save(&dir, &trainer, &state, cfg.checkpoint.keep_rolling)?;
        write_final(&dir, &trainer, &cfg, &session)?;
        session.status = "completed".into();
        session.last_checkpoint_unix_ms = Some(state.created_unix_ms);
    } else {
        state.kind = CheckpointKind::Rolling;
        state.created_unix_ms = now_ms();
        checkpoint::save(&dir, &trainer, &state, cfg.checkpoint.keep_rolling)?;
        session.status = "interrupted".into();
        session.last_checkpoint_unix_ms = Some(state.created_unix_ms);
    }
    write_json(&dir.join("session.json"), &session)?;
    Ok(session)
}

/// `final/`: the gates (interchange format), the PEFT adapter, the resolved config, a model card.
fn write_final(dir: &Path, trainer: &Trainer, cfg: &TrainConfig, session: &Session) -> Result<()> {
    let out = dir.join("final");
    std::fs::create_dir_all(&out)
        .map_err(|e| Error::invalid("run_dir", format!("{}: {e}", out.display())))?;
    if let Some(g) = &trainer.gates {
        g.save(&out.join("gates.safetensors"))?;
    }
    if let Some(l) = &trainer.cfg.lora {
        so8t_model::lora::save(
            &trainer.model,
            l,
            &out.join("adapter"),
            &cfg.model.display().to_string(),
        )?;
    }
    let resolved =
        serde_yaml_ng::to_string(cfg).map_err(|e| Error::invalid("config", e.to_string()))?;
    so8t_model::io::write_string_atomic(&out.join("config.yaml"), &resolved)?;
    // The α of the last optimizer step (t = T − 1): what the gates were trained with at the end.
    let alpha_end = cfg
        .alpha
        .value(session.total_steps.saturating_sub(1), session.total_steps);
    let card = format!(
        "# SO8T fine-tune\n\nBase model: `{}`\n\nSteps: {} · best loss: {}\n\n\
         - `gates.safetensors`: SO(8) generators (bake with α = {alpha_end:.6})\n\
         - `adapter/`: LoRA adapter (PEFT format)\n- `config.yaml`: the resolved training config\n\n\
         Bake into a plain model: `so8t bake --model {} --gates gates.safetensors --alpha {alpha_end:.6} --adapter adapter --out DIR`\n",
        cfg.model.display(),
        session.total_steps,
        session.best_loss.map_or("-".into(), |b| format!("{b:.4}")),
        cfg.model.display(),
    );
    so8t_model::io::write_string_atomic(&out.join("README.md"), &card)?;
    Ok(())
}
