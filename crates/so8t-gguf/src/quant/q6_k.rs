//! Q6_K: 256-weight super-blocks of sixteen 16-weight sub-blocks, 6-bit symmetric levels and
//! 8-bit sub-block scales (`x ≈ d·sc·(q − 32)`).
//!
//! Layout from llama.cpp's `ggml/src/ggml-common.h` (`block_q6_K`: 128 bytes low nibbles `ql`,
//! 64 bytes high 2-bit pairs `qh`, 16 × i8 `scales`, f16 `d`). Algorithm is
//! `quantize_row_q6_K_ref` with `make_qx_quants(…, rmse_type = 1, NULL)` from
//! `ggml/src/ggml-quants.c`, float operations in llama.cpp's order. The sixteen sub-block
//! searches run at once ([`super::lanes`]); the scalar `make_qx_quants` is the tests' reference.

use super::float::{read_f16, round_f16, write_f16};
use super::kquants::{nearest_int, QK_K};
use super::lanes::{self, GROUP_MAX_EPS, SUB16};

/// ggml's `make_qx_quants` (scalar reference of [`lanes::fit_qx_x16`]) with `rmse_type = 1` and
/// no importance weights: symmetric levels
/// `l + nmax` in `0..2·nmax`, scale refined over 19 trial inverse scales with weights `x²`.
#[cfg(test)]
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = v * v;
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = v * v;
            let lf = l as f32;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
                l_out[i] = (nmax + l) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// How a super-block's sixteen sub-blocks are fitted (a trait so that it inlines into the AVX2
/// copy of the caller).
pub(crate) trait Fit16 {
    /// Fits `x` (256 weights): the scales, the levels `l + nmax` in `levels`.
    fn fit(x: &[f32], nmax: i32, levels: &mut [i8]) -> [f32; SUB16];
}

/// The sixteen sub-blocks searched at once ([`lanes::fit_qx_x16`]).
pub(crate) struct LaneFit16<V>(std::marker::PhantomData<V>);

impl<V: lanes::Lanes8> Fit16 for LaneFit16<V> {
    #[inline(always)]
    fn fit(x: &[f32], nmax: i32, levels: &mut [i8]) -> [f32; SUB16] {
        lanes::fit_qx_x16::<V>(x, nmax, levels)
    }
}

/// One sub-block after the other with the scalar reference.
#[cfg(test)]
pub(crate) struct ScalarFit16;

#[cfg(test)]
impl Fit16 for ScalarFit16 {
    fn fit(x: &[f32], nmax: i32, levels: &mut [i8]) -> [f32; SUB16] {
        let mut s = [0.0f32; SUB16];
        for (ib, v) in s.iter_mut().enumerate() {
            let r = 16 * ib..16 * ib + 16;
            *v = make_qx_quants(nmax, &x[r.clone()], &mut levels[r]);
        }
        s
    }
}

lanes::avx2_dispatch! {
    /// Q6_K, as `quantize_row_q6_K_ref`.
    pub(crate) fn quantize_q6_k(src: &[f32], out: &mut [u8]) use V => q6_k_blocks::<LaneFit16<V>>(src, out)
}

/// Q6_K with the sub-block fit `F`.
#[inline(always)]
pub(crate) fn q6_k_blocks<F: Fit16>(src: &[f32], out: &mut [u8]) {
    let mut big_l = [0i8; QK_K];
    for (x, y) in src.chunks_exact(QK_K).zip(out.chunks_exact_mut(210)) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        let scales = F::fit(x, 32, &mut big_l);
        for &s in &scales {
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            y.fill(0);
            continue;
        }
        let (ql, rest) = y.split_at_mut(128);
        let (qh, rest) = rest.split_at_mut(64);
        let (sc, dd) = rest.split_at_mut(16);

        let iscale = -128.0f32 / max_scale;
        write_f16(dd, 1.0 / iscale);
        let d_all = round_f16(1.0 / iscale);
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        for j in 0..16 {
            let d = d_all * (sc[j] as i8) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                big_l[16 * j + ii] = (l + 32) as i8;
            }
        }
        for h in 0..2 {
            let j = 128 * h;
            let ql = &mut ql[64 * h..64 * h + 64];
            let qh = &mut qh[32 * h..32 * h + 32];
            for l in 0..32 {
                let q1 = big_l[j + l] as u8;
                let q2 = big_l[j + l + 32] as u8;
                let q3 = big_l[j + l + 64] as u8;
                let q4 = big_l[j + l + 96] as u8;
                ql[l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                ql[l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                qh[l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

/// Q6_K → f32.
pub(crate) fn dequantize_q6_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(210).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(&b[208..]);
        for h in 0..2 {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[128 + 32 * h..128 + 32 * h + 32];
            let sc = &b[192 + 8 * h..192 + 8 * h + 8];
            let yy = &mut y[128 * h..128 * h + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                yy[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                yy[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                yy[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                yy[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}
