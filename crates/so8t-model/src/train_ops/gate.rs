//! The SO(8) gate's block rotation `out_b = M_b z_b` (every 8-wide block b of each row of z) as
//! one op. The composed form ([`crate::so8::apply_blocks`]) copies z into [blocks, rows, 8], runs a
//! batched 8×8 matmul and copies back, and records each of those steps. Backward (g = dL/dout):
//! `dz_b = M_bᵀ g_b` per row, `dM_b = Σ_rows g_b z_bᵀ`.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, F32View};

/// Rows per parallel task.
const ROWS: usize = 16;

/// `z` [.., nb·8] rotated block-wise by `m` [nb, 8, 8] (f32 CPU tensors).
pub(crate) fn apply_blocks_cpu(z: &Tensor, m: &Tensor) -> candle_core::Result<Tensor> {
    z.contiguous()?.apply_op2(&m.contiguous()?, BlockRotate)
}

struct BlockRotate;

/// out_b = M_b z_b (or M_bᵀ z_b) for every 8-wide block of whole rows in `z`.
fn rotate_rows(out: &mut [f32], z: &[f32], m: &[f32], transpose: bool) {
    let nb = m.len() / 64;
    for (k, (o8, z8)) in out.chunks_exact_mut(8).zip(z.chunks_exact(8)).enumerate() {
        let mb = &m[(k % nb) * 64..][..64];
        for (i, o) in o8.iter_mut().enumerate() {
            *o = (0..8)
                .map(|j| if transpose { mb[j * 8 + i] } else { mb[i * 8 + j] } * z8[j])
                .sum();
        }
    }
}

impl CustomOp2 for BlockRotate {
    fn name(&self) -> &'static str {
        "so8-block-rotate"
    }

    fn cpu_fwd(
        &self,
        zs: &CpuStorage,
        zl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = zl.dims().last().copied().unwrap_or(0);
        let nb = match ml.dims() {
            &[nb, 8, 8] if nb * 8 == d => nb,
            md => candle_core::bail!("so8-block-rotate: gate {md:?} does not fit rows of {d}"),
        };
        let (z, m) = (
            cpu_slice(self.name(), zs, zl)?,
            cpu_slice(self.name(), ms, ml)?,
        );
        let mut out = vec![0f32; z.len()];
        if nb > 0 {
            out.par_chunks_mut(ROWS * d)
                .zip(z.par_chunks(ROWS * d))
                .for_each(|(o, z)| rotate_rows(o, z, m, false));
        }
        Ok((CpuStorage::F32(out), zl.shape().clone()))
    }

    fn bwd(
        &self,
        z: &Tensor,
        m: &Tensor,
        _out: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let nb = m.dim(0)?;
        let d = nb * 8;
        let mut dz = vec![0f32; z.elem_count()];
        let mut dm = vec![0f32; nb * 64];
        if nb > 0 {
            let (gc, zc, mc) = (g.contiguous()?, z.contiguous()?, m.contiguous()?);
            let (g, z, m) = (F32View::of(&gc)?, F32View::of(&zc)?, F32View::of(&mc)?);
            dz.par_chunks_mut(ROWS * d)
                .zip(g.par_chunks(ROWS * d))
                .for_each(|(dz, g)| rotate_rows(dz, g, &m, true));
            dm.par_chunks_mut(64).enumerate().for_each(|(b, dmb)| {
                for (g_row, z_row) in g.chunks_exact(d).zip(z.chunks_exact(d)) {
                    let (g8, z8) = (&g_row[b * 8..b * 8 + 8], &z_row[b * 8..b * 8 + 8]);
                    for i in 0..8 {
                        for j in 0..8 {
                            dmb[i * 8 + j] += g8[i] * z8[j];
                        }
                    }
                }
            });
        }
        Ok((
            Some(Tensor::from_vec(dz, z.shape(), z.device())?),
            Some(Tensor::from_vec(dm, m.shape(), m.device())?),
        ))
    }
}
