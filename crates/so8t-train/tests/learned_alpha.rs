//! `alpha.schedule: learned`: α = σ(a) with a trainable a. Its gradient equals a finite
//! difference of the loss, it acts on the logits, the pull draws it to the target, it survives a
//! checkpoint, and per-layer recomputation gives the same gradient.

mod common;

use candle_core::{DType, Device};
use so8t_model::Model;
use so8t_train::checkpoint::{restore, save, CheckpointKind, TrainState};
use so8t_train::step::{StepConfig, Trainer, ALPHA_LOGIT};
use so8t_train::AlphaSchedule;

use common::{pattern_batch, step_config, tiny_model};

fn config(init: f64, pull: f64) -> StepConfig {
    let mut c = step_config(20);
    c.alpha = AlphaSchedule::Learned {
        init,
        target: so8t_train::schedule::PHI_INV_SQ,
        pull,
    };
    c.gates.init_scale = 0.5; // strong gates, so α visibly matters
    c
}

fn trainer(dir: &std::path::Path, c: StepConfig) -> Trainer {
    let model = Model::load(dir, DType::F32, &Device::Cpu).unwrap();
    Trainer::new(model, c).unwrap()
}

fn logit(tr: &Trainer) -> f32 {
    tr.alpha_logit
        .as_ref()
        .unwrap()
        .as_tensor()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn the_logit_gradient_equals_a_finite_difference() {
    let t = tempfile::tempdir().unwrap();
    let dir = tiny_model(t.path());
    let tr = trainer(&dir, config(0.7, 0.3));
    assert!((tr.alpha_value(0).unwrap() - 0.7).abs() < 1e-6);
    let b = pattern_batch(24, 15);
    let (_, grads) = tr.gradients(std::slice::from_ref(&b), 3).unwrap();
    let var = tr.opt.vars()[ALPHA_LOGIT].clone();
    let g = grads
        .get(var.as_tensor())
        .expect("a gradient for the logit")
        .to_scalar::<f32>()
        .unwrap() as f64;
    let a0 = logit(&tr);
    let loss_at = |a: f32| {
        var.set(&candle_core::Tensor::new(a, &Device::Cpu).unwrap())
            .unwrap();
        tr.gradients(std::slice::from_ref(&b), 3).unwrap().0.loss
    };
    let h = 1e-2f32;
    let fd = (loss_at(a0 + h) - loss_at(a0 - h)) / (2.0 * h as f64);
    loss_at(a0);
    assert!(g.abs() > 1e-4, "α matters to the loss: {g}");
    assert!(
        (g - fd).abs() <= 2e-3 * (1.0 + fd.abs()),
        "autograd {g} vs finite difference {fd}"
    );
}

#[test]
fn alpha_acts_on_the_logits_and_the_pull_draws_it_to_the_target() {
    let t = tempfile::tempdir().unwrap();
    let dir = tiny_model(t.path());
    let b = pattern_batch(24, 15);
    // α changes the loss: two inits give different losses for the same gates.
    let lo = trainer(&dir, config(0.1, 0.0));
    let hi = trainer(&dir, config(0.9, 0.0));
    let l_lo = lo.gradients(std::slice::from_ref(&b), 0).unwrap().0.ce;
    let l_hi = hi.gradients(std::slice::from_ref(&b), 0).unwrap().0.ce;
    assert!((l_lo - l_hi).abs() > 1e-4, "{l_lo} vs {l_hi}");
    // A strong pull moves α from 0.9 toward φ⁻² ≈ 0.382 and logs itself.
    let mut c = config(0.9, 50.0);
    c.optim.lr = 0.2;
    c.optim.weight_decay = 0.5; // never applied to the logit
    let mut tr = trainer(&dir, c);
    let mut first = None;
    for _ in 0..15 {
        let m = tr.step(std::slice::from_ref(&b)).unwrap();
        first.get_or_insert(m.alpha_pull);
        assert!((m.alpha_pull - 50.0 * (m.alpha - 0.381_966).powi(2)).abs() < 1e-4);
    }
    let end = tr.alpha_value(15).unwrap();
    assert!(end < 0.6 && end > 0.3, "α ended at {end}");
    assert!(first.unwrap() > 5.0);
}

#[test]
fn a_checkpoint_keeps_the_learned_alpha_and_recomputation_agrees() {
    let t = tempfile::tempdir().unwrap();
    let dir = tiny_model(t.path());
    let b = pattern_batch(24, 15);
    let mut tr = trainer(&dir, config(0.6, 1.0));
    for _ in 0..3 {
        tr.step(std::slice::from_ref(&b)).unwrap();
    }
    let run = t.path().join("run");
    let state = TrainState {
        step: 3,
        epoch: 0,
        cursor: 0,
        rng_state: 1,
        best_loss: None,
        loss_history: vec![1.0, 1.0, 1.0],
        config_hash: "h".into(),
        kind: CheckpointKind::Rolling,
        created_unix_ms: 0,
        extra: None,
    };
    let ck = save(&run, &tr, &state, 2).unwrap();
    let mut back = trainer(&dir, config(0.6, 1.0));
    assert_ne!(logit(&back), logit(&tr));
    restore(&mut back, &ck).unwrap();
    assert_eq!(logit(&back), logit(&tr));
    let a = tr.step(std::slice::from_ref(&b)).unwrap();
    let c = back.step(std::slice::from_ref(&b)).unwrap();
    assert_eq!(a, c, "the resumed trainer continues identically");

    // Per-layer recomputation gives the logit the same gradient.
    let mut cfg = config(0.6, 1.0);
    cfg.lora.as_mut().unwrap().lora_dropout = 0.0;
    let plain = trainer(&dir, cfg.clone());
    cfg.gradient_checkpointing = true;
    let ckpt = trainer(&dir, cfg);
    let g = |tr: &Trainer| {
        let (v, grads) = tr.gradients(std::slice::from_ref(&b), 2).unwrap();
        let var = &tr.opt.vars()[ALPHA_LOGIT];
        (
            v.loss,
            grads
                .get(var.as_tensor())
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        )
    };
    let (lp, gp) = g(&plain);
    let (lc, gc) = g(&ckpt);
    assert!((lp - lc).abs() < 1e-6 * (1.0 + lp.abs()), "{lp} vs {lc}");
    assert!((gp - gc).abs() <= 1e-5 * (1.0 + gp.abs()), "{gp} vs {gc}");
}
