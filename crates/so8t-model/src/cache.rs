//! The key/value cache, held outside the model so a server can keep one per sequence.

use candle_core::Tensor;

use crate::error::Result;

/// Per-layer keys and values `[B, kv_heads, S, head_dim]` of the tokens seen so far.
#[derive(Debug, Clone)]
pub struct Cache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    seq_len: usize,
}

impl Cache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            seq_len: 0,
        }
    }

    /// Number of positions cached.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Forgets every cached position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.seq_len = 0;
    }

    /// Appends new keys/values for `layer` and returns the full ones.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let slot = &mut self.layers[layer];
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Records that `n` positions were added (called once per forward, after all layers).
    pub(crate) fn advance(&mut self, n: usize) {
        self.seq_len += n;
    }

    /// Drops cached positions beyond `len` (for stop-string rollback or prompt reuse).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.seq_len {
            return Ok(());
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.narrow(2, 0, len)?;
            *v = v.narrow(2, 0, len)?;
        }
        self.seq_len = len;
        Ok(())
    }
}
