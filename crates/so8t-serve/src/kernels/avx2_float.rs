//! AVX2+FMA+F16C kernels for float weights (F32, F16, BF16), the f32 dot product and the F16
//! row conversions.

use std::arch::x86_64::*;

use super::act::{f16, f32_at};
use super::avx2::hsum_ps;

/// Eight f32 at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn ld_f32x8(p: *const u8) -> __m256 {
    _mm256_loadu_ps(p.cast())
}

/// Eight f16 at `p` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn ld_f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

/// Eight bf16 at `p` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn ld_bf16x8(p: *const u8) -> __m256 {
    let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
    _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
}

/// Defines a float kernel: `$ld(ptr)` loads eight values of `$es` bytes each, `$get(bytes, i)`
/// decodes one (for the tail). Sixteen values per step in two accumulators per activation row.
macro_rules! float_kernel {
    ($name:ident, $es:expr, $ld:ident, $get:expr) => {
        /// One weight row of float type against `N` activation rows of the same type.
        ///
        /// # Safety
        /// AVX2, FMA and F16C present; `w` holds `cols` values, `a + k·st` (k < N) too, `out`
        /// N values.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name<const N: usize>(
            cols: usize,
            w: *const u8,
            a: *const u8,
            st: usize,
            out: *mut f32,
        ) {
            let mut acc0 = [_mm256_setzero_ps(); N];
            let mut acc1 = [_mm256_setzero_ps(); N];
            let mut i = 0;
            while i + 16 <= cols {
                let w0 = $ld(w.add($es * i));
                let w1 = $ld(w.add($es * (i + 8)));
                for k in 0..N {
                    let y = a.add(k * st + $es * i);
                    acc0[k] = _mm256_fmadd_ps(w0, $ld(y), acc0[k]);
                    acc1[k] = _mm256_fmadd_ps(w1, $ld(y.add($es * 8)), acc1[k]);
                }
                i += 16;
            }
            if i + 8 <= cols {
                let w0 = $ld(w.add($es * i));
                for k in 0..N {
                    acc0[k] = _mm256_fmadd_ps(w0, $ld(a.add(k * st + $es * i)), acc0[k]);
                }
                i += 8;
            }
            let get = $get;
            for k in 0..N {
                let mut s = hsum_ps(_mm256_add_ps(acc0[k], acc1[k]));
                if i < cols {
                    let wb = std::slice::from_raw_parts(w, $es * cols);
                    let ab = std::slice::from_raw_parts(a.add(k * st), $es * cols);
                    for j in i..cols {
                        s += get(wb, j) * get(ab, j);
                    }
                }
                *out.add(k) = s;
            }
        }
    };
}

pub(super) fn get_f32(b: &[u8], j: usize) -> f32 {
    f32_at(b, 4 * j)
}

pub(super) fn get_f16(b: &[u8], j: usize) -> f32 {
    f16(b, 2 * j)
}

pub(super) fn get_bf16(b: &[u8], j: usize) -> f32 {
    f32::from_bits((u16::from_le_bytes([b[2 * j], b[2 * j + 1]]) as u32) << 16)
}

float_kernel!(dot_f32_n, 4, ld_f32x8, get_f32);
float_kernel!(dot_f16_n, 2, ld_f16x8, get_f16);
float_kernel!(dot_bf16_n, 2, ld_bf16x8, get_bf16);

/// f32 dot product, four accumulators.
///
/// # Safety
/// AVX2, FMA and F16C present; `a.len() == b.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, s) in acc.iter_mut().enumerate() {
            let o = i + 8 * j;
            *s = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *s);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i)),
            _mm256_loadu_ps(pb.add(i)),
            acc[0],
        );
        i += 8;
    }
    let s01 = _mm256_add_ps(acc[0], acc[1]);
    let s23 = _mm256_add_ps(acc[2], acc[3]);
    let mut s = hsum_ps(_mm256_add_ps(s01, s23));
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

/// f32 row → little-endian f16 (round to nearest even; equals ggml's conversion off NaN).
///
/// # Safety
/// AVX2, FMA and F16C present; `out.len() == 2 * x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f32_to_f16_row(x: &[f32], out: &mut [u8]) {
    let n = x.len();
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph(
            _mm256_loadu_ps(x.as_ptr().add(i)),
            _MM_FROUND_TO_NEAREST_INT,
        );
        _mm_storeu_si128(out.as_mut_ptr().add(2 * i).cast(), h);
        i += 8;
    }
    for j in i..n {
        let h = so8t_gguf::quant::f32_to_f16_bits(x[j]);
        out[2 * j..2 * j + 2].copy_from_slice(&h.to_le_bytes());
    }
}

/// Little-endian f16 row → f32.
///
/// # Safety
/// AVX2, FMA and F16C present; `row.len() == 2 * out.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_to_f32_row(row: &[u8], out: &mut [f32]) {
    let n = out.len();
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(out.as_mut_ptr().add(i), ld_f16x8(row.as_ptr().add(2 * i)));
        i += 8;
    }
    for j in i..n {
        out[j] = f16(row, 2 * j);
    }
}
