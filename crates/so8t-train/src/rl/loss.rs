//! The policy's per-token outputs on sampled answers and the PPO / GRPO losses over them, as
//! differentiable candle expressions. A batch lays every answer out the same way: the prompt
//! left-padded to `p_len`, then the answer right-padded to `r_len`, so the answers of all rows
//! start at position `p_len` and the logits that score them are positions `p_len − 1 …`.

use candle_core::{DType, Device, Tensor, D};
use so8t_model::so8::GateMatrices;
use so8t_model::{Forward, Model};

use crate::error::Result;
use crate::rl::rollout::PAD;

/// Answers laid out for scoring.
pub struct Layout {
    /// Token ids `[N, p_len + r_len]`.
    pub ids: Tensor,
    /// 1 for real tokens `[N, p_len + r_len]`.
    pub attention: Tensor,
    /// 1 for the answer tokens that count (f32 `[N, r_len]`).
    pub mask: Tensor,
    /// Prompt region length.
    pub p_len: usize,
    /// Answer region length.
    pub r_len: usize,
}

impl Layout {
    /// Lays out (prompt, answer) pairs with the given region lengths (at least the longest).
    pub fn new(
        rows: &[(&[u32], &[u32])],
        p_len: usize,
        r_len: usize,
        dev: &Device,
    ) -> Result<Self> {
        let n = rows.len();
        let width = p_len + r_len;
        let mut ids = Vec::with_capacity(n * width);
        let mut att = Vec::with_capacity(n * width);
        let mut mask = Vec::with_capacity(n * r_len);
        for (p, a) in rows {
            let pad = p_len - p.len();
            ids.extend(std::iter::repeat_n(PAD, pad));
            att.extend(std::iter::repeat_n(0u32, pad));
            ids.extend(*p);
            att.extend(std::iter::repeat_n(1u32, p.len()));
            ids.extend(*a);
            att.extend(std::iter::repeat_n(1u32, a.len()));
            ids.extend(std::iter::repeat_n(PAD, r_len - a.len()));
            att.extend(std::iter::repeat_n(0u32, r_len - a.len()));
            mask.extend((0..r_len).map(|j| if j < a.len() { 1f32 } else { 0.0 }));
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (n, width), dev)?,
            attention: Tensor::from_vec(att, (n, width), dev)?,
            mask: Tensor::from_vec(mask, (n, r_len), dev)?,
            p_len,
            r_len,
        })
    }
}

/// Per-token outputs `[N, r_len]` (f32).
pub struct TokenOutputs {
    /// log π(answer token | prefix) at the sampling temperature.
    pub logp: Tensor,
    /// Entropy of π at each answer position (when asked for).
    pub entropy: Option<Tensor>,
    /// The value head's estimate at each answer position (when a head is given).
    pub values: Option<Tensor>,
}

/// The value head: v(h) = h·w + b on the final hidden state.
pub struct ValueHead<'a> {
    /// Weight `[H]` (f32).
    pub weight: &'a Tensor,
    /// Bias `[1]` (f32).
    pub bias: &'a Tensor,
}

/// Runs `model` (with `gates`) over the layout and returns the answer tokens' log-probabilities
/// at `temperature`, optionally the entropies and the values.
pub fn token_outputs(
    model: &Model,
    gates: Option<&GateMatrices>,
    l: &Layout,
    temperature: f64,
    entropy: bool,
    head: Option<&ValueHead<'_>>,
) -> Result<TokenOutputs> {
    let hidden = model.hidden_states(
        &l.ids,
        Forward {
            attention_mask: Some(&l.attention),
            gates,
            train: true,
            ..Default::default()
        },
    )?;
    let h = hidden.narrow(1, l.p_len - 1, l.r_len)?;
    let logits = (model.logits(&h)?.to_dtype(DType::F32)? / temperature)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let targets = l.ids.narrow(1, l.p_len, l.r_len)?.contiguous()?;
    let picked = shifted
        .gather(&targets.unsqueeze(2)?, D::Minus1)?
        .squeeze(2)?;
    let logp = (picked - lse.squeeze(2)?)?;
    let entropy = if entropy {
        // H = lse − Σ p·x over the shifted logits x.
        let logq = shifted.broadcast_sub(&lse)?;
        let p = logq.exp()?;
        Some((p * logq)?.sum(D::Minus1)?.neg()?)
    } else {
        None
    };
    let values = match head {
        Some(v) => Some(
            h.to_dtype(DType::F32)?
                .broadcast_mul(v.weight)?
                .sum(D::Minus1)?
                .broadcast_add(v.bias)?,
        ),
        None => None,
    };
    Ok(TokenOutputs {
        logp,
        entropy,
        values,
    })
}

/// The sizes a minibatch's means divide by. A minibatch scored in micro-batches passes the whole
/// minibatch's sizes to each micro-batch's loss, so the losses, their gradients and the
/// statistics of the micro-batches add up to those of the minibatch in one piece.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Norm {
    /// Answer tokens of the minibatch (token means).
    pub tokens: f64,
    /// Answers of the minibatch (GRPO's mean over answers).
    pub rows: f64,
}

impl Norm {
    /// The sizes of a batch whose answers have these lengths.
    pub fn of_lens(lens: impl IntoIterator<Item = usize>) -> Self {
        let (rows, tokens) = lens
            .into_iter()
            .fold((0usize, 0usize), |(r, t), n| (r + 1, t + n));
        Self {
            tokens: tokens.max(1) as f64,
            rows: rows.max(1) as f64,
        }
    }

    /// The sizes of a batch given by its answer mask `[N, R]`.
    pub fn of(mask: &Tensor) -> Result<Self> {
        let lens: Vec<f32> = mask.sum(1)?.to_vec1()?;
        Ok(Self::of_lens(lens.into_iter().map(|n| n as usize)))
    }
}

/// Σ x·mask / `n` (a share of a masked token mean).
fn token_share(x: &Tensor, mask: &Tensor, n: f64) -> Result<Tensor> {
    Ok(((x * mask)?.sum_all()? / n)?)
}

/// What one update's loss consisted of (numbers for the log).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UpdateStats {
    /// The total loss.
    pub loss: f64,
    /// The clipped policy loss.
    pub policy: f64,
    /// The clipped value loss (PPO) or 0.
    pub value: f64,
    /// Mean entropy of the policy on the answers.
    pub entropy: f64,
    /// GRPO's mean k3 KL to the reference (0 for PPO, whose KL is in the reward).
    pub kl: f64,
    /// Approximate KL to the rollout policy, mean((ρ − 1) − log ρ).
    pub approx_kl: f64,
    /// Fraction of tokens whose ratio was clipped.
    pub clip_fraction: f64,
}

fn num(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Per-token clipped surrogate max(−A·ρ, −A·clip(ρ, 1 ± ε)) and ρ, from log-probabilities.
fn surrogate(logp: &Tensor, old_logp: &Tensor, adv: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let ratio = (logp - old_logp)?.exp()?;
    let a = (adv * &ratio)?.neg()?;
    let b = (adv * ratio.clamp(1.0 - eps, 1.0 + eps)?)?.neg()?;
    Ok((a.maximum(&b)?, ratio))
}

/// `loss − coef·entropy` (masked mean) when the entropies were computed, and that mean entropy
/// (0 when they were not).
fn with_entropy(
    loss: Tensor,
    out: &TokenOutputs,
    mask: &Tensor,
    norm: Norm,
    coef: f64,
) -> Result<(Tensor, f64)> {
    let Some(e) = &out.entropy else {
        return Ok((loss, 0.0));
    };
    let e = token_share(e, mask, norm.tokens)?;
    let mean = num(&e)?;
    if coef == 0.0 {
        return Ok((loss, mean));
    }
    Ok(((loss - (e * coef)?)?, mean))
}

/// Approximate KL and clip fraction of ratios `ratio` (detached numbers).
fn ratio_stats(
    ratio: &Tensor,
    log_ratio: &Tensor,
    mask: &Tensor,
    norm: Norm,
    eps: f64,
) -> Result<(f64, f64)> {
    let ratio = ratio.detach();
    let approx = token_share(&((&ratio - 1.0)? - log_ratio.detach())?, mask, norm.tokens)?;
    let clipped = (&ratio - 1.0)?.abs()?.gt(eps)?.to_dtype(DType::F32)?;
    Ok((
        num(&approx)?,
        num(&token_share(&clipped, mask, norm.tokens)?)?,
    ))
}

/// Inputs of the PPO loss, `[N, R]` each (f32).
pub struct PpoBatch<'a> {
    /// Log-probabilities at rollout time.
    pub old_logp: &'a Tensor,
    /// Values at rollout time.
    pub old_values: &'a Tensor,
    /// Advantages (GAE, maybe whitened).
    pub advantages: &'a Tensor,
    /// Returns (advantages + old values).
    pub returns: &'a Tensor,
    /// Answer-token mask.
    pub mask: &'a Tensor,
}

/// PPO's loss: clipped policy loss + vf_coef·clipped value loss − entropy_coef·entropy (masked
/// token means over the minibatch of sizes `norm`).
pub fn ppo_loss(
    out: &TokenOutputs,
    b: &PpoBatch<'_>,
    norm: Norm,
    clip_range: f64,
    value_clip: f64,
    vf_coef: f64,
    entropy_coef: f64,
) -> Result<(Tensor, UpdateStats)> {
    let (pg, ratio) = surrogate(&out.logp, b.old_logp, b.advantages, clip_range)?;
    let pg = token_share(&pg, b.mask, norm.tokens)?;
    let mut loss = pg.clone();
    let mut value = 0.0;
    if let Some(v) = &out.values {
        let clipped = (b.old_values + (v - b.old_values)?.clamp(-value_clip, value_clip)?)?;
        let l1 = (v - b.returns)?.sqr()?;
        let l2 = (clipped - b.returns)?.sqr()?;
        let vl = (token_share(&l1.maximum(&l2)?, b.mask, norm.tokens)? * 0.5)?;
        value = num(&vl)?;
        loss = (loss + (vl * vf_coef)?)?;
    }
    let (loss, entropy) = with_entropy(loss, out, b.mask, norm, entropy_coef)?;
    let (approx_kl, clip_fraction) =
        ratio_stats(&ratio, &(&out.logp - b.old_logp)?, b.mask, norm, clip_range)?;
    let stats = UpdateStats {
        loss: num(&loss)?,
        policy: num(&pg)?,
        value,
        entropy,
        kl: 0.0,
        approx_kl,
        clip_fraction,
    };
    Ok((loss, stats))
}

/// Inputs of the GRPO loss: `old_logp`, `ref_logp`, `mask` `[N, R]`, `advantages` `[N]`.
pub struct GrpoBatch<'a> {
    /// Log-probabilities at rollout time.
    pub old_logp: &'a Tensor,
    /// The reference's log-probabilities.
    pub ref_logp: &'a Tensor,
    /// One group-normalized advantage per answer `[N]`.
    pub advantages: &'a Tensor,
    /// Answer-token mask.
    pub mask: &'a Tensor,
}

/// GRPO's loss (DeepSeekMath): per token the clipped surrogate with the answer's advantage plus
/// β·k3-KL to the reference, averaged over each answer's tokens, then over the minibatch's
/// answers (`norm.rows`); minus entropy_coef·entropy.
pub fn grpo_loss(
    out: &TokenOutputs,
    b: &GrpoBatch<'_>,
    norm: Norm,
    clip_range: f64,
    beta: f64,
    entropy_coef: f64,
) -> Result<(Tensor, UpdateStats)> {
    let adv = b.advantages.unsqueeze(1)?.broadcast_as(out.logp.shape())?;
    let (pg, ratio) = surrogate(&out.logp, b.old_logp, &adv.contiguous()?, clip_range)?;
    let d = (b.ref_logp - &out.logp)?;
    let k3 = ((d.exp()? - &d)? - 1.0)?;
    let per_token = (&pg + (&k3 * beta)?)?;
    let lens = b.mask.sum(1)?.maximum(1.0)?;
    let per_answer = (per_token * b.mask)?.sum(1)?.div(&lens)?;
    let pg_mean = ((pg * b.mask)?.sum(1)?.div(&lens)?.sum_all()? / norm.rows)?;
    let kl_mean = ((&k3 * b.mask)?.sum(1)?.div(&lens)?.sum_all()? / norm.rows)?;
    let loss = (per_answer.sum_all()? / norm.rows)?;
    let (loss, entropy) = with_entropy(loss, out, b.mask, norm, entropy_coef)?;
    let (approx_kl, clip_fraction) =
        ratio_stats(&ratio, &(&out.logp - b.old_logp)?, b.mask, norm, clip_range)?;
    let stats = UpdateStats {
        loss: num(&loss)?,
        policy: num(&pg_mean)?,
        value: 0.0,
        entropy,
        kl: num(&kl_mean)?,
        approx_kl,
        clip_fraction,
    };
    Ok((loss, stats))
}
