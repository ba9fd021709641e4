//! Flash attention for training on CUDA (`cuda/flash_attention.cu`): bf16 head-first q, k, v
//! (q rotated and scaled, k rotated), grouped-query heads, every query row attending to one
//! window of keys `[lo, hi]` (causal when no windows are given). The forward pass writes the
//! output and each row's log-sum-exp; the backward pass recomputes the probabilities tile by tile
//! from them. Neither materializes the `[B, heads, T, T]` scores, and both skip the tiles the
//! windows leave out (half of them for causal attention).

use candle_core::{DType, Tensor};

use crate::error::Result;

/// Head widths the kernels are compiled for.
pub const HEAD_DIMS: [usize; 5] = [16, 32, 64, 96, 128];

/// True when the flash kernels can run attention of `head_dim`-wide heads on `x`: a bf16 CUDA
/// tensor in a CUDA build, the fused kernels on, `SO8T_FLASH` not `0`.
pub fn flash_applies(x: &Tensor, head_dim: usize) -> bool {
    super::applies(x) && x.dtype() == DType::BF16 && HEAD_DIMS.contains(&head_dim) && enabled()
}

/// `SO8T_FLASH=0` turns the flash kernels off (the attention node then computes the scores
/// with cuBLAS, in row chunks).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SO8T_FLASH").map_or(true, |v| v != "0"))
}

/// The forward pass: `q` [B, H, T, hd], `k`, `v` [B, HKV, T, hd] (bf16, contiguous), `windows`
/// u32 [B, T, 2] (`[lo, hi]` per query row, both non-decreasing along T, `hi ≤ row`) or `None`
/// for causal attention. Returns the output [B, H, T, hd] and the f32 log-sum-exp [B, H, T]
/// (+∞ for a row with an empty window, whose output is zero).
pub fn forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    windows: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    imp::forward(q, k, v, windows)
}

/// The backward pass from the forward's inputs, its token-major output `y` [B, T, H·hd] and
/// log-sum-exp, and the output's gradient, token-major `dy` and head-first `dyh` [B, H, T, hd]:
/// `(dq, dk, dv)`, dq in f32 [B, H, T, hd], dk and dv bf16 [B, HKV, T, hd].
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    windows: Option<&Tensor>,
    y: &Tensor,
    lse: &Tensor,
    dy: &Tensor,
    dyh: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    imp::backward(q, k, v, windows, y, lse, dy, dyh)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    use crate::error::Error;

    fn off() -> Error {
        Error::Device("flash attention in a build without CUDA".into())
    }

    pub fn forward(
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        Err(off())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: Option<&Tensor>,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        Err(off())
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{DType, Tensor};
    use half::bf16;

    use super::super::imp::{as_cuda, cuda_storage, view, wrap_tensor, R};
    use super::HEAD_DIMS;
    use crate::error::Result;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attention.ptx"));
    const MODULE: &str = "so8t_flash_attention";

    /// Batch, query heads, kv heads, positions and head width of q/k/v, checked.
    fn shape(q: &Tensor, k: &Tensor, v: &Tensor, windows: Option<&Tensor>) -> R<[usize; 5]> {
        let (b, h, t, hd) = q.dims4()?;
        let (kb, hkv, kt, khd) = k.dims4()?;
        if (kb, kt, khd) != (b, t, hd) || v.dims() != k.dims() || hkv == 0 || h % hkv != 0 {
            candle_core::bail!(
                "flash attention: q {:?}, k {:?}, v {:?} do not fit",
                q.dims(),
                k.dims(),
                v.dims()
            )
        }
        if !HEAD_DIMS.contains(&hd) {
            candle_core::bail!("flash attention: no kernel for heads of {hd} (only {HEAD_DIMS:?})")
        }
        for (x, name) in [(q, "q"), (k, "k"), (v, "v")] {
            if x.dtype() != DType::BF16 || !x.is_contiguous() {
                candle_core::bail!("flash attention: {name} must be contiguous bf16")
            }
        }
        if let Some(w) = windows {
            if w.dims() != [b, t, 2] || w.dtype() != DType::U32 || !w.is_contiguous() {
                candle_core::bail!(
                    "flash attention: windows {:?} {:?}, expected contiguous u32 [{b}, {t}, 2]",
                    w.dims(),
                    w.dtype()
                )
            }
        }
        if b * h * t * hd > i32::MAX as usize || b * h > 65_535 {
            candle_core::bail!(
                "flash attention: {:?} exceeds the kernels' index range",
                q.dims()
            )
        }
        Ok([b, h, hkv, t, hd])
    }

    /// The backward pass's extra inputs checked against q [B, H, T, hd].
    fn check_backward(q: &Tensor, y: &Tensor, dy: &Tensor, dyh: &Tensor, lse: &Tensor) -> R<()> {
        let (b, h, t, hd) = q.dims4()?;
        if y.dims() != [b, t, h * hd] || dy.dims() != y.dims() || dyh.dims() != q.dims() {
            candle_core::bail!(
                "flash attention backward: y {:?}, dy {:?}, dyh {:?} for q {:?}",
                y.dims(),
                dy.dims(),
                dyh.dims(),
                q.dims()
            )
        }
        if lse.dims() != [b, h, t] || lse.dtype() != DType::F32 || !lse.is_contiguous() {
            candle_core::bail!(
                "flash attention backward: lse {:?} {:?}, expected f32 [{b}, {h}, {t}]",
                lse.dims(),
                lse.dtype()
            )
        }
        for (x, name) in [(y, "y"), (dy, "dy"), (dyh, "dyh")] {
            if x.dtype() != DType::BF16 || !x.is_contiguous() {
                candle_core::bail!("flash attention backward: {name} must be contiguous bf16")
            }
        }
        Ok(())
    }

    fn tiles(t: usize, rows: usize) -> u32 {
        t.div_ceil(rows) as u32
    }

    pub fn forward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        windows: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let [b, h, hkv, t, hd] = shape(q, k, v, windows)?;
        let (qs, ql) = cuda_storage(q, "flash attention: q")?;
        let (ks, kl) = cuda_storage(k, "flash attention: k")?;
        let (vs, vl) = cuda_storage(v, "flash attention: v")?;
        let dev = as_cuda(&qs)?.device().clone();
        let qv = view::<bf16>(as_cuda(&qs)?, ql, "flash q")?;
        let kv = view::<bf16>(as_cuda(&ks)?, kl, "flash k")?;
        let vv = view::<bf16>(as_cuda(&vs)?, vl, "flash v")?;
        let ws = windows
            .map(|w| cuda_storage(w, "flash attention: windows"))
            .transpose()?;
        let wv = match &ws {
            Some((s, l)) => Some(view::<u32>(as_cuda(s)?, l, "flash windows")?),
            None => None,
        };
        let o = unsafe { dev.alloc::<bf16>(b * h * t * hd)? };
        let lse = unsafe { dev.alloc::<f32>(b * h * t)? };
        let f = dev.get_or_load_custom_func(&format!("flash_fwd_{hd}"), MODULE, PTX)?;
        let mut a = f.builder();
        a.arg(&qv);
        a.arg(&kv);
        a.arg(&vv);
        let null: u64 = 0;
        match &wv {
            Some(w) => a.arg(w),
            None => a.arg(&null),
        };
        a.arg(&o);
        a.arg(&lse);
        let ints = [h, hkv, t].map(|x| x as i32);
        for i in &ints {
            a.arg(i);
        }
        let cfg = LaunchConfig {
            grid_dim: (tiles(t, 64), (b * h) as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { a.launch(cfg) }.w()?;
        drop(a);
        Ok((
            wrap_tensor(o, &dev, vec![b, h, t, hd]),
            wrap_tensor(lse, &dev, vec![b, h, t]),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        windows: Option<&Tensor>,
        y: &Tensor,
        lse: &Tensor,
        dy: &Tensor,
        dyh: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let [b, h, hkv, t, hd] = shape(q, k, v, windows)?;
        let y = y.contiguous()?;
        let dy = dy.contiguous()?;
        check_backward(q, &y, &dy, dyh, lse)?;
        let (qs, ql) = cuda_storage(q, "flash attention: q")?;
        let (ks, kl) = cuda_storage(k, "flash attention: k")?;
        let (vs, vl) = cuda_storage(v, "flash attention: v")?;
        let (ys, yl) = cuda_storage(&y, "flash attention: y")?;
        let (ls, ll) = cuda_storage(lse, "flash attention: lse")?;
        let (dys, dyl) = cuda_storage(&dy, "flash attention: dy")?;
        let (dhs, dhl) = cuda_storage(dyh, "flash attention: dyh")?;
        let dev = as_cuda(&qs)?.device().clone();
        let ws = windows
            .map(|w| cuda_storage(w, "flash attention: windows"))
            .transpose()?;
        let wv = match &ws {
            Some((s, l)) => Some(view::<u32>(as_cuda(s)?, l, "flash windows")?),
            None => None,
        };
        let null: u64 = 0;

        // d = rowsum(y ⊙ dy) per (row, head), head-first.
        let rows = b * t * h;
        let d = unsafe { dev.alloc::<f32>(rows)? };
        {
            let f = dev.get_or_load_custom_func("flash_bwd_dot_bf16", MODULE, PTX)?;
            let yv = view::<bf16>(as_cuda(&ys)?, yl, "flash y")?;
            let dyv = view::<bf16>(as_cuda(&dys)?, dyl, "flash dy")?;
            let mut a = f.builder();
            a.arg(&yv);
            a.arg(&dyv);
            a.arg(&d);
            let ints = [rows, h, t, hd].map(|x| x as i32);
            for i in &ints {
                a.arg(i);
            }
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(8) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { a.launch(cfg) }.w()?;
        }

        let dq = dev.alloc_zeros::<f32>(b * h * t * hd)?;
        let dk = unsafe { dev.alloc::<bf16>(b * hkv * t * hd)? };
        let dv = unsafe { dev.alloc::<bf16>(b * hkv * t * hd)? };
        {
            let f = dev.get_or_load_custom_func(&format!("flash_bwd_{hd}"), MODULE, PTX)?;
            // sizeof(BwdSmem<hd>) in the kernel file; above 48 KiB it needs the opt-in.
            let smem = 384 * (hd + 8) + 6144;
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .w()?;
            let qv = view::<bf16>(as_cuda(&qs)?, ql, "flash q")?;
            let kv = view::<bf16>(as_cuda(&ks)?, kl, "flash k")?;
            let vv = view::<bf16>(as_cuda(&vs)?, vl, "flash v")?;
            let dhv = view::<bf16>(as_cuda(&dhs)?, dhl, "flash dyh")?;
            let lv = view::<f32>(as_cuda(&ls)?, ll, "flash lse")?;
            let mut a = f.builder();
            a.arg(&qv);
            a.arg(&kv);
            a.arg(&vv);
            a.arg(&dhv);
            a.arg(&lv);
            a.arg(&d);
            match &wv {
                Some(w) => a.arg(w),
                None => a.arg(&null),
            };
            a.arg(&dq);
            a.arg(&dk);
            a.arg(&dv);
            let ints = [h, hkv, t].map(|x| x as i32);
            for i in &ints {
                a.arg(i);
            }
            let cfg = LaunchConfig {
                grid_dim: (tiles(t, 64), (b * hkv) as u32, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: smem as u32,
            };
            unsafe { a.launch(cfg) }.w()?;
        }
        Ok((
            wrap_tensor(dq, &dev, vec![b, h, t, hd]),
            wrap_tensor(dk, &dev, vec![b, hkv, t, hd]),
            wrap_tensor(dv, &dev, vec![b, hkv, t, hd]),
        ))
    }
}
