//! `so8t train` end to end on the embedded tiny model: a run stopped part-way and resumed with
//! `--auto-resume` gives the same losses and final weights as an uninterrupted run; `status`,
//! `final/` and config errors.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;

fn so8t(args: &[&str]) -> Output {
    Command::cargo_bin("so8t")
        .unwrap()
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = so8t(args);
    assert!(
        o.status.success(),
        "so8t {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const CONFIG: &str = "model: builtin:tiny
data:
  train: builtin:sample
  max_seq_len: 1200
  packing: false
lora:
  r: 4
  alpha: 8
  dropout: 0.0
  target_modules: [qkv_proj, o_proj]
optimizer:
  lr: 5.0e-3
  warmup_steps: 1
training:
  batch_size: 1
  gradient_accumulation_steps: 2
  max_steps: 6
  seed: 5
checkpoint:
  every_steps: 2
  keep_rolling: 2
";

/// Losses per step from metrics.jsonl.
fn losses(run: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].to_string())
        })
        .collect()
}

#[test]
fn stopped_and_resumed_run_equals_an_uninterrupted_one() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("train.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let a = t.path().join("a");
    ok(&["train", "--config", s(&cfg), "--run-dir", s(&a)]);
    let b = t.path().join("b");
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&b),
        "--stop-after",
        "3",
    ]);
    let status = ok(&["train", "status", s(&b)]);
    assert!(
        status.contains("\"interrupted\"") && status.contains("\"step\": 3"),
        "{status}"
    );
    // Without --auto-resume an existing run is not overwritten.
    let o = so8t(&["train", "--config", s(&cfg), "--run-dir", s(&b)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--auto-resume"));
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&b),
        "--auto-resume",
    ]);
    assert_eq!(losses(&a).len(), 6);
    assert_eq!(losses(&a), losses(&b), "loss sequences differ");
    for f in [
        "final/gates.safetensors",
        "final/adapter/adapter_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    assert!(a.join("final/README.md").exists() && a.join("final/config.yaml").exists());
    let status = ok(&["train", "status", s(&a)]);
    assert!(status.contains("\"completed\""), "{status}");
}

#[test]
fn config_errors_name_the_key() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("bad.yaml");
    std::fs::write(&cfg, "model: builtin:tiny\ntraining:\n  batch_sise: 2\n").unwrap();
    let o = so8t(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&t.path().join("r")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("batch_sise") && e.contains("batch_size") && e.contains("bad.yaml"),
        "{e}"
    );
    std::fs::write(
        &cfg,
        "model: /nonexistent\ndata:\n  train: builtin:sample\n",
    )
    .unwrap();
    let o = so8t(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&t.path().join("r2")),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("/nonexistent") && e.contains("not a model folder"),
        "{e}"
    );
}
