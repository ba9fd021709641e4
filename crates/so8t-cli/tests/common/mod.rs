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
