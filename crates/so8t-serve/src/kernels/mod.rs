//! CPU compute kernels: dot products of GGUF-quantized weight rows with activation rows.
//!
//! The approach is llama.cpp's (`ggml-cpu`): an activation row is first converted to a format
//! that suits the weight type ([`act_type`]: Q8_0 blocks for Q4_0/Q5_0/Q8_0 weights, Q8_1 for
//! Q4_1/Q5_1, Q8_K super-blocks for the K-quants, F16/BF16/F32 for float weights), then each
//! weight row meets it in integer arithmetic block by block, with one float multiply-add per
//! block. An AVX2+FMA+F16C implementation is picked at run time when the CPU has it; the portable
//! scalar one runs elsewhere and is the reference the tests hold the fast one to.
//!
//! Which call to use:
//! - matrix × one vector (token generation): [`vec_dot_rows`] over a run of weight rows (a
//!   thread's share of the matrix). For the 32-weight types it takes eight rows at a time and is
//!   about twice as fast per row as [`vec_dot`]; for the others it loops over [`vec_dot`].
//! - matrix × several activation rows (prompt processing): [`mat_mul`] (tiles of four weight
//!   rows × four activation rows for the 32-weight types), or per weight row
//!   [`vec_dot_multi`], which unpacks each weight block once for up to four activation rows.
//! - [`quantize_act_row`] once per activation row and weight type ([`act_type`]), then any of
//!   the above; [`dequantize_row`] for embeddings; [`dot_f32`] for norms; [`attn`] for attention.

// Kernels index several arrays (lanes, rows, blocks) with one counter.
#![allow(clippy::needless_range_loop)]

mod act;
pub mod attn;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_float;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx2_k23;
#[cfg(target_arch = "x86_64")]
mod avx2_rows;
#[cfg(target_arch = "x86_64")]
mod avx2_tile;
mod scalar;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU8, Ordering};

pub use so8t_gguf::GgmlType;

/// Format an activation row is converted to before it meets a weight row of a given type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ActType {
    /// Little-endian f32 values.
    F32,
    /// IEEE half values (ggml's rounding).
    F16,
    /// bfloat16 values (round to nearest even).
    BF16,
    /// 32-value blocks: f16 scale, 32 × i8 (34 bytes).
    Q8_0,
    /// 32-value blocks: f16 scale, f16 `d·Σq`, 32 × i8 (36 bytes).
    Q8_1,
    /// 256-value blocks: f32 scale, 256 × i8, 16 × i16 sums of 16 (292 bytes).
    Q8_K,
}

impl ActType {
    /// Values per block.
    pub const fn block_size(self) -> usize {
        match self {
            ActType::F32 | ActType::F16 | ActType::BF16 => 1,
            ActType::Q8_0 | ActType::Q8_1 => 32,
            ActType::Q8_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            ActType::F32 => 4,
            ActType::F16 | ActType::BF16 => 2,
            ActType::Q8_0 => 34,
            ActType::Q8_1 => 36,
            ActType::Q8_K => 292,
        }
    }
}

/// Weight types these kernels multiply.
pub const SUPPORTED: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// The activation format for weights of type `w`; None if `w` is not supported by these kernels.
pub fn act_type(w: GgmlType) -> Option<ActType> {
    Some(match w {
        GgmlType::F32 => ActType::F32,
        GgmlType::F16 => ActType::F16,
        GgmlType::BF16 => ActType::BF16,
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => ActType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => ActType::Q8_1,
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            ActType::Q8_K
        }
        _ => return None,
    })
}

/// (log2 of weights per block, bytes per block, activation format) of a supported weight type.
#[inline]
fn layout(w: GgmlType) -> (u32, usize, ActType) {
    match w {
        GgmlType::F32 => (0, 4, ActType::F32),
        GgmlType::F16 => (0, 2, ActType::F16),
        GgmlType::BF16 => (0, 2, ActType::BF16),
        GgmlType::Q4_0 => (5, 18, ActType::Q8_0),
        GgmlType::Q4_1 => (5, 20, ActType::Q8_1),
        GgmlType::Q5_0 => (5, 22, ActType::Q8_0),
        GgmlType::Q5_1 => (5, 24, ActType::Q8_1),
        GgmlType::Q8_0 => (5, 34, ActType::Q8_0),
        GgmlType::Q2_K => (8, 84, ActType::Q8_K),
        GgmlType::Q3_K => (8, 110, ActType::Q8_K),
        GgmlType::Q4_K => (8, 144, ActType::Q8_K),
        GgmlType::Q5_K => (8, 176, ActType::Q8_K),
        GgmlType::Q6_K => (8, 210, ActType::Q8_K),
        other => panic!("kernels: weight type {other} is not supported"),
    }
}

/// (weights per block, bytes per block) of a supported weight type.
#[cfg(test)]
pub(crate) fn wblock(w: GgmlType) -> (usize, usize) {
    let (sh, ts, _) = layout(w);
    (1 << sh, ts)
}

/// Bytes of one row of `cols` weights of type `w` (a supported type).
pub fn weight_row_bytes(w: GgmlType, cols: usize) -> usize {
    let (sh, ts, _) = layout(w);
    assert!(
        (cols >> sh) << sh == cols,
        "kernels: {cols} columns are not a multiple of the {w} block size {}",
        1usize << sh
    );
    (cols >> sh) * ts
}

/// Bytes of one quantized activation row of `cols` elements.
pub fn act_row_bytes(a: ActType, cols: usize) -> usize {
    let bs = a.block_size();
    assert!(
        cols.is_multiple_of(bs),
        "kernels: {cols} columns are not a multiple of the {a:?} block size {bs}"
    );
    cols / bs * a.block_bytes()
}

/// Converts one f32 activation row into format `a` (out.len() == act_row_bytes(a, x.len())).
pub fn quantize_act_row(a: ActType, x: &[f32], out: &mut [u8]) {
    assert_eq!(
        out.len(),
        act_row_bytes(a, x.len()),
        "kernels: output of {} bytes for {} values of {a:?}",
        out.len(),
        x.len()
    );
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked by use_avx2); lengths checked above.
        match a {
            ActType::F16 => return unsafe { avx2_float::f32_to_f16_row(x, out) },
            ActType::Q8_0 => return unsafe { avx2::quantize_q8_0(x, out) },
            ActType::Q8_K => return unsafe { avx2::quantize_q8_k(x, out) },
            _ => {}
        }
    }
    act::quantize(a, x, out);
}

/// (weight row bytes, activation row bytes) of `cols` columns of `w`, without divisions (this
/// runs once per weight row); panics when `cols` is not a whole number of blocks.
#[inline]
fn row_sizes(w: GgmlType, cols: usize) -> (usize, usize) {
    let (sh, ts, a) = layout(w);
    let nb = cols >> sh;
    if nb << sh != cols {
        bad_row(w, cols, 0);
    }
    (nb * ts, nb * a.block_bytes())
}

/// Checks one weight row's length; returns the activation row's bytes.
#[inline]
fn check_dot(w: GgmlType, cols: usize, w_row: &[u8]) -> usize {
    let (wb, ab) = row_sizes(w, cols);
    if w_row.len() != wb {
        bad_row(w, cols, w_row.len());
    }
    ab
}

#[cold]
#[inline(never)]
fn bad_row(w: GgmlType, cols: usize, len: usize) -> ! {
    panic!("kernels: a weight row of {len} bytes is not {cols} columns of {w} (whole blocks)")
}

#[cold]
#[inline(never)]
fn bad_act(w: GgmlType, cols: usize, len: usize) -> ! {
    panic!("kernels: activation bytes {len} do not fit {cols} columns for {w} weights")
}

/// dot(weight row, activation row): `w_row` is one row of `cols` elements of type `w`,
/// `act_row` the row quantized with act_type(w).
pub fn vec_dot(w: GgmlType, cols: usize, w_row: &[u8], act_row: &[u8]) -> f32 {
    if act_row.len() != check_dot(w, cols, w_row) {
        bad_act(w, cols, act_row.len());
    }
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        let mut out = [0f32];
        // SAFETY: the CPU has AVX2, FMA and F16C; row lengths checked above.
        unsafe { avx2::dot_multi(w, cols, w_row, act_row, act_row.len(), 1, &mut out) };
        return out[0];
    }
    scalar::vec_dot(w, cols, w_row, act_row)
}

/// [`vec_dot`] on the portable scalar code whatever the CPU (the reference; for tests and
/// benchmarks).
pub fn vec_dot_scalar(w: GgmlType, cols: usize, w_row: &[u8], act_row: &[u8]) -> f32 {
    if act_row.len() != check_dot(w, cols, w_row) {
        bad_act(w, cols, act_row.len());
    }
    scalar::vec_dot(w, cols, w_row, act_row)
}

/// One weight row against `n` activation rows laid out back to back (stride act_row_bytes),
/// results into out[0..n]. The weight row is read once per group of up to four activations.
pub fn vec_dot_multi(
    w: GgmlType,
    cols: usize,
    w_row: &[u8],
    acts: &[u8],
    n: usize,
    out: &mut [f32],
) {
    let stride = check_dot(w, cols, w_row);
    if acts.len() < n * stride {
        bad_act(w, cols, acts.len());
    }
    assert!(
        out.len() >= n,
        "kernels: {n} outputs wanted, got {}",
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU has AVX2, FMA and F16C; lengths checked above.
        unsafe { avx2::dot_multi(w, cols, w_row, acts, stride, n, out) };
        return;
    }
    for (o, act) in out[..n].iter_mut().zip(acts.chunks_exact(stride)) {
        *o = scalar::vec_dot(w, cols, w_row, act);
    }
}

/// Matrix × vector: `n` weight rows stored back to back (each `weight_row_bytes(w, cols)`)
/// against one activation row, `out[r] = dot(row r, act_row)` for r < n. With AVX2, four rows
/// share each activation block (32-weight and float types), which is faster per row than
/// [`vec_dot`]; results may differ from it in the last bits (summation order).
pub fn vec_dot_rows(
    w: GgmlType,
    cols: usize,
    w_rows: &[u8],
    n: usize,
    act_row: &[u8],
    out: &mut [f32],
) {
    let (rb, ab) = row_sizes(w, cols);
    if act_row.len() != ab {
        bad_act(w, cols, act_row.len());
    }
    assert!(
        w_rows.len() >= n * rb && out.len() >= n,
        "kernels: {n} weight rows need {} bytes (got {}) and {n} outputs (got {})",
        n * rb,
        w_rows.len(),
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU has AVX2, FMA and F16C; lengths checked above.
        unsafe { avx2_rows::dot_rows(w, cols, w_rows, rb, n, act_row, out) };
        return;
    }
    for (o, row) in out[..n].iter_mut().zip(w_rows.chunks_exact(rb)) {
        *o = scalar::vec_dot(w, cols, row, act_row);
    }
}

/// Matrix × several vectors (prompt processing): `nrows` weight rows stored back to back
/// against `nacts` activation rows stored back to back, `out[k·out_stride + r] = dot(row r,
/// act k)`. With AVX2 the 32-weight types run in tiles of four weight rows × up to four
/// activation rows (each weight block unpacked once for all of them); other types go row by
/// row through [`vec_dot_multi`]. Results may differ from [`vec_dot`] in the last bits.
#[allow(clippy::too_many_arguments)]
pub fn mat_mul(
    w: GgmlType,
    cols: usize,
    w_rows: &[u8],
    nrows: usize,
    acts: &[u8],
    nacts: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let (rb, ab) = row_sizes(w, cols);
    if acts.len() < nacts * ab {
        bad_act(w, cols, acts.len());
    }
    assert!(
        w_rows.len() >= nrows * rb,
        "kernels: {nrows} weight rows need {} bytes, got {}",
        nrows * rb,
        w_rows.len()
    );
    if nrows == 0 || nacts == 0 {
        return;
    }
    assert!(
        (nacts == 1 || out_stride >= nrows) && out.len() >= (nacts - 1) * out_stride + nrows,
        "kernels: output of {} values with stride {out_stride} cannot hold {nacts} × {nrows}",
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        let os = out_stride.max(nrows);
        // SAFETY: the CPU has AVX2, FMA and F16C; lengths checked above.
        unsafe { avx2_tile::mat_mul(w, cols, w_rows, rb, nrows, acts, ab, nacts, out, os) };
        return;
    }
    for (r, row) in w_rows.chunks_exact(rb).take(nrows).enumerate() {
        for (k, act) in acts.chunks_exact(ab).take(nacts).enumerate() {
            out[k * out_stride + r] = scalar::vec_dot(w, cols, row, act);
        }
    }
}

/// Dequantizes one row (used for embedding lookups); `out.len()` is the row's element count.
pub fn dequantize_row(w: GgmlType, row: &[u8], out: &mut [f32]) {
    assert_eq!(
        row.len(),
        weight_row_bytes(w, out.len()),
        "kernels: row of {} bytes for {} values of {w}",
        row.len(),
        out.len()
    );
    match w {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            #[cfg(target_arch = "x86_64")]
            if use_avx2() {
                // SAFETY: the CPU has AVX2, FMA and F16C; lengths checked above.
                return unsafe { avx2_float::f16_to_f32_row(row, out) };
            }
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = act::f16(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        _ => {
            let v = so8t_gguf::quant::dequantize(w, row, out.len())
                .unwrap_or_else(|e| panic!("kernels: dequantizing {w}: {e}"));
            out.copy_from_slice(&v);
        }
    }
}

/// f32 dot product (AVX2+FMA when available).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "kernels: dot_f32 of different lengths");
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU has AVX2 and FMA; lengths equal.
        return unsafe { avx2_float::dot_f32(a, b) };
    }
    scalar::dot_f32(a, b)
}

/// Which implementation runs ("avx2" or "scalar"), for logs. Setting the environment variable
/// `SO8T_KERNELS=scalar` before the first kernel call forces the scalar code (for comparisons).
pub fn backend() -> &'static str {
    if use_avx2() {
        "avx2"
    } else {
        "scalar"
    }
}

/// 0 = not yet checked, 1 = scalar, 2 = AVX2+FMA+F16C.
static BACKEND: AtomicU8 = AtomicU8::new(0);

/// Whether the AVX2 kernels run (the CPU has AVX2, FMA and F16C), checked once.
#[inline]
pub(crate) fn use_avx2() -> bool {
    match BACKEND.load(Ordering::Relaxed) {
        0 => {
            let ok = detect_avx2();
            BACKEND.store(if ok { 2 } else { 1 }, Ordering::Relaxed);
            ok
        }
        v => v == 2,
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_avx2() -> bool {
    if std::env::var_os("SO8T_KERNELS").is_some_and(|v| v == "scalar") {
        return false;
    }
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_avx2() -> bool {
    false
}
