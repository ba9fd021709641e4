//! Hugging Face `config.json` for `Phi3ForCausalLM` and `LlamaForCausalLM`, resolved into one
//! [`Config`] the decoder runs on.
//!
//! Follows `transformers/models/{phi3,llama}/configuration_*.py` and
//! `transformers/modeling_rope_utils.py`: RoPE settings are read from `rope_parameters`
//! (transformers 5) or `rope_scaling` + top-level `rope_theta` (published checkpoints).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{read_json, Error, Result};

/// The decoder family; Phi-3 is Llama with fused `qkv_proj` and `gate_up_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `Phi3ForCausalLM`: fused projections.
    Phi3,
    /// `LlamaForCausalLM` (also SmolLM2, Llama-3): separate projections, optional biases.
    Llama,
}

impl Arch {
    /// The HF `architectures[0]` string.
    pub fn hf_name(&self) -> &'static str {
        match self {
            Arch::Phi3 => "Phi3ForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
        }
    }
    /// The HF `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self {
            Arch::Phi3 => "phi3",
            Arch::Llama => "llama",
        }
    }
}

/// How rotary frequencies are scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: frequencies divided by `factor`.
    Linear {
        /// Divisor of every frequency.
        factor: f64,
    },
    /// Llama-3 frequency smoothing.
    Llama3 {
        /// Scaling factor for low frequencies.
        factor: f64,
        /// Low-frequency boundary.
        low_freq_factor: f64,
        /// High-frequency boundary.
        high_freq_factor: f64,
        /// Pre-training context length.
        original_max_position_embeddings: usize,
    },
    /// Phi-3 LongRoPE: per-dimension factors, short below `original_max_position_embeddings`
    /// tokens and long above, cos/sin multiplied by `attention_factor`.
    LongRope {
        /// Factors used while the sequence fits the original context.
        short_factor: Vec<f64>,
        /// Factors used beyond it.
        long_factor: Vec<f64>,
        /// Pre-training context length (the switch point).
        original_max_position_embeddings: usize,
        /// Multiplier of cos and sin.
        attention_factor: f64,
    },
}

/// Resolved RoPE settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Base θ.
    pub theta: f64,
    /// Number of rotated dimensions per head (`head_dim × partial_rotary_factor`, even).
    pub rotary_dim: usize,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

/// The resolved model configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Decoder family.
    pub arch: Arch,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// RMSNorm ε.
    pub rms_norm_eps: f64,
    /// Longest supported context.
    pub max_position_embeddings: usize,
    /// Rotary embedding settings.
    pub rope: RopeConfig,
    /// Sliding-window attention span, if configured.
    pub sliding_window: Option<usize>,
    /// `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v/o (Llama only).
    pub attention_bias: bool,
    /// Biases on the MLP projections (Llama only).
    pub mlp_bias: bool,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids.
    pub eos_token_ids: Vec<u32>,
    /// Padding token id.
    pub pad_token_id: Option<u32>,
    /// `torch_dtype` / `dtype` of the checkpoint, if stated.
    pub dtype: Option<String>,
}

struct Fields<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl<'a> Fields<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::config(self.path, msg)
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.err(format!("`{key}` is {x}, expected a non-negative integer"))
            }),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| self.err(format!("missing required field `{key}`")))
    }
    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        f64_in(self.path, self.v, key)
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(x) => Err(self.err(format!("`{key}` is {x}, expected true or false"))),
        }
    }
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Number(n)) => Ok(n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|n| n as u32)
                        .ok_or_else(|| self.err(format!("`{key}` holds {x}, expected token ids")))
                })
                .collect(),
            Some(x) => Err(self.err(format!("`{key}` is {x}, expected a token id or a list"))),
        }
    }
}

fn f64_in(path: &Path, v: &Value, key: &str) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::config(path, format!("`{key}` is {x}, expected a number"))),
    }
}

fn f64_list(path: &Path, v: &Value, key: &str) -> Result<Vec<f64>> {
    let arr = v.get(key).and_then(|x| x.as_array()).ok_or_else(|| {
        Error::config(
            path,
            format!("rope scaling needs `{key}` as a list of numbers"),
        )
    })?;
    arr.iter()
        .map(|x| {
            x.as_f64()
                .ok_or_else(|| Error::config(path, format!("`{key}` holds {x}, expected numbers")))
        })
        .collect()
}

impl Config {
    /// Reads `DIR/config.json` (or the given file).
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                what: "model folder".into(),
            });
        }
        let path: PathBuf = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let v: Value = read_json(&path)?;
        Self::from_value(&v, &path)
    }

    /// Resolves a parsed `config.json`; `path` is only used in error messages.
    pub fn from_value(v: &Value, path: &Path) -> Result<Self> {
        if !v.is_object() {
            return Err(Error::config(path, "expected a JSON object"));
        }
        let f = Fields { path, v };
        let arch_name = v
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.as_str())
            .map(str::to_string);
        let model_type = v.get("model_type").and_then(|m| m.as_str()).unwrap_or("");
        let arch = match (arch_name.as_deref(), model_type) {
            (Some("Phi3ForCausalLM"), _) | (None, "phi3") => Arch::Phi3,
            (Some("LlamaForCausalLM"), _) | (None, "llama") => Arch::Llama,
            (other, mt) => {
                return Err(f.err(format!(
                    "unknown architecture {:?} (model_type {mt:?}); so8t supports Phi3ForCausalLM and LlamaForCausalLM",
                    other.unwrap_or("<none>")
                )))
            }
        };
        let act = v
            .get("hidden_act")
            .and_then(|a| a.as_str())
            .unwrap_or("silu");
        if act != "silu" {
            return Err(f.err(format!(
                "hidden_act {act:?} is not supported, expected \"silu\""
            )));
        }
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err(f.err("`num_attention_heads` must be positive"));
        }
        let num_key_value_heads = f
            .usize_opt("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        let head_dim = f
            .usize_opt("head_dim")?
            .unwrap_or(hidden_size / num_attention_heads);
        let max_position_embeddings = f.usize_opt("max_position_embeddings")?.unwrap_or(4096);
        let rope = Self::rope(&f, head_dim, max_position_embeddings)?;
        let eos = f.ids("eos_token_id")?;
        let cfg = Config {
            arch,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: f.usize("vocab_size")?,
            rms_norm_eps: f.f64_opt("rms_norm_eps")?.unwrap_or(1e-5),
            max_position_embeddings,
            rope,
            sliding_window: f.usize_opt("sliding_window")?,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            attention_bias: f.bool_or("attention_bias", false)?,
            mlp_bias: f.bool_or("mlp_bias", false)?,
            bos_token_id: f.ids("bos_token_id")?.first().copied(),
            eos_token_ids: eos,
            pad_token_id: f.ids("pad_token_id")?.first().copied(),
            dtype: v
                .get("torch_dtype")
                .or_else(|| v.get("dtype"))
                .and_then(|d| d.as_str())
                .map(str::to_string),
        };
        if cfg.hidden_size == 0
            || cfg.num_hidden_layers == 0
            || cfg.vocab_size == 0
            || head_dim == 0
        {
            return Err(
                f.err("hidden_size, num_hidden_layers, vocab_size and head_dim must be positive")
            );
        }
        Ok(cfg)
    }

    fn rope(f: &Fields, head_dim: usize, max_pos: usize) -> Result<RopeConfig> {
        let v = f.v;
        let params = v.get("rope_parameters").filter(|p| p.is_object());
        let scaling = v.get("rope_scaling").filter(|p| p.is_object());
        let theta = params
            .map(|p| f64_in(f.path, p, "rope_theta"))
            .transpose()?
            .flatten()
            .or(f.f64_opt("rope_theta")?)
            .unwrap_or(10000.0);
        let partial = params
            .map(|p| f64_in(f.path, p, "partial_rotary_factor"))
            .transpose()?
            .flatten()
            .or(f.f64_opt("partial_rotary_factor")?)
            .unwrap_or(1.0);
        let rotary_dim = ((head_dim as f64 * partial) as usize) & !1;
        // transformers 5 keeps everything in rope_parameters; older files in rope_scaling.
        let s = scaling.or(params);
        let kind = s
            .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        // As transformers' standardize_rope_params: a top-level original_max_position_embeddings
        // (Phi-3 checkpoints) wins over the one inside the rope dict.
        let orig = match f.usize_opt("original_max_position_embeddings")? {
            Some(o) => Some(o),
            None => s
                .and_then(|s| s.get("original_max_position_embeddings"))
                .and_then(|x| x.as_u64())
                .map(|x| x as usize),
        };
        let factor = s
            .map(|s| f64_in(f.path, s, "factor"))
            .transpose()?
            .flatten();
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: factor.ok_or_else(|| f.err("linear rope scaling needs `factor`"))?,
            },
            "llama3" => {
                let s = s.expect("kind came from s");
                RopeScaling::Llama3 {
                    factor: factor.ok_or_else(|| f.err("llama3 rope scaling needs `factor`"))?,
                    low_freq_factor: f64_in(f.path, s, "low_freq_factor")?.unwrap_or(1.0),
                    high_freq_factor: f64_in(f.path, s, "high_freq_factor")?.unwrap_or(4.0),
                    original_max_position_embeddings: orig.ok_or_else(|| {
                        f.err("llama3 rope scaling needs `original_max_position_embeddings`")
                    })?,
                }
            }
            "longrope" | "su" => {
                let s = s.expect("kind came from s");
                let short_factor = f64_list(f.path, s, "short_factor")?;
                let long_factor = f64_list(f.path, s, "long_factor")?;
                for (name, l) in [("short_factor", &short_factor), ("long_factor", &long_factor)] {
                    if l.len() != rotary_dim / 2 {
                        return Err(f.err(format!(
                            "longrope `{name}` has {} entries, expected rotary_dim/2 = {}",
                            l.len(),
                            rotary_dim / 2
                        )));
                    }
                }
                let orig = orig.unwrap_or(max_pos);
                // As transformers: without an explicit `factor`, the ratio of max to original positions.
                let factor = factor.unwrap_or(max_pos as f64 / orig as f64);
                let attention_factor = match f64_in(f.path, s, "attention_factor")? {
                    Some(a) => a,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (orig as f64).ln()).sqrt(),
                };
                RopeScaling::LongRope {
                    short_factor,
                    long_factor,
                    original_max_position_embeddings: orig,
                    attention_factor,
                }
            }
            other => {
                return Err(f.err(format!(
                    "rope type {other:?} is not supported; expected default, linear, llama3 or longrope"
                )))
            }
        };
        Ok(RopeConfig {
            theta,
            rotary_dim,
            scaling,
        })
    }

    /// Width of the merged attention output (the input of `o_proj`, where the SO(8) gate acts).
    pub fn attn_out_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Parameter count implied by the shapes (embedding counted once when tied).
    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attn = h * (q + 2 * kv)
            + q * h
            + if self.attention_bias {
                q + 2 * kv + h
            } else {
                0
            };
        let mlp = 3 * h * self.intermediate_size
            + if self.mlp_bias {
                2 * self.intermediate_size + h
            } else {
                0
            };
        let per_layer = attn + mlp + 2 * h;
        let emb = self.vocab_size * h;
        emb + if self.tie_word_embeddings { 0 } else { emb }
            + h
            + self.num_hidden_layers * per_layer
    }
}
