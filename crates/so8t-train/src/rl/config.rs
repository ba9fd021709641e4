//! `rl.yaml`: the configuration of `so8t rl` (PPO or GRPO with alpha-gate annealing). The
//! `so8t`, `alpha`, `lora`, `optimizer` and `checkpoint` blocks are those of `train.yaml`;
//! unknown keys are errors. Every field is documented in `docs/formats/rl-config.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use so8t_data::think::ThinkFormat;

use crate::config::{
    resolve_relative, stable_hash, CheckpointConfig, LoraSection, OptimizerConfig, DTYPES,
};
use crate::error::{Error, Result};
use crate::rl::reward::RewardConfig;
use crate::schedule::AlphaSchedule;
use crate::step::GateConfig;

/// PPO (value head, GAE) or GRPO (group-relative advantages, no value head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Proximal policy optimization with a value head on the final hidden state.
    Ppo,
    /// Group relative policy optimization.
    Grpo,
}

/// Where prompts come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlData {
    /// /think chats (`data think` output: `messages` and `four_class_label`), or
    /// `builtin:sample`. The system and user turns become the prompt; the assistant turn is
    /// not used.
    pub train: PathBuf,
    /// The answer format the reward checks (`tags` or `steps`).
    pub format: ThinkFormat,
    /// Prompts longer than this many tokens are dropped (with a count in the log).
    pub max_prompt_len: usize,
}

impl Default for RlData {
    fn default() -> Self {
        Self {
            train: PathBuf::new(),
            format: ThinkFormat::Tags,
            max_prompt_len: 512,
        }
    }
}

/// How answers are sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    /// Prompts per RL step.
    pub prompts_per_step: usize,
    /// Answers per prompt (GRPO's G; PPO usually 1).
    pub group_size: usize,
    /// Token budget of an answer.
    pub max_new_tokens: usize,
    /// Stop tokens are not sampled before an answer has this many tokens (0: off).
    pub min_new_tokens: usize,
    /// Sampling temperature (> 0); the policy's log-probabilities use the same temperature.
    pub temperature: f64,
    /// Top-k (0: off). Anything but 0 makes the update slightly off-policy.
    pub top_k: usize,
    /// Top-p (1: off). Anything but 1 makes the update slightly off-policy.
    pub top_p: f64,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            prompts_per_step: 8,
            group_size: 1,
            max_new_tokens: 256,
            min_new_tokens: 0,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

/// The update over each batch of rollouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Passes over each batch of rollouts.
    pub epochs: usize,
    /// Answers per minibatch (one optimizer update each).
    pub minibatch_size: usize,
    /// Answers per forward/backward pass inside a minibatch, gradients accumulated (0: the whole
    /// minibatch at once). Bounds activation memory; the update is the same.
    pub micro_batch_size: usize,
    /// ε of the clipped ratio.
    pub clip_range: f64,
    /// Clip of the value change (PPO).
    pub value_clip: f64,
    /// Weight of the value loss (PPO).
    pub vf_coef: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Discount γ (PPO).
    pub gamma: f64,
    /// GAE λ (PPO).
    pub lam: f64,
    /// Whiten the advantages over each batch (PPO).
    pub whiten_advantages: bool,
    /// Stop the epochs of a step early once the approximate KL to the rollout policy exceeds
    /// 1.5 × this (0: never).
    pub target_kl: f64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            epochs: 4,
            minibatch_size: 8,
            micro_batch_size: 0,
            clip_range: 0.2,
            value_clip: 0.2,
            vf_coef: 0.1,
            entropy_coef: 0.0,
            gamma: 1.0,
            lam: 0.95,
            whiten_advantages: true,
            target_kl: 0.0,
        }
    }
}

impl PpoConfig {
    /// Answers per forward/backward pass: `micro_batch_size`, or the minibatch when 0 or larger.
    pub fn micro(&self) -> usize {
        match self.micro_batch_size {
            0 => self.minibatch_size,
            m => m.min(self.minibatch_size),
        }
    }
}

/// The KL penalty to the reference (the initial model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KlConfig {
    /// β (the initial one when adaptive).
    pub beta: f64,
    /// Target KL per answer for the adaptive β (absent: β fixed).
    pub target: Option<f64>,
    /// Horizon of the adaptive controller, in answers.
    pub horizon: f64,
}

impl Default for KlConfig {
    fn default() -> Self {
        Self {
            beta: 0.05,
            target: None,
            horizon: 10_000.0,
        }
    }
}

/// Loop settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlTraining {
    /// RL steps (rollout + update).
    pub max_steps: u64,
    /// Seed of prompt order, sampling, adapters and gates.
    pub seed: u64,
    /// `auto`, `f32`, `bf16`, `f16` as in `train.yaml`.
    pub dtype: String,
    /// The frozen base weights: `same` (as `dtype`) or `int8` (per-row absmax, dequantized in
    /// the matmul; policy and reference share them).
    pub base_dtype: String,
    /// `auto`, `cpu`, `cuda`, `cuda:N`; not part of the run's identity.
    #[serde(skip_serializing_if = "is_auto")]
    pub device: String,
}

fn is_auto(s: &str) -> bool {
    s == "auto"
}

impl Default for RlTraining {
    fn default() -> Self {
        Self {
            max_steps: 100,
            seed: 42,
            dtype: "auto".into(),
            base_dtype: "same".into(),
            device: "auto".into(),
        }
    }
}

/// The nested defaults where RL differs from `train.yaml`: gates start at the identity, small
/// LoRA adapters without dropout, a small learning rate.
pub const RL_DEFAULTS: &str = "
so8t: { init_scale: 0.0 }
lora: { r: 8, alpha: 16.0, dropout: 0.0 }
optimizer: { lr: 1.0e-5 }
";

/// The whole `rl.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlConfig {
    /// The starting model: an HF folder (plain or baked) or `builtin:tiny`. Ignored when
    /// `init_run` is set.
    pub model: PathBuf,
    /// A finished SFT run to start from: its `final/` is baked (LoRA merged, gates folded at the
    /// run's final α) into `run_dir/init_model`, which policy and reference then share.
    pub init_run: Option<PathBuf>,
    /// `ppo` or `grpo`.
    pub algorithm: Algorithm,
    /// Prompts.
    pub data: RlData,
    /// Sampling.
    pub rollout: RolloutConfig,
    /// The update.
    pub ppo: PpoConfig,
    /// The KL penalty.
    pub kl: KlConfig,
    /// The reward.
    pub reward: RewardConfig,
    /// New SO(8) gates of the policy (`init_scale` 0 starts them at the identity, so the policy
    /// starts equal to the reference).
    pub so8t: GateConfig,
    /// α over the RL steps.
    pub alpha: AlphaSchedule,
    /// New LoRA adapters of the policy (their dropout must be 0: the update re-scores the
    /// sampled answers and needs the same function).
    pub lora: LoraSection,
    /// AdamW; the LR schedule runs over the RL steps.
    pub optimizer: OptimizerConfig,
    /// Loop.
    pub training: RlTraining,
    /// Checkpoints.
    pub checkpoint: CheckpointConfig,
}

impl Default for RlConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            init_run: None,
            algorithm: Algorithm::Ppo,
            data: RlData::default(),
            rollout: RolloutConfig::default(),
            ppo: PpoConfig::default(),
            kl: KlConfig::default(),
            reward: RewardConfig::default(),
            so8t: GateConfig {
                init_scale: 0.0,
                ..GateConfig::default()
            },
            alpha: AlphaSchedule::default(),
            lora: LoraSection {
                r: 8,
                alpha: 16.0,
                dropout: 0.0,
                ..LoraSection::default()
            },
            optimizer: OptimizerConfig {
                lr: 1e-5,
                ..OptimizerConfig::default()
            },
            training: RlTraining::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }
}

impl RlConfig {
    /// Reads a YAML file; relative paths are taken from the file's folder. Errors name the file
    /// and the key.
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::config::read_yaml_file(path, Self::from_yaml)
    }

    /// Parses YAML text; relative paths are taken from `base`, `origin` names the text in errors.
    /// The RL defaults that differ from `train.yaml`'s ([`RL_DEFAULTS`]) hold inside a block the
    /// file names only in part (a file's `lora: {r: 4}` keeps dropout 0).
    pub fn from_yaml(text: &str, base: &Path, origin: &str) -> Result<Self> {
        let err = |e: serde_yaml_ng::Error| Error::invalid("config", format!("{origin}: {e}"));
        // Strictly first: errors with their line and unknown keys with the valid ones.
        serde_yaml_ng::from_str::<RlConfig>(text).map_err(err)?;
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(err)?;
        let defaults: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(RL_DEFAULTS).expect("the RL defaults parse");
        let merged = if doc.is_null() {
            defaults
        } else {
            crate::preset::merge(defaults, doc)
        };
        let mut cfg: RlConfig = serde_yaml_ng::from_value(merged).map_err(err)?;
        resolve_relative(
            [&mut cfg.model, &mut cfg.data.train]
                .into_iter()
                .chain(cfg.init_run.as_mut()),
            base,
        );
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<()> {
        self.alpha.validate()?;
        let bad = |k: &str, m: &str| Err(Error::invalid(k, m.to_string()));
        if self.model.as_os_str().is_empty() && self.init_run.is_none() {
            return bad(
                "model",
                "set model (an HF folder or builtin:tiny) or init_run",
            );
        }
        let r = &self.rollout;
        if r.prompts_per_step == 0 || r.group_size == 0 {
            return bad(
                "rollout.prompts_per_step",
                "prompts_per_step and group_size must be at least 1",
            );
        }
        if self.algorithm == Algorithm::Grpo && r.group_size < 2 {
            return bad(
                "rollout.group_size",
                "GRPO compares answers within a group: use at least 2",
            );
        }
        if r.max_new_tokens == 0 {
            return bad("rollout.max_new_tokens", "must be at least 1");
        }
        if r.min_new_tokens > r.max_new_tokens {
            return bad(
                "rollout.min_new_tokens",
                "must not exceed rollout.max_new_tokens",
            );
        }
        if !(r.temperature > 0.0 && r.temperature.is_finite()) {
            return bad("rollout.temperature", "must be a positive number");
        }
        if !(r.top_p > 0.0 && r.top_p <= 1.0) {
            return bad("rollout.top_p", "must be in (0, 1]");
        }
        let p = &self.ppo;
        if p.epochs == 0 || p.minibatch_size == 0 {
            return bad("ppo.epochs", "epochs and minibatch_size must be at least 1");
        }
        if !(p.clip_range > 0.0 && p.clip_range < 1.0) {
            return bad("ppo.clip_range", "must be in (0, 1)");
        }
        if !(0.0..=1.0).contains(&p.gamma) || !(0.0..=1.0).contains(&p.lam) {
            return bad("ppo.gamma", "gamma and lam must be in [0, 1]");
        }
        if self.kl.beta < 0.0 || self.kl.target.is_some_and(|t| t <= 0.0) || self.kl.horizon <= 0.0
        {
            return bad(
                "kl.beta",
                "beta must be ≥ 0, target (if set) > 0, horizon > 0",
            );
        }
        if self.lora.enabled && (self.lora.r == 0 || self.lora.dropout != 0.0) {
            return bad(
                "lora.dropout",
                "RL needs lora.r ≥ 1 and lora.dropout: 0 (answers are re-scored exactly)",
            );
        }
        if !self.lora.enabled && !self.so8t.enabled {
            return bad("so8t.enabled", "nothing to train: enable the gates or LoRA");
        }
        if self.optimizer.lr <= 0.0 || !self.optimizer.lr.is_finite() {
            return bad("optimizer.lr", "must be a positive number");
        }
        if self.training.max_steps == 0 {
            return bad("training.max_steps", "must be at least 1");
        }
        if !crate::config::BASE_DTYPES.contains(&self.training.base_dtype.as_str()) {
            return Err(Error::invalid(
                "training.base_dtype",
                format!(
                    "{:?}: expected one of {:?}",
                    self.training.base_dtype,
                    crate::config::BASE_DTYPES
                ),
            ));
        }
        if !DTYPES.contains(&self.training.dtype.as_str()) {
            return Err(Error::invalid(
                "training.dtype",
                format!("{:?}: expected one of {DTYPES:?}", self.training.dtype),
            ));
        }
        self.training
            .device
            .parse::<so8t_model::device::DeviceSpec>()
            .map_err(|e| Error::invalid("training.device", e.to_string()))?;
        Ok(())
    }

    /// Answers per RL step.
    pub fn answers_per_step(&self) -> usize {
        self.rollout.prompts_per_step * self.rollout.group_size
    }

    /// A stable hash of the config (finds the unfinished run of a config); the device is not
    /// part of it.
    pub fn hash(&self) -> String {
        let mut same = self.clone();
        same.training.device = "auto".into();
        stable_hash(&same)
    }
}
