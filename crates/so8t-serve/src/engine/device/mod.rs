//! The engine on a candle device: the same decoder and batch contract as the native CPU engine
//! ([`super::forward`]), computed with candle's kernels — quantized GGUF matrices through its
//! quantized matmuls (MMVQ for a few rows, MMQ for prompts on CUDA), dense ones through cuBLAS,
//! keys and values in per-sequence device caches ([`DeviceKv`]). Built for CUDA GPUs; it also
//! runs on candle's CPU backend in f32, which is how the tests hold it to the native engine.
//!
//! One pass: the batch's tokens go through every matrix product together; attention runs per
//! *run* of consecutive positions of one sequence (a prompt slice or one generated token), over
//! that sequence's cache, with a causal mask inside the run.

mod kv;
mod weights;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::ops::{rms_norm, softmax_last_dim};
use candle_nn::rotary_emb::{rope, rope_i};

pub use kv::DeviceKv;
use weights::{DevQkv, DevUp, DevWeights};

use super::config::{EngineConfig, RopeStyle};
use super::forward::rope_tables;
use super::{BatchEntry, ForwardOut, SeqCache};

/// A model's weights on a device and the activation dtype its passes compute in.
pub struct DeviceEngine {
    dev: Device,
    dtype: DType,
    w: DevWeights,
}

/// Consecutive batch entries of one sequence at consecutive positions.
struct Run {
    cache: usize,
    start: usize,
    len: usize,
    pos0: usize,
    /// Additive causal mask `[len, pos0 + len]` (f32), for runs of more than one token.
    mask: Option<Tensor>,
}

impl DeviceEngine {
    /// Copies `model`'s weights onto `dev`: quantized matrices in their GGUF types, dense ones
    /// and norms in `dtype` (f32 on the CPU, where candle's quantized kernels want f32).
    /// `progress(done, total)` is called after each layer.
    pub fn new(
        model: &super::EngineModel,
        dev: &Device,
        dtype: DType,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        if dev.is_cpu() && dtype != DType::F32 {
            candle_core::bail!(
                "the device engine computes in f32 on the CPU (asked for {dtype:?})"
            );
        }
        let w = DevWeights::upload(&model.weights, dtype, dev, progress)?;
        Ok(Self {
            dev: dev.clone(),
            dtype,
            w,
        })
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// One batched pass with the native engine's contract ([`super::forward::forward`]):
    /// keys/values of every entry go into its sequence's cache, logits of the entries that ask
    /// for them into `out.logits` (f32, batch order), final hidden states into `out.hidden`
    /// when `want_hidden`. Cache lengths are the caller's to update.
    pub fn forward(
        &self,
        cfg: &EngineConfig,
        caches: &mut [&mut SeqCache],
        batch: &[BatchEntry],
        want_hidden: bool,
        out: &mut ForwardOut,
    ) -> Result<()> {
        out.logits.clear();
        out.hidden.clear();
        if batch.is_empty() {
            return Ok(());
        }
        let (n, hd, nh, nkv) = (batch.len(), cfg.head_dim, cfg.n_head, cfg.n_head_kv);
        let (qd, kvd, ff, half) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_ff, cfg.rope.dim / 2);
        self.prepare_caches(cfg, caches, batch)?;
        let runs = self.runs(batch)?;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        rope_tables(cfg, caches, batch, &mut cos, &mut sin);
        let table = |v: Vec<f32>| -> Result<Tensor> {
            Tensor::from_vec(v, (n, 1, half), &Device::Cpu)?
                .to_device(&self.dev)?
                .to_dtype(self.dtype)
        };
        let (cos, sin) = (table(cos)?, table(sin)?);
        let ids: Vec<u32> = batch.iter().map(|e| e.token).collect();
        let ids = Tensor::from_vec(ids, n, &self.dev)?;
        let mut x = self.w.tok_embd.index_select(&ids, 0)?;
        for (li, l) in self.w.layers.iter().enumerate() {
            let h = rms_norm(&x, &l.attn_norm, cfg.eps)?;
            let (q, k, v) = match &l.qkv {
                DevQkv::Fused(m) => {
                    let y = m.forward(&h)?;
                    (
                        y.narrow(1, 0, qd)?,
                        y.narrow(1, qd, kvd)?,
                        y.narrow(1, qd + kvd, kvd)?,
                    )
                }
                DevQkv::Split(a, b, c) => (a.forward(&h)?, b.forward(&h)?, c.forward(&h)?),
            };
            let q = self.rotate(cfg, &q, nh, &cos, &sin)?;
            let k = self.rotate(cfg, &k, nkv, &cos, &sin)?;
            let v = v.contiguous()?.reshape((n, nkv, hd))?;
            let outs = runs
                .iter()
                .map(|r| self.attend(cfg, r, caches, li, (&q, &k, &v)))
                .collect::<Result<Vec<_>>>()?;
            let att = Tensor::cat(&outs, 0)?; // one run: no copy
            x = (x + l.wo.forward(&att)?)?;
            let h = rms_norm(&x, &l.ffn_norm, cfg.eps)?;
            let (g, u) = match &l.up {
                DevUp::Fused(m) => {
                    let y = m.forward(&h)?;
                    (y.narrow(1, 0, ff)?, y.narrow(1, ff, ff)?)
                }
                DevUp::Split(g, u) => (g.forward(&h)?, u.forward(&h)?),
            };
            x = (x + l.down.forward(&(g.silu()? * u)?)?)?;
        }
        let h = rms_norm(&x, &self.w.norm, cfg.eps)?;
        if want_hidden {
            out.hidden = h.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        }
        let picked: Vec<u32> = (0..n as u32)
            .filter(|&i| batch[i as usize].logits)
            .collect();
        if picked.is_empty() {
            return Ok(());
        }
        let h = if picked.len() == n {
            h
        } else {
            let m = picked.len();
            h.index_select(&Tensor::from_vec(picked, m, &self.dev)?, 0)?
        };
        out.logits = self
            .w
            .output
            .forward(&h)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        Ok(())
    }

    /// Attention of one run in layer `li`: its keys/values (`[n, kv_heads, head_dim]` rows
    /// `r.start..`) go into its sequence's cache at `r.pos0`, then its queries attend over the
    /// cache's first `pos0 + len` positions. Returns `[len, q_dim]`.
    fn attend(
        &self,
        cfg: &EngineConfig,
        r: &Run,
        caches: &[&mut SeqCache],
        li: usize,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
    ) -> Result<Tensor> {
        let (hd, nh, nkv) = (cfg.head_dim, cfg.n_head, cfg.n_head_kv);
        let kv = caches[r.cache]
            .dev
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("a sequence without a device cache".into()))?;
        let (kc, vc) = (&kv.k[li], &kv.v[li]);
        // [len, heads, hd] rows of this run as [heads, len, hd] (no copy for one token).
        let head_major = |t: &Tensor| t.narrow(0, r.start, r.len)?.transpose(0, 1)?.contiguous();
        kc.slice_set(&head_major(k)?, 1, r.pos0)?;
        vc.slice_set(&head_major(v)?, 1, r.pos0)?;
        let len = r.pos0 + r.len;
        let (kc, vc) = (kc.narrow(1, 0, len)?, vc.narrow(1, 0, len)?);
        // Query heads grouped under their key/value head: [nkv, group · t, hd].
        let rows = nh / nkv * r.len;
        let qr = head_major(q)?.reshape((nkv, rows, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut s = (qr.matmul(&kc.t()?)?.to_dtype(DType::F32)? * scale)?;
        if let Some(m) = &r.mask {
            s = s
                .reshape((nkv, nh / nkv, r.len, len))?
                .broadcast_add(m)?
                .reshape((nkv, rows, len))?;
        }
        let p = softmax_last_dim(&s)?.to_dtype(self.dtype)?;
        let o = p.matmul(&vc)?.reshape((nh, r.len, hd))?.transpose(0, 1)?;
        o.contiguous()?.reshape((r.len, cfg.q_dim()))
    }

    /// RoPE on `t` (`[n, heads · head_dim]`), returned as `[n, heads, head_dim]`; only the
    /// first `rope.dim` dimensions of a head rotate.
    fn rotate(
        &self,
        cfg: &EngineConfig,
        t: &Tensor,
        heads: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        let (n, hd, dim) = (t.dim(0)?, cfg.head_dim, cfg.rope.dim);
        let t = t.contiguous()?.reshape((n, heads, 1, hd))?;
        let apply = |x: &Tensor| match cfg.rope.style {
            RopeStyle::Neox => rope(x, cos, sin),
            RopeStyle::Interleaved => rope_i(x, cos, sin),
        };
        let t = if dim == hd {
            apply(&t)?
        } else {
            let rot = apply(&t.narrow(D::Minus1, 0, dim)?.contiguous()?)?;
            Tensor::cat(&[&rot, &t.narrow(D::Minus1, dim, hd - dim)?], D::Minus1)?
        };
        t.reshape((n, heads, hd))
    }

    /// Gives every sequence of the batch a device cache with room for its positions.
    fn prepare_caches(
        &self,
        cfg: &EngineConfig,
        caches: &mut [&mut SeqCache],
        batch: &[BatchEntry],
    ) -> Result<()> {
        let mut need = vec![0usize; caches.len()];
        for e in batch {
            let slot = need.get_mut(e.cache).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "batch entry for cache {} of {}",
                    e.cache,
                    caches.len()
                ))
            })?;
            *slot = (*slot).max(e.pos + 1);
        }
        for (c, &positions) in caches.iter_mut().zip(&need) {
            if positions == 0 {
                continue;
            }
            let kv = match &mut c.dev {
                Some(kv) if kv.fits(&self.dev, self.dtype) => kv,
                Some(_) => candle_core::bail!("a sequence cache made for another device or dtype"),
                None => c.dev.insert(DeviceKv::new(
                    cfg.n_layer,
                    cfg.n_head_kv,
                    cfg.head_dim,
                    self.dtype,
                    &self.dev,
                )?),
            };
            kv.reserve(positions)?;
        }
        Ok(())
    }

    /// Splits the batch into runs and builds their masks.
    fn runs(&self, batch: &[BatchEntry]) -> Result<Vec<Run>> {
        let mut runs: Vec<Run> = Vec::new();
        for (i, e) in batch.iter().enumerate() {
            match runs.last_mut() {
                Some(r) if r.cache == e.cache && r.pos0 + r.len == e.pos => r.len += 1,
                _ => runs.push(Run {
                    cache: e.cache,
                    start: i,
                    len: 1,
                    pos0: e.pos,
                    mask: None,
                }),
            }
        }
        for r in runs.iter_mut().filter(|r| r.len > 1) {
            let (pos0, keys) = (r.pos0, r.pos0 + r.len);
            let mask: Vec<f32> = (0..r.len)
                .flat_map(|i| {
                    (0..keys).map(move |j| {
                        if j <= pos0 + i {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            r.mask = Some(Tensor::from_vec(mask, (r.len, keys), &self.dev)?);
        }
        Ok(runs)
    }
}
