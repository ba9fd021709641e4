//! One optimizer step of SO8T fine-tuning: the model with LoRA adapters and SO(8) gates (blended
//! by α(t)), loss = CE(targets) + λ(phase)·PET + L_orth, backward, global-norm clipping, AdamW.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use so8t_model::dropout::{self, mix64};
use so8t_model::lora::{attach, LoraConfig};
use so8t_model::loss::shifted_cross_entropy;
use so8t_model::so8::{GateMatrices, LayerSelection, RotationMethod, So8Gates};
use so8t_model::{Forward, Model};

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::optim::{clip_scale, grad_norm, learning_rate, AdamW, AdamWConfig, LrDecay};
use crate::pet::pet_loss;
use crate::profile::Phases;
use crate::recompute::checkpointed_grads;
use crate::schedule::{AlphaSchedule, PetPhase, PetSchedule};

/// The SO(8) gate settings (seed 004's `so8t` block).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// Train gates at all.
    pub enabled: bool,
    /// `all` or a list of layer indices (`"0,1,5"`, ranges `2-4`).
    pub layer_indices: String,
    /// Std of the initial generator entries.
    pub init_scale: f64,
    /// Weight of L_orth.
    pub orthogonal_reg: f64,
    /// `exp` or `cayley`.
    pub parametrization: String,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            layer_indices: "all".into(),
            init_scale: 0.05,
            orthogonal_reg: 1e-4,
            parametrization: "exp".into(),
        }
    }
}

/// What one trainer optimizes and how.
#[derive(Debug, Clone)]
pub struct StepConfig {
    /// Gates.
    pub gates: GateConfig,
    /// α(t).
    pub alpha: AlphaSchedule,
    /// PET on/off and λ(phase).
    pub pet: Option<PetSchedule>,
    /// LoRA adapters (None: gates only).
    pub lora: Option<LoraConfig>,
    /// AdamW.
    pub optim: AdamWConfig,
    /// LR decay after warm-up.
    pub lr_decay: LrDecay,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Global gradient-norm clip (None or ≤ 0: off).
    pub grad_clip: Option<f64>,
    /// Total optimizer steps T (schedules run over it).
    pub total_steps: u64,
    /// Seed of the adapter and gate initialization.
    pub seed: u64,
    /// Recompute each decoder layer in the backward pass instead of keeping its activations
    /// (same loss and gradients, less memory, about one more forward pass of time).
    pub gradient_checkpointing: bool,
    /// Train every weight of the model (named by HF name in the optimizer).
    pub full_finetune: bool,
}

/// Everything logged for one optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMetrics {
    /// 1-based step just taken.
    pub step: u64,
    /// Total loss.
    pub loss: f64,
    /// Cross-entropy over target tokens.
    pub ce: f64,
    /// λ·PET.
    pub pet: f64,
    /// PET weight of this step.
    pub pet_lambda: f64,
    /// PET phase of this step.
    pub phase: PetPhase,
    /// L_orth.
    pub orth: f64,
    /// α used.
    pub alpha: f64,
    /// The learned α's pull λ_α·(α − target)² (0 for scheduled α).
    pub alpha_pull: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Real tokens processed.
    pub tokens: usize,
    /// Target tokens.
    pub targets: usize,
}

/// Model + trainable state + optimizer.
pub struct Trainer {
    /// The model (LoRA adapters attached to its linears).
    pub model: Model,
    /// The gates (generators are the optimizer's variables), if enabled.
    pub gates: Option<So8Gates>,
    /// With `alpha.schedule: learned`: the logit a of α = σ(a) (the optimizer's `alpha.logit`).
    pub alpha_logit: Option<Var>,
    /// Settings.
    pub cfg: StepConfig,
    /// The optimizer (its variables: LoRA A/B by PEFT name, `gates.{layer}`).
    pub opt: AdamW,
}

/// The loss terms of one micro-batch: (total, ce, λ·pet, orth).
pub type Losses = (Tensor, Tensor, Option<Tensor>, Option<Tensor>);

/// The optimizer's name of the learned α's logit (never weight-decayed).
pub const ALPHA_LOGIT: &str = "alpha.logit";

/// Loss terms as numbers (absent terms are 0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossValues {
    /// Total loss.
    pub loss: f64,
    /// Cross-entropy over target tokens.
    pub ce: f64,
    /// λ·PET.
    pub pet: f64,
    /// L_orth.
    pub orth: f64,
}

impl LossValues {
    pub(crate) fn of(
        loss: &Tensor,
        ce: &Tensor,
        pet: Option<&Tensor>,
        orth: Option<&Tensor>,
    ) -> Result<Self> {
        let opt = |t: Option<&Tensor>| Ok::<_, Error>(t.map(scalar).transpose()?.unwrap_or(0.0));
        Ok(Self {
            loss: scalar(loss)?,
            ce: scalar(ce)?,
            pet: opt(pet)?,
            orth: opt(orth)?,
        })
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Adds the gradients in `new` of the variables `vars` into `acc` (`new` whole if `acc` is empty).
pub(crate) fn add_grads(
    acc: &mut Option<GradStore>,
    new: GradStore,
    vars: &BTreeMap<String, Var>,
) -> Result<()> {
    match acc {
        None => *acc = Some(new),
        Some(a) => {
            for v in vars.values() {
                if let Some(g) = new.get(v.as_tensor()) {
                    let sum = match a.remove(v.as_tensor()) {
                        Some(old) => (old + g)?,
                        None => g.clone(),
                    };
                    a.insert(v.as_tensor(), sum);
                }
            }
        }
    }
    Ok(())
}

impl Trainer {
    /// Attaches fresh LoRA adapters and random gates (both seeded) to `model`.
    pub fn new(mut model: Model, cfg: StepConfig) -> Result<Self> {
        cfg.alpha.validate()?;
        if let Some(p) = &cfg.pet {
            p.validate()?;
        }
        let mut vars = BTreeMap::new();
        let alpha_logit = match cfg.alpha.init_logit() {
            Some(a) if cfg.gates.enabled => {
                let v = Var::new(a as f32, model.device())?;
                vars.insert(ALPHA_LOGIT.to_string(), v.clone());
                Some(v)
            }
            _ => None,
        };
        if let Some(l) = &cfg.lora {
            vars.extend(attach(&mut model, l, cfg.seed)?);
        }
        if cfg.full_finetune {
            if cfg.lora.is_some() {
                return Err(Error::invalid(
                    "training.full_finetune",
                    "full fine-tuning and LoRA exclude each other",
                ));
            }
            vars.extend(so8t_model::full::make_trainable(&mut model)?);
        }
        let gates = if cfg.gates.enabled {
            let method: RotationMethod = cfg.gates.parametrization.parse()?;
            let sel: LayerSelection = cfg.gates.layer_indices.parse()?;
            let layers = sel.resolve(model.cfg.num_hidden_layers)?;
            let g = So8Gates::random(
                &layers,
                model.cfg.attn_out_dim(),
                cfg.gates.init_scale,
                cfg.seed ^ 0x005e_ed0f_9a7e,
                method,
                model.device(),
            )?;
            let mut generators = BTreeMap::new();
            for (l, t) in g.generators {
                let v = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
                generators.insert(l, v.as_tensor().clone());
                vars.insert(format!("gates.{l}"), v);
            }
            Some(So8Gates { generators, ..g })
        } else {
            None
        };
        if vars.is_empty() {
            return Err(Error::invalid(
                "so8t.enabled",
                "nothing to train: enable the gates, LoRA or full fine-tuning",
            ));
        }
        let opt = AdamW::new(vars, cfg.optim.clone());
        Ok(Self {
            model,
            gates,
            alpha_logit,
            cfg,
            opt,
        })
    }

    /// The loss terms of one micro-batch at optimizer step `t` (0-based): (total, ce, λ·pet,
    /// orth), differentiable with respect to the optimizer's variables.
    pub fn losses(&self, b: &Batch, t: u64) -> Result<Losses> {
        // The rotations once: the blend matrices and L_orth share them (and their backward).
        let rots = self.gate_rotations()?;
        let mats = match self.gates {
            Some(_) => Some(So8Gates::matrices_from(
                &rots,
                &self.alpha(t)?,
                self.model.cfg.num_hidden_layers,
            )?),
            None => None,
        };
        let hidden = self.model.hidden_states(
            &b.input_ids,
            Forward {
                attention_mask: Some(&b.attention_mask),
                gates: mats.as_ref(),
                train: true,
                segments: b.segments.as_deref(),
                ..Default::default()
            },
        )?;
        let (loss, ce, pet) = self.head_losses(&hidden, b, t)?;
        let orth = self.orth_loss_of(&rots)?;
        Ok((self.add_orth(loss, orth.as_ref())?, ce, pet, orth))
    }

    /// α(t) as a scalar tensor on the model's device: the schedule's value, or σ(a) (tracked)
    /// when α is learned.
    pub(crate) fn alpha(&self, t: u64) -> Result<Tensor> {
        match &self.alpha_logit {
            Some(a) => Ok((a.as_tensor().neg()?.exp()? + 1.0)?.recip()?),
            None => {
                let alpha = self.cfg.alpha.value(t, self.cfg.total_steps);
                Ok(Tensor::new(alpha as f32, self.model.device())?)
            }
        }
    }

    /// α at optimizer step `t` as a number (learned: the current σ(a)).
    pub fn alpha_value(&self, t: u64) -> Result<f64> {
        scalar(&self.alpha(t)?)
    }

    /// The learned α's pull λ_α·(α − target)² (None unless α is learned with a pull > 0).
    pub(crate) fn pull_loss(&self) -> Result<Option<Tensor>> {
        match (&self.alpha_logit, &self.cfg.alpha) {
            (Some(_), AlphaSchedule::Learned { target, pull, .. }) if *pull > 0.0 => {
                Ok(Some(((self.alpha(0)? - *target)?.sqr()? * *pull)?))
            }
            _ => Ok(None),
        }
    }

    /// The gates' blend matrices at step `t` (tracked: they depend on the generators).
    pub(crate) fn gate_matrices(&self, t: u64) -> Result<Option<GateMatrices>> {
        match &self.gates {
            Some(g) => Ok(Some(
                g.matrices(&self.alpha(t)?, self.model.cfg.num_hidden_layers)?,
            )),
            None => Ok(None),
        }
    }

    /// From the final hidden states: (CE + λ·PET, CE, λ·PET).
    pub(crate) fn head_losses(
        &self,
        hidden: &Tensor,
        b: &Batch,
        t: u64,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let logits = self.model.logits_for_loss(hidden)?;
        let ce = shifted_cross_entropy(&logits, &b.input_ids, &b.label_mask, &b.attention_mask)?;
        let mut loss = ce.clone();
        let pet = match &self.cfg.pet {
            Some(p) => {
                let (l, _) = pet_loss(
                    hidden,
                    &b.attention_mask,
                    p.huber_delta,
                    b.segments.as_deref(),
                )?;
                let l = (l.to_dtype(ce.dtype())? * p.lambda(t, self.cfg.total_steps))?;
                loss = (loss + &l)?;
                Some(l)
            }
            None => None,
        };
        Ok((loss, ce, pet))
    }

    /// The gates' rotations, layer → R (tracked: they depend on the generators; empty without
    /// gates); all layers in one rotation op.
    pub(crate) fn gate_rotations(&self) -> Result<BTreeMap<usize, Tensor>> {
        match &self.gates {
            Some(g) => Ok(g.rotations()?),
            None => Ok(BTreeMap::new()),
        }
    }

    /// L_orth of the gates (None without gates).
    pub(crate) fn orth_loss(&self) -> Result<Option<Tensor>> {
        self.orth_loss_of(&self.gate_rotations()?)
    }

    /// L_orth of rotations that [`Self::gate_rotations`] returned (None when there are none).
    pub(crate) fn orth_loss_of(&self, rots: &BTreeMap<usize, Tensor>) -> Result<Option<Tensor>> {
        Ok(So8Gates::orthogonality_loss_from(
            rots,
            self.cfg.gates.orthogonal_reg,
        )?)
    }

    /// `loss + orth` (+ the learned α's pull) in the loss's dtype.
    pub(crate) fn add_orth(&self, loss: Tensor, orth: Option<&Tensor>) -> Result<Tensor> {
        let mut loss = match orth {
            Some(o) => (&loss + o.to_dtype(loss.dtype())?)?,
            None => loss,
        };
        if let Some(p) = self.pull_loss()? {
            loss = (&loss + p.to_dtype(loss.dtype())?)?;
        }
        Ok(loss)
    }

    /// The loss terms averaged over `micro` batches at optimizer step `t` and the gradients of
    /// that average with respect to the optimizer's variables (with per-layer recomputation
    /// when `gradient_checkpointing` is on; the result is the same either way).
    pub fn gradients(&self, micro: &[Batch], t: u64) -> Result<(LossValues, GradStore)> {
        if micro.is_empty() {
            return Err(Error::invalid(
                "batch_size",
                "an optimizer step needs a batch",
            ));
        }
        let n = micro.len() as f64;
        let mut grads = None;
        let mut sum = LossValues::default();
        for (i, b) in micro.iter().enumerate() {
            // LoRA dropout masks are a function of (seed, step, micro-batch): a resumed run and
            // a recomputed layer draw the same ones.
            let seed = mix64(self.cfg.seed ^ mix64(t.wrapping_mul(1 << 20) ^ i as u64));
            let (v, g) = dropout::with_seed(seed, || -> Result<_> {
                Ok(if self.cfg.gradient_checkpointing {
                    checkpointed_grads(self, b, t, n)?
                } else {
                    let mut phases = Phases::start(self.model.device())?;
                    let (loss, ce, pet, orth) = self.losses(b, t)?;
                    phases.mark("forward")?;
                    let v = LossValues::of(&loss, &ce, pet.as_ref(), orth.as_ref())?;
                    let g = (loss / n)?.backward()?;
                    phases.mark("backward")?;
                    phases.log("micro-batch");
                    (v, g)
                })
            })?;
            sum.loss += v.loss / n;
            sum.ce += v.ce / n;
            sum.pet += v.pet / n;
            sum.orth += v.orth / n;
            add_grads(&mut grads, g, self.opt.vars())?;
        }
        Ok((sum, grads.expect("at least one micro-batch")))
    }

    /// One optimizer step over `micro` batches (gradient accumulation: their losses averaged).
    pub fn step(&mut self, micro: &[Batch]) -> Result<StepMetrics> {
        let t = self.opt.step;
        // α and its pull as used by this step (before the update moves a learned α).
        let alpha = self.alpha_value(t)?;
        let alpha_pull = self.cfg.alpha.pull_penalty(alpha);
        let (v, grads) = self.gradients(micro, t)?;
        let tokens = micro.iter().map(|b| b.tokens).sum();
        let targets = micro.iter().map(|b| b.targets).sum();
        let mut phases = Phases::start(self.model.device())?;
        let grad_norm = grad_norm(&grads, self.opt.vars())?;
        phases.mark("gradient norm")?;
        let lr = learning_rate(
            self.cfg.optim.lr,
            self.cfg.lr_decay,
            self.cfg.warmup_steps,
            t,
            self.cfg.total_steps,
        );
        let scale = clip_scale(grad_norm, self.cfg.grad_clip);
        self.opt.update_scaled(&grads, lr, scale)?;
        phases.mark("AdamW (clipped)")?;
        phases.log("optimizer step");
        let pet_cfg = self.cfg.pet.unwrap_or_default();
        Ok(StepMetrics {
            step: self.opt.step,
            loss: v.loss,
            ce: v.ce,
            pet: v.pet,
            pet_lambda: if self.cfg.pet.is_some() {
                pet_cfg.lambda(t, self.cfg.total_steps)
            } else {
                0.0
            },
            phase: pet_cfg.phase(t, self.cfg.total_steps),
            orth: v.orth,
            alpha,
            alpha_pull,
            lr,
            grad_norm,
            tokens,
            targets,
        })
    }
}
