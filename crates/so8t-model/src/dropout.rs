//! Seeded dropout: the mask is a pure function of a seed, the layer and the element index, so a
//! training step can be replayed exactly — after a resume from a checkpoint, or when gradient
//! checkpointing recomputes a layer in the backward pass.
//!
//! The trainer runs each micro-batch's forward inside [`with_seed`]; [`dropout`] then draws its
//! mask from SplitMix64's mixer over (seed, layer key, index). Outside `with_seed` it falls back
//! to candle's unseeded dropout.

use std::cell::Cell;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::Result;

thread_local! {
    static SEED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The SplitMix64 output function (Steele, Lea & Flood 2014): a bijective 64-bit mixer, also a
/// good hash finalizer.
pub fn mix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `f` with dropout masks derived from `seed` (on this thread; nesting restores the outer
/// seed afterwards).
pub fn with_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let prev = SEED.with(|s| s.replace(Some(seed)));
    let out = f();
    SEED.with(|s| s.set(prev));
    out
}

/// The seed set by the innermost [`with_seed`] on this thread.
pub fn current_seed() -> Option<u64> {
    SEED.with(Cell::get)
}

/// A 64-bit key for a layer name (FNV-1a, mixed), so each layer draws its own mask.
pub fn key(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix64(h)
}

/// Inverted dropout of `x` with drop probability `p` (kept elements scaled by 1/(1 − p)).
/// Inside [`with_seed`] the mask depends only on the seed, `key` and the element index.
pub fn dropout(x: &Tensor, p: f32, key: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return Ok(x.zeros_like()?);
    }
    let Some(seed) = current_seed() else {
        return Ok(candle_nn::ops::dropout(x, p)?);
    };
    let base = mix64(seed ^ key.rotate_left(23));
    let threshold = (f64::from(p) * 18_446_744_073_709_551_616.0) as u64;
    let scale = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count() as u64)
        .into_par_iter()
        .map(|i| {
            let r = mix64(base.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            if r >= threshold {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn mix64_matches_the_reference_stream() {
        // splitmix64.c with state 0: outputs of mix64(k · golden ratio) for k = 1, 2.
        assert_eq!(mix64(0x9E37_79B9_7F4A_7C15), 0xE220_A839_7B1D_CDAF);
        assert_eq!(
            mix64(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(2)),
            0x6E78_9E6A_A1B9_65F4
        );
    }

    #[test]
    fn masks_repeat_under_a_seed_and_differ_across_seeds_and_layers() {
        let x = Tensor::ones((64, 128), candle_core::DType::F32, &Device::Cpu).unwrap();
        let draw = |seed: u64, k: u64| {
            with_seed(seed, || dropout(&x, 0.25, k).unwrap())
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let a = draw(1, key("model.layers.0.self_attn.o_proj"));
        assert_eq!(a, draw(1, key("model.layers.0.self_attn.o_proj")));
        assert_ne!(a, draw(2, key("model.layers.0.self_attn.o_proj")));
        assert_ne!(a, draw(1, key("model.layers.1.self_attn.o_proj")));
        // Inverted dropout: kept values are 1/(1 − p), about p of them dropped.
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.25).abs() < 0.02, "{dropped}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        assert_eq!(current_seed(), None, "the seed is scoped");
    }

    #[test]
    fn the_gradient_passes_the_same_mask() {
        let x = Var::new(&[[1f32, 2., 3., 4.], [5., 6., 7., 8.]], &Device::Cpu).unwrap();
        let y = with_seed(9, || dropout(x.as_tensor(), 0.5, 3).unwrap());
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let xs = x
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for ((g, y), x) in g.to_vec1::<f32>().unwrap().iter().zip(&y).zip(&xs) {
            assert!((g * x - y).abs() < 1e-6, "dy/dx is the mask");
        }
    }
}
