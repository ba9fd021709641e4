//! The dashboard's API against real run databases (written through so8t-store) served on
//! 127.0.0.1: curves downsampled by the server equal the buckets computed here from the store's
//! own rows; CSV, statistics, checkpoints, compare, pipeline panel, alerts with a webhook, the
//! token, and bad input (unknown ids, escapes, corrupted and vanished databases, live `gone`
//! events) — the server answers every time and goes on.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use so8t_dashboard::synth::{write_run, SynthRun};
use so8t_dashboard::DashboardConfig;
use so8t_store::{Metric, Status, Store};

struct Server {
    base: String,
    _rt: tokio::runtime::Runtime,
}

fn start(cfg: DashboardConfig) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr, fut) = rt
        .block_on(so8t_dashboard::bind(cfg, None, std::future::pending()))
        .unwrap();
    rt.spawn(fut);
    Server {
        base: format!("http://{addr}"),
        _rt: rt,
    }
}

fn cfg(runs: &Path) -> DashboardConfig {
    DashboardConfig {
        runs_dir: runs.to_path_buf(),
        port: 0,
        refresh_interval: 1,
        ..Default::default()
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = client().get(format!("{}{path}", s.base)).send().unwrap();
    let code = r.status().as_u16();
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, v)
}

fn ok(s: &Server, path: &str) -> Value {
    let (code, v) = get(s, path);
    assert_eq!(code, 200, "{path}: {v}");
    v
}

fn synth(dir: &Path, steps: u64, status: Status, seed: u64) {
    let spec = SynthRun {
        steps,
        total_steps: steps * 2,
        status,
        seed,
        step_ms: 500,
        started_ms: 1_700_000_000_000 + seed as i64 * 1000,
    };
    write_run(dir, &spec).unwrap();
}

fn rows(dir: &Path) -> Vec<Metric> {
    Store::open_read_only(dir)
        .unwrap()
        .metrics(0, usize::MAX)
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn curves_statistics_and_csv_equal_the_stored_rows() {
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join("a");
    synth(&run, 10_000, Status::Completed, 1);
    synth(&t.path().join("b"), 300, Status::Interrupted, 2);
    let m = rows(&run);
    let s = start(cfg(t.path()));

    let runs = ok(&s, "/api/runs");
    let ids: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "newest update first");

    // Downsampled: 100 buckets of 100 steps, each bucket's mean/min/max of the stored loss.
    let c = ok(&s, "/api/run/metrics?run=a&series=loss,ram_pct&points=100");
    assert_eq!(
        (c["bucket"].as_u64(), c["total"].as_u64()),
        (Some(100), Some(10_000))
    );
    let steps = c["step"].as_array().unwrap();
    assert_eq!(steps.len(), 100);
    for (k, chunk) in m.chunks(100).enumerate() {
        assert_eq!(steps[k].as_u64(), Some(chunk.last().unwrap().step));
        let mean = chunk.iter().map(|r| r.loss).sum::<f64>() / chunk.len() as f64;
        let min = chunk.iter().map(|r| r.loss).fold(f64::INFINITY, f64::min);
        let max = chunk
            .iter()
            .map(|r| r.loss)
            .fold(f64::NEG_INFINITY, f64::max);
        let v = &c["values"]["loss"];
        assert!(close(v["mean"][k].as_f64().unwrap(), mean), "bucket {k}");
        assert!(close(v["min"][k].as_f64().unwrap(), min));
        assert!(close(v["max"][k].as_f64().unwrap(), max));
        let ram = 100.0 * chunk[0].system.ram_used_bytes.unwrap() as f64
            / chunk[0].system.ram_total_bytes.unwrap() as f64;
        assert!(close(
            c["values"]["ram_pct"]["mean"][k].as_f64().unwrap(),
            ram
        ));
    }

    // The whole-run curves carry the whole-run statistics of the same pass.
    let all_mean = m.iter().map(|r| r.loss).sum::<f64>() / m.len() as f64;
    assert!(close(
        c["stats"]["loss"]["mean"].as_f64().unwrap(),
        all_mean
    ));
    assert!(close(
        c["stats"]["loss"]["last"].as_f64().unwrap(),
        m[9999].loss
    ));
    let (_, b) = get(&s, "/api/run?run=b&stats=0");
    assert_eq!(
        b["stats"],
        Value::Null,
        "no pass over the rows when asked not to"
    );
    assert_eq!(b["session"]["step"], 300);

    // Zoomed: raw rows of the range; live: raw rows after a step.
    let z = ok(
        &s,
        "/api/run/metrics?run=a&series=ce&points=500&from=2001&to=2100",
    );
    assert_eq!(z["bucket"], 1);
    assert!(
        z.get("stats").is_none(),
        "a zoomed range has no whole-run statistics"
    );
    assert!(z["values"]["ce"].get("min").is_none());
    for (k, v) in z["values"]["ce"]["mean"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert!(close(v.as_f64().unwrap(), m[2000 + k].ce));
    }
    let a = ok(&s, "/api/run/metrics?run=a&series=lr&after=9990");
    assert_eq!(a["step"].as_array().unwrap().len(), 10);
    assert_eq!(a["to"], 10_000);

    // Statistics and the rest of the overview.
    let o = ok(&s, "/api/run?run=a");
    let mean = m.iter().map(|r| r.loss).sum::<f64>() / m.len() as f64;
    let st = &o["stats"]["loss"];
    assert!(close(st["mean"].as_f64().unwrap(), mean));
    assert!(close(st["last"].as_f64().unwrap(), m.last().unwrap().loss));
    assert!(close(
        st["min"].as_f64().unwrap(),
        m.iter().map(|r| r.loss).fold(f64::INFINITY, f64::min)
    ));
    assert_eq!(o["session"]["step"], 10_000);
    assert_eq!(o["session"]["status"], "completed");
    assert_eq!(o["progress"]["percent"], 50.0);
    assert!(close(o["progress"]["step_time_s"].as_f64().unwrap(), 0.5));
    assert_eq!(
        o["progress"]["eta_s"],
        Value::Null,
        "no ETA when not running"
    );
    assert_eq!(o["transitions"][0]["start"], 3000);
    assert_eq!(o["levels"]["vram_pct"], "green", "{}", o["gauges"]);
    assert_eq!(o["latest"]["step"], 10_000);
    assert_eq!(o["checkpoints"].as_array().unwrap().len(), 3);
    assert!(o["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["check"] == "missing"));

    // CSV: every row of the range.
    let r = client()
        .get(format!(
            "{}/api/run/csv?run=a&series=loss,lr&from=11&to=20",
            s.base
        ))
        .send()
        .unwrap();
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("a-loss-lr.csv"));
    let text = r.text().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "step,time_ms,loss,lr");
    assert_eq!(lines.len(), 11);
    let f: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(f[0], "11");
    assert!(close(f[2].parse().unwrap(), m[10].loss));
    let all = client()
        .get(format!("{}/api/run/csv?run=a&series=loss", s.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(all.lines().count(), 10_001);

    // Compare: one series of two runs (and a missing one reported, not fatal).
    let c = ok(&s, "/api/compare?runs=a,b,zz&series=loss&points=50");
    let r = c["runs"].as_array().unwrap();
    assert_eq!(r[0]["step"].as_array().unwrap().len(), 50);
    assert_eq!(r[1]["bucket"], 6);
    assert!(r[2]["error"].as_str().unwrap().contains("zz"));
}

#[test]
fn checkpoints_are_checked_against_their_manifest() {
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join("r");
    synth(&run, 1000, Status::Completed, 1);
    for (step, content) in [(600u64, "abcd"), (800, "abcd")] {
        let d = run.join(format!("checkpoints/step-{step:08}-rolling"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("state.json"), content).unwrap();
        let sha = so8t_store::audit::sha256_hex(b"abcd");
        let manifest =
            json!({"format": 1, "files": [{"path": "state.json", "size": 4, "sha256": sha}]});
        std::fs::write(d.join("manifest.json"), manifest.to_string()).unwrap();
    }
    // Same size, different bytes: only the full check sees it.
    std::fs::write(
        run.join("checkpoints/step-00000800-rolling/state.json"),
        "abcX",
    )
    .unwrap();
    std::fs::write(
        run.join("config.resolved.yaml"),
        "checkpoint:\n  keep_rolling: 5\n",
    )
    .unwrap();
    let s = start(cfg(t.path()));
    let o = ok(&s, "/api/run?run=r");
    let checks: Vec<&str> = o["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["ok", "ok", "missing"]);
    assert_eq!(o["rolling"], json!({"count": 2, "keep": 5}));
    let v = ok(
        &s,
        "/api/run/verify?run=r&path=checkpoints/step-00000600-rolling",
    );
    assert_eq!(v["check"], "ok");
    let v = ok(
        &s,
        "/api/run/verify?run=r&path=checkpoints/step-00000800-rolling",
    );
    assert_eq!(v["check"], "damaged");
    assert!(v["problem"].as_str().unwrap().contains("sha256"));
    let (code, _) = get(&s, "/api/run/verify?run=r&path=../../etc");
    assert_eq!(code, 404);
}

#[test]
fn bad_input_gets_clear_errors_and_the_server_goes_on() {
    let t = tempfile::tempdir().unwrap();
    synth(&t.path().join("good"), 50, Status::Completed, 1);
    // A corrupted database and a half-written one (the first 3 KiB of a real one).
    std::fs::create_dir_all(t.path().join("bad")).unwrap();
    std::fs::write(t.path().join("bad/run.db"), vec![0x5a; 8192]).unwrap();
    let real = std::fs::read(t.path().join("good/run.db")).unwrap();
    std::fs::create_dir_all(t.path().join("half")).unwrap();
    std::fs::write(t.path().join("half/run.db"), &real[..3072]).unwrap();
    let s = start(cfg(t.path()));

    let runs = ok(&s, "/api/runs");
    for id in ["bad", "half"] {
        let r = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap();
        assert_eq!(r["status"], "unreadable", "{r}");
        assert!(r["error"].as_str().unwrap().contains("run.db"), "{r}");
    }
    let (code, v) = get(&s, "/api/run?run=bad");
    assert_eq!(code, 500);
    assert!(v["error"].as_str().unwrap().contains("run.db"), "{v}");
    for (path, want, text) in [
        ("/api/run?run=nope", 404, "no run \"nope\""),
        ("/api/run?run=../good", 404, "not a run id"),
        ("/api/run", 400, "missing query parameter \"run\""),
        (
            "/api/run/metrics?run=good&series=loss,zz",
            400,
            "unknown series \"zz\"",
        ),
        (
            "/api/run/metrics?run=good&points=many",
            400,
            "points=\"many\"",
        ),
        ("/api/pipeline?pipeline=good", 404, "no pipeline"),
        ("/api/nothing", 404, "no such API route"),
    ] {
        let (code, v) = get(&s, path);
        assert_eq!(code, want, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains(text), "{path}: {v}");
    }
    // extra.KEY series read the extra JSON; a bad key is refused.
    ok(&s, "/api/run/metrics?run=good&series=extra.reward");
    assert_eq!(get(&s, "/api/run/metrics?run=good&series=extra.a'b").0, 400);
    assert_eq!(ok(&s, "/api/run?run=good")["session"]["step"], 50);
}

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
fn token_protects_the_api_not_the_page() {
    let t = tempfile::tempdir().unwrap();
    let s = start(DashboardConfig {
        token: Some("s3cret".into()),
        ..cfg(t.path())
    });
    let (code, v) = get(&s, "/api/runs");
    assert_eq!(code, 401);
    assert!(v["error"].as_str().unwrap().contains("token"));
    ok(&s, "/api/runs?token=s3cret");
    let r = client()
        .get(format!("{}/api/config", s.base))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = client().get(format!("{}/", s.base)).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("<html"));
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

#[test]
fn pipeline_panel_lists_steps_runs_and_report_files() {
    use so8t_pipeline::journal::{Journal, StepRecord, StepStatus};
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("pipe");
    synth(&p.join("work/train-abc"), 40, Status::Completed, 3);
    std::fs::create_dir_all(p.join("steps/ab/charts")).unwrap();
    std::fs::write(
        p.join("steps/ab/ab.json"),
        r#"{"a": {"accuracy": 0.1}, "b": {"accuracy": 0.3}}"#,
    )
    .unwrap();
    std::fs::write(p.join("steps/ab/report.html"), "<html>report</html>").unwrap();
    std::fs::write(p.join("steps/ab/charts/acc.svg"), "<svg/>").unwrap();
    std::fs::write(p.join("steps/ab/secret.bin"), "x").unwrap();
    let mut j = Journal {
        name: "demo".into(),
        status: "completed".into(),
        order: vec!["data".into(), "ab".into()],
        ..Default::default()
    };
    for name in ["data", "ab"] {
        let rec = StepRecord {
            status: StepStatus::Done,
            inputs_hash: String::new(),
            outputs_hash: String::new(),
            outputs: vec![],
            attempts: 1,
            started_ms: 1000,
            finished_ms: 3000,
            error: None,
            info: json!({"report": "report.html"}),
        };
        j.put(&p, name, &rec).unwrap();
    }
    let s = start(cfg(t.path()));
    let runs = ok(&s, "/api/runs");
    assert_eq!(runs["pipelines"][0]["id"], "pipe");
    assert_eq!(runs["runs"][0]["pipeline"], "pipe");
    let v = ok(&s, "/api/pipeline?pipeline=pipe");
    assert_eq!(v["name"], "demo");
    assert_eq!(v["steps"][1]["status"], "done");
    assert_eq!(v["steps"][1]["seconds"], 2.0);
    assert_eq!(v["runs"], json!(["pipe/work/train-abc"]));
    assert_eq!(v["ab"]["b"]["accuracy"], 0.3);
    let files: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "steps/ab/ab.json",
            "steps/ab/charts/acc.svg",
            "steps/ab/report.html"
        ]
    );
    let r = client()
        .get(format!(
            "{}/api/pipeline/file?pipeline=pipe&path=steps/ab/charts/acc.svg",
            s.base
        ))
        .send()
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    for bad in [
        "steps/ab/secret.bin",
        "../pipe/steps/ab/report.html",
        "pipeline.json",
    ] {
        let (code, _) = get(&s, &format!("/api/pipeline/file?pipeline=pipe&path={bad}"));
        assert_eq!(code, 404, "{bad}");
    }
}
