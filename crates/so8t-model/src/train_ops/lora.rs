//! `y = x Wᵀ + s · (x Aᵀ) Bᵀ` for a frozen W as one op: the composed layer records seven (two
//! transposes, three matmuls, a scale and an addition) and, in the backward pass, a zero-filled
//! gradient and an addition for each. Gradients (g = dL/dy, t = x Aᵀ, u = g B):
//! `dx = g W + s · u A`, `dA = s · uᵀ x`, `dB = s · gᵀ t`. W gets none.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::{cpu_slice, gemm, F32View, Mat};

/// `x Wᵀ + s·(x Aᵀ) Bᵀ` for `x` [n, in], A [r, in], B [out, r] and a frozen W [out, in], all f32 on
/// the CPU.
pub(crate) fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let op = LoraLinear {
        w: w.contiguous()?,
        scale: scale as f32,
    };
    x.contiguous()?
        .apply_op3(&a.contiguous()?, &b.contiguous()?, op)
}

struct LoraLinear {
    w: Tensor,
    scale: f32,
}

/// (n, in, r, out) of the op's operands, checked against each other and W.
fn dims(
    x: &[usize],
    a: &[usize],
    b: &[usize],
    w: &[usize],
) -> candle_core::Result<(usize, usize, usize, usize)> {
    match (x, a, b, w) {
        (&[n, i], &[r, ia], &[o, rb], &[ow, iw]) if i == ia && i == iw && r == rb && o == ow => {
            Ok((n, i, r, o))
        }
        _ => candle_core::bail!(
            "lora-linear: x {x:?}, A {a:?}, B {b:?}, W {w:?} do not fit [n, in], [r, in], [out, r], [out, in]"
        ),
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, i, r, o) = dims(xl.dims(), al.dims(), bl.dims(), self.w.dims())?;
        let op = self.name();
        let (x, a, b) = (
            cpu_slice(op, xs, xl)?,
            cpu_slice(op, as_, al)?,
            cpu_slice(op, bs, bl)?,
        );
        let w = F32View::of(&self.w)?;
        let mut y = vec![0f32; n * o];
        gemm(
            &mut y,
            Mat::new(x, n, i),
            Mat::new(&w, o, i).t(),
            1.0,
            false,
        );
        let mut t = vec![0f32; n * r];
        gemm(&mut t, Mat::new(x, n, i), Mat::new(a, r, i).t(), 1.0, false);
        gemm(
            &mut y,
            Mat::new(&t, n, r),
            Mat::new(b, o, r).t(),
            self.scale,
            true,
        );
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, i, r, o) = dims(x.dims(), a.dims(), b.dims(), self.w.dims())?;
        let s = self.scale;
        // The first layer's input (the embeddings) takes no gradient.
        let track_x = x.track_op();
        let (mut dx, mut da, mut db) = (
            vec![0f32; if track_x { n * i } else { 0 }],
            vec![0f32; r * i],
            vec![0f32; o * r],
        );
        let (gc, xc, ac, bc) = (
            g.contiguous()?,
            x.contiguous()?,
            a.contiguous()?,
            b.contiguous()?,
        );
        let (gv, xv, av, bv) = (
            F32View::of(&gc)?,
            F32View::of(&xc)?,
            F32View::of(&ac)?,
            F32View::of(&bc)?,
        );
        let w = F32View::of(&self.w)?;
        let (g, xm, am) = (
            Mat::new(&gv, n, o),
            Mat::new(&xv, n, i),
            Mat::new(&av, r, i),
        );
        let mut u = vec![0f32; n * r];
        gemm(&mut u, g, Mat::new(&bv, o, r), 1.0, false);
        let mut t = vec![0f32; n * r];
        gemm(&mut t, xm, am.t(), 1.0, false);
        if track_x {
            gemm(&mut dx, g, Mat::new(&w, o, i), 1.0, false);
            gemm(&mut dx, Mat::new(&u, n, r), am, s, true);
        }
        gemm(&mut da, Mat::new(&u, n, r).t(), xm, s, false);
        gemm(&mut db, g.t(), Mat::new(&t, n, r), s, false);
        let dev = x.device();
        let dx = match track_x {
            true => Some(Tensor::from_vec(dx, (n, i), dev)?),
            false => None,
        };
        Ok((
            dx,
            Some(Tensor::from_vec(da, (r, i), dev)?),
            Some(Tensor::from_vec(db, (o, r), dev)?),
        ))
    }
}
