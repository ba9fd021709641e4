//! The key/value cache, held outside the model so a server can keep one per sequence.
//!
//! The cache is for generation: it keeps keys and values detached from the autograd graph. A
//! model with trainable variables (an RL policy with LoRA sampling its rollouts) would otherwise
//! chain every step's cache to the previous one through the graph and keep all of them alive:
//! memory quadratic in the answer length (tens of GB for a 3.8 B model and 32 answers).

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

    /// Appends new keys/values for `layer` and returns the full ones (detached).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (k, v) = (k.detach(), v.detach());
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Keys computed from a trainable variable enter the cache without their graph: what the
    /// cache returns has no gradient path back to the variable.
    #[test]
    fn cached_keys_and_values_are_detached() {
        let x = Var::new(&[[[[1f32, 2.0]]]], &Device::Cpu).unwrap();
        let mut cache = Cache::new(1);
        let mut last = None;
        for _ in 0..3 {
            let k = (x.as_tensor() * 2.0).unwrap();
            last = Some(cache.append(0, k.clone(), k).unwrap());
            cache.advance(1);
        }
        let (k, v) = last.unwrap();
        assert_eq!(k.dims(), &[1, 1, 3, 2]);
        let tracked = (x.as_tensor() * 3.0).unwrap().sum_all().unwrap();
        let loss = (k.sum_all().unwrap() + v.sum_all().unwrap() + tracked).unwrap();
        let grads = loss.backward().unwrap();
        // Only the direct term reaches x: d/dx of 3·Σx is 3 per element.
        let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), vec![3.0, 3.0]);
    }
}
