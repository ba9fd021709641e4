//! A CPU kernel for the decode step: y = x Wᵀ for a few rows of x (1–4 tokens) against a
//! row-major weight in f32, bf16 or f16, converted to f32 on the fly and parallel over output
//! rows. Decoding is memory-bound; reading bf16 weights directly halves the traffic, where a
//! general GEMM would first widen them. `reference_matmul` is the slow, obvious twin used by tests.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::Result;

/// The most rows of x this kernel handles (more go to the general GEMM).
pub const MAX_ROWS: usize = 4;

trait ToF32: Copy + Send + Sync {
    fn f(self) -> f32;
    /// A SIMD dot product where the CPU has one (AVX2 + FMA); `None` = use the portable loop.
    #[inline(always)]
    fn simd_dot(_w: &[Self], _x: &[f32]) -> Option<f32> {
        None
    }
}
impl ToF32 for f32 {
    #[inline(always)]
    fn f(self) -> f32 {
        self
    }
    #[inline(always)]
    fn simd_dot(w: &[Self], x: &[f32]) -> Option<f32> {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: AVX2 and FMA were detected at run time; slices have equal length.
            return Some(unsafe { avx2::dot_f32(w, x) });
        }
        None
    }
}
impl ToF32 for bf16 {
    #[inline(always)]
    fn f(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[inline(always)]
    fn simd_dot(w: &[Self], x: &[f32]) -> Option<f32> {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: AVX2 and FMA were detected at run time; slices have equal length.
            return Some(unsafe { avx2::dot_bf16(w, x) });
        }
        None
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use half::bf16;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Σ w·x for f32 weights.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            a0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(w.as_ptr().add(i)),
                _mm256_loadu_ps(x.as_ptr().add(i)),
                a0,
            );
            a1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(w.as_ptr().add(i + 8)),
                _mm256_loadu_ps(x.as_ptr().add(i + 8)),
                a1,
            );
            i += 16;
        }
        let mut s = hsum(_mm256_add_ps(a0, a1));
        while i < n {
            s += w[i] * x[i];
            i += 1;
        }
        s
    }

    /// Σ w·x for bf16 weights, widened to f32 by a 16-bit shift in registers.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let p = w.as_ptr() as *const u16;
        let mut i = 0;
        while i + 16 <= n {
            let raw = _mm256_loadu_si256(p.add(i) as *const __m256i);
            let lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(raw));
            let hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(raw, 1));
            let w0 = _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16));
            let w1 = _mm256_castsi256_ps(_mm256_slli_epi32(hi, 16));
            a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x.as_ptr().add(i)), a0);
            a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x.as_ptr().add(i + 8)), a1);
            i += 16;
        }
        let mut s = hsum(_mm256_add_ps(a0, a1));
        while i < n {
            s += f32::from_bits((w[i].to_bits() as u32) << 16) * x[i];
            i += 1;
        }
        s
    }
}
impl ToF32 for f16 {
    #[inline(always)]
    fn f(self) -> f32 {
        self.to_f32()
    }
}

#[inline(always)]
fn dot<W: ToF32>(w: &[W], x: &[f32]) -> f32 {
    if let Some(s) = W::simd_dot(w, x) {
        return s;
    }
    let mut acc = [0f32; 8];
    let chunks = w.len() / 8;
    for c in 0..chunks {
        let (wc, xc) = (&w[c * 8..c * 8 + 8], &x[c * 8..c * 8 + 8]);
        for k in 0..8 {
            acc[k] += wc[k].f() * xc[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for k in chunks * 8..w.len() {
        s += w[k].f() * x[k];
    }
    s
}

fn run<W: ToF32>(w: &[W], x: &[f32], rows: usize, out_f: usize, in_f: usize) -> Vec<f32> {
    // Output-row blocks so that each task reads a contiguous slab of W once for all x rows;
    // results land as [out, rows] and are transposed to [rows, out] only when rows > 1.
    const BLOCK: usize = 64;
    let mut yt = vec![0f32; out_f * rows];
    yt.par_chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(b, chunk)| {
            for (j, yo) in chunk.chunks_mut(rows).enumerate() {
                let o = b * BLOCK + j;
                let wr = &w[o * in_f..(o + 1) * in_f];
                for (r, v) in yo.iter_mut().enumerate() {
                    *v = dot(wr, &x[r * in_f..(r + 1) * in_f]);
                }
            }
        });
    if rows == 1 {
        return yt;
    }
    let mut y = vec![0f32; rows * out_f];
    for o in 0..out_f {
        for r in 0..rows {
            y[r * out_f + o] = yt[o * rows + r];
        }
    }
    y
}

/// y = x Wᵀ for `x` [rows, in] (rows ≤ [`MAX_ROWS`]) and a contiguous CPU weight [out, in].
/// Returns `None` when the kernel does not apply (other device, dtype or layout, or an input
/// that takes part in autograd).
pub fn matvec(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (rows, in_f) = x.dims2()?;
    let (out_f, win) = w.dims2()?;
    // Never on a graph that needs gradients: the result would be cut off from it.
    if x.track_op()
        || w.track_op()
        || rows == 0
        || rows > MAX_ROWS
        || win != in_f
        || !matches!(w.device(), Device::Cpu)
    {
        return Ok(None);
    }
    let out_dtype = x.dtype();
    if !matches!(out_dtype, DType::F32 | DType::BF16 | DType::F16) {
        return Ok(None);
    }
    let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let (storage, layout) = w.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let y = match cpu {
        CpuStorage::F32(v) => run(&v[start..end], &xs, rows, out_f, in_f),
        CpuStorage::BF16(v) => run(&v[start..end], &xs, rows, out_f, in_f),
        CpuStorage::F16(v) => run(&v[start..end], &xs, rows, out_f, in_f),
        _ => return Ok(None),
    };
    drop(storage);
    Ok(Some(
        Tensor::from_vec(y, (rows, out_f), &Device::Cpu)?.to_dtype(out_dtype)?,
    ))
}

/// The obvious f64 triple loop, for tests.
#[cfg(test)]
pub fn reference_matmul(x: &[f32], w: &[f32], rows: usize, out_f: usize, in_f: usize) -> Vec<f64> {
    let mut y = vec![0f64; rows * out_f];
    for r in 0..rows {
        for o in 0..out_f {
            y[r * out_f + o] = (0..in_f)
                .map(|i| x[r * in_f + i] as f64 * w[o * in_f + i] as f64)
                .sum();
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_for_every_dtype_and_row_count() {
        let (out_f, in_f) = (131, 77); // odd sizes: remainder paths and a partial block
        let w = Tensor::randn(0f32, 1.0, (out_f, in_f), &Device::Cpu).unwrap();
        for rows in 1..=MAX_ROWS {
            let x = Tensor::randn(0f32, 1.0, (rows, in_f), &Device::Cpu).unwrap();
            for dt in [DType::F32, DType::BF16, DType::F16] {
                let wd = w.to_dtype(dt).unwrap();
                let got = matvec(&x, &wd).unwrap().unwrap().to_vec2::<f32>().unwrap();
                let wf: Vec<f32> = wd
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let xf: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
                let want = reference_matmul(&xf, &wf, rows, out_f, in_f);
                for r in 0..rows {
                    for o in 0..out_f {
                        let d = (got[r][o] as f64 - want[r * out_f + o]).abs();
                        assert!(d < 1e-4, "{dt:?} rows {rows}: |Δ| = {d}");
                    }
                }
            }
        }
        let big = Tensor::zeros((5, in_f), DType::F32, &Device::Cpu).unwrap();
        assert!(matvec(&big, &w).unwrap().is_none());
    }
}
