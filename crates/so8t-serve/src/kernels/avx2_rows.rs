//! AVX2+FMA+F16C matrix × vector kernels: a run of weight rows against one activation row.
//!
//! Quantized 32-weight types go four or eight rows at a time: the activation block is loaded
//! (and its scale converted) once for all of them, and the rows' integer block sums are folded
//! into one vector with `hadd`, so the block scales are applied by a single multiply-add instead
//! of one broadcast and one multiply-add per row. Float types go row after row (see
//! [`float_row`]).

use std::arch::x86_64::*;

use super::avx2::hsum_ps;
use super::avx2::{
    dot_multi, dot_u8i8, f16x4, f16x4_bits, ld256, ld_f16, sum4, unpack_q4_0u, unpack_q4_1,
    unpack_q5_0u, unpack_q5_1, unpack_q8_0,
};
use super::avx2_float::{get_bf16, get_f16, get_f32, ld_bf16x8, ld_f16x8, ld_f32x8};
use super::GgmlType;

/// A kernel for a fixed number of rows: (cols, first weight row, row stride in bytes,
/// activation row, outputs).
type Rows = unsafe fn(usize, *const u8, usize, *const u8, *mut f32);

/// `n` weight rows (`rb` bytes apart) against one activation row.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `wr` holds `n` rows of `cols` weights of `w`, `act` one
/// activation row for them, `out` at least `n` values.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_rows(
    w: GgmlType,
    cols: usize,
    wr: &[u8],
    rb: usize,
    n: usize,
    act: &[u8],
    out: &mut [f32],
) {
    let kernels: Option<(Option<Rows>, Rows)> = match w {
        GgmlType::Q8_0 => Some((Some(q8_0_rows::<8>), q8_0_rows::<4>)),
        GgmlType::Q4_0 => Some((Some(q4_0_rows::<8>), q4_0_rows::<4>)),
        GgmlType::Q5_0 => Some((Some(q5_0_rows::<8>), q5_0_rows::<4>)),
        GgmlType::Q4_1 => Some((Some(q4_1_rows::<8>), q4_1_rows::<4>)),
        GgmlType::Q5_1 => Some((Some(q5_1_rows::<8>), q5_1_rows::<4>)),
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            let row = match w {
                GgmlType::F32 => f32_row,
                GgmlType::F16 => f16_row,
                _ => bf16_row,
            };
            for (r, o) in out[..n].iter_mut().enumerate() {
                *o = row(cols, wr.as_ptr().add(r * rb), act.as_ptr());
            }
            return;
        }
        _ => None,
    };
    let mut r = 0;
    if let Some((k8, k4)) = kernels {
        let ap = act.as_ptr();
        if let Some(k8) = k8 {
            while r + 8 <= n {
                k8(
                    cols,
                    wr.as_ptr().add(r * rb),
                    rb,
                    ap,
                    out.as_mut_ptr().add(r),
                );
                r += 8;
            }
        }
        while r + 4 <= n {
            k4(
                cols,
                wr.as_ptr().add(r * rb),
                rb,
                ap,
                out.as_mut_ptr().add(r),
            );
            r += 4;
        }
    }
    while r < n {
        let row = &wr[r * rb..(r + 1) * rb];
        dot_multi(w, cols, row, act, act.len(), 1, &mut out[r..r + 1]);
        r += 1;
    }
}

/// Eight vectors of eight i32 → the eight totals.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum8(p: &[__m256i]) -> __m256i {
    let a = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    let b = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256(a, b, 0x20),
        _mm256_permute2x128_si256(a, b, 0x31),
    )
}

/// Defines an `R`-row kernel (R = 4 or 8) for a 32-weight type (`$wb` bytes a block,
/// activation blocks of `$ab` bytes with quants last, signed levels or not, with a block min or
/// not). Unsigned levels with a `$bias` (Q4_0: 8, Q5_0: 16) meet the activation as
/// `Σ u·a − bias·Σ a`, the second term computed once for all rows; cheaper than moving signs.
macro_rules! legacy_rows {
    ($name:ident, $wb:expr, $ab:expr, $signed:expr, $bias:expr, $has_min:expr, $unpack:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize>(
            cols: usize,
            w: *const u8,
            rb: usize,
            a: *const u8,
            out: *mut f32,
        ) {
            let mut acc = _mm256_setzero_ps();
            let mut accm = _mm256_setzero_ps();
            // The next rows follow these: pull in their bytes at the pace these are read
            // (interleaved streams defeat the hardware prefetcher on large matrices). Past the last
            // row these addresses are outside the buffer: prefetches never fault, and
            // wrapping_add keeps the pointer arithmetic defined.
            let next = w.wrapping_add(R * rb);
            for i in 0..cols / 32 {
                for j in 0..(R * $wb).div_ceil(64) {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(R * $wb * i + 64 * j).cast());
                }
                let y = a.add($ab * i);
                let qa = ld256(y.add($ab - 32));
                let corr = if $bias != 0 {
                    _mm256_maddubs_epi16(_mm256_set1_epi8($bias), qa)
                } else {
                    _mm256_setzero_si256()
                };
                let mut p = [_mm256_setzero_si256(); R];
                for (r, pr) in p.iter_mut().enumerate() {
                    let (qw, _) = $unpack(w.add(r * rb + $wb * i));
                    *pr = if $signed {
                        dot_u8i8(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qa, qw))
                    } else if $bias != 0 {
                        let d16 = _mm256_sub_epi16(_mm256_maddubs_epi16(qw, qa), corr);
                        _mm256_madd_epi16(d16, _mm256_set1_epi16(1))
                    } else {
                        dot_u8i8(qw, qa)
                    };
                }
                let x = w.add($wb * i);
                let (s, dw) = if R == 8 {
                    let bits = _mm_set_epi64x(f16x4_bits(x.add(4 * rb), rb), f16x4_bits(x, rb));
                    (_mm256_cvtepi32_ps(sum8(&p)), _mm256_cvtph_ps(bits))
                } else {
                    let s4 = _mm_cvtepi32_ps(sum4([p[0], p[1], p[2], p[3]]));
                    (
                        _mm256_zextps128_ps256(s4),
                        _mm256_zextps128_ps256(f16x4(x, rb)),
                    )
                };
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(ld_f16(y)));
                acc = _mm256_fmadd_ps(d, s, acc);
                if $has_min {
                    let m = if R == 8 {
                        let hi = f16x4_bits(x.add(4 * rb + 2), rb);
                        _mm256_cvtph_ps(_mm_set_epi64x(hi, f16x4_bits(x.add(2), rb)))
                    } else {
                        _mm256_zextps128_ps256(f16x4(x.add(2), rb))
                    };
                    accm = _mm256_fmadd_ps(m, _mm256_set1_ps(ld_f16(y.add(2))), accm);
                }
            }
            let t = _mm256_add_ps(acc, accm);
            if R == 8 {
                _mm256_storeu_ps(out, t);
            } else {
                _mm_storeu_ps(out, _mm256_castps256_ps128(t));
            }
        }
    };
}

legacy_rows!(q8_0_rows, 34, 34, true, 0, false, unpack_q8_0);
legacy_rows!(q4_0_rows, 18, 34, false, 8, false, unpack_q4_0u);
legacy_rows!(q5_0_rows, 22, 34, false, 16, false, unpack_q5_0u);
legacy_rows!(q4_1_rows, 20, 36, false, 0, true, unpack_q4_1);
legacy_rows!(q5_1_rows, 24, 36, false, 0, true, unpack_q5_1);

/// Defines a one-row kernel for a float type of `$es` bytes a value: 32 values a step in four
/// accumulators, the weights prefetched a kilobyte ahead. Called row after row, it reads the
/// matrix as one sequential stream, which the memory system serves faster than several rows
/// read side by side (float weights are bound by memory bandwidth, not arithmetic).
macro_rules! float_row {
    ($name:ident, $es:expr, $ld:ident, $get:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(cols: usize, w: *const u8, a: *const u8) -> f32 {
            const PF: usize = 1024;
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= cols {
                for line in 0..($es * 32 / 64) {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add($es * i + PF + 64 * line).cast());
                }
                for (k, s) in acc.iter_mut().enumerate() {
                    let o = $es * (i + 8 * k);
                    *s = _mm256_fmadd_ps($ld(w.add(o)), $ld(a.add(o)), *s);
                }
                i += 32;
            }
            while i + 8 <= cols {
                acc[0] = _mm256_fmadd_ps($ld(w.add($es * i)), $ld(a.add($es * i)), acc[0]);
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut t = hsum_ps(sum);
            let wb = std::slice::from_raw_parts(w, $es * cols);
            let ab = std::slice::from_raw_parts(a, $es * cols);
            for j in i..cols {
                t += $get(wb, j) * $get(ab, j);
            }
            t
        }
    };
}

float_row!(f32_row, 4, ld_f32x8, get_f32);
float_row!(f16_row, 2, ld_f16x8, get_f16);
float_row!(bf16_row, 2, ld_bf16x8, get_bf16);
