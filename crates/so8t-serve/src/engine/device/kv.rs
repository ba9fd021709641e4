//! A sequence's key/value cache on a candle device: per layer, keys and values as
//! `[kv_heads, capacity, head_dim]` tensors (a head's positions are rows of one matrix, so the
//! attention's products read them in place), grown by doubling. Clones share the tensors until
//! one of them is written (copy on write), so branching a long prompt costs nothing up front.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

/// Keys and values of one sequence on the device.
#[derive(Clone)]
pub struct DeviceKv {
    pub(super) k: Vec<Tensor>,
    pub(super) v: Vec<Tensor>,
    cap: usize,
    /// Held by every clone that shares these tensors.
    share: Arc<()>,
}

impl DeviceKv {
    /// An empty cache for `layers` layers of `kv_heads` × `head_dim`.
    pub(super) fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let empty = || Tensor::zeros((kv_heads, 0, head_dim), dtype, dev);
        Ok(Self {
            k: (0..layers).map(|_| empty()).collect::<Result<_>>()?,
            v: (0..layers).map(|_| empty()).collect::<Result<_>>()?,
            cap: 0,
            share: Arc::new(()),
        })
    }

    /// Whether this cache was made for `dev` and `dtype`.
    pub(super) fn fits(&self, dev: &Device, dtype: DType) -> bool {
        self.k
            .first()
            .is_none_or(|k| k.device().same_device(dev) && k.dtype() == dtype)
    }

    /// Makes room for `positions` positions (keeping what is stored) in tensors that no clone
    /// shares, so they can be written.
    pub(super) fn reserve(&mut self, positions: usize) -> Result<()> {
        if positions <= self.cap {
            if Arc::strong_count(&self.share) > 1 {
                for t in self.k.iter_mut().chain(self.v.iter_mut()) {
                    *t = t.copy()?;
                }
                self.share = Arc::new(());
            }
            return Ok(());
        }
        let cap = positions.max(self.cap * 2).max(64);
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            let (h, _, d) = t.dims3()?;
            let grown = Tensor::zeros((h, cap, d), t.dtype(), t.device())?;
            if self.cap > 0 {
                grown.slice_set(t, 1, 0)?;
            }
            *t = grown;
        }
        self.cap = cap;
        self.share = Arc::new(());
        Ok(())
    }

    /// Bytes held on the device.
    pub fn size_bytes(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}
