//! Dequantize-only K-quant types: Q2_K, Q3_K and Q8_K.
//!
//! Layouts from llama.cpp's `ggml/src/ggml-common.h`: `block_q2_K` (16 bytes of 4-bit
//! scale|min pairs, 64 bytes of 2-bit levels, f16 `d`, f16 `dmin`), `block_q3_K` (32 bytes of
//! high-bit mask, 64 bytes of 2-bit levels, 12 bytes of packed 6-bit scales, f16 `d`) and
//! `block_q8_K` (f32 `d`, 256 × i8, 16 × i16 sums). Decoding follows `dequantize_row_q{2,3,8}_K`
//! of `ggml/src/ggml-quants.c`.

use super::float::read_f16;
use super::kquants::QK_K;

/// Q2_K → f32 (`x = d·(sc & 15)·q − dmin·(sc >> 4)`).
pub(crate) fn dequantize_q2_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(84).zip(out.chunks_exact_mut(QK_K)) {
        let scales = &b[..16];
        let qs = &b[16..80];
        let d = read_f16(&b[80..]);
        let min = read_f16(&b[82..]);
        let mut is = 0;
        let mut o = 0;
        for h in 0..2 {
            let q = &qs[32 * h..32 * h + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let sc = scales[is];
                    is += 1;
                    let dl = d * (sc & 0x0f) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        y[o] = dl * ((q[16 * half + l] >> shift) & 3) as f32 - ml;
                        o += 1;
                    }
                }
            }
        }
    }
}

/// Unpacks Q3_K's twelve bytes into sixteen 6-bit scales (each minus 32).
fn q3_k_scales(packed: &[u8]) -> [i32; 16] {
    let mut s = [0i32; 16];
    for (j, v) in s.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0x0f
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *v = (low | (high << 4)) as i32 - 32;
    }
    s
}

/// Q3_K → f32 (`x = d·sc·(q − 4·!hbit)`).
pub(crate) fn dequantize_q3_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(110).zip(out.chunks_exact_mut(QK_K)) {
        let hm = &b[..32];
        let qs = &b[32..96];
        let scales = q3_k_scales(&b[96..108]);
        let d_all = read_f16(&b[108..]);
        let mut m = 1u8;
        let mut is = 0;
        let mut o = 0;
        for h in 0..2 {
            let q = &qs[32 * h..32 * h + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let dl = d_all * scales[is] as f32;
                    is += 1;
                    for l in 0..16 {
                        let k = 16 * half + l;
                        let low = ((q[k] >> shift) & 3) as i32;
                        let sub = if hm[k] & m != 0 { 0 } else { 4 };
                        y[o] = dl * (low - sub) as f32;
                        o += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

/// Q8_K → f32 (`x = d·q`, the f32 scale first).
pub(crate) fn dequantize_q8_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(292).zip(out.chunks_exact_mut(QK_K)) {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (o, &q) in y.iter_mut().zip(&b[4..260]) {
            *o = d * (q as i8) as f32;
        }
    }
}
