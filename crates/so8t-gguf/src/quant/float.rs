//! Float storage types: F32, F16 and BF16, with ggml's exact rounding.
//!
//! The conversions follow ggml's scalar reference paths (`ggml_compute_fp32_to_fp16` and
//! `ggml_compute_fp32_to_bf16` in llama.cpp's `ggml/src/ggml-impl.h`): round to nearest even,
//! F16 NaN becomes the quiet NaN `0x7e00` with the input's sign, BF16 NaN keeps its top bits and
//! is forced quiet (`| 0x40`).

/// ggml's fp32 → fp16 conversion: round to nearest even, overflow to infinity, NaN → `0x7e00`.
#[inline]
pub fn f32_to_f16_bits(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xff00_0000).max(0x7100_0000);

    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7c00;
    let mantissa_bits = bits & 0x0000_0fff;
    let nonsign = exp_bits + mantissa_bits;
    let out = if shl1_w > 0xff00_0000 {
        0x7e00
    } else {
        nonsign
    };
    ((sign >> 16) | out) as u16
}

/// fp16 bits → fp32 (exact).
#[inline]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// ggml's fp32 → bf16 conversion: round to nearest even; NaN keeps its top bits, forced quiet.
#[inline]
pub fn f32_to_bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → fp32 (exact).
#[inline]
pub fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Reads the little-endian fp16 at `b[0..2]` as f32.
#[inline]
pub(crate) fn read_f16(b: &[u8]) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// Writes `v` as little-endian fp16 into `b[0..2]`.
#[inline]
pub(crate) fn write_f16(b: &mut [u8], v: f32) {
    b[..2].copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
}

/// Rounds `v` through fp16 and back, as ggml does when it stores a block scale and reads it again.
#[inline]
pub(crate) fn round_f16(v: f32) -> f32 {
    f16_bits_to_f32(f32_to_f16_bits(v))
}

pub(crate) fn quantize_f32(src: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(src) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn dequantize_f32(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub(crate) fn quantize_f16(src: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(2).zip(src) {
        o.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
    }
}

pub(crate) fn dequantize_f16(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = read_f16(b);
    }
}

pub(crate) fn quantize_bf16(src: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(2).zip(src) {
        o.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
    }
}

pub(crate) fn dequantize_bf16(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_matches_half_on_finite_values() {
        // half's conversion is IEEE round-to-nearest-even too; they must agree off NaN.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let f = f32::from_bits(x);
            if f.is_nan() {
                assert_eq!(f32_to_f16_bits(f) & 0x7fff, 0x7e00);
                continue;
            }
            assert_eq!(
                f32_to_f16_bits(f),
                half::f16::from_f32(f).to_bits(),
                "{f:e}"
            );
        }
    }

    #[test]
    fn bf16_rounds_to_even_and_quiets_nan() {
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80); // tie → even
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82); // tie → even
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16_bits(f32::INFINITY), 0x7f80);
    }
}
