//! Checkpoints on the embedded tiny model: a restored run continues bit-identically, damaged
//! checkpoints are passed over, leftovers are ignored, rolling retention, shape checks.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use candle_core::{DType, Device};
use common::{pattern_batch, step_config, tiny_model};
use so8t_model::io::tensor_bytes;
use so8t_model::lora::LoraConfig;
use so8t_model::Model;
use so8t_train::batch::Batch;
use so8t_train::checkpoint::{latest_valid, restore, save, CheckpointKind, TrainState};
use so8t_train::optim::LrDecay;
use so8t_train::step::{StepConfig, Trainer};

/// The shared config with a schedule that depends on the restored step: cosine decay, one
/// warm-up step, weight decay.
fn config(total: u64) -> StepConfig {
    let mut c = step_config(total);
    c.optim.weight_decay = 0.01;
    c.lr_decay = LrDecay::Cosine;
    c.warmup_steps = 1;
    c
}

fn trainer(model_dir: &Path, cfg: StepConfig) -> Trainer {
    let model = Model::load(model_dir, DType::F32, &Device::Cpu).unwrap();
    Trainer::new(model, cfg).unwrap()
}

/// Two rows of a repeating pattern, one padded.
fn batch() -> Batch {
    pattern_batch(40, 25)
}

fn state(step: u64, kind: CheckpointKind, losses: &[f64]) -> TrainState {
    TrainState {
        step,
        epoch: 1,
        cursor: step * 2 + 1,
        rng_state: 0xdead_beef_0000 + step,
        best_loss: losses.iter().copied().reduce(f64::min),
        loss_history: losses.to_vec(),
        config_hash: "abc123".into(),
        kind,
        created_unix_ms: 1_700_000_000_000 + step,
        extra: None,
    }
}

/// Raw bytes of every variable and moment, by name.
fn snapshot(tr: &Trainer) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (n, v) in tr.opt.vars() {
        out.insert(n.clone(), tensor_bytes(v.as_tensor()).unwrap());
    }
    for (n, mo) in &tr.opt.moments {
        out.insert(format!("{n}/m"), tensor_bytes(&mo.m).unwrap());
        out.insert(format!("{n}/v"), tensor_bytes(&mo.v).unwrap());
    }
    out
}

#[test]
fn restored_run_continues_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let b = batch();
    let one = std::slice::from_ref(&b);

    let mut a = trainer(&model, config(6));
    let la: Vec<f64> = (0..6).map(|_| a.step(one).unwrap().loss).collect();

    let mut bt = trainer(&model, config(6));
    let lb: Vec<f64> = (0..3).map(|_| bt.step(one).unwrap().loss).collect();
    assert_eq!(lb, la[..3]);
    let run = dir.path().join("run");
    let st = state(3, CheckpointKind::Rolling, &lb);
    let saved = save(&run, &bt, &st, 5).unwrap();
    assert_eq!(saved, run.join("checkpoints/step-00000003-rolling"));
    for f in [
        "trainable.safetensors",
        "state.json",
        "gates.safetensors",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "manifest.json",
    ] {
        assert!(saved.join(f).is_file(), "{f} missing");
    }
    let hidden: Vec<_> = fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    drop(bt);

    let found = latest_valid(&run).unwrap().unwrap();
    assert_eq!(found.dir, saved);
    assert_eq!(found.state, st);
    assert!(found.skipped.is_empty());

    let mut c = trainer(&model, config(6));
    assert_ne!(snapshot(&c), snapshot(&a));
    let got = restore(&mut c, &found.dir).unwrap();
    assert_eq!(got, st);
    assert_eq!(c.opt.step, 3);
    let lc: Vec<f64> = (0..3)
        .map(|_| {
            let m = c.step(one).unwrap();
            m.loss
        })
        .collect();
    assert_eq!(lc, la[3..], "losses after the restore differ");
    assert_eq!(c.opt.step, a.opt.step);
    let (sa, sc) = (snapshot(&a), snapshot(&c));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sc.keys().collect::<Vec<_>>());
    assert!(sa.keys().any(|k| k.starts_with("gates.")) && sa.keys().any(|k| k.ends_with("/v")));
    for (k, v) in &sa {
        assert!(v == &sc[k], "`{k}` differs after restore + 3 steps");
    }
}

fn expect_fallback(run: &Path, damaged: &Path, file: &str) {
    let found = latest_valid(run).unwrap().unwrap();
    assert_eq!(found.state.step, 2, "{:?}", found.skipped);
    assert_eq!(found.skipped.len(), 1, "{:?}", found.skipped);
    assert_eq!(found.skipped[0].0, damaged);
    assert!(
        found.skipped[0].1.starts_with(file),
        "{:?}",
        found.skipped[0]
    );
}

#[test]
fn damaged_checkpoints_are_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let b = batch();
    let mut tr = trainer(&model, config(10));
    let run = dir.path().join("run");
    assert!(latest_valid(&run).unwrap().is_none());
    tr.step(std::slice::from_ref(&b)).unwrap();
    save(
        &run,
        &tr,
        &state(2, CheckpointKind::Rolling, &[1.0, 0.5]),
        5,
    )
    .unwrap();
    let st4 = state(4, CheckpointKind::Rolling, &[1.0, 0.5, 0.4, 0.3]);
    let d4 = save(&run, &tr, &st4, 5).unwrap();
    assert_eq!(latest_valid(&run).unwrap().unwrap().state.step, 4);
    let f = d4.join("trainable.safetensors");
    let bytes = fs::read(&f).unwrap();

    // Truncated.
    fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    expect_fallback(&run, &d4, "trainable.safetensors: size");
    let err = restore(&mut tr, &d4).unwrap_err().to_string();
    assert!(err.contains("trainable.safetensors"), "{err}");

    // One flipped byte deep in the data (same size).
    save(&run, &tr, &st4, 5).unwrap(); // replaces the damaged folder
    assert_eq!(latest_valid(&run).unwrap().unwrap().state.step, 4);
    let mut flipped = bytes.clone();
    let i = flipped.len() - 5;
    flipped[i] ^= 0x10;
    fs::write(&f, &flipped).unwrap();
    expect_fallback(&run, &d4, "trainable.safetensors: sha256 mismatch");

    // state.json removed.
    save(&run, &tr, &st4, 5).unwrap();
    fs::remove_file(d4.join("state.json")).unwrap();
    expect_fallback(&run, &d4, "state.json");

    // Manifest removed.
    save(&run, &tr, &st4, 5).unwrap();
    fs::remove_file(d4.join("manifest.json")).unwrap();
    expect_fallback(&run, &d4, "manifest.json");

    // Everything damaged: nothing to resume from.
    fs::remove_file(run.join("checkpoints/step-00000002-rolling/gates.safetensors")).unwrap();
    let none = latest_valid(&run).unwrap();
    assert!(none.is_none());
}

fn names(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn leftovers_are_ignored_and_rolling_retention_spares_final_and_emergency() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let tr = trainer(&model, config(10));
    let run = dir.path().join("run");
    save(&run, &tr, &state(1, CheckpointKind::Rolling, &[]), 3).unwrap();
    // An interrupted save of a newer step: a hidden temp folder with a partial file.
    let tmp = run.join("checkpoints/.tmp-step-00000009-rolling-4242");
    fs::create_dir_all(&tmp).unwrap();
    fs::write(tmp.join("trainable.safetensors"), b"partial").unwrap();
    let found = latest_valid(&run).unwrap().unwrap();
    assert_eq!(found.state.step, 1);
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);

    save(&run, &tr, &state(2, CheckpointKind::Final, &[]), 3).unwrap();
    assert!(!tmp.exists(), "the next save cleans leftovers");
    save(&run, &tr, &state(3, CheckpointKind::Emergency, &[]), 3).unwrap();
    for s in 4..=9 {
        save(&run, &tr, &state(s, CheckpointKind::Rolling, &[]), 3).unwrap();
    }
    assert_eq!(
        names(&run),
        [
            "step-00000002-final",
            "step-00000003-emergency",
            "step-00000007-rolling",
            "step-00000008-rolling",
            "step-00000009-rolling",
        ]
    );
    // Same step: the emergency checkpoint wins over the rolling one.
    save(&run, &tr, &state(9, CheckpointKind::Emergency, &[]), 3).unwrap();
    let found = latest_valid(&run).unwrap().unwrap();
    assert_eq!(found.state.kind, CheckpointKind::Emergency);
    assert_eq!(found.state.step, 9);
    // keep_rolling = 1 keeps only the newest rolling one.
    save(&run, &tr, &state(10, CheckpointKind::Rolling, &[]), 1).unwrap();
    assert_eq!(
        names(&run),
        [
            "step-00000002-final",
            "step-00000003-emergency",
            "step-00000009-emergency",
            "step-00000010-rolling",
        ]
    );
}

#[test]
fn restore_rejects_another_lora_rank() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut tr = trainer(&model, config(10));
    tr.step(std::slice::from_ref(&batch())).unwrap();
    let run = dir.path().join("run");
    let d = save(&run, &tr, &state(1, CheckpointKind::Final, &[2.0]), 5).unwrap();

    let mut cfg = config(10);
    cfg.lora = Some(LoraConfig::new(4, 16.0, &["qkv_proj", "o_proj"]));
    let mut other = trainer(&model, cfg);
    let before = snapshot(&other);
    let err = restore(&mut other, &d).unwrap_err().to_string();
    assert!(
        err.contains("variable `base_model.model.model.layers.") && err.contains("lora_"),
        "{err}"
    );
    assert!(err.contains("shape"), "{err}");
    assert_eq!(other.opt.step, 0);
    assert!(
        snapshot(&other) == before,
        "a failed restore changed the trainer"
    );

    // Another set of variables (gates off): the error names the missing one.
    let mut cfg = config(10);
    cfg.gates.enabled = false;
    let mut no_gates = trainer(&model, cfg);
    let err = restore(&mut no_gates, &d).unwrap_err().to_string();
    assert!(err.contains("variable `gates.0`"), "{err}");
}
