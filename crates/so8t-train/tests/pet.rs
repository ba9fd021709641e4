//! PET loss against the fixtures' `losses` (hidden states of the real model), gradients by
//! finite differences, masking and packed rows.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use so8t_model::{Forward, Model};
use so8t_train::pet_loss;

type R = Result<(), Box<dyn std::error::Error>>;

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

struct Batch {
    input: Tensor,
    attn: Tensor,
    label: Tensor,
    rows: Vec<Vec<u32>>,
}

fn batch(l: &serde_json::Value) -> Batch {
    let t = |k: &str| Tensor::new(int_rows(&l[k]), &Device::Cpu).unwrap();
    Batch {
        input: t("input_ids"),
        attn: t("attention_mask"),
        label: t("label_mask"),
        rows: int_rows(&l["input_ids"]),
    }
}

fn hidden(model: &Model, input: &Tensor, attn: &Tensor) -> Tensor {
    let fw = Forward {
        attention_mask: Some(attn),
        ..Default::default()
    };
    model.hidden_states(input, fw).unwrap()
}

#[test]
fn pet_and_ce_match_fixtures() -> R {
    for name in FIXTURES {
        let model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
        let l = &reference(name)["losses"];
        let b = batch(l);
        let h = hidden(&model, &b.input, &b.attn);

        let (l2, n) = pet_loss(&h, &b.attn, None, None)?;
        let want_n = l["pet_valid_triples"].as_u64().unwrap() as usize;
        assert_eq!(n, want_n, "{name}: valid triples");
        let (got, want) = (scalar(&l2), l["pet_l2_lambda1"].as_f64().unwrap());
        assert!(rel(got, want) < 1e-5, "{name}: PET L2 {got} vs {want}");

        let delta = l["pet_huber_delta"].as_f64().unwrap();
        let (hub, n) = pet_loss(&h, &b.attn, Some(delta), None)?;
        assert_eq!(n, want_n, "{name}: valid triples (Huber)");
        let (got, want) = (scalar(&hub), l["pet_huber_lambda1"].as_f64().unwrap());
        assert!(rel(got, want) < 1e-5, "{name}: PET Huber {got} vs {want}");

        let logits = model.logits(&h)?;
        let ce = so8t_model::loss::shifted_cross_entropy(&logits, &b.input, &b.label, &b.attn)?;
        let (got, want) = (scalar(&ce), l["ce_mean_over_labels"].as_f64().unwrap());
        assert!(rel(got, want) < 1e-5, "{name}: CE {got} vs {want}");
    }
    Ok(())
}

/// Changing the tokens at padded positions changes the hidden states there but not the loss.
#[test]
fn padded_tokens_do_not_change_the_model_loss() -> R {
    let name = "phi3-tiny";
    let model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
    let b = batch(&reference(name)["losses"]);
    let h = hidden(&model, &b.input, &b.attn);
    let mut rows = b.rows.clone();
    for x in &mut rows[0][7..] {
        *x = 42;
    }
    let h2 = hidden(&model, &Tensor::new(rows, &Device::Cpu)?, &b.attn);
    let moved = scalar(&(&h2 - &h)?.abs()?.max_all()?);
    assert!(moved > 1e-3, "padded hidden states should differ");
    for delta in [None, Some(0.5)] {
        let (a, _) = pet_loss(&h, &b.attn, delta, None)?;
        let (c, _) = pet_loss(&h2, &b.attn, delta, None)?;
        assert_eq!(scalar(&a), scalar(&c), "{delta:?}");
    }
    Ok(())
}

/// Both rows of the fixture batch packed into one row with `segments` give the fixture's values:
/// the same 15 triples, none across the seam.
#[test]
fn packed_rows_match_the_padded_batch() -> R {
    for name in FIXTURES {
        let model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
        let l = &reference(name)["losses"];
        let b = batch(l);
        let attn = int_rows(&l["attention_mask"]);
        let lens: Vec<usize> = attn
            .iter()
            .map(|r| r.iter().filter(|&&m| m != 0).count())
            .collect();
        let packed: Vec<u32> = b
            .rows
            .iter()
            .zip(&lens)
            .flat_map(|(r, &n)| r[..n].to_vec())
            .collect();
        let t = packed.len();
        let input = Tensor::new(packed, &Device::Cpu)?.unsqueeze(0)?;
        let ones = Tensor::ones((1, t), DType::U32, &Device::Cpu)?;
        let segs = vec![lens];
        let fw = Forward {
            attention_mask: Some(&ones),
            segments: Some(&segs),
            ..Default::default()
        };
        let h = model.hidden_states(&input, fw)?;
        let (l2, n) = pet_loss(&h, &ones, None, Some(&segs))?;
        assert_eq!(
            n,
            l["pet_valid_triples"].as_u64().unwrap() as usize,
            "{name}"
        );
        let (got, want) = (scalar(&l2), l["pet_l2_lambda1"].as_f64().unwrap());
        assert!(
            rel(got, want) < 1e-5,
            "{name}: packed PET L2 {got} vs {want}"
        );
        let delta = l["pet_huber_delta"].as_f64().unwrap();
        let (hub, _) = pet_loss(&h, &ones, Some(delta), Some(&segs))?;
        let (got, want) = (scalar(&hub), l["pet_huber_lambda1"].as_f64().unwrap());
        assert!(
            rel(got, want) < 1e-5,
            "{name}: packed PET Huber {got} vs {want}"
        );
        // without the segments the two triples across the seam count too
        let (_, n) = pet_loss(&h, &ones, None, None)?;
        assert_eq!(n, t - 2, "{name}");
    }
    Ok(())
}

/// Deterministic values in [−1, 1) (a 64-bit LCG), so the tests need no RNG seed.
fn values(n: usize, mut seed: u64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

const SHAPE: (usize, usize, usize) = (2, 6, 3);

fn mask() -> Tensor {
    Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &Device::Cpu).unwrap()
}

fn loss_at(x: &[f64], delta: Option<f64>) -> f64 {
    let h = Tensor::from_vec(x.to_vec(), SHAPE, &Device::Cpu).unwrap();
    scalar(&pet_loss(&h, &mask(), delta, None).unwrap().0)
}

/// Autograd against central differences in f64.
fn check_gradient(delta: Option<f64>, seed: u64) -> R {
    let x = values(SHAPE.0 * SHAPE.1 * SHAPE.2, seed);
    if let Some(d) = delta {
        // stay away from the Huber kink |x| = δ, where the second derivative jumps
        let h = Tensor::from_vec(x.clone(), SHAPE, &Device::Cpu)?;
        let n = SHAPE.1 - 2;
        let dd = ((h.narrow(1, 2, n)? - (h.narrow(1, 1, n)? * 2.0)?)? + h.narrow(1, 0, n)?)?;
        let gap = scalar(&((dd.abs()? - d)?.abs()?.min_all()?));
        assert!(gap > 1e-3, "seed {seed} puts an element at the Huber kink");
        let big = scalar(&dd.abs()?.max_all()?);
        assert!(big > d, "seed {seed} never leaves the quadratic part");
    }
    let var = Var::from_tensor(&Tensor::from_vec(x.clone(), SHAPE, &Device::Cpu)?)?;
    let (loss, _) = pet_loss(var.as_tensor(), &mask(), delta, None)?;
    let grads = loss.backward()?;
    let g = grads
        .get(var.as_tensor())
        .expect("gradient")
        .flatten_all()?
        .to_vec1::<f64>()?;
    let eps = 1e-6;
    let mut fd = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let (mut p, mut m) = (x.clone(), x.clone());
        p[i] += eps;
        m[i] -= eps;
        fd.push((loss_at(&p, delta) - loss_at(&m, delta)) / (2.0 * eps));
    }
    let scale = fd.iter().fold(0f64, |a, v| a.max(v.abs()));
    let err = g
        .iter()
        .zip(&fd)
        .fold(0f64, |a, (p, q)| a.max((p - q).abs()));
    assert!(scale > 1e-3);
    assert!(
        err / scale < 1e-6,
        "{delta:?}: relative gradient error {}",
        err / scale
    );
    // row 1, positions 4 and 5 are padding: no gradient
    let (t, hd) = (SHAPE.1, SHAPE.2);
    for pos in 4..6 {
        for k in 0..hd {
            assert_eq!(g[t * hd + pos * hd + k], 0.0, "padded position {pos}");
        }
    }
    Ok(())
}

#[test]
fn l2_gradient_matches_finite_differences() -> R {
    check_gradient(None, 7)
}

#[test]
fn huber_gradient_matches_finite_differences() -> R {
    check_gradient(Some(0.5), 11)
}

/// Rewriting a padded position's hidden state leaves the loss bit-identical.
#[test]
fn padded_hidden_states_do_not_count() -> R {
    let x = values(SHAPE.0 * SHAPE.1 * SHAPE.2, 3);
    let mut y = x.clone();
    let (t, hd) = (SHAPE.1, SHAPE.2);
    for k in 0..hd {
        y[t * hd + 5 * hd + k] = 1e3;
        y[t * hd + 4 * hd + k] *= -7.0;
    }
    for delta in [None, Some(0.5)] {
        assert_eq!(loss_at(&x, delta), loss_at(&y, delta), "{delta:?}");
    }
    // a real position does count
    y[2] += 1.0;
    assert_ne!(loss_at(&x, None), loss_at(&y, None));
    Ok(())
}

/// A packed row scores the count-weighted mean of its sequences run separately.
#[test]
fn segments_split_triples() -> R {
    let dev = Device::Cpu;
    let x = values(10 * 4, 5);
    let h = Tensor::from_vec(x, (1, 10, 4), &dev)?;
    let ones = |n| Tensor::ones((1, n), DType::U8, &dev).unwrap();
    for delta in [None, Some(0.5)] {
        let segs = vec![vec![4, 2, 4]];
        let (packed, n) = pet_loss(&h, &ones(10), delta, Some(&segs))?;
        assert_eq!(n, 4, "2 + 0 + 2 triples: none in the 2-token sequence");
        let (a, na) = pet_loss(&h.narrow(1, 0, 4)?, &ones(4), delta, None)?;
        let (c, nc) = pet_loss(&h.narrow(1, 6, 4)?, &ones(4), delta, None)?;
        let want = (scalar(&a) * na as f64 + scalar(&c) * nc as f64) / (na + nc) as f64;
        assert!((scalar(&packed) - want).abs() < 1e-12, "{delta:?}");
        // one segment covering the row is the same as none
        let whole = vec![vec![10]];
        let (p, _) = pet_loss(&h, &ones(10), delta, Some(&whole))?;
        let (q, _) = pet_loss(&h, &ones(10), delta, None)?;
        assert_eq!(scalar(&p), scalar(&q));
    }
    Ok(())
}
