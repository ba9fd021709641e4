//! Live parts of the dashboard over real run databases on 127.0.0.1: the SSE stream sends new
//! rows, reports a vanished run and its return; alerts are shown and posted once to a webhook;
//! an RL run has its reward series in the overview, the curves, the CSV and the live rows.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cfg, client, get, ok, start, synth};
use serde_json::Value;
use so8t_dashboard::DashboardConfig;
use so8t_store::{Metric, Status, Store};

/// Reads SSE events (name, data) from a stream until `want` of them arrived or time is up.
fn sse_events(
    r: reqwest::blocking::Response,
    out: Arc<Mutex<Vec<(String, Value)>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut name = String::new();
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v = serde_json::from_str(d).unwrap_or(Value::Null);
                out.lock().unwrap().push((name.clone(), v));
            }
        }
    })
}

fn wait_event(
    events: &Arc<Mutex<Vec<(String, Value)>>>,
    what: &str,
    f: impl Fn(&str, &Value) -> bool,
) -> Value {
    let t0 = Instant::now();
    loop {
        if let Some((_, v)) = events.lock().unwrap().iter().find(|(n, v)| f(n, v)) {
            return v.clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no {what} event");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn live_stream_sends_new_rows_and_reports_a_vanished_run() {
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join("live");
    synth(&run, 100, Status::Completed, 1);
    let s = start(cfg(t.path()));
    let r = client()
        .get(format!(
            "{}/api/stream?run=live&interval=1&after=90",
            s.base
        ))
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = Arc::new(Mutex::new(Vec::new()));
    let _reader = sse_events(r, events.clone());
    let first = wait_event(&events, "update", |n, _| n == "update");
    assert_eq!(first["rows"]["step"].as_array().unwrap().len(), 10);
    assert_eq!(first["session"]["step"], 100);
    wait_event(&events, "runs", |n, v| {
        n == "runs" && v["runs"][0]["id"] == "live"
    });

    // New steps arrive as rows of a later update.
    {
        let mut store = Store::open(&run).unwrap();
        let mut sess = store.latest_session().unwrap().unwrap();
        for step in 101..=105 {
            sess.step = step;
            let m = Metric {
                step,
                loss: 1.0,
                phase: "stabilization".into(),
                time_ms: 1,
                ..Default::default()
            };
            store.record_step(&sess, &m).unwrap();
        }
    }
    let next = wait_event(&events, "update with new rows", |n, v| {
        n == "update" && v["rows"]["step"][0] == 101
    });
    assert_eq!(next["rows"]["step"].as_array().unwrap().len(), 5);
    assert_eq!(next["session"]["step"], 105);

    // The run disappears: a `gone` event, the server still answers; it comes back: `update`.
    let moved: PathBuf = t.path().join(".moved");
    std::fs::rename(&run, &moved).unwrap();
    let gone = wait_event(&events, "gone", |n, _| n == "gone");
    assert!(gone["error"].as_str().unwrap().contains("live"), "{gone}");
    assert_eq!(get(&s, "/api/run?run=live").0, 404);
    let n_updates = events.lock().unwrap().len();
    std::fs::rename(&moved, &run).unwrap();
    let t0 = Instant::now();
    loop {
        let ev = events.lock().unwrap();
        if ev[n_updates..].iter().any(|(n, _)| n == "update") {
            break;
        }
        drop(ev);
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no update after return"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // An unknown run is refused at connect time.
    assert_eq!(get(&s, "/api/stream?run=nope").0, 404);
}

#[test]
fn alerts_are_shown_and_posted_once_to_the_webhook() {
    // A webhook receiver on 127.0.0.1.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", hook.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::<Value>::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in hook.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if l == "\r\n" || l.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            std::io::Read::read_exact(&mut r, &mut body).unwrap();
            g.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            std::io::Write::write_all(
                &mut c,
                b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        }
    });
    let t = tempfile::tempdir().unwrap();
    // A running session of this (live) process; RAM at 10/24 GiB = 41.7 %.
    synth(&t.path().join("hot"), 20, Status::Running, 1);
    let s = start(DashboardConfig {
        memory_usage_warning: 40.0,
        webhook: Some(url),
        ..cfg(t.path())
    });
    let o = ok(&s, "/api/run?run=hot");
    assert_eq!(o["levels"]["ram_pct"], "red");
    assert_eq!(o["levels"]["gpu_temp_c"], "orange", "{}", o["gauges"]);
    assert_eq!(o["alerts"][0]["kind"], "threshold");
    assert!(o["alerts"][0]["message"].as_str().unwrap().contains("RAM"));
    assert!(o["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["kind"] == "stalled"));
    let all = ok(&s, "/api/alerts");
    assert_eq!(all["alerts"][0]["run"], "hot");
    let t0 = Instant::now();
    while got.lock().unwrap().len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no webhook call");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Three more polling rounds: nothing is posted twice.
    std::thread::sleep(Duration::from_millis(3200));
    let posts = got.lock().unwrap().clone();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0]["run"], "hot");
    let kinds: Vec<&str> = posts
        .iter()
        .map(|p| p["alert"]["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"threshold") && kinds.contains(&"stalled"),
        "{kinds:?}"
    );
}

/// Equal numbers up to SQLite's JSON parsing (which may differ from serde's in the last bit).
fn near(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-14 * (1.0 + x.abs()),
        _ => false,
    }
}

/// An RL run (session kind `rl`) as `so8t rl` writes it: its terms in each row's `extra`, a
/// reward transition event beside a loss one.
fn rl_run(dir: &std::path::Path, steps: u64) -> Vec<Value> {
    // A synthetic SFT run's folder, then an RL session on it.
    synth(dir, 10, Status::Completed, 7);
    let mut store = Store::open(dir).unwrap();
    store.truncate_after(0).unwrap();
    let mut sess = store.latest_session().unwrap().unwrap();
    sess.kind = "rl".into();
    sess.id.push_str("-rl");
    sess.started_ms += 60_000;
    sess.status = Status::Running;
    sess.total_steps = 100;
    store.begin_session(&sess).unwrap();
    let mut extras = Vec::new();
    for step in 1..=steps {
        let x = step as f64;
        let extra = serde_json::json!({
            "reward": 0.1 + 0.01 * x, "reward_smooth": 0.1 + 0.009 * x, "reward_class": 0.01 * x,
            "reward_format": 0.1, "reward_leak": -0.5 * (step % 3 == 0) as u8 as f64,
            "reward_overlength": 0.0, "accuracy": (x / 50.0).min(1.0), "parsed": 1.0,
            "kl": 0.05 * x, "beta": 0.05, "policy_loss": -0.01 * x, "value_loss": 1.0 / x,
            "entropy": 2.0 - 0.01 * x, "approx_kl": 0.001, "clip_fraction": 0.1,
            "answer_tokens": 30.0 + x, "updates": 2,
        });
        sess.step = step;
        let m = Metric {
            step,
            loss: 0.5,
            phase: "rl".into(),
            time_ms: 1_700_000_000_000 + step as i64,
            extra: Some(extra.clone()),
            ..Default::default()
        };
        store.record_step(&sess, &m).unwrap();
        extras.push(extra);
    }
    store.update_session(&sess).unwrap();
    let t = serde_json::json!({"start": 2, "end": 4, "direction": "steeper", "peak_z": 4.0});
    store
        .add_event(
            &sess.id,
            Some(4),
            "phase_transition",
            "loss regime changed",
            Some(t),
        )
        .unwrap();
    let t = serde_json::json!({"start": 5, "end": 9, "direction": "flatter", "peak_z": 3.5});
    store
        .add_event(
            &sess.id,
            Some(9),
            "reward_transition",
            "reward regime changed",
            Some(t),
        )
        .unwrap();
    extras
}

#[test]
fn rl_runs_carry_their_reward_series_statistics_and_transitions() {
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join("rl");
    let extras = rl_run(&run, 20);
    synth(&t.path().join("sft"), 10, Status::Completed, 1);
    let s = start(cfg(t.path()));

    let runs = ok(&s, "/api/runs");
    let kind = |id: &str| {
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["kind"]
            .clone()
    };
    assert_eq!(kind("rl"), "rl");
    assert_eq!(kind("sft"), "sft");
    let names: Vec<String> = ok(&s, "/api/config")["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"reward".into()) && names.contains(&"clip_fraction".into()));

    // The overview lists the RL series and their whole-run statistics.
    let o = ok(&s, "/api/run?run=rl");
    assert_eq!(o["session"]["kind"], "rl");
    let series: Vec<&str> = o["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for k in [
        "reward",
        "accuracy",
        "kl",
        "beta",
        "entropy",
        "clip_fraction",
        "loss",
        "alpha",
    ] {
        assert!(series.contains(&k), "{k} missing from {series:?}");
    }
    let mean = |k: &str| extras.iter().map(|e| e[k].as_f64().unwrap()).sum::<f64>() / 20.0;
    for k in ["reward", "kl", "reward_leak", "entropy"] {
        let got = o["stats"][k]["mean"].as_f64().unwrap();
        assert!((got - mean(k)).abs() < 1e-12, "{k}: {got} vs {}", mean(k));
        assert!(near(&o["stats"][k]["last"], &extras[19][k]), "{k}");
    }
    assert_eq!(o["latest"]["extra"]["reward"], extras[19]["reward"]);
    let tr = o["transitions"].as_array().unwrap();
    assert_eq!(tr.len(), 2, "{tr:?}");
    assert_eq!(tr[0]["curve"], "loss");
    assert_eq!(
        (tr[1]["curve"].as_str(), tr[1]["start"].as_u64()),
        (Some("reward"), Some(5))
    );
    // An SFT run has no RL series.
    let sft = ok(&s, "/api/run?run=sft");
    assert!(!sft["series"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "reward"));
    assert!(sft["stats"].get("reward").is_none());

    // Curves by name equal the rows' `extra`; CSV too.
    let c = ok(
        &s,
        "/api/run/metrics?run=rl&series=reward,accuracy,kl&points=100",
    );
    assert_eq!(c["bucket"], 1);
    for (i, e) in extras.iter().enumerate() {
        for k in ["reward", "accuracy", "kl"] {
            assert!(near(&c["values"][k]["mean"][i], &e[k]), "{k} at {i}");
        }
    }
    let (code, csv) = get(&s, "/api/run/csv?run=rl&series=reward,beta");
    assert_eq!(code, 200);
    let csv = csv.as_str().unwrap().to_string();
    assert!(csv.starts_with("step,time_ms,reward,beta\n"), "{csv}");
    assert_eq!(csv.lines().count(), 21);

    // A live update carries the RL series of new rows.
    let r = client()
        .get(format!("{}/api/stream?run=rl&interval=1&after=18", s.base))
        .timeout(Duration::from_secs(60))
        .send()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let _reader = sse_events(r, events.clone());
    let u = wait_event(&events, "update", |n, _| n == "update");
    assert_eq!(u["rows"]["step"], serde_json::json!([19, 20]));
    let rows = &u["rows"]["values"];
    assert!(near(&rows["reward"]["mean"][1], &extras[19]["reward"]));
    assert!(near(
        &rows["clip_fraction"]["mean"][0],
        &extras[18]["clip_fraction"]
    ));
}
