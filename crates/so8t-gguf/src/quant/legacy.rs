//! The 32-weight block types: Q8_0, Q4_0, Q5_0 (quantize and dequantize), Q4_1 and Q5_1
//! (dequantize only).
//!
//! Layouts from llama.cpp's `ggml/src/ggml-common.h` (`block_q8_0`: f16 `d`, 32 × i8;
//! `block_q4_0`: f16 `d`, 16 bytes of nibbles; `block_q5_0`: f16 `d`, u32 `qh`, 16 bytes of
//! nibbles; `_1` variants add an f16 min `m` after `d`). Algorithms are those of
//! `quantize_row_q{8,4,5}_0_ref` in `ggml/src/ggml-quants.c`, which `llama-quantize` uses when
//! there is no importance matrix.

use super::float::{read_f16, write_f16};

const QK: usize = 32;

/// The signed value of largest magnitude in `x` (the first one on ties) and its magnitude.
#[inline]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Q8_0: `d = amax / 127`, `q = round(x / d)` (half away from zero).
pub(crate) fn quantize_q8_0(src: &[f32], out: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(out.chunks_exact_mut(34)) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(&mut y[..2], d);
        for (q, &v) in y[2..].iter_mut().zip(x) {
            *q = (v * id).round() as i8 as u8;
        }
    }
}

/// Q8_0 → f32.
pub(crate) fn dequantize_q8_0(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(b);
        for (o, &q) in y.iter_mut().zip(&b[2..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

/// Q4_0: `d = max / -8` with `max` the signed value of largest magnitude; `q = min(15, ⌊x/d + 8.5⌋)`.
pub(crate) fn quantize_q4_0(src: &[f32], out: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(out.chunks_exact_mut(18)) {
        let (max, _) = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(&mut y[..2], d);
        for j in 0..QK / 2 {
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
            y[2 + j] = q0 | (q1 << 4);
        }
    }
}

/// Q4_0 → f32.
pub(crate) fn dequantize_q4_0(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(b);
        for j in 0..QK / 2 {
            let q = b[2 + j];
            y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            y[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Q4_1 → f32 (`x = q·d + m`).
pub(crate) fn dequantize_q4_1(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(20).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(b);
        let m = read_f16(&b[2..]);
        for j in 0..QK / 2 {
            let q = b[4 + j];
            y[j] = (q & 0x0f) as f32 * d + m;
            y[j + QK / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

/// Q5_0: `d = max / -16`; `q = min(31, ⌊x/d + 16.5⌋)`, fifth bits in `qh`.
pub(crate) fn quantize_q5_0(src: &[f32], out: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(out.chunks_exact_mut(22)) {
        let (max, _) = signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(&mut y[..2], d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((x[j + QK / 2] * id + 16.5) as i8).min(31) as u8;
            y[6 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        y[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

/// Q5_0 → f32.
pub(crate) fn dequantize_q5_0(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(22).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(b);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..QK / 2 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let q = b[6 + j];
            y[j] = (((q & 0x0f) | h0) as i32 - 16) as f32 * d;
            y[j + QK / 2] = (((q >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}

/// Q5_1 → f32 (`x = q·d + m`).
pub(crate) fn dequantize_q5_1(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(24).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(b);
        let m = read_f16(&b[2..]);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for j in 0..QK / 2 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let q = b[8 + j];
            y[j] = ((q & 0x0f) | h0) as f32 * d + m;
            y[j + QK / 2] = ((q >> 4) | h1) as f32 * d + m;
        }
    }
}
