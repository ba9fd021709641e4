//! `so8t service …` through the built binary.

use assert_cmd::Command;

fn so8t() -> Command {
    let mut c = Command::cargo_bin("so8t").unwrap();
    c.env_remove("SO8T_STATE_DIR").env("RUST_LOG", "warn");
    c
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_dry_run_prints_the_unit() {
    let out = so8t()
        .args(["service", "install", "--user", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("so8t-resume.service"), "{text}");
    assert!(text.contains("[Service]"), "{text}");
    assert!(text.contains(" service resume\n"), "{text}");
    assert!(text.contains("WantedBy=default.target"), "{text}");
}

#[test]
fn install_then_uninstall_in_a_unit_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("units");
    let unit = dir.join("so8t-resume.service");
    let d = dir.to_str().unwrap();
    let out = so8t()
        .args([
            "service",
            "install",
            "--user",
            "--unit-dir",
            d,
            "--no-enable",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains(&*unit.to_string_lossy()));
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart="), "{text}");
    let out = so8t()
        .args([
            "service",
            "uninstall",
            "--user",
            "--unit-dir",
            d,
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(unit.exists(), "a dry run removes nothing");
    let out = so8t()
        .args(["service", "uninstall", "--user", "--unit-dir", d])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!unit.exists());
}

#[test]
fn windows_task_out_is_utf16le_with_bom() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("task.xml");
    let out = so8t()
        .args(["service", "windows-task", "--user", "me", "--out"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("schtasks /create /tn so8t-resume /xml"));
    let b = std::fs::read(&f).unwrap();
    assert_eq!(&b[..2], &[0xFF, 0xFE]);
    assert_eq!(b.len() % 2, 0);
    let units: Vec<u16> = b[2..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let text = String::from_utf16(&units).unwrap();
    assert!(text.starts_with("<?xml"), "{text}");
    assert!(text.contains("<LogonTrigger>"));
    assert!(text.contains("<UserId>me</UserId>"));
    assert!(text.contains("<Arguments>service resume</Arguments>"));
    assert!(text.contains("\r\n"));
    // stdout by default.
    let out = so8t().args(["service", "windows-task"]).output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("<Command>"));
}

#[test]
fn list_and_resume_dry_run_show_registered_work() {
    let state = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let reg = serde_json::json!({
        "version": 1,
        "entries": [{
            "kind": "train",
            "dir": run.path(),
            "args": ["train", "--config", "/abs/t.yaml", "--run-dir", run.path(), "--auto-resume"],
            "registered_unix": 1_700_000_000u64,
        }]
    });
    std::fs::write(state.path().join("resume.json"), reg.to_string()).unwrap();
    let out = so8t()
        .env("SO8T_STATE_DIR", state.path())
        .args(["service", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert_eq!(v[0]["kind"], "train");
    assert_eq!(v[0]["dir"], run.path().to_str().unwrap());

    let out = so8t()
        .env("SO8T_STATE_DIR", state.path())
        .args(["service", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("--auto-resume"));

    let out = so8t()
        .env("SO8T_STATE_DIR", state.path())
        .args(["service", "resume", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("would run"), "{text}");
    assert!(text.contains("train --config /abs/t.yaml"), "{text}");
    // Nothing changed.
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.path().join("resume.json")).unwrap())
            .unwrap();
    assert_eq!(after, reg);

    // A corrupt registry is a clear error naming the file.
    std::fs::write(state.path().join("resume.json"), "{ nope").unwrap();
    let out = so8t()
        .env("SO8T_STATE_DIR", state.path())
        .args(["service", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resume.json"), "{err}");
}
