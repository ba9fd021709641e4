//! `so8t watch` end to end with a fake workflow (`--workflow-cmd`): a run that finishes while the
//! watcher runs is processed exactly once; `--status`, `--stop`, SIGINT and `--daemon` work; the
//! PID file is gone after every exit. Every wait is bounded so a bug fails instead of hanging.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_so8t");
const LIMIT: Duration = Duration::from_secs(30);

/// A finished run: completed session, final checkpoint with its manifest, `final/bake.json`.
fn make_finished_run(dir: &Path, name: &str) -> PathBuf {
    let run = dir.join(name);
    let ckpt = run.join("checkpoints/step-00000005-final");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::create_dir_all(run.join("final")).unwrap();
    std::fs::write(ckpt.join("manifest.json"), "{}").unwrap();
    std::fs::write(run.join("final/bake.json"), "{}").unwrap();
    // The session is written last, as a trainer finishing would.
    std::fs::write(
        run.join("session.json"),
        r#"{"session_id": 1, "status": "completed"}"#,
    )
    .unwrap();
    run
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join(".so8t-watch/watch.pid")
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn so8t(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn status_json(dir: &Path) -> serde_json::Value {
    let out = so8t(&[
        "watch",
        "--runs",
        dir.to_str().unwrap(),
        "--status",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starts a foreground watcher polling every second.
fn start_watcher(dir: &Path) -> Child {
    let cmd = format!(
        "echo \"$SO8T_RUN_DIR\" >> '{}'",
        dir.join("calls.txt").display()
    );
    let child = Command::new(BIN)
        .args(["watch", "--runs", dir.to_str().unwrap(), "--interval", "1"])
        .args(["--workflow-cmd", &cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the PID file", || pid_file(dir).exists());
    child
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("the watcher did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_finished_while_watching_is_processed_exactly_once_then_stop() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut child = start_watcher(dir);
    let run = make_finished_run(dir, "run-1");
    wait_for("the workflow call", || calls(dir).len() == 1);
    assert_eq!(calls(dir), vec![run.display().to_string()]);
    // Two more intervals: no second call.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(calls(dir).len(), 1);

    let st = status_json(dir);
    assert_eq!(st["alive"], true, "{st}");
    assert_eq!(st["pid"], child.id(), "{st}");
    let processed = st["processed"].as_array().unwrap();
    assert_eq!(processed.len(), 1, "{st}");
    assert_eq!(processed[0]["run"], run.display().to_string());
    assert_eq!(processed[0]["marker"]["status"], "done");
    assert_eq!(processed[0]["marker"]["attempts"], 1);
    assert!(st["pending"].as_array().unwrap().is_empty());
    // The human-readable form too.
    let out = so8t(&["watch", "--runs", dir.to_str().unwrap(), "--status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("running (PID {})", child.id())),
        "{text}"
    );
    assert!(text.contains("1 done"), "{text}");

    let out = so8t(&["watch", "--runs", dir.to_str().unwrap(), "--stop"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"));
    assert!(wait_exit(&mut child).success());
    assert!(!pid_file(dir).exists());
    // Stopping again: a clear "not running".
    let out = so8t(&["watch", "--runs", dir.to_str().unwrap(), "--stop"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));
    let log = std::fs::read_to_string(dir.join(".so8t-watch/watch.log")).unwrap();
    assert!(log.contains("workflow done for"), "{log}");
}

#[test]
fn sigint_ends_the_watcher_gracefully_and_a_second_watcher_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut child = start_watcher(dir);
    let out = so8t(&["watch", "--runs", dir.to_str().unwrap(), "--once"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    let t = Instant::now();
    let k = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    assert!(wait_exit(&mut child).success());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!pid_file(dir).exists());
}

#[test]
fn daemon_starts_in_the_background_and_stops() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    make_finished_run(dir, "run-1");
    let cmd = format!(
        "echo \"$SO8T_RUN_DIR\" >> '{}'",
        dir.join("calls.txt").display()
    );
    let out = so8t(&[
        "watch",
        "--runs",
        dir.to_str().unwrap(),
        "--interval",
        "1",
        "--workflow-cmd",
        &cmd,
        "--log-max-bytes",
        "300",
        "--log-keep",
        "2",
        "--daemon",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let pid: u32 = text
        .split("PID ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no PID in {text:?}"));
    assert!(text.contains("watch.log"), "{text}");
    wait_for("the workflow call", || calls(dir).len() == 1);
    let st = status_json(dir);
    assert_eq!(st["alive"], true, "{st}");
    assert_eq!(st["pid"], pid, "{st}");
    // A second daemon is refused up front.
    let out = so8t(&["watch", "--runs", dir.to_str().unwrap(), "--daemon"]);
    assert!(!out.status.success());
    let out = so8t(&["watch", "--runs", dir.to_str().unwrap(), "--stop"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!pid_file(dir).exists());
    let st = status_json(dir);
    assert_eq!(st["alive"], false, "{st}");
    assert_eq!(calls(dir).len(), 1);
    // Small logs: rotated, at most two old files, the last line in the current one.
    let state = dir.join(".so8t-watch");
    assert!(state.join("watch.log.1").exists());
    assert!(!state.join("watch.log.3").exists());
    let log = std::fs::read_to_string(state.join("watch.log")).unwrap();
    assert!(log.contains("watch stopped"), "{log}");
}
