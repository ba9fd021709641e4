//! The RL loop in a run folder: the starting model made (built-in tiny model, or an SFT run's
//! `final/` baked into `run_dir/init_model`), prompts rendered once, then RL steps with the
//! run database, `metrics.jsonl`, rolling / emergency / final checkpoints (the SFT format, with
//! the KL coefficient and reward history in the state) and `final/` (gates, adapter, value
//! head, `bake.json`: `so8t bake --run` bakes an RL run as it bakes an SFT run).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use serde_json::json;
use so8t_model::{Message, Model, TextTokenizer};
use so8t_store::Session;

use crate::checkpoint::{self, CheckpointKind, TrainState};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::optim::AdamW;
use crate::rl::config::{Algorithm, RlConfig};
use crate::rl::reward::Scorer;
use crate::rl::step::{check_prompt, Prompt, RlMetrics, RlState, VALUE_BIAS, VALUE_WEIGHT};
use crate::runlog::{reward_history, RunLog};
use crate::step::{StepConfig, Trainer};

/// A function called after every RL step.
pub type RlCallback = Box<dyn FnMut(&RlMetrics, &Session)>;

/// How to run.
pub struct RlOptions {
    /// The configuration.
    pub config: RlConfig,
    /// The run folder.
    pub run_dir: PathBuf,
    /// Stop after this many steps of the run (the schedules still span the full run).
    pub stop_after: Option<u64>,
    /// Set to stop at the next step boundary with an emergency checkpoint.
    pub interrupt: Arc<AtomicBool>,
    /// Called after every step.
    pub on_step: Option<RlCallback>,
}

/// The starting model folder: `builtin:tiny` made in the run folder, an SFT run baked into
/// `run_dir/init_model`, or the configured folder.
fn init_model(cfg: &mut RlConfig, dir: &Path) -> Result<PathBuf> {
    if let Some(run) = &cfg.init_run {
        let out = dir.join("init_model");
        if !out.join("config.json").exists() {
            let plan = crate::run::final_bake(run)?;
            let tmp = dir.join(format!(".init_model.tmp-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            let gates = plan.gates.clone().ok_or_else(|| {
                Error::invalid(
                    "init_run",
                    format!(
                        "{}: the run trained no SO(8) gates; bake or merge it yourself and set model",
                        run.display()
                    ),
                )
            })?;
            so8t_model::bake::bake(
                &plan.base_model,
                &tmp,
                &so8t_model::bake::BakeOptions {
                    gates,
                    alpha: plan.alpha,
                    layers: None,
                    method: plan.method.parse()?,
                    adapter: plan.adapter.clone(),
                    check_prompts: vec![],
                },
            )?;
            let _ = std::fs::remove_dir_all(&out);
            std::fs::rename(&tmp, &out)
                .map_err(|e| Error::invalid("run_dir", format!("{}: {e}", out.display())))?;
        }
        return Ok(out);
    }
    // Built-ins as in SFT (same model and sample data as `so8t train`).
    let mut model = cfg.model.clone();
    crate::prepare::prepare_builtins(&mut model, &mut cfg.data.train, cfg.training.seed, dir)?;
    Ok(model)
}

/// Reads the prompts: JSONL rows with `messages` (the turns before the last assistant turn
/// are the prompt) and `four_class_label`, rendered with the model's chat template.
pub fn load_prompts(cfg: &RlConfig, tok: &TextTokenizer) -> Result<Vec<Prompt>> {
    let path = &cfg.data.train;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid("data.train", format!("{}: {e}", path.display())))?;
    let template = so8t_data::tokenize::training_template(tok)
        .map_err(|e| Error::invalid("data.train", e.to_string()))?;
    let mut out = Vec::new();
    let mut too_long = 0usize;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at =
            |m: String| Error::invalid("data.train", format!("{}:{}: {m}", path.display(), i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let label = v
            .get("four_class_label")
            .and_then(so8t_data::Label::from_json)
            .ok_or_else(|| {
                at("no valid four_class_label (ALLOW, ESCALATION, DENY, REFUSE or 0-3)".into())
            })?;
        let mut messages: Vec<Message> =
            serde_json::from_value(v.get("messages").cloned().unwrap_or_default())
                .map_err(|e| at(format!("messages: {e}")))?;
        if messages.last().is_some_and(|m| m.role == "assistant") {
            messages.pop();
        }
        if messages.is_empty() {
            return Err(at("no prompt messages".into()));
        }
        let text = template
            .render(&messages, true)
            .map_err(|e| at(format!("chat template: {e}")))?;
        let ids = tok.encode(&text, false)?;
        let p = Prompt { text, ids, label };
        if check_prompt(&p, cfg.data.max_prompt_len, i + 1).is_err() {
            too_long += 1;
            continue;
        }
        out.push(p);
    }
    if too_long > 0 {
        tracing::warn!("{too_long} prompts longer than data.max_prompt_len dropped");
    }
    if out.is_empty() {
        return Err(Error::invalid(
            "data.train",
            format!("{}: no usable prompts", path.display()),
        ));
    }
    Ok(out)
}

/// The policy, reference and optimizer for `cfg` on the model in `model_dir`.
fn build_state(cfg: &RlConfig, model_dir: &Path) -> Result<RlState> {
    let t = &cfg.training;
    let device = so8t_model::device::open(&t.device)?;
    let dtype = crate::run::resolve_dtype(&t.dtype, &device)?;
    let mut model = Model::load(model_dir, dtype, &device)?;
    if t.base_dtype == "int8" {
        so8t_model::quant::quantize_base(&mut model)?;
    }
    // The reference shares the weights; the adapters are attached to the policy only.
    let reference = model.clone();
    let tc = TrainConfig {
        so8t: cfg.so8t.clone(),
        alpha: cfg.alpha,
        lora: cfg.lora.clone(),
        optimizer: cfg.optimizer.clone(),
        ..TrainConfig::default()
    };
    let sc: StepConfig = StepConfig {
        pet: None,
        seed: t.seed,
        ..tc.step_config(t.max_steps)
    };
    let mut trainer = Trainer::new(model, sc)?;
    let value_head = if cfg.algorithm == Algorithm::Ppo {
        let h = trainer.model.cfg.hidden_size;
        let w = Var::from_tensor(&Tensor::zeros(h, DType::F32, &device)?)?;
        let b = Var::from_tensor(&Tensor::zeros(1, DType::F32, &device)?)?;
        let mut vars = trainer.opt.vars().clone();
        vars.insert(VALUE_WEIGHT.into(), w.clone());
        vars.insert(VALUE_BIAS.into(), b.clone());
        trainer.opt = AdamW::new(vars, trainer.opt.cfg.clone());
        Some((w, b))
    } else {
        None
    };
    let tokenizer = TextTokenizer::from_dir(model_dir)?;
    Ok(RlState {
        trainer,
        reference,
        value_head,
        tokenizer,
        scorer: Scorer::new(&cfg.reward, cfg.data.format)?,
        cfg: cfg.clone(),
        beta: cfg.kl.beta,
    })
}

/// The RL part of the loop state kept in checkpoints.
fn rl_extra(beta: f64, rewards: &[f64]) -> serde_json::Value {
    json!({ "beta": beta, "reward_history": rewards })
}

/// Runs (or resumes) RL; returns the session at the end (see [`crate::run::run`] for the
/// interrupt and failure contract).
pub fn run(mut opts: RlOptions) -> Result<Session> {
    let mut cfg = opts.config.clone();
    let hash = cfg.hash();
    let dir = opts.run_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::invalid("run_dir", format!("{}: {e}", dir.display())))?;
    let model_dir = init_model(&mut cfg, &dir)?;
    cfg.model = model_dir.clone();
    let resolved =
        serde_yaml_ng::to_string(&cfg).map_err(|e| Error::invalid("config", e.to_string()))?;
    so8t_model::io::write_string_atomic(&dir.join("config.resolved.yaml"), &resolved)?;
    let mut rl = build_state(&cfg, &model_dir)?;
    let prompts = load_prompts(&cfg, &rl.tokenizer)?;
    let total = cfg.training.max_steps;
    let mut state = TrainState {
        step: 0,
        epoch: 0,
        cursor: 0,
        rng_state: cfg.training.seed,
        best_loss: None,
        loss_history: Vec::new(),
        config_hash: hash.clone(),
        kind: CheckpointKind::Rolling,
        created_unix_ms: 0,
        extra: Some(rl_extra(cfg.kl.beta, &[])),
    };
    let mut resumed = false;
    if let Some(loaded) = checkpoint::latest_valid(&dir)? {
        if loaded.state.config_hash != hash {
            return Err(Error::invalid(
                "run_dir",
                format!(
                    "{} holds a run of another config; use a new --run-dir",
                    dir.display()
                ),
            ));
        }
        state = checkpoint::restore(&mut rl.trainer, &loaded.dir)?;
        rl.beta = state
            .extra
            .as_ref()
            .and_then(|e| e.get("beta"))
            .and_then(|b| b.as_f64())
            .unwrap_or(cfg.kl.beta);
        resumed = true;
        tracing::info!(
            "resumed from {} at step {}",
            loaded.dir.display(),
            state.step
        );
    }
    let mut log = RunLog::start(&dir, "rl", &hash, total, &state, resumed)?;
    let ended = rl_loop(
        &mut opts, &cfg, &prompts, &mut rl, &mut state, &mut log, total,
    );
    let step = state.step;
    crate::run::finish_session(&mut log, ended, step)
}

/// Steps until the run ends, `stop_after` is reached, or the interrupt flag is set.
fn rl_loop(
    opts: &mut RlOptions,
    cfg: &RlConfig,
    prompts: &[Prompt],
    rl: &mut RlState,
    state: &mut TrainState,
    log: &mut RunLog,
    total: u64,
) -> Result<crate::run::Ended> {
    use crate::run::Ended;
    let dir = opts.run_dir.clone();
    let stop = opts.stop_after.map_or(total, |s| s.min(total));
    let mut last_ckpt = Instant::now();
    let seed = cfg.training.seed;
    let mut order = crate::run::epoch_order(prompts.len(), seed, state.epoch);
    let mut rewards = reward_history(state);
    let save = |state: &mut TrainState, kind, log: &mut RunLog, rl: &RlState, rewards: &[f64]| {
        state.kind = kind;
        state.created_unix_ms = so8t_store::now_ms() as u64;
        state.extra = Some(rl_extra(rl.beta, rewards));
        let path = checkpoint::save(&dir, &rl.trainer, state, cfg.checkpoint.keep_rolling)?;
        log.checkpoint(state, &path)
    };
    while state.step < stop {
        if opts.interrupt.load(Ordering::SeqCst) {
            save(state, CheckpointKind::Emergency, log, rl, &rewards)?;
            return Ok(Ended::Signalled);
        }
        let started = Instant::now();
        let mut picked = Vec::with_capacity(cfg.rollout.prompts_per_step);
        for _ in 0..cfg.rollout.prompts_per_step {
            if state.cursor as usize >= order.len() {
                state.epoch += 1;
                state.cursor = 0;
                order = crate::run::epoch_order(prompts.len(), seed, state.epoch);
            }
            picked.push(&prompts[order[state.cursor as usize] as usize]);
            state.cursor += 1;
        }
        let m = rl.step(state.step, &picked).map_err(|e| {
            // The rollouts explain their own; what is left is scoring and the updates.
            crate::error::explain_oom(
                e,
                "the scoring and updates",
                "set ppo.micro_batch_size (answers per forward/backward, e.g. 4) or lower \
                 ppo.minibatch_size",
            )
        })?;
        state.step = m.step;
        if !m.loss.is_finite() || !m.reward.is_finite() {
            return Err(Error::invalid(
                "run",
                format!(
                    "step {}: the loss or reward is not finite ({}, {})",
                    m.step, m.loss, m.reward
                ),
            ));
        }
        state.loss_history.push(m.loss);
        rewards.push(m.reward);
        state.extra = Some(rl_extra(rl.beta, &rewards));
        log.rl_step(&m, state, started.elapsed())?;
        let due = crate::run::checkpoint_due(&cfg.checkpoint, state.step, last_ckpt);
        if due && state.step < total {
            save(state, CheckpointKind::Rolling, log, rl, &rewards)?;
            last_ckpt = Instant::now();
        }
        if let Some(cb) = opts.on_step.as_mut() {
            cb(&m, &log.session);
        }
    }
    if state.step >= total {
        save(state, CheckpointKind::Final, log, rl, &rewards)?;
        write_final(&dir, rl, cfg)?;
        Ok(Ended::Completed)
    } else {
        save(state, CheckpointKind::Rolling, log, rl, &rewards)?;
        Ok(Ended::Stopped)
    }
}

/// `final/`: gates, adapter, value head, the resolved config, a model card and `bake.json`.
fn write_final(dir: &Path, rl: &RlState, cfg: &RlConfig) -> Result<()> {
    let out = dir.join("final");
    std::fs::create_dir_all(&out)
        .map_err(|e| Error::invalid("run_dir", format!("{}: {e}", out.display())))?;
    let tr = &rl.trainer;
    if let Some(g) = &tr.gates {
        g.save(&out.join("gates.safetensors"))?;
    }
    if let Some(l) = &tr.cfg.lora {
        so8t_model::lora::save(
            &tr.model,
            l,
            &out.join("adapter"),
            &cfg.model.display().to_string(),
        )?;
    }
    if let Some((w, b)) = &rl.value_head {
        let mut t = std::collections::BTreeMap::new();
        t.insert(
            VALUE_WEIGHT.to_string(),
            w.as_tensor().to_device(&candle_core::Device::Cpu)?,
        );
        t.insert(
            VALUE_BIAS.to_string(),
            b.as_tensor().to_device(&candle_core::Device::Cpu)?,
        );
        so8t_model::io::write_safetensors(&out.join("value_head.safetensors"), &t)?;
    }
    let resolved =
        serde_yaml_ng::to_string(cfg).map_err(|e| Error::invalid("config", e.to_string()))?;
    so8t_model::io::write_string_atomic(&out.join("config.yaml"), &resolved)?;
    let alpha_end = tr.alpha_value(cfg.training.max_steps.saturating_sub(1))?;
    let base = cfg
        .model
        .strip_prefix(dir)
        .map(|p| Path::new(".").join(p))
        .unwrap_or_else(|_| cfg.model.clone());
    let card = format!(
        "# SO8T RL ({:?})\n\nStarting model: `{}`\n\nSteps: {}\n\n\
         - `gates.safetensors`: SO(8) generators (bake with α = {alpha_end:.6})\n\
         - `adapter/`: LoRA adapter (PEFT format)\n- `value_head.safetensors`: PPO's value head\n\
         - `config.yaml`: the resolved RL config\n\nBake into a plain model: `so8t bake --run RUN_DIR --out DIR`\n",
        cfg.algorithm,
        base.display(),
        cfg.training.max_steps,
    );
    so8t_model::io::write_string_atomic(&out.join("README.md"), &card)?;
    crate::run::write_bake_json(
        &out,
        &base,
        alpha_end,
        &cfg.so8t.parametrization,
        tr.gates.is_some(),
        tr.cfg.lora.is_some(),
    )
}
