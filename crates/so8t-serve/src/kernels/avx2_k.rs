//! AVX2+FMA+F16C kernels for the K-quants (Q4_K, Q5_K, Q6_K) against Q8_K activations.
//!
//! Per 256-weight super-block the weight levels (unsigned) meet the activation bytes in
//! `maddubs`, sub-block scales are applied with `madd` on the i16 pair sums, and the offsets
//! (Q4_K/Q5_K mins, Q6_K's −32) are taken from the activation's sums of 16 (`bsums`), so each
//! activation row costs one f32 multiply-add per super-block.

use std::arch::x86_64::*;

use super::avx2::{hsum_ps, hsum_ps128, ld256, ld_f16};

/// Q8_K activation block `i` of row `k`.
#[inline(always)]
unsafe fn act(a: *const u8, st: usize, k: usize, i: usize) -> *const u8 {
    a.add(k * st + 292 * i)
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block, as two u64 of bytes.
#[inline(always)]
unsafe fn scales_mins(p: *const u8) -> (u64, u64) {
    let w0 = p.cast::<u32>().read_unaligned();
    let w1 = p.add(4).cast::<u32>().read_unaligned();
    let w2 = p.add(8).cast::<u32>().read_unaligned();
    let k6 = 0x3f3f_3f3f;
    let sc_hi = (w2 & 0x0f0f_0f0f) | (((w0 >> 6) & 0x0303_0303) << 4);
    let mn_hi = ((w2 >> 4) & 0x0f0f_0f0f) | (((w1 >> 6) & 0x0303_0303) << 4);
    (
        (w0 & k6) as u64 | ((sc_hi as u64) << 32),
        (w1 & k6) as u64 | ((mn_hi as u64) << 32),
    )
}

/// Shuffle that broadcasts i16 lane `j` of each 128-bit half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane16(j: i32) -> __m256i {
    _mm256_set1_epi16(((2 * j) | ((2 * j + 1) << 8)) as i16)
}

/// Shared Q4_K/Q5_K kernel; `HIGH` selects Q5_K (fifth bits at bytes 16..48, nibbles at 48).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k45<const N: usize, const HIGH: bool>(
    cols: usize,
    w: *const u8,
    a: *const u8,
    st: usize,
    out: *mut f32,
) {
    let (bytes, qoff) = if HIGH { (176, 48) } else { (144, 16) };
    let m4 = _mm256_set1_epi8(15);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut accm = [_mm_setzero_ps(); N];
    for i in 0..cols / 256 {
        let x = w.add(bytes * i);
        let d = ld_f16(x);
        let dmin = ld_f16(x.add(2));
        let (sc, mn) = scales_mins(x.add(4));
        let sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
        let mn16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn as i64));
        for k in 0..N {
            let y = act(a, st, k, i);
            let bs = ld256(y.add(260));
            let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let pm = _mm_cvtepi32_ps(_mm_madd_epi16(mn16, pairs));
            let dy = y.cast::<f32>().read_unaligned();
            accm[k] = _mm_fmadd_ps(_mm_set1_ps(dy * dmin), pm, accm[k]);
        }
        let mut sumi = [_mm256_setzero_si256(); N];
        let mut hb = if HIGH {
            ld256(x.add(16))
        } else {
            _mm256_setzero_si256()
        };
        for c in 0..4 {
            let q = ld256(x.add(qoff + 32 * c));
            let mut lo = _mm256_and_si256(q, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if HIGH {
                let h1 = _mm256_and_si256(hb, _mm256_set1_epi8(1));
                let h2 = _mm256_and_si256(hb, _mm256_set1_epi8(2));
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(h1, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(h2, 3));
                hb = _mm256_srli_epi16(hb, 2);
            }
            let sl = _mm256_shuffle_epi8(sc16, lane16(2 * c as i32));
            let sh = _mm256_shuffle_epi8(sc16, lane16(2 * c as i32 + 1));
            for k in 0..N {
                let y = act(a, st, k, i).add(4 + 64 * c);
                let pl = _mm256_maddubs_epi16(lo, ld256(y));
                let ph = _mm256_maddubs_epi16(hi, ld256(y.add(32)));
                let s = _mm256_add_epi32(_mm256_madd_epi16(pl, sl), _mm256_madd_epi16(ph, sh));
                sumi[k] = _mm256_add_epi32(sumi[k], s);
            }
        }
        for k in 0..N {
            let dy = act(a, st, k, i).cast::<f32>().read_unaligned();
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dy * d), _mm256_cvtepi32_ps(sumi[k]), acc[k]);
        }
    }
    for k in 0..N {
        *out.add(k) = hsum_ps(acc[k]) - hsum_ps128(accm[k]);
    }
}

/// Q4_K weights × Q8_K activations, `N` activation rows.
///
/// # Safety
/// AVX2, FMA and F16C present; `w` holds `cols` Q4_K weights, `a + k·st` (k < N) a Q8_K row of
/// `cols`, `out` N values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_k<const N: usize>(
    cols: usize,
    w: *const u8,
    a: *const u8,
    st: usize,
    out: *mut f32,
) {
    k45::<N, false>(cols, w, a, st, out)
}

/// Q5_K weights × Q8_K activations, `N` activation rows.
///
/// # Safety
/// As [`q4_k`], with Q5_K weights.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_k<const N: usize>(
    cols: usize,
    w: *const u8,
    a: *const u8,
    st: usize,
    out: *mut f32,
) {
    k45::<N, true>(cols, w, a, st, out)
}

/// Q6_K weights × Q8_K activations, `N` activation rows: Σ sc·q·a − 32·Σ sc·bsum.
///
/// # Safety
/// As [`q4_k`], with Q6_K weights.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6_k<const N: usize>(
    cols: usize,
    w: *const u8,
    a: *const u8,
    st: usize,
    out: *mut f32,
) {
    let m4 = _mm256_set1_epi8(15);
    let m2 = _mm256_set1_epi8(3);
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..cols / 256 {
        let x = w.add(210 * i);
        let d = ld_f16(x.add(208));
        let scb = _mm_loadu_si128(x.add(192).cast());
        let sc16 = _mm256_cvtepi8_epi16(scb);
        let mut sumi = [_mm256_setzero_si256(); N];
        for (k, s) in sumi.iter_mut().enumerate() {
            let bs = ld256(act(a, st, k, i).add(260));
            *s = _mm256_sub_epi32(*s, _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5));
        }
        for h in 0..2 {
            let qh = ld256(x.add(128 + 32 * h));
            let ql0 = ld256(x.add(64 * h));
            let ql1 = ld256(x.add(64 * h + 32));
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4),
                ),
            ];
            for (kk, qv) in q.iter().enumerate() {
                // i16 lanes 0..8 take scale g, lanes 8..16 scale g + 1.
                let g = (8 * h + 2 * kk) as i64;
                let pick =
                    _mm_set_epi64x((g + 1) * 0x0101_0101_0101_0101, g * 0x0101_0101_0101_0101);
                let sv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scb, pick));
                for (k, s) in sumi.iter_mut().enumerate() {
                    let y = act(a, st, k, i).add(4 + 128 * h + 32 * kk);
                    let p = _mm256_maddubs_epi16(*qv, ld256(y));
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, sv));
                }
            }
        }
        for (k, s) in sumi.iter().enumerate() {
            let dy = act(a, st, k, i).cast::<f32>().read_unaligned();
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dy * d), _mm256_cvtepi32_ps(*s), acc[k]);
        }
    }
    for (k, v) in acc.iter().enumerate() {
        *out.add(k) = hsum_ps(*v);
    }
}
