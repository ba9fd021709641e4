//! One decoder layer of `Phi3ForCausalLM` / `LlamaForCausalLM`: RMSNorm, self-attention (with the
//! SO(8) gate before `o_proj`, spec §1) and the gated MLP, each with a residual.
//!
//! Follows `Phi3DecoderLayer` in `transformers/models/phi3/modeling_phi3.py` and
//! `LlamaDecoderLayer` in `.../llama/modeling_llama.py` (eager attention).

use candle_core::{DType, Tensor, D};

use crate::cache::Cache;
use crate::error::Result;
use crate::linear::Linear;
use crate::so8::apply_blocks;

/// RMSNorm: `w · x / sqrt(mean(x²) + ε)` computed in f32.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// Scale [H].
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// A norm with scale `weight` [H] and `eps`.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// Normalizes `x` [.., H]; `train` uses the differentiable (non-fused) kernel.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train && x.dtype() == DType::F32 {
            return Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                &self.weight,
                self.eps as f32,
            )?);
        }
        let dt = x.dtype();
        let xf = x.to_dtype(DType::F32.max_precision(dt))?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?.to_dtype(dt)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

pub(crate) trait MaxPrecision {
    fn max_precision(self, other: DType) -> DType;
}
impl MaxPrecision for DType {
    fn max_precision(self, other: DType) -> DType {
        if other == DType::F64 {
            DType::F64
        } else {
            self
        }
    }
}

/// Query/key/value projections.
#[derive(Debug, Clone)]
pub enum Qkv {
    /// Phi-3 `qkv_proj` [(nh + 2·nkv)·hd, H].
    Fused(Linear),
    /// Llama `q_proj`, `k_proj`, `v_proj`.
    Separate(Linear, Linear, Linear),
}

/// MLP input projections.
#[derive(Debug, Clone)]
pub enum Up {
    /// Phi-3 `gate_up_proj` [2·I, H]: gate rows first, then up.
    Fused(Linear),
    /// Llama `gate_proj`, `up_proj`.
    Separate(Linear, Linear),
}

/// Self-attention of one layer.
#[derive(Debug, Clone)]
pub struct Attention {
    /// q/k/v projections.
    pub qkv: Qkv,
    /// Output projection (the gate acts on its input).
    pub o_proj: Linear,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
}

/// The feed-forward block: `down(silu(gate(x)) · up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// Gate and up projections.
    pub up: Up,
    /// Down projection.
    pub down_proj: Linear,
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// MLP.
    pub mlp: Mlp,
}

/// What every layer of one forward pass shares: rotary tables, mask, the layer's gate.
pub(crate) struct AttnCtx<'a> {
    pub(crate) cos: &'a Tensor,
    pub(crate) sin: &'a Tensor,
    pub(crate) mask: Option<&'a Tensor>,
    pub(crate) gate: Option<&'a Tensor>,
    pub(crate) train: bool,
    pub(crate) layer: usize,
}

/// `[x1, x2]` → `[-x2, x1]` over the last dimension.
fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let h = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, h)?;
    let x2 = x.narrow(D::Minus1, h, h)?;
    Ok(Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?)
}

/// `cos`/`sin` are `[T, rot/2]`, or `[B, T, rot/2]` for packed rows (per-row positions).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, train: bool) -> Result<Tensor> {
    let rot = cos.dim(D::Minus1)? * 2;
    let d = x.dim(D::Minus1)?;
    let apply = |x: &Tensor| -> Result<Tensor> {
        Ok(if train && cos.rank() == 3 {
            let c = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
            let s = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
            (x.broadcast_mul(&c)? + rotate_half(x)?.broadcast_mul(&s)?)?
        } else if train {
            candle_nn::rotary_emb::rope_slow(x, cos, sin)?
        } else {
            candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?
        })
    };
    if rot == d {
        return apply(x);
    }
    let head = apply(&x.narrow(D::Minus1, 0, rot)?.contiguous()?)?;
    let pass = x.narrow(D::Minus1, rot, d - rot)?;
    Ok(Tensor::cat(&[&head, &pass], D::Minus1)?)
}

impl DecoderLayer {
    /// `x + attn(norm(x))`, then `+ mlp(norm(·))`: the layer's output [B, T, H].
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        ctx: &AttnCtx<'_>,
        cache: Option<&mut Cache>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x, ctx.train)?;
        let x = (x + self.self_attn.forward(&h, ctx, cache)?)?;
        let h = self.post_attention_layernorm.forward(&x, ctx.train)?;
        Ok((&x + self.mlp.forward(&h, ctx.train)?)?)
    }
}

impl Attention {
    fn forward(&self, x: &Tensor, ctx: &AttnCtx<'_>, cache: Option<&mut Cache>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (q, k, v) = match &self.qkv {
            Qkv::Fused(l) => {
                let qkv = l.forward(x, ctx.train)?;
                (
                    qkv.narrow(D::Minus1, 0, nh * hd)?,
                    qkv.narrow(D::Minus1, nh * hd, nkv * hd)?,
                    qkv.narrow(D::Minus1, (nh + nkv) * hd, nkv * hd)?,
                )
            }
            Qkv::Separate(ql, kl, vl) => (
                ql.forward(x, ctx.train)?,
                kl.forward(x, ctx.train)?,
                vl.forward(x, ctx.train)?,
            ),
        };
        let q = q.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let q = rope(&q, ctx.cos, ctx.sin, ctx.train)?;
        let k = rope(&k, ctx.cos, ctx.sin, ctx.train)?;
        let (k, v) = match cache {
            Some(c) => c.append(ctx.layer, k, v)?,
            None => (k, v),
        };
        let s = k.dim(2)?;
        let rep = nh / nkv;
        // Group the query heads that share a kv head, so k and v are never copied per head.
        let qg = q.reshape((b, nkv, rep * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (qg.matmul(&k.t()?)? * scale)?.reshape((b, nh, t, s))?;
        let dt = att.dtype();
        let mut att = att.to_dtype(DType::F32.max_precision(dt))?;
        if let Some(m) = ctx.mask {
            att = att.broadcast_add(&m.to_dtype(att.dtype())?)?;
        }
        let att = if ctx.train {
            candle_nn::ops::softmax(&att, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&att)?
        };
        let att = att.to_dtype(dt)?.reshape((b, nkv, rep * t, s))?;
        let y = att.matmul(&v.contiguous()?)?; // [b, nkv, rep·t, hd]
        let y = y
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        let y = match ctx.gate {
            Some(m) => apply_blocks(&y, m)?,
            None => y,
        };
        self.o_proj.forward(&y, ctx.train)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (g, u) = match &self.up {
            Up::Fused(l) => {
                let gu = l.forward(x, train)?;
                let i = gu.dim(D::Minus1)? / 2;
                (gu.narrow(D::Minus1, 0, i)?, gu.narrow(D::Minus1, i, i)?)
            }
            Up::Separate(gl, ul) => (gl.forward(x, train)?, ul.forward(x, train)?),
        };
        let h = (g.silu()? * u)?;
        self.down_proj.forward(&h, train)
    }
}
