//! Attention heads between the token-major layout of the projections, `[B, T, (nq + nk + nv)·hd]`
//! (q heads, then k, then v), and the head-first `[B, n, T, hd]` of the attention products, with
//! the rotary embedding of q and k (and q's scale) on the way: one kernel per direction where the
//! composed form runs three strided copies, two rotary kernels and a scaling (and on the way back
//! three copies, a concatenation, two rotary kernels and a scaling).

use candle_core::Tensor;

/// The head layout and what happens to q and k on the way.
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    /// Query heads (rotated and scaled).
    pub q: usize,
    /// Key heads (rotated).
    pub k: usize,
    /// Value heads (passed through).
    pub v: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Factor on q after its rotation.
    pub q_scale: f64,
    /// Rotate by −θ (the transpose of the rotation: the backward pass).
    pub inverse: bool,
}

/// The rotary tables: cos and sin, f32 `[T, half]` or `[B, T, half]`.
pub type Tables<'a> = Option<(&'a Tensor, &'a Tensor)>;

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    use crate::error::{Error, Result};

    pub fn split(_: &Tensor, _: Tables<'_>, _: HeadLayout) -> Result<[Option<Tensor>; 3]> {
        Err(Error::Device(
            "fused CUDA ops in a build without CUDA".into(),
        ))
    }

    pub fn merge(_: [Option<&Tensor>; 3], _: Tables<'_>, _: HeadLayout) -> Result<Tensor> {
        Err(Error::Device(
            "fused CUDA ops in a build without CUDA".into(),
        ))
    }
}

pub(super) use imp::{merge, split};

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{DType, Tensor, WithDType};
    use half::bf16;

    use super::super::imp::{
        as_cuda, cuda_storage, dispatch, kname, view, wrap_tensor, MODULE, PTX, R,
    };
    use super::{HeadLayout, Tables};
    use crate::error::Result;

    /// (cos_b, half) of the tables for `b` rows of `t` positions, checked.
    fn table_dims(tables: Tables<'_>, b: usize, t: usize, hd: usize) -> R<(usize, usize)> {
        let Some((cos, sin)) = tables else {
            return Ok((1, 0));
        };
        let (cb, ct, half) = match cos.dims() {
            &[ct, h] => (1, ct, h),
            &[cb, ct, h] => (cb, ct, h),
            d => candle_core::bail!("attention heads: rotary table {d:?}"),
        };
        if ct != t || (cb != 1 && cb != b) || 2 * half > hd || sin.dims() != cos.dims() {
            candle_core::bail!(
                "attention heads: rotary tables {:?} for {b} rows of {t} positions, head {hd}",
                cos.dims()
            )
        }
        if cos.dtype() != DType::F32 || sin.dtype() != DType::F32 {
            candle_core::bail!("attention heads: rotary tables must be f32")
        }
        Ok((cb, half))
    }

    #[allow(clippy::too_many_arguments)]
    fn run<T: CudaDType + DeviceRepr + WithDType>(
        split: bool,
        token_major: &Tensor,
        heads: [Option<&Tensor>; 3],
        b: usize,
        t: usize,
        tables: Tables<'_>,
        l: HeadLayout,
    ) -> R<Vec<Tensor>> {
        let hd = l.head_dim;
        let counts = [l.q, l.k, l.v];
        if b * t > i32::MAX as usize || b * t * (l.q + l.k + l.v) * hd > u32::MAX as usize {
            candle_core::bail!(
                "attention heads: {b} × {t} rows of {l:?} exceed the kernel's index range"
            )
        }
        let (cb, half) = table_dims(tables, b, t, hd)?;
        let (ts, tl) = cuda_storage(token_major, "attention heads: a tensor")?;
        let dev = as_cuda(&ts)?.device().clone();
        let f_name = if split { "heads_split" } else { "heads_merge" };
        let f = dev.get_or_load_custom_func(&kname(f_name, T::DTYPE)?, MODULE, PTX)?;
        let tv = view::<T>(as_cuda(&ts)?, tl, "attention heads")?;
        let tabs = match tables {
            Some((c, s)) => Some((
                cuda_storage(c, "attention heads: a tensor")?,
                cuda_storage(s, "attention heads: a tensor")?,
            )),
            None => None,
        };
        let tab_views = match &tabs {
            Some(((cs, cl), (ss, sl))) => Some((
                view::<f32>(as_cuda(cs)?, cl, "rotary cos")?,
                view::<f32>(as_cuda(ss)?, sl, "rotary sin")?,
            )),
            None => None,
        };
        let null: u64 = 0;
        // split: outputs per section; merge: inputs per section.
        let mut outs: Vec<Option<CudaSlice<T>>> = Vec::new();
        let mut ins = Vec::new();
        if split {
            for &n in &counts {
                outs.push(if n > 0 {
                    Some(unsafe { dev.alloc::<T>(b * n * t * hd)? })
                } else {
                    None
                });
            }
        } else {
            for (i, h) in heads.iter().enumerate() {
                ins.push(match h {
                    Some(x) if counts[i] > 0 => Some(cuda_storage(x, "attention heads: a tensor")?),
                    _ => None,
                });
            }
        }
        let in_views = ins
            .iter()
            .map(|s| match s {
                Some((st, sl)) => view::<T>(as_cuda(st)?, sl, "attention heads").map(Some),
                None => Ok(None),
            })
            .collect::<R<Vec<_>>>()?;
        let out_x = if split {
            None
        } else {
            Some(unsafe { dev.alloc::<T>(b * t * (l.q + l.k + l.v) * hd)? })
        };
        let mut a = f.builder();
        if split {
            a.arg(&tv);
        } else {
            for v in &in_views {
                match v {
                    Some(v) => a.arg(v),
                    None => a.arg(&null),
                };
            }
        }
        match &tab_views {
            Some((c, s)) => {
                a.arg(c);
                a.arg(s);
            }
            None => {
                a.arg(&null);
                a.arg(&null);
            }
        }
        if split {
            for o in &outs {
                match o {
                    Some(o) => a.arg(o),
                    None => a.arg(&null),
                };
            }
        } else if let Some(x) = &out_x {
            a.arg(x);
        }
        let ints = [b, t, l.q, l.k, l.v, hd, half, cb].map(|x| x as i32);
        for i in &ints {
            a.arg(i);
        }
        let (qs, sign) = (l.q_scale as f32, if l.inverse { -1f32 } else { 1f32 });
        a.arg(&qs);
        a.arg(&sign);
        // One block per token row (grid x allows 2³¹ − 1 rows).
        let cfg = LaunchConfig {
            grid_dim: ((b * t) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { a.launch(cfg) }.w()?;
        drop(a);
        Ok(if split {
            outs.into_iter()
                .zip(counts)
                .filter_map(|(o, n)| o.map(|o| wrap_tensor(o, &dev, vec![b, n, t, hd])))
                .collect()
        } else {
            let w = (l.q + l.k + l.v) * hd;
            out_x
                .map(|x| wrap_tensor(x, &dev, vec![b, t, w]))
                .into_iter()
                .collect()
        })
    }

    pub fn split(x: &Tensor, tables: Tables<'_>, l: HeadLayout) -> Result<[Option<Tensor>; 3]> {
        let (b, t, w) = x.dims3()?;
        if w != (l.q + l.k + l.v) * l.head_dim {
            return Err(bad(format!(
                "attention heads: width {w} does not fit {l:?}"
            )));
        }
        let x = x.contiguous()?;
        let mut outs = dispatch_run(true, &x, [None, None, None], b, t, tables, l)?.into_iter();
        let mut take = |n: usize| if n > 0 { outs.next() } else { None };
        Ok([take(l.q), take(l.k), take(l.v)])
    }

    pub fn merge(heads: [Option<&Tensor>; 3], tables: Tables<'_>, l: HeadLayout) -> Result<Tensor> {
        let counts = [l.q, l.k, l.v];
        let mut dims = None;
        let mut cont = Vec::new();
        for (h, &n) in heads.iter().zip(&counts) {
            match (h, n) {
                (_, 0) => cont.push(None),
                (Some(x), n) => {
                    let (b, hn, t, hd) = x.dims4()?;
                    if hn != n || hd != l.head_dim || dims.is_some_and(|d| d != (b, t)) {
                        return Err(bad(format!(
                            "attention heads: {:?} does not fit {l:?}",
                            x.dims()
                        )));
                    }
                    dims = Some((b, t));
                    cont.push(Some(x.contiguous()?));
                }
                (None, _) => {
                    return Err(bad(format!(
                        "attention heads: a section of {l:?} is missing"
                    )))
                }
            }
        }
        let Some((b, t)) = dims else {
            return Err(bad("attention heads: nothing to merge".into()));
        };
        let first = cont.iter().flatten().next().cloned().expect("one section");
        let refs = [cont[0].as_ref(), cont[1].as_ref(), cont[2].as_ref()];
        let mut out = dispatch_run(false, &first, refs, b, t, tables, l)?;
        Ok(out.pop().expect("merged"))
    }

    fn bad(msg: String) -> crate::error::Error {
        candle_core::Error::Msg(msg).into()
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch_run(
        split: bool,
        x: &Tensor,
        heads: [Option<&Tensor>; 3],
        b: usize,
        t: usize,
        tables: Tables<'_>,
        l: HeadLayout,
    ) -> R<Vec<Tensor>> {
        dispatch!(x.dtype(), run(split, x, heads, b, t, tables, l))
    }
}
