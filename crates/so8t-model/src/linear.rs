//! A linear layer `y = x Wᵀ + b` with an optional LoRA adapter `+ s · (dropout(x) Aᵀ) Bᵀ`.
//!
//! The base weight W is either dense or held as llama.cpp Q8_0 blocks (see [`crate::quant`]):
//! a quantized W is dequantized on the fly in each forward (and again in the backward pass),
//! so only the 8-bit copy stays in memory. W is frozen either way: gradients flow to `x` and
//! to the LoRA matrices, never to W.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

use crate::error::Result;

/// A LoRA adapter on one linear layer (PEFT convention: A [r, in], B [out, r]).
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// Down projection [r, in] (a `Var` while training).
    pub a: Tensor,
    /// Up projection [out, r] (a `Var` while training; zeros at init).
    pub b: Tensor,
    /// `lora_alpha / r` (or `/ sqrt(r)` with rsLoRA).
    pub scale: f64,
    /// Dropout probability on the adapter's input while training.
    pub dropout: f32,
}

/// The frozen base weight [out, in] of a [`Linear`].
#[derive(Clone)]
pub enum LinearWeight {
    /// A plain tensor in the model's dtype.
    Dense(Tensor),
    /// Q8_0 blocks (32 weights per block: an f16 scale and 32 i8), dequantized on use.
    Q8_0 {
        /// The quantized weight [out, in].
        q: Arc<QTensor>,
        /// The dtype the weight had before quantization (that of [`LinearWeight::to_dense`]).
        dtype: DType,
    },
}

impl std::fmt::Debug for LinearWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dense(t) => f.debug_tuple("Dense").field(t).finish(),
            Self::Q8_0 { q, dtype } => f
                .debug_struct("Q8_0")
                .field("shape", q.shape())
                .field("dtype", dtype)
                .finish(),
        }
    }
}

impl From<Tensor> for LinearWeight {
    fn from(t: Tensor) -> Self {
        Self::Dense(t)
    }
}

impl LinearWeight {
    /// `[out, in]`.
    pub fn dims(&self) -> &[usize] {
        match self {
            Self::Dense(t) => t.dims(),
            Self::Q8_0 { q, .. } => q.shape().dims(),
        }
    }

    /// The dtype of the dense weight (for Q8_0: the dtype before quantization).
    pub fn dtype(&self) -> DType {
        match self {
            Self::Dense(t) => t.dtype(),
            Self::Q8_0 { dtype, .. } => *dtype,
        }
    }

    /// True for a Q8_0 weight.
    pub fn is_quantized(&self) -> bool {
        matches!(self, Self::Q8_0 { .. })
    }

    /// The dense tensor, if the weight is not quantized.
    pub fn as_dense(&self) -> Option<&Tensor> {
        match self {
            Self::Dense(t) => Some(t),
            Self::Q8_0 { .. } => None,
        }
    }

    /// The weight as a dense tensor: a clone (cheap) of a dense one, or a Q8_0 weight
    /// dequantized into its original dtype (a new allocation of `out · in` values).
    pub fn to_dense(&self) -> Result<Tensor> {
        match self {
            Self::Dense(t) => Ok(t.clone()),
            Self::Q8_0 { q, dtype } => Ok(q.dequantize(&q.device())?.to_dtype(*dtype)?),
        }
    }

    /// Bytes the weight occupies (Q8_0: 34 bytes per 32 weights).
    pub fn storage_bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Self::Q8_0 { q, .. } => q.storage_size_in_bytes(),
        }
    }
}

/// A linear projection of the model, named by its HF path (e.g. `model.layers.0.self_attn.o_proj`).
#[derive(Debug, Clone)]
pub struct Linear {
    /// HF module path without `.weight`.
    pub name: String,
    /// Weight [out, in], dense or Q8_0.
    pub weight: LinearWeight,
    /// Optional bias [out].
    pub bias: Option<Tensor>,
    /// Optional LoRA adapter.
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Applies the layer to `x` [.., in]. `train` enables LoRA dropout (seeded inside
    /// [`crate::dropout::with_seed`]).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inp = *dims.last().unwrap_or(&0);
        let n = x.elem_count() / inp.max(1);
        let x2 = x.reshape((n, inp))?;
        if let Some(y) = self.train_lora(&x2, train)? {
            return Ok(y.reshape(self.output_dims(dims))?);
        }
        let mut y = match &self.weight {
            // On a graph that needs gradients, a custom op computes only the gradient w.r.t. x in
            // the backward pass (a plain matmul also computes and keeps a weight-sized one for W).
            LinearWeight::Dense(w) if train && is_frozen_on_tracked(&x2, w) => {
                frozen_matmul(&x2, w)?
            }
            LinearWeight::Dense(w) => dense_matmul(&x2, w)?,
            // On a graph that needs gradients, a custom op keeps only the 8-bit weight alive
            // until the backward pass (a plain matmul would keep the dequantized copy).
            LinearWeight::Q8_0 { q, .. } if x2.track_op() && x2.device().is_cpu() => {
                x2.contiguous()?.apply_op1(Q8MatMul(q.clone()))?
            }
            LinearWeight::Q8_0 { q, .. } => {
                let w = q.dequantize(x2.device())?.to_dtype(x2.dtype())?;
                dense_matmul(&x2, &w)?
            }
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let xin = if train && l.dropout > 0.0 {
                crate::dropout::dropout(&x2, l.dropout, crate::dropout::key(&self.name))?
            } else {
                x2.clone()
            };
            // On a GPU in half precision the adapters run in that precision too (their f32
            // masters get the gradients through the cast); elsewhere in the adapters' f32.
            let half = matches!(x2.dtype(), DType::BF16 | DType::F16);
            let dt = if half && !x2.device().is_cpu() {
                x2.dtype()
            } else {
                l.a.dtype()
            };
            // The scale goes on the narrow [n, r] intermediate, not on the [n, out] result.
            let (a, b) = (l.a.to_dtype(dt)?, l.b.to_dtype(dt)?);
            let h = (xin.to_dtype(dt)?.matmul(&a.t()?)? * l.scale)?.matmul(&b.t()?)?;
            let dt_y = y.dtype();
            y = (y + h.to_dtype(dt_y)?)?;
        }
        Ok(y.reshape(self.output_dims(dims))?)
    }

    /// The input's dims with the last one replaced by the output width.
    fn output_dims(&self, mut dims: Vec<usize>) -> Vec<usize> {
        if let Some(last) = dims.last_mut() {
            *last = self.out_features();
        }
        dims
    }

    /// Training with a dense frozen W and a LoRA adapter without dropout: the whole layer as one
    /// autograd node, bias added after. On the CPU in f32 that is `train_ops::lora_linear`, where
    /// [`crate::composite::applies`] (on CUDA) the composite op in the input's dtype (the
    /// adapters cast to it, as in the composed graph on a GPU). `None` elsewhere.
    fn train_lora(&self, x2: &Tensor, train: bool) -> Result<Option<Tensor>> {
        let (LinearWeight::Dense(w), Some(l)) = (&self.weight, &self.lora) else {
            return Ok(None);
        };
        let tracked = x2.track_op() || l.a.track_op() || l.b.track_op();
        if !train || !tracked || w.track_op() || l.dropout > 0.0 {
            return Ok(None);
        }
        let cpu_f32 = [x2, w, &l.a, &l.b]
            .iter()
            .all(|t| crate::train_ops::is_cpu_f32(t));
        let mut y = if cpu_f32 {
            crate::train_ops::lora_linear(x2, w, &l.a, &l.b, l.scale)?
        } else if crate::composite::applies(x2) && w.dtype() == x2.dtype() {
            let dt = x2.dtype();
            let (a, b) = (l.a.to_dtype(dt)?, l.b.to_dtype(dt)?);
            crate::composite::lora_linear(x2, w, &a, &b, l.scale)?
        } else {
            return Ok(None);
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        Ok(Some(y))
    }

    /// W + s·B·A computed in f32, cast back to the weight's dtype. A Q8_0 weight is
    /// dequantized first, so the result is always dense (in the dtype W had before quantization).
    pub fn merged_weight(&self) -> Result<Tensor> {
        let Some(l) = &self.lora else {
            return self.weight.to_dense();
        };
        let w = self.weight.to_dense()?.to_dtype(DType::F32)?;
        let delta =
            (l.b.to_dtype(DType::F32)?
                .matmul(&l.a.to_dtype(DType::F32)?)?
                * l.scale)?;
        Ok((w + delta)?.to_dtype(self.weight.dtype())?)
    }
}

/// `x2 Wᵀ` for `x2` [n, in] and a dense W [out, in].
fn dense_matmul(x2: &Tensor, w: &Tensor) -> Result<Tensor> {
    // The decode kernel declines inputs that take part in autograd.
    Ok(match crate::matvec::matvec(x2, w)? {
        Some(y) => y,
        None => x2.matmul(&w.t()?)?,
    })
}

/// True when `x` takes part in autograd, `w` does not (a frozen weight), and both are on the CPU
/// (or both on CUDA in a CUDA build): the case of [`frozen_matmul`].
pub(crate) fn is_frozen_on_tracked(x: &Tensor, w: &Tensor) -> bool {
    let device_ok = (x.device().is_cpu() && w.device().is_cpu())
        || (cfg!(feature = "cuda") && x.device().is_cuda() && x.device().same_device(w.device()));
    x.track_op() && !w.track_op() && device_ok
}

/// `x2 Wᵀ` for `x2` [n, in] and a frozen W [out, in], as a custom op whose backward pass returns
/// only `grad · W` for `x2`: no gradient (and no weight-sized tensor) for W. candle's own matmul
/// computes and keeps both. Same values as `x2.matmul(&w.t())`.
pub(crate) fn frozen_matmul(x2: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x2.apply_op2(w, FrozenMatMul)?)
}

/// `x Wᵀ` on storages of one backend (x [n, in], W [out, in]): the forward pass of both custom
/// ops, on the CPU and on CUDA.
fn matmul_wt<S: BackendStorage>(
    op: &str,
    xs: &S,
    xl: &Layout,
    ws: &S,
    wl: &Layout,
) -> candle_core::Result<(S, Shape)> {
    let (n, k) = xl.shape().dims2()?;
    let (m, kw) = wl.shape().dims2()?;
    if k != kw {
        candle_core::bail!("{op}: x is [{n}, {k}] but W is [{m}, {kw}]")
    }
    let out = xs.matmul(ws, (1, n, m, k), xl, &wl.transpose(0, 1)?)?;
    Ok((out, Shape::from((n, m))))
}

/// The custom op of [`frozen_matmul`]: `x Wᵀ` with a gradient for x alone.
struct FrozenMatMul;

impl CustomOp2 for FrozenMatMul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        matmul_wt(self.name(), xs, xl, ws, wl)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        matmul_wt(self.name(), xs, xl, ws, wl)
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // d(x Wᵀ)/dx: grad_y [n, out] · W [out, in]; W is frozen.
        Ok((Some(grad_y.matmul(w)?), None))
    }
}

/// `x Wᵀ` for `x` [n, in] on the CPU with a Q8_0 W [out, in] that is dequantized in the forward
/// and again in the backward pass, so the autograd graph holds only the quantized weight.
/// The gradient goes to `x` alone (W is a constant).
struct Q8MatMul(Arc<QTensor>);

impl Q8MatMul {
    /// W dequantized into `dtype` on the CPU.
    fn weight(&self, dtype: DType) -> candle_core::Result<Tensor> {
        self.0
            .dequantize(&candle_core::Device::Cpu)?
            .to_dtype(dtype)
    }
}

impl CustomOp1 for Q8MatMul {
    fn name(&self) -> &'static str {
        "q8_0-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = self.weight(s.dtype())?;
        let (ws, wl) = w.storage_and_layout();
        let candle_core::Storage::Cpu(ws) = &*ws else {
            candle_core::bail!("q8_0-matmul: the weight is not on the CPU")
        };
        matmul_wt(self.name(), s, l, ws, wl)
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // d(x Wᵀ)/dx: grad_y [n, out] · W [out, in].
        let w = self.weight(grad_y.dtype())?;
        Ok(Some(grad_y.contiguous()?.matmul(&w)?.to_dtype(x.dtype())?))
    }
}
