//! `so8t train` end to end on the embedded tiny model: a run stopped part-way and resumed with
//! `--auto-resume` gives the same losses and final weights as an uninterrupted run; `status`,
//! `final/` and config errors.

mod common;

use std::path::Path;

use common::{fails, ok, s, sigkill_cycles, so8t, steps_logged};

const CONFIG: &str = "model: builtin:tiny
data:
  train: builtin:sample
  max_seq_len: 1200
  packing: false
lora:
  r: 4
  alpha: 8
  dropout: 0.1
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

/// The run database's per-step record, without the wall-clock parts (time, tokens/s, load).
fn db_steps(run: &Path) -> Vec<String> {
    let db = so8t_store::Store::open_read_only(run).unwrap();
    db.metrics(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|m| {
            format!(
                "{} {} {} {} {} {} {} {} {:?} {}",
                m.step,
                m.loss,
                m.ce,
                m.pet,
                m.orth,
                m.alpha,
                m.pet_lambda,
                m.lr,
                m.loss_smooth,
                m.in_transition
            )
        })
        .collect()
}

/// Asserts that two runs logged the same losses (in `metrics.jsonl` and `run.db`) and wrote
/// byte-identical gates and adapter.
fn assert_same_run(a: &Path, b: &Path, after: &str) {
    assert_eq!(losses(a), losses(b), "loss sequences differ {after}");
    let (da, dbb) = (db_steps(a), db_steps(b));
    assert_eq!(da.len(), losses(a).len(), "one database row per step");
    assert_eq!(da, dbb, "run databases differ {after}");
    common::assert_same_files(
        a,
        b,
        &[
            "final/gates.safetensors",
            "final/adapter/adapter_model.safetensors",
        ],
        after,
    );
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
    let status = ok(&["train", "status", "--json", s(&b)]);
    assert!(
        status.contains("\"interrupted\"") && status.contains("\"step\": 3"),
        "{status}"
    );
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["last_metric"]["step"], 3, "{status}");
    assert!(v["last_metric"]["system"]["rss_bytes"].as_u64().unwrap() > 1 << 20);
    let kinds: Vec<&str> = v["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "checkpoints/step-00000002-rolling",
            "checkpoints/step-00000003-rolling"
        ]
    );
    // An unfinished run has nothing to bake yet.
    let baked = t.path().join("baked");
    let e = fails(&["bake", "--run", s(&b), "--out", s(&baked)]);
    assert!(e.contains("not a finished training run"), "{e}");
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
    assert_same_run(&a, &b, "after a stop and a resume");
    assert!(a.join("final/README.md").exists() && a.join("final/config.yaml").exists());
    let status = ok(&["train", "status", s(&a)]);
    assert!(status.contains("status       completed"), "{status}");
    assert!(status.contains("step         6/6"), "{status}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["train", "status", "--json", s(&b)])).unwrap();
    assert_eq!(v["sessions"], 2);
    assert_eq!(v["session"]["resumed_from_step"], 3);
    assert_eq!(v["session"]["status"], "completed");
    // The finished run bakes into a plain model whose logits equal the gated model's.
    let out = ok(&["bake", "--run", s(&a), "--out", s(&baked)]);
    assert_eq!(out.matches("check prompt").count(), 3, "{out}");
    for line in out.lines() {
        let d: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(d < 1e-3, "{line}");
    }
    assert!(baked.join("config.json").exists() && baked.join("model.safetensors").exists());
}

#[test]
fn config_errors_name_the_key() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("bad.yaml");
    std::fs::write(&cfg, "model: builtin:tiny\ntraining:\n  batch_sise: 2\n").unwrap();
    let r = t.path().join("r");
    let e = fails(&["train", "--config", s(&cfg), "--run-dir", s(&r)]);
    assert!(
        e.contains("batch_sise") && e.contains("batch_size") && e.contains("bad.yaml"),
        "{e}"
    );
    std::fs::write(
        &cfg,
        "model: /nonexistent\ndata:\n  train: builtin:sample\n",
    )
    .unwrap();
    let r2 = t.path().join("r2");
    let e = fails(&["train", "--config", s(&cfg), "--run-dir", s(&r2)]);
    assert!(
        e.contains("/nonexistent") && e.contains("not a model folder"),
        "{e}"
    );
}

/// SIGKILL at seeded random moments (checkpoints every step, so some kills land inside a
/// checkpoint write), resumed each time with `--auto-resume`: the loss sequence and the final
/// weights equal those of an uninterrupted run.
#[test]
fn sigkill_at_random_moments_then_resume_is_bit_identical() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("train.yaml");
    let config = CONFIG
        .replace("max_steps: 6", "max_steps: 30")
        .replace("every_steps: 2", "every_steps: 1");
    std::fs::write(&cfg, config).unwrap();
    let a = t.path().join("a");
    ok(&["train", "--config", s(&cfg), "--run-dir", s(&a)]);
    let b = t.path().join("b");
    // Prepare the run folder (model, data, tokens) once without killing, to spend the kills on
    // the training steps.
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&b),
        "--stop-after",
        "1",
    ]);
    // Checkpoints are written after every step, so some kills land inside one.
    let kills = sigkill_cycles(
        &[
            "train",
            "--config",
            s(&cfg),
            "--run-dir",
            s(&b),
            "--auto-resume",
        ],
        &b,
        0x2545_f491_4f6c_dd1d,
        500,
        12,
    );
    assert!(kills >= 10, "only {kills} kills landed");
    // The kills interrupted training itself, not just start-up: steps were made between them.
    let session: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("session.json")).unwrap()).unwrap();
    let reached = session["step"].as_u64().unwrap();
    assert!(
        reached >= 8,
        "only step {reached} reached during the kill cycles"
    );
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&b),
        "--auto-resume",
    ]);
    assert_same_run(&a, &b, &format!("after {kills} kills"));
}

/// SIGTERM: the run stops at the next step with an emergency checkpoint, marks itself
/// interrupted, and resumes from there to completion.
#[test]
fn sigterm_writes_an_emergency_checkpoint_that_resumes() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("train.yaml");
    let config = CONFIG
        .replace("max_steps: 6", "max_steps: 20")
        .replace("every_steps: 2", "every_steps: 100");
    std::fs::write(&cfg, config).unwrap();
    let b = t.path().join("b");
    let bin = assert_cmd::cargo::cargo_bin("so8t");
    let child = std::process::Command::new(&bin)
        .args(["train", "--config", s(&cfg), "--run-dir", s(&b)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while steps_logged(&b) < 2 {
        assert!(start.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("emergency checkpoint"), "{err}");
    let names: Vec<String> = std::fs::read_dir(b.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("-emergency")), "{names:?}");
    assert!(ok(&["train", "status", "--json", s(&b)]).contains("\"interrupted\""));
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&b),
        "--auto-resume",
    ]);
    let status = ok(&["train", "status", "--json", s(&b)]);
    assert!(
        status.contains("\"completed\"") && status.contains("\"step\": 20"),
        "{status}"
    );
}

/// A full disk while saving a checkpoint: a clear error naming the file, the previous checkpoint
/// intact; with space again the run resumes from it and ends equal to an uninterrupted run. The
/// disk is a small tmpfs mounted in a private mount namespace (`unshare`).
#[test]
fn a_full_disk_fails_clearly_and_keeps_the_previous_checkpoint() {
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
        "2",
    ]);
    let used: u64 = String::from_utf8(
        std::process::Command::new("du")
            .args(["-sb", s(&b)])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .next()
    .unwrap()
    .parse()
    .unwrap();
    // Room for the copy and a little more, not for another checkpoint (about 200 KiB).
    let size = used + 96 * 1024;
    let mnt = t.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let back = t.path().join("back");
    let bin = assert_cmd::cargo::cargo_bin("so8t");
    let script = format!(
        "set -u; mount -t tmpfs -o size={size} tmpfs '{m}' || exit 90; cp -a '{b}' '{m}/b' || exit 91; \
         '{bin}' train --config '{cfg}' --run-dir '{m}/b' --auto-resume 2>'{m}/../err.txt'; rc=$?; \
         cp -a '{m}/b' '{back}'; exit $rc",
        m = mnt.display(),
        b = b.display(),
        bin = bin.display(),
        cfg = cfg.display(),
        back = back.display(),
    );
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let ns = if root { "-m" } else { "-rm" };
    let st = std::process::Command::new("unshare")
        .args([ns, "sh", "-c", &script])
        .status()
        .unwrap();
    assert_ne!(
        st.code(),
        Some(90),
        "could not mount a tmpfs in a mount namespace"
    );
    assert_ne!(st.code(), Some(91), "the run did not fit the tmpfs");
    let err = std::fs::read_to_string(t.path().join("err.txt")).unwrap();
    assert_eq!(st.code(), Some(2), "{err}");
    // Whichever write hit the full disk first (the run database or a checkpoint file), the
    // error names the cause and the file.
    assert!(
        (err.contains("No space left on device") || err.contains("disk is full"))
            && err.contains("/b/"),
        "{err}"
    );
    // The checkpoint of step 2 survived intact; the failed save left nothing behind.
    let names: Vec<String> = std::fs::read_dir(back.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "step-00000002-rolling"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with(".tmp-")), "{names:?}");
    // The session ended failed, or (when the database itself was full) reads as a dead process.
    let status = ok(&["train", "status", "--json", s(&back)]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let st = v["session"]["status"].as_str().unwrap();
    assert!(
        st == "failed" || (st == "running" && v["stale"] == true),
        "{status}"
    );
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&back),
        "--auto-resume",
    ]);
    assert_same_run(&a, &back, "after a full disk");
}

/// Without `--run-dir` a run lives in `runs/<config name>-<hash>` and `--auto-resume` finds the
/// unfinished run of the same config there.
#[test]
fn auto_resume_finds_the_run_of_the_config() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("tiny.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let run = |args: &[&str]| {
        let o = assert_cmd::Command::cargo_bin("so8t")
            .unwrap()
            .current_dir(t.path())
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    run(&["train", "--config", "tiny.yaml", "--stop-after", "2"]);
    let runs: Vec<_> = std::fs::read_dir(t.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let name = runs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("tiny-") && name.len() == "tiny-".len() + 8,
        "{name}"
    );
    let out = run(&["train", "--config", "tiny.yaml", "--auto-resume"]);
    assert!(out.contains("\"completed\""), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["train", "status", "--json", s(&runs[0])])).unwrap();
    assert_eq!(v["session"]["resumed_from_step"], 2);
    assert_eq!(v["session"]["step"], 6);
}
