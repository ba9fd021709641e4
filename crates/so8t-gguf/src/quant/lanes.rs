//! The K-quant scale searches, every sub-block of a super-block in its own SIMD lane.
//!
//! llama.cpp's `make_qkx2_quants` (Q4_K, Q5_K) and `make_qx_quants` (Q6_K) fit one 32- or
//! 16-weight sub-block at a time by trying 16–21 inverse scales, each a pass of multiply, round,
//! clamp and three weighted sums: that search is nearly all of the time of a K-quant export.
//! Here the sub-blocks of a super-block are transposed so that lane `j` of every vector holds
//! sub-block `j`: each lane performs exactly the scalar algorithm's float operations in the
//! scalar order (no reassociated sums, no fused multiply-add), so the results stay
//! bit-identical to llama.cpp's while eight sub-blocks are searched at once. The searches are
//! written once over [`Lanes8`]; `quantize_q{4,5,6}_k` run them as AVX2 vectors where the CPU
//! has AVX2 (checked at run time) and as portable arrays elsewhere.

mod vector;

#[cfg(target_arch = "x86_64")]
pub(crate) use vector::Avx2;
pub(crate) use vector::{Lanes8, Portable};

/// Defines `fn NAME(ARGS) { BODY }` where BODY names the lane type `V`: where the CPU has AVX2
/// (checked at run time) BODY runs with `V` = [`Avx2`] in a copy compiled with AVX2 enabled,
/// elsewhere with `V` = [`Portable`].
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) use $v:ident => $body:expr) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    type $v = $crate::quant::lanes::Avx2;
                    $body
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, the only requirement of `avx2`.
                    return unsafe { avx2($($arg),*) };
                }
            }
            type $v = $crate::quant::lanes::Portable;
            $body
        }
    };
}
pub(crate) use avx2_dispatch;

/// The sub-blocks of a Q4_K / Q5_K super-block.
pub(crate) const SUB8: usize = 8;
/// The sub-blocks of a Q6_K super-block.
pub(crate) const SUB16: usize = 16;

/// Sub-block `j` of `x` (sub-blocks of `N` weights) in lane `j`: row `i` holds weight `i` of
/// every sub-block.
#[inline(always)]
fn transpose<V: Lanes8, const N: usize>(x: &[f32]) -> [V; N] {
    let mut rows = [V::splat(0.0); N];
    for (i, row) in rows.iter_mut().enumerate() {
        let mut a = [0.0f32; 8];
        for (j, v) in a.iter_mut().enumerate() {
            *v = x[N * j + i];
        }
        *row = V::load(&a);
    }
    rows
}

/// `make_qkx2_quants` for the eight 32-weight sub-blocks of a 256-weight super-block `x`
/// (sub-block `j` is `x[32j..32j + 32]`), with llama.cpp's weights `rms(sub-block) + |x|`.
/// Returns the scales and the negated mins, and leaves the levels (`0..=nmax`) in `big_l`.
#[inline(always)]
pub(crate) fn fit_qkx2_x8<V: Lanes8>(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    big_l: &mut [u8],
) -> ([f32; SUB8], [f32; SUB8]) {
    const N: usize = 32;
    let xt: [V; N] = transpose(x);
    let mut sum_x2 = V::splat(0.0);
    for &v in &xt {
        sum_x2 = sum_x2.add(v.mul(v));
    }
    let av_x = sum_x2.div(V::splat(32.0)).sqrt();
    let w: [V; N] = xt.map(|v| av_x.add(v.abs()));
    let (mut min, mut max) = (xt[0], xt[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w.mul(xt[0]);
    for i in 1..N {
        let v = xt[i];
        min = V::select(v.lt(min), v, min);
        max = V::select(v.gt(max), v, max);
        sum_w = sum_w.add(w[i]);
        sum_x = sum_x.add(w[i].mul(v));
    }
    let zero = V::splat(0.0);
    min = V::select(min.gt(zero), zero, min);
    // A constant sub-block: llama.cpp returns here with levels 0, scale 0 and -min.
    let flat = max.eq(min);
    let flat_min = min;
    let nmaxf = V::splat(nmax as f32);
    let iscale = nmaxf.div(max.sub(min));
    let mut scale = V::splat(1.0).div(iscale);
    let mut l = [zero; N];
    let mut best_error = zero;
    for i in 0..N {
        l[i] = iscale.mul(xt[i].sub(min)).round_clamp(0, nmax);
        let diff = scale.mul(l[i]).add(min).sub(xt[i]);
        best_error = best_error.add(w[i].mul(diff.mul(diff)));
    }
    let mut laux = [zero; N];
    for is in 0..=nstep {
        // The search moves `min` as it finds better fits, and later trials start from it.
        let iscale = V::splat(rmin + rdelta * is as f32 + nmax as f32).div(max.sub(min));
        let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
        for i in 0..N {
            laux[i] = iscale.mul(xt[i].sub(min)).round_clamp(0, nmax);
            let wl = w[i].mul(laux[i]);
            sum_l = sum_l.add(wl);
            sum_l2 = sum_l2.add(wl.mul(laux[i]));
            sum_xl = sum_xl.add(wl.mul(xt[i]));
        }
        let det = sum_w.mul(sum_l2).sub(sum_l.mul(sum_l));
        let s = sum_w.mul(sum_xl).sub(sum_x.mul(sum_l)).div(det);
        let m = sum_l2.mul(sum_x).sub(sum_l.mul(sum_xl)).div(det);
        let clamp = m.gt(zero);
        let this_min = V::select(clamp, zero, m);
        let this_scale = V::select(clamp, sum_xl.div(sum_l2), s);
        let mut cur_error = zero;
        for i in 0..N {
            let diff = this_scale.mul(laux[i]).add(this_min).sub(xt[i]);
            cur_error = cur_error.add(w[i].mul(diff.mul(diff)));
        }
        let take = V::and(det.gt(zero), cur_error.lt(best_error));
        best_error = V::select(take, cur_error, best_error);
        scale = V::select(take, this_scale, scale);
        min = V::select(take, this_min, min);
        for i in 0..N {
            l[i] = V::select(take, laux[i], l[i]);
        }
    }
    scale = V::select(flat, zero, scale);
    min = V::select(flat, flat_min, min);
    let levels = l.map(|v| V::select(flat, zero, v).store());
    for (i, row) in levels.iter().enumerate() {
        for (j, &q) in row.iter().enumerate() {
            big_l[N * j + i] = q as u8;
        }
    }
    let neg_min = zero.sub(min).store();
    (scale.store(), neg_min)
}

/// ggml's threshold under which a group counts as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// `make_qx_quants(nmax, …, rmse_type = 1, NULL)` for eight 16-weight sub-blocks `x` (128
/// weights): the scales, with the levels `l + nmax` in `big_l`.
#[inline(always)]
fn fit_qx_x8<V: Lanes8>(x: &[f32], nmax: i32, big_l: &mut [i8]) -> [f32; 8] {
    const N: usize = 16;
    let xt: [V; N] = transpose(x);
    let zero = V::splat(0.0);
    let (mut max, mut amax) = (zero, zero);
    for &v in &xt {
        let a = v.abs();
        let bigger = a.gt(amax);
        amax = V::select(bigger, a, amax);
        max = V::select(bigger, v, max);
    }
    let nmaxf = nmax as f32;
    let iscale = V::splat(-nmaxf).div(max);
    let w: [V; N] = xt.map(|v| v.mul(v));
    let mut l = [zero; N];
    let (mut sumlx, mut suml2) = (zero, zero);
    for i in 0..N {
        l[i] = iscale.mul(xt[i]).round_clamp(-nmax, nmax - 1);
        sumlx = sumlx.add(w[i].mul(xt[i]).mul(l[i]));
        suml2 = suml2.add(w[i].mul(l[i]).mul(l[i]));
    }
    let mut scale = V::select(suml2.eq(zero), zero, sumlx.div(suml2));
    let mut best = scale.mul(sumlx);
    let mut laux = [zero; N];
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = V::splat(-(nmaxf + 0.1 * is as f32)).div(max);
        let (mut sumlx, mut suml2) = (zero, zero);
        for i in 0..N {
            laux[i] = iscale.mul(xt[i]).round_clamp(-nmax, nmax - 1);
            sumlx = sumlx.add(w[i].mul(xt[i]).mul(laux[i]));
            suml2 = suml2.add(w[i].mul(laux[i]).mul(laux[i]));
        }
        let take = V::and(suml2.gt(zero), sumlx.mul(sumlx).gt(best.mul(suml2)));
        let s = sumlx.div(suml2);
        scale = V::select(take, s, scale);
        best = V::select(take, s.mul(sumlx), best);
        for i in 0..N {
            l[i] = V::select(take, laux[i], l[i]);
        }
    }
    // An all-zero sub-block: llama.cpp returns before the search with levels 0, scale 0.
    let tiny = amax.lt(V::splat(GROUP_MAX_EPS));
    for (i, v) in l.iter().enumerate() {
        let row = V::select(tiny, V::splat(-nmaxf), *v).store();
        for (j, &q) in row.iter().enumerate() {
            big_l[N * j + i] = (q as i32 + nmax) as i8;
        }
    }
    V::select(tiny, zero, scale).store()
}

/// [`fit_qx_x8`] for the sixteen 16-weight sub-blocks of a 256-weight super-block.
#[inline(always)]
pub(crate) fn fit_qx_x16<V: Lanes8>(x: &[f32], nmax: i32, big_l: &mut [i8]) -> [f32; SUB16] {
    let (lo, hi) = big_l.split_at_mut(128);
    let a = fit_qx_x8::<V>(&x[..128], nmax, lo);
    let b = fit_qx_x8::<V>(&x[128..256], nmax, hi);
    let mut s = [0.0f32; SUB16];
    s[..8].copy_from_slice(&a);
    s[8..].copy_from_slice(&b);
    s
}

#[cfg(test)]
mod tests;
