//! The decoder of `Phi3ForCausalLM` and `LlamaForCausalLM` on candle.
//!
//! Follows `transformers/models/phi3/modeling_phi3.py` and `.../llama/modeling_llama.py`
//! (eager attention): Phi-3 is Llama with fused `qkv_proj` and `gate_up_proj`, so one decoder
//! serves both and the difference lives in [`Qkv`] and [`Up`]. The SO(8) gate acts on the merged
//! attention output right before `o_proj` (spec §1).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::cache::Cache;
use crate::config::{Arch, Config};
use crate::error::{Error, Result};
use crate::layer::{Attention, AttnCtx, DecoderLayer, MaxPrecision, Mlp, Qkv, RmsNorm, Up};
use crate::linear::Linear;
use crate::mask::{attention_windows, AttentionMask};
use crate::rope::RotaryEmbedding;
use crate::so8::GateMatrices;
use crate::weights::Weights;

/// Options of one forward pass.
#[derive(Default)]
pub struct Forward<'a> {
    /// KV cache to read and extend (positions continue from its length).
    pub cache: Option<&'a mut Cache>,
    /// `[B, S]` 1 for real tokens, 0 for padding, over cached + new positions.
    pub attention_mask: Option<&'a Tensor>,
    /// SO(8) blend matrices per layer.
    pub gates: Option<&'a GateMatrices>,
    /// Use differentiable kernels and enable LoRA dropout.
    pub train: bool,
    /// Packed rows: per batch row, the lengths of the sequences packed into it (summing to the
    /// row length). Tokens attend only within their own sequence and positions restart at 0 for
    /// each, so a packed row gives the same logits as its sequences run one by one. No cache.
    pub segments: Option<&'a [Vec<usize>]>,
}

/// The per-pass inputs of the decoder layers, from [`Model::prepare`].
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Token embeddings `[B, T, H]` (the first layer's input).
    pub x0: Tensor,
    /// Rotary cosines `[T, rot/2]`, or `[B, T, rot/2]` for packed rows.
    pub cos: Tensor,
    /// Rotary sines, shaped as `cos`.
    pub sin: Tensor,
    /// The attention mask: additive (built on first use) and, when training on CUDA where the
    /// mask has that form, one window of keys per query for the flash kernels.
    pub mask: AttentionMask,
}

/// A causal language model (Phi-3 or Llama family).
#[derive(Debug, Clone)]
pub struct Model {
    /// Resolved configuration.
    pub cfg: Config,
    /// Token embedding [V, H].
    pub embed_tokens: Tensor,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection [V, H] (the embedding when tied).
    pub lm_head: Tensor,
    rope: RotaryEmbedding,
    dtype: DType,
    device: Device,
}

struct Loader<'a> {
    w: &'a Weights,
    dtype: DType,
    device: &'a Device,
}

impl Loader<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.w.get(name, shape, self.dtype, self.device)
    }
    fn linear(&self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            name: name.to_string(),
            weight: self.tensor(&format!("{name}.weight"), &[out, inp])?.into(),
            bias: if bias {
                Some(self.tensor(&format!("{name}.bias"), &[out])?)
            } else {
                None
            },
            lora: None,
        })
    }
    fn norm(&self, name: &str, h: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm::new(
            self.tensor(&format!("{name}.weight"), &[h])?,
            eps,
        ))
    }
}

impl Model {
    /// Loads `config.json` and the safetensors weights of an HF model folder.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = Config::from_file(dir)?;
        let weights = Weights::from_model_dir(dir)?;
        Self::from_weights(cfg, &weights, dtype, device)
    }

    /// Builds the model from a config and opened weights, checking every shape.
    pub fn from_weights(cfg: Config, w: &Weights, dtype: DType, device: &Device) -> Result<Self> {
        let ld = Loader { w, dtype, device };
        let (h, nh, nkv, hd, i) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            cfg.intermediate_size,
        );
        let embed_tokens = ld.tensor("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let (ab, mb) = (cfg.attention_bias, cfg.mlp_bias);
            let qkv = match cfg.arch {
                Arch::Phi3 => Qkv::Fused(ld.linear(
                    &format!("{p}.self_attn.qkv_proj"),
                    (nh + 2 * nkv) * hd,
                    h,
                    false,
                )?),
                Arch::Llama => Qkv::Separate(
                    ld.linear(&format!("{p}.self_attn.q_proj"), nh * hd, h, ab)?,
                    ld.linear(&format!("{p}.self_attn.k_proj"), nkv * hd, h, ab)?,
                    ld.linear(&format!("{p}.self_attn.v_proj"), nkv * hd, h, ab)?,
                ),
            };
            let up = match cfg.arch {
                Arch::Phi3 => {
                    Up::Fused(ld.linear(&format!("{p}.mlp.gate_up_proj"), 2 * i, h, false)?)
                }
                Arch::Llama => Up::Separate(
                    ld.linear(&format!("{p}.mlp.gate_proj"), i, h, mb)?,
                    ld.linear(&format!("{p}.mlp.up_proj"), i, h, mb)?,
                ),
            };
            let obias = cfg.arch == Arch::Llama && cfg.attention_bias;
            let dbias = cfg.arch == Arch::Llama && cfg.mlp_bias;
            layers.push(DecoderLayer {
                input_layernorm: ld.norm(&format!("{p}.input_layernorm"), h, cfg.rms_norm_eps)?,
                self_attn: Attention {
                    qkv,
                    o_proj: ld.linear(&format!("{p}.self_attn.o_proj"), h, nh * hd, obias)?,
                    num_heads: nh,
                    num_kv_heads: nkv,
                    head_dim: hd,
                },
                post_attention_layernorm: ld.norm(
                    &format!("{p}.post_attention_layernorm"),
                    h,
                    cfg.rms_norm_eps,
                )?,
                mlp: Mlp {
                    up,
                    down_proj: ld.linear(&format!("{p}.mlp.down_proj"), h, i, dbias)?,
                },
            });
        }
        let norm = ld.norm("model.norm", h, cfg.rms_norm_eps)?;
        let lm_head = if w.contains("lm_head.weight") && !cfg.tie_word_embeddings {
            ld.tensor("lm_head.weight", &[cfg.vocab_size, h])?
        } else if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            return Err(Error::MissingTensor {
                path: w.file_of("lm_head.weight").to_path_buf(),
                name: "lm_head.weight".into(),
                hint: " (config.json says tie_word_embeddings is false)".into(),
            });
        };
        let rope = RotaryEmbedding::new(&cfg.rope);
        Ok(Self {
            cfg,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            dtype,
            device: device.clone(),
        })
    }

    /// The dtype the model computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embeddings, rotary tables and mask of one forward pass: what every layer needs.
    /// Reads (does not extend) the cache's length as the position offset.
    pub fn prepare(&self, input_ids: &Tensor, fw: &Forward<'_>) -> Result<Prepared> {
        let (b, t) = input_ids.dims2()?;
        if t == 0 {
            return Err(Error::Generation(
                "empty input: at least one token is needed".into(),
            ));
        }
        let offset = fw.cache.as_ref().map(|c| c.seq_len()).unwrap_or(0);
        let max_id = input_ids
            .flatten_all()?
            .max(0)?
            .to_dtype(DType::U32)?
            .to_scalar::<u32>()?;
        if max_id as usize >= self.cfg.vocab_size {
            return Err(Error::Generation(format!(
                "token id {max_id} is outside the vocabulary of {} tokens",
                self.cfg.vocab_size
            )));
        }
        let x0 = self
            .embed_tokens
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        let (cos, sin) = match fw.segments {
            None => self.rope.cos_sin(offset, t, self.dtype, &self.device)?,
            Some(segs) => {
                if offset > 0 {
                    return Err(Error::Generation(
                        "packed segments cannot be used with a KV cache".into(),
                    ));
                }
                if segs.len() != b
                    || segs
                        .iter()
                        .any(|r| r.iter().sum::<usize>() != t || r.contains(&0))
                {
                    return Err(Error::Generation(format!(
                        "segments {segs:?} do not split {b} rows of {t} tokens into non-empty sequences"
                    )));
                }
                let mut cos = Vec::with_capacity(b);
                let mut sin = Vec::with_capacity(b);
                for row in segs {
                    let (c, s) = self.rope.cos_sin_segments(row, self.dtype, &self.device)?;
                    cos.push(c);
                    sin.push(s);
                }
                (Tensor::stack(&cos, 0)?, Tensor::stack(&sin, 0)?)
            }
        };
        let windows = if fw.train && offset == 0 && self.device.is_cuda() {
            attention_windows(
                b,
                t,
                self.cfg.sliding_window,
                fw.attention_mask,
                fw.segments,
                &self.device,
            )?
        } else {
            None
        };
        let mask = AttentionMask::lazy(
            b,
            t,
            offset,
            self.cfg.sliding_window,
            fw.attention_mask,
            fw.segments,
            &self.device,
            windows,
        )?;
        Ok(Prepared { x0, cos, sin, mask })
    }

    /// Runs decoder layer `l` on `x` [B, T, H] with the tables of `p` and the layer's SO(8)
    /// blend matrix `gate` (if any). No cache: this is what training and recomputation use.
    pub fn layer_forward(
        &self,
        l: usize,
        x: &Tensor,
        p: &Prepared,
        gate: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        self.layer_step(l, x, p, gate, train, None)
    }

    fn layer_step(
        &self,
        l: usize,
        x: &Tensor,
        p: &Prepared,
        gate: Option<&Tensor>,
        train: bool,
        cache: Option<&mut Cache>,
    ) -> Result<Tensor> {
        let layer = self.layers.get(l).ok_or_else(|| {
            Error::Generation(format!(
                "layer {l} does not exist; the model has {} layers",
                self.layers.len()
            ))
        })?;
        let ctx = AttnCtx {
            cos: &p.cos,
            sin: &p.sin,
            mask: &p.mask,
            gate,
            train,
            layer: l,
        };
        layer.forward(x, &ctx, cache)
    }

    /// The final RMSNorm applied to the last layer's output.
    pub fn final_norm(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.norm.forward(x, train)
    }

    /// Final hidden states `[B, T, H]` after the last RMSNorm.
    pub fn hidden_states(&self, input_ids: &Tensor, mut fw: Forward<'_>) -> Result<Tensor> {
        let p = self.prepare(input_ids, &fw)?;
        let mut x = p.x0.clone();
        for l in 0..self.layers.len() {
            let gate = fw
                .gates
                .and_then(|g| g.layers.get(l))
                .and_then(|m| m.as_ref());
            x = self.layer_step(l, &x, &p, gate, fw.train, fw.cache.as_deref_mut())?;
        }
        if let Some(c) = fw.cache.as_deref_mut() {
            c.advance(input_ids.dim(1)?);
        }
        self.final_norm(&x, fw.train)
    }

    /// Logits (f32) for hidden states `[B, T, H]` → `[B, T, V]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, t, _) = hidden.dims3()?;
        let y = self.head(hidden)?;
        Ok(y.to_dtype(DType::F32.max_precision(self.dtype))?.reshape((
            b,
            t,
            self.cfg.vocab_size,
        ))?)
    }

    /// The logits `[B, T, V]` for [`crate::loss::shifted_cross_entropy`]: as [`Self::logits`],
    /// but left in the model's dtype where the fused cross-entropy takes them (on CUDA: it
    /// computes in f32 from bf16 logits, so no f32 copy of the logits and their gradient).
    pub fn logits_for_loss(&self, hidden: &Tensor) -> Result<Tensor> {
        if !crate::fused::applies(hidden) {
            return self.logits(hidden);
        }
        let (b, t, _) = hidden.dims3()?;
        Ok(self.head(hidden)?.reshape((b, t, self.cfg.vocab_size))?)
    }

    /// `hidden [B, T, H]` times the LM head: `[B·T, V]` in the model's dtype.
    fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let x = hidden.reshape((b * t, h))?;
        // While training, the frozen head gets no weight-sized gradient (see `frozen_matmul`).
        Ok(if crate::linear::is_frozen_on_tracked(&x, &self.lm_head) {
            crate::linear::frozen_matmul(&x.contiguous()?, &self.lm_head)?
        } else {
            match crate::matvec::matvec(&x, &self.lm_head)? {
                Some(y) => y,
                None => x.matmul(&self.lm_head.t()?)?,
            }
        })
    }

    /// Logits at every position: `[B, T, V]`.
    pub fn forward(&self, input_ids: &Tensor, fw: Forward<'_>) -> Result<Tensor> {
        let h = self.hidden_states(input_ids, fw)?;
        self.logits(&h)
    }

    /// Logits of the last position only: `[B, V]` (what generation needs).
    pub fn forward_last(&self, input_ids: &Tensor, fw: Forward<'_>) -> Result<Tensor> {
        let h = self.hidden_states(input_ids, fw)?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?;
        Ok(self.logits(&last)?.squeeze(1)?)
    }

    /// True if and only if a KV cache of `cached` positions must be recomputed before running a
    /// sequence of `total` positions: LongRoPE switches from short to long factors once the
    /// sequence outgrows the original context, and (as transformers' Phi-3 generation does)
    /// keys cached with short factors are then re-encoded with long ones, once.
    pub fn rope_switch_invalidates(&self, cached: usize, total: usize) -> bool {
        match &self.cfg.rope.scaling {
            crate::config::RopeScaling::LongRope {
                original_max_position_embeddings: o,
                ..
            } => cached > 0 && cached <= *o && total > *o,
            _ => false,
        }
    }

    /// Every linear layer, in layer order.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v = Vec::new();
        for l in &self.layers {
            match &l.self_attn.qkv {
                Qkv::Fused(x) => v.push(x),
                Qkv::Separate(q, k, vv) => v.extend([q, k, vv]),
            }
            v.push(&l.self_attn.o_proj);
            match &l.mlp.up {
                Up::Fused(x) => v.push(x),
                Up::Separate(g, u) => v.extend([g, u]),
            }
            v.push(&l.mlp.down_proj);
        }
        v
    }

    /// Every linear layer, mutably (to attach or merge LoRA adapters).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v = Vec::new();
        for l in &mut self.layers {
            match &mut l.self_attn.qkv {
                Qkv::Fused(x) => v.push(x),
                Qkv::Separate(q, k, vv) => v.extend([q, k, vv]),
            }
            v.push(&mut l.self_attn.o_proj);
            match &mut l.mlp.up {
                Up::Fused(x) => v.push(x),
                Up::Separate(g, u) => v.extend([g, u]),
            }
            v.push(&mut l.mlp.down_proj);
        }
        v
    }

    /// All weights under their HF names (LoRA merged), as a checkpoint would hold them.
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                l.input_layernorm.weight.clone(),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                l.post_attention_layernorm.weight.clone(),
            ));
        }
        for lin in self.linears() {
            out.push((format!("{}.weight", lin.name), lin.merged_weight()?));
            if let Some(b) = &lin.bias {
                out.push((format!("{}.bias", lin.name), b.clone()));
            }
        }
        out.push(("model.norm.weight".into(), self.norm.weight.clone()));
        if !self.cfg.tie_word_embeddings {
            out.push(("lm_head.weight".into(), self.lm_head.clone()));
        }
        Ok(out)
    }
}
