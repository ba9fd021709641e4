//! Shared helpers of the dashboard's integration tests: a server on 127.0.0.1 over a runs
//! folder, HTTP calls, synthetic runs.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use so8t_dashboard::synth::{write_run, SynthRun};
use so8t_dashboard::DashboardConfig;
use so8t_store::{Metric, Status, Store};

pub struct Server {
    pub base: String,
    _rt: tokio::runtime::Runtime,
}

pub fn start(cfg: DashboardConfig) -> Server {
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

pub fn cfg(runs: &Path) -> DashboardConfig {
    DashboardConfig {
        runs_dir: runs.to_path_buf(),
        port: 0,
        refresh_interval: 1,
        ..Default::default()
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = client().get(format!("{}{path}", s.base)).send().unwrap();
    let code = r.status().as_u16();
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, v)
}

pub fn ok(s: &Server, path: &str) -> Value {
    let (code, v) = get(s, path);
    assert_eq!(code, 200, "{path}: {v}");
    v
}

pub fn synth(dir: &Path, steps: u64, status: Status, seed: u64) {
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

pub fn rows(dir: &Path) -> Vec<Metric> {
    Store::open_read_only(dir)
        .unwrap()
        .metrics(0, usize::MAX)
        .unwrap()
}
