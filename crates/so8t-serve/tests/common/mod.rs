//! Helpers shared by the engine tests (`engine.rs`, `device_engine.rs`).

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// A reference fixture folder under `shared/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures")
        .join(name)
}

/// A fixture's `reference.json` (transformers' logits).
pub fn reference(name: &str) -> serde_json::Value {
    let s = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

/// Largest |a − b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The llama.cpp peers folder (`SO8T_PEERS`, default `/tmp/peers`), or `None` with a SKIP line.
pub fn peers(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var("SO8T_PEERS").unwrap_or_else(|_| "/tmp/peers".into()));
    if dir.join("venv/bin/python").exists() && dir.join("models/smollm2-135m-f16.gguf").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP {test}: llama.cpp peers not found under {} (bash .ci/setup-peers.sh)",
            dir.display()
        );
        None
    }
}

/// Writes a LoRA adapter GGUF for the base `f16` file to `out` with the peers' Python.
pub fn make_lora_adapter(peers: &Path, f16: &Path, out: &Path) {
    let made = Command::new(peers.join("venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/make_lora_gguf.py"))
        .args([f16, out])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}
