//! One decoder layer of `Phi3ForCausalLM` / `LlamaForCausalLM`: RMSNorm, self-attention (with the
//! SO(8) gate before `o_proj`, spec §1) and the gated MLP, each with a residual.
//!
//! Follows `Phi3DecoderLayer` in `transformers/models/phi3/modeling_phi3.py` and
//! `LlamaDecoderLayer` in `.../llama/modeling_llama.py` (eager attention).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::cache::Cache;
use crate::error::Result;
use crate::linear::Linear;
use crate::so8::apply_blocks;
use crate::train_ops::is_cpu_f32 as cpu_f32;

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
        if let Some(y) = crate::fused::rms_norm(x, &self.weight, self.eps as f32)? {
            return Ok(y);
        }
        if !train && x.dtype() == DType::F32 {
            return Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                &self.weight,
                self.eps as f32,
            )?);
        }
        if x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && !self.weight.track_op()
        {
            let op = TrainRmsNorm {
                weight: self.weight.to_vec1::<f32>()?,
                eps: self.eps as f32,
            };
            return Ok(x.contiguous()?.apply_op1(op)?);
        }
        let dt = x.dtype();
        let xf = x.to_dtype(DType::F32.max_precision(dt))?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?.to_dtype(dt)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

/// RMSNorm of contiguous f32 `x` [.., H] by a frozen f32 scale, with a backward pass for `x`
/// alone: with r = 1/sqrt(mean(x²) + ε) and n = x·r, `dx = r·(g·w − n·mean(g·w·n))`. One op in
/// each direction where the composed norm records seven.
struct TrainRmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl TrainRmsNorm {
    /// 1/sqrt(mean(x²) + ε) of one row, accumulated in f64.
    fn inv_rms(&self, x: &[f32]) -> f32 {
        let ms = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64;
        (1.0 / (ms + f64::from(self.eps)).sqrt()) as f32
    }
}

impl CustomOp1 for TrainRmsNorm {
    fn name(&self) -> &'static str {
        "train-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), Some((a, e))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("train-rms-norm: needs contiguous f32 input")
        };
        let h = self.weight.len();
        if l.dims().last() != Some(&h) {
            candle_core::bail!("train-rms-norm: x is {:?}, the scale has {h}", l.dims())
        }
        let mut out = vec![0f32; e - a];
        out.par_chunks_mut(h)
            .zip(x[a..e].par_chunks(h))
            .for_each(|(y, x)| {
                let r = self.inv_rms(x);
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(&self.weight) {
                    *y = x * r * w;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let h = self.weight.len();
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let gs = g.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(h)
            .zip(xs.par_chunks(h).zip(gs.par_chunks(h)))
            .for_each(|(dx, (x, g))| {
                let r = self.inv_rms(x);
                let dot: f64 = x
                    .iter()
                    .zip(g)
                    .zip(&self.weight)
                    .map(|((&x, &g), &w)| f64::from(g * w) * f64::from(x * r))
                    .sum();
                let mean = (dot / h as f64) as f32;
                for (((d, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(&self.weight) {
                    *d = r * (g * w - x * r * mean);
                }
            });
        Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
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
    pub(crate) mask: &'a crate::mask::AttentionMask,
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
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, train: bool) -> Result<Tensor> {
    if let Some(y) = crate::fused::rope(x, cos, sin)? {
        return Ok(y);
    }
    let rot = cos.dim(D::Minus1)? * 2;
    let d = x.dim(D::Minus1)?;
    let apply = |x: &Tensor| -> Result<Tensor> {
        Ok(
            if train && x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4 {
                x.contiguous()?
                    .apply_op1(TrainRope::new(cos, sin, false)?)?
            } else if train && cos.rank() == 3 {
                let c = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
                let s = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
                (x.broadcast_mul(&c)? + rotate_half(x)?.broadcast_mul(&s)?)?
            } else if train {
                candle_nn::rotary_emb::rope_slow(x, cos, sin)?
            } else {
                candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?
            },
        )
    };
    if rot == d {
        return apply(x);
    }
    let head = apply(&x.narrow(D::Minus1, 0, rot)?.contiguous()?)?;
    let pass = x.narrow(D::Minus1, rot, d - rot)?;
    Ok(Tensor::cat(&[&head, &pass], D::Minus1)?)
}

/// Rotary embedding of contiguous f32 `x` [B, heads, T, 2·half] by `cos`/`sin` ([T, half], or
/// [B, T, half] for packed rows), as one op with a backward pass: per pair (x_i, x_{i+half}) it
/// rotates by the angle θ (`inverse`: by −θ, which is the backward pass). The composed form
/// records seven ops (two `cat`s, `narrow`s, `neg`, products and a sum) on q and on k.
pub(crate) struct TrainRope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// 1 when the tables are shared by all rows, else B.
    table_rows: usize,
    t: usize,
    half: usize,
    inverse: bool,
}

impl TrainRope {
    fn new(cos: &Tensor, sin: &Tensor, inverse: bool) -> Result<Self> {
        let (table_rows, t, half) = match cos.dims() {
            &[t, h] => (1, t, h),
            &[b, t, h] => (b, t, h),
            d => return Err(candle_core::Error::Msg(format!("rope: cos is {d:?}")).into()),
        };
        let flat = |x: &Tensor| -> Result<Vec<f32>> {
            Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        Ok(Self {
            cos: flat(cos)?,
            sin: flat(sin)?,
            table_rows,
            t,
            half,
            inverse,
        })
    }
}

impl CustomOp1 for TrainRope {
    fn name(&self) -> &'static str {
        "train-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), Some((a, e))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("train-rope: needs contiguous f32 input")
        };
        let (b, heads, t, d) = l.shape().dims4()?;
        let half = self.half;
        if d != 2 * half || t != self.t || (self.table_rows != 1 && self.table_rows != b) {
            candle_core::bail!(
                "train-rope: x is [{b}, {heads}, {t}, {d}], tables are [{}, {}, {half}]",
                self.table_rows,
                self.t
            )
        }
        let sign = if self.inverse { -1.0f32 } else { 1.0 };
        let mut out = vec![0f32; e - a];
        out.par_chunks_mut(d)
            .zip(x[a..e].par_chunks(d))
            .enumerate()
            .for_each(|(r, (y, x))| {
                let (row, pos) = (r / (heads * t), r % t);
                let base = (if self.table_rows == 1 { 0 } else { row } * t + pos) * half;
                let (c, s) = (&self.cos[base..base + half], &self.sin[base..base + half]);
                for i in 0..half {
                    let (x1, x2, si) = (x[i], x[i + half], sign * s[i]);
                    y[i] = x1 * c[i] - x2 * si;
                    y[i + half] = x2 * c[i] + x1 * si;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // A rotation's transpose is the rotation by the opposite angle.
        let inv = Self {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            inverse: !self.inverse,
            ..*self
        };
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&inv)?))
    }
}

/// Softmax over the last dimension of contiguous f32 scores on the CPU, with a backward pass
/// (`dx = y·(g − Σ g·y)`): one op in each direction where the composed `candle_nn::ops::softmax`
/// records five (max, sub, exp, sum, div) and allocates a score-sized tensor for each.
pub(crate) struct TrainSoftmax;

impl CustomOp1 for TrainSoftmax {
    fn name(&self) -> &'static str {
        "train-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), Some((a, e))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("train-softmax: needs contiguous f32 input")
        };
        let d = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = x[a..e].to_vec();
        out.par_chunks_mut(d).for_each(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for v in row.iter_mut() {
                *v = (*v - m).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let gy = (g * y)?;
        let s = gy.sum_keepdim(D::Minus1)?;
        Ok(Some((gy - y.broadcast_mul(&s)?)?))
    }
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
        let mut qkv_fused = None;
        let (q, k, v) = match &self.qkv {
            Qkv::Fused(l) => {
                let qkv = l.forward(x, ctx.train)?;
                let qkv = qkv_fused.insert(qkv);
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
        // Training: the whole attention as one autograd node (CPU f32: `train_ops`; CUDA:
        // `composite`), else the composed graph below.
        let tracked = q.track_op() || k.track_op() || v.track_op();
        if ctx.train && tracked && cache.is_none() {
            let y = if [&q, &k, &v].iter().all(|x| cpu_f32(x)) {
                let shape = crate::train_ops::AttentionShape {
                    heads: nh,
                    kv_heads: nkv,
                    head_dim: hd,
                };
                Some(crate::train_ops::attention_cpu(
                    &q,
                    &k,
                    &v,
                    ctx.cos,
                    ctx.sin,
                    ctx.mask.dense()?,
                    shape,
                )?)
            } else if crate::composite::applies(&q) {
                let heads = crate::composite::Heads {
                    heads: nh,
                    kv_heads: nkv,
                    head_dim: hd,
                };
                let qkv = match &qkv_fused {
                    Some(x) => x.clone(),
                    None => Tensor::cat(&[&q, &k, &v], D::Minus1)?,
                };
                Some(crate::composite::attention(
                    &qkv, heads, ctx.cos, ctx.sin, ctx.mask,
                )?)
            } else {
                None
            };
            if let Some(y) = y {
                return self.o_proj.forward(&gated(y, ctx)?, ctx.train);
            }
        }
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
        // The scale goes on q [.., t, hd], not on the scores [.., t, s].
        let scale = 1.0 / (hd as f64).sqrt();
        let qg = (q * scale)?.reshape((b, nkv, rep * t, hd))?;
        let att = qg.matmul(&k.t()?)?.reshape((b, nh, t, s))?;
        let mask = ctx.mask.dense()?;
        let att = match crate::fused::softmax(&att, mask)? {
            Some(p) => p,
            None => masked_softmax(att, mask, ctx.train)?,
        };
        let att = att.reshape((b, nkv, rep * t, s))?;
        let y = att.matmul(&v.contiguous()?)?; // [b, nkv, rep·t, hd]
        let y = y
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        self.o_proj.forward(&gated(y, ctx)?, ctx.train)
    }
}

/// The layer's gate (if any) applied to the attention output `y` [.., H]: as one CPU op with its
/// own backward pass when training in f32, else through the composed [`apply_blocks`].
fn gated(y: Tensor, ctx: &AttnCtx<'_>) -> Result<Tensor> {
    Ok(match ctx.gate {
        Some(m) if ctx.train && (y.track_op() || m.track_op()) && cpu_f32(&y) && cpu_f32(m) => {
            crate::train_ops::apply_blocks_cpu(&y, m)?
        }
        Some(m) => match crate::fused::apply_blocks(&y, m)? {
            Some(z) => z,
            None => apply_blocks(&y, m)?,
        },
        None => y,
    })
}

/// Softmax over the last dim of the scores after adding the additive `mask`, in f32 at least;
/// the result in the scores' dtype (composed, where the fused kernel does not apply).
pub(crate) fn masked_softmax(att: Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
    let dt = att.dtype();
    let mut att = att.to_dtype(DType::F32.max_precision(dt))?;
    if let Some(m) = mask {
        att = att.broadcast_add(&m.to_dtype(att.dtype())?)?;
    }
    let att = if train && att.device().is_cpu() && att.dtype() == DType::F32 {
        att.contiguous()?.apply_op1(TrainSoftmax)?
    } else if train {
        candle_nn::ops::softmax(&att, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&att)?
    };
    Ok(att.to_dtype(dt)?)
}

impl Mlp {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (g, u) = match &self.up {
            Up::Fused(l) => {
                let gu = l.forward(x, train)?;
                if let Some(h) = crate::fused::swiglu(&gu)? {
                    return self.down_proj.forward(&h, train);
                }
                let i = gu.dim(D::Minus1)? / 2;
                (gu.narrow(D::Minus1, 0, i)?, gu.narrow(D::Minus1, i, i)?)
            }
            Up::Separate(gl, ul) => (gl.forward(x, train)?, ul.forward(x, train)?),
        };
        let tracked = train && (g.track_op() || u.track_op());
        let h = if tracked && cpu_f32(&g) && cpu_f32(&u) {
            crate::train_ops::swiglu_cpu(&g, &u)?
        } else {
            (g.silu()? * u)?
        };
        self.down_proj.forward(&h, train)
    }
}
