//! A linear layer `y = x Wᵀ + b` with an optional LoRA adapter `+ s · (dropout(x) Aᵀ) Bᵀ`.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// A LoRA adapter on one linear layer (PEFT convention: A [r, in], B [out, r]).
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// Down projection [r, in] (a `Var` while training).
    pub a: Tensor,
    /// Up projection [out, r] (a `Var` while training; zeros at init).
    pub b: Tensor,
    /// `lora_alpha / r` (or `/ sqrt(r)` with rsLoRA).
    pub scale: f64,
    /// Dropout probability on the adapter's input while training.
    pub dropout: f32,
}

/// A linear projection of the model, named by its HF path (e.g. `model.layers.0.self_attn.o_proj`).
#[derive(Debug, Clone)]
pub struct Linear {
    /// HF module path without `.weight`.
    pub name: String,
    /// Weight [out, in].
    pub weight: Tensor,
    /// Optional bias [out].
    pub bias: Option<Tensor>,
    /// Optional LoRA adapter.
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Applies the layer to `x` [.., in]. `train` enables LoRA dropout.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inp = *dims.last().unwrap_or(&0);
        let n = x.elem_count() / inp.max(1);
        let x2 = x.reshape((n, inp))?;
        // The decode kernel declines inputs that take part in autograd.
        let mut y = match crate::matvec::matvec(&x2, &self.weight)? {
            Some(y) => y,
            None => x2.matmul(&self.weight.t()?)?,
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let xin = if train && l.dropout > 0.0 {
                candle_nn::ops::dropout(&x2, l.dropout)?
            } else {
                x2.clone()
            };
            let dt = l.a.dtype();
            let h = xin.to_dtype(dt)?.matmul(&l.a.t()?)?.matmul(&l.b.t()?)?;
            let dt_y = y.dtype();
            y = (y + (h * l.scale)?.to_dtype(dt_y)?)?;
        }
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.out_features();
        }
        Ok(y.reshape(out)?)
    }

    /// W + s·B·A computed in f32, cast back to the weight's dtype.
    pub fn merged_weight(&self) -> Result<Tensor> {
        let Some(l) = &self.lora else {
            return Ok(self.weight.clone());
        };
        let w = self.weight.to_dtype(DType::F32)?;
        let delta =
            (l.b.to_dtype(DType::F32)?
                .matmul(&l.a.to_dtype(DType::F32)?)?
                * l.scale)?;
        Ok((w + delta)?.to_dtype(self.weight.dtype())?)
    }
}
