//! Full fine-tuning: every weight is a variable whose gradient matches finite differences; it
//! learns what LoRA on a frozen random model cannot; gradient checkpointing and checkpoint
//! restore treat it like any other variable; `final/model` is a plain model with the weights.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use so8t_model::io::tensor_bytes;
use so8t_model::Model;
use so8t_train::checkpoint::{latest_valid, restore, save, CheckpointKind, TrainState};
use so8t_train::step::{StepConfig, Trainer};

use common::{pattern_batch, step_config, tiny_model};

fn full(total: u64) -> StepConfig {
    let mut c = step_config(total);
    c.lora = None;
    c.full_finetune = true;
    c
}

fn trainer(dir: &std::path::Path, cfg: StepConfig) -> Trainer {
    let model = Model::load(dir, DType::F32, &Device::Cpu).unwrap();
    Trainer::new(model, cfg).unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn every_weight_is_a_variable_with_the_finite_difference_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let tr = trainer(&model_dir, full(10));
    let vars = tr.opt.vars();
    let names: Vec<&str> = vars.keys().map(|s| s.as_str()).collect();
    for want in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.layers.0.self_attn.qkv_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_up_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "gates.0",
    ] {
        assert!(names.contains(&want), "{want} not trainable: {names:?}");
    }
    let b = pattern_batch(24, 17);
    let micro = std::slice::from_ref(&b);
    let (_, grads) = tr.gradients(micro, 3).unwrap();
    let loss_at = || tr.gradients(micro, 3).unwrap().0.loss;
    // Central differences on the largest-gradient entry of several kinds of weight.
    for name in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ] {
        let v = &vars[name];
        let g = host(grads.get(v.as_tensor()).expect("gradient"));
        let (k, gk) = g
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(k, x)| (k, *x as f64))
            .unwrap();
        assert!(gk.abs() > 1e-4, "{name}: gradient vanishes ({gk})");
        let orig = host(v.as_tensor());
        let eps = 1e-2f32;
        let at = |d: f32| {
            let mut w = orig.clone();
            w[k] += d;
            v.set(&Tensor::from_vec(w, v.as_tensor().shape(), &Device::Cpu).unwrap())
                .unwrap();
            loss_at()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
        at(0.0);
        assert!(
            (fd - gk).abs() <= 0.03 * gk.abs() + 1e-4,
            "{name}[{k}]: backward {gk} vs finite difference {fd}"
        );
    }
}

#[test]
fn full_finetuning_learns_where_the_frozen_model_cannot_and_checkpointing_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let b = pattern_batch(40, 25);
    let micro = std::slice::from_ref(&b);
    let mut plain = trainer(&model_dir, full(40));
    let mut cfg = full(40);
    cfg.gradient_checkpointing = true;
    let mut ckpt = trainer(&model_dir, cfg);
    let mut first = None;
    let mut last = 0.0;
    for i in 0..40 {
        let mp = plain.step(micro).unwrap();
        first.get_or_insert(mp.ce);
        if i < 3 {
            let mc = ckpt.step(micro).unwrap();
            assert!((mp.loss - mc.loss).abs() <= 1e-5 * mp.loss, "{mp:?} {mc:?}");
        }
        last = mp.ce;
    }
    // The pattern is a bigram table: a fully trained model nearly memorizes it.
    let first = first.unwrap();
    assert!(last < 0.25 * first, "ce {first} -> {last}");
}

#[test]
fn restore_continues_full_finetuning_bit_identically_and_final_model_holds_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let b = pattern_batch(40, 25);
    let one = std::slice::from_ref(&b);
    let mut a = trainer(&model_dir, full(4));
    let la: Vec<f64> = (0..4).map(|_| a.step(one).unwrap().loss).collect();
    let mut bt = trainer(&model_dir, full(4));
    let lb: Vec<f64> = (0..2).map(|_| bt.step(one).unwrap().loss).collect();
    let run = dir.path().join("run");
    let st = TrainState {
        step: 2,
        epoch: 0,
        cursor: 2,
        rng_state: 1,
        best_loss: None,
        loss_history: lb,
        config_hash: "x".into(),
        kind: CheckpointKind::Rolling,
        created_unix_ms: 0,
        extra: None,
    };
    save(&run, &bt, &st, 5).unwrap();
    let mut c = trainer(&model_dir, full(4));
    restore(&mut c, &latest_valid(&run).unwrap().unwrap().dir).unwrap();
    let lc: Vec<f64> = (0..2).map(|_| c.step(one).unwrap().loss).collect();
    assert_eq!(lc, la[2..]);
    let snap = |t: &Trainer| -> BTreeMap<String, Vec<u8>> {
        t.opt
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), tensor_bytes(v.as_tensor()).unwrap()))
            .collect()
    };
    assert_eq!(snap(&a), snap(&c));

    // The trained weights written as a model folder give the trained model's logits.
    let out = dir.path().join("trained");
    so8t_model::full::save_model(&a.model, &model_dir, &out, DType::F32).unwrap();
    let loaded = Model::load(&out, DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[5u32, 9, 40, 47, 54]], &Device::Cpu).unwrap();
    let fw = so8t_model::Forward::default;
    let want = host(&a.model.forward(&ids, fw()).unwrap());
    let got = host(&loaded.forward(&ids, fw()).unwrap());
    assert_eq!(want, got);
    let base = Model::load(&model_dir, DType::F32, &Device::Cpu).unwrap();
    assert_ne!(host(&base.forward(&ids, fw()).unwrap()), got);
}
