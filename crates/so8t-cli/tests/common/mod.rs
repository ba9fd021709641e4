//! Shared helpers of the CLI tests: run the `so8t` binary and check its exit status.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// Runs `so8t ARGS` and returns its output, whatever the exit status.
pub fn so8t(args: &[&str]) -> Output {
    Command::cargo_bin("so8t")
        .unwrap()
        .args(args)
        .output()
        .unwrap()
}

/// Runs `so8t ARGS`, asserts success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = so8t(args);
    assert!(
        o.status.success(),
        "so8t {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs `so8t ARGS`, asserts exit status 2, returns stderr.
pub fn fails(args: &[&str]) -> String {
    let o = so8t(args);
    assert_eq!(o.status.code(), Some(2), "so8t {args:?} should fail with 2");
    String::from_utf8(o.stderr).unwrap()
}

/// `../shared/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures")
        .join(name)
}

/// A path as `&str` for an argument list.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Lines in a run's `metrics.jsonl` (0 before it exists): the steps it logged.
pub fn steps_logged(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

/// Waits (at most 120 s) until the run in `run` has logged more than `after` steps or `child`
/// has exited.
pub fn wait_for_step(run: &Path, after: usize, child: &mut std::process::Child) {
    let start = std::time::Instant::now();
    while steps_logged(run) <= after && child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed().as_secs() < 120,
            "no progress in {}",
            run.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Starts `so8t ARGS` (a resumable run writing into `run`) again and again, each time SIGKILLing
/// it at a seeded random moment (0 to `max_delay_ms` after it logged a new step), until
/// `max_kills` kills landed or a run finished first; returns the kills.
pub fn sigkill_cycles(
    args: &[&str],
    run: &Path,
    mut rng: u64,
    max_delay_ms: u64,
    max_kills: usize,
) -> usize {
    let bin = assert_cmd::cargo::cargo_bin("so8t");
    let mut kills = 0;
    for _ in 0..40 {
        let before = steps_logged(run);
        let mut child = std::process::Command::new(&bin)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let it make at least one new step, then kill at a random moment of the next ones.
        wait_for_step(run, before, &mut child);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(std::time::Duration::from_millis(rng % max_delay_ms));
        if child.try_wait().unwrap().is_some() {
            break; // finished before the kill
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        if kills >= max_kills {
            break;
        }
    }
    kills
}

/// Asserts that the files `files` (relative paths) are byte-identical in run folders `a` and `b`.
pub fn assert_same_files(a: &Path, b: &Path, files: &[&str], after: &str) {
    for f in files {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs {after}"
        );
    }
}
