//! Finite-difference checks of d(loss)/d(generator) and d(loss)/dα through a whole tiny model
//! (phi3-tiny and llama-gqa-tiny in f64, gates on every layer, CE over the sequence).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{fixture, tensor_max_diff};
use so8t_model::so8::{RotationMethod, So8Gates};
use so8t_model::{loss::shifted_cross_entropy, Forward, Model};

fn loss(model: &Model, gates: &So8Gates, alpha: &Tensor, ids: &Tensor) -> Tensor {
    let mats = gates.matrices(alpha, model.cfg.num_hidden_layers).unwrap();
    let logits = model
        .forward(
            ids,
            Forward {
                gates: Some(&mats),
                train: true,
                ..Default::default()
            },
        )
        .unwrap();
    let ones = Tensor::ones(ids.dims(), DType::U32, &Device::Cpu).unwrap();
    shifted_cross_entropy(&logits, ids, &ones, &ones).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

fn check(name: &str, method: RotationMethod) {
    let dev = Device::Cpu;
    let model = Model::load(&fixture(name), DType::F64, &dev).unwrap();
    let n = model.cfg.num_hidden_layers;
    let layers: Vec<usize> = (0..n).collect();
    let g0 = So8Gates::random(&layers, model.cfg.attn_out_dim(), 0.3, 11, method, &dev).unwrap();
    let vars: Vec<(usize, Var)> = g0
        .generators
        .iter()
        .map(|(&l, g)| {
            (
                l,
                Var::from_tensor(&g.to_dtype(DType::F64).unwrap()).unwrap(),
            )
        })
        .collect();
    let gates = So8Gates {
        generators: vars
            .iter()
            .map(|(l, v)| (*l, v.as_tensor().clone()))
            .collect(),
        ..g0.clone()
    };
    let alpha = Var::new(0.6f64, &dev).unwrap();
    let ids = Tensor::new(&[[1u32, 17, 200, 45, 3, 99, 128, 7, 64, 250]], &dev).unwrap();
    let l = loss(&model, &gates, alpha.as_tensor(), &ids);
    let grads = l.backward().unwrap();

    let h = 1e-5;
    let eval = |gates: &So8Gates, a: f64| {
        scalar(&loss(&model, gates, &Tensor::new(a, &dev).unwrap(), &ids))
    };
    // dα
    let ga = scalar(grads.get(alpha.as_tensor()).expect("alpha has a gradient"));
    let fd = (eval(&gates, 0.6 + h) - eval(&gates, 0.6 - h)) / (2.0 * h);
    assert!(
        (ga - fd).abs() < 1e-6 * (1.0 + fd.abs()),
        "{name} dα: autograd {ga} vs fd {fd}"
    );
    // d generator: a spread of entries in every layer.
    for (l, v) in &vars {
        let g = grads
            .get(v.as_tensor())
            .expect("generator has a gradient")
            .to_vec2::<f64>()
            .unwrap();
        let base = v.as_tensor().to_vec2::<f64>().unwrap();
        for (b, k) in [(0usize, 0usize), (1, 13), (3, 27), (7, 5)] {
            let perturbed = |d: f64| {
                let mut m = base.clone();
                m[b][k] += d;
                let mut gs = gates.clone();
                gs.generators.insert(*l, Tensor::new(m, &dev).unwrap());
                eval(&gs, 0.6)
            };
            let fd = (perturbed(h) - perturbed(-h)) / (2.0 * h);
            let an = g[b][k];
            assert!(
                (an - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                "{name} {method:?} layer {l} block {b} entry {k}: autograd {an} vs fd {fd}"
            );
        }
    }
}

#[test]
fn generator_and_alpha_gradients_match_finite_differences_phi3() {
    check("phi3-tiny", RotationMethod::Exp);
}

#[test]
fn generator_gradients_match_finite_differences_llama_gqa_cayley() {
    check("llama-gqa-tiny", RotationMethod::Cayley);
}

#[test]
fn differentiable_path_equals_inference_path() {
    let dev = Device::Cpu;
    let model = Model::load(&fixture("phi3-longrope-tiny"), DType::F32, &dev).unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 13, 200, 3, 77]], &dev).unwrap();
    let a = model.forward(&ids, Forward::default()).unwrap();
    let b = model
        .forward(
            &ids,
            Forward {
                train: true,
                ..Default::default()
            },
        )
        .unwrap();
    let d = tensor_max_diff(&a, &b);
    assert!(d < 1e-4, "train path differs from inference path by {d}");
}
