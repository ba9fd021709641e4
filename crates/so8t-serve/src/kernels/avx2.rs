//! AVX2+FMA+F16C kernels for the 32-weight block types, the dispatcher for every AVX2 kernel and
//! the AVX2 Q8_0 activation quantizer.
//!
//! Every kernel is generic over `N`, the number of activation rows (1 to 4) that meet one weight
//! row in a pass: the weights of a block are loaded and unpacked once, then multiplied into each
//! activation. Products of i8 pairs use `maddubs` (u8 × i8 → i16 pairs), with the sign of the
//! weight moved onto the activation when the weight is signed.

use std::arch::x86_64::*;

use super::{avx2_float, avx2_k, avx2_k23, scalar, GgmlType};

/// Runs `$f::<m>(args)` for `m` in 1..=4.
macro_rules! run_n {
    ($($f:ident)::+, $m:expr, $($arg:expr),*) => {
        match $m {
            1 => $($f)::+::<1>($($arg),*),
            2 => $($f)::+::<2>($($arg),*),
            3 => $($f)::+::<3>($($arg),*),
            _ => $($f)::+::<4>($($arg),*),
        }
    };
}

/// One weight row against `n` activation rows `st` bytes apart.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `wr` holds one row of `cols` weights of `w`, `acts` at
/// least `n` activation rows of stride `st`, `out` at least `n` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_multi(
    w: GgmlType,
    cols: usize,
    wr: &[u8],
    acts: &[u8],
    st: usize,
    n: usize,
    out: &mut [f32],
) {
    let mut i = 0;
    while i < n {
        let m = (n - i).min(4);
        let wp = wr.as_ptr();
        let ap = acts.as_ptr().add(i * st);
        let op = out.as_mut_ptr().add(i);
        match w {
            GgmlType::F32 => run_n!(avx2_float::dot_f32_n, m, cols, wp, ap, st, op),
            GgmlType::F16 => run_n!(avx2_float::dot_f16_n, m, cols, wp, ap, st, op),
            GgmlType::BF16 => run_n!(avx2_float::dot_bf16_n, m, cols, wp, ap, st, op),
            GgmlType::Q8_0 => run_n!(q8_0, m, cols, wp, ap, st, op),
            GgmlType::Q4_0 => run_n!(q4_0, m, cols, wp, ap, st, op),
            GgmlType::Q5_0 => run_n!(q5_0, m, cols, wp, ap, st, op),
            GgmlType::Q4_1 => run_n!(q4_1, m, cols, wp, ap, st, op),
            GgmlType::Q5_1 => run_n!(q5_1, m, cols, wp, ap, st, op),
            GgmlType::Q4_K => run_n!(avx2_k::q4_k, m, cols, wp, ap, st, op),
            GgmlType::Q5_K => run_n!(avx2_k::q5_k, m, cols, wp, ap, st, op),
            GgmlType::Q6_K => run_n!(avx2_k::q6_k, m, cols, wp, ap, st, op),
            GgmlType::Q2_K => run_n!(avx2_k23::q2_k, m, cols, wp, ap, st, op),
            GgmlType::Q3_K => run_n!(avx2_k23::q3_k, m, cols, wp, ap, st, op),
            _ => {
                for j in i..i + m {
                    out[j] = scalar::vec_dot(w, cols, wr, &acts[j * st..(j + 1) * st]);
                }
            }
        }
        i += m;
    }
}

/// Horizontal sum of eight lanes: (l + l+4), then (l + l+2), then the last pair.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sum of four lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The little-endian f16 at `p` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn ld_f16(p: *const u8) -> f32 {
    let h = p.cast::<u16>().read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// 32 unaligned bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn ld256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// Sixteen nibbles at `p` → 32 bytes: low nibbles first, then high nibbles (the 16 bytes go to
/// both halves, the upper half shifted right by 4: no shuffle-port work).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast()));
    let shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(15))
}

/// The 32 bits of `qh` → 32 bytes, 0xFF where the bit is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bits32(qh: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let m = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, m), m)
}

/// Σ over eight lanes of i32: u8 `x` × i8 `y`, pairs summed to i16 then to i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_u8i8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// The bits of four little-endian f16 at `p`, `p + rb`, `p + 2rb`, `p + 3rb`, first lowest.
#[inline(always)]
pub(super) unsafe fn f16x4_bits(p: *const u8, rb: usize) -> i64 {
    let h = |k: usize| p.add(k * rb).cast::<u16>().read_unaligned() as u64;
    (h(0) | (h(1) << 16) | (h(2) << 32) | (h(3) << 48)) as i64
}

/// Four little-endian f16 at `p`, `p + rb`, `p + 2rb`, `p + 3rb` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16x4(p: *const u8, rb: usize) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi64_si128(f16x4_bits(p, rb)))
}

/// Four vectors of eight i32 → the four totals.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn sum4(p: [__m256i; 4]) -> __m128i {
    let s = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1))
}

/// One block `i` of a 32-weight kernel into 8-lane accumulators `acc` (and `mins` for `_1`
/// types); used for the blocks after the last group of four.
macro_rules! legacy_step {
    ($w:ident, $a:ident, $st:ident, $i:expr, $acc:ident, $mins:ident, $n:ident,
     $wb:expr, $ab:expr, $signed:expr, $has_min:expr, $unpack:ident) => {{
        let x = $w.add($wb * $i);
        let (qw, dw) = $unpack(x);
        let ax = if $signed {
            _mm256_sign_epi8(qw, qw)
        } else {
            qw
        };
        for k in 0..$n {
            let y = $a.add(k * $st + $ab * $i);
            let qa = ld256(y.add($ab - 32));
            let sy = if $signed {
                _mm256_sign_epi8(qa, qw)
            } else {
                qa
            };
            let p = _mm256_cvtepi32_ps(dot_u8i8(ax, sy));
            let d = _mm256_set1_ps(dw * ld_f16(y));
            $acc[k] = _mm256_fmadd_ps(d, p, $acc[k]);
            if $has_min {
                $mins[k] += ld_f16(x.add(2)) * ld_f16(y.add(2));
            }
        }
    }};
}

/// Defines a kernel over 32-weight blocks of `$wb` bytes against activations of `$ab` bytes per
/// block (quants last). `$unpack(block) -> (levels, scale)` gives the weight levels as i8
/// (`$signed`) or u8; `_1` types (`$has_min`) add `m·s` per block. Blocks go by four: the four
/// integer sums are folded into one vector and meet the four blocks' scales in one 4-lane
/// multiply-add.
macro_rules! legacy_kernel {
    ($name:ident, $wb:expr, $ab:expr, $signed:expr, $has_min:expr, $unpack:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const N: usize>(
            cols: usize,
            w: *const u8,
            a: *const u8,
            st: usize,
            out: *mut f32,
        ) {
            let nb = cols / 32;
            let mut acc4 = [_mm_setzero_ps(); N];
            let mut accm4 = [_mm_setzero_ps(); N];
            let mut acc = [_mm256_setzero_ps(); N];
            let mut mins = [0f32; N];
            let mut i = 0;
            while i + 4 <= nb {
                let x = w.add($wb * i);
                let mut qw = [_mm256_setzero_si256(); 4];
                let mut ax = [_mm256_setzero_si256(); 4];
                for j in 0..4 {
                    qw[j] = $unpack(x.add($wb * j)).0;
                    ax[j] = if $signed {
                        _mm256_sign_epi8(qw[j], qw[j])
                    } else {
                        qw[j]
                    };
                }
                let dw = f16x4(x, $wb);
                for k in 0..N {
                    let y = a.add(k * st + $ab * i);
                    let mut p = [_mm256_setzero_si256(); 4];
                    for j in 0..4 {
                        let qa = ld256(y.add($ab * j + $ab - 32));
                        let sy = if $signed {
                            _mm256_sign_epi8(qa, qw[j])
                        } else {
                            qa
                        };
                        p[j] = dot_u8i8(ax[j], sy);
                    }
                    let d = _mm_mul_ps(dw, f16x4(y, $ab));
                    acc4[k] = _mm_fmadd_ps(d, _mm_cvtepi32_ps(sum4(p)), acc4[k]);
                    if $has_min {
                        let m = f16x4(x.add(2), $wb);
                        accm4[k] = _mm_fmadd_ps(m, f16x4(y.add(2), $ab), accm4[k]);
                    }
                }
                i += 4;
            }
            while i < nb {
                legacy_step!(w, a, st, i, acc, mins, N, $wb, $ab, $signed, $has_min, $unpack);
                i += 1;
            }
            for k in 0..N {
                let s4 = hsum_ps128(_mm_add_ps(acc4[k], accm4[k]));
                *out.add(k) = s4 + hsum_ps(acc[k]) + mins[k];
            }
        }
    };
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q8_0(x: *const u8) -> (__m256i, f32) {
    (ld256(x.add(2)), ld_f16(x))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q4_0(x: *const u8) -> (__m256i, f32) {
    let q = _mm256_sub_epi8(nibbles32(x.add(2)), _mm256_set1_epi8(8));
    (q, ld_f16(x))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q5_0(x: *const u8) -> (__m256i, f32) {
    let qh = x.add(2).cast::<u32>().read_unaligned();
    // A clear fifth bit means level − 16 < 0: set the byte's high nibble (nibble − 16 as i8).
    let neg = _mm256_andnot_si256(bits32(qh), _mm256_set1_epi8(0xF0u8 as i8));
    (_mm256_or_si256(nibbles32(x.add(6)), neg), ld_f16(x))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q4_1(x: *const u8) -> (__m256i, f32) {
    (nibbles32(x.add(4)), ld_f16(x))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q5_1(x: *const u8) -> (__m256i, f32) {
    let qh = x.add(4).cast::<u32>().read_unaligned();
    let high = _mm256_and_si256(bits32(qh), _mm256_set1_epi8(0x10));
    (_mm256_or_si256(nibbles32(x.add(8)), high), ld_f16(x))
}

/// Q4_0 levels unsigned (0..16, to be offset by 8 by the caller).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q4_0u(x: *const u8) -> (__m256i, f32) {
    (nibbles32(x.add(2)), ld_f16(x))
}

/// Q5_0 levels unsigned (0..32, to be offset by 16 by the caller).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q5_0u(x: *const u8) -> (__m256i, f32) {
    let qh = x.add(2).cast::<u32>().read_unaligned();
    let high = _mm256_and_si256(bits32(qh), _mm256_set1_epi8(0x10));
    (_mm256_or_si256(nibbles32(x.add(6)), high), ld_f16(x))
}

legacy_kernel!(q8_0, 34, 34, true, false, unpack_q8_0);
legacy_kernel!(q4_0, 18, 34, true, false, unpack_q4_0);
legacy_kernel!(q5_0, 22, 34, true, false, unpack_q5_0);
legacy_kernel!(q4_1, 20, 36, false, true, unpack_q4_1);
legacy_kernel!(q5_1, 24, 36, false, true, unpack_q5_1);

/// Q8_0 activation row, byte-identical to the scalar (reference) quantizer: `d = amax/127`,
/// `id = 1/d`, `q = round(x·id)` half away from zero.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `out.len() == x.len() / 32 * 34`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let sign = _mm256_set1_ps(-0.0);
    let below_half = _mm256_set1_ps(f32::from_bits(0x3eff_ffff)); // 0.5 − 2^−25
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (xb, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let p = xb.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for vv in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vv));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // Round to nearest even, as ggml's conversion does for every non-NaN value.
        let dh = _mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT);
        y[..2].copy_from_slice(&(_mm_cvtsi128_si32(dh) as u16).to_le_bytes());
        let idv = _mm256_set1_ps(id);
        let mut q = [_mm256_setzero_si256(); 4];
        for (qq, vv) in q.iter_mut().zip(v) {
            // Half away from zero: truncate s + copysign(0.5 − 2^−25, s); exact for |s| < 2^23
            // (a sum that lands exactly between two floats rounds to the even one, upward).
            let s = _mm256_mul_ps(vv, idv);
            let nudge = _mm256_or_ps(_mm256_and_ps(sign, s), below_half);
            *qq = _mm256_cvttps_epi32(_mm256_add_ps(s, nudge));
        }
        let q01 = _mm256_packs_epi32(q[0], q[1]);
        let q23 = _mm256_packs_epi32(q[2], q[3]);
        let b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q01, q23), perm);
        _mm256_storeu_si256(y.as_mut_ptr().add(2).cast(), b);
    }
}

/// Q8_K activation row, byte-identical to the scalar (reference) quantizer: `max` is the first
/// value of largest magnitude, `iscale = -127/max`, `q = min(127, round_half_even(iscale·x))`,
/// sums of 16, `d = 1/iscale`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `out.len() == x.len() / 256 * 292`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    let sign = _mm256_set1_ps(-0.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let q127 = _mm256_set1_epi32(127);
    for (xb, y) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
        let p = xb.as_ptr();
        let mut m = _mm256_setzero_ps();
        for j in 0..32 {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * j))));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        if amax == 0.0 || amax.is_nan() {
            // All zero (or NaN, which the scalar code treats its own way): defer to it.
            super::act::quantize_q8_k(xb, y);
            continue;
        }
        let av = _mm256_set1_ps(amax);
        let mut max = amax;
        for j in 0..32 {
            let v = _mm256_loadu_ps(p.add(8 * j));
            let hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v), av, _CMP_EQ_OQ));
            if hit != 0 {
                max = xb[8 * j + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let iv = _mm256_set1_ps(iscale);
        let qp = y.as_mut_ptr().add(4);
        for c in 0..8 {
            let mut q = [_mm256_setzero_si256(); 4];
            for (k, qk) in q.iter_mut().enumerate() {
                let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(32 * c + 8 * k)), iv);
                let r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                *qk = _mm256_min_epi32(_mm256_cvtps_epi32(r), q127);
            }
            let b = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            _mm256_storeu_si256(qp.add(32 * c).cast(), _mm256_permutevar8x32_epi32(b, perm));
            let s01 = _mm256_add_epi32(q[0], q[1]);
            let s23 = _mm256_add_epi32(q[2], q[3]);
            let h = _mm256_hadd_epi32(s01, s23);
            let h = _mm256_hadd_epi32(h, h);
            let t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            let (g0, g1) = (_mm_cvtsi128_si32(t) as i16, _mm_extract_epi32(t, 1) as i16);
            y[260 + 4 * c..262 + 4 * c].copy_from_slice(&g0.to_le_bytes());
            y[262 + 4 * c..264 + 4 * c].copy_from_slice(&g1.to_le_bytes());
        }
        y[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
