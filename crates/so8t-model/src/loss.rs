//! Language-model losses: the shifted, masked cross-entropy of SFT (spec §3, "CE over assistant
//! tokens only").

use candle_core::{DType, Tensor, D};

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
