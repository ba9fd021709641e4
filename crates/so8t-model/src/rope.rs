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

    /// Inverse frequencies per rotated pair (the short ones for LongRoPE).
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// LongRoPE only: the long inverse frequencies and the context length beyond which they apply.
    pub fn long_inv_freq(&self) -> Option<(&[f64], usize)> {
        self.long_inv_freq.as_ref().map(|(f, n)| (f.as_slice(), *n))
    }

    /// Multiplier of cos and sin (LongRoPE's attention factor, else 1).
    pub fn attention_factor(&self) -> f64 {
        self.attention_factor
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

    /// `(cos, sin)`, each `[sum(lens), rotary_dim / 2]`, for packed sequences: positions restart
    /// at 0 for every sequence, and each chooses its frequencies (LongRoPE short/long) by its own
    /// length, as if it ran alone.
    pub fn cos_sin_segments(
        &self,
        lens: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let mut cos = Vec::with_capacity(lens.len());
        let mut sin = Vec::with_capacity(lens.len());
        for &n in lens {
            let (c, s) = self.cos_sin(0, n, dtype, device)?;
            cos.push(c);
            sin.push(s);
        }
        Ok((Tensor::cat(&cos, 0)?, Tensor::cat(&sin, 0)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// transformers 5.23 `_compute_llama3_parameters` for this config (see the test body).
    const LLAMA3_INV_FREQ: [f64; 32] = [
        1.0,
        0.663601279258728,
        0.44036662578582764,
        0.2922278344631195,
        0.193922758102417,
        0.12868738174438477,
        0.08539710193872452,
        0.05666961893439293,
        0.03760603070259094,
        0.02495540864765644,
        0.016560440883040428,
        0.010989529080688953,
        0.00729266507551074,
        0.00483942124992609,
        0.0032114461064338684,
        0.0013718936825171113,
        0.0005248460220173001,
        0.0001785077911335975,
        7.784655463183299e-05,
        5.165906986803748e-05,
        3.428102354519069e-05,
        2.2748929040972143e-05,
        1.5096217794052791e-05,
        1.0017868589784484e-05,
        6.647869668086059e-06,
        4.411534519022098e-06,
        2.927499735960737e-06,
        1.9426925064180978e-06,
        1.289173155782919e-06,
        8.554969213037111e-07,
        5.677088097399974e-07,
        3.76732259610435e-07,
    ];

    fn cfg(v: serde_json::Value) -> Config {
        Config::from_value(&v, std::path::Path::new("config.json")).unwrap()
    }

    #[test]
    fn llama3_frequencies_match_transformers() {
        let c = cfg(serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 128, "num_attention_heads": 2,
            "intermediate_size": 256, "num_hidden_layers": 1, "vocab_size": 10, "rope_theta": 500000.0,
            "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        }));
        let r = RotaryEmbedding::new(&c.rope);
        assert_eq!(r.inv_freq.len(), 32);
        for (i, (got, want)) in r.inv_freq.iter().zip(LLAMA3_INV_FREQ).enumerate() {
            assert!(
                ((got - want) / want).abs() < 1e-6,
                "inv_freq[{i}] = {got}, transformers {want}"
            );
        }
    }

    #[test]
    fn phi35_style_rope_scaling_is_read_with_top_level_theta() {
        // Published Phi-3.5-mini layout: rope_scaling {type, long_factor, short_factor},
        // rope_theta and original_max_position_embeddings at the top level.
        let short = vec![1.0; 8];
        let long: Vec<f64> = (0..8).map(|i| 1.0 + i as f64).collect();
        let c = cfg(serde_json::json!({
            "architectures": ["Phi3ForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 128, "num_hidden_layers": 1, "vocab_size": 10, "rope_theta": 10000.0,
            "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
            "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long},
            "sliding_window": 262144
        }));
        match &c.rope.scaling {
            RopeScaling::LongRope {
                original_max_position_embeddings,
                attention_factor,
                long_factor,
                ..
            } => {
                assert_eq!(*original_max_position_embeddings, 4096);
                let want = (1.0 + (32.0f64).ln() / (4096f64).ln()).sqrt();
                assert!((attention_factor - want).abs() < 1e-12);
                assert_eq!(long_factor[7], 8.0);
            }
            other => panic!("expected longrope, got {other:?}"),
        }
        assert_eq!(c.rope.theta, 10000.0);
        assert_eq!(c.sliding_window, Some(262144));
        let r = RotaryEmbedding::new(&c.rope);
        // Short factors up to 4096 positions, long ones beyond.
        assert_eq!(r.freqs_for(0, 4096)[1], r.inv_freq[1]);
        assert_eq!(
            r.freqs_for(4000, 97)[1],
            r.long_inv_freq.as_ref().unwrap().0[1]
        );
    }

    #[test]
    fn unsupported_rope_types_are_named() {
        let e = Config::from_value(
            &serde_json::json!({
                "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
                "intermediate_size": 128, "num_hidden_layers": 1, "vocab_size": 10,
                "rope_scaling": {"rope_type": "yarn", "factor": 4.0}
            }),
            std::path::Path::new("cfg.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cfg.json") && e.contains("yarn"), "{e}");
    }
}
