//! Support of the dashboard tests: a `so8t dashboard` child process and a WebDriver client.
#![allow(dead_code)]

pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `so8t dashboard` on a free port; killed on drop.
pub struct Dash {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Drop for Dash {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `so8t dashboard --port 0 ARGS` and reads the URL it prints.
pub fn dashboard(args: &[&str]) -> Dash {
    let mut child = Command::new(env!("CARGO_BIN_EXE_so8t"))
        .arg("dashboard")
        .args(["--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let base = url.trim_end_matches('/').to_string();
    Dash { child, base }
}
