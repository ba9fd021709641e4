//! `so8t rl` end to end on the embedded tiny model: the example config runs from a fresh clone;
//! SIGKILL at random moments then `--auto-resume` gives the same metrics and final weights as an
//! uninterrupted run; SIGTERM writes an emergency checkpoint; config errors name the key.

mod common;

use std::path::Path;

use common::{fails, ok, s, sigkill_cycles, steps_logged, wait_for_step};

const CONFIG: &str = "model: builtin:tiny
algorithm: ppo
data:
  train: builtin:sample
  format: tags
rollout:
  prompts_per_step: 2
  group_size: 2
  max_new_tokens: 12
ppo:
  epochs: 2
  minibatch_size: 2
lora:
  r: 4
  alpha: 8
  target_modules: [qkv_proj, o_proj]
optimizer:
  lr: 1.0e-3
training:
  max_steps: 16
  seed: 3
checkpoint:
  every_steps: 1
  keep_rolling: 2
";

/// metrics.jsonl without the wall-clock fields.
fn metrics(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in [
                "rollout_secs",
                "update_secs",
                "rollout_tokens_per_s",
                "step_secs",
            ] {
                o.remove(k);
            }
            v.to_string()
        })
        .collect()
}

/// metrics.jsonl's lines (without the wall-clock fields) as JSON values.
fn metric_values(run: &Path) -> Vec<serde_json::Value> {
    metrics(run)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_same_run(a: &Path, b: &Path, after: &str) {
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), 16, "one line per step");
    assert_eq!(ma, mb, "metrics differ {after}");
    common::assert_same_files(
        a,
        b,
        &[
            "final/gates.safetensors",
            "final/adapter/adapter_model.safetensors",
            "final/value_head.safetensors",
        ],
        after,
    );
}

/// Resumes the RL run in `run` to its end.
fn resume(cfg: &Path, run: &Path) {
    ok(&[
        "rl",
        "--config",
        s(cfg),
        "--run-dir",
        s(run),
        "--auto-resume",
    ]);
}

#[test]
fn the_example_config_runs_and_bakes() {
    let t = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rl-tiny.yaml");
    let run = t.path().join("rl");
    let out = ok(&[
        "rl",
        "--config",
        s(&example),
        "--run-dir",
        s(&run),
        "--max-steps",
        "4",
    ]);
    assert!(out.contains("\"status\": \"completed\""), "{out}");
    let m = metrics(&run);
    assert_eq!(m.len(), 4);
    let first: serde_json::Value = serde_json::from_str(&m[0]).unwrap();
    for k in [
        "reward",
        "reward_class",
        "reward_format",
        "reward_leak",
        "reward_overlength",
        "kl",
        "entropy",
        "value_loss",
        "clip_fraction",
        "alpha",
    ] {
        assert!(first[k].is_number(), "{k} missing in {first}");
    }
    let status = ok(&["rl", "status", s(&run), "--json"]);
    assert!(status.contains("\"kind\": \"rl\""), "{status}");
    let text = ok(&["rl", "status", s(&run)]);
    assert!(text.contains("reward ") && text.contains("kl "), "{text}");
    // The RL result bakes like an SFT run.
    let baked = t.path().join("baked");
    ok(&["bake", "--run", s(&run), "--out", s(&baked)]);
    assert!(baked.join("config.json").exists());
}

#[test]
fn int8_base_and_fixed_length_answers() {
    let t = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rl-tiny.yaml");
    let text = std::fs::read_to_string(example).unwrap();
    let text = text
        .replace("  seed: 42\n", "  seed: 42\n  base_dtype: int8\n")
        .replace(
            "  max_new_tokens: 32\n",
            "  max_new_tokens: 32\n  min_new_tokens: 32\n",
        );
    assert!(text.contains("base_dtype: int8") && text.contains("min_new_tokens: 32"));
    let cfg = t.path().join("rl.yaml");
    std::fs::write(&cfg, text).unwrap();
    let run = t.path().join("rl");
    ok(&[
        "rl",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&run),
        "--max-steps",
        "3",
    ]);
    let m = metric_values(&run);
    assert_eq!(m.len(), 3);
    // The policy starts as the reference (both on the same int8 weights): KL 0 at step 1.
    assert!(m[0]["kl"].as_f64().unwrap().abs() < 1e-5, "{}", m[0]);
    for x in &m {
        assert_eq!(x["answer_tokens"].as_f64(), Some(32.0), "{x}");
        assert!(x["reward"].as_f64().unwrap().is_finite());
    }
    let resolved = std::fs::read_to_string(run.join("config.resolved.yaml")).unwrap();
    assert!(resolved.contains("base_dtype: int8"), "{resolved}");
}

#[test]
fn grpo_with_one_update_per_step_scores_with_the_update_forward() {
    // GRPO, one epoch, one minibatch: the update's forward gives the old log-probabilities, so
    // every ratio is exactly 1 (no clipping, no approximate KL) and the policy starts at the
    // reference (identity gates, zero LoRA B): KL 0 at step 1. Resume stays bit-identical.
    let t = tempfile::tempdir().unwrap();
    let text = CONFIG
        .replace("algorithm: ppo", "algorithm: grpo")
        .replace(
            "  epochs: 2\n  minibatch_size: 2\n",
            "  epochs: 1\n  minibatch_size: 4\n",
        )
        .replace("lora:\n", "so8t:\n  init_scale: 0.0\nlora:\n");
    assert!(text.contains("epochs: 1") && text.contains("init_scale"));
    let cfg = t.path().join("rl.yaml");
    std::fs::write(&cfg, text).unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    ok(&["rl", "--config", s(&cfg), "--run-dir", s(&a)]);
    let m = metric_values(&a);
    assert_eq!(m.len(), 16);
    assert!(m[0]["kl"].as_f64().unwrap().abs() < 1e-4, "{}", m[0]);
    for x in &m {
        assert_eq!(x["updates"].as_u64(), Some(1), "{x}");
        assert_eq!(x["approx_kl"].as_f64(), Some(0.0), "{x}");
        assert_eq!(x["clip_fraction"].as_f64(), Some(0.0), "{x}");
        assert!(x["kl"].as_f64().unwrap().is_finite(), "{x}");
    }
    assert!(
        m.iter().any(|x| x["kl"].as_f64().unwrap().abs() > 1e-6),
        "the policy never moved"
    );
    ok(&[
        "rl",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&b),
        "--stop-after",
        "7",
    ]);
    resume(&cfg, &b);
    let (ma, mb) = (metrics(&a), metrics(&b));
    assert_eq!(ma, mb, "metrics differ after a resume");
}

/// `ppo.micro_batch_size: 1` (every answer its own forward/backward, gradients summed) makes the
/// same updates as whole minibatches: step 1's losses and gradient norm agree, PPO and GRPO.
#[test]
fn micro_batches_make_the_same_update() {
    let t = tempfile::tempdir().unwrap();
    for algo in ["ppo", "grpo"] {
        let step1 = |micro: usize| -> serde_json::Value {
            let text = CONFIG
                .replace("algorithm: ppo", &format!("algorithm: {algo}"))
                .replace(
                    "  minibatch_size: 2\n",
                    &format!("  minibatch_size: 4\n  micro_batch_size: {micro}\n"),
                );
            let cfg = t.path().join(format!("{algo}-{micro}.yaml"));
            std::fs::write(&cfg, text).unwrap();
            let run = t.path().join(format!("{algo}-{micro}"));
            ok(&[
                "rl",
                "--config",
                s(&cfg),
                "--run-dir",
                s(&run),
                "--stop-after",
                "1",
            ]);
            metric_values(&run).swap_remove(0)
        };
        let (whole, micro) = (step1(0), step1(1));
        for k in [
            "loss",
            "policy_loss",
            "value_loss",
            "entropy",
            "grad_norm",
            "approx_kl",
            "kl",
        ] {
            let (a, b) = (whole[k].as_f64().unwrap(), micro[k].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1e-3),
                "{algo} {k}: whole {a} vs micro-batched {b}"
            );
        }
        assert!(
            whole["grad_norm"].as_f64().unwrap() > 0.0,
            "{algo}: {whole}"
        );
        assert_eq!(whole["updates"], micro["updates"], "{algo}");
        assert_eq!(whole["reward"], micro["reward"], "{algo}");
    }
}

#[test]
fn config_errors_name_the_key() {
    let t = tempfile::tempdir().unwrap();
    for (text, key) in [
        (
            "model: builtin:tiny\nalgorithm: grpo\n",
            "rollout.group_size",
        ),
        (
            "model: builtin:tiny\nlora:\n  dropout: 0.1\n",
            "lora.dropout",
        ),
        (
            "model: builtin:tiny\nrollout:\n  temperature: 0\n",
            "rollout.temperature",
        ),
        ("model: builtin:tiny\nppo:\n  clip: 0.1\n", "clip"),
    ] {
        let cfg = t.path().join("rl.yaml");
        std::fs::write(&cfg, text).unwrap();
        let err = fails(&[
            "rl",
            "--config",
            s(&cfg),
            "--run-dir",
            s(&t.path().join("r")),
        ]);
        assert!(err.contains(key), "{text}: {err}");
    }
}

/// SIGKILL at seeded random moments (checkpoints every step, so some kills land inside a
/// checkpoint write), resumed each time with `--auto-resume`: the metrics (rewards, losses, KL,
/// sampled answer lengths) and the final weights equal those of an uninterrupted run.
#[test]
fn sigkill_at_random_moments_then_resume_is_bit_identical() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("rl.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let a = t.path().join("a");
    ok(&["rl", "--config", s(&cfg), "--run-dir", s(&a)]);
    let b = t.path().join("b");
    ok(&[
        "rl",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&b),
        "--stop-after",
        "1",
    ]);
    let kills = sigkill_cycles(
        &[
            "rl",
            "--config",
            s(&cfg),
            "--run-dir",
            s(&b),
            "--auto-resume",
        ],
        &b,
        0x9e37_79b9_7f4a_7c15,
        300,
        8,
    );
    assert!(kills >= 5, "only {kills} kills landed");
    resume(&cfg, &b);
    assert_same_run(&a, &b, &format!("after {kills} kills"));
}

/// SIGTERM: an emergency checkpoint, status interrupted, then a resume to the same end.
#[test]
fn sigterm_writes_an_emergency_checkpoint_that_resumes() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("rl.yaml");
    std::fs::write(
        &cfg,
        CONFIG.replace("every_steps: 1", "every_steps: 0\n  every_minutes: 0"),
    )
    .unwrap();
    let a = t.path().join("a");
    ok(&["rl", "--config", s(&cfg), "--run-dir", s(&a)]);
    let b = t.path().join("b");
    let bin = assert_cmd::cargo::cargo_bin("so8t");
    let mut child = std::process::Command::new(&bin)
        .args(["rl", "--config", s(&cfg), "--run-dir", s(&b)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..3 {
        wait_for_step(&b, steps_logged(&b), &mut child);
    }
    assert!(steps_logged(&b) >= 3, "the run ended before the signal");
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let code = child.wait().unwrap();
    assert!(!code.success(), "an interrupted run exits non-zero");
    let names: Vec<String> = std::fs::read_dir(b.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("-emergency")), "{names:?}");
    let session: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("session.json")).unwrap()).unwrap();
    assert_eq!(session["status"], "interrupted");
    resume(&cfg, &b);
    assert_same_run(&a, &b, "after SIGTERM");
}
