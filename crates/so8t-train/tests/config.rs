//! `train.yaml`: the bundled example parses and validates; bad keys and values are named.

use std::path::Path;

use so8t_train::config::TrainConfig;

#[test]
fn the_bundled_example_parses() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/train-tiny.yaml");
    let c = TrainConfig::from_file(&p).unwrap();
    assert_eq!(c.model.to_str(), Some("builtin:tiny"));
    assert_eq!(c.training.max_steps, 50);
    assert!(c.so8t.enabled && c.pet.enabled && c.lora.enabled);
    let s = c.step_config(50);
    assert_eq!(s.lora.unwrap().r, 8);
    let end = s.alpha.value(49, 50); // the last step's α: near φ⁻², not on it
    assert!(end > 0.381_966 && end < 0.40, "{end}");
    assert!(!s.gradient_checkpointing);
}

#[test]
fn gradient_checkpointing_is_mapped_and_hash_neutral_when_off() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("c.yaml");
    std::fs::write(&p, "lora:\n  dropout: 0\n").unwrap();
    let off = TrainConfig::from_file(&p).unwrap();
    std::fs::write(
        &p,
        "lora:\n  dropout: 0\ntraining:\n  gradient_checkpointing: false\n",
    )
    .unwrap();
    assert_eq!(TrainConfig::from_file(&p).unwrap().hash(), off.hash());
    std::fs::write(
        &p,
        "lora:\n  dropout: 0\ntraining:\n  gradient_checkpointing: true\n",
    )
    .unwrap();
    let on = TrainConfig::from_file(&p).unwrap();
    assert!(on.step_config(10).gradient_checkpointing);
    assert_ne!(on.hash(), off.hash());
}

#[test]
fn bad_keys_and_values_are_named() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("c.yaml");
    for (text, want) in [
        ("lora:\n  rank: 4\n", "rank"),
        ("optimizer:\n  lr: -1\n", "optimizer.lr"),
        ("training:\n  batch_size: 0\n", "training.batch_size"),
        ("alpha:\n  schedule: sigmoid\n  width: 0\n", "alpha.width"),
        ("data: [1, 2\n", "c.yaml"),
        ("training:\n  device: tpu\n", "training.device"),
        ("training:\n  dtype: f64\n", "training.dtype"),
    ] {
        std::fs::write(&p, text).unwrap();
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn presets_lay_under_the_file_and_unknown_ones_are_named() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("fast.yaml");
    std::fs::write(
        &p,
        "preset: fast\nmodel: m\ndata:\n  train: d.jsonl\nlora:\n  r: 16\n",
    )
    .unwrap();
    let c = TrainConfig::from_file(&p).unwrap();
    // From the preset…
    assert_eq!(c.training.epochs, 1);
    assert_eq!(c.data.max_seq_len, 1024);
    assert_eq!(c.so8t.layer_indices, "spread:8");
    assert_eq!(c.lora.alpha, 64.0);
    assert_eq!(c.training.gradient_accumulation_steps, 16);
    assert_eq!(c.training.base_dtype, "int8");
    // …under the file's own values, and paths still relative to the file.
    assert_eq!(c.lora.r, 16);
    assert_eq!(c.model, t.path().join("m"));
    let standard = t.path().join("standard.yaml");
    std::fs::write(&standard, "preset: standard\n").unwrap();
    let s = TrainConfig::from_file(&standard).unwrap();
    assert_eq!(
        (s.training.epochs, s.data.max_seq_len, s.lora.r),
        (3, 2048, 64)
    );
    std::fs::write(&p, "preset: turbo\n").unwrap();
    let e = TrainConfig::from_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("turbo") && e.contains("fast") && e.contains("standard"),
        "{e}"
    );
    std::fs::write(&p, "preset: fast\ntraining:\n  epoks: 2\n").unwrap();
    let e = TrainConfig::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("epoks") && e.contains("epochs"), "{e}");
}

#[test]
fn the_device_is_not_part_of_the_run_identity() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("c.yaml");
    std::fs::write(&p, "lora:\n  dropout: 0\n").unwrap();
    let auto = TrainConfig::from_file(&p).unwrap();
    assert_eq!(auto.training.device, "auto");
    std::fs::write(&p, "lora:\n  dropout: 0\ntraining:\n  device: cuda:1\n").unwrap();
    let cuda = TrainConfig::from_file(&p).unwrap();
    assert_eq!(cuda.training.device, "cuda:1");
    assert_eq!(cuda.hash(), auto.hash());
    // ... but the dtype is.
    std::fs::write(&p, "lora:\n  dropout: 0\ntraining:\n  dtype: bf16\n").unwrap();
    assert_ne!(TrainConfig::from_file(&p).unwrap().hash(), auto.hash());
}

/// `rl.yaml`: the RL defaults hold inside blocks a file names in part; errors name the key.
#[test]
fn rl_config_defaults_and_errors() {
    use so8t_train::rl::config::{Algorithm, RlConfig};
    let base = std::path::Path::new("/cfg");
    let c = RlConfig::from_yaml(
        "model: m\nlora:\n  r: 4\nso8t:\n  layer_indices: '0'\noptimizer:\n  warmup_steps: 3\n",
        base,
        "rl.yaml",
    )
    .unwrap();
    assert_eq!(c.model, base.join("m"));
    assert_eq!((c.lora.r, c.lora.alpha, c.lora.dropout), (4, 16.0, 0.0));
    assert_eq!(c.so8t.init_scale, 0.0);
    assert_eq!(c.so8t.layer_indices, "0");
    assert_eq!((c.optimizer.lr, c.optimizer.warmup_steps), (1e-5, 3));
    assert_eq!(c.algorithm, Algorithm::Ppo);
    assert_eq!(
        c,
        RlConfig::from_yaml(
            "model: m\nlora: {r: 4}\nso8t: {layer_indices: '0'}\noptimizer: {warmup_steps: 3}\n",
            base,
            "x"
        )
        .unwrap()
    );
    let d = RlConfig::from_yaml("model: m\n", base, "rl.yaml").unwrap();
    assert_eq!(d.lora, RlConfig::default().lora);
    assert_eq!(d.so8t, RlConfig::default().so8t);
    for (text, key) in [
        ("model: m\nppo:\n  epochs: 0\n", "ppo.epochs"),
        ("model: m\nalgorithm: grpo\n", "rollout.group_size"),
        ("model: m\nrolout: {}\n", "rolout"),
        ("{}\n", "model"),
        ("model: m\nkl:\n  target: -1\n", "kl.beta"),
        (
            "model: m\ntraining:\n  base_dtype: int4\n",
            "training.base_dtype",
        ),
        (
            "model: m\nrollout:\n  max_new_tokens: 8\n  min_new_tokens: 9\n",
            "rollout.min_new_tokens",
        ),
    ] {
        let e = RlConfig::from_yaml(text, base, "rl.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}
