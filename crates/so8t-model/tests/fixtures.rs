//! The model core against HF transformers' reference values (`../shared/fixtures`): logits,
//! greedy continuations, SO(8) rotations, gated logits, the bake and the CE loss.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use so8t_model::so8::{fold_into_weight, So8Gates};
use so8t_model::{Cache, Forward, Model, Weights};

type R = Result<(), Box<dyn std::error::Error>>;

fn logits_rows(
    model: &Model,
    ids: &[u32],
    fw: Forward<'_>,
) -> Result<Vec<Vec<f64>>, so8t_model::Error> {
    let t = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    let l = model.forward(&t, fw)?.squeeze(0)?.to_dtype(DType::F64)?;
    Ok(l.to_vec2::<f64>()?)
}

fn greedy(
    model: &Model,
    prompt: &[u32],
    n: usize,
    gates: Option<&so8t_model::so8::GateMatrices>,
) -> Vec<u32> {
    let mut cache = Cache::new(model.cfg.num_hidden_layers);
    let mut out = Vec::new();
    let mut history = prompt.to_vec();
    let mut input = prompt.to_vec();
    for _ in 0..n {
        if model.rope_switch_invalidates(cache.seq_len(), history.len()) {
            cache.clear();
            input = history.clone();
        }
        let t = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let fw = Forward {
            cache: Some(&mut cache),
            gates,
            ..Default::default()
        };
        let l = model.forward_last(&t, fw).unwrap().squeeze(0).unwrap();
        let next = l.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        out.push(next);
        history.push(next);
        input = vec![next];
    }
    out
}

#[test]
fn logits_match_transformers() -> R {
    for name in FIXTURES {
        let model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
        let r = reference(name);
        for case in r["cases"].as_array().unwrap() {
            let ids = ids(&case["input_ids"]);
            let got = logits_rows(&model, &ids, Forward::default())?;
            let d = max_abs_diff(&got, &matrix(&case["logits"]));
            assert!(
                d < 1e-4,
                "{name}, {} tokens: max |Δlogits| = {d:e}",
                ids.len()
            );
        }
    }
    Ok(())
}

#[test]
fn greedy_continuations_match_transformers() -> R {
    for name in FIXTURES {
        let model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
        let r = reference(name);
        for case in r["cases"].as_array().unwrap() {
            let prompt = ids(&case["input_ids"]);
            let want = ids(&case["greedy_next"]);
            assert_eq!(
                greedy(&model, &prompt, want.len(), None),
                want,
                "{name}, prompt of {} tokens",
                prompt.len()
            );
        }
    }
    Ok(())
}

fn gates_for(name: &str, model: &Model) -> Result<So8Gates, so8t_model::Error> {
    So8Gates::load(
        &fixture(name).join("so8t_gates.safetensors"),
        model.cfg.attn_out_dim(),
        model.cfg.num_hidden_layers,
        &Device::Cpu,
    )
}

#[test]
fn rotations_match_reference_and_are_special_orthogonal() -> R {
    for name in FIXTURES {
        let model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
        let gates = gates_for(name, &model)?;
        let file = Weights::from_files(&[fixture(name).join("so8t_gates.safetensors")])?;
        for (l, r) in gates.rotations()? {
            let want = file.get_any(&format!("layers.{l}.rotation"), DType::F64, &Device::Cpu)?;
            let d = (r.to_dtype(DType::F64)? - &want)?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?;
            assert!(d < 1e-6, "{name} layer {l}: max |R − R_ref| = {d:e}");
        }
        for (l, diag) in gates.diagnostics()? {
            assert!(
                diag.max_orth_err < 1e-6,
                "{name} layer {l}: |RᵀR − I| = {:e}",
                diag.max_orth_err
            );
            assert!(
                diag.max_det_err < 1e-6,
                "{name} layer {l}: |det R − 1| = {:e}",
                diag.max_det_err
            );
        }
    }
    Ok(())
}

#[test]
fn gated_logits_and_bake_match_reference() -> R {
    for name in FIXTURES {
        let mut model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
        let r = reference(name);
        let alpha = r["so8t"]["alpha"].as_f64().unwrap();
        let gates = gates_for(name, &model)?;
        let a = Tensor::new(alpha as f32, &Device::Cpu)?;
        let mats = gates.matrices(&a, model.cfg.num_hidden_layers)?;
        let mut gated = Vec::new();
        for case in r["so8t"]["cases"].as_array().unwrap() {
            let ids = ids(&case["input_ids"]);
            let got = logits_rows(
                &model,
                &ids,
                Forward {
                    gates: Some(&mats),
                    ..Default::default()
                },
            )?;
            let d = max_abs_diff(&got, &matrix(&case["logits"]));
            assert!(d < 1e-4, "{name}: gated max |Δlogits| = {d:e}");
            gated.push((ids, got));
        }
        // Fold the gates into o_proj and compare with the float64 reference weights.
        let file = Weights::from_files(&[fixture(name).join("so8t_gates.safetensors")])?;
        for (l, layer) in model.layers.iter_mut().enumerate() {
            let m = mats.layers[l].as_ref().unwrap();
            let baked = fold_into_weight(&layer.self_attn.o_proj.weight.to_dense()?, m)?;
            let want = file.get_any(
                &format!("layers.{l}.o_proj_baked"),
                DType::F32,
                &Device::Cpu,
            )?;
            let d = (&baked - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "{name} layer {l}: max |W' − W'_ref| = {d:e}");
            layer.self_attn.o_proj.weight = baked.into();
        }
        for (ids, want) in gated {
            let got = logits_rows(&model, &ids, Forward::default())?;
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-4, "{name}: baked vs gated max |Δlogits| = {d:e}");
        }
    }
    Ok(())
}

#[test]
fn alpha_zero_is_exactly_the_base_model() -> R {
    let name = "phi3-tiny";
    let model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
    let gates = gates_for(name, &model)?;
    let mats = gates.matrices(&Tensor::new(0f32, &Device::Cpu)?, 2)?;
    let ids = [1u32, 5, 9, 200, 3];
    let base = logits_rows(&model, &ids, Forward::default())?;
    let gated = logits_rows(
        &model,
        &ids,
        Forward {
            gates: Some(&mats),
            ..Default::default()
        },
    )?;
    assert_eq!(max_abs_diff(&base, &gated), 0.0);
    Ok(())
}

#[test]
fn cross_entropy_matches_reference() -> R {
    for name in FIXTURES {
        let model = Model::load(&fixture(name), DType::F32, &Device::Cpu)?;
        let l = &reference(name)["losses"];
        let rows = |k: &str| -> Tensor {
            let m: Vec<Vec<u32>> = l[k].as_array().unwrap().iter().map(ids).collect();
            Tensor::new(m, &Device::Cpu).unwrap()
        };
        let (input, attn, label) = (
            rows("input_ids"),
            rows("attention_mask"),
            rows("label_mask"),
        );
        let logits = model.forward(
            &input,
            Forward {
                attention_mask: Some(&attn),
                ..Default::default()
            },
        )?;
        let ce = so8t_model::loss::shifted_cross_entropy(&logits, &input, &label, &attn)?;
        let got = ce.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let want = l["ce_mean_over_labels"].as_f64().unwrap();
        assert!(
            ((got - want) / want).abs() < 1e-5,
            "{name}: CE {got} vs {want}"
        );
    }
    Ok(())
}
