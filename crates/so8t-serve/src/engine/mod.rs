//! The inference engine: a Llama / Phi-3 decoder that computes directly on GGUF's quantized
//! blocks (or an HF folder's f32/f16/bf16 weights), with per-sequence KV caches and batched
//! forward passes over tokens of many sequences at once.

pub mod bench;
pub mod config;
pub mod device;
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
    /// The device engine failed (copying weights, running a pass: e.g. out of device memory).
    #[error("on {device}: {msg}")]
    Device {
        /// The device (`cuda:0`, `cpu`).
        device: String,
        /// What went wrong.
        msg: String,
    },
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

    /// A new cache for a sequence of up to `context` tokens: LongRoPE models use the long
    /// factors when it exceeds the original context, as transformers decides for one pass.
    pub fn cache_for(&self, context: usize) -> SeqCache {
        let mut c = self.new_cache();
        if let Some((_, orig)) = &self.cfg.rope.long {
            c.long_rope = context > *orig;
        }
        c
    }
}

/// Where a [`Runner`] computes.
enum Backend {
    /// The native CPU engine: a thread team and reusable buffers.
    Native { team: Team, scratch: Scratch },
    /// candle on a device (a CUDA GPU).
    Device(device::DeviceEngine),
}

/// Runs forward passes of one model, on the CPU's native engine or on a device.
pub struct Runner {
    /// The model.
    pub model: Arc<EngineModel>,
    backend: Backend,
}

impl Runner {
    /// A runner on the native CPU engine with `threads` compute threads (the caller counts as
    /// one).
    pub fn new(model: Arc<EngineModel>, threads: usize) -> Self {
        Self {
            model,
            backend: Backend::Native {
                team: Team::new(threads),
                scratch: Scratch::default(),
            },
        }
    }

    /// A runner on `dev` (see [`device::DeviceEngine`]): copies the weights there, calling
    /// `progress(done, total)` after each layer. Activations are `dtype` (bf16 is the usual
    /// choice on a GPU; the CPU backend computes in f32).
    pub fn on_device(
        model: Arc<EngineModel>,
        dev: &candle_core::Device,
        dtype: candle_core::DType,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, EngineError> {
        let engine = device::DeviceEngine::new(&model, dev, dtype, progress)
            .map_err(|e| device_error(dev, e))?;
        Ok(Self {
            model,
            backend: Backend::Device(engine),
        })
    }

    /// The native engine on the CPU, the device engine anywhere else.
    pub fn for_device(
        model: Arc<EngineModel>,
        dev: &candle_core::Device,
        threads: usize,
        dtype: candle_core::DType,
    ) -> Result<Self, EngineError> {
        if dev.is_cpu() {
            return Ok(Self::new(model, threads));
        }
        let started = std::time::Instant::now();
        let r = Self::on_device(model, dev, dtype, &mut |done, total| {
            tracing::debug!("layer {done}/{total} on the device");
        })?;
        tracing::info!(
            "weights on {} ({:?} activations) in {:.1} s",
            r.device_name(),
            dtype,
            started.elapsed().as_secs_f64()
        );
        Ok(r)
    }

    /// Where this runner computes: `cpu` (native engine) or the device's name.
    pub fn device_name(&self) -> String {
        match &self.backend {
            Backend::Native { .. } => "cpu".into(),
            Backend::Device(e) => so8t_model::device::name_of(e.device()),
        }
    }

    /// One batched forward pass (see [`BatchEntry`]); logits of the entries that ask for them
    /// land in `out.logits`, the final hidden states in `out.hidden` when `want_hidden`.
    /// The native engine cannot fail; a device can (out of memory, a lost GPU).
    pub fn forward(
        &mut self,
        caches: &mut [&mut SeqCache],
        batch: &[BatchEntry],
        want_hidden: bool,
        out: &mut ForwardOut,
    ) -> Result<(), EngineError> {
        let m = &*self.model;
        match &mut self.backend {
            Backend::Native { team, scratch } => forward::forward(
                &m.cfg,
                &m.weights,
                team,
                scratch,
                caches,
                batch,
                want_hidden,
                out,
            ),
            Backend::Device(e) => e
                .forward(&m.cfg, caches, batch, want_hidden, out)
                .map_err(|err| device_error(e.device(), err))?,
        }
        for e in batch {
            let c = &mut caches[e.cache];
            c.len = c.len.max(e.pos + 1);
        }
        Ok(())
    }

    /// Logits for every position of `tokens` in a fresh sequence (a convenience for tests and
    /// scoring). LongRoPE models use the long factors when `tokens` exceeds the original
    /// context, as transformers does for one pass.
    pub fn logits_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let mut cache = self.model.cache_for(tokens.len());
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
        self.forward(&mut [&mut cache], &batch, false, &mut out)?;
        Ok(out.logits)
    }
}

fn device_error(dev: &candle_core::Device, e: candle_core::Error) -> EngineError {
    EngineError::Device {
        device: so8t_model::device::name_of(dev),
        msg: e.to_string(),
    }
}
