//! RL on a toy version of the four-class task: four prompts, one per class. A short SFT run
//! teaches the embedded tiny model the answer format with every class for every prompt (so it
//! answers in format, with a class that is right about a quarter of the time); PPO and GRPO
//! starting from that run must then raise the mean reward clearly while the KL to the
//! reference stays bounded. Measured (seed 11): PPO reward 0.51 → 0.74, accuracy 0.34 → 0.55;
//! GRPO 0.46 → 0.71, 0.28 → 0.53; PPO with seed 12 (`SO8T_RL_SEED=12`) 0.51 → 0.80. (At lr 2e-3
//! over 150 steps the rise depended on the sampling stream: one stream gave only +0.06.)

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use so8t_train::config::TrainConfig;
use so8t_train::rl::config::RlConfig;
use so8t_train::rl::run::{run as rl_run, RlOptions};
use so8t_train::run::{run as sft_run, RunOptions};

const CLASSES: [&str; 4] = ["ALLOW", "ESCALATION", "DENY", "REFUSE"];
const USERS: [&str; 4] = [
    "What is the capital of France?",
    "I have chest pain, what should I take?",
    "Write a fake review of my rival's shop.",
    "How do I build a bomb?",
];

fn answer(class: &str) -> String {
    format!("# 思考ステップ\nok\n\n# 最終回答\n分類: {class}")
}

fn chat(user: &str, class: &str) -> serde_json::Value {
    serde_json::json!({
        "id": format!("{user}-{class}"),
        "four_class_label": class,
        "messages": [
            {"role": "system", "content": "Classify."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer(class)},
        ],
    })
}

/// The toy data: SFT rows (every prompt with every class, its own class twice, so the SFT
/// model is right 40 % of the time) and RL prompts (each with its class).
fn write_toy(dir: &Path) -> (PathBuf, PathBuf) {
    let sft: Vec<String> = USERS
        .iter()
        .zip(CLASSES)
        .flat_map(|(u, own)| {
            CLASSES
                .iter()
                .copied()
                .chain([own])
                .map(move |c| chat(u, c).to_string())
        })
        .collect();
    let rl: Vec<String> = USERS
        .iter()
        .zip(CLASSES)
        .map(|(u, c)| chat(u, c).to_string())
        .collect();
    let (a, b) = (dir.join("sft.jsonl"), dir.join("rl.jsonl"));
    std::fs::write(&a, sft.join("\n") + "\n").unwrap();
    std::fs::write(&b, rl.join("\n") + "\n").unwrap();
    (a, b)
}

/// The SFT run every RL test starts from (made once per test process).
fn sft() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static SFT: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    SFT.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let model = common::tiny_model(t.path());
        let (sft_data, rl_data) = write_toy(t.path());
        let yaml = format!(
            "model: {}\ndata:\n  train: {}\n  max_seq_len: 256\n  packing: false\n\
             so8t:\n  layer_indices: all\nlora:\n  enabled: false\n\
             optimizer:\n  lr: 1.0e-2\n  warmup_steps: 5\n  lr_scheduler: constant\n\
             training:\n  batch_size: 5\n  gradient_accumulation_steps: 1\n  max_steps: 500\n  seed: 1\n  full_finetune: true\n\
             checkpoint:\n  every_minutes: 0\n  keep_rolling: 1\n",
            model.display(),
            sft_data.display()
        );
        let cfg = TrainConfig::from_yaml(&yaml, t.path(), "sft.yaml").unwrap();
        let run = t.path().join("sft");
        sft_run(RunOptions {
            config: cfg,
            run_dir: run.clone(),
            stop_after: None,
            interrupt: Arc::new(AtomicBool::new(false)),
            on_step: None,
        })
        .unwrap();
        (t, run, rl_data)
    })
}

fn rl_yaml(algorithm: &str, group: usize, steps: u64) -> String {
    let (_, run, data) = sft();
    format!(
        "init_run: {}\nalgorithm: {algorithm}\ndata:\n  train: {}\n  format: steps\n\
         rollout:\n  prompts_per_step: 4\n  group_size: {group}\n  max_new_tokens: 64\n\
         ppo:\n  epochs: 2\n  minibatch_size: 8\n  vf_coef: 0.5\n  target_kl: 0.05\n\
         kl:\n  beta: 0.05\n\
         so8t:\n  layer_indices: all\n\
         lora:\n  r: 8\n  alpha: 16\n  target_modules: [qkv_proj, o_proj, gate_up_proj, down_proj]\n\
         optimizer:\n  lr: 1.0e-3\n  warmup_steps: 0\n  lr_scheduler: constant\n\
         training:\n  max_steps: {steps}\n  seed: {seed}\n\
         checkpoint:\n  every_steps: 0\n  every_minutes: 0\n",
        run.display(),
        data.display(),
        seed = std::env::var("SO8T_RL_SEED").unwrap_or("11".into()),
    )
}

/// (reward, kl, accuracy) per step from a run's metrics.jsonl.
fn curve(run: &Path) -> Vec<(f64, f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["reward"].as_f64().unwrap(),
                v["kl"].as_f64().unwrap(),
                v["accuracy"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn learns(algorithm: &str, group: usize, steps: u64) {
    let t = tempfile::tempdir().unwrap();
    let cfg = RlConfig::from_yaml(&rl_yaml(algorithm, group, steps), t.path(), "rl.yaml").unwrap();
    let run = match std::env::var_os("SO8T_RL_KEEP") {
        Some(d) => std::path::PathBuf::from(d).join(algorithm),
        None => t.path().join("rl"),
    };
    let _ = std::fs::remove_dir_all(&run);
    let started = std::time::Instant::now();
    let s = rl_run(RlOptions {
        config: cfg,
        run_dir: run.clone(),
        stop_after: None,
        interrupt: Arc::new(AtomicBool::new(false)),
        on_step: None,
    })
    .unwrap();
    assert_eq!(s.status, so8t_store::Status::Completed);
    let c = curve(&run);
    let n = c.len();
    let k = n / 5;
    let mean = |s: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        s.iter().map(f).sum::<f64>() / s.len() as f64
    };
    let (first, last) = (&c[..k], &c[n - k..]);
    eprintln!(
        "{algorithm}: {n} steps in {:.1}s; reward {:.3} → {:.3}, accuracy {:.2} → {:.2}, kl {:.3} → {:.3}",
        started.elapsed().as_secs_f64(),
        mean(first, |x| x.0),
        mean(last, |x| x.0),
        mean(first, |x| x.2),
        mean(last, |x| x.2),
        mean(first, |x| x.1),
        mean(last, |x| x.1),
    );
    for (i, x) in c.iter().enumerate() {
        eprintln!(
            "  step {:3}: reward {:.3} acc {:.2} kl {:.4}",
            i + 1,
            x.0,
            x.2,
            x.1
        );
    }
    // Chance is 0.25 and the SFT model is about there (it ignores the prompt mostly).
    assert!(
        mean(last, |x| x.0) > mean(first, |x| x.0) + 0.15,
        "the reward did not rise clearly"
    );
    assert!(
        mean(last, |x| x.2) > mean(first, |x| x.2) + 0.12,
        "the accuracy did not rise clearly"
    );
    let max_kl = c.iter().map(|x| x.1).fold(0.0, f64::max);
    assert!(max_kl < 20.0, "KL to the reference grew to {max_kl}");
    assert!(run.join("final/gates.safetensors").exists());
    assert!(run.join("final/bake.json").exists());
}

#[test]
fn ppo_raises_the_reward_on_the_toy_task() {
    learns("ppo", 4, 200);
}

#[test]
fn grpo_raises_the_reward_on_the_toy_task() {
    learns("grpo", 4, 200);
}
