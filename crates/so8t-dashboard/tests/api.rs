//! The dashboard's API against real run databases (written through so8t-store) served on
//! 127.0.0.1: curves downsampled by the server (in one or several parts) equal the buckets
//! computed here from the store's own rows; CSV, statistics, checkpoints, compare, the pipeline
//! panel, the token, and bad input (unknown ids, escapes, corrupted and half-written databases) —
//! the server answers every time and goes on.

mod common;

use common::{cfg, client, get, ok, rows, start, synth};
use serde_json::{json, Value};
use so8t_dashboard::DashboardConfig;
use so8t_store::{Metric, Status};

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
fn long_runs_are_scanned_in_parts_with_the_same_result() {
    // 60,000 rows: split across the cores at bucket boundaries (7 uneven buckets).
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join("long");
    synth(&run, 60_000, Status::Completed, 4);
    let m = rows(&run);
    let s = start(cfg(t.path()));
    let c = ok(
        &s,
        "/api/run/metrics?run=long&series=loss,gpu_temp_c&points=7",
    );
    let bucket = c["bucket"].as_u64().unwrap() as usize;
    assert_eq!(bucket, 8572);
    assert_eq!(c["total"], 60_000);
    let chunks: Vec<&[Metric]> = m.chunks(bucket).collect();
    assert_eq!(c["step"].as_array().unwrap().len(), chunks.len());
    for (k, chunk) in chunks.iter().enumerate() {
        let v = &c["values"]["gpu_temp_c"];
        let mean = chunk
            .iter()
            .map(|r| r.system.gpu_temp_c.unwrap())
            .sum::<f64>()
            / chunk.len() as f64;
        let max = chunk
            .iter()
            .map(|r| r.system.gpu_temp_c.unwrap())
            .fold(f64::MIN, f64::max);
        assert!(close(v["mean"][k].as_f64().unwrap(), mean), "bucket {k}");
        assert!(close(v["max"][k].as_f64().unwrap(), max), "bucket {k}");
        assert_eq!(c["step"][k].as_u64(), Some(chunk.last().unwrap().step));
    }
    let st = &c["stats"]["loss"];
    let mean = m.iter().map(|r| r.loss).sum::<f64>() / m.len() as f64;
    assert!(close(st["mean"].as_f64().unwrap(), mean));
    assert!(close(st["last"].as_f64().unwrap(), m.last().unwrap().loss));
    let min = m.iter().map(|r| r.loss).fold(f64::INFINITY, f64::min);
    assert!(close(st["min"].as_f64().unwrap(), min));
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
