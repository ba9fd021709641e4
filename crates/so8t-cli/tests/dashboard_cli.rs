//! `so8t dashboard` end to end with real training runs of the embedded tiny model:
//! - the API over a finished run agrees with the run's own `metrics.jsonl` mirror, its
//!   checkpoints verify, and its events are listed;
//! - in headless Chromium (WebDriver), while a training run writes metrics, the step counter and
//!   the loss chart advance without a reload, the RAM gauge is red past its (low) threshold, the
//!   CSV export downloads the rows, an unknown run id shows a message; screenshots are saved in
//!   `target/tmp/dashboard-screenshots/`;
//! - an RL run (`so8t rl`, live) opens with its reward, accuracy, KL, β and policy charts and RL
//!   values instead of the SFT loss panels, which come back for an SFT run.
//!
//! The browser test says SKIP without Chromium, unless `SO8T_REQUIRE_BROWSER=1` (CI sets it
//! after `.ci/setup-browser`), where a missing browser fails.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, s};
use serde_json::Value;
use support::webdriver::{wait_download, Browser};
use support::{dashboard, Dash};

const BIN: &str = env!("CARGO_BIN_EXE_so8t");

fn train_config(steps: u64, every: u64) -> String {
    format!(
        "model: builtin:tiny
data:
  train: builtin:sample
  max_seq_len: 1200
  packing: false
lora:
  r: 4
  alpha: 8
  target_modules: [qkv_proj, o_proj]
optimizer:
  lr: 5.0e-3
  warmup_steps: 1
training:
  batch_size: 1
  max_steps: {steps}
  seed: 3
checkpoint:
  every_steps: {every}
  keep_rolling: 2
"
    )
}

fn get(d: &Dash, path: &str) -> Value {
    let r = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}{path}", d.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let text = r.text().unwrap();
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn jsonl_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn api_over_a_finished_training_run_agrees_with_the_run_folder() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("train.yaml");
    std::fs::write(&cfg, train_config(12, 4)).unwrap();
    let run = t.path().join("runs/tiny");
    ok(&["train", "--config", s(&cfg), "--run-dir", s(&run)]);
    let d = dashboard(&["--runs", s(&t.path().join("runs"))]);

    let runs = get(&d, "/api/runs");
    assert_eq!(runs["runs"][0]["id"], "tiny");
    assert_eq!(runs["runs"][0]["status"], "completed");
    let o = get(&d, "/api/run?run=tiny");
    assert_eq!(o["session"]["step"], 12);
    assert_eq!(o["progress"]["percent"], 100.0);
    let losses = jsonl_losses(&run);
    assert_eq!(losses.len(), 12);
    let last = o["stats"]["loss"]["last"].as_f64().unwrap();
    assert!(
        (last - losses[11]).abs() < 1e-12,
        "{last} vs {}",
        losses[11]
    );
    let mean = losses.iter().sum::<f64>() / 12.0;
    assert!((o["stats"]["loss"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    // Rolling checkpoints 8 and 12 (keep 2) and the final one: all verify.
    let ck = o["checkpoints"].as_array().unwrap();
    assert!(ck.len() >= 2, "{ck:?}");
    for c in ck {
        assert_eq!(c["check"], "ok", "{c}");
        let v = get(
            &d,
            &format!(
                "/api/run/verify?run=tiny&path={}",
                c["path"].as_str().unwrap()
            ),
        );
        assert_eq!(v["check"], "ok", "{v}");
    }
    assert_eq!(o["rolling"]["keep"], 2);
    let kinds: Vec<&str> = o["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"completed") && kinds.contains(&"start"),
        "{kinds:?}"
    );
    let csv = get(&d, "/api/run/csv?run=tiny&series=loss");
    let lines: Vec<&str> = csv.as_str().unwrap().lines().collect();
    assert_eq!(lines.len(), 13);
    for (line, want) in lines[1..].iter().zip(&losses) {
        let got: f64 = line.split(',').nth(2).unwrap().parse().unwrap();
        assert!((got - want).abs() < 1e-12);
    }
    let c = get(
        &d,
        "/api/run/metrics?run=tiny&series=loss,lr,alpha,cpu_pct&points=5",
    );
    assert_eq!(c["bucket"], 3);
    assert_eq!(c["step"], serde_json::json!([3, 6, 9, 12]));
}

fn screenshots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn step_of(b: &Browser) -> u64 {
    b.find("#session-step")
        .and_then(|e| b.text(&e))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn points_of(b: &Browser, chart: &str) -> u64 {
    b.find(&format!(".chart[data-chart=\"{chart}\"]"))
        .ok()
        .and_then(|e| b.attr(&e, "data-points"))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// False (after saying SKIP) without a browser, unless CI requires one.
fn have_browser() -> bool {
    if !Browser::available() {
        assert!(
            std::env::var("SO8T_REQUIRE_BROWSER").is_err(),
            "SO8T_REQUIRE_BROWSER is set but chromium/chromedriver are missing"
        );
        eprintln!("SKIP: no /usr/bin/chromium or /usr/bin/chromedriver (run .ci/setup-browser)");
        return false;
    }
    true
}

/// The `early:` marks of the page: which of index.html's early requests the page used.
fn early_marks(b: &Browser) -> String {
    b.exec(
        "return performance.getEntriesByType('mark').map(m => m.name).filter(n => n.startsWith('early:')).sort().join(',');",
        vec![],
    )
    .unwrap()
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Whether the element `css` is laid out (not `display: none` itself or through a parent).
fn shown(b: &Browser, css: &str) -> bool {
    let js = format!(
        "const e = document.querySelector('{css}'); return !!e && e.offsetParent !== null;"
    );
    b.exec(&js, vec![]).unwrap() == Value::Bool(true)
}

#[test]
fn page_follows_a_live_training_run_in_chromium() {
    if !have_browser() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let runs = t.path().join("runs");
    let cfg = t.path().join("train.yaml");
    std::fs::write(&cfg, train_config(3000, 500)).unwrap();
    let run = runs.join("live");
    let mut trainer = Command::new(BIN)
        .args(["train", "--config", s(&cfg), "--run-dir", s(&run)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dash_cfg = t.path().join("dashboard.yaml");
    std::fs::write(
        &dash_cfg,
        "refresh_interval: 1\nmemory_usage_warning: 1\nrunsdir_is_flag: 0\n",
    )
    .unwrap();
    // An unknown field is refused with its name.
    let o = Command::new(BIN)
        .args(["dashboard", "--config", s(&dash_cfg), "--runs", s(&runs)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("runsdir_is_flag"));
    std::fs::write(&dash_cfg, "refresh_interval: 1\nmemory_usage_warning: 1\n").unwrap();
    let t0 = Instant::now();
    while !run.join("metrics.jsonl").exists() || jsonl_losses(&run).len() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A corrupted database beside the live run.
    std::fs::create_dir_all(runs.join("bad")).unwrap();
    std::fs::write(runs.join("bad/run.db"), vec![0x5a; 8192]).unwrap();
    let d = dashboard(&["--config", s(&dash_cfg), "--runs", s(&runs)]);
    let downloads = t.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let b = Browser::start(&downloads).unwrap();
    let shots = screenshots();
    let wait = Duration::from_secs(60);

    b.goto(&format!("{}/", d.base)).unwrap();
    b.wait_for(".run-item[data-run=\"live\"].selected", wait)
        .unwrap();
    b.wait_until(wait, |b| Ok(step_of(b) > 0 && points_of(b, "loss") > 0))
        .unwrap();
    // The first view's data came from the requests index.html starts before the scripts load.
    assert_eq!(
        early_marks(&b),
        "early:config,early:run,early:run/metrics,early:runs",
        "the page did not use its early requests"
    );
    b.exec("window.__noReload = 42;", vec![]).unwrap();
    let (step1, points1) = (step_of(&b), points_of(&b, "loss"));
    b.screenshot(&shots.join("1-live.png")).unwrap();
    b.wait_until(wait, |b| {
        Ok(step_of(b) >= step1 + 3 && points_of(b, "loss") > points1)
    })
    .unwrap_or_else(|e| panic!("no advance from step {step1} / {points1} points: {e}"));
    let same_page = b.exec("return window.__noReload;", vec![]).unwrap();
    assert_eq!(same_page, 42, "the page reloaded");

    // RAM is above 1 %: red; GPU readings are absent here: none.
    let ram = b.find(".gauge[data-metric=\"ram_pct\"]").unwrap();
    b.wait_until(wait, |b| {
        Ok(b.attr(&ram, "data-level").as_deref() == Some("red"))
    })
    .unwrap();
    b.wait_for(".alert[data-kind=\"threshold\"]", wait).unwrap();

    // CSV export of the loss chart: one line per step written when it was taken.
    let button = b.find(".chart[data-chart=\"loss\"] .export-csv").unwrap();
    let before = jsonl_losses(&run).len();
    b.click(&button).unwrap();
    let file = wait_download(&downloads, ".csv", wait).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("step,time_ms,loss"));
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() >= before, "{} rows, {before} steps", rows.len());
    let losses = jsonl_losses(&run);
    for (i, r) in rows.iter().enumerate() {
        let f: Vec<&str> = r.split(',').collect();
        assert_eq!(f[0].parse::<usize>().unwrap(), i + 1);
        let v: f64 = f[2].parse().unwrap();
        assert!((v - losses[i]).abs() < 1e-12, "row {i}");
    }
    b.screenshot(&shots.join("2-after-export.png")).unwrap();

    // A bad run id in the URL: a message, not a blank page; the list still works.
    b.goto(&format!("{}/#run=no-such-run", d.base)).unwrap();
    let banner = b.wait_for("#error-banner", wait).unwrap();
    b.wait_until(wait, |b| Ok(b.text(&banner)?.contains("no-such-run")))
        .unwrap();
    b.screenshot(&shots.join("3-unknown-run.png")).unwrap();
    assert!(!b.find_all(".run-item").is_empty());

    // The corrupted run: listed as unreadable, and a message when opened.
    b.goto(&format!("{}/#run=bad", d.base)).unwrap();
    // (The list is re-rendered live: find the item afresh on every look.)
    b.wait_until(wait, |b| {
        let item = b.find(".run-item[data-run=\"bad\"]")?;
        Ok(b.text(&item).unwrap_or_default().contains("unreadable"))
    })
    .unwrap();
    let banner = b.wait_for("#error-banner", wait).unwrap();
    b.wait_until(wait, |b| Ok(b.text(&banner)?.contains("run.db")))
        .unwrap();
    b.screenshot(&shots.join("4-corrupted-run.png")).unwrap();

    // The shown run disappears, then comes back: a message, then the run again.
    let _ = trainer.kill();
    let _ = trainer.wait();
    b.goto(&format!("{}/#run=live", d.base)).unwrap();
    b.wait_until(wait, |b| Ok(step_of(b) > 0)).unwrap();
    let away = runs.join(".away");
    std::fs::rename(&run, &away).unwrap();
    let banner = b.find("#error-banner").unwrap();
    b.wait_until(wait, |b| Ok(b.text(&banner)?.contains("live")))
        .unwrap();
    b.screenshot(&shots.join("5-run-gone.png")).unwrap();
    std::fs::rename(&away, &run).unwrap();
    b.wait_until(wait, |b| {
        Ok(b.attr(&banner, "hidden").is_some() && step_of(b) > 0)
    })
    .unwrap();
}

#[test]
fn page_shows_an_rl_run_with_its_reward_charts_in_chromium() {
    if !have_browser() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let runs = t.path().join("runs");
    let cfg = t.path().join("train.yaml");
    std::fs::write(&cfg, train_config(4, 4)).unwrap();
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&runs.join("sft")),
    ]);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rl-tiny.yaml");
    let rl = runs.join("rl");
    let mut child = Command::new(BIN)
        .args(["rl", "--config", s(&example), "--run-dir", s(&rl)])
        .args(["--max-steps", "5000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(rl.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(120), "RL did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dash_cfg = t.path().join("dashboard.yaml");
    std::fs::write(&dash_cfg, "refresh_interval: 1\n").unwrap();
    let d = dashboard(&["--config", s(&dash_cfg), "--runs", s(&runs)]);
    let b = Browser::start(&t.path().join("downloads")).unwrap();
    let wait = Duration::from_secs(60);

    // The newest run (the RL one) opens with the RL charts and values, from the early requests.
    b.goto(&format!("{}/", d.base)).unwrap();
    b.wait_for(".run-item[data-run=\"rl\"].selected", wait)
        .unwrap();
    b.wait_until(wait, |b| {
        Ok(["reward", "accuracy", "kl", "beta", "policy", "rl_loss"]
            .iter()
            .all(|c| points_of(b, c) > 0))
    })
    .unwrap();
    assert_eq!(
        early_marks(&b),
        "early:config,early:run,early:run/metrics,early:runs",
        "the page did not use its early requests for the RL run"
    );
    for css in [
        ".chart[data-chart=\"reward\"]",
        "#val-reward",
        ".chart[data-chart=\"kl\"]",
    ] {
        assert!(shown(&b, css), "{css} hidden");
    }
    for css in [".chart[data-chart=\"loss\"]", "#val-ce", "#val-phase"] {
        assert!(!shown(&b, css), "{css} shown for an RL run");
    }
    let reward = b.find("#val-reward").unwrap();
    let shown_reward: f64 = b.text(&reward).unwrap().trim().parse().unwrap();
    let item = b.find(".run-item[data-run=\"rl\"]").unwrap();
    assert!(b.text(&item).unwrap().contains("RL"));
    // Live: the reward chart grows without a reload; the shown reward is one the run logged.
    let before = points_of(&b, "reward");
    b.wait_until(wait, |b| Ok(points_of(b, "reward") >= before + 2))
        .unwrap();
    let logged: Vec<f64> = std::fs::read_to_string(rl.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["reward"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(
        logged
            .iter()
            .any(|r| (r - shown_reward).abs() <= 5e-4 * (1.0 + r.abs())),
        "{shown_reward} not among {logged:?}"
    );
    b.screenshot(&screenshots().join("6-rl-run.png")).unwrap();

    // The SFT run beside it: the loss chart again, no RL charts.
    b.goto(&format!("{}/#run=sft", d.base)).unwrap();
    b.wait_until(wait, |b| Ok(points_of(b, "loss") > 0))
        .unwrap();
    assert!(shown(&b, ".chart[data-chart=\"loss\"]"));
    assert!(!shown(&b, ".chart[data-chart=\"reward\"]"));
    let _ = child.kill();
    let _ = child.wait();
}
