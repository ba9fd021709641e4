//! The SO(8) gate's block rotation on CUDA: `z'_b = M_b z_b` for every 8-wide block of the last
//! dim of `z` [.., nb·8] with M [nb, 8, 8] in f32, one kernel per direction (`gate_apply`, with
//! `M_bᵀ` for the input's gradient, and `gate_grad` for `dM_b = Σ_rows dz'_b z_bᵀ`). The composed
//! form ([`crate::so8::apply_blocks`]) transposes z to block-major and back in each direction and
//! runs a batched GEMM with 8×8 inner dimensions.

#[cfg(not(feature = "cuda"))]
pub(super) fn apply_blocks(
    _: &candle_core::Tensor,
    _: &candle_core::Tensor,
) -> crate::error::Result<candle_core::Tensor> {
    Err(crate::error::Error::Device(
        "fused CUDA ops in a build without CUDA".into(),
    ))
}

#[cfg(feature = "cuda")]
pub(super) use imp::apply_blocks;

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp2, DType, Layout, Shape, Tensor, WithDType,
    };
    use half::bf16;

    use super::super::imp::{cpu_refused, dispatch, elems_cfg, kname, view, MODULE, PTX, R};
    use crate::error::Result;

    /// Rows summed by one block of `gate_grad`.
    const CHUNK: usize = 64;

    /// `z'` = blockwise `M z` (`transpose`: `Mᵀ z`).
    struct GateApply {
        transpose: bool,
    }

    fn apply<T: CudaDType + DeviceRepr + WithDType>(
        z: &CudaStorage,
        zl: &Layout,
        m: &CudaStorage,
        ml: &Layout,
        transpose: bool,
    ) -> R<(CudaStorage, Shape)> {
        let dev = z.device();
        let width = zl.shape().dims().last().copied().unwrap_or(0);
        let n = zl.shape().elem_count();
        let zs = view::<T>(z, zl, "gate")?;
        let ms = view::<f32>(m, ml, "gate")?;
        let y = unsafe { dev.alloc::<T>(n)? };
        let f = dev.get_or_load_custom_func(&kname("gate_apply", T::DTYPE)?, MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&zs);
        b.arg(&ms);
        b.arg(&y);
        let (nn, w, tr) = (n, width as i32, i32::from(transpose));
        b.arg(&nn);
        b.arg(&w);
        b.arg(&tr);
        unsafe { b.launch(elems_cfg(n)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            zl.shape().clone(),
        ))
    }

    impl CustomOp2 for GateApply {
        fn name(&self) -> &'static str {
            "fused-gate"
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
            z: &CudaStorage,
            zl: &Layout,
            m: &CudaStorage,
            ml: &Layout,
        ) -> R<(CudaStorage, Shape)> {
            dispatch!(z.dtype(), apply(z, zl, m, ml, self.transpose))
        }
        fn bwd(
            &self,
            z: &Tensor,
            m: &Tensor,
            _: &Tensor,
            dy: &Tensor,
        ) -> R<(Option<Tensor>, Option<Tensor>)> {
            let dy = dy.contiguous()?;
            let dz = dy.apply_op2_no_bwd(
                m,
                &GateApply {
                    transpose: !self.transpose,
                },
            )?;
            let dm = if m.track_op() {
                // d(M z)/dM = dy zᵀ; for the transposed form, its transpose.
                let g = dy.apply_op2_no_bwd(z, &GateGrad)?;
                Some(if self.transpose {
                    g.transpose(1, 2)?.contiguous()?
                } else {
                    g
                })
            } else {
                None
            };
            Ok((Some(dz), dm))
        }
    }

    /// `dM_b = Σ_rows dy_b z_bᵀ` [nb, 8, 8] (f32) from `dy` and `z` [.., nb·8].
    struct GateGrad;

    fn grad<T: CudaDType + DeviceRepr + WithDType>(
        dy: &CudaStorage,
        dyl: &Layout,
        z: &CudaStorage,
        zl: &Layout,
    ) -> R<(CudaStorage, Shape)> {
        let dev = z.device();
        let width = zl.shape().dims().last().copied().unwrap_or(0);
        let rows = zl.shape().elem_count() / width.max(1);
        let nb = width / 8;
        let dys = view::<T>(dy, dyl, "gate-grad")?;
        let zs = view::<T>(z, zl, "gate-grad")?;
        let dm = dev.alloc_zeros::<f32>(nb * 64)?;
        let f = dev.get_or_load_custom_func(&kname("gate_grad", T::DTYPE)?, MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&dys);
        b.arg(&zs);
        b.arg(&dm);
        let (r, w, c) = (rows as i32, width as i32, CHUNK as i32);
        b.arg(&r);
        b.arg(&w);
        b.arg(&c);
        let cfg = LaunchConfig {
            grid_dim: (nb as u32, rows.div_ceil(CHUNK).max(1) as u32, 1),
            block_dim: (64, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { b.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(dm, dev.clone()),
            Shape::from((nb, 8, 8)),
        ))
    }

    impl CustomOp2 for GateGrad {
        fn name(&self) -> &'static str {
            "fused-gate-grad"
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
            dy: &CudaStorage,
            dyl: &Layout,
            z: &CudaStorage,
            zl: &Layout,
        ) -> R<(CudaStorage, Shape)> {
            dispatch!(z.dtype(), grad(dy, dyl, z, zl))
        }
    }

    pub fn apply_blocks(z: &Tensor, m: &Tensor) -> Result<Tensor> {
        let m = m.to_dtype(DType::F32)?.contiguous()?;
        Ok(z.contiguous()?
            .apply_op2(&m, GateApply { transpose: false })?)
    }
}
