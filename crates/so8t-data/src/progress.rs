//! Progress of a long data command, shared with whoever draws it (the CLI's progress bar polls
//! it from another thread): bytes of input consumed out of a total.

use std::sync::atomic::{AtomicU64, Ordering};

/// Input bytes done out of a total; both may grow while the work runs.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// A fresh counter at 0 of 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds to the total.
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the bytes done.
    pub fn set_done(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }

    /// Adds to the bytes done.
    pub fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// `(done, total)`.
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}
