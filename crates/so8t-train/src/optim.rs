//! AdamW with state we own (so checkpoints can save and restore it bit for bit), the learning-rate
//! schedules of HF transformers (linear warm-up, then cosine / linear decay or constant), and
//! global gradient-norm clipping.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Optimizer settings (PyTorch's AdamW defaults except the learning rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The first and second moments of one parameter.
#[derive(Debug, Clone)]
pub struct Moments {
    /// Running mean of the gradient.
    pub m: Tensor,
    /// Running mean of the squared gradient.
    pub v: Tensor,
}

/// AdamW over named variables (PyTorch semantics: p ← p·(1 − lr·wd), then the Adam update with
/// bias correction).
pub struct AdamW {
    /// Settings.
    pub cfg: AdamWConfig,
    /// Optimizer steps taken.
    pub step: u64,
    vars: BTreeMap<String, Var>,
    /// Moments per variable name (created on the first step).
    pub moments: BTreeMap<String, Moments>,
}

impl AdamW {
    /// An optimizer over these variables.
    pub fn new(vars: BTreeMap<String, Var>, cfg: AdamWConfig) -> Self {
        Self {
            cfg,
            step: 0,
            vars,
            moments: BTreeMap::new(),
        }
    }

    /// The variables, by name.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// One update with learning rate `lr` from gradients already clipped/scaled. Variables with
    /// no gradient keep their value and moments.
    pub fn update(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.update_scaled(grads, lr, 1.0)
    }

    /// [`Self::update`] with every gradient multiplied by `grad_scale` first (the clipping
    /// factor of [`clip_scale`], applied inside the update instead of as a pass of its own).
    /// On CUDA each f32 variable takes one fused kernel (`so8t_model::fused::adamw`).
    pub fn update_scaled(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let c = &self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (name, var) in &self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // A decay would pull the learned α's logit toward 0, i.e. α toward ½.
            let decay = if name == crate::step::ALPHA_LOGIT {
                0.0
            } else {
                c.weight_decay
            };
            let fused_step = so8t_model::fused::AdamStep {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                decay,
                bias_correction: (bc1, bc2),
                grad_scale,
            };
            let mv = self.moments.get(name).map(|mo| (&mo.m, &mo.v));
            if let Some(out) = so8t_model::fused::adamw(var.as_tensor(), g, mv, &fused_step)? {
                var.set(&out.get(0)?)?;
                let (m, v) = (out.get(1)?, out.get(2)?);
                self.moments.insert(name.clone(), Moments { m, v });
                continue;
            }
            let g = g.to_dtype(DType::F32)?;
            let g = if grad_scale == 1.0 {
                g
            } else {
                (g * grad_scale)?
            };
            let (m, v) = match self.moments.get(name) {
                Some(mo) => (
                    ((&mo.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?,
                    ((&mo.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?,
                ),
                None => ((&g * (1.0 - c.beta1))?, (g.sqr()? * (1.0 - c.beta2))?),
            };
            let p = var.as_tensor().to_dtype(DType::F32)?;
            let p = (p * (1.0 - lr * decay))?;
            let denom = ((&v / bc2)?.sqrt()? + c.eps)?;
            let upd = ((&m / bc1)? / denom)?;
            let p = (p - (upd * lr)?)?;
            var.set(&p.to_dtype(var.dtype())?)?;
            self.moments.insert(name.clone(), Moments { m, v });
        }
        Ok(())
    }
}

/// How the learning rate moves after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    /// Half a cosine down to 0 at the last step (HF `get_cosine_schedule_with_warmup`).
    Cosine,
    /// Straight line down to 0 (HF `get_linear_schedule_with_warmup`).
    Linear,
    /// Stays at the peak.
    Constant,
}

/// The learning rate at optimizer step `step` (0-based) of `total`, as HF's schedulers compute
/// it: `lr · step / warmup` during warm-up, then the decay.
pub fn learning_rate(peak: f64, decay: LrDecay, warmup: u64, step: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match decay {
        LrDecay::Cosine => peak * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        LrDecay::Linear => peak * (1.0 - progress).max(0.0),
        LrDecay::Constant => peak,
    }
}

/// Global L2 norm of the gradients of `vars`; scales them in place to at most `max_norm` (if
/// given and positive). Returns the norm before clipping.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    vars: &BTreeMap<String, Var>,
    max_norm: Option<f64>,
) -> Result<f64> {
    let norm = grad_norm(grads, vars)?;
    let scale = clip_scale(norm, max_norm);
    if scale < 1.0 {
        for v in vars.values() {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}

/// The factor that brings gradients of global norm `norm` to at most `max_norm` (1 when they
/// are within it or no positive maximum is given).
pub fn clip_scale(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm.filter(|&m| m > 0.0) {
        Some(max) => (max / (norm + 1e-6)).min(1.0),
        None => 1.0,
    }
}

/// Global L2 norm of the gradients of `vars` (an error if it is not finite).
pub fn grad_norm(grads: &GradStore, vars: &BTreeMap<String, Var>) -> Result<f64> {
    // One read from the device for all tensors (a read per tensor waits for the queue each time).
    // Squares are summed per row first (in f32, one GPU block per row) and the row sums in f64:
    // a single whole-tensor reduction runs on one block of threads on a GPU.
    let mut parts = Vec::new();
    for v in vars.values() {
        if let Some(g) = grads.get(v.as_tensor()) {
            let rows = match g.rank() {
                0 | 1 => g.to_dtype(DType::F32)?.sqr()?.sum_all()?.reshape(1)?,
                _ => g
                    .to_dtype(DType::F32)?
                    .sqr()?
                    .sum(D::Minus1)?
                    .flatten_all()?,
            };
            parts.push(rows.to_dtype(DType::F64)?.sum_all()?.reshape(1)?);
        }
    }
    let sq = match parts.len() {
        0 => 0.0,
        _ => Tensor::cat(&parts, 0)?.sum_all()?.to_scalar::<f64>()?,
    };
    let norm = sq.sqrt();
    if !norm.is_finite() {
        return Err(Error::invalid(
            "gradients",
            format!("the gradient norm is {norm}: the loss diverged (lower the learning rate)"),
        ));
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_matches_the_formula() {
        let dev = Device::Cpu;
        let x = Var::new(&[1.0f32, -2.0], &dev).unwrap();
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut opt = AdamW::new([("x".to_string(), x.clone())].into(), cfg.clone());
        // Reference in f64: loss = Σ x³ → g = 3x².
        let mut p = [1.0f64, -2.0];
        let (mut m, mut v) = ([0f64; 2], [0f64; 2]);
        for t in 1..=3 {
            let loss = x.as_tensor().powf(3.0).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            opt.update(&grads, 0.1).unwrap();
            for i in 0..2 {
                let g = 3.0 * p[i] * p[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                p[i] *= 1.0 - 0.1 * 0.01;
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.999f64.powi(t));
                p[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = x.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - p[i]).abs() < 1e-6, "{got:?} vs {p:?}");
        }
        assert_eq!(opt.step, 3);
    }

    #[test]
    fn learning_rates_follow_hf_schedulers() {
        assert_eq!(learning_rate(1.0, LrDecay::Cosine, 10, 0, 110), 0.0);
        assert_eq!(learning_rate(1.0, LrDecay::Cosine, 10, 5, 110), 0.5);
        assert_eq!(learning_rate(1.0, LrDecay::Cosine, 10, 10, 110), 1.0);
        assert!((learning_rate(1.0, LrDecay::Cosine, 10, 60, 110) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, LrDecay::Cosine, 10, 110, 110).abs() < 1e-12);
        assert!((learning_rate(2.0, LrDecay::Linear, 0, 25, 100) - 1.5).abs() < 1e-12);
        assert_eq!(learning_rate(2.0, LrDecay::Constant, 0, 99, 100), 2.0);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let dev = Device::Cpu;
        let x = Var::new(&[3.0f32, 4.0], &dev).unwrap();
        let vars: BTreeMap<String, Var> = [("x".to_string(), x.clone())].into();
        let loss = (x.as_tensor() * x.as_tensor()).unwrap().sum_all().unwrap();
        let mut grads = loss.backward().unwrap(); // g = 2x = [6, 8], norm 10
        let n = clip_grad_norm(&mut grads, &vars, Some(1.0)).unwrap();
        assert!((n - 10.0).abs() < 1e-6);
        let g = grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
    }
}
