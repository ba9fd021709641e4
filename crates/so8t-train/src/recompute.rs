//! Gradient checkpointing: the loss and gradients of one micro-batch with each decoder layer
//! recomputed in the backward pass, so only the layers' inputs are kept instead of every
//! activation of the graph.
//!
//! candle's autograd starts from a scalar, so the backward pass is a chain of vector-Jacobian
//! products (as `torch.utils.checkpoint` does it):
//!
//! 1. forward every layer on a detached input (no graph kept), storing that input;
//! 2. from a `Var` made of the last layer's output, run the top (final norm → logits → CE and
//!    PET) with tracking and backward it: the gradient of that `Var` is `g_L`;
//! 3. for each layer `l` from the top, recompute it with tracking from a `Var` of its input and
//!    backward `sum(out · g_{l+1})` (`g_{l+1}` detached): that gives `g_l` and the gradients of
//!    the layer's LoRA matrices and of its gate generator, which are added to the result;
//! 4. with full fine-tuning, backward `sum(x₀ · g₀)` into the embedding;
//! 5. backward L_orth + Σ_l sum(R_l · dR_l) through the rotations (and a learned α's pull) on
//!    its own.
//!
//! The rotations of all gated layers come from one rotation op at the start (tracked through
//! the generators). Each layer's recompute blends its rotation from a `Var` of the detached
//! value, so the layer's backward yields `dR_l` without reaching the rotation op; step 5 then
//! takes every layer's `dR_l` and L_orth through the op at once, so the rotations are computed
//! and differentiated once per micro-batch rather than once per layer (on a GPU the per-layer
//! way also drained the queue through host round trips). LoRA dropout draws the same masks in
//! the recompute: they are a function of the step's dropout seed, the layer and the element.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use so8t_model::so8::blend;
use so8t_model::Forward;

use crate::batch::Batch;
use crate::error::Result;
use crate::profile::Phases;
use crate::step::{add_grads, LossValues, Trainer};

/// The loss values of micro-batch `b` at step `t` and the gradients of `loss / n` with respect
/// to the trainer's variables, computed with per-layer recomputation. Equal (up to float
/// rounding) to `Trainer::losses` followed by `backward`.
pub(crate) fn checkpointed_grads(
    tr: &Trainer,
    b: &Batch,
    t: u64,
    n: f64,
) -> Result<(LossValues, GradStore)> {
    let model = &tr.model;
    let vars = tr.opt.vars();
    let alpha = tr.alpha(t)?;
    let fw = Forward {
        attention_mask: Some(&b.attention_mask),
        train: true,
        segments: b.segments.as_deref(),
        ..Default::default()
    };
    let mut phases = Phases::start(model.device())?;
    let prep = model.prepare(&b.input_ids, &fw)?;
    let n_layers = model.layers.len();

    // 1. Forward without a graph, keeping each layer's input.
    let rots: BTreeMap<usize, Tensor> = tr.gate_rotations()?;
    let fwd_gates = (0..n_layers)
        .map(|l| match rots.get(&l) {
            Some(r) => Ok(Some(blend(&r.detach(), &alpha)?.detach())),
            None => Ok(None),
        })
        .collect::<Result<Vec<Option<Tensor>>>>()?;
    phases.mark("rotations")?;
    let mut inputs = Vec::with_capacity(n_layers);
    let mut x = prep.x0.detach();
    for (l, gate) in fwd_gates.iter().enumerate() {
        let out = model.layer_forward(l, &x, &prep, gate.as_ref(), true)?;
        inputs.push(x);
        x = out.detach();
    }
    phases.mark("forward")?;

    // 2. The top, tracked from the last layer's output.
    let top = Var::from_tensor(&x)?;
    drop(x);
    let hidden = model.final_norm(top.as_tensor(), true)?;
    let (head, ce, pet) = tr.head_losses(&hidden, b, t)?;
    let orth = tr.orth_loss_of(&rots)?;
    let values = LossValues::of(
        &tr.add_orth(head.clone(), orth.as_ref())?,
        &ce,
        pet.as_ref(),
        orth.as_ref(),
    )?;
    let mut store = (head / n)?.backward()?;
    drop((hidden, ce, pet));
    let mut grad_out = take_grad(&mut store, &top)?;
    let mut acc = Some(store);
    phases.mark("head forward+backward")?;

    // 3. Each layer from the top: recompute with tracking, vector-Jacobian product.
    let mut rot_grads: Vec<(usize, Tensor)> = Vec::new();
    for l in (0..n_layers).rev() {
        let input = inputs.pop().expect("one input per layer");
        let xin = Var::from_tensor(&input)?;
        drop(input);
        let rot = rots
            .get(&l)
            .map(|r| Var::from_tensor(&r.detach()))
            .transpose()?;
        let gate = match &rot {
            Some(r) => Some(blend(r.as_tensor(), &alpha)?),
            None => None,
        };
        let out = model.layer_forward(l, xin.as_tensor(), &prep, gate.as_ref(), true)?;
        phases.mark("layer recompute")?;
        let mut store = (out * &grad_out)?.sum_all()?.backward()?;
        phases.mark("layer backward")?;
        grad_out = take_grad(&mut store, &xin)?;
        if let Some(r) = &rot {
            rot_grads.push((l, take_grad(&mut store, r)?));
        }
        add_grads(&mut acc, store, vars)?;
        phases.mark("gradient sums")?;
    }
    // With full fine-tuning the embedding is a variable: its gradient is the first layer's
    // input gradient scattered back through the lookup.
    if prep.x0.track_op() {
        let store = (&prep.x0 * &grad_out)?.sum_all()?.backward()?;
        add_grads(&mut acc, store, vars)?;
    }

    // 5. The rotations' gradients and L_orth, through the rotation op once; the learned α's pull.
    let mut tail = orth.map(|o| o / n).transpose()?;
    for (l, d) in rot_grads {
        let part = (&rots[&l] * d)?.sum_all()?;
        tail = Some(match tail {
            Some(t) => (t + part)?,
            None => part,
        });
    }
    if let Some(tl) = tail {
        add_grads(&mut acc, tl.backward()?, vars)?;
    }
    phases.mark("rotations backward + L_orth")?;
    if let Some(p) = tr.pull_loss()? {
        add_grads(&mut acc, (p / n)?.backward()?, vars)?;
    }
    phases.log("checkpointed micro-batch");
    Ok((values, acc.expect("the top's gradients")))
}

/// Removes and returns the gradient of `v` from `store` (zeros if the loss does not depend on it).
fn take_grad(store: &mut GradStore, v: &Var) -> Result<Tensor> {
    match store.remove(v.as_tensor()) {
        Some(g) => Ok(g),
        None => Ok(v.as_tensor().zeros_like()?),
    }
}
