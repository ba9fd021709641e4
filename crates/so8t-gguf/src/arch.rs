//! HF architectures → llama.cpp's GGUF: metadata keys (`{arch}.*`) and tensor names, for `phi3`
//! (fused `attn_qkv` and `ffn_up`, LongRoPE factors as `rope_factors_long/short.weight`) and
//! `llama` (separate projections; Q and K rows permuted to llama.cpp's rotary layout).

use so8t_model::{Arch, Config, RopeScaling};

use crate::error::{Error, Result};
use crate::meta::Meta;

/// Where a GGUF tensor's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An HF tensor; `permute_heads`: permute its rows for this many heads (llama Q/K).
    Hf {
        /// HF name.
        name: String,
        /// Heads of llama.cpp's row permutation.
        permute_heads: Option<usize>,
    },
    /// Values made by the exporter (rope factors).
    Values(Vec<f32>),
}

/// One tensor of the GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPlan {
    /// llama.cpp's name (`blk.0.attn_qkv.weight`).
    pub name: String,
    /// Shape in HF order (`[out, in]` for matrices).
    pub shape: Vec<usize>,
    /// Values.
    pub source: Source,
}

impl TensorPlan {
    /// Weights per row (GGUF `ne0`).
    pub fn row_len(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    /// Whether it is a matrix (quantizable) rather than a vector (norms, factors).
    pub fn is_matrix(&self) -> bool {
        self.shape.len() == 2
    }
}

/// What the export of one architecture writes.
#[derive(Debug, Clone)]
pub struct ArchPlan {
    /// `general.architecture`.
    pub arch: &'static str,
    /// `{arch}.*` metadata.
    pub metadata: Vec<(String, Meta)>,
    /// Tensors in file order.
    pub tensors: Vec<TensorPlan>,
}

fn hf(name: String, shape: Vec<usize>, gguf: String, permute_heads: Option<usize>) -> TensorPlan {
    TensorPlan {
        name: gguf,
        shape,
        source: Source::Hf {
            name,
            permute_heads,
        },
    }
}

/// The GGUF plan for a model of `cfg` (with `has_lm_head`: an `lm_head.weight` is stored).
pub fn plan(cfg: &Config, has_lm_head: bool) -> Result<ArchPlan> {
    let arch = match cfg.arch {
        Arch::Phi3 => "phi3",
        Arch::Llama => "llama",
    };
    let (h, n_layer) = (cfg.hidden_size, cfg.num_hidden_layers);
    let (nh, nkv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let k = |s: &str| format!("{arch}.{s}");
    let mut md: Vec<(String, Meta)> = vec![
        (k("vocab_size"), Meta::U32(cfg.vocab_size as u32)),
        (
            k("context_length"),
            Meta::U32(cfg.max_position_embeddings as u32),
        ),
        (k("embedding_length"), Meta::U32(h as u32)),
        (
            k("feed_forward_length"),
            Meta::U32(cfg.intermediate_size as u32),
        ),
        (k("block_count"), Meta::U32(n_layer as u32)),
        (k("attention.head_count"), Meta::U32(nh as u32)),
        (k("attention.head_count_kv"), Meta::U32(nkv as u32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Meta::F32(cfg.rms_norm_eps as f32),
        ),
        (
            k("rope.dimension_count"),
            Meta::U32(cfg.rope.rotary_dim as u32),
        ),
        (k("rope.freq_base"), Meta::F32(cfg.rope.theta as f32)),
    ];
    if cfg.attention_bias || cfg.mlp_bias {
        return Err(Error::Export(
            "attention or MLP biases are not exported yet (llama.cpp's phi3/llama graphs have none)"
                .into(),
        ));
    }
    let mut tensors = vec![hf(
        "model.embed_tokens.weight".into(),
        vec![cfg.vocab_size, h],
        "token_embd.weight".into(),
        None,
    )];
    let mut extra = Vec::new();
    match &cfg.rope.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            md.push((k("rope.scaling.type"), Meta::Str("linear".into())));
            md.push((k("rope.scaling.factor"), Meta::F32(*factor as f32)));
        }
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
            attention_factor,
        } if cfg.arch == Arch::Phi3 => {
            md.push((
                k("rope.scaling.original_context_length"),
                Meta::U32(*original_max_position_embeddings as u32),
            ));
            md.push((
                k("rope.scaling.attn_factor"),
                Meta::F32(*attention_factor as f32),
            ));
            let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            for (name, v) in [
                ("rope_factors_long.weight", long_factor),
                ("rope_factors_short.weight", short_factor),
            ] {
                extra.push(TensorPlan {
                    name: name.into(),
                    shape: vec![v.len()],
                    source: Source::Values(f(v)),
                });
            }
        }
        other => {
            return Err(Error::Export(format!(
                "{arch}: RoPE scaling {other:?} is not exported yet"
            )))
        }
    }
    if cfg.arch == Arch::Phi3 {
        if let RopeScaling::None | RopeScaling::Linear { .. } = cfg.rope.scaling {
            md.push((
                k("rope.scaling.original_context_length"),
                Meta::U32(cfg.max_position_embeddings as u32),
            ));
        }
        md.push((
            k("attention.sliding_window"),
            Meta::U32(cfg.sliding_window.unwrap_or(0) as u32),
        ));
    }
    tensors.extend(extra);
    for l in 0..n_layer {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        tensors.push(hf(
            p("input_layernorm.weight"),
            vec![h],
            g("attn_norm.weight"),
            None,
        ));
        match cfg.arch {
            Arch::Phi3 => {
                tensors.push(hf(
                    p("self_attn.qkv_proj.weight"),
                    vec![(nh + 2 * nkv) * hd, h],
                    g("attn_qkv.weight"),
                    None,
                ));
            }
            Arch::Llama => {
                tensors.push(hf(
                    p("self_attn.q_proj.weight"),
                    vec![nh * hd, h],
                    g("attn_q.weight"),
                    Some(nh),
                ));
                tensors.push(hf(
                    p("self_attn.k_proj.weight"),
                    vec![nkv * hd, h],
                    g("attn_k.weight"),
                    Some(nkv),
                ));
                tensors.push(hf(
                    p("self_attn.v_proj.weight"),
                    vec![nkv * hd, h],
                    g("attn_v.weight"),
                    None,
                ));
            }
        }
        tensors.push(hf(
            p("self_attn.o_proj.weight"),
            vec![h, nh * hd],
            g("attn_output.weight"),
            None,
        ));
        tensors.push(hf(
            p("post_attention_layernorm.weight"),
            vec![h],
            g("ffn_norm.weight"),
            None,
        ));
        let ff = cfg.intermediate_size;
        match cfg.arch {
            Arch::Phi3 => {
                tensors.push(hf(
                    p("mlp.gate_up_proj.weight"),
                    vec![2 * ff, h],
                    g("ffn_up.weight"),
                    None,
                ));
            }
            Arch::Llama => {
                tensors.push(hf(
                    p("mlp.gate_proj.weight"),
                    vec![ff, h],
                    g("ffn_gate.weight"),
                    None,
                ));
                tensors.push(hf(
                    p("mlp.up_proj.weight"),
                    vec![ff, h],
                    g("ffn_up.weight"),
                    None,
                ));
            }
        }
        tensors.push(hf(
            p("mlp.down_proj.weight"),
            vec![h, ff],
            g("ffn_down.weight"),
            None,
        ));
    }
    tensors.push(hf(
        "model.norm.weight".into(),
        vec![h],
        "output_norm.weight".into(),
        None,
    ));
    if has_lm_head && !cfg.tie_word_embeddings {
        tensors.push(hf(
            "lm_head.weight".into(),
            vec![cfg.vocab_size, h],
            "output.weight".into(),
            None,
        ));
    }
    Ok(ArchPlan {
        arch,
        metadata: md,
        tensors,
    })
}

/// llama.cpp's Q/K row permutation for `heads` heads: within each head the rows
/// `[x0, x1, …]` of the two rotary halves are interleaved (`reshape(heads, 2, d/2, in)
/// .swapaxes(1, 2)`).
pub fn permute_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Result<Vec<f32>> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) || w.len() != rows * cols {
        return Err(Error::Export(format!(
            "cannot permute {rows}×{cols} rows for {heads} heads"
        )));
    }
    let half = rows / heads / 2;
    let mut out = vec![0f32; w.len()];
    for hd in 0..heads {
        for two in 0..2 {
            for i in 0..half {
                let src = (hd * 2 * half + two * half + i) * cols;
                let dst = (hd * 2 * half + i * 2 + two) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    Ok(out)
}
