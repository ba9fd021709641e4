//! The dashboard's scale benchmark (ignored in `cargo test`; `bench/dashboard-scale.sh` runs it in
//! release): a runs folder with many runs × many metric rows (`so8t dashboard synth`), then
//! - the page's first load in headless Chromium, from navigation to the newest run's curves drawn
//!   (`performance.now()` when the loss chart has points and the step counter is shown);
//! - API latencies (cold and warm) of the calls the page makes;
//! - the server's peak resident memory after the page and after reading every run.
//!
//! Sizes: `SO8T_SCALE_RUNS` (default 100) × `SO8T_SCALE_STEPS` (default 200000); the folder is
//! kept in `SO8T_SCALE_DIR` (default `target/tmp/dashboard-scale`) and reused when complete.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::webdriver::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_so8t");

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn timed_get(client: &reqwest::blocking::Client, url: &str) -> (f64, usize) {
    let t = Instant::now();
    let r = client.get(url).send().unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let n = r.bytes().unwrap().len();
    (t.elapsed().as_secs_f64() * 1000.0, n)
}

#[test]
#[ignore = "benchmark: bench/dashboard-scale.sh"]
fn scale_first_load_and_memory() {
    let runs = env_or("SO8T_SCALE_RUNS", 100);
    let steps = env_or("SO8T_SCALE_STEPS", 200_000);
    let dir = std::env::var("SO8T_SCALE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("dashboard-scale-{runs}x{steps}"))
        });
    let done = dir.join(".complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let t = Instant::now();
        let o = Command::new(BIN)
            .args(["dashboard", "synth", dir.to_str().unwrap()])
            .args(["--runs", &runs.to_string(), "--steps", &steps.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(o.status.success());
        std::fs::write(&done, "").unwrap();
        println!(
            "synth: {runs} runs x {steps} rows in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::metadata(e.path().join("run.db")).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "store: {:.2} GiB of run.db files",
        bytes as f64 / (1u64 << 30) as f64
    );

    let dash = support::dashboard(&["--runs", dir.to_str().unwrap()]);
    let (base, pid) = (dash.base.clone(), dash.child.id());

    // Drop the OS page cache? Not possible without root on every machine: the numbers below
    // are with the database files as the synth left them (mostly cached).
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let newest = "synth-".to_string() + &format!("{:03}", runs - 1);
    if Browser::available() {
        let dl = tempfile::tempdir().unwrap();
        let b = Browser::start(dl.path()).unwrap();
        for attempt in ["cold", "warm"] {
            b.goto("about:blank").unwrap();
            b.goto(&format!("{base}/")).unwrap();
            let mut ms = 0.0;
            b.wait_until(Duration::from_secs(60), |b| {
                // The loss chart notes when it first drew points (data-drawn-at, ms since
                // navigation start); the step counter is filled before.
                let v = b.exec(
                    "const c = document.querySelector('.chart[data-chart=\"loss\"]');\
                     const s = document.querySelector('#session-step');\
                     return (c && +c.dataset.drawnAt > 0 && s && s.textContent.trim() !== '' \
                       && s.textContent.trim() !== '–' && s.textContent.trim() !== '-') \
                       ? +c.dataset.drawnAt : 0;",
                    vec![],
                )?;
                ms = v.as_f64().unwrap_or(0.0);
                Ok(ms > 0.0)
            })
            .unwrap();
            println!("page first load ({attempt}): {ms:.0} ms to the newest run's curves drawn");
            let timeline = b
                .exec(
                    "const n = performance.getEntriesByType('navigation')[0];\
                     const r = performance.getEntriesByType('resource').map(e => \
                       `${e.name.replace(location.origin, '')} ${e.startTime.toFixed(0)}+${e.duration.toFixed(0)}`);\
                     const m = performance.getEntriesByType('mark').map(e => `${e.name} ${e.startTime.toFixed(0)}`);\
                     return `html ${n.responseEnd.toFixed(0)}, dom ${n.domContentLoadedEventEnd.toFixed(0)}; ` + r.join('; ') + '; marks: ' + m.join(', ');",
                    vec![],
                )
                .unwrap();
            println!(
                "  timeline (ms from navigation start): {}",
                timeline.as_str().unwrap_or("")
            );
            if attempt == "cold" {
                let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                    .join("dashboard-screenshots/scale.png");
                std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
                b.screenshot(&shot).unwrap();
            }
        }
    } else {
        println!("SKIP page timing: no chromium");
    }
    println!(
        "server peak RSS after the page: {:.1} MiB",
        peak_rss_mib(pid)
    );

    for path in [
        "/api/runs".to_string(),
        format!("/api/run?run={newest}"),
        format!("/api/run/metrics?run={newest}&series=loss,ce,pet,orth,loss_smooth&points=1000"),
        format!("/api/run/metrics?run={newest}&series=cpu_pct,ram_pct,gpu_util_pct,vram_pct,gpu_temp_c&points=1000"),
        format!("/api/run/metrics?run={newest}&series=loss&from=100000&to=100999"),
        format!("/api/run/csv?run={newest}&series=loss,lr"),
    ] {
        let (a, n) = timed_get(&client, &format!("{base}{path}"));
        let (b, _) = timed_get(&client, &format!("{base}{path}"));
        println!("GET {path}: {a:.0} ms then {b:.0} ms ({n} bytes)");
    }
    let t = Instant::now();
    for i in 0..runs {
        timed_get(&client, &format!("{base}/api/run?run=synth-{i:03}"));
        timed_get(
            &client,
            &format!("{base}/api/run/metrics?run=synth-{i:03}&series=loss&points=1000"),
        );
    }
    println!(
        "every run's overview + loss curve: {:.1} s; server peak RSS {:.1} MiB",
        t.elapsed().as_secs_f64(),
        peak_rss_mib(pid)
    );
    drop(dash);
}
