//! `train.yaml`: the training configuration, mirroring the seeds' config (model, data, `so8t`,
//! `alpha`, `pet`, `lora`, `optimizer`, `training`, `checkpoint`). Unknown keys are errors that
//! list the valid ones. Every field is documented in `docs/formats/train-config.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use so8t_model::lora::{LoraConfig, TargetModules};

use crate::error::{Error, Result};
use crate::optim::{AdamWConfig, LrDecay};
use crate::schedule::{AlphaSchedule, PetSchedule};
use crate::step::{GateConfig, StepConfig};

/// Training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// /think chats (`data think` output, or any JSONL with `messages`).
    pub train: PathBuf,
    /// Longest row in tokens.
    pub max_seq_len: usize,
    /// Train on the prompt tokens too.
    pub train_on_prompt: bool,
    /// Pack short examples into rows of `max_seq_len`.
    pub packing: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            train: PathBuf::new(),
            max_seq_len: 1024,
            train_on_prompt: false,
            packing: true,
        }
    }
}

/// PET regularization: `enabled` plus the [`PetSchedule`] fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PetConfig {
    /// Add L_PET to the loss.
    pub enabled: bool,
    /// λ in the exploration phase.
    pub lambda_exploration: f64,
    /// λ in the transition phase.
    pub lambda_transition: f64,
    /// λ in the stabilization phase.
    pub lambda_stabilization: f64,
    /// Where the transition phase starts (fraction of the run).
    pub transition_start: f64,
    /// Where the stabilization phase starts (fraction of the run).
    pub stabilization_start: f64,
    /// Huber δ (absent: squared second differences).
    pub huber_delta: Option<f64>,
}

impl Default for PetConfig {
    fn default() -> Self {
        let s = PetSchedule::default();
        Self {
            enabled: true,
            lambda_exploration: s.lambda_exploration,
            lambda_transition: s.lambda_transition,
            lambda_stabilization: s.lambda_stabilization,
            transition_start: s.transition_start,
            stabilization_start: s.stabilization_start,
            huber_delta: s.huber_delta,
        }
    }
}

impl PetConfig {
    /// The schedule these settings describe.
    pub fn schedule(&self) -> PetSchedule {
        PetSchedule {
            lambda_exploration: self.lambda_exploration,
            lambda_transition: self.lambda_transition,
            lambda_stabilization: self.lambda_stabilization,
            transition_start: self.transition_start,
            stabilization_start: self.stabilization_start,
            huber_delta: self.huber_delta,
        }
    }
}

/// LoRA adapters (PEFT semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSection {
    /// Train adapters.
    pub enabled: bool,
    /// Rank.
    pub r: usize,
    /// Scale numerator (scale = alpha / r).
    pub alpha: f64,
    /// Dropout on the adapter input.
    pub dropout: f64,
    /// Module names (`qkv_proj`, `o_proj`, …).
    pub target_modules: Vec<String>,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            enabled: true,
            r: 64,
            alpha: 128.0,
            dropout: 0.05,
            target_modules: vec![
                "qkv_proj".into(),
                "o_proj".into(),
                "gate_up_proj".into(),
                "down_proj".into(),
            ],
        }
    }
}

/// AdamW and the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// (β1, β2).
    pub betas: [f64; 2],
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// `cosine`, `linear` or `constant` after warm-up.
    pub lr_scheduler: LrDecay,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            lr_scheduler: LrDecay::Cosine,
            max_grad_norm: 1.0,
        }
    }
}

/// Loop settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingSection {
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Passes over the data (used when `max_steps` is 0).
    pub epochs: u64,
    /// Optimizer steps (0: `epochs` decide).
    pub max_steps: u64,
    /// `f32` (CPU) or `bf16`/`f16` (GPU); `auto`: f32 on the CPU, bf16 on CUDA. The frozen
    /// base runs in it; LoRA adapters, gate generators and AdamW moments stay f32.
    pub dtype: String,
    /// `auto` (CUDA when this build has it and a GPU is present, else the CPU), `cpu`, `cuda`,
    /// `cuda:N`. Not part of the run's identity: a run may resume on another device. Left out of
    /// the serialized config when `auto`.
    #[serde(skip_serializing_if = "is_auto")]
    pub device: String,
    /// Seed of adapters, gates and data order.
    pub seed: u64,
    /// The frozen base linears' storage: `same` (the `dtype` above) or `int8` (llama.cpp Q8_0
    /// blocks, dequantized layer by layer on the fly; LoRA and gates stay f32). Left out of the
    /// serialized config when `same`, so the hash of a config without it does not change.
    #[serde(skip_serializing_if = "is_same")]
    pub base_dtype: String,
    /// Recompute each decoder layer in the backward pass (less memory, same gradients). Left out of the serialized config when false, so the hash of a
    /// config without it does not change.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
    /// Train every weight of the model (embeddings, norms, linears, lm_head) instead of LoRA
    /// adapters; `final/model/` then holds the trained model. Needs `lora.enabled: false`,
    /// `dtype: f32` and `base_dtype: same`. Left out of the serialized config when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub full_finetune: bool,
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            batch_size: 1,
            gradient_accumulation_steps: 16,
            epochs: 3,
            max_steps: 0,
            dtype: "f32".into(),
            device: "auto".into(),
            seed: 42,
            base_dtype: "same".into(),
            gradient_checkpointing: false,
            full_finetune: false,
        }
    }
}

/// The values `training.base_dtype` accepts.
pub const BASE_DTYPES: [&str; 2] = ["same", "int8"];

fn is_same(s: &str) -> bool {
    s == "same"
}

fn is_auto(s: &str) -> bool {
    s == "auto"
}

/// The values `training.dtype` accepts.
pub const DTYPES: [&str; 4] = ["auto", "f32", "bf16", "f16"];

/// Checkpoint cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// A rolling checkpoint every this many steps (0: off).
    pub every_steps: u64,
    /// …or every this many minutes, whichever comes first (0: off).
    pub every_minutes: f64,
    /// Rolling checkpoints kept.
    pub keep_rolling: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_steps: 0,
            every_minutes: 3.0,
            keep_rolling: 5,
        }
    }
}

/// The whole `train.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// HF model folder.
    pub model: PathBuf,
    /// Training data.
    pub data: DataConfig,
    /// SO(8) gates.
    pub so8t: GateConfig,
    /// α(t).
    pub alpha: AlphaSchedule,
    /// PET.
    pub pet: PetConfig,
    /// LoRA.
    pub lora: LoraSection,
    /// Optimizer.
    pub optimizer: OptimizerConfig,
    /// Loop.
    pub training: TrainingSection,
    /// Checkpoints.
    pub checkpoint: CheckpointConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            data: DataConfig::default(),
            so8t: GateConfig::default(),
            alpha: AlphaSchedule::default(),
            pet: PetConfig::default(),
            lora: LoraSection::default(),
            optimizer: OptimizerConfig::default(),
            training: TrainingSection::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }
}

/// Reads the YAML file `path` and parses it with `parse(text, folder of the file, name of the
/// file)`; an unreadable file is an error naming it.
pub(crate) fn read_yaml_file<T>(
    path: &Path,
    parse: impl FnOnce(&str, &Path, &str) -> Result<T>,
) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid("config", format!("{}: {e}", path.display())))?;
    parse(
        &text,
        path.parent().unwrap_or(Path::new(".")),
        &path.display().to_string(),
    )
}

impl TrainConfig {
    /// Reads a YAML file; relative `model` and `data.train` paths are taken from the file's
    /// folder; a `preset:` key lays a named preset under the file's values ([`crate::preset`]).
    /// Errors name the file, the line and the key (unknown keys list the valid ones).
    pub fn from_file(path: &Path) -> Result<Self> {
        read_yaml_file(path, Self::from_yaml)
    }

    /// Parses YAML text as [`from_file`](Self::from_file) does, with relative paths taken from
    /// `base` and `origin` naming the text in errors.
    pub fn from_yaml(text: &str, base: &Path, origin: &str) -> Result<Self> {
        let parsed = match crate::preset::apply(text, origin)? {
            Some(doc) => serde_yaml_ng::from_value(doc),
            None => serde_yaml_ng::from_str(text),
        };
        let mut cfg: TrainConfig =
            parsed.map_err(|e| Error::invalid("config", format!("{origin}: {e}")))?;
        resolve_relative([&mut cfg.model, &mut cfg.data.train], base);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<()> {
        self.alpha.validate()?;
        self.pet.schedule().validate()?;
        let t = &self.training;
        if t.batch_size == 0 || t.gradient_accumulation_steps == 0 {
            return Err(Error::invalid(
                "training.batch_size",
                "batch_size and gradient_accumulation_steps must be at least 1",
            ));
        }
        if t.max_steps == 0 && t.epochs == 0 {
            return Err(Error::invalid(
                "training.max_steps",
                "set max_steps or epochs",
            ));
        }
        if self.optimizer.lr <= 0.0 || !self.optimizer.lr.is_finite() {
            return Err(Error::invalid("optimizer.lr", "must be a positive number"));
        }
        if self.lora.enabled && self.lora.r == 0 {
            return Err(Error::invalid("lora.r", "must be at least 1"));
        }
        if !DTYPES.contains(&t.dtype.as_str()) {
            return Err(Error::invalid(
                "training.dtype",
                format!("{:?}: expected one of {DTYPES:?}", t.dtype),
            ));
        }
        t.device
            .parse::<so8t_model::device::DeviceSpec>()
            .map_err(|e| Error::invalid("training.device", e.to_string()))?;
        if !BASE_DTYPES.contains(&t.base_dtype.as_str()) {
            return Err(Error::invalid(
                "training.base_dtype",
                format!("{:?}: expected one of {BASE_DTYPES:?}", t.base_dtype),
            ));
        }
        if t.full_finetune {
            let why = if self.lora.enabled {
                Some("set lora.enabled: false (full fine-tuning trains the weights themselves)")
            } else if t.dtype != "f32" && t.dtype != "auto" {
                Some("full fine-tuning needs training.dtype: f32")
            } else if t.base_dtype != "same" {
                Some("full fine-tuning needs training.base_dtype: same")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Error::invalid("training.full_finetune", why));
            }
        }
        if self.data.max_seq_len < 2 {
            return Err(Error::invalid("data.max_seq_len", "must be at least 2"));
        }
        Ok(())
    }

    /// The step settings for `total_steps` optimizer steps.
    pub fn step_config(&self, total_steps: u64) -> StepConfig {
        let o = &self.optimizer;
        StepConfig {
            gates: self.so8t.clone(),
            alpha: self.alpha,
            pet: self.pet.enabled.then(|| self.pet.schedule()),
            lora: self.lora.enabled.then(|| LoraConfig {
                lora_dropout: self.lora.dropout,
                target_modules: TargetModules::List(self.lora.target_modules.clone()),
                ..LoraConfig::new(self.lora.r, self.lora.alpha, &[])
            }),
            optim: AdamWConfig {
                lr: o.lr,
                beta1: o.betas[0],
                beta2: o.betas[1],
                eps: o.eps,
                weight_decay: o.weight_decay,
            },
            lr_decay: o.lr_scheduler,
            warmup_steps: o.warmup_steps,
            grad_clip: (o.max_grad_norm > 0.0).then_some(o.max_grad_norm),
            total_steps,
            seed: self.training.seed,
            gradient_checkpointing: self.training.gradient_checkpointing,
            full_finetune: self.training.full_finetune,
        }
    }

    /// A stable hash of the resolved config (finds the unfinished run of a config).
    pub fn hash(&self) -> String {
        // The device is where a run trains, not what it trains.
        let mut same = self.clone();
        same.training.device = "auto".into();
        stable_hash(&same)
    }
}

/// Takes the relative paths among `paths` from `base` (empty paths and `builtin:…` names stay).
pub(crate) fn resolve_relative<'a>(paths: impl IntoIterator<Item = &'a mut PathBuf>, base: &Path) {
    for p in paths {
        let builtin = p.to_string_lossy().starts_with("builtin:");
        if p.is_relative() && !p.as_os_str().is_empty() && !builtin {
            *p = base.join(&*p);
        }
    }
}

/// A stable hash (FNV-1a, hex) of a config's JSON: what identifies a run.
pub(crate) fn stable_hash<T: Serialize>(config: &T) -> String {
    let json = serde_json::to_string(config).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}
