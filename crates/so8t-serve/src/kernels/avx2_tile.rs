//! AVX2+FMA+F16C matrix × matrix tiles for the 32-weight types (prompt processing): four weight
//! rows against up to four activation rows. Each weight block is unpacked once for all the
//! activations and each activation block loaded once for the four rows; the four rows' integer
//! sums are folded into one vector per activation and scaled by one 4-lane multiply-add.

use std::arch::x86_64::*;

use super::avx2::{
    dot_multi, dot_u8i8, f16x4, ld256, ld_f16, sum4, unpack_q4_0u, unpack_q4_1, unpack_q5_0u,
    unpack_q5_1, unpack_q8_0,
};
use super::avx2_rows::dot_rows;
use super::GgmlType;

/// A tile kernel: (cols, first weight row, weight row stride, first activation row, activation
/// stride, first output, output stride between activations).
type Tile = unsafe fn(usize, *const u8, usize, *const u8, usize, *mut f32, usize);

/// Defines `$name::<A>`: four weight rows × `A` activation rows (parameters as in
/// `avx2_rows::legacy_rows`).
macro_rules! legacy_tile {
    ($name:ident, $wb:expr, $ab:expr, $signed:expr, $bias:expr, $has_min:expr, $unpack:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const A: usize>(
            cols: usize,
            w: *const u8,
            rb: usize,
            a: *const u8,
            st: usize,
            out: *mut f32,
            os: usize,
        ) {
            let mut acc = [_mm_setzero_ps(); A];
            for i in 0..cols / 32 {
                let x = w.add($wb * i);
                let mut qw = [_mm256_setzero_si256(); 4];
                let mut ax = [_mm256_setzero_si256(); 4];
                for r in 0..4 {
                    qw[r] = $unpack(x.add(r * rb)).0;
                    ax[r] = if $signed {
                        _mm256_sign_epi8(qw[r], qw[r])
                    } else {
                        qw[r]
                    };
                }
                let dw = f16x4(x, rb);
                let mw = if $has_min {
                    f16x4(x.add(2), rb)
                } else {
                    _mm_setzero_ps()
                };
                for k in 0..A {
                    let y = a.add(k * st + $ab * i);
                    let qa = ld256(y.add($ab - 32));
                    let corr = if $bias != 0 {
                        _mm256_maddubs_epi16(_mm256_set1_epi8($bias), qa)
                    } else {
                        _mm256_setzero_si256()
                    };
                    let mut p = [_mm256_setzero_si256(); 4];
                    for r in 0..4 {
                        p[r] = if $signed {
                            dot_u8i8(ax[r], _mm256_sign_epi8(qa, qw[r]))
                        } else if $bias != 0 {
                            let d16 = _mm256_sub_epi16(_mm256_maddubs_epi16(qw[r], qa), corr);
                            _mm256_madd_epi16(d16, _mm256_set1_epi16(1))
                        } else {
                            dot_u8i8(qw[r], qa)
                        };
                    }
                    let d = _mm_mul_ps(dw, _mm_set1_ps(ld_f16(y)));
                    acc[k] = _mm_fmadd_ps(d, _mm_cvtepi32_ps(sum4(p)), acc[k]);
                    if $has_min {
                        acc[k] = _mm_fmadd_ps(mw, _mm_set1_ps(ld_f16(y.add(2))), acc[k]);
                    }
                }
            }
            for k in 0..A {
                _mm_storeu_ps(out.add(k * os), acc[k]);
            }
        }
    };
}

legacy_tile!(q8_0_tile, 34, 34, true, 0, false, unpack_q8_0);
legacy_tile!(q4_0_tile, 18, 34, false, 8, false, unpack_q4_0u);
legacy_tile!(q5_0_tile, 22, 34, false, 16, false, unpack_q5_0u);
legacy_tile!(q4_1_tile, 20, 36, false, 0, true, unpack_q4_1);
legacy_tile!(q5_1_tile, 24, 36, false, 0, true, unpack_q5_1);

/// `nrows` weight rows (`rb` bytes apart) × `nacts` activation rows (`st` bytes apart):
/// `out[k·os + r] = dot(row r, act k)`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `wr` holds `nrows` rows of `cols` weights of `w`,
/// `acts` `nacts` activation rows for them, `out` at least `(nacts − 1)·os + nrows` values, and
/// `os >= nrows`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn mat_mul(
    w: GgmlType,
    cols: usize,
    wr: &[u8],
    rb: usize,
    nrows: usize,
    acts: &[u8],
    st: usize,
    nacts: usize,
    out: &mut [f32],
    os: usize,
) {
    let tiles: Option<[Tile; 4]> = match w {
        GgmlType::Q8_0 => Some([
            q8_0_tile::<1>,
            q8_0_tile::<2>,
            q8_0_tile::<3>,
            q8_0_tile::<4>,
        ]),
        GgmlType::Q4_0 => Some([
            q4_0_tile::<1>,
            q4_0_tile::<2>,
            q4_0_tile::<3>,
            q4_0_tile::<4>,
        ]),
        GgmlType::Q5_0 => Some([
            q5_0_tile::<1>,
            q5_0_tile::<2>,
            q5_0_tile::<3>,
            q5_0_tile::<4>,
        ]),
        GgmlType::Q4_1 => Some([
            q4_1_tile::<1>,
            q4_1_tile::<2>,
            q4_1_tile::<3>,
            q4_1_tile::<4>,
        ]),
        GgmlType::Q5_1 => Some([
            q5_1_tile::<1>,
            q5_1_tile::<2>,
            q5_1_tile::<3>,
            q5_1_tile::<4>,
        ]),
        _ => None,
    };
    let mut r = 0;
    if let Some(tiles) = tiles {
        while r + 4 <= nrows {
            let mut k = 0;
            while k < nacts {
                let m = (nacts - k).min(4);
                tiles[m - 1](
                    cols,
                    wr.as_ptr().add(r * rb),
                    rb,
                    acts.as_ptr().add(k * st),
                    st,
                    out.as_mut_ptr().add(k * os + r),
                    os,
                );
                k += m;
            }
            r += 4;
        }
    }
    if r == nrows {
        return;
    }
    if nacts == 1 {
        dot_rows(
            w,
            cols,
            &wr[r * rb..],
            rb,
            nrows - r,
            &acts[..st],
            &mut out[r..nrows],
        );
        return;
    }
    let mut tmp = vec![0f32; nacts];
    for rr in r..nrows {
        dot_multi(
            w,
            cols,
            &wr[rr * rb..(rr + 1) * rb],
            acts,
            st,
            nacts,
            &mut tmp,
        );
        for (k, v) in tmp.iter().enumerate() {
            out[k * os + rr] = *v;
        }
    }
}
