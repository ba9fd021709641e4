//! One RL step: sample answers to a batch of prompts with the policy at α(t), score them,
//! compute the reference's and the rollout policy's log-probabilities, the advantages (PPO: KL-
//! shaped per-token rewards and GAE over the value head; GRPO: group-normalized rewards), then
//! several epochs of clipped updates over shuffled minibatches, each minibatch's gradients
//! summed over its micro-batches (`ppo.micro_batch_size`) into one AdamW update.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;
use so8t_model::generate::SamplingParams;
use so8t_model::so8::GateMatrices;
use so8t_model::{Model, TextTokenizer};

use crate::error::{explain_oom, Error, Result};
use crate::optim::{clip_scale, learning_rate};
use crate::rl::advantage::{adapt_beta, gae, group_advantages, whiten};
use crate::rl::config::{Algorithm, RlConfig};
use crate::rl::loss::{
    grpo_loss, ppo_loss, token_outputs, GrpoBatch, Layout, Norm, PpoBatch, UpdateStats, ValueHead,
};
use crate::rl::reward::{RewardTerms, Sample, Scorer};
use crate::rl::rollout::{row_seed, sample, Budget};
use crate::step::{add_grads, Trainer};

/// A prompt of the task.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The rendered prompt (chat template with the generation prompt).
    pub text: String,
    /// Its tokens.
    pub ids: Vec<u32>,
    /// The record's class.
    pub label: so8t_data::Label,
}

/// The optimizer's names of the value head's weight and bias.
pub const VALUE_WEIGHT: &str = "value_head.weight";
/// See [`VALUE_WEIGHT`].
pub const VALUE_BIAS: &str = "value_head.bias";

/// Everything logged for one RL step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RlMetrics {
    /// 1-based step just taken.
    pub step: u64,
    /// Mean total reward of the step's answers.
    pub reward: f64,
    /// Mean class term.
    pub reward_class: f64,
    /// Mean format term.
    pub reward_format: f64,
    /// Mean leak penalty.
    pub reward_leak: f64,
    /// Mean over-length penalty.
    pub reward_overlength: f64,
    /// Fraction of answers with the right class.
    pub accuracy: f64,
    /// Fraction of answers with a parseable class.
    pub parsed: f64,
    /// Mean KL(policy‖reference) per answer at rollout time, Σₜ (log π − log π_ref).
    pub kl: f64,
    /// The KL coefficient used.
    pub beta: f64,
    /// Mean total loss of the updates.
    pub loss: f64,
    /// Mean clipped policy loss.
    pub policy_loss: f64,
    /// Mean clipped value loss (PPO).
    pub value_loss: f64,
    /// Mean entropy of the policy on the answers.
    pub entropy: f64,
    /// Mean approximate KL to the rollout policy over the updates.
    pub approx_kl: f64,
    /// Mean fraction of clipped ratios.
    pub clip_fraction: f64,
    /// Minibatch updates made (fewer than epochs × minibatches after an early stop).
    pub updates: usize,
    /// L_orth of the gates.
    pub orth: f64,
    /// α of the step.
    pub alpha: f64,
    /// Learning rate of the step.
    pub lr: f64,
    /// Mean gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean answer length in tokens.
    pub answer_tokens: f64,
    /// Answers that hit the token budget.
    pub truncated: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Seconds spent sampling.
    pub rollout_secs: f64,
    /// Seconds spent scoring and updating.
    pub update_secs: f64,
}

/// The policy (trainer: model + LoRA + gates + value head + optimizer), the frozen reference,
/// the tokenizer and the scorer.
pub struct RlState {
    /// The policy and its optimizer.
    pub trainer: Trainer,
    /// The reference model (the starting weights, no adapters or gates).
    pub reference: Model,
    /// The value head's (weight, bias) variables (PPO).
    pub value_head: Option<(Var, Var)>,
    /// Tokenizer (decoding answers, stop tokens).
    pub tokenizer: TextTokenizer,
    /// The reward function.
    pub scorer: Scorer,
    /// The configuration.
    pub cfg: RlConfig,
    /// The current KL coefficient.
    pub beta: f64,
}

fn to_f64(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(t.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.to_vec2()?)
}

fn rows_tensor(rows: &[Vec<f64>], idx: &[usize], r_len: usize, dev: &Device) -> Result<Tensor> {
    let flat: Vec<f32> = idx
        .iter()
        .flat_map(|&i| (0..r_len).map(move |j| rows[i].get(j).copied().unwrap_or(0.0) as f32))
        .collect();
    Ok(Tensor::from_vec(flat, (idx.len(), r_len), dev)?)
}

impl RlState {
    /// The value head (PPO) as the loss functions take it.
    fn head(&self) -> Option<ValueHead<'_>> {
        self.value_head.as_ref().map(|(w, b)| ValueHead {
            weight: w.as_tensor(),
            bias: b.as_tensor(),
        })
    }

    /// RL step `t` (0-based) over `prompts`: sample, score, update. Returns the step's metrics.
    pub fn step(&mut self, t: u64, prompts: &[&Prompt]) -> Result<RlMetrics> {
        let cfg = self.cfg.clone();
        let total = cfg.training.max_steps;
        let g = cfg.rollout.group_size;
        let dev = self.trainer.model.device().clone();
        let t0 = std::time::Instant::now();
        // 1. Rollouts (no gradients are taken; the gate matrices are recomputed for updates).
        let rows: Vec<&Prompt> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(*p, g))
            .collect();
        let ids: Vec<Vec<u32>> = rows.iter().map(|p| p.ids.clone()).collect();
        let seeds: Vec<u64> = (0..rows.len())
            .map(|r| row_seed(cfg.training.seed, t, r))
            .collect();
        let params = SamplingParams {
            temperature: cfg.rollout.temperature,
            top_k: cfg.rollout.top_k,
            top_p: cfg.rollout.top_p,
            repeat_penalty: 1.0,
            ..SamplingParams::default()
        };
        let gates = self.trainer.gate_matrices(t)?.map(|m| m.detach());
        let answers = sample(
            &self.trainer.model,
            gates.as_ref(),
            &ids,
            &params,
            &seeds,
            Budget {
                min_new: cfg.rollout.min_new_tokens,
                max_new: cfg.rollout.max_new_tokens,
                stop_ids: &self.tokenizer.stop_token_ids,
            },
        )
        .map_err(|e| {
            explain_oom(
                e,
                "the rollouts",
                "lower rollout.prompts_per_step × rollout.group_size (the rows sampled together) \
                 or rollout.max_new_tokens",
            )
        })?;
        let rollout_secs = t0.elapsed().as_secs_f64();
        // 2. Rewards.
        let mut terms: Vec<RewardTerms> = Vec::with_capacity(rows.len());
        for (p, a) in rows.iter().zip(&answers) {
            let body: Vec<u32> = a
                .tokens
                .iter()
                .copied()
                .filter(|x| !self.tokenizer.stop_token_ids.contains(x))
                .collect();
            let text = self.tokenizer.decode(&body, true)?;
            terms.push(self.scorer.score(&Sample {
                prompt: &p.text,
                completion: &text,
                label: p.label,
                truncated: a.truncated,
                tokens: a.tokens.len(),
            })?);
        }
        let scores: Vec<f64> = terms.iter().map(|x| x.total).collect();
        // 3. Rollout-time log-probabilities (policy and reference) and values.
        let p_len = ids.iter().map(Vec::len).max().unwrap_or(1);
        let r_len = answers
            .iter()
            .map(|a| a.tokens.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let pairs: Vec<(&[u32], &[u32])> = ids
            .iter()
            .zip(&answers)
            .map(|(p, a)| (p.as_slice(), a.tokens.as_slice()))
            .collect();
        let lens: Vec<usize> = answers.iter().map(|a| a.tokens.len()).collect();
        let temp = cfg.rollout.temperature;
        let mut old_logp = Vec::new();
        let mut old_values = Vec::new();
        let mut ref_logp = Vec::new();
        // Scored in minibatches: the same row groups the update uses need not match, the
        // per-row numbers do not depend on the batch.
        let mb = cfg.ppo.minibatch_size;
        let all: Vec<usize> = (0..rows.len()).collect();
        // GRPO with a single update per step: the update's own forward runs the rollout policy,
        // so its detached log-probabilities are the old ones and no separate pass is needed.
        let single = single_update(&cfg, rows.len());
        let micro = cfg.ppo.micro();
        for chunk in all.chunks(micro) {
            let sub: Vec<(&[u32], &[u32])> = chunk.iter().map(|&i| pairs[i]).collect();
            let layout = Layout::new(&sub, p_len, r_len, &dev)?;
            if !single {
                let head = self.head();
                let out = token_outputs(
                    &self.trainer.model,
                    gates.as_ref(),
                    &layout,
                    temp,
                    false,
                    head.as_ref(),
                )?;
                old_logp.extend(to_f64(&out.logp.detach())?);
                if let Some(v) = &out.values {
                    old_values.extend(to_f64(&v.detach())?);
                }
            }
            let r = token_outputs(&self.reference, None, &layout, temp, false, None)?;
            ref_logp.extend(to_f64(&r.logp)?);
        }
        // 4. Advantages.
        let (advantages, returns): (Vec<Vec<f64>>, Vec<Vec<f64>>) = match cfg.algorithm {
            Algorithm::Ppo => {
                let kl_tok = kl_per_token(&old_logp, &ref_logp, &lens);
                let mut adv = Vec::with_capacity(rows.len());
                let mut ret = Vec::with_capacity(rows.len());
                for i in 0..rows.len() {
                    let mut r: Vec<f64> = kl_tok[i].iter().map(|k| -self.beta * k).collect();
                    if let Some(last) = r.last_mut() {
                        *last += scores[i];
                    }
                    let (a, re) = gae(&r, &old_values[i][..lens[i]], cfg.ppo.gamma, cfg.ppo.lam);
                    adv.push(a);
                    ret.push(re);
                }
                if cfg.ppo.whiten_advantages {
                    let mut flat: Vec<f64> = adv.iter().flatten().copied().collect();
                    whiten(&mut flat, false);
                    let mut it = flat.into_iter();
                    for a in adv.iter_mut() {
                        a.iter_mut().for_each(|x| *x = it.next().unwrap_or(0.0));
                    }
                }
                (adv, ret)
            }
            Algorithm::Grpo => {
                let a = group_advantages(&scores, g);
                (a.into_iter().map(|x| vec![x]).collect(), vec![])
            }
        };
        // 5. Updates.
        let lr = learning_rate(
            cfg.optimizer.lr,
            cfg.optimizer.lr_scheduler,
            cfg.optimizer.warmup_steps,
            t,
            total,
        );
        let clip = (cfg.optimizer.max_grad_norm > 0.0).then_some(cfg.optimizer.max_grad_norm);
        if single {
            // Filled by the update's forward (`micro_update`).
            old_logp = vec![Vec::new(); rows.len()];
        }
        let mut sc = Scored {
            old_logp,
            old_values,
            ref_logp,
            advantages,
            returns,
        };
        let mut sum = UpdateStats::default();
        let mut grad_norm = 0.0;
        let mut orth = 0.0;
        let mut updates = 0usize;
        for epoch in 0..cfg.ppo.epochs {
            let mut order = all.clone();
            so8t_data::shuffle::shuffle(
                &mut order,
                row_seed(cfg.training.seed ^ 0xe9_0c4, t, epoch),
            );
            let mut epoch_kl = 0.0;
            let mut n = 0usize;
            for chunk in order.chunks(mb) {
                let norm = Norm::of_lens(chunk.iter().map(|&i| lens[i]));
                // The gate matrices once per update; every micro-batch's backward runs through them.
                let mats = self.trainer.gate_matrices(t)?;
                let mut grads: Option<GradStore> = None;
                let mut st = UpdateStats::default();
                for part in chunk.chunks(micro) {
                    let rows_of: Vec<(&[u32], &[u32])> = part.iter().map(|&i| pairs[i]).collect();
                    let layout = Layout::new(&rows_of, p_len, r_len, &dev)?;
                    let (g, s) =
                        self.micro_update(mats.as_ref(), part, &layout, norm, &mut sc, single)?;
                    add_grads(&mut grads, g, self.trainer.opt.vars())?;
                    add(&mut st, &s);
                }
                if let Some(o) = self.trainer.orth_loss()? {
                    orth = o.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    add_grads(
                        &mut grads,
                        o.to_dtype(DType::F32)?.backward()?,
                        self.trainer.opt.vars(),
                    )?;
                }
                let Some(grads) = grads else { continue };
                let norm = crate::optim::grad_norm(&grads, self.trainer.opt.vars())?;
                grad_norm += norm;
                self.trainer
                    .opt
                    .update_scaled(&grads, lr, clip_scale(norm, clip))?;
                add(&mut sum, &st);
                epoch_kl += st.approx_kl;
                n += 1;
                updates += 1;
            }
            if cfg.ppo.target_kl > 0.0 && epoch_kl / n.max(1) as f64 > 1.5 * cfg.ppo.target_kl {
                break;
            }
        }
        let kl_tok = kl_per_token(&sc.old_logp, &sc.ref_logp, &lens);
        let kl = kl_tok.iter().map(|k| k.iter().sum::<f64>()).sum::<f64>() / rows.len() as f64;
        let beta_used = self.beta;
        if let Some(target) = cfg.kl.target {
            self.beta = adapt_beta(self.beta, kl, target, rows.len(), cfg.kl.horizon);
        }
        let u = updates.max(1) as f64;
        let n = rows.len() as f64;
        let mean = |f: &dyn Fn(&RewardTerms) -> f64| terms.iter().map(f).sum::<f64>() / n;
        let tokens: usize = lens.iter().sum();
        Ok(RlMetrics {
            step: t + 1,
            reward: mean(&|x| x.total),
            reward_class: mean(&|x| x.class),
            reward_format: mean(&|x| x.format),
            reward_leak: mean(&|x| x.leak),
            reward_overlength: mean(&|x| x.overlength),
            accuracy: mean(&|x| f64::from(u8::from(x.correct))),
            parsed: mean(&|x| f64::from(u8::from(x.parsed))),
            kl,
            beta: beta_used,
            loss: sum.loss / u,
            policy_loss: sum.policy / u,
            value_loss: sum.value / u,
            entropy: sum.entropy / u,
            approx_kl: sum.approx_kl / u,
            clip_fraction: sum.clip_fraction / u,
            updates,
            orth,
            alpha: self.trainer.alpha_value(t)?,
            lr,
            grad_norm: grad_norm / u,
            answer_tokens: tokens as f64 / n,
            truncated: answers.iter().filter(|a| a.truncated).count(),
            tokens,
            rollout_secs,
            update_secs: t0.elapsed().as_secs_f64() - rollout_secs,
        })
    }
}

/// The batch's per-answer numbers the updates read, `[answer][token]` (`advantages`: one per
/// answer for GRPO).
struct Scored {
    old_logp: Vec<Vec<f64>>,
    old_values: Vec<Vec<f64>>,
    ref_logp: Vec<Vec<f64>>,
    advantages: Vec<Vec<f64>>,
    returns: Vec<Vec<f64>>,
}

impl RlState {
    /// Forward (with the gate matrices `mats`) and backward of the answers `part` (laid out in
    /// `layout`) of a minibatch of sizes `norm`: their gradients and their share of the update's
    /// statistics. With `single`, the forward's own log-probabilities become the answers' old
    /// ones in `sc`.
    fn micro_update(
        &self,
        mats: Option<&GateMatrices>,
        part: &[usize],
        layout: &Layout,
        norm: Norm,
        sc: &mut Scored,
        single: bool,
    ) -> Result<(GradStore, UpdateStats)> {
        let cfg = &self.cfg;
        let dev = self.trainer.model.device().clone();
        let r_len = layout.r_len;
        let head = self.head();
        let out = token_outputs(
            &self.trainer.model,
            mats,
            layout,
            cfg.rollout.temperature,
            true,
            head.as_ref(),
        )?;
        let old = if single {
            let o = out.logp.detach();
            for (&i, row) in part.iter().zip(to_f64(&o)?) {
                sc.old_logp[i] = row;
            }
            o
        } else {
            rows_tensor(&sc.old_logp, part, r_len, &dev)?
        };
        let (loss, st) = match cfg.algorithm {
            Algorithm::Ppo => {
                let b = PpoBatch {
                    old_logp: &old,
                    old_values: &rows_tensor(&sc.old_values, part, r_len, &dev)?,
                    advantages: &rows_tensor(&sc.advantages, part, r_len, &dev)?,
                    returns: &rows_tensor(&sc.returns, part, r_len, &dev)?,
                    mask: &layout.mask,
                };
                let p = &cfg.ppo;
                ppo_loss(
                    &out,
                    &b,
                    norm,
                    p.clip_range,
                    p.value_clip,
                    p.vf_coef,
                    p.entropy_coef,
                )?
            }
            Algorithm::Grpo => {
                let adv: Vec<f32> = part.iter().map(|&i| sc.advantages[i][0] as f32).collect();
                let b = GrpoBatch {
                    old_logp: &old,
                    ref_logp: &rows_tensor(&sc.ref_logp, part, r_len, &dev)?,
                    advantages: &Tensor::from_vec(adv, part.len(), &dev)?,
                    mask: &layout.mask,
                };
                grpo_loss(
                    &out,
                    &b,
                    norm,
                    cfg.ppo.clip_range,
                    self.beta,
                    cfg.ppo.entropy_coef,
                )?
            }
        };
        Ok((loss.backward()?, st))
    }
}

/// Whether a step makes exactly one update, with the rollout policy (GRPO, one epoch, one
/// minibatch): the update's forward then gives the old log-probabilities.
fn single_update(cfg: &RlConfig, rows: usize) -> bool {
    cfg.algorithm == Algorithm::Grpo && cfg.ppo.epochs == 1 && rows <= cfg.ppo.minibatch_size
}

/// log π_old − log π_ref per answer token (the per-token KL estimate to the reference).
fn kl_per_token(old: &[Vec<f64>], reference: &[Vec<f64>], lens: &[usize]) -> Vec<Vec<f64>> {
    lens.iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| old[i][j] - reference[i][j]).collect())
        .collect()
}

fn add(sum: &mut UpdateStats, s: &UpdateStats) {
    sum.loss += s.loss;
    sum.policy += s.policy;
    sum.value += s.value;
    sum.entropy += s.entropy;
    sum.kl += s.kl;
    sum.approx_kl += s.approx_kl;
    sum.clip_fraction += s.clip_fraction;
}

/// Checks that the prompts fit: non-empty, at most `max_len` tokens (else an error naming it).
pub fn check_prompt(p: &Prompt, max_len: usize, line: usize) -> Result<()> {
    if p.ids.is_empty() || p.ids.len() > max_len {
        return Err(Error::invalid(
            "data.max_prompt_len",
            format!(
                "prompt of line {line} has {} tokens, limit {max_len}",
                p.ids.len()
            ),
        ));
    }
    Ok(())
}
