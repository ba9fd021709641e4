//! The shape of a decoder the engine runs, read from GGUF metadata (llama.cpp's `{arch}.*` keys)
//! or from an HF folder's `config.json`.

use std::sync::Arc;

use so8t_gguf::{GgufFile, Value};
use so8t_model::{Arch, Config, RotaryEmbedding};

use super::weights::QTensor;
use super::EngineError;

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(i, i + d/2)` (HF's `rotate_half`, llama.cpp's NEOX): HF folders and GGUF `phi3`.
    Neox,
    /// Pairs `(2i, 2i + 1)` (llama.cpp's NORM): GGUF `llama`, whose Q/K rows were permuted.
    Interleaved,
}

/// RoPE as the engine applies it: per-pair inverse frequencies and a cos/sin multiplier.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// Rotated dimensions per head (even, ≤ head_dim).
    pub dim: usize,
    /// Pairing of dimensions.
    pub style: RopeStyle,
    /// Inverse frequency of each pair (`dim / 2` values).
    pub inv_freq: Vec<f32>,
    /// LongRoPE: the frequencies for contexts longer than the original one, and that length.
    pub long: Option<(Vec<f32>, usize)>,
    /// Multiplier of cos and sin (LongRoPE's attention factor, else 1).
    pub mscale: f32,
}

/// Everything about the decoder's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Architecture (Llama or Phi-3; both are the same decoder with different tensor layouts).
    pub arch: Arch,
    /// Decoder layers.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Dimensions per head.
    pub head_dim: usize,
    /// MLP width.
    pub n_ff: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Context length the model was trained for.
    pub ctx_train: usize,
    /// Rotary embedding.
    pub rope: Rope,
}

impl EngineConfig {
    /// Width of the K (and V) projection.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Width of the Q projection.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Reads the llama.cpp metadata of a `llama` or `phi3` GGUF file.
    pub fn from_gguf(f: &Arc<GgufFile>) -> Result<Self, EngineError> {
        let bad = |msg: String| EngineError::Model {
            path: f.path().to_path_buf(),
            msg,
        };
        let arch_name = f
            .metadata("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("metadata `general.architecture` is missing".into()))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "phi3" => Arch::Phi3,
            other => {
                return Err(bad(format!(
                    "architecture `{other}` is not supported (expected llama or phi3)"
                )))
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let u = |k: &str| -> Result<usize, EngineError> {
            f.metadata(&key(k))
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("metadata `{}` (an integer) is missing", key(k))))
        };
        let n_embd = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        if n_head == 0 || n_embd % n_head != 0 {
            return Err(bad(format!(
                "{n_head} heads do not divide the hidden size {n_embd}"
            )));
        }
        let n_head_kv = u("attention.head_count_kv").unwrap_or(n_head);
        let head_dim = f
            .metadata(&key("attention.key_length"))
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .unwrap_or(n_embd / n_head);
        let rope_dim = u("rope.dimension_count").unwrap_or(head_dim);
        let base = f
            .metadata(&key("rope.freq_base"))
            .and_then(Value::as_f32)
            .unwrap_or(10_000.0);
        let eps = f
            .metadata(&key("attention.layer_norm_rms_epsilon"))
            .and_then(Value::as_f32)
            .ok_or_else(|| {
                bad(format!(
                    "metadata `{}` is missing",
                    key("attention.layer_norm_rms_epsilon")
                ))
            })?;
        let embd = f
            .tensor("token_embd.weight")
            .ok_or_else(|| bad("tensor `token_embd.weight` is missing".into()))?;
        let vocab = embd.dims.get(1).copied().unwrap_or(0) as usize;
        let ctx_train = u("context_length").unwrap_or(4096);
        let mut inv: Vec<f32> = base_inv_freq(base as f64, rope_dim);
        if f.metadata(&key("rope.scaling.type"))
            .and_then(Value::as_str)
            == Some("linear")
        {
            let factor = f
                .metadata(&key("rope.scaling.factor"))
                .and_then(Value::as_f32)
                .unwrap_or(1.0);
            if factor > 0.0 {
                inv.iter_mut().for_each(|x| *x /= factor);
            }
        }
        let factors = |name: &str| -> Result<Option<Vec<f32>>, EngineError> {
            if f.tensor(name).is_none() {
                return Ok(None);
            }
            let t = QTensor::gguf(f, name)?;
            if t.ty != so8t_gguf::GgmlType::F32 || t.rows * t.cols != rope_dim / 2 {
                return Err(bad(format!(
                    "tensor `{name}`: expected {} f32 values, found {:?} {}×{}",
                    rope_dim / 2,
                    t.ty,
                    t.rows,
                    t.cols
                )));
            }
            let mut v = vec![0f32; rope_dim / 2];
            t.dequantize_row(0, &mut v);
            Ok(Some(v))
        };
        let divide = |inv: &[f32], fac: &[f32]| inv.iter().zip(fac).map(|(a, b)| a / b).collect();
        let mut long = None;
        let mut mscale = 1.0;
        if let Some(fr) = factors("rope_freqs.weight")? {
            inv = divide(&inv, &fr);
        }
        if let (Some(short), Some(lf)) = (
            factors("rope_factors_short.weight")?,
            factors("rope_factors_long.weight")?,
        ) {
            let orig = u("rope.scaling.original_context_length").unwrap_or(ctx_train);
            long = Some((divide(&inv, &lf), orig));
            inv = divide(&inv, &short);
            mscale = match f
                .metadata(&key("rope.scaling.attn_factor"))
                .and_then(Value::as_f32)
            {
                Some(a) => a,
                None if ctx_train > orig => {
                    let s = ctx_train as f64 / orig as f64;
                    (1.0 + s.ln() / (orig as f64).ln()).sqrt() as f32
                }
                None => 1.0,
            };
        }
        let n_layer = u("block_count")?;
        let n_ff = u("feed_forward_length")?;
        Ok(Self {
            arch,
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            vocab,
            eps,
            ctx_train,
            rope: Rope {
                dim: rope_dim,
                style: match arch {
                    Arch::Llama => RopeStyle::Interleaved,
                    Arch::Phi3 => RopeStyle::Neox,
                },
                inv_freq: inv,
                long,
                mscale,
            },
        })
    }

    /// The engine's view of an HF folder's resolved config (unpermuted Q/K: NEOX pairing).
    pub fn from_hf(cfg: &Config) -> Self {
        let r = RotaryEmbedding::new(&cfg.rope);
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Self {
            arch: cfg.arch,
            n_layer: cfg.num_hidden_layers,
            n_embd: cfg.hidden_size,
            n_head: cfg.num_attention_heads,
            n_head_kv: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            n_ff: cfg.intermediate_size,
            vocab: cfg.vocab_size,
            eps: cfg.rms_norm_eps as f32,
            ctx_train: cfg.max_position_embeddings,
            rope: Rope {
                dim: r.rotary_dim(),
                style: RopeStyle::Neox,
                inv_freq: f32s(r.inv_freq()),
                long: r.long_inv_freq().map(|(f, n)| (f32s(f), n)),
                mscale: r.attention_factor() as f32,
            },
        }
    }
}

fn base_inv_freq(theta: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| (1.0 / theta.powf((2 * i) as f64 / dim as f64)) as f32)
        .collect()
}
