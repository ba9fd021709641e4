//! `so8t model init`: a deterministic random-init model folder (Phi-3 or Llama layout) with a
//! byte-level BPE tokenizer trained by the `tokenizers` crate, the Phi-3 special tokens and the
//! Phi-3.5 chat template. This is the bundled default the quickstart and the tests train,
//! export and serve end to end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde_json::json;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    TokenizerBuilder,
};

use crate::chat_template::PHI35_TEMPLATE;
use crate::config::{Arch, Config};
use crate::error::{Error, Result};
use crate::io::{write_safetensors_streaming, write_string_atomic, PendingTensor};

/// The embedded default tokenizer corpus (English and Japanese sentences of the SO8T domain).
pub const DEFAULT_CORPUS: &str = include_str!("../assets/default_corpus.txt");

/// Special tokens, in id order: `<unk>` 0, `<s>` 1, `</s>` 2, then Phi-3's chat tokens.
pub const SPECIAL_TOKENS: [&str; 8] = [
    "<unk>",
    "<s>",
    "</s>",
    "<|endoftext|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
];

/// Model sizes `model init` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// hidden 64, 2 layers, 4 heads: for tests (about 0.1 M parameters plus embeddings).
    Tiny,
    /// hidden 256, 4 layers, 4 heads: quick CPU experiments.
    Small,
    /// The shapes of Phi-3.5-mini (3.8 B): hidden 3072, 32 layers, 32 heads, vocab 32064,
    /// LongRoPE to 128k (synthetic factors).
    Phi35Mini,
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "small" => Ok(Self::Small),
            "phi3.5-mini" | "phi35-mini" => Ok(Self::Phi35Mini),
            o => Err(Error::Config {
                path: PathBuf::from("--preset"),
                msg: format!("unknown preset {o:?}, expected tiny, small or phi3.5-mini"),
            }),
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Phi-3 (fused projections) or Llama layout.
    pub arch: Arch,
    /// Size.
    pub preset: Preset,
    /// Seed of the weights (the tokenizer is deterministic by itself).
    pub seed: u64,
    /// Text files to train the tokenizer on; empty = the embedded default corpus.
    pub tokenizer_corpus: Vec<PathBuf>,
    /// Weight dtype; `None` = f32 for tiny/small, bf16 for phi3.5-mini.
    pub dtype: Option<DType>,
    /// Vocabulary size of the trained tokenizer (and of the model); `None` = the preset's.
    pub vocab_size: Option<usize>,
}

struct Shape {
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    intermediate: usize,
    tokenizer_vocab: usize,
    model_vocab: Option<usize>,
    max_pos: usize,
}

fn shape(o: &InitOptions) -> Shape {
    let mut s = preset_shape(o);
    if let Some(v) = o.vocab_size {
        s.tokenizer_vocab = v;
        s.model_vocab = None;
    }
    s
}

fn preset_shape(o: &InitOptions) -> Shape {
    let gqa = o.arch == Arch::Llama;
    match o.preset {
        Preset::Tiny => Shape {
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: if gqa { 2 } else { 4 },
            intermediate: 128,
            tokenizer_vocab: 512,
            model_vocab: None,
            max_pos: 2048,
        },
        Preset::Small => Shape {
            hidden: 256,
            layers: 4,
            heads: 4,
            kv_heads: if gqa { 2 } else { 4 },
            intermediate: 704,
            tokenizer_vocab: 4096,
            model_vocab: None,
            max_pos: 4096,
        },
        Preset::Phi35Mini => Shape {
            hidden: 3072,
            layers: 32,
            heads: 32,
            kv_heads: 32,
            intermediate: 8192,
            tokenizer_vocab: 32000,
            model_vocab: Some(32064),
            max_pos: 131072,
        },
    }
}

/// Trains the byte-level BPE tokenizer (every byte is a token, so any text encodes).
pub fn train_tokenizer(corpus: &[String], vocab_size: usize) -> Result<tokenizers::Tokenizer> {
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let byte_level = ByteLevel::new(false, true, true);
    let mut tk = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(byte_level.into()))
    .with_post_processor(Some(byte_level.into()))
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(|e| Error::Tokenizer(e.to_string()))?;
    tk.train(&mut trainer, corpus.iter())
        .map_err(|e| Error::Tokenizer(format!("training: {e}")))?;
    tk.add_special_tokens(&specials);
    Ok(tk.into())
}

fn read_corpus(files: &[PathBuf]) -> Result<Vec<String>> {
    if files.is_empty() {
        return Ok(DEFAULT_CORPUS.lines().map(str::to_string).collect());
    }
    let mut lines = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        lines.extend(text.lines().map(str::to_string));
    }
    Ok(lines)
}

/// Creates the model folder `out`: config.json, generation_config.json, model.safetensors,
/// tokenizer.json, tokenizer_config.json, special_tokens_map.json. Returns the config.
pub fn init_model(opts: &InitOptions, out: &Path) -> Result<Config> {
    if let Some(v) = opts.vocab_size.filter(|&v| !(320..=1 << 20).contains(&v)) {
        return Err(Error::Generation(format!(
            "vocabulary size {v}: expected 320 to 1048576 (256 byte tokens, the special tokens \
             and room for merges)"
        )));
    }
    let s = shape(opts);
    let corpus = read_corpus(&opts.tokenizer_corpus)?;
    let tok = train_tokenizer(&corpus, s.tokenizer_vocab)?;
    let tok_vocab = tok.get_vocab_size(true);
    let vocab = s
        .model_vocab
        .unwrap_or(tok_vocab.div_ceil(64) * 64)
        .max(tok_vocab);
    let id = |t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| Error::Tokenizer(format!("token {t} missing")))
    };
    let (bos, eot, end) = (id("<s>")?, id("<|endoftext|>")?, id("<|end|>")?);
    let dtype = opts.dtype.unwrap_or(if opts.preset == Preset::Phi35Mini {
        DType::BF16
    } else {
        DType::F32
    });
    let dtype_name = match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    };
    let config = config_value(opts, &s, vocab, [bos, eot], dtype_name);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let text = |v: &serde_json::Value| format!("{v:#}\n");
    write_string_atomic(&out.join("config.json"), &text(&config))?;
    let cfg = Config::from_value(&config, &out.join("config.json"))?;
    write_string_atomic(
        &out.join("generation_config.json"),
        &text(&json!({"bos_token_id": bos, "eos_token_id": [end, eot], "pad_token_id": eot})),
    )?;
    let tok_json = tok
        .to_string(true)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    write_string_atomic(&out.join("tokenizer.json"), &tok_json)?;
    let mut decoder = serde_json::Map::new();
    for t in SPECIAL_TOKENS {
        decoder.insert(
            id(t)?.to_string(),
            json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true}),
        );
    }
    write_string_atomic(
        &out.join("tokenizer_config.json"),
        &text(&json!({
            "add_bos_token": false,
            "add_eos_token": false,
            "added_tokens_decoder": decoder,
            "bos_token": "<s>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<unk>",
            "chat_template": PHI35_TEMPLATE,
            "clean_up_tokenization_spaces": false,
            "model_max_length": s.max_pos,
            "tokenizer_class": "PreTrainedTokenizerFast",
        })),
    )?;
    write_string_atomic(
        &out.join("special_tokens_map.json"),
        &text(
            &json!({"bos_token": "<s>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"}),
        ),
    )?;
    write_weights(&cfg, opts.seed, dtype, &out.join("model.safetensors"))?;
    Ok(cfg)
}

/// The `config.json` of a fresh model: `ids` = [bos, end-of-text].
fn config_value(
    opts: &InitOptions,
    s: &Shape,
    vocab: usize,
    ids: [u32; 2],
    dtype_name: &str,
) -> serde_json::Value {
    let [bos, eot] = ids;
    let head_dim = s.hidden / s.heads;
    let mut config = json!({
        "architectures": [opts.arch.hf_name()],
        "model_type": opts.arch.model_type(),
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": s.max_pos,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": vocab,
        "tie_word_embeddings": false,
        "initializer_range": 0.02,
        "bos_token_id": bos,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "attention_dropout": 0.0,
        "torch_dtype": dtype_name,
        "use_cache": true,
    });
    if opts.arch == Arch::Llama {
        config["attention_bias"] = json!(false);
        config["mlp_bias"] = json!(false);
        config["head_dim"] = json!(head_dim);
    } else {
        config["resid_pdrop"] = json!(0.0);
        config["embd_pdrop"] = json!(0.0);
        config["sliding_window"] = json!(null);
        config["original_max_position_embeddings"] = json!(4096.min(s.max_pos));
        if opts.preset == Preset::Phi35Mini {
            // Synthetic LongRoPE factors: 1.0 short, a smooth ramp long (real Phi-3.5 values are
            // not redistributable here; the shapes and code path are what matter).
            let half = head_dim / 2;
            let long: Vec<f64> = (0..half)
                .map(|i| 1.0 + 39.0 * (i as f64 / (half - 1) as f64).powi(2))
                .collect();
            config["rope_scaling"] =
                json!({"type": "longrope", "short_factor": vec![1.0; half], "long_factor": long});
        }
    }
    config
}

/// Every tensor of a freshly initialized model: name and shape (norms are ones).
fn tensor_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        match cfg.arch {
            Arch::Phi3 => {
                out.push((
                    format!("{p}.self_attn.qkv_proj.weight"),
                    vec![q + 2 * kv, h],
                ));
                out.push((format!("{p}.mlp.gate_up_proj.weight"), vec![2 * i, h]));
            }
            Arch::Llama => {
                out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
                out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
                out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
                out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
                out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            }
        }
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
    }
    out.push(("model.norm.weight".into(), vec![h]));
    out.push(("lm_head.weight".into(), vec![v, h]));
    out
}

/// Elements from which a tensor's values are drawn in parallel chunks (each chunk its own
/// seeded stream); smaller tensors, every tiny and small preset's, keep one stream.
const PARALLEL_FROM: usize = 1 << 22;

/// `n` draws of `normal`, seeded: one stream below [`PARALLEL_FROM`], else 1 Mi-element chunks
/// drawn on all cores (the same values for a seed on any machine).
fn normal_values(n: usize, seed: u64, normal: Normal<f32>) -> Vec<f32> {
    use rayon::prelude::*;
    if n < PARALLEL_FROM {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        return (0..n).map(|_| normal.sample(&mut rng)).collect();
    }
    let mut v = vec![0f32; n];
    v.par_chunks_mut(1 << 20)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(crate::dropout::mix64(
                seed ^ (c as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            ));
            for x in chunk {
                *x = normal.sample(&mut rng);
            }
        });
    v
}

/// Writes N(0, 0.02²) weights (ones for norms), each tensor from its own seeded stream so the
/// result does not depend on write order.
fn write_weights(cfg: &Config, seed: u64, dtype: DType, path: &Path) -> Result<()> {
    let normal = Normal::new(0.0f32, 0.02).map_err(|e| Error::Generation(e.to_string()))?;
    let pending = tensor_shapes(cfg)
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let is_norm = name.ends_with("norm.weight");
            let shape2 = shape.clone();
            PendingTensor {
                name,
                dtype,
                shape,
                produce: Box::new(move || {
                    let n: usize = shape2.iter().product();
                    let t = if is_norm {
                        Tensor::ones(shape2.as_slice(), DType::F32, &Device::Cpu)?
                    } else {
                        let tensor_seed = seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        let v = normal_values(n, tensor_seed, normal);
                        Tensor::from_vec(v, shape2.as_slice(), &Device::Cpu)?
                    };
                    Ok(t.to_dtype(dtype)?)
                }),
            }
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors_streaming(path, pending, &meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi35_mini_preset_has_the_published_shapes() {
        let o = InitOptions {
            arch: Arch::Phi3,
            preset: Preset::Phi35Mini,
            seed: 0,
            tokenizer_corpus: vec![],
            dtype: None,
            vocab_size: None,
        };
        let s = shape(&o);
        let v = config_value(&o, &s, 32064, [1, 32000], "bfloat16");
        let c = Config::from_value(&v, Path::new("config.json")).unwrap();
        assert_eq!(
            (
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.head_dim
            ),
            (3072, 32, 32, 96)
        );
        assert_eq!((c.intermediate_size, c.vocab_size), (8192, 32064));
        assert_eq!(c.parameter_count(), 3_821_079_552);
        assert!(matches!(
            c.rope.scaling,
            crate::config::RopeScaling::LongRope {
                original_max_position_embeddings: 4096,
                ..
            }
        ));
        let shapes = tensor_shapes(&c);
        let total: usize = shapes
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(total, c.parameter_count());
    }
}
