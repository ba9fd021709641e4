//! `so8t train`: the training loop in a run directory. Tokenizes the data once, trains for
//! `total_steps` optimizer steps with seeded per-epoch order, records every step ([`RunLog`]:
//! `run.db`, `metrics.jsonl`, `session.json`), writes rolling checkpoints (every N steps or M
//! minutes), an emergency checkpoint on SIGINT/SIGTERM, and `final/` at the end. A run resumes
//! from its newest valid checkpoint and continues bit-identically.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::DType;
use so8t_data::tokenize::Example;
use so8t_model::Model;

use crate::batch::make_batch;
use crate::checkpoint::{self, CheckpointKind, TrainState};
use crate::config::{CheckpointConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::prepare::{load_rows, prepare_builtins};
use crate::runlog::RunLog;
use crate::step::{StepMetrics, Trainer};

pub use so8t_store::{Session, Status};

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

/// The row order of an epoch (seeded, the same on every run).
pub(crate) fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    so8t_data::shuffle::shuffle(&mut order, seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    order
}

/// The compute dtype of `training.dtype` on `device` (`auto`: f32 on the CPU, bf16 on a GPU).
pub(crate) fn resolve_dtype(dtype: &str, device: &candle_core::Device) -> Result<DType> {
    Ok(match dtype {
        "auto" if device.is_cpu() => DType::F32,
        "auto" | "bf16" => DType::BF16,
        "f32" => DType::F32,
        "f16" => DType::F16,
        o => {
            return Err(Error::invalid(
                "training.dtype",
                format!("{o:?}: expected auto, f32, bf16 or f16"),
            ))
        }
    })
}

/// Whether a rolling checkpoint is due after `step`: every `every_steps` steps, or once
/// `every_minutes` have passed since `last` (either off at 0).
pub(crate) fn checkpoint_due(c: &CheckpointConfig, step: u64, last: Instant) -> bool {
    (c.every_steps > 0 && step.is_multiple_of(c.every_steps))
        || (c.every_minutes > 0.0 && last.elapsed().as_secs_f64() >= 60.0 * c.every_minutes)
}

/// Runs (or resumes) training; returns the session at the end. Interruption (the `interrupt`
/// flag) writes an emergency checkpoint and returns an error saying so; any failure after the
/// session started is recorded in it (`failed`, with the error).
pub fn run(mut opts: RunOptions) -> Result<Session> {
    let mut cfg = opts.config.clone();
    // The config as given, before built-ins resolve to paths inside the run folder: a run
    // folder moved elsewhere (say, to a bigger disk) still resumes.
    let hash = cfg.hash();
    let dir = opts.run_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::invalid("run_dir", format!("{}: {e}", dir.display())))?;
    prepare_builtins(&mut cfg.model, &mut cfg.data.train, cfg.training.seed, &dir)?;
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
    let device = so8t_model::device::open(&t.device)?;
    let dtype = resolve_dtype(&t.dtype, &device)?;
    if cfg.training.full_finetune && dtype != DType::F32 {
        return Err(Error::invalid(
            "training.full_finetune",
            "full fine-tuning needs training.dtype: f32",
        ));
    }
    tracing::info!(
        "training on {} in {dtype:?}",
        so8t_model::device::name_of(&device)
    );
    let mut model = Model::load(&cfg.model, dtype, &device)?;
    if cfg.training.base_dtype == "int8" {
        so8t_model::quant::quantize_base(&mut model)?;
    }
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
        extra: None,
    };
    let mut resumed = false;
    if let Some(loaded) = checkpoint::latest_valid(&dir)? {
        for (p, why) in &loaded.skipped {
            tracing::warn!("skipping damaged checkpoint {}: {why}", p.display());
        }
        if loaded.state.config_hash != hash {
            return Err(Error::invalid(
                "run_dir",
                format!(
                    "{} holds a run of another config; use a new --run-dir",
                    dir.display()
                ),
            ));
        }
        state = checkpoint::restore(&mut trainer, &loaded.dir)?;
        resumed = true;
        tracing::info!(
            "resumed from {} at step {}",
            loaded.dir.display(),
            state.step
        );
    }
    let mut log = RunLog::start(&dir, "sft", &hash, total, &state, resumed)?;
    let ended = train_loop(
        &mut opts,
        &cfg,
        &rows,
        &mut trainer,
        &mut state,
        &mut log,
        total,
    );
    finish_session(&mut log, ended, state.step)
}

/// Ends the session by how the loop `ended` (at `step`): completed, interrupted (stopped, or
/// signalled: an error saying an emergency checkpoint was written) or failed.
pub(crate) fn finish_session(log: &mut RunLog, ended: Result<Ended>, step: u64) -> Result<Session> {
    match ended {
        Ok(Ended::Completed) => {
            log.finish(Status::Completed, None)?;
            Ok(log.session.clone())
        }
        Ok(Ended::Stopped) => {
            log.finish(Status::Interrupted, None)?;
            Ok(log.session.clone())
        }
        Ok(Ended::Signalled) => {
            let msg = format!("interrupted at step {step}; an emergency checkpoint was written");
            log.finish(Status::Interrupted, Some(msg.clone()))?;
            Err(Error::invalid("run", msg))
        }
        Err(e) => {
            // The error that stopped the run wins over one while recording it (a full disk).
            if let Err(e2) = log.finish(Status::Failed, Some(e.to_string())) {
                tracing::warn!("could not record the end of the session: {e2}");
            }
            Err(e)
        }
    }
}

/// How a training loop ended.
pub(crate) enum Ended {
    /// The last step of the run was taken (final checkpoint and `final/` written).
    Completed,
    /// `stop_after` was reached (rolling checkpoint written).
    Stopped,
    /// The interrupt flag was set (emergency checkpoint written).
    Signalled,
}

/// Steps until the run ends, `stop_after` is reached, or the interrupt flag is set (see
/// [`Ended`]).
fn train_loop(
    opts: &mut RunOptions,
    cfg: &TrainConfig,
    rows: &[Example],
    trainer: &mut Trainer,
    state: &mut TrainState,
    log: &mut RunLog,
    total: u64,
) -> Result<Ended> {
    let t = &cfg.training;
    let dir = opts.run_dir.clone();
    let device = trainer.model.device().clone();
    let stop = opts.stop_after.map_or(total, |s| s.min(total));
    let mut last_ckpt = Instant::now();
    let mut order = epoch_order(rows.len(), t.seed, state.epoch);
    let save = |state: &mut TrainState, kind, log: &mut RunLog, trainer: &Trainer| {
        state.kind = kind;
        state.created_unix_ms = so8t_store::now_ms() as u64;
        let path = checkpoint::save(&dir, trainer, state, cfg.checkpoint.keep_rolling)?;
        log.checkpoint(state, &path)
    };
    while state.step < stop {
        if opts.interrupt.load(Ordering::SeqCst) {
            save(state, CheckpointKind::Emergency, log, trainer)?;
            return Ok(Ended::Signalled);
        }
        let started = Instant::now();
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
        let m = trainer.step(&micro).map_err(|e| {
            crate::error::explain_oom(
                e,
                "a training step",
                "lower training.batch_size (raise gradient_accumulation_steps to keep the \
                 effective batch) or data.max_seq_len, or set training.gradient_checkpointing: true",
            )
        })?;
        state.step = m.step;
        state.loss_history.push(m.loss);
        if state.best_loss.is_none_or(|b| m.loss < b) {
            state.best_loss = Some(m.loss);
        }
        log.step(&m, state, started.elapsed())?;
        let due = checkpoint_due(&cfg.checkpoint, state.step, last_ckpt);
        if due && state.step < total {
            save(state, CheckpointKind::Rolling, log, trainer)?;
            last_ckpt = Instant::now();
        }
        if let Some(cb) = opts.on_step.as_mut() {
            cb(&m, &log.session);
        }
    }
    if state.step >= total {
        save(state, CheckpointKind::Final, log, trainer)?;
        write_final(&dir, trainer, cfg, &log.session)?;
        Ok(Ended::Completed)
    } else {
        save(state, CheckpointKind::Rolling, log, trainer)?;
        Ok(Ended::Stopped)
    }
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
    if trainer.cfg.full_finetune {
        so8t_model::full::save_model(&trainer.model, &cfg.model, &out.join("model"), DType::F32)?;
    }
    let resolved =
        serde_yaml_ng::to_string(cfg).map_err(|e| Error::invalid("config", e.to_string()))?;
    so8t_model::io::write_string_atomic(&out.join("config.yaml"), &resolved)?;
    // The α of the last optimizer step (t = T − 1): what the gates were trained with at the end.
    let alpha_end = trainer.alpha_value(session.total_steps.saturating_sub(1))?;
    let card = format!(
        "# SO8T fine-tune\n\nBase model: `{}`\n\nSteps: {} · best loss: {}\n\n\
         - `gates.safetensors`: SO(8) generators (bake with α = {alpha_end:.6})\n\
         - `adapter/`: LoRA adapter (PEFT format), or `model/`: the fully fine-tuned weights\n- `config.yaml`: the resolved training config\n\n\
         Bake into a plain model: `so8t bake --run RUN_DIR --out DIR` (or `so8t bake --model {} --gates gates.safetensors --alpha {alpha_end:.6} --adapter adapter --out DIR`)\n",
        cfg.model.display(),
        session.total_steps,
        session.best_loss.map_or("-".into(), |b| format!("{b:.4}")),
        cfg.model.display(),
    );
    so8t_model::io::write_string_atomic(&out.join("README.md"), &card)?;
    // What `so8t bake --run DIR` needs; a base model inside the run folder is kept relative so
    // the folder can move.
    // With full fine-tuning the trained weights in `final/model` are what gets baked.
    let base = if trainer.cfg.full_finetune {
        Path::new(".").join("final").join("model")
    } else {
        cfg.model
            .strip_prefix(dir)
            .map(|p| Path::new(".").join(p))
            .unwrap_or_else(|_| cfg.model.clone())
    };
    write_bake_json(
        &out,
        &base,
        alpha_end,
        &cfg.so8t.parametrization,
        trainer.gates.is_some(),
        trainer.cfg.lora.is_some(),
    )
}

/// Writes `final/bake.json`: what `so8t bake --run DIR` needs (the base model, α, the rotation
/// map, and whether gates and an adapter are in `final/`).
pub(crate) fn write_bake_json(
    out: &Path,
    base: &Path,
    alpha: f64,
    method: &str,
    gates: bool,
    adapter: bool,
) -> Result<()> {
    let bake = serde_json::json!({
        "base_model": base.display().to_string(),
        "alpha": alpha,
        "method": method,
        "gates": gates.then_some("gates.safetensors"),
        "adapter": adapter.then_some("adapter"),
    });
    let text =
        serde_json::to_string_pretty(&bake).map_err(|e| Error::invalid("json", e.to_string()))?;
    so8t_model::io::write_string_atomic(&out.join("bake.json"), &(text + "\n"))?;
    Ok(())
}

/// What a finished run's `final/bake.json` says to bake.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalBake {
    /// The base model folder (relative paths resolved against the run folder).
    pub base_model: PathBuf,
    /// The gates file in `final/`, if the run trained gates.
    pub gates: Option<PathBuf>,
    /// α to bake with (the run's last).
    pub alpha: f64,
    /// `exp` or `cayley`.
    pub method: String,
    /// The PEFT adapter folder in `final/`, if any.
    pub adapter: Option<PathBuf>,
}

/// Reads `run/final/bake.json` (written at the end of an SFT or RL run).
pub fn final_bake(run: &Path) -> Result<FinalBake> {
    let fin = run.join("final");
    let p = fin.join("bake.json");
    let bad = |m: String| Error::invalid("run", format!("{}: {m}", p.display()));
    let text = std::fs::read_to_string(&p).map_err(|e| {
        bad(format!(
            "{e}: not a finished training run (resume it with --auto-resume)"
        ))
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    let base = field("base_model")
        .and_then(|x| x.as_str())
        .ok_or_else(|| bad("no base_model".into()))?;
    let base = Path::new(base);
    Ok(FinalBake {
        base_model: if base.is_relative() {
            run.join(base)
        } else {
            base.to_path_buf()
        },
        gates: field("gates").and_then(|x| x.as_str()).map(|g| fin.join(g)),
        alpha: field("alpha")
            .and_then(|x| x.as_f64())
            .ok_or_else(|| bad("no alpha".into()))?,
        method: field("method")
            .and_then(|x| x.as_str())
            .unwrap_or("exp")
            .to_string(),
        adapter: field("adapter")
            .and_then(|x| x.as_str())
            .map(|d| fin.join(d)),
    })
}
