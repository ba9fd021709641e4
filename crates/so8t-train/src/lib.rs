//! The so8t trainer. This first slice holds the pieces of the objective that do not depend on
//! the training loop:
//!
//! - [`schedule`]: the alpha gate annealing schedules (spec §2) and the three-phase PET weight
//!   λ(phase) (spec §3);
//! - [`pet`]: the PET regularizer, the masked second difference of the final hidden states along
//!   positions, as a differentiable candle expression (spec §3).
//!
//! # Example
//! ```
//! use so8t_train::schedule::{AlphaSchedule, PetPhase, PetSchedule};
//! let alpha = AlphaSchedule::default(); // sigmoid 1.0 → φ⁻², centre 0.5, width 1/8
//! assert!((alpha.value(50, 100) - 0.690_983_005_625_052_5).abs() < 1e-12);
//! let pet = PetSchedule::default();
//! assert_eq!(pet.phase(20, 100), PetPhase::Transition);
//! assert_eq!(pet.lambda(60, 100), 0.1);
//! ```
#![warn(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod config;
mod error;
pub mod optim;
pub mod pet;
pub mod prepare;
pub mod preset;
mod profile;
mod recompute;
pub mod rl;
pub mod run;
pub mod runlog;
pub mod schedule;
pub mod step;
pub mod transition;

pub use error::{Error, Result};
pub use pet::pet_loss;
pub use schedule::{AlphaSchedule, PetPhase, PetSchedule, PHI_INV_SQ};
