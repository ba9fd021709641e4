//! LoRA adapters: PEFT names and config, save/load round trip, merge, and bake with an adapter.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{fixture, tensor_max_diff};
use so8t_model::bake::{bake, BakeOptions};
use so8t_model::lora::{self, LoraConfig};
use so8t_model::{Forward, Model, Weights};

fn logits(m: &Model, ids: &[u32]) -> Tensor {
    let t = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    m.forward(&t, Forward::default()).unwrap()
}

/// A model with adapters whose B is not zero, so they change the output.
fn adapted(name: &str, targets: &[&str]) -> (Model, LoraConfig) {
    let mut m = Model::load(&fixture(name), DType::F32, &Device::Cpu).unwrap();
    let cfg = LoraConfig::new(4, 8.0, targets);
    let vars = lora::attach(&mut m, &cfg, 5).unwrap();
    for lin in m.linears_mut() {
        if let Some(l) = &mut lin.lora {
            l.b = Tensor::randn(0f32, 0.05, l.b.dims(), &Device::Cpu).unwrap();
        }
    }
    assert!(vars
        .keys()
        .all(|k| k.starts_with("base_model.model.model.layers.") && k.ends_with(".weight")));
    (m, cfg)
}

#[test]
fn adapters_round_trip_in_peft_format_and_merge_exactly() {
    let ids = [1u32, 40, 80, 120, 160, 200];
    for (name, targets) in [
        (
            "phi3-tiny",
            vec!["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        ),
        ("llama-gqa-tiny", vec!["q_proj", "v_proj", "up_proj"]),
    ] {
        let (m, cfg) = adapted(name, &targets);
        let base = logits(
            &Model::load(&fixture(name), DType::F32, &Device::Cpu).unwrap(),
            &ids,
        );
        let with = logits(&m, &ids);
        assert!(
            tensor_max_diff(&base, &with) > 1e-3,
            "{name}: adapters should change the logits"
        );
        let t = tempfile::tempdir().unwrap();
        lora::save(&m, &cfg, t.path(), "fixture").unwrap();
        let conf: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(t.path().join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(conf["peft_type"], "LORA");
        assert_eq!(conf["r"], 4);
        assert_eq!(conf["lora_alpha"], 8.0);
        let w = Weights::from_files(&[t.path().join("adapter_model.safetensors")]).unwrap();
        let first = &targets[0];
        assert!(
            w.contains(&format!(
                "base_model.model.model.layers.0.self_attn.{first}.lora_A.weight"
            )) || w.contains(&format!(
                "base_model.model.model.layers.0.mlp.{first}.lora_A.weight"
            ))
        );
        let mut fresh = Model::load(&fixture(name), DType::F32, &Device::Cpu).unwrap();
        let loaded_cfg = lora::load(&mut fresh, t.path()).unwrap();
        assert_eq!(loaded_cfg, cfg);
        assert!(
            tensor_max_diff(&with, &logits(&fresh, &ids)) < 1e-6,
            "{name}: reloaded adapter differs"
        );
        lora::merge(&mut fresh).unwrap();
        assert!(fresh.linears().iter().all(|l| l.lora.is_none()));
        assert!(
            tensor_max_diff(&with, &logits(&fresh, &ids)) < 1e-5,
            "{name}: merged weights differ"
        );
    }
}

#[test]
fn attach_rejects_targets_that_match_nothing() {
    let mut m = Model::load(&fixture("phi3-tiny"), DType::F32, &Device::Cpu).unwrap();
    let e = lora::attach(&mut m, &LoraConfig::new(4, 8.0, &["q_proj"]), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("match no linear layer"), "{e}");
}

#[test]
fn bake_merges_the_adapter_then_folds_the_gates() {
    let (m, cfg) = adapted("phi3-tiny", &["o_proj", "qkv_proj"]);
    let t = tempfile::tempdir().unwrap();
    let adapter = t.path().join("adapter");
    lora::save(&m, &cfg, &adapter, "fixture").unwrap();
    let gates = fixture("phi3-tiny").join("so8t_gates.safetensors");
    let out = t.path().join("baked");
    let prompts = vec![vec![1u32, 2, 3, 4, 5], vec![9u32, 200, 31, 7]];
    let report = bake(
        &fixture("phi3-tiny"),
        &out,
        &BakeOptions {
            gates,
            alpha: 0.75,
            layers: Some("1".parse().unwrap()),
            method: Default::default(),
            adapter: Some(adapter),
            check_prompts: prompts,
        },
    )
    .unwrap();
    assert_eq!(report.layers, vec![1]);
    assert_eq!(report.merged_adapters, 4);
    for d in &report.check_max_abs_diff {
        assert!(*d < 1e-4, "baked vs gated+adapter: {d}");
    }
    // The baked folder is a plain model: no gate or LoRA tensors, same tensor names as the base.
    let baked = Weights::from_model_dir(&out).unwrap();
    let base = Weights::from_model_dir(&fixture("phi3-tiny")).unwrap();
    assert_eq!(baked.names(), base.names());
    // Layer 0's o_proj changed only by its adapter; untouched tensors are bit-identical.
    let a = base
        .get_any(
            "model.layers.0.mlp.down_proj.weight",
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    let b = baked
        .get_any(
            "model.layers.0.mlp.down_proj.weight",
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    assert_eq!(tensor_max_diff(&a, &b), 0.0);
}
