//! The training-only custom ops give the values and gradients of the plain candle ops they
//! replace: the frozen-weight matmul (gradients to x and to LoRA A/B, none to W), the fused
//! cross-entropy, and the attention softmax (through a whole tiny model).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use so8t_model::loss::shifted_cross_entropy;
use so8t_model::so8::GateMatrices;
use so8t_model::{Forward, Linear, LoraAdapter, Model, Qkv, Result, Up};

use common::{fixture, tensor_max_diff};

fn random(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.gen_range(-scale..scale)).collect()
}

fn t(n: usize, shape: &[usize], scale: f32, seed: u64) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        random(n, scale, seed),
        shape,
        &Device::Cpu,
    )?)
}

/// Σ c ⊙ y for a fixed c (every output has its own weight in the loss).
fn weighted_sum(y: &Tensor) -> Result<Tensor> {
    let c = Tensor::arange(0u32, y.elem_count() as u32, y.device())?
        .to_dtype(y.dtype())?
        .affine(0.01, -0.3)?
        .cos()?
        .reshape(y.shape())?;
    Ok((y * c)?.sum_all()?)
}

fn assert_close(what: &str, g1: &Tensor, g2: &Tensor, tol: f32) -> Result<()> {
    let d = tensor_max_diff(g1, g2);
    let m = g1.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    assert!(
        m > 0.0 && d < tol * m.max(1.0),
        "{what}: max |Δ| = {d:e} of {m}"
    );
    Ok(())
}

#[test]
fn frozen_matmul_gradients_equal_the_plain_matmul_ones() -> Result<()> {
    let (out, inp, r) = (40, 96, 4);
    let w = t(out * inp, &[out, inp], 0.3, 3)?;
    let a = Var::from_tensor(&t(r * inp, &[r, inp], 0.1, 4)?)?;
    let b = Var::from_tensor(&t(out * r, &[out, r], 0.1, 5)?)?;
    let x = Var::from_tensor(&t(2 * 3 * inp, &[2, 3, inp], 1.0, 6)?)?;
    let lin = Linear {
        name: "l".into(),
        weight: w.clone().into(),
        bias: Some(t(out, &[out], 0.1, 7)?),
        lora: Some(LoraAdapter {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: 2.0,
            dropout: 0.0,
        }),
    };
    // train = true takes the custom op; train = false the plain `x.matmul(&w.t())`.
    let y_op = lin.forward(x.as_tensor(), true)?;
    let y_plain = lin.forward(x.as_tensor(), false)?;
    assert!(tensor_max_diff(&y_op, &y_plain) < 1e-6);
    let g_op = weighted_sum(&y_op)?.backward()?;
    let g_plain = weighted_sum(&y_plain)?.backward()?;
    for (what, v) in [("x", &x), ("A", &a), ("B", &b)] {
        let g1 = g_plain.get(v).expect("plain gradient");
        let g2 = g_op.get(v).expect("custom-op gradient");
        assert_close(what, g1, g2, 1e-5)?;
    }
    // The frozen weight gets no gradient from the op (the plain matmul computes one for Wᵀ).
    assert!(g_op.get(&w).is_none());

    Ok(())
}

#[test]
fn fused_cross_entropy_equals_the_composed_one() -> Result<()> {
    let (b, tt, v) = (2, 7, 50);
    let dev = Device::Cpu;
    let logits = t(b * tt * v, &[b, tt, v], 4.0, 9)?;
    let ids: Vec<u32> = (0..b * tt).map(|i| (i * 13 % v) as u32).collect();
    let ids = Tensor::from_vec(ids, (b, tt), &dev)?;
    let labels = Tensor::new(&[[0u32, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 0, 1, 1]], &dev)?;
    let attn = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]], &dev)?;
    // f32 logits take the fused op, f64 ones the composed ops.
    let l32 = Var::from_tensor(&logits)?;
    let l64 = Var::from_tensor(&logits.to_dtype(DType::F64)?)?;
    let c32 = shifted_cross_entropy(l32.as_tensor(), &ids, &labels, &attn)?;
    let c64 = shifted_cross_entropy(l64.as_tensor(), &ids, &labels, &attn)?;
    let (v32, v64) = (c32.to_scalar::<f32>()?, c64.to_scalar::<f64>()?);
    assert!(
        (f64::from(v32) - v64).abs() < 1e-5 * v64.abs().max(1.0),
        "{v32} vs {v64}"
    );
    let g32 = c32.backward()?.get(&l32).unwrap().clone();
    let g64 = (c64 * 1.0)?
        .backward()?
        .get(&l64)
        .unwrap()
        .to_dtype(DType::F32)?;
    assert_close("d CE / d logits", &g64, &g32, 1e-5)?;
    Ok(())
}

/// The loss and the gradients of every LoRA A/B of the first layer (all seven projections) and of
/// every layer's gate matrices, for a whole tiny f32 model trained on a row (plain and packed):
/// the CPU training ops (LoRA linear, SwiGLU, gate rotation, RoPE, softmax, RMSNorm, frozen
/// matmuls, the fused CE) against the same model in f64, where the composed candle ops run.
#[test]
fn tiny_model_gradients_in_f32_equal_the_f64_ones() -> Result<()> {
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[1u32, 17, 200, 45, 3, 99, 128, 7, 64, 250]], &dev)?;
    let ones = Tensor::ones((1, 10), DType::U32, &dev)?;
    let llama = fixture("llama-gqa-tiny");
    for segments in [None, Some(vec![vec![6, 4]])] {
        check_tiny(&llama, &ids, &ones, segments.as_deref(), F32_VS_F64)?;
    }
    // Two rows, the second padded at its end; and Phi-3 (fused qkv and gate_up) with a partial
    // rotary embedding (half of each head rotates).
    let ids2 = Tensor::new(&[[1u32, 17, 200, 45, 3, 99], [5, 6, 7, 8, 0, 0]], &dev)?;
    let pad = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &dev)?;
    check_tiny(&llama, &ids2, &pad, None, F32_VS_F64)?;
    let phi3 = phi3_partial_rotary();
    check_tiny(phi3.path(), &ids, &ones, None, F32_VS_F64)?;
    check_tiny(phi3.path(), &ids2, &pad, None, F32_VS_F64)
}

/// The CPU's f32 training ops against the composed graph in f64.
const F32_VS_F64: [(DType, bool); 2] = [(DType::F32, false), (DType::F64, false)];

/// The same model checks in f64 with the composite ops (the GPU's LoRA linear and attention
/// nodes, `so8t_model::composite`) against the composed graph.
#[test]
fn tiny_model_gradients_through_the_composite_ops_equal_the_composed_ones() -> Result<()> {
    let dev = Device::Cpu;
    let runs = [(DType::F64, true), (DType::F64, false)];
    let ids = Tensor::new(&[[1u32, 17, 200, 45, 3, 99, 128, 7, 64, 250]], &dev)?;
    let ones = Tensor::ones((1, 10), DType::U32, &dev)?;
    let llama = fixture("llama-gqa-tiny");
    for segments in [None, Some(vec![vec![6, 4]])] {
        check_tiny(&llama, &ids, &ones, segments.as_deref(), runs)?;
    }
    let ids2 = Tensor::new(&[[1u32, 17, 200, 45, 3, 99], [5, 6, 7, 8, 0, 0]], &dev)?;
    let pad = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &dev)?;
    check_tiny(&llama, &ids2, &pad, None, runs)?;
    let phi3 = phi3_partial_rotary();
    check_tiny(phi3.path(), &ids, &ones, Some(&[vec![3, 7]]), runs)?;
    check_tiny(phi3.path(), &ids2, &pad, None, runs)
}

/// The Phi-3 fixture (fused qkv and gate_up) with a partial rotary embedding (half of each head
/// rotates), in a temporary directory.
fn phi3_partial_rotary() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in std::fs::read_dir(fixture("phi3-tiny")).expect("fixture") {
        let f = f.expect("fixture entry");
        std::fs::copy(f.path(), dir.path().join(f.file_name())).expect("copy");
    }
    let cfg = dir.path().join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).expect("config")).expect("json");
    c["partial_rotary_factor"] = 0.5.into();
    std::fs::write(&cfg, c.to_string()).expect("write config");
    dir
}

/// A LoRA adapter of rank 4 with random A and B (as `Var`s) on `lin`, in `dt`.
fn add_lora(lin: &mut Linear, dt: DType, seed: u64) -> Result<[Var; 2]> {
    let (out, inp) = (lin.out_features(), lin.in_features());
    let a = Var::from_tensor(&t(4 * inp, &[4, inp], 0.2, seed)?.to_dtype(dt)?)?;
    let b = Var::from_tensor(&t(out * 4, &[out, 4], 0.2, seed + 1)?.to_dtype(dt)?)?;
    lin.lora = Some(LoraAdapter {
        a: a.as_tensor().clone(),
        b: b.as_tensor().clone(),
        scale: 2.0,
        dropout: 0.0,
    });
    Ok([a, b])
}

fn check_tiny(
    dir: &std::path::Path,
    ids: &Tensor,
    attn: &Tensor,
    segments: Option<&[Vec<usize>]>,
    runs: [(DType, bool); 2],
) -> Result<()> {
    let dev = Device::Cpu;
    let mut losses = Vec::new();
    let mut grads: Vec<Vec<Tensor>> = Vec::new();
    for (dt, composite) in runs {
        so8t_model::composite::set_on_cpu(composite);
        let mut model = Model::load(dir, dt, &dev)?;
        let mut vars = Vec::new();
        let layer = &mut model.layers[0];
        let mut lins: Vec<&mut Linear> = match &mut layer.self_attn.qkv {
            Qkv::Separate(q, k, v) => vec![q, k, v],
            Qkv::Fused(l) => vec![l],
        };
        match &mut layer.mlp.up {
            Up::Separate(g, u) => lins.extend([g, u]),
            Up::Fused(l) => lins.push(l),
        }
        for (i, lin) in lins.into_iter().enumerate() {
            vars.extend(add_lora(lin, dt, 10 + 2 * i as u64)?);
        }
        vars.extend(add_lora(&mut layer.self_attn.o_proj, dt, 30)?);
        vars.extend(add_lora(&mut layer.mlp.down_proj, dt, 32)?);
        let width = model.layers[0].self_attn.o_proj.in_features();
        let eye = Tensor::eye(8, dt, &dev)?.broadcast_as((width / 8, 8, 8))?;
        let mut gates = Vec::new();
        for l in 0..model.layers.len() {
            let n = width / 8 * 64;
            let noise = t(n, &[width / 8, 8, 8], 0.1, 40 + l as u64)?.to_dtype(dt)?;
            let m = Var::from_tensor(&(&eye + noise)?)?;
            gates.push(Some(m.as_tensor().clone()));
            vars.push(m);
        }
        let gates = GateMatrices { layers: gates };
        let logits = model.forward(
            ids,
            Forward {
                train: true,
                segments,
                gates: Some(&gates),
                attention_mask: Some(attn),
                ..Default::default()
            },
        )?;
        let ce = shifted_cross_entropy(&logits, ids, attn, attn)?;
        losses.push(ce.to_dtype(DType::F64)?.to_scalar::<f64>()?);
        let g = ce.backward()?;
        let mut gs = Vec::new();
        for v in &vars {
            gs.push(
                g.get(v)
                    .expect("a gradient for every variable")
                    .to_dtype(DType::F32)?,
            );
        }
        grads.push(gs);
    }
    so8t_model::composite::set_on_cpu(false);
    // f32 against f64, or two f64 paths (rounding only).
    let (tol_loss, tol) = if runs[0].0 == DType::F64 {
        (1e-12, 1e-6)
    } else {
        (1e-5, 1e-4)
    };
    assert!(
        (losses[0] - losses[1]).abs() < tol_loss,
        "{segments:?}: {losses:?}"
    );
    for (i, (g64, g32)) in grads[1].iter().zip(&grads[0]).enumerate() {
        assert_close(&format!("variable {i}"), g64, g32, tol)?;
    }
    Ok(())
}
