//! The 8-bit frozen base: Q8_0 follows llama.cpp's rule byte for byte, the quantized fixtures'
//! logits stay close to the dense ones, and gradients through a quantized linear (to the input
//! and to LoRA) equal those of the dense layer holding the dequantized weight.

mod common;

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor, Var};
use half::f16;
use rand::{Rng, SeedableRng};
use so8t_model::quant::{quantize_base, Q8_0_BLOCK};
use so8t_model::{Forward, Linear, LinearWeight, LoraAdapter, Model, Result};

use common::{fixture, FIXTURES};

/// llama.cpp's `quantize_row_q8_0_ref`, written out: per block of 32, d = amax/127,
/// id = 1/d (0 when d = 0), stored as f16 d (little endian) then 32 × i8 round(x·id).
fn reference_q8_0(xs: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in xs.chunks(Q8_0_BLOCK) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    out
}

fn random(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

#[test]
fn q8_0_matches_llama_cpp_byte_for_byte() -> Result<()> {
    let (rows, cols) = (6, 96);
    let mut w = random(rows * cols, 0.2, 1);
    w[..cols].fill(0.0); // an all-zero row: d = 0, q = 0
    w[cols] = 3.0; // one large outlier in a block
    let t = Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu)?;
    let q = QTensor::quantize(&t, GgmlDType::Q8_0)?;
    let bytes = q.data()?;
    assert_eq!(bytes.len(), rows * cols / 32 * 34);
    assert_eq!(&*bytes, reference_q8_0(&w).as_slice());
    Ok(())
}

#[test]
fn q8_0_known_values() -> Result<()> {
    // x_j = j − 16: amax 16, d = 16/127, q_j = round((j − 16) · 127/16).
    let w: Vec<f32> = (0..32).map(|j| j as f32 - 16.0).collect();
    let t = Tensor::from_vec(w, (1, 32), &Device::Cpu)?;
    let q = QTensor::quantize(&t, GgmlDType::Q8_0)?;
    let bytes = q.data()?;
    let d = f16::from_le_bytes([bytes[0], bytes[1]]);
    assert_eq!(d, f16::from_f32(16.0 / 127.0));
    let qs: Vec<i8> = bytes[2..].iter().map(|&b| b as i8).collect();
    assert_eq!(qs[0], -127); // x = −16
    assert_eq!(qs[16], 0); // x = 0
    assert_eq!(qs[17], 8); // 7.9375 → 8
    assert_eq!(qs[31], 119); // 15 · 127/16 = 119.0625 → 119
    let back = q
        .dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(back[17], 8.0 * d.to_f32());
    assert_eq!(back[0], -127.0 * d.to_f32());
    Ok(())
}

#[test]
fn dequantize_is_within_half_a_step() -> Result<()> {
    let w = random(64 * 256, 1.0, 2);
    let t = Tensor::from_vec(w.clone(), (64, 256), &Device::Cpu)?;
    let back = QTensor::quantize(&t, GgmlDType::Q8_0)?
        .dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut worst = 0f32;
    for (block, deq) in w.chunks(32).zip(back.chunks(32)) {
        let d = block.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
        // Rounding costs at most d/2; storing d in f16 adds |q|·|d − d16| ≤ 127·|d − d16|.
        let d16 = f16::from_f32(d).to_f32();
        let bound = d / 2.0 + 127.0 * (d - d16).abs() + 1e-7;
        for (x, y) in block.iter().zip(deq) {
            let e = (x - y).abs();
            assert!(e <= bound, "|{x} − {y}| = {e} > {bound} (d = {d})");
            worst = worst.max(e / d);
        }
    }
    assert!(
        worst > 0.4 && worst <= 0.5 + 127.0 / 2048.0,
        "worst error {worst}·d"
    );
    Ok(())
}

fn logits(model: &Model, ids: &[u32]) -> Result<Tensor> {
    let ids = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    model.forward(&ids, Forward::default())
}

#[test]
fn quantized_fixtures_give_close_logits() -> Result<()> {
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 256).collect();
    for name in FIXTURES {
        let mut model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
        let dense = logits(&model, &ids)?;
        let before = model.named_tensors()?;
        let st = quantize_base(&mut model)?;
        assert_eq!(st.quantized, model.linears().len(), "{name}");
        assert!(st.kept_dense.is_empty(), "{name}: {:?}", st.kept_dense);
        assert_eq!(st.bytes_after * 128, st.bytes_before * 34, "{name}");
        assert!(model.linears().iter().all(|l| l.weight.is_quantized()));
        let quant = logits(&model, &ids)?;
        let diff = common::tensor_max_diff(&dense, &quant);
        let spread = dense.abs()?.max_all()?.to_scalar::<f32>()?;
        println!("{name}: max |Δlogits| = {diff:e} (max |logit| {spread})");
        // Q8_0 of these random weights moves the logits by 2–3.5 % of their largest magnitude
        // (about 0.4 % rms error per weight, through two layers); Q4_0 moves them by ~30 %
        // (checked below), a wrong scale or block layout by the logits' own size.
        assert!(
            diff > 0.0 && diff < 0.05 * spread,
            "{name}: max |Δlogits| = {diff:e} of {spread}"
        );
        // A second pass is a no-op; named_tensors dequantizes (same names, dtypes and shapes).
        assert_eq!(quantize_base(&mut model)?.bytes_before, st.bytes_after);
        let after = model.named_tensors()?;
        assert_eq!(before.len(), after.len());
        for ((n1, t1), (n2, t2)) in before.iter().zip(&after) {
            assert_eq!((n1, t1.dims(), t1.dtype()), (n2, t2.dims(), t2.dtype()));
            let d = common::tensor_max_diff(t1, t2);
            let amax = t1.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d <= amax / 127.0 * 0.57, "{n1}: {d}");
        }
    }
    Ok(())
}

#[test]
fn a_coarser_quantizer_fails_the_logit_tolerance() -> Result<()> {
    // The control for the tolerance above: the same model with Q4_0 weights is far off.
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 256).collect();
    let mut model = Model::load(&fixture("phi3-tiny"), DType::F32, &Device::Cpu)?;
    let dense = logits(&model, &ids)?;
    for lin in model.linears_mut() {
        let w = lin.weight.to_dense()?;
        let q4 = QTensor::quantize(&w, GgmlDType::Q4_0)?.dequantize(&Device::Cpu)?;
        lin.weight = q4.into();
    }
    let diff = common::tensor_max_diff(&dense, &logits(&model, &ids)?);
    let spread = dense.abs()?.max_all()?.to_scalar::<f32>()?;
    println!("phi3-tiny Q4_0: max |Δlogits| = {diff:e} (max |logit| {spread})");
    assert!(diff > 0.05 * spread, "{diff:e}");
    Ok(())
}

#[test]
fn narrow_inputs_stay_dense() -> Result<()> {
    let mut model = Model::load(&fixture("phi3-tiny"), DType::F32, &Device::Cpu)?;
    let mut lins = model.linears_mut();
    lins[0].weight = Tensor::zeros((8, 40), DType::F32, &Device::Cpu)?.into();
    let name = lins[0].name.clone();
    let st = quantize_base(&mut model)?;
    assert_eq!(st.kept_dense, vec![name]);
    assert_eq!(st.quantized, model.linears().len() - 1);
    assert!(!model.linears()[0].weight.is_quantized());
    Ok(())
}

/// A [96 → 40] layer with a LoRA adapter (nonzero B) on `dtype`, dense or Q8_0 with the same
/// (dequantized) weight; the LoRA matrices and the input are `Var`s.
fn pair(dtype: DType) -> Result<(Linear, Linear, Var, Var, Var)> {
    let dev = Device::Cpu;
    let w = Tensor::from_vec(random(40 * 96, 0.3, 3), (40, 96), &dev)?;
    let q = Arc::new(QTensor::quantize(&w, GgmlDType::Q8_0)?);
    let wd = q.dequantize(&dev)?.to_dtype(dtype)?;
    let a = Var::from_tensor(
        &Tensor::from_vec(random(4 * 96, 0.1, 4), (4, 96), &dev)?.to_dtype(dtype)?,
    )?;
    let b = Var::from_tensor(
        &Tensor::from_vec(random(40 * 4, 0.1, 5), (40, 4), &dev)?.to_dtype(dtype)?,
    )?;
    let x = Var::from_tensor(
        &Tensor::from_vec(random(2 * 3 * 96, 1.0, 6), (2, 3, 96), &dev)?.to_dtype(dtype)?,
    )?;
    let bias = Tensor::from_vec(random(40, 0.1, 7), 40, &dev)?.to_dtype(dtype)?;
    let lora = LoraAdapter {
        a: a.as_tensor().clone(),
        b: b.as_tensor().clone(),
        scale: 2.0,
        dropout: 0.0,
    };
    let mk = |weight: LinearWeight| Linear {
        name: "l".into(),
        weight,
        bias: Some(bias.clone()),
        lora: Some(lora.clone()),
    };
    let quant = mk(LinearWeight::Q8_0 { q, dtype });
    Ok((mk(wd.into()), quant, a, b, x))
}

/// Σ c ⊙ y for a fixed c (so every output has its own weight in the loss).
fn loss(lin: &Linear, x: &Tensor) -> Result<Tensor> {
    let y = lin.forward(x, true)?;
    let n = y.elem_count();
    let c = Tensor::arange(0u32, n as u32, x.device())?
        .to_dtype(y.dtype())?
        .affine(0.01, -0.3)?
        .cos()?
        .reshape(y.shape())?;
    Ok((y * c)?.sum_all()?)
}

#[test]
fn gradients_through_a_quantized_linear_match_the_dense_one() -> Result<()> {
    let (dense, quant, a, b, x) = pair(DType::F32)?;
    let (ld, lq) = (loss(&dense, x.as_tensor())?, loss(&quant, x.as_tensor())?);
    let (vd, vq) = (ld.to_scalar::<f32>()?, lq.to_scalar::<f32>()?);
    assert!((vd - vq).abs() < 1e-4 * vd.abs().max(1.0), "{vd} vs {vq}");
    // Inference (no autograd) takes the other path and agrees.
    let y_inf = quant.forward(&x.as_tensor().detach(), false)?;
    let y_tr = quant.forward(x.as_tensor(), false)?;
    assert!(common::tensor_max_diff(&y_inf, &y_tr) < 1e-5);
    let (gd, gq) = (ld.backward()?, lq.backward()?);
    for (what, v) in [("x", &x), ("A", &a), ("B", &b)] {
        let g1 = gd
            .get(v)
            .unwrap_or_else(|| panic!("dense: no grad for {what}"));
        let g2 = gq
            .get(v)
            .unwrap_or_else(|| panic!("q8_0: no grad for {what}"));
        let d = common::tensor_max_diff(g1, g2);
        let m = g1.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            m > 0.0 && d < 1e-5 * m.max(1.0),
            "{what}: max |Δgrad| = {d:e} of {m}"
        );
    }
    Ok(())
}

#[test]
fn gradients_through_a_quantized_linear_match_finite_differences() -> Result<()> {
    let (_, quant, a, _, x) = pair(DType::F64)?;
    let g = loss(&quant, x.as_tensor())?.backward()?;
    let (gx, ga) = (g.get(&x).unwrap(), g.get(&a).unwrap());
    let h = 1e-6;
    for (v, grad, idx) in [
        (&x, gx, [0, 1, 5]),
        (&x, gx, [1, 2, 95]),
        (&a, ga, [0, 2, 7]),
    ] {
        let flat_grad = grad.flatten_all()?.to_vec1::<f64>()?;
        let base = v.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let dims = v.dims().to_vec();
        // Row-major flat index of (idx[0], idx[1], idx[2]) or, for a 2-D var, (idx[1], idx[2]).
        let i = if dims.len() == 3 {
            (idx[0] * dims[1] + idx[1]) * dims[2] + idx[2]
        } else {
            idx[1] * dims[1] + idx[2]
        };
        let at = |delta: f64| -> Result<f64> {
            let mut p = base.clone();
            p[i] += delta;
            v.set(&Tensor::from_vec(p, dims.clone(), &Device::Cpu)?)?;
            let l = loss(&quant, x.as_tensor())?.to_scalar::<f64>()?;
            Ok(l)
        };
        let fd = (at(h)? - at(-h)?) / (2.0 * h);
        v.set(&Tensor::from_vec(base.clone(), dims.clone(), &Device::Cpu)?)?;
        let an = flat_grad[i];
        assert!(
            (fd - an).abs() < 1e-6 * an.abs().max(1.0),
            "{idx:?}: fd {fd} vs {an}"
        );
    }
    Ok(())
}
