//! One training layer's self-attention as one autograd node: from the fused projection output
//! `qkv` [B, T, (heads + 2·kv_heads)·hd] to the input of `o_proj` [B, T, heads·hd].
//!
//! Forward: `Q_r = s·rot(Q)`, `K_r = rot(K)` (rotary embedding, `s = 1/√hd`), the scores
//! `S = Q_r K_rᵀ + mask`, `P = softmax(S)`, `Y = P V`, with the query heads that share a kv head
//! stacked so K and V are never copied per head. Backward (P recomputed, nothing of the forward
//! kept): `dV = Pᵀ dY`, `dP = dY Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = s·rot⁻¹(dS K_r)`,
//! `dK = rot⁻¹(dSᵀ Q_r)`, written back into one `[B, T, (heads + 2·kv_heads)·hd]` gradient. On
//! CUDA the rotary embedding and the softmax in both directions are the fused kernels.

use candle_core::{DType, Tensor, D};

use super::{attach1, Backward};
use crate::error::Result;
use crate::fused::HeadLayout;
use crate::layer::{masked_softmax, rope};
use crate::mask::AttentionMask;

/// The head layout of an attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// Attention of `qkv` [B, T, (heads + 2·kv_heads)·hd] with rotary tables `cos`/`sin`
/// ([T, rot/2] or [B, T, rot/2]) and `mask` (additive f32 [B|1, 1, T, T]): [B, T, heads·hd].
///
/// Where the mask has key windows (see [`AttentionMask`]), bf16 on CUDA runs the flash kernels
/// (`fused::flash`), which never write the scores and skip the masked tiles, and the additive
/// mask is never built. A query whose every key is masked then gets zeros (the additive mask
/// gives it the mean of all values; such rows are padding).
pub fn attention(
    qkv: &Tensor,
    heads: Heads,
    cos: &Tensor,
    sin: &Tensor,
    mask: &AttentionMask,
) -> Result<Tensor> {
    match mask.windows() {
        Some(w) if crate::fused::flash::flash_applies(qkv, heads.head_dim) => {
            flash_attention(qkv, heads, cos, sin, w)
        }
        _ => attention_in_chunks(qkv, heads, cos, sin, mask.dense()?, CHUNK_SCORES, true),
    }
}

/// [`attention`] without the CUDA layout kernels (the layout changes and the rotary embedding as
/// tensor ops): what the kernels are checked against (`so8t bench kernels`).
pub fn attention_composed(
    qkv: &Tensor,
    heads: Heads,
    cos: &Tensor,
    sin: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    attention_in_chunks(qkv, heads, cos, sin, mask, CHUNK_SCORES, false)
}

/// [`attention`] with the batch rows taken in chunks of at most `chunk_scores` score elements
/// (at least one row).
fn attention_in_chunks(
    qkv: &Tensor,
    heads: Heads,
    cos: &Tensor,
    sin: &Tensor,
    mask: Option<&Tensor>,
    chunk_scores: usize,
    kernels: bool,
) -> Result<Tensor> {
    let Heads {
        heads: nh,
        head_dim: hd,
        ..
    } = heads;
    // On CUDA the layout changes (with the rotary embedding) are kernels.
    let kernels = kernels && crate::fused::applies(qkv);
    let op = AttentionOp::new(qkv, heads, cos, sin, mask, chunk_scores, kernels)?;
    let x = qkv.detach();
    let y = op.by_rows(&x, |op, rows| {
        let x = rows(&x)?;
        let (b, t, _) = x.dims3()?;
        let r = op.rotated(&x)?;
        let yh = op
            .probabilities(&r)?
            .matmul(&r.v)?
            .reshape((b, nh, t, hd))?;
        op.token_major(&yh)
    })?;
    attach1(qkv, y, op)
}

/// [`attention`] by the flash kernels: the rotated heads (layout kernel), the kernels' output
/// and log-sum-exp kept for the backward pass, the output token-major.
fn flash_attention(
    qkv: &Tensor,
    heads: Heads,
    cos: &Tensor,
    sin: &Tensor,
    windows: &Tensor,
) -> Result<Tensor> {
    let op = AttentionOp::new(qkv, heads, cos, sin, None, CHUNK_SCORES, true)?;
    let x = qkv.detach();
    let (q, r) = op.rotated_heads(&x)?;
    let (o, lse) = crate::fused::flash::forward(&q, &r.k, &r.v, Some(windows))?;
    let y = op.token_major(&o)?;
    let node = FlashOp {
        op,
        windows: windows.clone(),
        lse,
    };
    attach1(qkv, y, node)
}

/// The flash attention node's backward pass: what the forward kept.
struct FlashOp {
    op: AttentionOp,
    windows: Tensor,
    /// Each query row's log-sum-exp [B, heads, T].
    lse: Tensor,
}

impl Backward for FlashOp {
    fn name(&self) -> &'static str {
        "flash-attention"
    }

    fn backward(
        &self,
        inputs: &[Tensor],
        _needs: &[bool],
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<Vec<Option<Tensor>>> {
        let grad = || -> Result<Tensor> {
            let op = &self.op;
            let (q, r) = op.rotated_heads(&inputs[0])?;
            let dy = dy.contiguous()?;
            let dyh = op.head_first(&dy)?;
            let (dq, dk, dv) = crate::fused::flash::backward(
                &q,
                &r.k,
                &r.v,
                Some(&self.windows),
                y,
                &self.lse,
                &dy,
                &dyh,
            )?;
            let dq = dq.to_dtype(dk.dtype())?;
            let Heads {
                heads: nh,
                kv_heads: nkv,
                ..
            } = op.heads;
            let l = op.layout([nh, nkv, nkv], op.scale(), true);
            let tables = Some((&op.cos, &op.sin));
            crate::fused::merge_heads([Some(&dq), Some(&dk), Some(&dv)], tables, l)?.ok_or_else(
                || candle_core::Error::Msg("the layout kernels did not apply".into()).into(),
            )
        };
        let d = grad().map_err(|e| candle_core::Error::Msg(format!("{}: {e}", self.name())))?;
        Ok(vec![Some(d)])
    }
}

/// Elements of the scores of one chunk of batch rows (bf16: 128 MiB): the attention runs over
/// the batch in chunks this size so that its `[rows, heads, T, T]` temporaries stay bounded.
const CHUNK_SCORES: usize = 1 << 26;

#[derive(Clone)]
struct AttentionOp {
    heads: Heads,
    chunk_scores: usize,
    /// The fused layout kernels (CUDA) instead of tensor ops.
    kernels: bool,
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
}

/// The rotated, head-first projections.
struct Rotated {
    /// `s·rot(Q)` [B, kv_heads, group·T, hd] (the heads of a group stacked).
    q: Tensor,
    /// `rot(K)` [B, kv_heads, T, hd].
    k: Tensor,
    /// V [B, kv_heads, T, hd].
    v: Tensor,
}

impl AttentionOp {
    /// The op for `qkv` (its width checked against `heads`); with `kernels` (the CUDA layout
    /// kernels) the rotary tables become the f32 the kernels take.
    fn new(
        qkv: &Tensor,
        heads: Heads,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        chunk_scores: usize,
        kernels: bool,
    ) -> Result<Self> {
        let (_, _, w) = qkv.dims3()?;
        let Heads {
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
        } = heads;
        if nkv == 0 || !nh.is_multiple_of(nkv) || w != (nh + 2 * nkv) * hd {
            return Err(candle_core::Error::Msg(format!(
                "attention: qkv width {w} does not fit {heads:?}"
            ))
            .into());
        }
        let table = |c: &Tensor| -> Result<Tensor> {
            Ok(if kernels {
                c.to_dtype(DType::F32)?.contiguous()?
            } else {
                c.clone()
            })
        };
        Ok(Self {
            heads,
            chunk_scores,
            kernels,
            cos: table(cos)?,
            sin: table(sin)?,
            mask: mask.cloned(),
        })
    }

    /// `f` over chunks of the batch rows of `x` [B, T, ..], the results concatenated along the
    /// batch: `f` gets the op restricted to the chunk (its rows of the mask and of per-row
    /// rotary tables) and a function that takes the chunk's rows of a [B, ..] tensor.
    fn by_rows(
        &self,
        x: &Tensor,
        f: impl Fn(&AttentionOp, &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let per_row = (self.heads.heads * t * t).max(1);
        let chunk = (self.chunk_scores / per_row).clamp(1, b.max(1));
        if chunk >= b {
            return f(self, &|x: &Tensor| Ok(x.clone()));
        }
        // Per-row tables are [B, T, half] (shared ones [T, half]); a per-row mask is [B, 1, T, T].
        let per_row_tables = self.cos.rank() == 3;
        let per_row_mask = match &self.mask {
            Some(m) => m.dim(0)? == b,
            None => false,
        };
        let mut parts = Vec::with_capacity(b.div_ceil(chunk));
        for start in (0..b).step_by(chunk) {
            let n = chunk.min(b - start);
            let rows = |m: &Tensor, per_row: bool| -> Result<Tensor> {
                Ok(if per_row {
                    m.narrow(0, start, n)?
                } else {
                    m.clone()
                })
            };
            let op = AttentionOp {
                cos: rows(&self.cos, per_row_tables)?,
                sin: rows(&self.sin, per_row_tables)?,
                mask: self
                    .mask
                    .as_ref()
                    .map(|m| rows(m, per_row_mask))
                    .transpose()?,
                ..self.clone()
            };
            parts.push(f(&op, &|x: &Tensor| Ok(x.narrow(0, start, n)?))?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    fn scale(&self) -> f64 {
        1.0 / (self.heads.head_dim as f64).sqrt()
    }

    /// The kernels' layout of q/k/v head counts (rotation by −θ with `inverse`).
    fn layout(&self, [q, k, v]: [usize; 3], q_scale: f64, inverse: bool) -> HeadLayout {
        HeadLayout {
            q,
            k,
            v,
            head_dim: self.heads.head_dim,
            q_scale,
            inverse,
        }
    }

    /// Head-first `[B, heads, T, hd]` to token-major `[B, T, heads·hd]`.
    fn token_major(&self, yh: &Tensor) -> Result<Tensor> {
        let (b, nh, t, hd) = yh.dims4()?;
        if self.kernels {
            let l = self.layout([0, 0, nh], 1.0, false);
            if let Some(y) = crate::fused::merge_heads([None, None, Some(yh)], None, l)? {
                return Ok(y);
            }
        }
        Ok(yh.transpose(1, 2)?.reshape((b, t, nh * hd))?)
    }

    /// Token-major `[B, T, heads·hd]` to head-first `[B, heads, T, hd]`.
    fn head_first(&self, y: &Tensor) -> Result<Tensor> {
        let (b, t, _) = y.dims3()?;
        let (nh, hd) = (self.heads.heads, self.heads.head_dim);
        if self.kernels {
            let l = self.layout([0, 0, nh], 1.0, false);
            if let Some([_, _, Some(v)]) = crate::fused::split_heads(y, None, l)? {
                return Ok(v);
            }
        }
        Ok(y.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?)
    }

    /// [`Self::rotated`] with q head-first [B, heads, T, hd] beside it.
    fn rotated_heads(&self, qkv: &Tensor) -> Result<(Tensor, Rotated)> {
        let (b, t, _) = qkv.dims3()?;
        let r = self.rotated(qkv)?;
        let q = r.q.reshape((b, self.heads.heads, t, self.heads.head_dim))?;
        Ok((q, r))
    }

    fn rotated(&self, qkv: &Tensor) -> Result<Rotated> {
        let (b, t, _) = qkv.dims3()?;
        let Heads {
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
        } = self.heads;
        if self.kernels {
            let l = self.layout([nh, nkv, nkv], self.scale(), false);
            let tables = Some((&self.cos, &self.sin));
            if let Some([Some(q), Some(k), Some(v)]) = crate::fused::split_heads(qkv, tables, l)? {
                let q = q.reshape((b, nkv, (nh / nkv) * t, hd))?;
                return Ok(Rotated { q, k, v });
            }
        }
        let x = qkv.contiguous()?.reshape((b, t, nh + 2 * nkv, hd))?;
        let heads_first = |start: usize, n: usize| -> Result<Tensor> {
            Ok(x.narrow(2, start, n)?.transpose(1, 2)?.contiguous()?)
        };
        let q = rope(&heads_first(0, nh)?, &self.cos, &self.sin, true)?;
        let q = (q * self.scale())?.reshape((b, nkv, (nh / nkv) * t, hd))?;
        let k = rope(&heads_first(nh, nkv)?, &self.cos, &self.sin, true)?;
        let v = heads_first(nh + nkv, nkv)?;
        Ok(Rotated { q, k, v })
    }

    /// `P = softmax(Q_r K_rᵀ + mask)` [B, kv_heads, group·T, T].
    fn probabilities(&self, r: &Rotated) -> Result<Tensor> {
        let (b, nkv, rows, _) = r.q.dims4()?;
        let s = r.k.dim(2)?;
        let nh = self.heads.heads;
        let scores =
            r.q.matmul(&r.k.t()?)?
                .reshape((b, nh, rows / (nh / nkv), s))?;
        let p = match crate::fused::softmax(&scores, self.mask.as_ref())? {
            Some(p) => p,
            None => masked_softmax(scores, self.mask.as_ref(), true)?,
        };
        Ok(p.reshape((b, nkv, rows, s))?)
    }
}

/// `dS = P ⊙ (dP − rowsum(P ⊙ dP))` over the last dim.
fn softmax_grad(p: &Tensor, dp: &Tensor) -> Result<Tensor> {
    if let Some(ds) = crate::fused::softmax_backward(p, dp)? {
        return Ok(ds);
    }
    let s = (dp * p)?.sum_keepdim(D::Minus1)?;
    Ok((p * dp.broadcast_sub(&s)?)?)
}

impl Backward for AttentionOp {
    fn name(&self) -> &'static str {
        "composite-attention"
    }

    fn backward(
        &self,
        inputs: &[Tensor],
        _needs: &[bool],
        _output: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<Vec<Option<Tensor>>> {
        let dy = dy.contiguous()?;
        let grad = |op: &AttentionOp, qkv: &Tensor, dy: &Tensor| -> Result<Tensor> {
            let (b, t, _) = qkv.dims3()?;
            let Heads {
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
            } = self.heads;
            let r = op.rotated(qkv)?;
            let p = op.probabilities(&r)?;
            let dyh = op.head_first(dy)?.reshape((b, nkv, (nh / nkv) * t, hd))?;
            let dv = p.t()?.matmul(&dyh)?; // [b, nkv, s, hd]
            let dp = dyh.matmul(&r.v.t()?)?; // [b, nkv, group·t, s]
            let ds = softmax_grad(&p, &dp)?;
            drop((p, dp));
            let dq = ds.matmul(&r.k)?.reshape((b, nh, t, hd))?;
            let dk = ds.t()?.matmul(&r.q)?;
            if op.kernels {
                let l = op.layout([nh, nkv, nkv], op.scale(), true);
                let tables = Some((&op.cos, &op.sin));
                if let Some(d) =
                    crate::fused::merge_heads([Some(&dq), Some(&dk), Some(&dv)], tables, l)?
                {
                    return Ok(d);
                }
            }
            let dq = (dq * op.scale())?;
            let back = op.sin.neg()?;
            let dq = rope(&dq, &op.cos, &back, true)?;
            let dk = rope(&dk, &op.cos, &back, true)?;
            let token_major =
                |x: Tensor| -> Result<Tensor> { Ok(x.transpose(1, 2)?.contiguous()?) };
            let d = Tensor::cat(&[token_major(dq)?, token_major(dk)?, token_major(dv)?], 2)?;
            Ok(d.reshape((b, t, (nh + 2 * nkv) * hd))?)
        };
        let d = self
            .by_rows(&inputs[0], |op, rows| {
                grad(op, &rows(&inputs[0])?, &rows(&dy)?)
            })
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", self.name())))?;
        Ok(vec![Some(d)])
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::*;

    /// Chunks of one batch row give the value and gradient of the whole batch at once, with a
    /// per-row mask and per-row (packed) rotary tables, grouped-query heads and a partial
    /// rotary width.
    #[test]
    fn chunked_rows_equal_the_whole_batch() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, heads) = (
            3,
            5,
            Heads {
                heads: 4,
                kv_heads: 2,
                head_dim: 6,
            },
        );
        let w = (heads.heads + 2 * heads.kv_heads) * heads.head_dim;
        let qkv = Var::from_tensor(&Tensor::randn(0f64, 1.0, (b, t, w), &dev)?)?;
        let ang = Tensor::randn(0f64, 1.0, (b, t, 2), &dev)?;
        let (cos, sin) = (ang.cos()?, ang.sin()?);
        let mut m = vec![0f32; b * t * t];
        for (k, v) in m.iter_mut().enumerate() {
            let (row, i, j) = (k / (t * t), k / t % t, k % t);
            if j > i || (row == 1 && j + 2 < i) {
                *v = f32::MIN;
            }
        }
        let mask = Tensor::from_vec(m, (b, 1, t, t), &dev)?;
        let up = Tensor::randn(0f64, 1.0, (b, t, heads.heads * heads.head_dim), &dev)?;
        let mut results = Vec::new();
        for budget in [usize::MAX, 1] {
            let y = attention_in_chunks(
                qkv.as_tensor(),
                heads,
                &cos,
                &sin,
                Some(&mask),
                budget,
                true,
            )?;
            let g = (&y * &up)?.sum_all()?.backward()?;
            let gq = g.get(qkv.as_tensor()).expect("a gradient").clone();
            results.push((y, gq));
        }
        let diff = |a: &Tensor, b: &Tensor| -> Result<f64> {
            Ok((a - b)?
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?)
        };
        assert!(diff(&results[0].0, &results[1].0)? < 1e-12);
        assert!(diff(&results[0].1, &results[1].1)? < 1e-12);
        assert!(results[0].1.abs()?.max_all()?.to_scalar::<f64>()? > 0.1);
        Ok(())
    }
}
