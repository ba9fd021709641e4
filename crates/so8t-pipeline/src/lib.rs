//! `so8t-pipeline`: the whole SO8T flow as resumable steps (spec §6–7, issue 9).
//!
//! - [`config`], [`steps`], [`runner`], [`journal`], [`envcheck`], [`status`]: `so8t pipeline
//!   run|status` — data → think → base → train → bake → export → import → eval A/B → A/B report,
//!   each step skipped when its inputs and outputs are unchanged, redone otherwise.
//! - [`lock`]: one process per directory (a lock file holding the owner's PID; stale locks of
//!   dead processes are taken over).
//! - [`notify`]: desktop, sound and webhook notifications; a failing notifier never fails the
//!   caller.
//! - [`registry`] and [`service`]: the list of unfinished pipelines and training runs, and the
//!   systemd unit / Windows task that resumes them at boot.
//! - [`watch`] and [`logrotate`]: the watch daemon that runs the post-training workflow once per
//!   finished training run, with size-rotated log files.

pub mod config;
pub mod envcheck;
pub mod journal;
pub mod lock;
pub mod logrotate;
pub mod notify;
pub mod registry;
pub mod runner;
pub mod service;
pub mod status;
pub mod steps;
pub mod watch;

use std::path::{Path, PathBuf};

/// Errors of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A bad configuration.
    #[error("{path}: {msg}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A step failed.
    #[error("step {step}: {msg}")]
    Step {
        /// The step.
        step: String,
        /// What went wrong.
        msg: String,
    },
    /// The environment lacks what a step needs.
    #[error("environment check failed: {0}")]
    Env(String),
    /// The folder is locked by another pipeline.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// A file error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl PipelineError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    /// A step error from anything displayable.
    pub fn step(step: &str, e: impl std::fmt::Display) -> Self {
        Self::Step {
            step: step.into(),
            msg: e.to_string(),
        }
    }
}
