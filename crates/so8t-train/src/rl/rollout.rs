//! Rollouts: a batch of prompts answered together with the policy (its gates at α(t)), KV cache
//! and the serve engine's sampler. Prompts are left-padded to one length so every answer starts
//! at the same position; a row that has stopped feeds masked padding until all rows are done.
//! Each row samples with its own seed, a function of (run seed, step, row): a resumed run draws
//! the same answers without saving any RNG state.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use so8t_model::dropout::mix64;
use so8t_model::generate::{Sampler, SamplingParams};
use so8t_model::so8::GateMatrices;
use so8t_model::Cache;
use so8t_model::{Forward, Model};

use crate::error::{Error, Result};

/// One sampled answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The answer's tokens, including the stop token that ended it (if any).
    pub tokens: Vec<u32>,
    /// True if it hit the token budget without a stop token.
    pub truncated: bool,
}

/// The seed of row `row` at RL step `step`.
pub fn row_seed(seed: u64, step: u64, row: usize) -> u64 {
    mix64(seed ^ mix64(step.wrapping_mul(1 << 20) ^ row as u64 ^ 0x5a17_0000))
}

/// The token used for padding (masked everywhere; any valid id works).
pub const PAD: u32 = 0;

/// How long an answer may be.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    /// Stop tokens are not sampled before this many tokens (HF's `min_new_tokens`).
    pub min_new: usize,
    /// At most this many tokens.
    pub max_new: usize,
    /// An answer ends at any of these.
    pub stop_ids: &'a [u32],
}

/// Answers `prompts` (token ids, each non-empty) with `model` and `gates` within `budget`,
/// sampled with `params` (its seed replaced per row by `seeds[row]`).
pub fn sample(
    model: &Model,
    gates: Option<&GateMatrices>,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    seeds: &[u64],
    budget: Budget,
) -> Result<Vec<Response>> {
    let Budget {
        min_new,
        max_new,
        stop_ids,
    } = budget;
    let b = prompts.len();
    if b == 0 {
        return Ok(vec![]);
    }
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::invalid("data", "a prompt has no tokens"));
    }
    let p_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let ctx = model.cfg.max_position_embeddings;
    if p_len + max_new > ctx {
        return Err(Error::invalid(
            "rollout.max_new_tokens",
            format!(
                "prompts of {p_len} tokens + {max_new} new exceed the model's context of {ctx}"
            ),
        ));
    }
    let device = model.device().clone();
    let mut samplers: Vec<Sampler> = seeds
        .iter()
        .map(|&s| {
            Sampler::new(SamplingParams {
                seed: s,
                ..params.clone()
            })
        })
        .collect();
    let mut mask: Vec<Vec<u32>> = Vec::with_capacity(b);
    let mut ids = Vec::with_capacity(b * p_len);
    let mut history: Vec<Vec<u32>> = Vec::with_capacity(b);
    for p in prompts {
        let pad = p_len - p.len();
        let mut m = vec![0u32; pad];
        m.extend(std::iter::repeat_n(1, p.len()));
        mask.push(m);
        ids.extend(std::iter::repeat_n(PAD, pad));
        ids.extend(p);
        history.push(p.clone());
    }
    let mut input = Tensor::from_vec(ids, (b, p_len), &device)?;
    let mut cache = Cache::new(model.cfg.num_hidden_layers);
    let mut out: Vec<Response> = vec![
        Response {
            tokens: vec![],
            truncated: false
        };
        b
    ];
    let mut done = vec![false; b];
    // Where the time goes (debug log): queuing the forward, waiting for the logits, sampling.
    let (mut t_forward, mut t_wait, mut t_sample) = (0.0, 0.0, 0.0);
    for _ in 0..max_new {
        let t0 = std::time::Instant::now();
        let flat: Vec<u32> = mask.iter().flatten().copied().collect();
        let width = mask[0].len();
        // On the CPU: the model builds the additive mask from it on the host anyway.
        let attn = Tensor::from_vec(flat, (b, width), &Device::Cpu)?;
        let logits = model.forward_last(
            &input,
            Forward {
                cache: Some(&mut cache),
                attention_mask: Some(&attn),
                gates,
                ..Default::default()
            },
        )?;
        let t1 = std::time::Instant::now();
        let mut logits: Vec<Vec<f32>> = logits
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec2()?;
        let t2 = std::time::Instant::now();
        // Rows sample in parallel (each has its own seeded sampler, so the answers do not
        // depend on the thread count): a 49k vocabulary takes about a millisecond per row.
        let picks: Vec<Option<u32>> = samplers
            .par_iter_mut()
            .zip(logits.par_iter_mut())
            .zip(history.par_iter())
            .enumerate()
            .map(|(r, ((sampler, l), h))| {
                if done[r] {
                    return None;
                }
                if out[r].tokens.len() < min_new {
                    for &s in stop_ids {
                        if let Some(x) = l.get_mut(s as usize) {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
                Some(sampler.sample(l, h))
            })
            .collect();
        let mut next = Vec::with_capacity(b);
        for (r, pick) in picks.into_iter().enumerate() {
            let Some(t) = pick else {
                next.push(PAD);
                mask[r].push(0);
                continue;
            };
            history[r].push(t);
            out[r].tokens.push(t);
            mask[r].push(1);
            next.push(t);
            if stop_ids.contains(&t) {
                done[r] = true;
            }
        }
        t_forward += (t1 - t0).as_secs_f64();
        t_wait += (t2 - t1).as_secs_f64();
        t_sample += t2.elapsed().as_secs_f64();
        if done.iter().all(|&d| d) {
            break;
        }
        input = Tensor::from_vec(next, (b, 1), &device)?;
    }
    tracing::debug!(
        "rollout of {b} rows: forward {t_forward:.3}s, waiting for logits {t_wait:.3}s, sampling {t_sample:.3}s"
    );
    for (r, o) in out.iter_mut().enumerate() {
        o.truncated = !done[r];
    }
    Ok(out)
}
