//! Schedules over optimizer steps: the SO(8) gate strength α(t) (spec §2) and the PET weight
//! λ(phase) (spec §3).
//!
//! Both are functions of `(step, total)`: `step` is the 0-based optimizer step, `total` the number
//! of optimizer steps T of the run. The fixtures evaluate α at t = 0..=T (T + 1 values) and λ at
//! t = 0..T (T values).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// φ⁻² = (3 − √5)/2 ≈ 0.381966, the default final gate strength (φ the golden ratio).
pub const PHI_INV_SQ: f64 = 0.381_966_011_250_105_15;

fn one() -> f64 {
    1.0
}
fn phi_inv_sq() -> f64 {
    PHI_INV_SQ
}
fn half() -> f64 {
    0.5
}
fn eighth() -> f64 {
    0.125
}

/// The logistic function σ(x) = 1 / (1 + e^(−x)).
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// How the gate strength α moves over training (spec §2). Serialized with a `schedule` tag, e.g.
/// `{"schedule": "sigmoid", "start": 1.0, "end": 0.381966, "center": 0.5, "width": 0.125}`;
/// omitted fields take the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "schedule", rename_all = "lowercase", deny_unknown_fields)]
pub enum AlphaSchedule {
    /// α(t) = end + (start − end)·(1 − σ((t − center·T)/(width·T))): close to `start` early,
    /// crossing the midpoint at t = center·T, close to `end` late.
    Sigmoid {
        /// α at the beginning (default 1.0).
        #[serde(default = "one")]
        start: f64,
        /// α at the end (default φ⁻²).
        #[serde(default = "phi_inv_sq")]
        end: f64,
        /// The midpoint as a fraction of the run (default 0.5).
        #[serde(default = "half")]
        center: f64,
        /// The transition width as a fraction of the run (default 1/8); must be > 0.
        #[serde(default = "eighth")]
        width: f64,
    },
    /// α(t) = start + (end − start)·min(t/T, 1).
    Linear {
        /// α at step 0 (default 1.0).
        #[serde(default = "one")]
        start: f64,
        /// α from step T on (default φ⁻²).
        #[serde(default = "phi_inv_sq")]
        end: f64,
    },
    /// α(t) = value.
    Constant {
        /// The fixed gate strength.
        value: f64,
    },
    /// α = σ(a) with `a` a trainable scalar initialised to logit(`init`), optionally pulled
    /// towards `target` by the penalty `pull`·(α − target)². This schedule only reports the
    /// initial value ([`AlphaSchedule::value`]) and the penalty ([`AlphaSchedule::pull_penalty`]);
    /// the parameter itself lives in the trainer.
    Learned {
        /// The initial α, strictly between 0 and 1.
        init: f64,
        /// Where the pull draws α (default φ⁻²).
        #[serde(default = "phi_inv_sq")]
        target: f64,
        /// λ_α, the weight of the pull (default 0: no pull).
        #[serde(default)]
        pull: f64,
    },
}

impl Default for AlphaSchedule {
    /// The sigmoid schedule with its defaults (1.0 → φ⁻², center 0.5, width 1/8).
    fn default() -> Self {
        Self::Sigmoid {
            start: 1.0,
            end: PHI_INV_SQ,
            center: 0.5,
            width: 0.125,
        }
    }
}

impl AlphaSchedule {
    /// α at optimizer step `step` of `total`. Steps past `total` continue the curve (sigmoid) or
    /// hold the end value (linear); `total = 0` gives the end value. For [`Self::Learned`] this is
    /// the initial α.
    pub fn value(&self, step: u64, total: u64) -> f64 {
        match *self {
            Self::Sigmoid {
                start,
                end,
                center,
                width,
            } => {
                if total == 0 {
                    return end;
                }
                let (t, tt) = (step as f64, total as f64);
                end + (start - end) * (1.0 - sigmoid((t - center * tt) / (width * tt)))
            }
            Self::Linear { start, end } => start + (end - start) * progress(step, total).min(1.0),
            Self::Constant { value } => value,
            Self::Learned { init, .. } => init,
        }
    }

    /// Whether α is a trainable parameter rather than a function of the step.
    pub fn is_learned(&self) -> bool {
        matches!(self, Self::Learned { .. })
    }

    /// For [`Self::Learned`], the initial value of the trainable logit a = ln(init/(1 − init)).
    pub fn init_logit(&self) -> Option<f64> {
        match *self {
            Self::Learned { init, .. } => Some((init / (1.0 - init)).ln()),
            _ => None,
        }
    }

    /// The pull penalty λ_α·(α − target)² for [`Self::Learned`] at gate strength `alpha`; 0 for
    /// the other schedules.
    pub fn pull_penalty(&self, alpha: f64) -> f64 {
        match *self {
            Self::Learned { target, pull, .. } => pull * (alpha - target).powi(2),
            _ => 0.0,
        }
    }

    /// Checks the settings; the error names the field (`alpha.width`, …). Gate strengths must lie
    /// in [0, 1], `width` must be > 0, a learned `init` strictly inside (0, 1) and `pull` ≥ 0.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Sigmoid {
                start,
                end,
                center,
                width,
            } => {
                unit("alpha.start", start)?;
                unit("alpha.end", end)?;
                if !center.is_finite() {
                    return Err(Error::invalid("alpha.center", "must be a finite number"));
                }
                if !(width.is_finite() && width > 0.0) {
                    return Err(Error::invalid(
                        "alpha.width",
                        format!("must be > 0, got {width}"),
                    ));
                }
            }
            Self::Linear { start, end } => {
                unit("alpha.start", start)?;
                unit("alpha.end", end)?;
            }
            Self::Constant { value } => unit("alpha.value", value)?,
            Self::Learned { init, target, pull } => {
                if !(init > 0.0 && init < 1.0) {
                    return Err(Error::invalid(
                        "alpha.init",
                        format!("must lie strictly between 0 and 1 (α = σ(a)), got {init}"),
                    ));
                }
                unit("alpha.target", target)?;
                non_negative("alpha.pull", pull)?;
            }
        }
        Ok(())
    }
}

/// The three PET phases over the run (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PetPhase {
    /// [0, transition_start·T): weak smoothing.
    Exploration,
    /// [transition_start·T, stabilization_start·T).
    Transition,
    /// [stabilization_start·T, T): strongest smoothing.
    Stabilization,
}

impl PetPhase {
    /// The lowercase name used in logs and configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exploration => "exploration",
            Self::Transition => "transition",
            Self::Stabilization => "stabilization",
        }
    }
}

impl std::fmt::Display for PetPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The PET weight λ per phase and the phase boundaries as fractions of the run (spec §3).
/// Deserializes with every field optional (defaults as in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PetSchedule {
    /// λ in the exploration phase (default 0.01).
    pub lambda_exploration: f64,
    /// λ in the transition phase (default 0.05).
    pub lambda_transition: f64,
    /// λ in the stabilization phase (default 0.1).
    pub lambda_stabilization: f64,
    /// Where the transition phase starts, as a fraction of T (default 0.2).
    pub transition_start: f64,
    /// Where the stabilization phase starts, as a fraction of T (default 0.6).
    pub stabilization_start: f64,
    /// Huber δ for the per-element penalty; `None` (default) for the plain square.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub huber_delta: Option<f64>,
}

impl Default for PetSchedule {
    fn default() -> Self {
        Self {
            lambda_exploration: 0.01,
            lambda_transition: 0.05,
            lambda_stabilization: 0.1,
            transition_start: 0.2,
            stabilization_start: 0.6,
            huber_delta: None,
        }
    }
}

impl PetSchedule {
    /// The phase of optimizer step `step` of `total`, decided on the fraction `step / total`
    /// (so step 20 of 100 is exactly at 0.2 and already in the transition phase). Steps at or
    /// past `total`, and any step when `total = 0`, are in the stabilization phase.
    pub fn phase(&self, step: u64, total: u64) -> PetPhase {
        let p = progress(step, total);
        if p < self.transition_start {
            PetPhase::Exploration
        } else if p < self.stabilization_start {
            PetPhase::Transition
        } else {
            PetPhase::Stabilization
        }
    }

    /// λ of a phase.
    pub fn lambda_of(&self, phase: PetPhase) -> f64 {
        match phase {
            PetPhase::Exploration => self.lambda_exploration,
            PetPhase::Transition => self.lambda_transition,
            PetPhase::Stabilization => self.lambda_stabilization,
        }
    }

    /// λ at optimizer step `step` of `total`: `lambda_of(phase(step, total))`.
    pub fn lambda(&self, step: u64, total: u64) -> f64 {
        self.lambda_of(self.phase(step, total))
    }

    /// Checks the settings; the error names the field (`pet.transition_start`, …). Every λ must be
    /// ≥ 0, the boundaries must satisfy 0 ≤ transition_start ≤ stabilization_start ≤ 1 and a Huber
    /// δ must be > 0.
    pub fn validate(&self) -> Result<()> {
        non_negative("pet.lambda_exploration", self.lambda_exploration)?;
        non_negative("pet.lambda_transition", self.lambda_transition)?;
        non_negative("pet.lambda_stabilization", self.lambda_stabilization)?;
        unit("pet.transition_start", self.transition_start)?;
        unit("pet.stabilization_start", self.stabilization_start)?;
        if self.transition_start > self.stabilization_start {
            return Err(Error::invalid(
                "pet.stabilization_start",
                format!(
                    "must be ≥ pet.transition_start ({}), got {}",
                    self.transition_start, self.stabilization_start
                ),
            ));
        }
        if let Some(d) = self.huber_delta {
            if !(d.is_finite() && d > 0.0) {
                return Err(Error::invalid(
                    "pet.huber_delta",
                    format!("must be > 0, got {d}"),
                ));
            }
        }
        Ok(())
    }
}

/// step / total, with `total = 0` read as a finished run (1.0).
fn progress(step: u64, total: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        step as f64 / total as f64
    }
}

fn unit(field: &str, v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must lie in [0, 1], got {v}"),
        ))
    }
}

fn non_negative(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("must be ≥ 0, got {v}")))
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
