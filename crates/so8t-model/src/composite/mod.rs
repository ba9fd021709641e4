//! Composite training ops: a chain of tensor ops that autograd sees as **one** node. The forward
//! value is computed from detached inputs (no graph recorded), then attached to the inputs by a
//! custom op whose backward pass is written by hand from tensor ops on detached tensors.
//!
//! Why: candle's backward pass accumulates every recorded op's input gradients as a zero-filled
//! tensor plus an addition. Through one layer's attention and LoRA linears that is dozens of
//! activation-sized (and, for the attention scores, `[B, heads, T, T]`-sized) fills and additions,
//! which on a GPU cost more than the matrix products (a third of the kernel time of a
//! checkpointed step on an H100). A composite node gets one gradient per input instead, and its
//! backward pass keeps only what it needs (the attention recomputes its probabilities).
//!
//! The ops here run on any device and dtype (the tests check them on the CPU in f64 against the
//! composed graph's gradients); the model takes them on CUDA when training (see [`applies`]),
//! where the CPU's f32 path has its own single ops (`train_ops`).

use std::cell::Cell;
use std::sync::Mutex;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor};

use crate::error::Result;

mod attention;
mod lora;

pub use attention::{attention, attention_composed, Heads};
pub(crate) use lora::lora_linear;

thread_local! {
    static ON_CPU: Cell<bool> = const { Cell::new(false) };
}

/// Lets the model's forward passes on this thread take the composite ops on the CPU too (tests
/// and comparisons; the default is CUDA only, since the CPU's f32 training has its own ops,
/// which still come first).
pub fn set_on_cpu(on: bool) {
    ON_CPU.with(|c| c.set(on));
}

/// True where the model's training forward takes the composite ops for `x`: on CUDA unless
/// `SO8T_FUSED=0`, or on the CPU after [`set_on_cpu`] on this thread.
pub(crate) fn applies(x: &Tensor) -> bool {
    (x.device().is_cuda() && crate::fused::enabled())
        || (x.device().is_cpu() && ON_CPU.with(Cell::get))
}

/// The hand-written backward pass of a composite op.
pub(crate) trait Backward: Send + Sync + 'static {
    /// The op's name (in errors).
    fn name(&self) -> &'static str;

    /// The gradients of the op's inputs (detached; `needs[i]` says whether input `i` wants one)
    /// from its (detached) `output` and the gradient `grad` of the output.
    fn backward(
        &self,
        inputs: &[Tensor],
        needs: &[bool],
        output: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Vec<Option<Tensor>>>;
}

/// `value` (computed from `x` without a graph) as the output of a node on `x` whose backward pass
/// is `bwd`. Returns `value` itself when `x` takes no part in autograd.
pub(crate) fn attach1<B: Backward>(x: &Tensor, value: Tensor, bwd: B) -> Result<Tensor> {
    if !x.track_op() {
        return Ok(value);
    }
    Ok(x.apply_op1(Attached::new(value, bwd))?)
}

/// [`attach1`] for an op of three inputs.
pub(crate) fn attach3<B: Backward>(x: [&Tensor; 3], value: Tensor, bwd: B) -> Result<Tensor> {
    if !x.iter().any(|t| t.track_op()) {
        return Ok(value);
    }
    Ok(x[0].apply_op3(x[1], x[2], Attached::new(value, bwd))?)
}

/// The node of a composite op: its forward pass copies the precomputed value, which it then
/// lets go (the node lives as long as the graph; holding the value too would keep every
/// composite output twice).
struct Attached<B> {
    value: Mutex<Option<Tensor>>,
    bwd: B,
}

/// A fresh copy of the elements of `s` under `l` (contiguous).
fn copy_of<S>(s: &S, l: &Layout) -> candle_core::Result<S>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    // SAFETY: every element of the new storage is written by the copy below.
    let mut out = unsafe { s.device().alloc_uninit(l.shape(), s.dtype())? };
    s.copy_strided_src(&mut out, 0, l)?;
    Ok(out)
}

impl<B: Backward> Attached<B> {
    fn new(value: Tensor, bwd: B) -> Self {
        Attached {
            value: Mutex::new(Some(value)),
            bwd,
        }
    }

    /// The precomputed value, taken out (a node's forward pass runs once).
    fn take_value(&self) -> candle_core::Result<Tensor> {
        let mut v = self
            .value
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{}: lock poisoned", self.bwd.name())))?;
        v.take().ok_or_else(|| {
            candle_core::Error::Msg(format!("{}: the forward pass ran twice", self.bwd.name()))
        })
    }

    fn cpu_value(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        let value = self.take_value()?;
        let (s, l) = value.storage_and_layout();
        match &*s {
            Storage::Cpu(c) => Ok((copy_of(c, l)?, l.shape().clone())),
            _ => candle_core::bail!("{}: value is not on the CPU", self.bwd.name()),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_value(&self) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let value = self.take_value()?;
        let (s, l) = value.storage_and_layout();
        match &*s {
            Storage::Cuda(c) => Ok((copy_of(c, l)?, l.shape().clone())),
            _ => candle_core::bail!("{}: value is not on CUDA", self.bwd.name()),
        }
    }

    fn grads(
        &self,
        args: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Vec<Option<Tensor>>> {
        let inputs: Vec<Tensor> = args.iter().map(|t| t.detach()).collect();
        let needs: Vec<bool> = args.iter().map(|t| t.track_op()).collect();
        let g = self
            .bwd
            .backward(&inputs, &needs, &output.detach(), &grad.detach())?;
        if g.len() != args.len() {
            candle_core::bail!(
                "{}: {} gradients for {} inputs",
                self.bwd.name(),
                g.len(),
                args.len()
            )
        }
        Ok(g)
    }
}

impl<B: Backward> CustomOp1 for Attached<B> {
    fn name(&self) -> &'static str {
        self.bwd.name()
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_value()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.cuda_value()
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(self.grads(&[x], y, grad)?.pop().flatten())
    }
}

impl<B: Backward> CustomOp3 for Attached<B> {
    fn name(&self) -> &'static str {
        self.bwd.name()
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_value()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.cuda_value()
    }

    #[allow(clippy::type_complexity)]
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(&[a, b, c], y, grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten(), g.next().flatten()))
    }
}
