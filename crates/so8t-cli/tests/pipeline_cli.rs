//! `so8t quickstart` / `so8t pipeline`: model B beats model A; SIGKILL at random moments
//! (inside training, while a GGUF is staged, during evaluation) and resuming gives the artifacts
//! of an uninterrupted run; a damaged journal or step output is detected and redone; a locked
//! folder is refused; `pipeline status` reports the steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_so8t");

/// The crash-test settings: the quickstart config, shortened.
const SMALL: [&str; 4] = ["--train-steps", "120", "--eval-limit", "8"];

fn quickstart(dir: &Path, hold: Option<&str>) -> Child {
    let mut c = Command::new(BIN);
    c.args(["quickstart", "--out", dir.to_str().unwrap()])
        .args(SMALL)
        .env("SO8T_THREADS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(h) = hold {
        c.env("SO8T_PIPELINE_TEST_HOLD", h);
    }
    c.spawn().unwrap()
}

fn finish(c: Child) -> (bool, String) {
    let o = c.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// The journal's JSON (after its checksum line).
fn journal(dir: &Path) -> Value {
    std::fs::read_to_string(dir.join("pipeline.json"))
        .ok()
        .and_then(|t| {
            t.split_once('\n')
                .and_then(|(_, j)| serde_json::from_str(j).ok())
        })
        .unwrap_or(Value::Null)
}

fn step_status(dir: &Path, step: &str) -> String {
    journal(dir)["steps"][step]["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn sha256(p: &Path) -> String {
    so8t_store::audit::sha256_file(p).unwrap()
}

/// GGUF hashes and per-item eval results (without timings): what must not depend on crashes.
fn artifacts(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for m in ["a", "b"] {
        for e in std::fs::read_dir(dir.join("steps/export").join(m)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "gguf") {
                out.insert(
                    format!("{m}/{}", p.file_name().unwrap().to_string_lossy()),
                    sha256(&p),
                );
            }
        }
    }
    for e in ["eval-a", "eval-b"] {
        let text =
            std::fs::read_to_string(dir.join("steps").join(e).join("four_class.jsonl")).unwrap();
        for line in text.lines() {
            let mut v: Value = serde_json::from_str(line).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("latency_s");
            out.insert(
                format!("{e}/{}", o["id"]),
                Value::Object(o.clone()).to_string(),
            );
        }
    }
    out.insert(
        "train/final".into(),
        sha256(&dir.join("steps/train/final/model/model.safetensors")),
    );
    out
}

/// A tiny LCG: the kill moments are random but reproducible.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("gave up waiting for {what}");
    false
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_uninterrupted_artifacts() {
    let t = tempfile::tempdir().unwrap();
    let (reference, crashed) = (t.path().join("ref"), t.path().join("crashed"));
    let (ok, err) = finish(quickstart(&reference, None));
    assert!(ok, "{err}");
    let want = artifacts(&reference);

    let mut rng = Lcg(0x5eed);
    let mut kills = 0;
    let mut where_killed = Vec::new();
    for round in 0..40 {
        if kills >= 12 {
            break;
        }
        let hold = "export:1500,eval-b:800";
        let mut child = quickstart(&crashed, Some(hold));
        // Rounds 2 and 5 aim at training after a checkpoint; 7 at the staged GGUF files (export
        // holds 1.5 s after writing them, before publishing); the rest at random moments.
        let aimed = match round {
            2 | 5 => wait_until("training", Duration::from_secs(60), || {
                step_status(&crashed, "train") == "running"
                    && std::fs::read_dir(crashed.join("work"))
                        .map(|mut r| r.next().is_some())
                        .unwrap_or(false)
            }),
            7 => wait_until("export", Duration::from_secs(90), || {
                step_status(&crashed, "export") == "running"
                    && crashed.join("steps/.export.partial/b").exists()
            }),
            _ => {
                std::thread::sleep(Duration::from_secs_f64(0.3 + 2.7 * rng.next()));
                true
            }
        };
        if child.try_wait().unwrap().is_some() {
            let (ok, err) = finish(child);
            assert!(ok, "a run ended on its own but failed:\n{err}");
            if step_status(&crashed, "ab") == "done" {
                break;
            }
            continue;
        }
        let running: Vec<String> = journal(&crashed)["steps"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| r["status"] == "running")
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        where_killed.push(format!(
            "{round}:{}{}",
            running.join("+"),
            if aimed { "" } else { "?" }
        ));
    }
    eprintln!("killed {kills} times: {where_killed:?}");
    assert!(kills >= 10, "only {kills} kills landed: {where_killed:?}");
    assert!(
        where_killed.iter().any(|w| w.contains("train")),
        "{where_killed:?}"
    );
    assert!(
        where_killed.iter().any(|w| w.contains("export")),
        "{where_killed:?}"
    );
    // Resume to the end.
    let (ok, err) = finish(quickstart(&crashed, None));
    assert!(ok, "{err}");
    let got = artifacts(&crashed);
    let differ: Vec<&String> = want
        .keys()
        .filter(|k| got.get(*k) != want.get(*k))
        .collect();
    assert!(
        differ.is_empty(),
        "artifacts after crashes differ: {differ:?}"
    );
    assert!(!crashed.join("steps/.export.partial").exists());

    // A damaged output: a flipped byte in B's GGUF is detected and the export redone.
    let gguf = crashed.join("steps/export/b/quickstart-so8t-q8_0.gguf");
    let mut bytes = std::fs::read(&gguf).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&gguf, bytes).unwrap();
    let (ok, err) = finish(quickstart(&crashed, None));
    assert!(ok, "{err}");
    assert!(err.contains("export: its outputs changed"), "{err}");
    assert!(err.contains("data: unchanged, skipped"), "{err}");
    assert_eq!(artifacts(&crashed), want);

    // A damaged journal: set aside, every step checked again, same results.
    let j = crashed.join("pipeline.json");
    let text = std::fs::read(&j).unwrap();
    std::fs::write(&j, &text[..text.len() / 3]).unwrap();
    let (ok, err) = finish(quickstart(&crashed, None));
    assert!(ok, "{err}");
    assert!(err.contains("the journal was damaged"), "{err}");
    assert!(crashed.join("pipeline.json.damaged-1").exists());
    assert_eq!(artifacts(&crashed), want);

    // Status of the finished pipeline.
    let o = Command::new(BIN)
        .args(["pipeline", "status", "--json", crashed.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["status"], "completed", "{st}");
    assert_eq!(st["steps"].as_array().unwrap().len(), 10);
    assert!(
        st["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "done"),
        "{st}"
    );
    assert!(st["report"].as_str().unwrap().ends_with("report.md"));
}

#[test]
fn quickstart_model_b_beats_model_a_and_a_locked_folder_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("qs");
    let mut c = Command::new(BIN);
    c.args(["quickstart", "--out", dir.to_str().unwrap()])
        .env("SO8T_PIPELINE_TEST_HOLD", "base:2500")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // While it runs: a second pipeline on the folder is refused; status shows it running.
    assert!(wait_until("the lock", Duration::from_secs(30), || dir
        .join("pipeline.lock")
        .exists()));
    let second = Command::new(BIN)
        .args(["quickstart", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && err.contains("already running"),
        "{err}"
    );
    let st = Command::new(BIN)
        .args(["pipeline", "status", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("status    running (PID"), "{text}");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let report = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(report.ends_with("steps/ab/report.md"), "{report:?}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("four_class"), "{md}");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("steps/ab/info.json")).unwrap())
            .unwrap();
    let fc = &info["tasks"][0];
    let (a, b) = (fc["acc_a"].as_f64().unwrap(), fc["acc_b"].as_f64().unwrap());
    assert!(b > a && fc["p_mcnemar"].as_f64().unwrap() < 0.05, "{info}");
    assert!(!dir.join("pipeline.lock").exists());
}

#[test]
fn watch_runs_the_post_training_workflow_once_for_a_real_training_run() {
    let t = tempfile::tempdir().unwrap();
    let runs = t.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let wf = t.path().join("post-training.yaml");
    std::fs::write(
        &wf,
        format!(
            "name: watched\nstore: {}\nexport:\n  quants: [q8_0]\neval:\n  limit: 4\nab:\n  resamples: 200\n",
            t.path().join("store").display()
        ),
    )
    .unwrap();
    let mut watcher = Command::new(BIN)
        .args(["watch", "--runs", runs.to_str().unwrap(), "--interval", "1"])
        .args(["--workflow", wf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A real (tiny) training run finishes in the watched folder.
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/train-tiny.yaml");
    let run = runs.join("r1");
    let o = Command::new(BIN)
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
        ])
        .args(["--max-steps", "6"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let marker = run.join(".so8t-watch.json");
    let read = || -> Value {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    let done = wait_until("the workflow", Duration::from_secs(240), || {
        matches!(read()["status"].as_str(), Some("done") | Some("failed"))
    });
    assert!(done && read()["status"] == "done", "{}", read());
    assert!(run.join("post-training/steps/ab/report.md").is_file());
    let finished = read()["finished_unix"].clone();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(read()["attempts"], 1, "{}", read());
    assert_eq!(read()["finished_unix"], finished, "the workflow ran again");
    let st = Command::new(BIN)
        .args([
            "watch",
            "--runs",
            runs.to_str().unwrap(),
            "--status",
            "--json",
        ])
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["alive"], true, "{st}");
    let stop = Command::new(BIN)
        .args(["watch", "--runs", runs.to_str().unwrap(), "--stop"])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(watcher.wait().unwrap().success());
    assert!(!runs.join(".so8t-watch/watch.pid").exists());
}

/// Answers one HTTP request with 200 and returns its body.
fn one_request_server() -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let mut s = s;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8(body).unwrap()
    });
    (url, h)
}

#[test]
fn a_failing_step_is_retried_then_stops_the_pipeline_and_notifies() {
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"instruction\": \"hi\", \"four_class_label\": \"MAYBE\"}\n",
    )
    .unwrap();
    let (url, server) = one_request_server();
    let cfg = t.path().join("p.yaml");
    std::fs::write(
        &cfg,
        format!(
            "name: failing\ndata:\n  inputs: [bad.jsonl]\nretries: 2\nbackoff_secs: 0.1\n\
             notify:\n  desktop: true\n  webhook:\n    url: {url}\n"
        ),
    )
    .unwrap();
    let dir = t.path().join("p");
    let o = Command::new(BIN)
        .args([
            "pipeline",
            "run",
            "--no-register",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args(["--dir", dir.to_str().unwrap()])
        .env("PATH", t.path()) // no notify-send: that notifier fails, the webhook still goes out
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("step data: failed after 3 attempts"), "{err}");
    assert!(err.contains("bad.jsonl"), "{err}");
    assert_eq!(err.matches("retrying in").count(), 2, "{err}");
    let j = journal(&dir);
    assert_eq!(j["status"], "failed");
    assert_eq!(j["steps"]["data"]["status"], "failed");
    assert_eq!(j["steps"]["data"]["attempts"], 3);
    let body: Value = serde_json::from_str(&server.join().unwrap()).unwrap();
    assert_eq!(body["status"], "failed", "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("failed after 3 attempts"));
    let st = Command::new(BIN)
        .args(["pipeline", "status", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.contains("status    failed") && text.contains("(3 attempts)"),
        "{text}"
    );
}
