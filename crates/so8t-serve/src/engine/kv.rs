//! The key/value cache of one sequence: per layer, f32 keys and values for every position so far
//! (`[position][kv_head][head_dim]`), grown on demand; or, for the device engine, the same on a
//! device ([`super::device::DeviceKv`]).

use super::config::EngineConfig;

/// Cached keys and values of one sequence (clone it to branch a shared prefix).
#[derive(Clone)]
pub struct SeqCache {
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
    kv_dim: usize,
    cap: usize,
    /// Positions whose keys and values are stored (`0..len`).
    pub len: usize,
    /// LongRoPE: this sequence uses the long factors (chosen once, from its context size).
    pub long_rope: bool,
    /// Keys and values on a device, when a device engine runs this sequence.
    pub(crate) dev: Option<super::device::DeviceKv>,
}

impl SeqCache {
    /// An empty cache for a model of shape `cfg`.
    pub fn new(cfg: &EngineConfig) -> Self {
        Self {
            k: vec![Vec::new(); cfg.n_layer],
            v: vec![Vec::new(); cfg.n_layer],
            kv_dim: cfg.kv_dim(),
            cap: 0,
            len: 0,
            long_rope: false,
            dev: None,
        }
    }

    /// Makes room for `positions` positions.
    pub fn reserve(&mut self, positions: usize) {
        if positions <= self.cap {
            return;
        }
        let cap = positions.max(self.cap * 2).max(64);
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            buf.resize(cap * self.kv_dim, 0.0);
        }
        self.cap = cap;
    }

    /// Forgets everything after the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held (in host memory and on a device).
    pub fn size_bytes(&self) -> usize {
        2 * self.k.len() * self.cap * self.kv_dim * 4
            + self.dev.as_ref().map_or(0, |d| d.size_bytes())
    }
}
