//! One AdamW step of one parameter as one CUDA kernel (`adamw` in `cuda/train_kernels.cu`):
//! the composed update runs about fifteen element-wise ops per parameter tensor, and a LoRA run
//! has hundreds of small tensors, so the optimizer step was bound by kernel launches.

/// The scalars of one AdamW step (PyTorch semantics: `p ← p·(1 − lr·decay)`, then
/// `p ← p − lr·(m/bc1)/(√(v/bc2) + eps)` with `m`, `v` the updated moments).
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay of this parameter.
    pub decay: f64,
    /// Bias corrections `1 − β1ᵗ` and `1 − β2ᵗ`.
    pub bias_correction: (f64, f64),
    /// Factor on the gradient (gradient clipping).
    pub grad_scale: f64,
}

#[cfg(not(feature = "cuda"))]
pub(super) fn adamw(
    _: &candle_core::Tensor,
    _: &candle_core::Tensor,
    _: Option<(&candle_core::Tensor, &candle_core::Tensor)>,
    _: &AdamStep,
) -> crate::error::Result<candle_core::Tensor> {
    Err(crate::error::Error::Device(
        "fused CUDA ops in a build without CUDA".into(),
    ))
}

#[cfg(feature = "cuda")]
pub(super) use imp::adamw;

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{DType, Tensor, WithDType};
    use half::bf16;

    use super::super::imp::{
        as_cuda, cuda_storage, dispatch, elems_cfg, kname, view, wrap_tensor, MODULE, PTX, R,
    };
    use super::AdamStep;
    use crate::error::Result;

    fn step<T: CudaDType + DeviceRepr + WithDType>(
        p: &Tensor,
        g: &Tensor,
        mv: Option<(&Tensor, &Tensor)>,
        h: &AdamStep,
    ) -> R<Tensor> {
        let n = p.elem_count();
        let (ps, pl) = cuda_storage(p, "adamw: the parameter")?;
        let (gs, gl) = cuda_storage(g, "adamw: the gradient")?;
        let pv = view::<f32>(as_cuda(&ps)?, pl, "adamw parameter")?;
        let gv = view::<T>(as_cuda(&gs)?, gl, "adamw gradient")?;
        let dev = as_cuda(&ps)?.device().clone();
        let out = dev.alloc_zeros::<f32>(3 * n)?;
        let f = dev.get_or_load_custom_func(&kname("adamw", T::DTYPE)?, MODULE, PTX)?;
        let moments = match mv {
            Some((m, v)) => Some((
                cuda_storage(m, "adamw: the first moment")?,
                cuda_storage(v, "adamw: the second moment")?,
            )),
            None => None,
        };
        let views: Option<(CudaView<'_, f32>, CudaView<'_, f32>)> = match &moments {
            Some(((ms, ml), (vs, vl))) => Some((
                view::<f32>(as_cuda(ms)?, ml, "adamw moment")?,
                view::<f32>(as_cuda(vs)?, vl, "adamw moment")?,
            )),
            None => None,
        };
        let mut b = f.builder();
        b.arg(&pv);
        b.arg(&gv);
        let null: u64 = 0;
        match &views {
            Some((mv, vv)) => {
                b.arg(mv);
                b.arg(vv);
            }
            None => {
                b.arg(&null);
                b.arg(&null);
            }
        }
        b.arg(&out);
        let (bc1, bc2) = h.bias_correction;
        let scalars = [
            h.lr,
            h.beta1,
            h.beta2,
            h.eps,
            h.decay,
            bc1,
            bc2,
            h.grad_scale,
        ]
        .map(|x| x as f32);
        b.arg(&n);
        for s in &scalars {
            b.arg(s);
        }
        unsafe { b.launch(elems_cfg(n)) }.w()?;
        drop(b);
        let mut dims = vec![3];
        dims.extend_from_slice(p.dims());
        Ok(wrap_tensor(out, &dev, dims))
    }

    pub fn adamw(
        p: &Tensor,
        g: &Tensor,
        mv: Option<(&Tensor, &Tensor)>,
        h: &AdamStep,
    ) -> Result<Tensor> {
        let shapes_ok = g.dims() == p.dims()
            && mv.is_none_or(|(m, v)| m.dims() == p.dims() && v.dims() == p.dims());
        let f32s = p.dtype() == DType::F32
            && mv.is_none_or(|(m, v)| m.dtype() == DType::F32 && v.dtype() == DType::F32);
        if !shapes_ok || !f32s {
            return Err(candle_core::Error::Msg(format!(
                "adamw: parameter {:?} {:?}, gradient {:?} {:?}: expected one shape, f32 parameter and moments",
                p.dims(),
                p.dtype(),
                g.dims(),
                g.dtype()
            ))
            .into());
        }
        let (p, g) = (p.contiguous()?, g.contiguous()?);
        let mv = match mv {
            Some((m, v)) => Some((m.contiguous()?, v.contiguous()?)),
            None => None,
        };
        let mvr = mv.as_ref().map(|(m, v)| (m, v));
        Ok(step_any(&p, &g, mvr, h)?)
    }

    fn step_any(p: &Tensor, g: &Tensor, mv: Option<(&Tensor, &Tensor)>, h: &AdamStep) -> R<Tensor> {
        dispatch!(g.dtype(), step(p, g, mv, h))
    }
}
