//! Fused CUDA training ops (forward + backward): RMSNorm, masked softmax, SwiGLU, rotary
//! embedding, the per-row cross-entropy (`ce.rs`) and flash attention (`flash.rs`, its own
//! kernel file), each one kernel per direction instead of
//! the composed graph's chain of element-wise kernels and intermediates. The kernels are
//! `cuda/train_kernels.cu`, compiled to PTX by `build.rs` in a `--features cuda` build. Every
//! function here returns `None` where it does not apply (not on CUDA, a dtype other than
//! f32/bf16, no CUDA in this build, or `SO8T_FUSED=0`), and the caller then runs the composed
//! version, which is also what the fused ops are checked against (`so8t bench kernels`).

use candle_core::{DType, Tensor};

use crate::error::Result;

pub use adamw::AdamStep;
pub use heads::{HeadLayout, Tables};

mod adamw;
mod ce;
pub mod flash;
mod gate;
mod heads;
mod pointwise;

/// True when the fused kernels may run on `x`: a CUDA tensor of f32 or bf16 in a CUDA build,
/// unless `SO8T_FUSED=0`.
pub fn applies(x: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && x.device().is_cuda()
        && matches!(x.dtype(), DType::F32 | DType::BF16)
        && enabled()
}

/// `SO8T_FUSED=0` turns the fused kernels off (to compare with the composed graph).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SO8T_FUSED").map_or(true, |v| v != "0"))
}

/// `w · x / sqrt(mean(x²) + eps)` over the last dim for a frozen `w`; gradient for `x` only.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    if !applies(x) || w.track_op() || w.dtype() != x.dtype() {
        return Ok(None);
    }
    imp::rms_norm(x, w, eps).map(Some)
}

/// Softmax over the last dim of attention scores `x` [b, heads, t, s] after adding the
/// additive f32 `mask` [b|1, 1, t, s].
pub fn softmax(x: &Tensor, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !applies(x) || x.rank() != 4 {
        return Ok(None);
    }
    imp::softmax(x, mask).map(Some)
}

/// The softmax's backward pass `dx = p ⊙ (dp − rowsum(p ⊙ dp))` over the last dim from the
/// probabilities `p` and their gradient `dp` (same shape and dtype), one kernel.
pub fn softmax_backward(p: &Tensor, dp: &Tensor) -> Result<Option<Tensor>> {
    if !applies(p) || dp.dtype() != p.dtype() || dp.dims() != p.dims() {
        return Ok(None);
    }
    imp::softmax_backward(p, dp).map(Some)
}

/// The SO(8) gate's per-block matrices M [nb, 8, 8] (used in f32) applied to `z` [.., nb·8]:
/// `z'_b = M_b z_b`, with gradients for z and M.
pub fn apply_blocks(z: &Tensor, m: &Tensor) -> Result<Option<Tensor>> {
    let nb = m.dim(0)?;
    if !applies(z) || m.dims() != [nb, 8, 8] || z.dim(candle_core::D::Minus1)? != nb * 8 {
        return Ok(None);
    }
    gate::apply_blocks(z, m).map(Some)
}

/// One AdamW step of the f32 parameter `p` with gradient `g` (f32 or bf16) and the f32 moments
/// `(m, v)` of the last step (`None` on the first): `[p'; m'; v']` as one f32 tensor
/// `[3, ..p's dims]`, in one kernel.
pub fn adamw(
    p: &Tensor,
    g: &Tensor,
    mv: Option<(&Tensor, &Tensor)>,
    step: &AdamStep,
) -> Result<Option<Tensor>> {
    if !applies(g) || p.dtype() != DType::F32 {
        return Ok(None);
    }
    adamw::adamw(p, g, mv, step).map(Some)
}

/// Token-major `x` [B, T, (q + k + v)·hd] to head-first q, k, v [B, n, T, hd] (a section of
/// no heads gives `None`), q and k rotated by the f32 `tables` (if any) and q scaled.
pub fn split_heads(
    x: &Tensor,
    tables: Tables<'_>,
    layout: HeadLayout,
) -> Result<Option<[Option<Tensor>; 3]>> {
    if !applies(x) {
        return Ok(None);
    }
    heads::split(x, tables, layout).map(Some)
}

/// The inverse layout change of [`split_heads`]: head-first sections to token-major
/// [B, T, (q + k + v)·hd], q and k rotated (`layout.inverse`: by −θ) and q scaled.
pub fn merge_heads(
    heads: [Option<&Tensor>; 3],
    tables: Tables<'_>,
    layout: HeadLayout,
) -> Result<Option<Tensor>> {
    if !heads.iter().flatten().all(|h| applies(h)) {
        return Ok(None);
    }
    heads::merge(heads, tables, layout).map(Some)
}

/// `silu(g) · u` of a fused gate_up output `gu` [.., 2·inter] → [.., inter].
pub fn swiglu(gu: &Tensor) -> Result<Option<Tensor>> {
    if !applies(gu) || gu.dim(candle_core::D::Minus1)? % 2 != 0 {
        return Ok(None);
    }
    pointwise::swiglu(gu).map(Some)
}

/// Per-row cross-entropy of logits [N, V] (f32 or bf16) against `targets` (u32 [N]) with
/// `weights` (f32 [N]): `w_r · (logsumexp(x_r) − x_r[target_r])` as f32 [N], one kernel per
/// direction, no log-probabilities materialized. Targets must lie in the vocabulary.
pub fn cross_entropy_rows(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Option<Tensor>> {
    if !applies(logits) || logits.rank() != 2 {
        return Ok(None);
    }
    ce::cross_entropy_rows(logits, targets, weights).map(Some)
}

/// Rotate-half rotary embedding of `x` [b, heads, t, d] by `cos`/`sin` ([t, half] or
/// [b, t, half]); the first 2·half dims rotate, the rest pass through.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>> {
    if !applies(x) || x.rank() != 4 {
        return Ok(None);
    }
    pointwise::rope(x, cos, sin).map(Some)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    use crate::error::Error;

    fn off() -> Error {
        Error::Device("fused CUDA ops in a build without CUDA".into())
    }
    pub fn rms_norm(_: &Tensor, _: &Tensor, _: f32) -> Result<Tensor> {
        Err(off())
    }
    pub fn softmax(_: &Tensor, _: Option<&Tensor>) -> Result<Tensor> {
        Err(off())
    }
    pub fn softmax_backward(_: &Tensor, _: &Tensor) -> Result<Tensor> {
        Err(off())
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::op::BackpropOp;
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Storage,
        Tensor, WithDType,
    };
    use candle_core::{CudaDevice, StorageRef};
    use half::bf16;

    use crate::error::Result;

    pub(super) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/train_kernels.ptx"));
    pub(super) const MODULE: &str = "so8t_train_kernels";

    pub(super) type R<T> = candle_core::Result<T>;

    /// The name of kernel `{name}` for `dt`: `{name}_{f32|bf16}`.
    pub(super) fn kname(name: &str, dt: DType) -> R<String> {
        let suffix = match dt {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            other => candle_core::bail!("{name}: fused kernel for f32/bf16 only, got {other:?}"),
        };
        Ok(format!("{name}_{suffix}"))
    }

    pub(super) fn cpu_refused<T>(name: &str) -> R<T> {
        candle_core::bail!("{name}: a CUDA-only fused op was given CPU tensors")
    }

    /// The elements of a contiguous input as a kernel argument.
    pub(super) fn view<'a, T: CudaDType>(
        s: &'a CudaStorage,
        l: &Layout,
        name: &str,
    ) -> R<CudaView<'a, T>> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg(format!("{name}: input must be contiguous")))?;
        Ok(s.as_cuda_slice::<T>()?.slice(a..b))
    }

    /// The CUDA storage (read-locked while the guard lives) and layout of `t`; `what` names it
    /// in the error.
    pub(super) fn cuda_storage<'a>(t: &'a Tensor, what: &str) -> R<(StorageRef<'a>, &'a Layout)> {
        let (s, l) = t.storage_and_layout();
        if !matches!(&*s, Storage::Cuda(_)) {
            candle_core::bail!("{what} is not on CUDA")
        }
        Ok((s, l))
    }

    /// The CUDA storage in a guard from [`cuda_storage`].
    pub(super) fn as_cuda(s: &Storage) -> R<&CudaStorage> {
        match s {
            Storage::Cuda(c) => Ok(c),
            _ => candle_core::bail!("a fused kernel was given a tensor off CUDA"),
        }
    }

    /// A tensor (no gradient tracking) over a fresh CUDA allocation.
    pub(super) fn wrap_tensor<T: CudaDType + DeviceRepr>(
        s: CudaSlice<T>,
        dev: &CudaDevice,
        dims: Vec<usize>,
    ) -> Tensor {
        Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(s, dev.clone())),
            dims,
            BackpropOp::none(),
            false,
        )
    }

    /// Threads per row for the row kernels: a multiple of 32, at most 1024.
    fn row_block(cols: usize) -> u32 {
        (cols.div_ceil(32) * 32).clamp(32, 1024) as u32
    }

    /// One warp per row, eight rows per block.
    fn warp_rows_cfg(rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows.div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    pub(super) fn rows_cfg(rows: usize, cols: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (row_block(cols), 1, 1),
            shared_mem_bytes: 0,
        }
    }

    pub(super) fn elems_cfg(n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (n.div_ceil(256).min(65_535 * 8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Runs `$f::<T>` with T the Rust type of `$dt` (f32 or bf16).
    macro_rules! dispatch {
        ($dt:expr, $f:ident ( $($a:expr),* )) => {
            match $dt {
                DType::F32 => $f::<f32>($($a),*),
                DType::BF16 => $f::<bf16>($($a),*),
                other => candle_core::bail!("fused kernels: f32/bf16 only, got {other:?}"),
            }
        };
    }
    pub(super) use dispatch;

    // ---- RMSNorm ---------------------------------------------------------------------------
    struct RmsNormOp {
        eps: f32,
    }

    fn rms_fwd<T: CudaDType + DeviceRepr + WithDType>(
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
        eps: f32,
    ) -> R<(CudaStorage, Shape)> {
        let dev = x.device();
        let cols = xl.shape().dims().last().copied().unwrap_or(1);
        let rows = xl.shape().elem_count() / cols.max(1);
        let xs = view::<T>(x, xl, "rms-norm")?;
        let ws = view::<T>(w, wl, "rms-norm")?;
        let y = unsafe { dev.alloc::<T>(rows * cols)? };
        let f = dev.get_or_load_custom_func(&kname("rmsnorm_fwd", T::DTYPE)?, MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&xs);
        b.arg(&ws);
        b.arg(&y);
        let c = cols as i32;
        b.arg(&c);
        b.arg(&eps);
        unsafe { b.launch(rows_cfg(rows, cols)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            xl.shape().clone(),
        ))
    }

    impl CustomOp2 for RmsNormOp {
        fn name(&self) -> &'static str {
            "fused-rms-norm"
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
            w: &CudaStorage,
            wl: &Layout,
        ) -> R<(CudaStorage, Shape)> {
            dispatch!(x.dtype(), rms_fwd(x, xl, w, wl, self.eps))
        }
        fn bwd(
            &self,
            x: &Tensor,
            w: &Tensor,
            _y: &Tensor,
            dy: &Tensor,
        ) -> R<(Option<Tensor>, Option<Tensor>)> {
            let dx = dy
                .contiguous()?
                .apply_op3_no_bwd(x, w, &RmsNormBwd { eps: self.eps })?;
            Ok((Some(dx), None))
        }
    }

    struct RmsNormBwd {
        eps: f32,
    }

    fn rms_bwd<T: CudaDType + DeviceRepr + WithDType>(
        dy: &CudaStorage,
        dyl: &Layout,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
        eps: f32,
    ) -> R<(CudaStorage, Shape)> {
        let dev = x.device();
        let cols = xl.shape().dims().last().copied().unwrap_or(1);
        let rows = xl.shape().elem_count() / cols.max(1);
        let dys = view::<T>(dy, dyl, "rms-norm-bwd")?;
        let xs = view::<T>(x, xl, "rms-norm-bwd")?;
        let ws = view::<T>(w, wl, "rms-norm-bwd")?;
        let dx = unsafe { dev.alloc::<T>(rows * cols)? };
        let f = dev.get_or_load_custom_func(&kname("rmsnorm_bwd", T::DTYPE)?, MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&dys);
        b.arg(&xs);
        b.arg(&ws);
        b.arg(&dx);
        let c = cols as i32;
        b.arg(&c);
        b.arg(&eps);
        unsafe { b.launch(rows_cfg(rows, cols)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, dev.clone()),
            xl.shape().clone(),
        ))
    }

    impl CustomOp3 for RmsNormBwd {
        fn name(&self) -> &'static str {
            "fused-rms-norm-bwd"
        }
        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
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
            x: &CudaStorage,
            xl: &Layout,
            w: &CudaStorage,
            wl: &Layout,
        ) -> R<(CudaStorage, Shape)> {
            dispatch!(x.dtype(), rms_bwd(dy, dyl, x, xl, w, wl, self.eps))
        }
    }

    pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
        Ok(x.contiguous()?
            .apply_op2(&w.contiguous()?, RmsNormOp { eps })?)
    }

    // ---- masked softmax ---------------------------------------------------------------------
    /// Scores [b, heads, t, s]; the mask (if any) is held by the op, f32 [mb, 1, t, s].
    struct SoftmaxOp {
        mask: Option<Tensor>,
    }

    fn sm_fwd<T: CudaDType + DeviceRepr + WithDType>(
        x: &CudaStorage,
        xl: &Layout,
        mask: Option<&Tensor>,
    ) -> R<(CudaStorage, Shape)> {
        let dev = x.device();
        let (_, heads, t, s) = xl.shape().dims4()?;
        let rows = xl.shape().elem_count() / s;
        let xs = view::<T>(x, xl, "softmax")?;
        let y = unsafe { dev.alloc::<T>(rows * s)? };
        let f = dev.get_or_load_custom_func(&kname("softmax_fwd", T::DTYPE)?, MODULE, PTX)?;
        let (nr, c, h, tt) = (rows as i32, s as i32, heads as i32, t as i32);
        let launch =
            |mptr: Option<&candle_core::cuda_backend::cudarc::driver::CudaView<'_, f32>>,
             mb: i32|
             -> R<()> {
                let mut b = f.builder();
                b.arg(&xs);
                let null: u64 = 0;
                match mptr {
                    Some(m) => b.arg(m),
                    None => b.arg(&null),
                };
                b.arg(&y);
                b.arg(&nr);
                b.arg(&c);
                b.arg(&h);
                b.arg(&tt);
                b.arg(&mb);
                unsafe { b.launch(warp_rows_cfg(rows)) }.w()?;
                Ok(())
            };
        match mask {
            Some(m) => {
                let (mb, _, mt, ms) = m.dims4()?;
                if mt != t || ms != s {
                    candle_core::bail!(
                        "softmax: mask is {:?}, scores {:?}",
                        m.dims(),
                        xl.shape().dims()
                    )
                }
                let (st, ml) = m.storage_and_layout();
                let Storage::Cuda(ms_) = &*st else {
                    candle_core::bail!("softmax: mask not on CUDA")
                };
                let mv = view::<f32>(ms_, ml, "softmax mask")?;
                launch(Some(&mv), mb as i32)?;
            }
            None => launch(None, 1)?,
        }
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            xl.shape().clone(),
        ))
    }

    impl CustomOp1 for SoftmaxOp {
        fn name(&self) -> &'static str {
            "fused-softmax"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> R<(CpuStorage, Shape)> {
            cpu_refused(self.name())
        }
        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> R<(CudaStorage, Shape)> {
            dispatch!(x.dtype(), sm_fwd(x, xl, self.mask.as_ref()))
        }
        fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> R<Option<Tensor>> {
            Ok(Some(dy.contiguous()?.apply_op2_no_bwd(y, &SoftmaxBwd)?))
        }
    }

    struct SoftmaxBwd;

    fn sm_bwd<T: CudaDType + DeviceRepr + WithDType>(
        dy: &CudaStorage,
        dyl: &Layout,
        y: &CudaStorage,
        yl: &Layout,
    ) -> R<(CudaStorage, Shape)> {
        let dev = y.device();
        let s = yl.shape().dims().last().copied().unwrap_or(1);
        let rows = yl.shape().elem_count() / s.max(1);
        let dys = view::<T>(dy, dyl, "softmax-bwd")?;
        let ys = view::<T>(y, yl, "softmax-bwd")?;
        let dx = unsafe { dev.alloc::<T>(rows * s)? };
        let f = dev.get_or_load_custom_func(&kname("softmax_bwd", T::DTYPE)?, MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&dys);
        b.arg(&ys);
        b.arg(&dx);
        let (nr, c) = (rows as i32, s as i32);
        b.arg(&nr);
        b.arg(&c);
        unsafe { b.launch(warp_rows_cfg(rows)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, dev.clone()),
            yl.shape().clone(),
        ))
    }

    impl CustomOp2 for SoftmaxBwd {
        fn name(&self) -> &'static str {
            "fused-softmax-bwd"
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
            y: &CudaStorage,
            yl: &Layout,
        ) -> R<(CudaStorage, Shape)> {
            dispatch!(y.dtype(), sm_bwd(dy, dyl, y, yl))
        }
    }

    pub fn softmax(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mask = match mask {
            Some(m) => Some(m.to_dtype(DType::F32)?.contiguous()?),
            None => None,
        };
        Ok(x.contiguous()?.apply_op1(SoftmaxOp { mask })?)
    }

    pub fn softmax_backward(p: &Tensor, dp: &Tensor) -> Result<Tensor> {
        Ok(dp
            .contiguous()?
            .apply_op2_no_bwd(&p.contiguous()?, &SoftmaxBwd)?)
    }
}
