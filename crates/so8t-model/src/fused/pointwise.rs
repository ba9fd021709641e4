//! The element-wise fused CUDA ops: SwiGLU of a fused gate_up output and the rotary embedding,
//! each with its backward kernel (`cuda/train_kernels.cu`).

#[cfg(not(feature = "cuda"))]
pub(super) use off::{rope, swiglu};

#[cfg(not(feature = "cuda"))]
mod off {
    use candle_core::Tensor;

    use crate::error::{Error, Result};

    pub fn swiglu(_: &Tensor) -> Result<Tensor> {
        Err(Error::Device(
            "fused CUDA ops in a build without CUDA".into(),
        ))
    }

    pub fn rope(_: &Tensor, _: &Tensor, _: &Tensor) -> Result<Tensor> {
        Err(Error::Device(
            "fused CUDA ops in a build without CUDA".into(),
        ))
    }
}

#[cfg(feature = "cuda")]
pub(super) use imp::{rope, swiglu};

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage, Tensor,
        WithDType,
    };
    use half::bf16;

    use super::super::imp::{cpu_refused, dispatch, elems_cfg, kname, view, MODULE, PTX, R};
    use crate::error::Result;

    // ---- SwiGLU -----------------------------------------------------------------------------
    struct SwigluOp;

    fn sw_fwd<T: CudaDType + DeviceRepr + WithDType>(
        gu: &CudaStorage,
        l: &Layout,
    ) -> R<(CudaStorage, Shape)> {
        let dev = gu.device();
        let mut dims = l.shape().dims().to_vec();
        let two = dims.pop().unwrap_or(0);
        let inter = two / 2;
        let n = l.shape().elem_count() / 2;
        let s = view::<T>(gu, l, "swiglu")?;
        let h = unsafe { dev.alloc::<T>(n)? };
        let f = dev.get_or_load_custom_func(&kname("swiglu_fwd", T::DTYPE)?, MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&s);
        b.arg(&h);
        let (nn, ii) = (n, inter as i32);
        b.arg(&nn);
        b.arg(&ii);
        unsafe { b.launch(elems_cfg(n)) }.w()?;
        dims.push(inter);
        Ok((
            CudaStorage::wrap_cuda_slice(h, dev.clone()),
            Shape::from(dims),
        ))
    }

    impl CustomOp1 for SwigluOp {
        fn name(&self) -> &'static str {
            "fused-swiglu"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> R<(CpuStorage, Shape)> {
            cpu_refused(self.name())
        }
        fn cuda_fwd(&self, gu: &CudaStorage, l: &Layout) -> R<(CudaStorage, Shape)> {
            dispatch!(gu.dtype(), sw_fwd(gu, l))
        }
        fn bwd(&self, gu: &Tensor, _h: &Tensor, dh: &Tensor) -> R<Option<Tensor>> {
            Ok(Some(dh.contiguous()?.apply_op2_no_bwd(gu, &SwigluBwd)?))
        }
    }

    struct SwigluBwd;

    fn sw_bwd<T: CudaDType + DeviceRepr + WithDType>(
        dh: &CudaStorage,
        dhl: &Layout,
        gu: &CudaStorage,
        gl: &Layout,
    ) -> R<(CudaStorage, Shape)> {
        let dev = gu.device();
        let inter = gl.shape().dims().last().copied().unwrap_or(0) / 2;
        let n = gl.shape().elem_count() / 2;
        let dhs = view::<T>(dh, dhl, "swiglu-bwd")?;
        let gus = view::<T>(gu, gl, "swiglu-bwd")?;
        let dgu = unsafe { dev.alloc::<T>(2 * n)? };
        let f = dev.get_or_load_custom_func(&kname("swiglu_bwd", T::DTYPE)?, MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&dhs);
        b.arg(&gus);
        b.arg(&dgu);
        let (nn, ii) = (n, inter as i32);
        b.arg(&nn);
        b.arg(&ii);
        unsafe { b.launch(elems_cfg(n)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(dgu, dev.clone()),
            gl.shape().clone(),
        ))
    }

    impl CustomOp2 for SwigluBwd {
        fn name(&self) -> &'static str {
            "fused-swiglu-bwd"
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
            dh: &CudaStorage,
            dhl: &Layout,
            gu: &CudaStorage,
            gl: &Layout,
        ) -> R<(CudaStorage, Shape)> {
            dispatch!(gu.dtype(), sw_bwd(dh, dhl, gu, gl))
        }
    }

    pub fn swiglu(gu: &Tensor) -> Result<Tensor> {
        Ok(gu.contiguous()?.apply_op1(SwigluOp)?)
    }

    // ---- rotary embedding ---------------------------------------------------------------------
    /// cos/sin as contiguous f32 [cos_b, t, half]; `sign` −1 rotates back.
    struct RopeOp {
        cos: Tensor,
        sin: Tensor,
        sign: f32,
    }

    fn rope_fwd<T: CudaDType + DeviceRepr + WithDType>(
        x: &CudaStorage,
        xl: &Layout,
        op: &RopeOp,
    ) -> R<(CudaStorage, Shape)> {
        let dev = x.device();
        let (_, heads, t, d) = xl.shape().dims4()?;
        let (cb, ct, half) = op.cos.dims3()?;
        if ct != t || 2 * half > d {
            candle_core::bail!(
                "rope: cos is {:?}, x {:?}",
                op.cos.dims(),
                xl.shape().dims()
            )
        }
        let n = xl.shape().elem_count();
        let xs = view::<T>(x, xl, "rope")?;
        let (cs, cl) = op.cos.storage_and_layout();
        let (ss, sl) = op.sin.storage_and_layout();
        let (Storage::Cuda(cs), Storage::Cuda(ss)) = (&*cs, &*ss) else {
            candle_core::bail!("rope: cos/sin not on CUDA")
        };
        let cv = view::<f32>(cs, cl, "rope cos")?;
        let sv = view::<f32>(ss, sl, "rope sin")?;
        let y = unsafe { dev.alloc::<T>(n)? };
        let f = dev.get_or_load_custom_func(&kname("rope", T::DTYPE)?, MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&xs);
        b.arg(&cv);
        b.arg(&sv);
        b.arg(&y);
        let (nn, h, tt, dd, hf, cbb) =
            (n, heads as i32, t as i32, d as i32, half as i32, cb as i32);
        b.arg(&nn);
        b.arg(&h);
        b.arg(&tt);
        b.arg(&dd);
        b.arg(&hf);
        b.arg(&cbb);
        b.arg(&op.sign);
        unsafe { b.launch(elems_cfg(n)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            xl.shape().clone(),
        ))
    }

    impl CustomOp1 for RopeOp {
        fn name(&self) -> &'static str {
            "fused-rope"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> R<(CpuStorage, Shape)> {
            cpu_refused(self.name())
        }
        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> R<(CudaStorage, Shape)> {
            dispatch!(x.dtype(), rope_fwd(x, xl, self))
        }
        fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> R<Option<Tensor>> {
            let back = RopeOp {
                cos: self.cos.clone(),
                sin: self.sin.clone(),
                sign: -self.sign,
            };
            Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&back)?))
        }
    }

    pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let f = |c: &Tensor| -> Result<Tensor> {
            let c = c.to_dtype(DType::F32)?;
            let c = if c.rank() == 2 { c.unsqueeze(0)? } else { c };
            Ok(c.contiguous()?)
        };
        Ok(x.contiguous()?.apply_op1(RopeOp {
            cos: f(cos)?,
            sin: f(sin)?,
            sign: 1.0,
        })?)
    }
}
