//! Gradient checkpointing (per-layer recomputation in the backward pass) gives the loss and the
//! gradients of the plain backward pass, on padded and packed batches, with gates, LoRA on every
//! linear and PET; training with it follows the same trajectory.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use so8t_data::tokenize::Example;
use so8t_model::lora::LoraConfig;
use so8t_model::Model;
use so8t_train::batch::{make_batch, Batch};
use so8t_train::step::{StepConfig, Trainer};
use so8t_train::PetSchedule;

use common::{pattern_batch, step_config, tiny_model};

/// Gates, LoRA on every linear, PET with a large λ so its gradient matters.
fn config(checkpointing: bool) -> StepConfig {
    let mut c = step_config(10);
    c.lora = Some(LoraConfig::new(
        8,
        16.0,
        &["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    ));
    c.pet = Some(PetSchedule {
        lambda_exploration: 0.5,
        ..Default::default()
    });
    c.gradient_checkpointing = checkpointing;
    c
}

/// A trainer whose LoRA B matrices are set to seeded random values (at init they are zero,
/// which would leave every A gradient zero and untested).
fn trainer(model_dir: &Path, checkpointing: bool) -> Trainer {
    trainer_with(model_dir, config(checkpointing))
}

/// [`trainer`] with another config.
fn trainer_with(model_dir: &Path, cfg: StepConfig) -> Trainer {
    let model = Model::load(model_dir, DType::F32, &Device::Cpu).unwrap();
    let tr = Trainer::new(model, cfg).unwrap();
    for (i, (name, v)) in tr.opt.vars().iter().enumerate() {
        if name.ends_with("lora_B.weight") {
            let n = v.as_tensor().elem_count();
            let vals: Vec<f32> = (0..n)
                .map(|k| (((k * 7919 + i * 104_729) % 1000) as f32 / 1000.0 - 0.5) * 0.2)
                .collect();
            let t = Tensor::from_vec(vals, v.as_tensor().shape(), &Device::Cpu).unwrap();
            v.set(&t).unwrap();
        }
    }
    tr
}

/// Three rows of 30 tokens: sequences of 12 + 18, 30, and 7 + 9 + 14 tokens.
fn packed_batch() -> Batch {
    let row = |lens: &[usize], id: &str| {
        let n: usize = lens.iter().sum();
        let ids: Vec<u32> = (0..n as u32).map(|i| 40 + (i * 5 + 3) % 37).collect();
        Example {
            labels: ids.iter().map(|&x| x as i64).collect(),
            seq_lens: lens.to_vec(),
            ids: vec![id.into()],
            input_ids: ids,
        }
    };
    let rows = [row(&[12, 18], "a"), row(&[30], "b"), row(&[7, 9, 14], "c")];
    let b = make_batch(&rows, &Device::Cpu).unwrap();
    assert!(b.segments.is_some());
    b
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// max |a − b| ≤ 1e-5 · max(1, max |a|) for every variable, and every variable has a gradient.
fn assert_same_grads(
    plain: (&Trainer, &GradStore),
    ckpt: (&Trainer, &GradStore),
    what: &str,
) -> BTreeMap<String, f32> {
    let mut scales = BTreeMap::new();
    for (name, v) in plain.0.opt.vars() {
        let w = ckpt.0.opt.vars().get(name).expect("same variables");
        let a = host(plain.1.get(v.as_tensor()).expect("plain gradient"));
        let b = host(ckpt.1.get(w.as_tensor()).expect("checkpointed gradient"));
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{what}: {name}: max diff {diff} at scale {scale}"
        );
        scales.insert(name.clone(), scale);
    }
    scales
}

fn check_gradients(micro: &[Batch], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let plain = trainer(&model_dir, false);
    let ckpt = trainer(&model_dir, true);
    for t in [0, 6] {
        let (lp, gp) = plain.gradients(micro, t).unwrap();
        let (lc, gc) = ckpt.gradients(micro, t).unwrap();
        assert!(lp.pet > 0.0 && lp.orth > 0.0, "{what}: {lp:?}");
        for (x, y, term) in [
            (lp.loss, lc.loss, "loss"),
            (lp.ce, lc.ce, "ce"),
            (lp.pet, lc.pet, "pet"),
            (lp.orth, lc.orth, "orth"),
        ] {
            assert!(
                (x - y).abs() <= 1e-6 * x.abs().max(1e-6),
                "{what} t={t}: {term} {x} vs {y}"
            );
        }
        let scales = assert_same_grads((&plain, &gp), (&ckpt, &gc), what);
        // Every kind of variable gets a real gradient (not vacuously equal zeros).
        for kind in ["gates.", "lora_A", "lora_B", "gate_up_proj", "down_proj"] {
            assert!(
                scales.iter().any(|(n, &s)| n.contains(kind) && s > 1e-6),
                "{what}: no gradient for {kind}: {scales:?}"
            );
        }
    }
}

#[test]
fn padded_batches_give_the_same_loss_and_gradients() {
    check_gradients(&[pattern_batch(40, 25), pattern_batch(24, 9)], "padded");
}

#[test]
fn packed_batches_give_the_same_loss_and_gradients() {
    check_gradients(&[packed_batch(), pattern_batch(30, 30)], "packed");
}

#[test]
fn training_follows_the_same_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let mut plain = trainer(&model_dir, false);
    let mut ckpt = trainer(&model_dir, true);
    let micro = [pattern_batch(40, 25), packed_batch()];
    for _ in 0..4 {
        let mp = plain.step(&micro).unwrap();
        let mc = ckpt.step(&micro).unwrap();
        assert!(
            (mp.loss - mc.loss).abs() <= 1e-5 * mp.loss.abs(),
            "{mp:?} {mc:?}"
        );
        assert!((mp.grad_norm - mc.grad_norm).abs() <= 1e-5 * mp.grad_norm);
    }
    for (name, v) in plain.opt.vars() {
        let a = host(v.as_tensor());
        let b = host(ckpt.opt.vars()[name].as_tensor());
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-5, "{name}: weights differ by {diff}");
    }
}

#[test]
fn lora_dropout_draws_the_same_masks_in_the_recompute_and_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let with = |ckpt: bool, p: f64| {
        let mut c = config(ckpt);
        c.lora.as_mut().unwrap().lora_dropout = p;
        trainer_with(&model_dir, c)
    };
    let micro = [pattern_batch(40, 25), pattern_batch(24, 9)];
    let plain = with(false, 0.3);
    let ckpt = with(true, 0.3);
    let (lp, gp) = plain.gradients(&micro, 4).unwrap();
    let (lc, gc) = ckpt.gradients(&micro, 4).unwrap();
    assert!(
        (lp.loss - lc.loss).abs() <= 1e-6 * lp.loss.abs(),
        "{lp:?} vs {lc:?}"
    );
    assert_same_grads((&plain, &gp), (&ckpt, &gc), "dropout 0.3");
    // The masks are real (the loss differs from no dropout), fixed for a step, new per step.
    let none = with(false, 0.0).gradients(&micro, 4).unwrap().0.loss;
    assert!((lp.loss - none).abs() > 1e-6, "{} vs {none}", lp.loss);
    assert_eq!(plain.gradients(&micro, 4).unwrap().0, lp);
    assert_ne!(plain.gradients(&micro, 5).unwrap().0.loss, lp.loss);
}
