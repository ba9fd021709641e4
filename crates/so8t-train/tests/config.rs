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
    ] {
        std::fs::write(&p, text).unwrap();
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}
