//! `so8t rl`: reinforcement learning of the SO8T model on the four-class /think task (spec §8),
//! PPO or GRPO, with the alpha gate annealed over the RL steps, in a run folder with the same
//! contract as SFT (run database, metrics, rolling/final/emergency checkpoints, bit-identical
//! resume).
//!
//! - [`config`]: the `rl.yaml` settings;
//! - [`reward`]: the reward terms (class, format, leak, over-length) and external scorers;
//! - [`advantage`]: GAE, whitening, group advantages, clipped losses, adaptive β (numbers);
//! - [`rollout`]: batched sampling with the KV cache and per-row seeds;
//! - [`loss`]: per-token log-probabilities, entropies and values; PPO and GRPO losses;
//! - [`step`]: one RL step (rollouts, rewards, advantages, updates);
//! - [`run`]: the loop in a run folder.

pub mod advantage;
pub mod config;
pub mod loss;
pub mod reward;
pub mod rollout;
pub mod run;
pub mod step;

#[cfg(test)]
mod loss_tests;
#[cfg(test)]
mod reward_tests;
