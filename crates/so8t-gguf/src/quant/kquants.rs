//! Q4_K and Q5_K: 256-weight super-blocks of eight 32-weight sub-blocks, each with a 6-bit scale
//! and a 6-bit min (`x ≈ d·sc·q − dmin·m`).
//!
//! Layouts from llama.cpp's `ggml/src/ggml-common.h` (`block_q4_K`: f16 `d`, f16 `dmin`,
//! 12 bytes of packed scales/mins, 128 bytes of nibbles; `block_q5_K` adds 32 bytes of high bits
//! `qh` before the nibbles). Algorithms are `quantize_row_q{4,5}_K_ref` and `make_qkx2_quants` of
//! `ggml/src/ggml-quants.c`, the path `llama-quantize` takes without an importance matrix. The
//! float operations keep llama.cpp's order, so results are bit-identical. The per-sub-block
//! search runs eight sub-blocks at once ([`super::lanes`]); the scalar `make_qkx2_quants` stays
//! here as the reference the tests hold it to.

use super::float::{read_f16, round_f16, write_f16};
use super::lanes::{self, SUB8};

/// Weights per K-quant super-block.
pub(crate) const QK_K: usize = 256;

/// ggml's `nearest_int`: round half to even through the 1.5·2^23 trick (valid for |v| < 2^22;
/// outside that range it returns the same wrapped value as llama.cpp).
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let t = (v + 12_582_912.0f32).to_bits() as i32;
    (t & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `make_qkx2_quants` (scalar reference of [`lanes::fit_qkx2_x8`]): fits
/// `x ≈ scale·L + min` (`L` in `0..=nmax`, `min ≤ 0`) by a weighted least-squares search over
/// `nstep + 1` trial inverse scales. Returns
/// `(scale, -min)` and leaves the levels in `l`.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32; 32],
    weights: &[f32; 32],
    l: &mut [u8; 32],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                *l = laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` from the 12 packed bytes.
#[inline]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Quantizes the scales and mins of one super-block to 6 bits, packs them into `packed` and
/// returns the f16-rounded `(d, dmin)` after writing them into `dd[0..4]`. Then recomputes
/// the levels `big_l` against the quantized scales (levels in `0..=nmax`).
fn pack_scales_and_requantize(
    x: &[f32],
    scales: &[f32; 8],
    mins: &[f32; 8],
    nmax: i32,
    dd: &mut [u8],
    packed: &mut [u8],
    big_l: &mut [u8; QK_K],
) {
    let max_scale = scales
        .iter()
        .fold(0.0f32, |a, &s| if s > a { s } else { a });
    let max_min = mins.iter().fold(0.0f32, |a, &m| if m > a { m } else { a });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    packed[..12].fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    write_f16(&mut dd[0..2], max_scale / 63.0);
    write_f16(&mut dd[2..4], max_min / 63.0);
    let d_all = round_f16(max_scale / 63.0);
    let m_all = round_f16(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, packed);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax);
            big_l[32 * j + ii] = q as u8;
        }
    }
}

/// Per-sub-block fit shared by Q4_K and Q5_K: weights `rms + |x|`, then `make_qkx2_quants`
/// (scalar reference).
#[cfg(test)]
pub(crate) fn fit_sub_blocks(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    big_l: &mut [u8],
) -> ([f32; 8], [f32; 8]) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut xs = [0.0f32; 32];
    let mut weights = [0.0f32; 32];
    let mut l = [0u8; 32];
    for j in 0..8 {
        xs.copy_from_slice(&x[32 * j..32 * j + 32]);
        let mut sum_x2 = 0.0f32;
        for &v in &xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(&xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(nmax, &xs, &weights, &mut l, rmin, rdelta, nstep);
        scales[j] = s;
        mins[j] = m;
        big_l[32 * j..32 * j + 32].copy_from_slice(&l);
    }
    (scales, mins)
}

/// How a super-block's eight sub-blocks are fitted. A trait rather than a closure so that the
/// chosen fit inlines into the AVX2 copy of the caller.
pub(crate) trait Fit {
    /// Fits `x` (256 weights): the scales and negated mins, the levels in `levels`.
    fn fit(
        x: &[f32],
        nmax: i32,
        rmin: f32,
        rdelta: f32,
        nstep: i32,
        levels: &mut [u8],
    ) -> ([f32; SUB8], [f32; SUB8]);
}

/// The eight sub-blocks searched at once ([`lanes::fit_qkx2_x8`]).
pub(crate) struct LaneFit<V>(std::marker::PhantomData<V>);

impl<V: lanes::Lanes8> Fit for LaneFit<V> {
    #[inline(always)]
    fn fit(
        x: &[f32],
        nmax: i32,
        rmin: f32,
        rdelta: f32,
        nstep: i32,
        levels: &mut [u8],
    ) -> ([f32; SUB8], [f32; SUB8]) {
        lanes::fit_qkx2_x8::<V>(x, nmax, rmin, rdelta, nstep, levels)
    }
}

/// One sub-block after the other with the scalar reference.
#[cfg(test)]
pub(crate) struct ScalarFit;

#[cfg(test)]
impl Fit for ScalarFit {
    fn fit(
        x: &[f32],
        nmax: i32,
        rmin: f32,
        rdelta: f32,
        nstep: i32,
        levels: &mut [u8],
    ) -> ([f32; SUB8], [f32; SUB8]) {
        fit_sub_blocks(x, nmax, rmin, rdelta, nstep, levels)
    }
}

lanes::avx2_dispatch! {
    /// Q4_K, as `quantize_row_q4_K_ref`.
    pub(crate) fn quantize_q4_k(src: &[f32], out: &mut [u8]) use V => q4_k_blocks::<LaneFit<V>>(src, out)
}

/// Q4_K with the sub-block fit `F`.
#[inline(always)]
pub(crate) fn q4_k_blocks<F: Fit>(src: &[f32], out: &mut [u8]) {
    let mut big_l = [0u8; QK_K];
    for (x, y) in src.chunks_exact(QK_K).zip(out.chunks_exact_mut(144)) {
        let (scales, mins) = F::fit(x, 15, -1.0, 0.1, 20, &mut big_l);
        let (dd, rest) = y.split_at_mut(4);
        let (packed, qs) = rest.split_at_mut(12);
        pack_scales_and_requantize(x, &scales, &mins, 15, dd, packed, &mut big_l);
        for (c, q) in qs.chunks_exact_mut(32).enumerate() {
            let j = 64 * c;
            for l in 0..32 {
                q[l] = big_l[j + l] | (big_l[j + l + 32] << 4);
            }
        }
    }
}

/// Q4_K → f32.
pub(crate) fn dequantize_q4_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(144).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(b);
        let min = read_f16(&b[2..]);
        let scales = &b[4..16];
        let qs = &b[16..];
        for c in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * c, scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &qs[32 * c..32 * c + 32];
            let yy = &mut y[64 * c..64 * c + 64];
            for l in 0..32 {
                yy[l] = d1 * (q[l] & 0x0f) as f32 - m1;
                yy[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

lanes::avx2_dispatch! {
    /// Q5_K, as `quantize_row_q5_K_ref`.
    pub(crate) fn quantize_q5_k(src: &[f32], out: &mut [u8]) use V => q5_k_blocks::<LaneFit<V>>(src, out)
}

/// Q5_K with the sub-block fit `F`.
#[inline(always)]
pub(crate) fn q5_k_blocks<F: Fit>(src: &[f32], out: &mut [u8]) {
    let mut big_l = [0u8; QK_K];
    for (x, y) in src.chunks_exact(QK_K).zip(out.chunks_exact_mut(176)) {
        let (scales, mins) = F::fit(x, 31, -0.5, 0.1, 15, &mut big_l);
        let (dd, rest) = y.split_at_mut(4);
        let (packed, rest) = rest.split_at_mut(12);
        let (qh, ql) = rest.split_at_mut(32);
        pack_scales_and_requantize(x, &scales, &mins, 31, dd, packed, &mut big_l);
        qh.fill(0);
        let (mut m1, mut m2) = (1u8, 2u8);
        for (c, q) in ql.chunks_exact_mut(32).enumerate() {
            let n = 64 * c;
            for j in 0..32 {
                let mut l1 = big_l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = big_l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                q[j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

/// Q5_K → f32.
pub(crate) fn dequantize_q5_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(176).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(b);
        let min = read_f16(&b[2..]);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let ql = &b[48..];
        let (mut u1, mut u2) = (1u8, 2u8);
        for c in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * c, scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &ql[32 * c..32 * c + 32];
            let yy = &mut y[64 * c..64 * c + 64];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                yy[l] = d1 * ((q[l] & 0x0f) + h1) as f32 - m1;
                yy[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}
