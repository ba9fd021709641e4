//! Portable activation-row conversions (llama.cpp's `quantize_row_q8_{0,1,K}_ref` numerics) and
//! small byte helpers shared by the kernels.

use so8t_gguf::quant::{f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};

use super::ActType;

/// The little-endian f16 at `b[o..o + 2]` as f32.
#[inline(always)]
pub(crate) fn f16(b: &[u8], o: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[o], b[o + 1]]))
}

/// The little-endian f32 at `b[o..o + 4]`.
#[inline(always)]
pub(crate) fn f32_at(b: &[u8], o: usize) -> f32 {
    f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// `v.round()` (half away from zero) as i8 for |v| < 2^23, without a libm call (the crate is
/// built for baseline x86_64, where `f32::round` is not an instruction).
#[inline(always)]
fn round_away(v: f32) -> i8 {
    let t = v as i32; // truncates toward zero
    let frac = v - t as f32; // exact
    let step = if frac >= 0.5 {
        1
    } else if frac <= -0.5 {
        -1
    } else {
        0
    };
    (t + step) as i8
}

/// ggml's `nearest_int`: round half to even through the 1.5·2^23 trick (|v| < 2^22).
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// max |x| over eight independent lanes (max is order-free, so this equals a plain fold but
/// does not wait on one long dependency chain).
#[inline(always)]
fn absmax(x: &[f32]) -> f32 {
    let mut m = [0f32; 8];
    let n8 = x.len() / 8 * 8;
    for c in x[..n8].chunks_exact(8) {
        for l in 0..8 {
            m[l] = m[l].max(c[l].abs());
        }
    }
    let mut r = m.iter().fold(0f32, |a, &v| a.max(v));
    for v in &x[n8..] {
        r = r.max(v.abs());
    }
    r
}

/// Converts `x` into format `a` (scalar code; `out` has the right length).
pub(crate) fn quantize(a: ActType, x: &[f32], out: &mut [u8]) {
    match a {
        ActType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        ActType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
            }
        }
        ActType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
            }
        }
        ActType::Q8_0 => quantize_q8_0(x, out),
        ActType::Q8_1 => quantize_q8_1(x, out),
        ActType::Q8_K => quantize_q8_k(x, out),
    }
}

/// Q8_0: `d = amax/127` (stored as f16), `q = round(x/d)` half away from zero.
pub(crate) fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let amax = absmax(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        for (q, &v) in y[2..].iter_mut().zip(xb) {
            *q = round_away(v * id) as u8;
        }
    }
}

/// Q8_1: as Q8_0, plus `s = d·Σq` stored as f16 after `d`.
pub(crate) fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let amax = absmax(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in y[4..].iter_mut().zip(xb) {
            let r = round_away(v * id);
            sum += r as i32;
            *q = r as u8;
        }
        y[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        y[2..4].copy_from_slice(&f32_to_f16_bits(sum as f32 * d).to_le_bytes());
    }
}

/// Q8_K: `iscale = -127/max` with `max` the signed value of largest magnitude, `q =
/// min(127, round_half_even(iscale·x))`, sums of 16, `d = 1/iscale` as f32.
pub(crate) fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            y.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in y[4..260].iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for g in 0..16 {
            let s: i32 = y[4 + 16 * g..20 + 16 * g]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            y[260 + 2 * g..262 + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
        }
        y[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
