//! Quantization: ggml block formats, written from llama.cpp's layouts and reference algorithms.
//!
//! [`quantize`] and [`dequantize`] handle one flat run of weights; [`quantize_rows`] splits a
//! tensor into chunks of rows and quantizes them in parallel (rayon). The quantizers are the
//! reference (no importance matrix) algorithms that `llama-quantize` runs, with llama.cpp's float
//! operation order, so their bytes match llama.cpp's. [`mix`] holds the Q4_K_M type choice.

mod float;
mod klow;
mod kquants;
mod lanes;
mod legacy;
pub mod mix;
mod q6_k;
mod types;

use rayon::prelude::*;

pub use float::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
pub use mix::{q4_k_m_plan, q4_k_m_type, FileType, MixContext};
pub use types::GgmlType;

use crate::error::{Error, Result};

/// Types that [`quantize`] can produce.
pub const QUANTIZE_TYPES: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

type QuantFn = fn(&[f32], &mut [u8]);
type DequantFn = fn(&[u8], &mut [f32]);

fn quant_fn(ty: GgmlType) -> Result<QuantFn> {
    Ok(match ty {
        GgmlType::F32 => float::quantize_f32,
        GgmlType::F16 => float::quantize_f16,
        GgmlType::BF16 => float::quantize_bf16,
        GgmlType::Q8_0 => legacy::quantize_q8_0,
        GgmlType::Q4_0 => legacy::quantize_q4_0,
        GgmlType::Q5_0 => legacy::quantize_q5_0,
        GgmlType::Q4_K => kquants::quantize_q4_k,
        GgmlType::Q5_K => kquants::quantize_q5_k,
        GgmlType::Q6_K => q6_k::quantize_q6_k,
        other => {
            return Err(Error::Quant(format!(
                "quantizing to {other} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, \
                 Q5_0, Q4_K, Q5_K, Q6_K)"
            )))
        }
    })
}

fn dequant_fn(ty: GgmlType) -> Result<DequantFn> {
    Ok(match ty {
        GgmlType::F32 => float::dequantize_f32,
        GgmlType::F16 => float::dequantize_f16,
        GgmlType::BF16 => float::dequantize_bf16,
        GgmlType::Q8_0 => legacy::dequantize_q8_0,
        GgmlType::Q4_0 => legacy::dequantize_q4_0,
        GgmlType::Q4_1 => legacy::dequantize_q4_1,
        GgmlType::Q5_0 => legacy::dequantize_q5_0,
        GgmlType::Q5_1 => legacy::dequantize_q5_1,
        GgmlType::Q2_K => klow::dequantize_q2_k,
        GgmlType::Q3_K => klow::dequantize_q3_k,
        GgmlType::Q4_K => kquants::dequantize_q4_k,
        GgmlType::Q5_K => kquants::dequantize_q5_k,
        GgmlType::Q6_K => q6_k::dequantize_q6_k,
        GgmlType::Q8_K => klow::dequantize_q8_k,
        other => {
            return Err(Error::Quant(format!(
                "dequantizing {other} is not supported"
            )))
        }
    })
}

fn check_blocks(ty: GgmlType, n: usize, what: &str) -> Result<usize> {
    let bs = ty.block_size();
    if !n.is_multiple_of(bs) {
        return Err(Error::Quant(format!(
            "{what} of {n} weights is not a multiple of the {ty} block size {bs}"
        )));
    }
    Ok(n / bs * ty.type_size())
}

/// Quantizes `src` to `ty` (`src.len()` must be a multiple of `ty.block_size()`); single-threaded.
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>> {
    let f = quant_fn(ty)?;
    let bytes = check_blocks(ty, src.len(), "input")?;
    let mut out = vec![0u8; bytes];
    f(src, &mut out);
    Ok(out)
}

/// Decodes `n` weights of type `ty` from `data` (which must hold exactly `n` weights' bytes).
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    let f = dequant_fn(ty)?;
    let bytes = check_blocks(ty, n, "output")?;
    if data.len() != bytes {
        return Err(Error::Quant(format!(
            "{n} weights of {ty} take {bytes} bytes, got {}",
            data.len()
        )));
    }
    let mut out = vec![0f32; n];
    f(data, &mut out);
    Ok(out)
}

/// Weights per parallel work item of [`quantize_rows`] (whole rows, at least one).
const CHUNK_WEIGHTS: usize = 1 << 18;

/// Quantizes a row-major tensor of rows of `row_len` weights, chunks of rows in parallel (rayon).
/// The bytes equal [`quantize`] of the whole buffer; `row_len` must be a multiple of the block size.
pub fn quantize_rows(ty: GgmlType, src: &[f32], row_len: usize) -> Result<Vec<u8>> {
    let f = quant_fn(ty)?;
    if row_len == 0 || !src.len().is_multiple_of(row_len) {
        return Err(Error::Quant(format!(
            "{} weights are not a whole number of rows of {row_len}",
            src.len()
        )));
    }
    let row_bytes = check_blocks(ty, row_len, "a row")?;
    let rows_per_chunk = (CHUNK_WEIGHTS / row_len).max(1);
    let mut out = vec![0u8; src.len() / row_len * row_bytes];
    out.par_chunks_mut(rows_per_chunk * row_bytes)
        .zip(src.par_chunks(rows_per_chunk * row_len))
        .for_each(|(o, s)| f(s, o));
    Ok(out)
}

/// Decodes a tensor of `n` weights in parallel chunks; same result as [`dequantize`].
pub fn dequantize_par(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    let f = dequant_fn(ty)?;
    let bytes = check_blocks(ty, n, "output")?;
    if data.len() != bytes {
        return Err(Error::Quant(format!(
            "{n} weights of {ty} take {bytes} bytes, got {}",
            data.len()
        )));
    }
    let blocks_per_chunk = (CHUNK_WEIGHTS / ty.block_size()).max(1);
    let mut out = vec![0f32; n];
    out.par_chunks_mut(blocks_per_chunk * ty.block_size())
        .zip(data.par_chunks(blocks_per_chunk * ty.type_size()))
        .for_each(|(o, d)| f(d, o));
    Ok(out)
}
