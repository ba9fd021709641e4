//! The watch daemon's library: which runs count as finished, exactly-once processing through the
//! marker, retries then a failed marker, the PID lock, stop/status, and log rotation.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use so8t_pipeline::watch::{
    finished_runs, log_path, marker_path, pid_path, read_marker, status, stop, watch, Marker,
    MarkerStatus, StopOutcome, WatchOptions,
};

/// A run folder: `session.json` with `status`, optionally the final checkpoint and `final/`.
fn make_run(dir: &Path, name: &str, status: &str, final_ckpt: bool, bake: bool) -> PathBuf {
    let run = dir.join(name);
    std::fs::create_dir_all(run.join("checkpoints/step-00000003-rolling")).unwrap();
    std::fs::write(
        run.join("session.json"),
        format!(r#"{{"session_id": 1, "status": "{status}", "step": 5}}"#),
    )
    .unwrap();
    if final_ckpt {
        let c = run.join("checkpoints/step-00000005-final");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("manifest.json"), "{}").unwrap();
    }
    if bake {
        std::fs::create_dir_all(run.join("final")).unwrap();
        std::fs::write(run.join("final/bake.json"), "{}").unwrap();
    }
    run
}

fn opts(dir: &Path) -> WatchOptions {
    let mut o = WatchOptions::new(dir);
    o.once = true;
    o.interval = Duration::from_millis(100);
    o.backoff = Duration::from_millis(10);
    o
}

#[test]
fn only_completed_runs_with_final_checkpoint_and_bake_are_finished() {
    let d = tempfile::tempdir().unwrap();
    let good = make_run(d.path(), "a-done", "completed", true, true);
    make_run(d.path(), "b-running", "running", true, true);
    make_run(d.path(), "c-no-final-ckpt", "completed", false, true);
    make_run(d.path(), "d-no-bake", "completed", true, false);
    make_run(d.path(), "e-failed", "failed", true, true);
    // A final checkpoint folder without its manifest does not count.
    let f = make_run(d.path(), "f-no-manifest", "completed", false, true);
    std::fs::create_dir_all(f.join("checkpoints/step-00000005-final")).unwrap();
    std::fs::create_dir_all(d.path().join("not-a-run")).unwrap();
    assert_eq!(finished_runs(d.path()), vec![good.clone()]);
    // The watched folder may be the run itself.
    assert_eq!(finished_runs(&good), vec![good.clone()]);
    assert!(finished_runs(&d.path().join("missing")).is_empty());
}

#[test]
fn workflow_runs_exactly_once_per_run() {
    let d = tempfile::tempdir().unwrap();
    let a = make_run(d.path(), "a", "completed", true, true);
    let b = make_run(d.path(), "b", "completed", true, true);
    make_run(d.path(), "c", "running", false, false);
    let mut calls = Vec::new();
    let s = watch(&opts(d.path()), &mut |r| {
        calls.push(r.to_path_buf());
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, vec![a.clone(), b.clone()]);
    assert_eq!(s.done, vec![a.clone(), b.clone()]);
    let m = read_marker(&a).unwrap().unwrap();
    assert_eq!(m.status, MarkerStatus::Done);
    assert_eq!(m.attempts, 1);
    assert_eq!(m.watcher_pid, std::process::id());
    assert!(m.finished_unix.is_some() && m.error.is_none());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(marker_path(&a)).unwrap()).unwrap();
    assert_eq!(json["status"], "done");
    assert!(json["error"].is_null());
    // The PID file is removed when watch returns.
    assert!(!pid_path(d.path()).exists());

    // A second watcher: nothing to do.
    let mut n = 0;
    let s = watch(&opts(d.path()), &mut |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 0);
    assert!(s.done.is_empty());
    // Even with --retry-failed, a done run is never taken up again.
    let mut o = opts(d.path());
    o.retry_failed = true;
    watch(&o, &mut |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 0);

    let log = std::fs::read_to_string(log_path(d.path())).unwrap();
    assert!(log.contains("workflow done for"), "{log}");
    assert_eq!(log.matches("watch started").count(), 3, "{log}");
}

#[test]
fn failing_workflow_is_retried_then_marked_failed() {
    let d = tempfile::tempdir().unwrap();
    let a = make_run(d.path(), "a", "completed", true, true);
    let mut o = opts(d.path());
    o.retries = 2;
    let mut n = 0;
    let started = Instant::now();
    let s = watch(&o, &mut |_| {
        n += 1;
        Err(format!("boom {n}"))
    })
    .unwrap();
    assert_eq!(n, 3, "one attempt and two retries");
    // Backoff 10 ms, then 20 ms.
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(s.failed, vec![a.clone()]);
    let m = read_marker(&a).unwrap().unwrap();
    assert_eq!(m.status, MarkerStatus::Failed);
    assert_eq!(m.attempts, 3);
    assert_eq!(m.error.as_deref(), Some("boom 3"));

    // Not retried without retry_failed.
    watch(&o, &mut |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 3);
    // Retried with it, once: attempts keep counting.
    o.retry_failed = true;
    watch(&o, &mut |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 4);
    let m = read_marker(&a).unwrap().unwrap();
    assert_eq!((m.status, m.attempts), (MarkerStatus::Done, 4));
}

#[test]
fn running_marker_of_a_dead_watcher_is_retried_but_not_a_live_ones() {
    let d = tempfile::tempdir().unwrap();
    let a = make_run(d.path(), "a", "completed", true, true);
    let mut m = Marker {
        status: MarkerStatus::Running,
        attempts: 1,
        started_unix: 1,
        finished_unix: None,
        error: None,
        watcher_pid: 1, // PID 1 is alive: another watcher is busy with it
    };
    std::fs::write(marker_path(&a), serde_json::to_string(&m).unwrap()).unwrap();
    let mut n = 0;
    watch(&opts(d.path()), &mut |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 0);
    m.watcher_pid = 2_147_483_000; // dead: a crash mid-workflow
    std::fs::write(marker_path(&a), serde_json::to_string(&m).unwrap()).unwrap();
    watch(&opts(d.path()), &mut |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 1);
    let m = read_marker(&a).unwrap().unwrap();
    assert_eq!((m.status, m.attempts), (MarkerStatus::Done, 2));
    // A damaged marker is skipped (never processed twice), and reported in the log.
    std::fs::write(marker_path(&a), "{").unwrap();
    watch(&opts(d.path()), &mut |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 1);
    let log = std::fs::read_to_string(log_path(d.path())).unwrap();
    assert!(log.contains("not a watch marker"), "{log}");
}

#[test]
fn second_watcher_is_refused_and_stop_flag_ends_the_first() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let mut o = opts(&dir);
    o.once = false;
    let flag = o.stop.clone();
    let first = std::thread::spawn(move || watch(&o, &mut |_| Ok(())));
    let t = Instant::now();
    while !pid_path(&dir).exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "no PID file");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Same process, so the lock's PID check sees its own PID: fake another live owner instead.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(pid_path(other.path()).parent().unwrap()).unwrap();
    std::fs::write(pid_path(other.path()), "1\n").unwrap();
    let e = watch(&opts(other.path()), &mut |_| Ok(())).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("so8t watch is already running") && msg.contains("PID 1"),
        "{msg}"
    );
    assert!(msg.contains("watch.pid"), "{msg}");

    let st = status(&dir);
    assert_eq!(st.pid, Some(std::process::id()));
    assert!(st.alive);
    // A new run shows up as pending until the next poll takes it.
    let a = make_run(&dir, "a", "completed", true, true);
    let t = Instant::now();
    while read_marker(&a).unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the run was not processed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    flag.store(true, Ordering::SeqCst);
    let s = first.join().unwrap().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(s.done, vec![a]);
    assert!(s.polls >= 1);
    assert!(!pid_path(&dir).exists());
    let st = status(&dir);
    assert_eq!((st.pid, st.alive), (None, false));
    assert_eq!(st.processed.len(), 1);
    assert!(st.pending.is_empty());
    assert!(
        st.log_tail.last().unwrap().contains("watch stopped"),
        "{:?}",
        st.log_tail
    );
}

#[test]
fn status_and_stop_without_a_watcher() {
    let d = tempfile::tempdir().unwrap();
    let a = make_run(d.path(), "a", "completed", true, true);
    make_run(d.path(), "b", "running", false, false);
    let st = status(d.path());
    assert_eq!(st.runs.len(), 2);
    assert_eq!(st.finished, vec![a.clone()]);
    assert_eq!(st.pending, vec![a]);
    assert!(st.log_tail.is_empty());
    assert_eq!(
        stop(d.path(), Duration::from_secs(1)).unwrap(),
        StopOutcome::NotRunning
    );
    std::fs::create_dir_all(pid_path(d.path()).parent().unwrap()).unwrap();
    std::fs::write(pid_path(d.path()), "2147483000\n").unwrap();
    assert_eq!(
        stop(d.path(), Duration::from_secs(1)).unwrap(),
        StopOutcome::StaleRemoved {
            pid: Some(2_147_483_000)
        }
    );
    assert!(!pid_path(d.path()).exists());
    let e = watch(&opts(&d.path().join("missing")), &mut |_| Ok(())).unwrap_err();
    assert!(e.to_string().contains("not a folder"), "{e}");
}

#[test]
fn watch_log_rotates() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..6 {
        make_run(d.path(), &format!("r{i}"), "completed", true, true);
    }
    let mut o = opts(d.path());
    o.log_max_bytes = 300;
    o.log_keep = 2;
    watch(&o, &mut |_| Ok(())).unwrap();
    let log = log_path(d.path());
    let old: Vec<_> = (1..=3)
        .map(|n| PathBuf::from(format!("{}.{n}", log.display())))
        .collect();
    assert!(old[0].exists() && old[1].exists() && !old[2].exists());
    for p in [&log, &old[0], &old[1]] {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len <= 300, "{}: {len} bytes", p.display());
    }
    assert!(status(d.path()).log_tail.len() >= 2);
}
