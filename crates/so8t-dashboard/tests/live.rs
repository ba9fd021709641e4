//! Live parts of the dashboard over real run databases on 127.0.0.1: the SSE stream sends new
//! rows, reports a vanished run and its return; alerts are shown and posted once to a webhook.

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
