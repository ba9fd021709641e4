//! CPU training ops in f32, each one candle custom op with its own backward pass where the
//! composed graph records many: a LoRA linear layer over a frozen weight (`lora.rs`),
//! self-attention with its rotary embedding (`attention.rs`), SwiGLU (`swiglu.rs`) and the SO(8)
//! gate's per-block rotation (`gate.rs`). Every recorded op costs a
//! tensor allocation and, in the backward pass, a zero-filled gradient plus an addition; these
//! ops write their results and gradients once. Each is checked against the composed ops it
//! replaces (`tests/train_ops.rs`; attention also against an f64 reference and its finite
//! differences).
//!
//! The helpers here: f32 views of CPU tensors, a row-major `gemm` wrapper (the `gemm` crate that
//! candle's own CPU matmul calls, with accumulation into the destination), and a vectorizable
//! `exp`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Storage, StorageRef, Tensor};

mod attention;
mod gate;
mod lora;
mod swiglu;

pub(crate) use attention::{attention_cpu, AttentionShape};
pub(crate) use gate::apply_blocks_cpu;
pub(crate) use lora::lora_linear;
pub(crate) use swiglu::swiglu_cpu;

/// True for a contiguous-able f32 tensor on the CPU: where these ops apply.
pub(crate) fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The f32 values of a contiguous CPU tensor, borrowed (read-locked) as long as the view lives.
pub(crate) struct F32View<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> F32View<'a> {
    /// A view of `t`, which must be a contiguous f32 CPU tensor (call `contiguous()` first).
    pub(crate) fn of(t: &'a Tensor) -> candle_core::Result<Self> {
        let (storage, l) = t.storage_and_layout();
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("train op: tensor {:?} is not contiguous", t.dims())
        };
        if !matches!(&*storage, Storage::Cpu(CpuStorage::F32(_))) {
            candle_core::bail!("train op: expected an f32 CPU tensor, got {:?}", t.dtype())
        }
        Ok(Self {
            storage,
            start,
            end,
        })
    }
}

impl std::ops::Deref for F32View<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => &[], // `of` admits f32 CPU storage only
        }
    }
}

/// The f32 values of an op's contiguous CPU operand (`op` names the op in the error).
pub(crate) fn cpu_slice<'a>(
    op: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, e))) => Ok(&v[a..e]),
        _ => candle_core::bail!("{op}: needs contiguous f32 operands, got {:?}", s.dtype()),
    }
}

/// A matrix view for [`gemm`]: `data[r·rs + c·cs]` is element (r, c).
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

impl<'a> Mat<'a> {
    /// A row-major [rows, cols] matrix.
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data length");
        Self::strided(data, rows, cols, cols)
    }

    /// A [rows, cols] matrix whose rows start `row_stride` values apart in `data`.
    pub(crate) fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * row_stride + cols <= data.len(),
            "matrix view out of bounds"
        );
        Self {
            data,
            rows,
            cols,
            rs: row_stride as isize,
            cs: 1,
        }
    }

    /// The transpose (a view, no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `dst = (accumulate ? dst : 0) + alpha · a · b` for a row-major `dst` [a.rows, b.cols], on
/// candle's CPU threads when the product is large enough.
pub(crate) fn gemm(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, alpha: f32, accumulate: bool) {
    gemm_on(dst, a, b, alpha, accumulate, true)
}

/// [`gemm`] on the calling thread alone (for use inside parallel tasks).
pub(crate) fn gemm_serial(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, alpha: f32, accumulate: bool) {
    gemm_on(dst, a, b, alpha, accumulate, false)
}

fn gemm_on(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, alpha: f32, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions");
    assert_eq!(dst.len(), m * n, "gemm: destination length");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let threads = candle_core::utils::get_num_threads();
    let par = if parallel && threads > 1 && m * n * k > 32 * 1024 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `Mat::new`/`Mat::strided` and the asserts above bound every index the kernel
    // touches: a is m×k, b is k×n and dst is m×n within their slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs,
            a.rs,
            b.data.as_ptr(),
            b.cs,
            b.rs,
            1.0,
            alpha,
            false,
            false,
            false,
            par,
        )
    }
}

/// Defines `pub(crate) fn $name(args)` twice over one body: compiled for AVX2 + FMA (chosen at
/// run time when the CPU has them) and for the baseline, so plain loops over [`exp`] vectorize.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn simd($($arg: $ty),*) $body
                    // SAFETY: the CPU has the features `simd` was compiled for.
                    return unsafe { simd($($arg),*) };
                }
            }
            fn generic($($arg: $ty),*) $body
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `e^x` in f32 within ~2 ulp, written so that a loop over it vectorizes: `x = k·ln2 + r` with
/// `|r| ≤ ln2/2`, `e^r` by its Taylor polynomial to degree 7, `2^k` from the exponent bits.
/// Below −87.3 it returns 0 (as `f32::exp` underflows there); above 88.7 it saturates.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const SHIFT: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 88.7);
    let k = (x * LOG2E + SHIFT) - SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((k as i32 + 127) << 23) as u32);
    if underflow {
        0.0
    } else {
        p * scale
    }
}

/// The logistic function `1 / (1 + e^−x)` through [`exp`].
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_within_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn gemm_with_transposed_views_and_accumulation() {
        // a [2, 3], b [3, 2] given as the transpose of a [2, 3] matrix.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5];
        let mut dst = vec![1.0; 4];
        gemm(
            &mut dst,
            Mat::new(&a, 2, 3),
            Mat::new(&bt, 2, 3).t(),
            2.0,
            true,
        );
        // a·btᵀ = [[-2, 5.5], [-2, 16]]; dst = 1 + 2·that.
        assert_eq!(dst, vec![-3.0, 12.0, -3.0, 33.0]);
        gemm(
            &mut dst,
            Mat::new(&a, 2, 3),
            Mat::new(&bt, 2, 3).t(),
            1.0,
            false,
        );
        assert_eq!(dst, vec![-2.0, 5.5, -2.0, 16.0]);
    }
}
