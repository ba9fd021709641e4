//! `training.base_dtype: int8`: the config accepts `same` and `int8` only, and training on a
//! Q8_0 base lowers the loss as on a dense one.

mod common;

use candle_core::{DType, Device};
use so8t_model::lora::LoraConfig;
use so8t_model::Model;
use so8t_train::config::TrainConfig;
use so8t_train::step::Trainer;

use common::{pattern_batch, step_config, tiny_model};

#[test]
fn base_dtype_is_checked_and_keeps_old_hashes() {
    let mut cfg = TrainConfig::default();
    assert_eq!(cfg.training.base_dtype, "same");
    let hash = cfg.hash();
    assert!(!serde_json::to_string(&cfg).unwrap().contains("base_dtype"));
    cfg.training.base_dtype = "int8".into();
    cfg.validate().unwrap();
    assert_ne!(cfg.hash(), hash);
    cfg.training.base_dtype = "int4".into();
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("training.base_dtype") && e.contains("int4"),
        "{e}"
    );
    let yaml = "training:\n  base_dtype: int8\n  max_steps: 3\n";
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.yaml");
    std::fs::write(&p, yaml).unwrap();
    assert_eq!(
        TrainConfig::from_file(&p).unwrap().training.base_dtype,
        "int8"
    );
}

#[test]
fn loss_falls_on_an_int8_base() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::load(&tiny_model(dir.path()), DType::F32, &Device::Cpu).unwrap();
    let st = so8t_model::quant::quantize_base(&mut model).unwrap();
    assert_eq!(st.quantized, model.linears().len());
    let mut cfg = step_config(20);
    cfg.lora = Some(LoraConfig::new(
        8,
        16.0,
        &["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    ));
    let mut tr = Trainer::new(model, cfg).unwrap();
    let batch = pattern_batch(48, 30);
    let mut ces = Vec::new();
    for _ in 0..20 {
        let m = tr.step(std::slice::from_ref(&batch)).unwrap();
        assert!(m.grad_norm.is_finite() && m.grad_norm > 0.0, "{m:?}");
        ces.push(m.ce);
    }
    let last = ces[17..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.88 * ces[0], "CE {ces:?}");
    // The base stayed quantized; the LoRA matrices are f32 and moved.
    let lins = tr.model.linears();
    assert!(lins.iter().all(|l| l.weight.is_quantized()));
    let b = tr
        .opt
        .vars()
        .iter()
        .find(|(k, _)| k.ends_with("lora_B.weight"))
        .map(|(_, v)| v.as_tensor().clone())
        .unwrap();
    assert_eq!(b.dtype(), DType::F32);
    assert!(
        b.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}
