//! The run database: sessions, metrics, checkpoints and events, written and read back; a reader
//! beside a writer; stale sessions; damaged and newer databases.

use std::time::Duration;

use so8t_store::{
    now_ms, Checkpoint, Error, Metric, Session, Status, Store, SystemSampler, DB_FILE,
};

fn session(id: &str, pid: u32) -> Session {
    Session {
        id: id.into(),
        run_id: "run".into(),
        kind: "sft".into(),
        config_hash: "abc".into(),
        started_ms: now_ms(),
        updated_ms: now_ms(),
        ended_ms: None,
        status: Status::Running,
        step: 0,
        total_steps: 10,
        epoch: 0,
        best_loss: None,
        last_checkpoint_ms: None,
        resumed_from_step: None,
        pid,
        error: None,
    }
}

fn metric(step: u64, loss: f64) -> Metric {
    Metric {
        step,
        time_ms: now_ms(),
        loss,
        ce: loss - 0.1,
        pet: 0.05,
        orth: 0.05,
        alpha: 0.9,
        pet_lambda: 0.01,
        phase: "exploration".into(),
        lr: 1e-4,
        grad_norm: 1.5,
        tokens: 100,
        tokens_per_s: 1234.5,
        loss_smooth: Some(loss),
        in_transition: step == 3,
        system: Default::default(),
        extra: Some(serde_json::json!({"reward": 0.5})),
    }
}

#[test]
fn writes_and_reads_back_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Store::open(dir.path()).unwrap();
    let mut s = session("run-1", std::process::id());
    db.begin_session(&s).unwrap();
    for step in 1..=5 {
        s.step = step;
        s.best_loss = Some(3.0 - step as f64 * 0.1);
        db.record_step(&s, &metric(step, 3.0 - step as f64 * 0.1))
            .unwrap();
    }
    db.add_event(
        &s.id,
        Some(3),
        "phase_transition",
        "loss regime change",
        None,
    )
    .unwrap();
    let resume = db
        .add_event(
            &s.id,
            None,
            "resume",
            "resumed",
            Some(serde_json::json!({"from": 2})),
        )
        .unwrap();
    db.set_checkpoints(&[Checkpoint {
        step: 4,
        kind: "rolling".into(),
        path: "checkpoints/step-00000004-rolling".into(),
        created_ms: 1,
        bytes: 99,
    }])
    .unwrap();
    s.status = Status::Completed;
    s.ended_ms = Some(now_ms());
    db.update_session(&s).unwrap();

    let r = Store::open_read_only(dir.path()).unwrap();
    let got = r.latest_session().unwrap().unwrap();
    assert_eq!(got.status, Status::Completed);
    assert_eq!(got.step, 5);
    assert_eq!(got.best_loss, Some(2.5));
    let m = r.metrics(0, 100).unwrap();
    assert_eq!(
        m.iter().map(|m| m.step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(m[2], metric(3, 2.7).clone_with_time(m[2].time_ms));
    assert_eq!(r.metrics(3, 1).unwrap().len(), 1);
    assert_eq!(r.checkpoints().unwrap()[0].bytes, 99);
    let ev = r.events(0).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        r.events(resume - 1).unwrap()[0].data.as_ref().unwrap()["from"],
        2
    );

    // A resume from step 2: later metrics and phase events go, other events stay.
    db.truncate_after(2).unwrap();
    assert_eq!(r.metrics(0, 100).unwrap().len(), 2);
    let kinds: Vec<String> = r.events(0).unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["resume"]);
    assert!(dir.path().join(DB_FILE).exists());
}

trait WithTime {
    fn clone_with_time(&self, t: i64) -> Self;
}

impl WithTime for Metric {
    fn clone_with_time(&self, t: i64) -> Self {
        Metric {
            time_ms: t,
            ..self.clone()
        }
    }
}

#[test]
fn a_dead_running_session_becomes_interrupted_and_a_live_one_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Store::open(dir.path()).unwrap();
    // A process that has exited (reaped) and left its session "running".
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    db.begin_session(&session("old", dead_pid)).unwrap();
    db.begin_session(&session("new", std::process::id()))
        .unwrap();
    let all = db.sessions().unwrap();
    assert_eq!(all[0].status, Status::Interrupted);
    assert!(all[0].ended_ms.is_some());
    assert_eq!(all[1].status, Status::Running);

    // A live process's session: a second trainer on the same run is refused.
    let dir2 = tempfile::tempdir().unwrap();
    let mut db2 = Store::open(dir2.path()).unwrap();
    let mut live = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    db2.begin_session(&session("live", live.id())).unwrap();
    let err = db2
        .begin_session(&session("second", std::process::id()))
        .unwrap_err();
    live.kill().unwrap();
    live.wait().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("still running") && msg.contains("live"),
        "{msg}"
    );
    // Once it is gone the same call succeeds.
    db2.begin_session(&session("second", std::process::id()))
        .unwrap();
}

#[test]
fn a_reader_follows_a_writer_in_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Store::open(dir.path()).unwrap();
    let s = session("w", std::process::id());
    db.begin_session(&s).unwrap();
    let path = dir.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        let r = Store::open_read_only(&path).unwrap();
        let mut seen = 0;
        for _ in 0..2000 {
            let m = r.metrics(seen, 1000).unwrap();
            for (i, x) in m.iter().enumerate() {
                assert_eq!(
                    x.step,
                    seen + 1 + i as u64,
                    "rows arrive in order, none missing"
                );
            }
            seen += m.len() as u64;
            if seen == 200 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        seen
    });
    for step in 1..=200 {
        db.record_step(&s, &metric(step, 1.0)).unwrap();
    }
    assert_eq!(reader.join().unwrap(), 200);
}

#[test]
fn damaged_missing_and_newer_databases_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = Store::open_read_only(dir.path()).err().unwrap();
    assert!(matches!(e, Error::Invalid { .. }));
    assert!(e.to_string().contains("no run database"), "{e}");

    std::fs::write(dir.path().join(DB_FILE), vec![0x42u8; 8192]).unwrap();
    let e = Store::open(dir.path()).err().unwrap();
    assert!(e.to_string().contains(DB_FILE), "{e}");
    assert_eq!(
        std::fs::read(dir.path().join(DB_FILE)).unwrap(),
        vec![0x42u8; 8192]
    );

    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    bump_user_version(dir.path());
    let e = Store::open(dir.path()).err().unwrap();
    assert!(e.to_string().contains("schema version 99"), "{e}");
    let e = Store::open_read_only(dir.path()).err().unwrap();
    assert!(e.to_string().contains("schema version 99"), "{e}");
}

/// Marks a closed database as written by a future so8t: SQLite keeps `user_version` as a
/// big-endian u32 at byte offset 60 of the file header (the last connection's close has moved
/// the WAL into the file).
fn bump_user_version(dir: &std::path::Path) {
    let p = dir.join(DB_FILE);
    let mut bytes = std::fs::read(&p).unwrap();
    assert!(bytes.len() >= 100, "database header missing");
    assert_eq!(
        bytes[60..64],
        (so8t_store::SCHEMA_VERSION as u32).to_be_bytes()
    );
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(&p, bytes).unwrap();
}

#[test]
fn the_sampler_reads_this_process() {
    let mut s = SystemSampler::new(Duration::from_millis(0));
    std::thread::sleep(Duration::from_millis(50));
    let x = s.sample();
    if cfg!(target_os = "linux") {
        let rss = x.rss_bytes.expect("rss on linux");
        assert!(rss > 1 << 20 && rss < 64 << 30, "{rss}");
        let total = x.ram_total_bytes.unwrap();
        assert!(x.ram_used_bytes.unwrap() <= total);
        let cpu = x.cpu_pct.unwrap();
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
    }
    // Throttled: a second reading within the interval is the same reading.
    let mut t = SystemSampler::new(Duration::from_secs(3600));
    assert_eq!(t.sample(), t.sample());
}

#[test]
fn eval_runs_round_trip_and_a_version_1_database_is_upgraded() {
    use so8t_store::EvalItem;
    let dir = tempfile::tempdir().unwrap();
    {
        // A database as the first release wrote it: no eval tables, user_version 1.
        let s = Store::open(dir.path()).unwrap();
        drop(s);
        let c = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        c.execute_batch("DROP TABLE eval_items; DROP TABLE eval_runs; PRAGMA user_version = 1;")
            .unwrap();
    }
    let ro = Store::open_read_only(dir.path()).unwrap();
    assert!(ro.eval_runs().is_err(), "no eval tables before an upgrade");
    drop(ro);
    let mut s = Store::open(dir.path()).unwrap();
    let items = vec![
        EvalItem {
            task: "mmlu".into(),
            item_id: "q2".into(),
            correct: false,
            result: serde_json::json!({"id": "q2", "pred": 1}),
        },
        EvalItem {
            task: "mmlu".into(),
            item_id: "q1".into(),
            correct: true,
            result: serde_json::json!({"id": "q1", "pred": 0}),
        },
    ];
    let summary = serde_json::json!({"mmlu": {"acc": 0.5, "acc_stderr": 0.5}});
    let id = s
        .add_eval_run(
            "base",
            &serde_json::json!({"path": "m.gguf"}),
            &summary,
            &serde_json::json!({"limit": null}),
            &items,
        )
        .unwrap();
    let runs = s.eval_runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].id, runs[0].label.as_str()), (id, "base"));
    assert_eq!(runs[0].summary, summary);
    let got = s.eval_items(id).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].item_id, "q1");
    assert!(got[0].correct);
    assert_eq!(got[1].result["pred"], 1);
    // The same item twice in one run is refused and nothing of that run is stored.
    let dup = vec![items[0].clone(), items[0].clone()];
    assert!(s
        .add_eval_run(
            "dup",
            &serde_json::json!({}),
            &summary,
            &serde_json::json!({}),
            &dup
        )
        .is_err());
    assert_eq!(s.eval_runs().unwrap().len(), 1);
}
