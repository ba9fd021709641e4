//! The inference engine: a Llama / Phi-3 decoder that computes directly on GGUF's quantized
//! blocks (or an HF folder's f32/f16/bf16 weights), with per-sequence KV caches and batched
//! forward passes over tokens of many sequences at once.

pub mod bench;
pub mod config;
mod forward;
mod kv;
pub mod lora;
pub mod team;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use so8t_gguf::GgufFile;

pub use config::{EngineConfig, Rope, RopeStyle};
pub use forward::{BatchEntry, ForwardOut, Scratch};
pub use kv::SeqCache;
pub use team::Team;
pub use weights::{ModelWeights, QTensor};

/// Errors of loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The model file or folder is not what the engine expects.
    #[error("{path}: {msg}")]
    Model {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] so8t_gguf::Error),
    /// The HF folder could not be read.
    #[error(transparent)]
    Hf(#[from] so8t_model::Error),
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFormat {
    /// A GGUF file.
    Gguf,
    /// A Hugging Face folder.
    HfFolder,
}

/// A loaded model: its shape and weights. Shared by the threads that use it.
pub struct EngineModel {
    /// The decoder's shape.
    pub cfg: EngineConfig,
    /// The weights.
    pub weights: ModelWeights,
    /// The file or folder it was loaded from.
    pub path: PathBuf,
    /// GGUF or HF folder.
    pub format: ModelFormat,
    /// The opened GGUF file (metadata for the tokenizer and `/api/show`).
    pub gguf: Option<Arc<GgufFile>>,
    /// The HF config, for folders.
    pub hf_config: Option<so8t_model::Config>,
}

impl EngineModel {
    /// Loads a GGUF file (memory-mapped; weights stay in their quantized types).
    pub fn load_gguf(path: &Path) -> Result<Self, EngineError> {
        let f = Arc::new(GgufFile::open(path)?);
        let cfg = EngineConfig::from_gguf(&f)?;
        let weights = ModelWeights::from_gguf(&f, &cfg)?;
        Ok(Self {
            cfg,
            weights,
            path: path.to_path_buf(),
            format: ModelFormat::Gguf,
            gguf: Some(f),
            hf_config: None,
        })
    }

    /// Loads an HF folder (`config.json` + safetensors).
    pub fn load_hf(dir: &Path) -> Result<Self, EngineError> {
        let cfg = so8t_model::Config::from_file(&dir.join("config.json"))?;
        let ecfg = EngineConfig::from_hf(&cfg);
        let weights = ModelWeights::from_hf(dir, &cfg, &ecfg)?;
        Ok(Self {
            cfg: ecfg,
            weights,
            path: dir.to_path_buf(),
            format: ModelFormat::HfFolder,
            gguf: None,
            hf_config: Some(cfg),
        })
    }

    /// A folder loads as HF, anything else as GGUF.
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        if path.is_dir() {
            Self::load_hf(path)
        } else {
            Self::load_gguf(path)
        }
    }

    /// Bytes of weights (mapped or in memory).
    pub fn size_bytes(&self) -> usize {
        let w = &self.weights;
        let mut n = w.tok_embd.size_bytes() + w.output.as_ref().map_or(0, |o| o.size_bytes());
        for l in &w.layers {
            n += l.wo.size_bytes() + l.down.size_bytes();
            n += match &l.qkv {
                weights::QkvWeights::Fused(t) => t.size_bytes(),
                weights::QkvWeights::Split(a, b, c) => {
                    a.size_bytes() + b.size_bytes() + c.size_bytes()
                }
            };
            n += match &l.up {
                weights::UpWeights::Fused(t) => t.size_bytes(),
                weights::UpWeights::Split(a, b) => a.size_bytes() + b.size_bytes(),
            };
        }
        n
    }

    /// A new, empty cache for one sequence.
    pub fn new_cache(&self) -> SeqCache {
        SeqCache::new(&self.cfg)
    }
}

/// Runs forward passes of one model with a thread team and reusable buffers.
pub struct Runner {
    /// The model.
    pub model: Arc<EngineModel>,
    team: Team,
    scratch: Scratch,
}

impl Runner {
    /// A runner with `threads` compute threads (the caller counts as one).
    pub fn new(model: Arc<EngineModel>, threads: usize) -> Self {
        Self {
            model,
            team: Team::new(threads),
            scratch: Scratch::default(),
        }
    }

    /// One batched forward pass (see [`BatchEntry`]); logits of the entries that ask for them
    /// land in `out.logits`, the final hidden states in `out.hidden` when `want_hidden`.
    pub fn forward(
        &mut self,
        caches: &mut [&mut SeqCache],
        batch: &[BatchEntry],
        want_hidden: bool,
        out: &mut ForwardOut,
    ) {
        let m = &*self.model;
        forward::forward(
            &m.cfg,
            &m.weights,
            &self.team,
            &mut self.scratch,
            caches,
            batch,
            want_hidden,
            out,
        );
        for e in batch {
            let c = &mut caches[e.cache];
            c.len = c.len.max(e.pos + 1);
        }
    }

    /// Logits for every position of `tokens` in a fresh sequence (a convenience for tests and
    /// scoring). LongRoPE models use the long factors when `tokens` exceeds the original
    /// context, as transformers does for one pass.
    pub fn logits_all(&mut self, tokens: &[u32]) -> Vec<f32> {
        let mut cache = self.model.new_cache();
        if let Some((_, orig)) = &self.model.cfg.rope.long {
            cache.long_rope = tokens.len() > *orig;
        }
        let batch: Vec<BatchEntry> = tokens
            .iter()
            .enumerate()
            .map(|(pos, &token)| BatchEntry {
                cache: 0,
                token,
                pos,
                logits: true,
            })
            .collect();
        let mut out = ForwardOut::default();
        self.forward(&mut [&mut cache], &batch, false, &mut out);
        out.logits
    }
}
