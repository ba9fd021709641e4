//! `h = silu(g) · u` as one op with its backward pass (σ = sigmoid(g)):
//! `dg = dh · u · σ · (1 + g · (1 − σ))`, `du = dh · g · σ`. The composed form records `silu`
//! and a product and, backward, the sigmoid's chain of element-wise ops.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, multiversion, sigmoid, F32View};

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// `silu(g) · u` for f32 CPU tensors of one shape.
pub(crate) fn swiglu_cpu(g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
    g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu)
}

struct SwiGlu;

multiversion! {
    /// h = silu(g)·u over one chunk.
    fn forward_chunk(h: &mut [f32], g: &[f32], u: &[f32]) {
        for ((h, &g), &u) in h.iter_mut().zip(g).zip(u) {
            *h = g * sigmoid(g) * u;
        }
    }
}

multiversion! {
    /// dg and du over one chunk.
    fn backward_chunk(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32]) {
        for ((((dg, du), &dh), &g), &u) in dg.iter_mut().zip(du.iter_mut()).zip(dh).zip(g).zip(u) {
            let s = sigmoid(g);
            *dg = dh * u * s * (1.0 + g * (1.0 - s));
            *du = dh * g * s;
        }
    }
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if gl.dims() != ul.dims() {
            candle_core::bail!("swiglu: gate is {:?}, up is {:?}", gl.dims(), ul.dims())
        }
        let (g, u) = (
            cpu_slice(self.name(), gs, gl)?,
            cpu_slice(self.name(), us, ul)?,
        );
        let mut h = vec![0f32; g.len()];
        h.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(h, (g, u))| forward_chunk(h, g, u));
        Ok((CpuStorage::F32(h), gl.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _h: &Tensor,
        dh: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = g.elem_count();
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        let (dhc, gc, uc) = (dh.contiguous()?, g.contiguous()?, u.contiguous()?);
        let (dhv, gv, uv) = (F32View::of(&dhc)?, F32View::of(&gc)?, F32View::of(&uc)?);
        dg.par_chunks_mut(CHUNK)
            .zip(du.par_chunks_mut(CHUNK))
            .zip(dhv.par_chunks(CHUNK))
            .zip(gv.par_chunks(CHUNK).zip(uv.par_chunks(CHUNK)))
            .for_each(|(((dg, du), dh), (g, u))| backward_chunk(dg, du, dh, g, u));
        Ok((
            Some(Tensor::from_vec(dg, g.shape(), g.device())?),
            Some(Tensor::from_vec(du, u.shape(), u.device())?),
        ))
    }
}
