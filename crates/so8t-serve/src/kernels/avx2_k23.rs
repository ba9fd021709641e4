//! AVX2+FMA+F16C kernels for Q2_K and Q3_K weights against Q8_K activations.
//!
//! Both store 2-bit levels four to a byte: the 32 bytes of half `h` hold, at shift `2s`, the 32
//! weights `128h + 32s ..`; each such chunk spans two 16-weight groups with their own scales.
//! Offsets (Q2_K's mins, Q3_K's −4 where the high bit is clear) come from the activation's
//! sums of 16 (`bsums`).

use std::arch::x86_64::*;

use super::avx2::{hsum_ps, ld256, ld_f16};

/// Q8_K activation block `i` of row `k`.
#[inline(always)]
unsafe fn act(a: *const u8, st: usize, k: usize, i: usize) -> *const u8 {
    a.add(k * st + 292 * i)
}

/// i16 lanes 0..8 take byte `g` of `s` (sign-extended), lanes 8..16 byte `g + 1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair_scales(s: __m128i, g: i64) -> __m256i {
    let pick = _mm_set_epi64x((g + 1) * 0x0101_0101_0101_0101, g * 0x0101_0101_0101_0101);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s, pick))
}

/// Q2_K weights × Q8_K activations, `N` activation rows: `d·Σ sc·q·a − dmin·Σ m·bsum`.
///
/// # Safety
/// AVX2, FMA and F16C present; `w` holds `cols` Q2_K weights, `a + k·st` (k < N) a Q8_K row of
/// `cols`, `out` N values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q2_k<const N: usize>(
    cols: usize,
    w: *const u8,
    a: *const u8,
    st: usize,
    out: *mut f32,
) {
    let m2 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(15);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut accm = [_mm256_setzero_ps(); N];
    for i in 0..cols / 256 {
        let x = w.add(84 * i);
        let d = ld_f16(x.add(80));
        let dmin = ld_f16(x.add(82));
        let packed = _mm_loadu_si128(x.cast());
        let sc = _mm_and_si128(packed, m4);
        let mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
        for k in 0..N {
            let y = act(a, st, k, i);
            let dy = y.cast::<f32>().read_unaligned();
            let pm = _mm256_cvtepi32_ps(_mm256_madd_epi16(mn16, ld256(y.add(260))));
            accm[k] = _mm256_fmadd_ps(_mm256_set1_ps(dy * dmin), pm, accm[k]);
        }
        let mut sumi = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let mut q = ld256(x.add(16 + 32 * h));
            for s in 0..4 {
                let lv = _mm256_and_si256(q, m2);
                q = _mm256_srli_epi16(q, 2);
                let sv = pair_scales(sc, (8 * h + 2 * s) as i64);
                for k in 0..N {
                    let y = act(a, st, k, i).add(4 + 128 * h + 32 * s);
                    let p = _mm256_maddubs_epi16(lv, ld256(y));
                    sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(p, sv));
                }
            }
        }
        for k in 0..N {
            let dy = act(a, st, k, i).cast::<f32>().read_unaligned();
            let v = _mm256_cvtepi32_ps(sumi[k]);
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dy * d), v, acc[k]);
        }
    }
    for k in 0..N {
        *out.add(k) = hsum_ps(acc[k]) - hsum_ps(accm[k]);
    }
}

/// Q3_K's sixteen 6-bit scales minus 32, as i8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k_scales(p: *const u8) -> __m128i {
    let a0 = p.cast::<u32>().read_unaligned();
    let a1 = p.add(4).cast::<u32>().read_unaligned();
    let t = p.add(8).cast::<u32>().read_unaligned();
    let (lo4, hi2) = (0x0f0f_0f0f, 0x0303_0303);
    let s0 = (a0 & lo4) | ((t & hi2) << 4);
    let s1 = (a1 & lo4) | (((t >> 2) & hi2) << 4);
    let s2 = ((a0 >> 4) & lo4) | (((t >> 4) & hi2) << 4);
    let s3 = ((a1 >> 4) & lo4) | (((t >> 6) & hi2) << 4);
    let v = _mm_set_epi32(s3 as i32, s2 as i32, s1 as i32, s0 as i32);
    _mm_sub_epi8(v, _mm_set1_epi8(32))
}

/// Q3_K weights × Q8_K activations, `N` activation rows: levels `u = q + 4·hbit` (0..8), so
/// the dot is `d·Σ sc·(Σ u·a − 4·bsum)`.
///
/// # Safety
/// As [`q2_k`], with Q3_K weights.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q3_k<const N: usize>(
    cols: usize,
    w: *const u8,
    a: *const u8,
    st: usize,
    out: *mut f32,
) {
    let m2 = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..cols / 256 {
        let x = w.add(110 * i);
        let d = ld_f16(x.add(108));
        let sc = q3_k_scales(x.add(96));
        let sc16 = _mm256_cvtepi8_epi16(sc);
        let mut sumi = [_mm256_setzero_si256(); N];
        for (k, s) in sumi.iter_mut().enumerate() {
            let bs = ld256(act(a, st, k, i).add(260));
            *s = _mm256_sub_epi32(*s, _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 2));
        }
        // Bit 4h + s of each mask byte belongs to chunk (h, s): shift it down one per chunk.
        let mut hm = ld256(x);
        for h in 0..2 {
            let mut q = ld256(x.add(32 + 32 * h));
            for s in 0..4 {
                let hb = _mm256_slli_epi16(_mm256_and_si256(hm, one), 2);
                hm = _mm256_srli_epi16(hm, 1);
                let lv = _mm256_or_si256(_mm256_and_si256(q, m2), hb);
                q = _mm256_srli_epi16(q, 2);
                let sv = pair_scales(sc, (8 * h + 2 * s) as i64);
                for k in 0..N {
                    let y = act(a, st, k, i).add(4 + 128 * h + 32 * s);
                    let p = _mm256_maddubs_epi16(lv, ld256(y));
                    sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(p, sv));
                }
            }
        }
        for k in 0..N {
            let dy = act(a, st, k, i).cast::<f32>().read_unaligned();
            let v = _mm256_cvtepi32_ps(sumi[k]);
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dy * d), v, acc[k]);
        }
    }
    for k in 0..N {
        *out.add(k) = hsum_ps(acc[k]);
    }
}
