//! `pipeline.yaml`: what the pipeline runs (docs/formats/pipeline-config.md explains every field).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::notify::NotifyConfig;
use crate::PipelineError;

/// The pipeline configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Base of the model names: A is `{name}-base`, B `{name}-so8t`; in the store
    /// `{name}-base_{quant}:latest` and `{name}-so8t_{quant}:latest`.
    pub name: String,
    /// Model A, the base: an HF model folder, or `builtin:tiny` (the tiny Phi-3 of `model init`,
    /// its tokenizer trained on the /think chats).
    pub base_model: String,
    /// Data: four-class records → split → /think chats.
    pub data: DataSection,
    /// The training of model B: the keys of a training config (docs/formats/train-config.md);
    /// `model` and `data.train` are filled in by the pipeline.
    pub train: serde_yaml_ng::Value,
    /// A finished training run to take as model B instead of training one (what `so8t watch`
    /// does); `base_model` is then the run's base model.
    pub train_run: Option<PathBuf>,
    /// GGUF export.
    pub export: ExportSection,
    /// The model store to import into (default: the user's store, `$SO8T_MODELS` or
    /// `~/.so8t/models`); relative to the config's folder.
    pub store: Option<PathBuf>,
    /// Benchmarks of A and B.
    pub eval: EvalSection,
    /// The paired A/B test.
    pub ab: AbSection,
    /// Notifications at the end (completed or failed).
    pub notify: NotifyConfig,
    /// Attempts of a failing step after the first.
    pub retries: u32,
    /// Seconds before the first retry (doubled for each further one).
    pub backoff_secs: f64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            name: "so8t".into(),
            base_model: "builtin:tiny".into(),
            data: DataSection::default(),
            train: serde_yaml_ng::Value::Mapping(Default::default()),
            train_run: None,
            export: ExportSection::default(),
            store: None,
            eval: EvalSection::default(),
            ab: AbSection::default(),
            notify: NotifyConfig::default(),
            retries: 3,
            backoff_secs: 2.0,
        }
    }
}

/// The data steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Dataset files or folders for `data collect` (any format it reads), or `builtin:sample`.
    pub inputs: Vec<String>,
    /// Train / validation / test fractions of the stratified split.
    pub split: [f64; 3],
    /// Seed of the split.
    pub seed: u64,
    /// Assistant format of the /think chats: `tags` or `steps`.
    pub think_format: String,
    /// With `base_model: builtin:tiny`: the tokenizer's vocabulary size.
    pub tokenizer_vocab: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            inputs: vec!["builtin:sample".into()],
            split: [0.8, 0.1, 0.1],
            seed: 42,
            think_format: "tags".into(),
            tokenizer_vocab: 2048,
        }
    }
}

/// GGUF export of A and B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportSection {
    /// Flavours: `f16`, `q8_0`, `q4_k_m`.
    pub quants: Vec<String>,
}

impl Default for ExportSection {
    fn default() -> Self {
        Self {
            quants: vec!["q8_0".into()],
        }
    }
}

/// Benchmarks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSection {
    /// Evaluate the four-class task on the held-out test split (with the training's system prompt).
    pub four_class: bool,
    /// More tasks as `KIND=FILE[,fewshot=F][,num_fewshot=N][,max_tokens=N][,name=N]`
    /// (files relative to the config's folder).
    pub tasks: Vec<String>,
    /// Items per task (a seeded sample; none = all).
    pub limit: Option<usize>,
    /// Seed of the sample and of the bootstrap.
    pub seed: u64,
    /// Which exported flavour is evaluated (default: the first of `export.quants`).
    pub quant: Option<String>,
    /// CPU threads of the in-process engine (default: all cores).
    pub threads: Option<usize>,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            four_class: true,
            tasks: Vec::new(),
            limit: None,
            seed: 1234,
            quant: None,
            threads: None,
        }
    }
}

/// The A/B test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AbSection {
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Significance level (Holm-corrected across tasks).
    pub alpha: f64,
}

impl Default for AbSection {
    fn default() -> Self {
        Self {
            resamples: 2000,
            alpha: 0.05,
        }
    }
}

impl PipelineConfig {
    /// Parses YAML text; errors name `origin`, the line and the key.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Self, PipelineError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e
                .inner()
                .location()
                .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            PipelineError::Config {
                path: origin.to_path_buf(),
                msg: format!("{at}`{}`: {}", e.path(), e.inner()),
            }
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Reads and parses a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Self::from_yaml(&text, path)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self, origin: &Path) -> Result<(), PipelineError> {
        let bad = |msg: String| {
            Err(PipelineError::Config {
                path: origin.to_path_buf(),
                msg,
            })
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(format!(
                "`name`: {:?} must be letters, digits, `-`, `_` or `.` (it names the models)",
                self.name
            ));
        }
        let s = self.data.split;
        if s.iter().any(|x| !(0.0..=1.0).contains(x)) || (s.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return bad(format!(
                "`data.split`: {s:?} must be three fractions summing to 1"
            ));
        }
        if s[2] <= 0.0 && self.eval.four_class {
            return bad("`data.split`: the four-class evaluation needs a test fraction > 0".into());
        }
        if !["tags", "steps"].contains(&self.data.think_format.as_str()) {
            return bad(format!(
                "`data.think_format`: {:?}, expected tags or steps",
                self.data.think_format
            ));
        }
        if self.export.quants.is_empty() {
            return bad("`export.quants`: give at least one of f16, q8_0, q4_k_m".into());
        }
        for q in &self.export.quants {
            if so8t_gguf::export::Quant::parse(q).is_err() {
                return bad(format!(
                    "`export.quants`: {q:?}, expected f16, q8_0 or q4_k_m"
                ));
            }
        }
        if let Some(q) = &self.eval.quant {
            if !self.export.quants.contains(q) {
                return bad(format!("`eval.quant`: {q:?} is not among export.quants"));
            }
        }
        if !self.eval.four_class && self.eval.tasks.is_empty() {
            return bad("`eval`: nothing to evaluate (four_class: false and no tasks)".into());
        }
        if !(self.ab.alpha > 0.0 && self.ab.alpha < 1.0) || self.ab.resamples < 100 {
            return bad("`ab`: alpha must be in (0, 1) and resamples at least 100".into());
        }
        if !(self.backoff_secs >= 0.0 && self.backoff_secs.is_finite()) {
            return bad("`backoff_secs` must be a number ≥ 0".into());
        }
        Ok(())
    }

    /// The flavour that is evaluated.
    pub fn eval_quant(&self) -> &str {
        self.eval
            .quant
            .as_deref()
            .unwrap_or_else(|| self.export.quants[0].as_str())
    }
}
