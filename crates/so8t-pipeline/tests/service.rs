//! The systemd unit (checked by `systemd-analyze verify` where present), the Windows task XML,
//! and the resume registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use so8t_pipeline::registry::{self, Entry};
use so8t_pipeline::service::{self, InstallOptions};

fn on_path(name: &str) -> Option<PathBuf> {
    so8t_pipeline::notify::find_program(name, std::env::var_os("PATH").as_deref())
}

/// A real executable for ExecStart (verify checks that it exists).
fn real_exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

#[test]
fn unit_text_has_the_service_settings() {
    for user in [true, false] {
        let u = service::systemd_unit(Path::new("/opt/so8t/bin/so8t"), user);
        assert!(
            u.contains("\nExecStart=/opt/so8t/bin/so8t service resume\n"),
            "{u}"
        );
        for line in [
            "[Unit]",
            "After=local-fs.target",
            "[Service]",
            "Type=simple",
            "Restart=on-failure",
            "RestartSec=60",
            "KillMode=mixed",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=120",
            "Nice=5",
            "[Install]",
        ] {
            assert!(u.lines().any(|l| l.starts_with(line)), "{line} in\n{u}");
        }
        if user {
            assert!(u.contains("WantedBy=default.target"));
            assert!(!u.contains("User="));
        } else {
            assert!(u.contains("WantedBy=multi-user.target"));
            assert!(u.contains("\nUser="), "{u}");
            assert!(
                u.contains("Environment=SO8T_STATE_DIR=/")
                    || u.contains("Environment=\"SO8T_STATE_DIR=/"),
                "{u}"
            );
        }
    }
    let u = service::systemd_unit(Path::new("/opt/my tools/so8t"), true);
    assert!(
        u.contains("ExecStart=\"/opt/my tools/so8t\" service resume"),
        "{u}"
    );
}

fn verify(unit: &Path, user: bool) {
    let Some(sa) = on_path("systemd-analyze") else {
        eprintln!("note: systemd-analyze is not on PATH; skipping the unit check");
        return;
    };
    let mut cmd = Command::new(sa);
    // A user manager needs a runtime folder, which a CI container may lack.
    let runtime = tempfile::tempdir().unwrap();
    if user {
        cmd.arg("--user");
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            cmd.env("XDG_RUNTIME_DIR", runtime.path());
        }
    }
    // --man=no: whether man pages are installed is not the unit's business.
    let out = cmd.args(["verify", "--man=no"]).arg(unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A user manager may be unreachable in a container; that is not the unit's fault.
    if user && !out.status.success() && stderr.contains("Failed to initialize manager") {
        eprintln!("note: no user service manager here; skipped --user verify: {stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "systemd-analyze verify {}: {stderr}\n{}",
        unit.display(),
        std::fs::read_to_string(unit).unwrap_or_default()
    );
    assert!(
        !stderr.contains(&*unit.to_string_lossy()),
        "warnings about the unit: {stderr}"
    );
}

#[test]
fn installed_units_pass_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    // An exe path with a space, to check the quoting too.
    let exe_dir = tmp.path().join("my bin");
    std::fs::create_dir(&exe_dir).unwrap();
    let exe = exe_dir.join("so8t");
    std::fs::copy("/bin/true", &exe).unwrap_or_else(|_| std::fs::copy(real_exe(), &exe).unwrap());
    for user in [false, true] {
        let dir = tmp.path().join(if user { "user" } else { "system" });
        let dry = service::install(&InstallOptions {
            user,
            dry_run: true,
            unit_dir: Some(dir.clone()),
            exe: exe.clone(),
            enable: false,
        })
        .unwrap();
        assert!(!dry.changed);
        assert!(!dry.path.exists());
        assert!(!dir.exists(), "a dry run writes nothing");
        let r = service::install(&InstallOptions {
            user,
            dry_run: false,
            unit_dir: Some(dir.clone()),
            exe: exe.clone(),
            enable: false,
        })
        .unwrap();
        assert!(r.changed);
        assert_eq!(r.path, dir.join("so8t-resume.service"));
        assert_eq!(std::fs::read_to_string(&r.path).unwrap(), dry.unit);
        assert!(r.systemctl.is_empty());
        verify(&r.path, user);
        let gone = service::uninstall(user, Some(&dir), false).unwrap();
        assert!(gone.changed);
        assert!(!r.path.exists());
        let again = service::uninstall(user, Some(&dir), false).unwrap();
        assert!(!again.changed);
    }
}

#[test]
fn unwritable_unit_dir_suggests_user_or_sudo() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("note: running as root; the permission check cannot fail here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let e = service::install(&InstallOptions {
        user: false,
        dry_run: false,
        unit_dir: Some(ro.clone()),
        exe: real_exe(),
        enable: false,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--user") && e.contains("sudo"), "{e}");
}

#[test]
fn windows_task_is_well_formed_xml_with_a_logon_trigger() {
    let xml = service::windows_task_xml(r"C:\Program Files\so8t & co\so8t.exe", Some("PC\\<me>"));
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let ns = "http://schemas.microsoft.com/windows/2004/02/mit/task";
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "Task");
    assert_eq!(root.tag_name().namespace(), Some(ns));
    assert_eq!(root.attribute("version"), Some("1.2"));
    let find = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name((ns, name)))
            .unwrap_or_else(|| panic!("no {name} in\n{xml}"))
    };
    let trigger = find("LogonTrigger");
    let text_of = |n: roxmltree::Node, name: &str| {
        n.children()
            .find(|c| c.has_tag_name((ns, name)))
            .and_then(|c| c.text())
            .map(str::to_string)
    };
    assert_eq!(text_of(trigger, "Delay").as_deref(), Some("PT1M"));
    assert_eq!(text_of(trigger, "UserId").as_deref(), Some("PC\\<me>"));
    let exec = find("Exec");
    assert_eq!(
        text_of(exec, "Command").as_deref(),
        Some(r"C:\Program Files\so8t & co\so8t.exe")
    );
    assert_eq!(
        text_of(exec, "Arguments").as_deref(),
        Some("service resume")
    );
    let settings = find("Settings");
    for (k, v) in [
        ("StartWhenAvailable", "true"),
        ("DisallowStartIfOnBatteries", "false"),
        ("ExecutionTimeLimit", "PT0S"),
        ("MultipleInstancesPolicy", "IgnoreNew"),
    ] {
        assert_eq!(text_of(settings, k).as_deref(), Some(v), "{k}");
    }
    let idle = find("IdleSettings");
    assert_eq!(text_of(idle, "StopOnIdleEnd").as_deref(), Some("false"));
    // Without a user: any user's logon, no principal.
    let xml = service::windows_task_xml("so8t.exe", None);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert!(doc
        .descendants()
        .any(|n| n.has_tag_name((ns, "LogonTrigger"))));
    assert!(!doc.descendants().any(|n| n.has_tag_name((ns, "UserId"))));
}

fn entry(kind: &str, dir: &Path, t: u64) -> Entry {
    Entry {
        kind: kind.into(),
        dir: dir.to_path_buf(),
        args: vec!["resume".into(), "it".into()],
        registered_unix: t,
    }
}

/// All registry checks in one test: `SO8T_STATE_DIR` is process-global.
#[test]
fn registry_round_trip_resume_and_corruption() {
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::env::set_var("SO8T_STATE_DIR", state.path());
    assert_eq!(registry::registry_path(), state.path().join("resume.json"));
    assert!(registry::list().unwrap().is_empty());

    let run = work.path().join("run");
    let pipe = work.path().join("pipe");
    let gone = work.path().join("gone");
    std::fs::create_dir(&run).unwrap();
    std::fs::create_dir(&pipe).unwrap();
    registry::register(entry("train", &run, 1)).unwrap();
    registry::register(entry("pipeline", &pipe, 2)).unwrap();
    registry::register(entry("pipeline", &gone, 3)).unwrap();
    // Same dir replaces.
    let mut newer = entry("train", &run, 4);
    newer.args = vec!["train".into(), "--auto-resume".into()];
    registry::register(newer.clone()).unwrap();
    let l = registry::list().unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(l.iter().filter(|e| e.dir == run).count(), 1);
    assert!(l.contains(&newer));
    assert!(state.path().join("resume.json.lock").exists());

    // Dry run: nothing started, nothing dropped; pipelines first.
    let exe = Path::new("/bin/true");
    let dry = registry::resume_all(exe, true);
    assert_eq!(dry.len(), 3);
    assert_eq!(dry[0].0.dir, pipe);
    assert!(dry[0].1.is_ok());
    assert_eq!(dry[1].0.dir, gone);
    assert!(dry[1].1.as_ref().unwrap_err().contains("no longer exists"));
    assert_eq!(dry[2].0.dir, run);
    assert_eq!(registry::list().unwrap().len(), 3);

    // A real run with /bin/true and /bin/false; the vanished entry is dropped.
    let res = registry::resume_all(exe, false);
    assert_eq!(res.len(), 3);
    assert!(res[0].1.as_ref().unwrap().success());
    assert!(res[2].1.as_ref().unwrap().success());
    let left = registry::list().unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.iter().any(|e| e.dir == gone));
    let res = registry::resume_all(Path::new("/bin/false"), false);
    assert!(res.iter().all(|(_, r)| !r.as_ref().unwrap().success()));
    let res = registry::resume_all(&work.path().join("no-such-exe"), false);
    assert!(res.iter().all(|(_, r)| r.is_err()));

    registry::unregister(&run).unwrap();
    registry::unregister(&run).unwrap(); // twice is fine
    assert_eq!(registry::list().unwrap(), vec![entry("pipeline", &pipe, 2)]);
    registry::unregister(&pipe).unwrap();
    assert!(registry::list().unwrap().is_empty());

    // Concurrent registrations from threads all land (the flock serializes them).
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let d = work.path().join(format!("w{i}"));
            std::thread::spawn(move || registry::register(entry("train", &d, i)).unwrap())
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(registry::list().unwrap().len(), 8);

    // A corrupt file: the error names the file and the position.
    let path = registry::registry_path();
    std::fs::write(
        &path,
        "{\"version\": 1,\n \"entries\": [ {\"kind\": 3} ]\n}",
    )
    .unwrap();
    let e = registry::list().unwrap_err().to_string();
    assert!(e.contains(&*path.to_string_lossy()), "{e}");
    assert!(e.contains("line 2"), "{e}");
    assert!(registry::register(entry("train", &run, 9)).is_err());
    std::fs::write(&path, "").unwrap();
    assert!(registry::list().unwrap().is_empty());
    std::env::remove_var("SO8T_STATE_DIR");
}
