//! The fused cross-entropy op of [`super::cross_entropy_rows`]: forward writes one f32 loss per
//! row, backward `g_r · w_r · (softmax(x_r) − onehot)` in the logits' dtype.

use candle_core::Tensor;

use crate::error::Result;

#[cfg(not(feature = "cuda"))]
pub fn cross_entropy_rows(_: &Tensor, _: &Tensor, _: &Tensor) -> Result<Tensor> {
    Err(crate::error::Error::Device(
        "fused CUDA ops in a build without CUDA".into(),
    ))
}

#[cfg(feature = "cuda")]
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    imp::cross_entropy_rows(logits, targets, weights)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage, Tensor,
        WithDType,
    };
    use half::bf16;

    use super::super::imp::{cpu_refused, kname, rows_cfg, view, MODULE, PTX, R};
    use crate::error::Result;

    /// The op: targets (u32 [N]) and weights (f32 [N]) ride along as device tensors.
    struct CeOp {
        targets: Tensor,
        weights: Tensor,
    }

    impl CeOp {
        /// Runs `f` with the targets and weights as kernel arguments.
        fn with_rows<O>(
            &self,
            f: impl FnOnce(&CudaView<'_, u32>, &CudaView<'_, f32>) -> R<O>,
        ) -> R<O> {
            let (ts, tl) = self.targets.storage_and_layout();
            let (ws, wl) = self.weights.storage_and_layout();
            let (Storage::Cuda(ts), Storage::Cuda(ws)) = (&*ts, &*ws) else {
                candle_core::bail!("cross-entropy: targets and weights must be on CUDA")
            };
            f(
                &view::<u32>(ts, tl, "cross-entropy targets")?,
                &view::<f32>(ws, wl, "cross-entropy weights")?,
            )
        }
    }

    fn fwd<T: CudaDType + DeviceRepr + WithDType>(
        op: &CeOp,
        x: &CudaStorage,
        xl: &Layout,
    ) -> R<(CudaStorage, Shape)> {
        let dev = x.device();
        let (rows, cols) = xl.shape().dims2()?;
        let xs = view::<T>(x, xl, "cross-entropy logits")?;
        let loss = unsafe { dev.alloc::<f32>(rows)? };
        let f = dev.get_or_load_custom_func(&kname("ce_fwd", T::DTYPE)?, MODULE, PTX)?;
        let c = cols as i32;
        op.with_rows(|tg, w| {
            let mut b = f.builder();
            b.arg(&xs);
            b.arg(tg);
            b.arg(w);
            b.arg(&loss);
            b.arg(&c);
            unsafe { b.launch(rows_cfg(rows, cols)) }.w()?;
            Ok(())
        })?;
        Ok((
            CudaStorage::wrap_cuda_slice(loss, dev.clone()),
            Shape::from(rows),
        ))
    }

    impl CustomOp1 for CeOp {
        fn name(&self) -> &'static str {
            "fused-cross-entropy"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> R<(CpuStorage, Shape)> {
            cpu_refused(self.name())
        }
        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> R<(CudaStorage, Shape)> {
            match x.dtype() {
                DType::F32 => fwd::<f32>(self, x, xl),
                DType::BF16 => fwd::<bf16>(self, x, xl),
                other => candle_core::bail!("cross-entropy: f32/bf16 logits only, got {other:?}"),
            }
        }
        fn bwd(&self, x: &Tensor, _loss: &Tensor, g: &Tensor) -> R<Option<Tensor>> {
            let g = g.to_dtype(DType::F32)?.contiguous()?;
            Ok(Some(x.apply_op2_no_bwd(&g, &CeBwd(self))?))
        }
    }

    /// The backward pass of a [`CeOp`]: (logits, per-row upstream gradient) → d logits.
    struct CeBwd<'a>(&'a CeOp);

    fn bwd<T: CudaDType + DeviceRepr + WithDType>(
        op: &CeOp,
        x: &CudaStorage,
        xl: &Layout,
        g: &CudaStorage,
        gl: &Layout,
    ) -> R<(CudaStorage, Shape)> {
        let dev = x.device();
        let (rows, cols) = xl.shape().dims2()?;
        let xs = view::<T>(x, xl, "cross-entropy logits")?;
        let gs = view::<f32>(g, gl, "cross-entropy gradient")?;
        let dx = unsafe { dev.alloc::<T>(rows * cols)? };
        let f = dev.get_or_load_custom_func(&kname("ce_bwd", T::DTYPE)?, MODULE, PTX)?;
        let c = cols as i32;
        op.with_rows(|tg, w| {
            let mut b = f.builder();
            b.arg(&xs);
            b.arg(tg);
            b.arg(w);
            b.arg(&gs);
            b.arg(&dx);
            b.arg(&c);
            unsafe { b.launch(rows_cfg(rows, cols)) }.w()?;
            Ok(())
        })?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, dev.clone()),
            xl.shape().clone(),
        ))
    }

    impl CustomOp2 for CeBwd<'_> {
        fn name(&self) -> &'static str {
            "fused-cross-entropy-bwd"
        }
        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> R<(CpuStorage, Shape)> {
            cpu_refused(self.name())
        }
        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            xl: &Layout,
            g: &CudaStorage,
            gl: &Layout,
        ) -> R<(CudaStorage, Shape)> {
            match x.dtype() {
                DType::F32 => bwd::<f32>(self.0, x, xl, g, gl),
                DType::BF16 => bwd::<bf16>(self.0, x, xl, g, gl),
                other => candle_core::bail!("cross-entropy: f32/bf16 logits only, got {other:?}"),
            }
        }
    }

    pub fn cross_entropy_rows(
        logits: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
    ) -> Result<Tensor> {
        let op = CeOp {
            targets: targets.to_dtype(DType::U32)?.contiguous()?,
            weights: weights.to_dtype(DType::F32)?.contiguous()?,
        };
        Ok(logits.contiguous()?.apply_op1(op)?)
    }
}
