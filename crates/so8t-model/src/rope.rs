//! Rotary position embeddings with the scalings of `transformers/modeling_rope_utils.py`:
//! default, linear, Llama-3 smoothing and Phi-3 LongRoPE (short/long factors picked per forward
//! call by the highest position it touches, cos/sin multiplied by the attention factor).

use candle_core::{DType, Device, Tensor};

use crate::config::{RopeConfig, RopeScaling};
use crate::error::Result;

/// Precomputed inverse frequencies; cos/sin for a position range are made on demand.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f64>,
    /// LongRoPE only: frequencies used beyond the original context.
    long_inv_freq: Option<(Vec<f64>, usize)>,
    attention_factor: f64,
    rotary_dim: usize,
}

fn base_inv_freq(theta: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / dim as f64))
        .collect()
}

impl RotaryEmbedding {
    /// Builds the frequency tables from the resolved RoPE config.
    pub fn new(cfg: &RopeConfig) -> Self {
        let dim = cfg.rotary_dim;
        let base = base_inv_freq(cfg.theta, dim);
        let (inv_freq, long_inv_freq, attention_factor) = match &cfg.scaling {
            RopeScaling::None => (base, None, 1.0),
            RopeScaling::Linear { factor } => {
                (base.iter().map(|f| f / factor).collect(), None, 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let f = base
                    .iter()
                    .map(|&inv| {
                        let wavelen = 2.0 * std::f64::consts::PI / inv;
                        if wavelen < high_wavelen {
                            inv
                        } else if wavelen > low_wavelen {
                            inv / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * inv / factor + smooth * inv
                        }
                    })
                    .collect();
                (f, None, 1.0)
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                let short = base.iter().zip(short_factor).map(|(b, s)| b / s).collect();
                let long = base.iter().zip(long_factor).map(|(b, l)| b / l).collect();
                (
                    short,
                    Some((long, *original_max_position_embeddings)),
                    *attention_factor,
                )
            }
        };
        Self {
            inv_freq,
            long_inv_freq,
            attention_factor,
            rotary_dim: dim,
        }
    }

    /// Number of rotated dimensions per head.
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }

    /// The frequencies a forward call over positions `[offset, offset + len)` uses.
    fn freqs_for(&self, offset: usize, len: usize) -> &[f64] {
        match &self.long_inv_freq {
            Some((long, orig)) if offset + len > *orig => long,
            _ => &self.inv_freq,
        }
    }

    /// `(cos, sin)`, each `[len, rotary_dim / 2]`, for positions `offset..offset + len`.
    pub fn cos_sin(
        &self,
        offset: usize,
        len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let freqs = self.freqs_for(offset, len);
        let half = freqs.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in offset..offset + len {
            for f in freqs {
                // transformers computes the angle in f32; round it the same way before cos/sin.
                let angle = (p as f32 * *f as f32) as f64;
                cos.push((angle.cos() * self.attention_factor) as f32);
                sin.push((angle.sin() * self.attention_factor) as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}
