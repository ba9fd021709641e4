//! The engine's weights copied onto a candle device: quantized GGUF matrices stay in their block
//! types (candle's quantized matmuls compute on the blocks), dense ones (F32/F16/BF16) become
//! tensors of the activation dtype, norms and the token embedding become dense tensors.

use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Result, Tensor};
use so8t_gguf::GgmlType;

use crate::engine::weights::{ModelWeights, QTensor, QkvWeights, UpWeights};

/// candle's block type for a GGUF type; `None` for dense and unsupported types.
fn quant_dtype(ty: GgmlType) -> Option<GgmlDType> {
    Some(match ty {
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        GgmlType::Q8_K => GgmlDType::Q8K,
        _ => return None,
    })
}

/// The dense candle dtype of a GGUF type, if it is one.
fn dense_dtype(ty: GgmlType) -> Option<DType> {
    match ty {
        GgmlType::F32 => Some(DType::F32),
        GgmlType::F16 => Some(DType::F16),
        GgmlType::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// Bytes that candle may read as blocks in place (blocks hold f16/f32 fields, so they must be
/// aligned): the original ones when 8-byte aligned (a memory map's are), else a copy in u64s.
enum Aligned<'a> {
    Borrowed(&'a [u8]),
    Copied(Vec<u64>, usize),
}

impl<'a> Aligned<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        if (bytes.as_ptr() as usize).is_multiple_of(8) {
            return Self::Borrowed(bytes);
        }
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (w, c) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            *w = u64::from_ne_bytes(b);
        }
        Self::Copied(words, bytes.len())
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Borrowed(b) => b,
            // SAFETY: the u64 buffer holds at least `len` initialized bytes.
            Self::Copied(w, len) => unsafe { std::slice::from_raw_parts(w.as_ptr().cast(), *len) },
        }
    }
}

/// A dense tensor of `t`'s values (any type), `[rows, cols]`, in `dtype` on `dev`.
pub(super) fn dense(t: &QTensor, dtype: DType, dev: &Device) -> Result<Tensor> {
    let host = match dense_dtype(t.ty) {
        Some(src) => Tensor::from_raw_buffer(t.bytes(), src, &[t.rows, t.cols], &Device::Cpu)?,
        None => Tensor::from_vec(t.to_f32(), (t.rows, t.cols), &Device::Cpu)?,
    };
    // Convert on the device: the copy is in the source type (half of f32 for f16 files).
    host.to_device(dev)?.to_dtype(dtype)
}

/// A vector of f32 values as a 1-D tensor in `dtype` on `dev`.
fn vector(v: &[f32], dtype: DType, dev: &Device) -> Result<Tensor> {
    Tensor::from_slice(v, v.len(), &Device::Cpu)?
        .to_device(dev)?
        .to_dtype(dtype)
}

/// Above this many activation rows, a quantized product on a GPU dequantizes the weights and
/// multiplies densely (see [`DevMatrix::forward`]).
const DEQUANTIZE_ROWS: usize = 64;

/// How a matrix's product is computed.
enum Product {
    /// candle's quantized matmul on the blocks; `native` when its CUDA kernels take the
    /// activation dtype directly (otherwise activations go through f32).
    Quant { q: QMatMul, native: bool },
    /// A dense `[out, in]` tensor.
    Dense(Tensor),
}

/// One weight matrix on the device, with its runtime LoRA pairs.
pub(super) struct DevMatrix {
    product: Product,
    /// `(A [rank, in], B [out, rank], factor)` of each adapter.
    lora: Vec<(Tensor, Tensor, f64)>,
}

impl DevMatrix {
    /// Copies `t` onto `dev`; dense matrices become `dtype`.
    pub(super) fn upload(t: &QTensor, dtype: DType, dev: &Device) -> Result<Self> {
        let product = match quant_dtype(t.ty) {
            Some(q) => {
                let raw = Aligned::new(t.bytes());
                let qt = qtensor_from_ggml(q, raw.bytes(), vec![t.rows, t.cols], dev)
                    .map_err(|e| e.context(format!("tensor `{}`", t.name)))?;
                // candle's CUDA kernels for these types read bf16/f16/f32 activations; its CPU
                // kernels and the other types want f32.
                let native = dev.is_cuda() && q != GgmlDType::Q8K;
                Product::Quant {
                    q: QMatMul::from_arc(Arc::new(qt))?,
                    native,
                }
            }
            None if dense_dtype(t.ty).is_some() => Product::Dense(dense(t, dtype, dev)?),
            None => candle_core::bail!(
                "tensor `{}`: type {} is not supported on {:?}",
                t.name,
                t.ty.name(),
                dev.location()
            ),
        };
        let mut lora = Vec::new();
        for p in &t.lora {
            let a = Tensor::from_slice(&p.a, (p.rank, t.cols), &Device::Cpu)?;
            let b = Tensor::from_slice(&p.b, (t.rows, p.rank), &Device::Cpu)?;
            lora.push((
                a.to_device(dev)?.to_dtype(dtype)?,
                b.to_device(dev)?.to_dtype(dtype)?,
                p.scale as f64,
            ));
        }
        Ok(Self { product, lora })
    }

    /// `x Wᵀ (+ s·(x Aᵀ) Bᵀ per adapter)` for `x` `[n, in]`, in `x`'s dtype.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = match &self.product {
            Product::Dense(w) => x.matmul(&w.t()?)?,
            // Many rows (a prompt) on a GPU: the blocks dequantized to the activation dtype and
            // one cuBLAS product beat the quantized kernels, whose cost grows with the rows.
            Product::Quant { q, native: true } if x.dim(0)? > DEQUANTIZE_ROWS => {
                let w = q.dequantize_f16()?.to_dtype(x.dtype())?;
                x.matmul(&w.t()?)?
            }
            Product::Quant { q, native: true } => q.forward(x)?.to_dtype(x.dtype())?,
            Product::Quant { q, native: false } => {
                q.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?
            }
        };
        for (a, b, s) in &self.lora {
            y = (y + (x.matmul(&a.t()?)?.matmul(&b.t()?)? * *s)?)?;
        }
        Ok(y)
    }
}

/// The Q/K/V projections of one layer.
pub(super) enum DevQkv {
    /// `[q; k; v]` in one matrix.
    Fused(DevMatrix),
    /// Three matrices.
    Split(DevMatrix, DevMatrix, DevMatrix),
}

/// The gate and up projections of one layer.
pub(super) enum DevUp {
    /// `[gate; up]` in one matrix.
    Fused(DevMatrix),
    /// Two matrices.
    Split(DevMatrix, DevMatrix),
}

/// One decoder layer on the device.
pub(super) struct DevLayer {
    pub attn_norm: Tensor,
    pub qkv: DevQkv,
    pub wo: DevMatrix,
    pub ffn_norm: Tensor,
    pub up: DevUp,
    pub down: DevMatrix,
}

/// A whole model on the device.
pub(super) struct DevWeights {
    /// Token embedding `[vocab, n_embd]`, dense.
    pub tok_embd: Tensor,
    pub layers: Vec<DevLayer>,
    pub norm: Tensor,
    /// The LM head (the embedding's matrix when tied).
    pub output: DevMatrix,
}

impl DevWeights {
    /// Copies `w` onto `dev`, calling `progress(done, total)` after each layer.
    pub(super) fn upload(
        w: &ModelWeights,
        dtype: DType,
        dev: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let up = |t: &QTensor| DevMatrix::upload(t, dtype, dev);
        let mut layers = Vec::with_capacity(w.layers.len());
        for (i, l) in w.layers.iter().enumerate() {
            layers.push(DevLayer {
                attn_norm: vector(&l.attn_norm, dtype, dev)?,
                qkv: match &l.qkv {
                    QkvWeights::Fused(t) => DevQkv::Fused(up(t)?),
                    QkvWeights::Split(q, k, v) => DevQkv::Split(up(q)?, up(k)?, up(v)?),
                },
                wo: up(&l.wo)?,
                ffn_norm: vector(&l.ffn_norm, dtype, dev)?,
                up: match &l.up {
                    UpWeights::Fused(t) => DevUp::Fused(up(t)?),
                    UpWeights::Split(g, u) => DevUp::Split(up(g)?, up(u)?),
                },
                down: up(&l.down)?,
            });
            progress(i + 1, w.layers.len());
        }
        Ok(Self {
            tok_embd: dense(&w.tok_embd, dtype, dev)?,
            layers,
            norm: vector(&w.norm, dtype, dev)?,
            output: up(w.output())?,
        })
    }
}
