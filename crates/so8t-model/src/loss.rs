//! Language-model losses: the shifted, masked cross-entropy of SFT (spec §3, "CE over assistant
//! tokens only").

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Mean next-token cross-entropy: position t predicts token t+1, counted only where the target
/// has `label_mask = 1` and `attention_mask = 1`. `logits` [B, T, V]; the others [B, T].
/// Errors if no position is counted.
pub fn shifted_cross_entropy(
    logits: &Tensor,
    input_ids: &Tensor,
    label_mask: &Tensor,
    attention_mask: &Tensor,
) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    if t < 2 {
        return Err(Error::Generation(
            "cross-entropy needs at least two positions".into(),
        ));
    }
    if logits.device().is_cpu() && logits.dtype() == DType::F32 {
        return fused_cross_entropy(logits, input_ids, label_mask, attention_mask);
    }
    if crate::fused::applies(logits) {
        return device_cross_entropy(logits, input_ids, label_mask, attention_mask);
    }
    let dt = logits.dtype();
    let pred = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?;
    let target = input_ids
        .narrow(1, 1, t - 1)?
        .reshape(b * (t - 1))?
        .to_dtype(DType::U32)?;
    let w = (label_mask.to_dtype(dt)? * attention_mask.to_dtype(dt)?)?
        .narrow(1, 1, t - 1)?
        .reshape(b * (t - 1))?;
    let logp = candle_nn::ops::log_softmax(&pred, D::Minus1)?;
    let picked = logp.gather(&target.unsqueeze(1)?, 1)?.squeeze(1)?;
    let count = w.sum_all()?;
    if count.to_dtype(DType::F64)?.to_scalar::<f64>()? <= 0.0 {
        return Err(Error::Generation(
            "no labelled target tokens in the batch".into(),
        ));
    }
    Ok(((picked * w)?.sum_all()?.neg()? / count)?)
}

/// The CUDA path of [`shifted_cross_entropy`]: targets and weights are built on the device
/// (every row's last position weighted 0, so the logits need no shifted copy), one read from
/// the device checks the count and the largest target, and a fused kernel per direction
/// computes the per-row losses ([`crate::fused::cross_entropy_rows`]).
fn device_cross_entropy(
    logits: &Tensor,
    input_ids: &Tensor,
    label_mask: &Tensor,
    attention_mask: &Tensor,
) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let dev = logits.device();
    let zeros_u = Tensor::zeros((b, 1), DType::U32, dev)?;
    let zeros_f = Tensor::zeros((b, 1), DType::F32, dev)?;
    let ids = input_ids.to_dtype(DType::U32)?;
    let targets = Tensor::cat(&[&ids.narrow(1, 1, t - 1)?, &zeros_u], 1)?.reshape(b * t)?;
    let w = (label_mask.to_dtype(DType::F32)? * attention_mask.to_dtype(DType::F32)?)?;
    let w = Tensor::cat(&[&w.narrow(1, 1, t - 1)?, &zeros_f], 1)?.reshape(b * t)?;
    let stats = Tensor::stack(&[w.sum_all()?, ids.max_all()?.to_dtype(DType::F32)?], 0)?
        .to_vec1::<f32>()?;
    if stats[0] <= 0.0 {
        return Err(Error::Generation(
            "no labelled target tokens in the batch".into(),
        ));
    }
    if stats[1] as usize >= v {
        return Err(Error::Generation(format!(
            "target token {} is outside the vocabulary of {v}",
            stats[1]
        )));
    }
    let w = (w / f64::from(stats[0]))?;
    let rows = crate::fused::cross_entropy_rows(&logits.reshape((b * t, v))?, &targets, &w)?
        .ok_or_else(|| Error::Device("the fused cross-entropy does not apply here".into()))?;
    Ok(rows.sum_all()?)
}

/// The CPU f32 path of [`shifted_cross_entropy`]: one custom op over the `[B·T, V]` logits that
/// never materializes log-probabilities; its backward pass writes `w·(softmax − onehot)` in one
/// go (the composed ops allocate several logits-sized temporaries in each direction).
fn fused_cross_entropy(
    logits: &Tensor,
    input_ids: &Tensor,
    label_mask: &Tensor,
    attention_mask: &Tensor,
) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let lm = label_mask.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let am = attention_mask.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut targets = vec![0u32; b * t];
    let mut weights = vec![0f64; b * t];
    for r in 0..b {
        for p in 0..t - 1 {
            targets[r * t + p] = ids[r][p + 1];
            weights[r * t + p] = lm[r][p + 1] * am[r][p + 1];
        }
    }
    let count: f64 = weights.iter().sum();
    if count <= 0.0 {
        return Err(Error::Generation(
            "no labelled target tokens in the batch".into(),
        ));
    }
    if let Some(&bad) = targets.iter().find(|&&x| x as usize >= v) {
        return Err(Error::Generation(format!(
            "target token {bad} is outside the vocabulary of {v}"
        )));
    }
    let op = ShiftedCe {
        targets,
        weights: weights.iter().map(|w| (w / count) as f32).collect(),
        vocab: v,
    };
    Ok(logits.reshape((b * t, v))?.contiguous()?.apply_op1(op)?)
}

/// `−Σ_i w_i · log_softmax(x_i)[target_i]` over the rows of f32 logits [N, V]; the weights
/// already include the division by the count.
struct ShiftedCe {
    targets: Vec<u32>,
    weights: Vec<f32>,
    vocab: usize,
}

/// `(max, log Σ exp(x − max))` of one row (the sum of up to V terms accumulated in f64).
fn row_lse(row: &[f32]) -> (f32, f32) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let s: f64 = row.iter().map(|&x| f64::from((x - m).exp())).sum();
    (m, s.ln() as f32)
}

impl CustomOp1 for ShiftedCe {
    fn name(&self) -> &'static str {
        "shifted-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), Some((a, e))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("shifted-cross-entropy: needs contiguous f32 logits")
        };
        let x = &x[a..e];
        let total: f64 = x
            .par_chunks(self.vocab)
            .zip(self.weights.par_iter().zip(self.targets.par_iter()))
            .filter(|(_, (&w, _))| w != 0.0)
            .map(|(row, (&w, &tg))| {
                let (m, lse) = row_lse(row);
                f64::from(w) * f64::from(m + lse - row[tg as usize])
            })
            .sum();
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(self.vocab)
            .zip(xs.par_chunks(self.vocab))
            .zip(self.weights.par_iter().zip(self.targets.par_iter()))
            .filter(|(_, (&w, _))| w != 0.0)
            .for_each(|((o, row), (&w, &tg))| {
                let (m, lse) = row_lse(row);
                let c = g * w;
                for (o, &xv) in o.iter_mut().zip(row) {
                    *o = c * (xv - m - lse).exp();
                }
                o[tg as usize] -= c;
            });
        Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
    }
}
