//! Portable dot products: integer sums inside a block, one f32 multiply-add per block (the
//! numerics of llama.cpp's `ggml_vec_dot_*_generic`). The reference for the AVX2 kernels.

use super::act::{f16, f32_at};
use super::GgmlType;

/// dot(weight row, activation row) for any supported type.
pub(crate) fn vec_dot(w: GgmlType, cols: usize, wr: &[u8], a: &[u8]) -> f32 {
    match w {
        GgmlType::F32 => dot_f32_bytes(cols, wr, a),
        GgmlType::F16 => dot_f16(cols, wr, a),
        GgmlType::BF16 => dot_bf16(cols, wr, a),
        GgmlType::Q8_0 => dot_q8_0(wr, a),
        GgmlType::Q4_0 => dot_q4_0(wr, a),
        GgmlType::Q4_1 => dot_q4_1(wr, a),
        GgmlType::Q5_0 => dot_q5_0(wr, a),
        GgmlType::Q5_1 => dot_q5_1(wr, a),
        GgmlType::Q2_K => dot_q2_k(wr, a),
        GgmlType::Q3_K => dot_q3_k(wr, a),
        GgmlType::Q4_K => dot_q4_k(wr, a),
        GgmlType::Q5_K => dot_q5_k(wr, a),
        GgmlType::Q6_K => dot_q6_k(wr, a),
        other => panic!("kernels: weight type {other} is not supported"),
    }
}

/// Sums eight lanes the way the AVX2 code does (pairs of halves, then pairs, then the last two).
#[inline]
fn lanes_sum(s: [f32; 8]) -> f32 {
    let h = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
    let q = [h[0] + h[2], h[1] + h[3]];
    q[0] + q[1]
}

/// f32 dot with eight partial sums.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (x, y) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for l in 0..8 {
            s[l] = x[l].mul_add(y[l], s[l]);
        }
    }
    let mut t = lanes_sum(s);
    for (x, y) in a[n8..].iter().zip(&b[n8..]) {
        t += x * y;
    }
    t
}

/// Dot of two rows of `cols` values decoded by `get(bytes, index)`, eight partial sums.
#[inline(always)]
fn dot_decoded(cols: usize, w: &[u8], a: &[u8], get: impl Fn(&[u8], usize) -> f32) -> f32 {
    let mut s = [0f32; 8];
    let n8 = cols / 8 * 8;
    for i in (0..n8).step_by(8) {
        for l in 0..8 {
            s[l] = get(w, i + l).mul_add(get(a, i + l), s[l]);
        }
    }
    let mut t = lanes_sum(s);
    for i in n8..cols {
        t += get(w, i) * get(a, i);
    }
    t
}

fn dot_f32_bytes(cols: usize, w: &[u8], a: &[u8]) -> f32 {
    dot_decoded(cols, w, a, |b, i| f32_at(b, 4 * i))
}

fn dot_f16(cols: usize, w: &[u8], a: &[u8]) -> f32 {
    dot_decoded(cols, w, a, |b, i| f16(b, 2 * i))
}

fn dot_bf16(cols: usize, w: &[u8], a: &[u8]) -> f32 {
    dot_decoded(cols, w, a, |b, i| {
        f32::from_bits((u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32) << 16)
    })
}

#[inline(always)]
fn i8s(b: &[u8]) -> impl Iterator<Item = i32> + '_ {
    b.iter().map(|&q| q as i8 as i32)
}

fn dot_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(34).zip(a.chunks_exact(34)) {
        let s: i32 = i8s(&x[2..]).zip(i8s(&y[2..])).map(|(p, q)| p * q).sum();
        sum += s as f32 * (f16(x, 0) * f16(y, 0));
    }
    sum
}

fn dot_q4_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
        let q = &y[2..];
        let mut s = 0i32;
        for j in 0..16 {
            let b = x[2 + j];
            s += ((b & 15) as i32 - 8) * q[j] as i8 as i32;
            s += ((b >> 4) as i32 - 8) * q[j + 16] as i8 as i32;
        }
        sum += s as f32 * (f16(x, 0) * f16(y, 0));
    }
    sum
}

fn dot_q4_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(20).zip(a.chunks_exact(36)) {
        let q = &y[4..];
        let mut s = 0i32;
        for j in 0..16 {
            let b = x[4 + j];
            s += (b & 15) as i32 * q[j] as i8 as i32;
            s += (b >> 4) as i32 * q[j + 16] as i8 as i32;
        }
        sum += s as f32 * (f16(x, 0) * f16(y, 0)) + f16(x, 2) * f16(y, 2);
    }
    sum
}

/// The 32 five-bit levels of a Q5 block (nibbles at `qs`, fifth bits in `qh`).
#[inline(always)]
fn q5_levels(qh: u32, qs: &[u8]) -> [i32; 32] {
    let mut l = [0i32; 32];
    for j in 0..16 {
        l[j] = ((qs[j] & 15) as u32 | (((qh >> j) & 1) << 4)) as i32;
        l[j + 16] = ((qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32;
    }
    l
}

fn dot_q5_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(22).zip(a.chunks_exact(34)) {
        let l = q5_levels(u32::from_le_bytes([x[2], x[3], x[4], x[5]]), &x[6..]);
        let s: i32 = l.iter().zip(i8s(&y[2..])).map(|(p, q)| (p - 16) * q).sum();
        sum += s as f32 * (f16(x, 0) * f16(y, 0));
    }
    sum
}

fn dot_q5_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(24).zip(a.chunks_exact(36)) {
        let l = q5_levels(u32::from_le_bytes([x[4], x[5], x[6], x[7]]), &x[8..]);
        let s: i32 = l.iter().zip(i8s(&y[4..])).map(|(p, q)| p * q).sum();
        sum += s as f32 * (f16(x, 0) * f16(y, 0)) + f16(x, 2) * f16(y, 2);
    }
    sum
}

/// Q8_K block parts: (d, qs, bsums).
#[inline(always)]
fn q8k(y: &[u8]) -> (f32, &[u8], [i32; 16]) {
    let mut bs = [0i32; 16];
    for (g, v) in bs.iter_mut().enumerate() {
        *v = i16::from_le_bytes([y[260 + 2 * g], y[261 + 2 * g]]) as i32;
    }
    (f32_at(y, 0), &y[4..260], bs)
}

/// The eight 6-bit (scale, min) pairs of a Q4_K/Q5_K super-block (`get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scale_min_k4(s: &[u8]) -> ([i32; 8], [i32; 8]) {
    let mut sc = [0i32; 8];
    let mut m = [0i32; 8];
    for j in 0..8 {
        if j < 4 {
            sc[j] = (s[j] & 63) as i32;
            m[j] = (s[j + 4] & 63) as i32;
        } else {
            sc[j] = ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)) as i32;
            m[j] = ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as i32;
        }
    }
    (sc, m)
}

/// Shared Q4_K/Q5_K body: `level(c, l)` gives the two levels (elements 64c+l, 64c+32+l).
#[inline(always)]
fn dot_k45(x: &[u8], y: &[u8], level: impl Fn(usize, usize) -> (i32, i32)) -> f32 {
    let (dy, q, bs) = q8k(y);
    let (sc, m) = scale_min_k4(&x[4..16]);
    let mut smin = 0i32;
    for j in 0..8 {
        smin += m[j] * (bs[2 * j] + bs[2 * j + 1]);
    }
    let mut sumi = 0i32;
    for c in 0..4 {
        let (mut s1, mut s2) = (0i32, 0i32);
        for l in 0..32 {
            let (a, b) = level(c, l);
            s1 += a * q[64 * c + l] as i8 as i32;
            s2 += b * q[64 * c + 32 + l] as i8 as i32;
        }
        sumi += sc[2 * c] * s1 + sc[2 * c + 1] * s2;
    }
    dy * f16(x, 0) * sumi as f32 - dy * f16(x, 2) * smin as f32
}

fn dot_q4_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(144).zip(a.chunks_exact(292)) {
        let qs = &x[16..144];
        sum += dot_k45(x, y, |c, l| {
            let b = qs[32 * c + l];
            ((b & 15) as i32, (b >> 4) as i32)
        });
    }
    sum
}

fn dot_q5_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(176).zip(a.chunks_exact(292)) {
        let qh = &x[16..48];
        let qs = &x[48..176];
        sum += dot_k45(x, y, |c, l| {
            let b = qs[32 * c + l];
            let h = qh[l] >> (2 * c);
            (
                ((b & 15) | ((h & 1) << 4)) as i32,
                ((b >> 4) | ((h & 2) << 3)) as i32,
            )
        });
    }
    sum
}

fn dot_q6_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(210).zip(a.chunks_exact(292)) {
        let (dy, q, _) = q8k(y);
        let mut sumi = 0i32;
        for h in 0..2 {
            let ql = &x[64 * h..64 * h + 64];
            let qh = &x[128 + 32 * h..160 + 32 * h];
            let mut g = [0i32; 8];
            for l in 0..32 {
                let lv = [
                    (ql[l] & 15) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for (k, &v) in lv.iter().enumerate() {
                    g[2 * k + l / 16] += (v as i32 - 32) * q[128 * h + 32 * k + l] as i8 as i32;
                }
            }
            for (j, s) in g.iter().enumerate() {
                sumi += (x[192 + 8 * h + j] as i8 as i32) * s;
            }
        }
        sum += dy * f16(x, 208) * sumi as f32;
    }
    sum
}

/// Element `e` of a Q2_K/Q3_K super-block sits in byte `32·(e/128) + e%32` of the 2-bit levels
/// at shift `2·((e/32)%4)`; its 16-group is `e/16`.
#[inline(always)]
fn k23_pos(e: usize) -> (usize, u32) {
    (32 * (e / 128) + e % 32, 2 * ((e / 32) % 4) as u32)
}

fn dot_q2_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(84).zip(a.chunks_exact(292)) {
        let (dy, q, bs) = q8k(y);
        let (scales, qs) = (&x[..16], &x[16..80]);
        let (mut sumi, mut smin) = (0i32, 0i32);
        for g in 0..16 {
            let mut s = 0i32;
            for e in 16 * g..16 * g + 16 {
                let (b, sh) = k23_pos(e);
                s += ((qs[b] >> sh) & 3) as i32 * q[e] as i8 as i32;
            }
            sumi += (scales[g] & 15) as i32 * s;
            smin += (scales[g] >> 4) as i32 * bs[g];
        }
        sum += dy * f16(x, 80) * sumi as f32 - dy * f16(x, 82) * smin as f32;
    }
    sum
}

/// Q3_K's sixteen 6-bit scales (each minus 32).
pub(crate) fn q3_k_scales(p: &[u8]) -> [i32; 16] {
    let mut s = [0i32; 16];
    for (j, v) in s.iter_mut().enumerate() {
        let low = if j < 8 { p[j] & 15 } else { p[j - 8] >> 4 };
        let high = (p[8 + j % 4] >> (2 * (j / 4))) & 3;
        *v = (low | (high << 4)) as i32 - 32;
    }
    s
}

fn dot_q3_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(110).zip(a.chunks_exact(292)) {
        let (dy, q, _) = q8k(y);
        let (hm, qs) = (&x[..32], &x[32..96]);
        let sc = q3_k_scales(&x[96..108]);
        let mut sumi = 0i32;
        for g in 0..16 {
            let mut s = 0i32;
            for e in 16 * g..16 * g + 16 {
                let (b, sh) = k23_pos(e);
                let hbit = (hm[e % 32] >> (e / 32)) & 1;
                let v = ((qs[b] >> sh) & 3) as i32 - if hbit != 0 { 0 } else { 4 };
                s += v * q[e] as i8 as i32;
            }
            sumi += sc[g] * s;
        }
        sum += dy * f16(x, 108) * sumi as f32;
    }
    sum
}
