//! A LoRA linear layer over a frozen weight as one autograd node:
//! `y = x Wᵀ + (s·x Aᵀ) Bᵀ` for x [n, in], W [out, in], A [r, in], B [out, r]. Backward, with
//! `u = s·(dy B)` [n, r]: `dx = dy W + u A`, `dA = uᵀ x`, `dB = dyᵀ (s·x Aᵀ)`; the narrow
//! `s·x Aᵀ` is the only value kept from the forward pass, and W gets no gradient.

use candle_core::Tensor;

use super::{attach3, Backward};
use crate::error::Result;

/// `x Wᵀ + s·(x Aᵀ) Bᵀ` (all of one dtype and device; W frozen).
pub(crate) fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (xd, ad, bd) = (x.detach(), a.detach(), b.detach());
    let xa = (xd.matmul(&ad.t()?)? * scale)?;
    let y = (xd.matmul(&w.t()?)? + xa.matmul(&bd.t()?)?)?;
    let op = LoraOp {
        w: w.detach(),
        scale,
        xa,
    };
    attach3([x, a, b], y, op)
}

struct LoraOp {
    w: Tensor,
    scale: f64,
    /// `s·x Aᵀ` [n, r] from the forward pass.
    xa: Tensor,
}

impl Backward for LoraOp {
    fn name(&self) -> &'static str {
        "composite-lora-linear"
    }

    fn backward(
        &self,
        inputs: &[Tensor],
        needs: &[bool],
        _output: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<Vec<Option<Tensor>>> {
        let (x, a, b) = (&inputs[0], &inputs[1], &inputs[2]);
        let u = (dy.matmul(b)? * self.scale)?;
        let dx = if needs[0] {
            Some((dy.matmul(&self.w)? + u.matmul(a)?)?)
        } else {
            None
        };
        let da = if needs[1] {
            Some(u.t()?.matmul(x)?)
        } else {
            None
        };
        let db = if needs[2] {
            Some(dy.t()?.matmul(&self.xa)?)
        } else {
            None
        };
        Ok(vec![dx, da, db])
    }
}
