//! Shared helpers for the trainer's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// `../shared/fixtures/NAME` (or `$SO8T_FIXTURES/NAME`); fails loudly when absent.
pub fn fixture(name: &str) -> PathBuf {
    let base = std::env::var_os("SO8T_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    let p = base.join(name);
    assert!(
        p.join("config.json").exists(),
        "fixture {} not found: run the tests with ../shared beside the repo or set SO8T_FIXTURES",
        p.display()
    );
    p
}

/// The parsed `reference.json` of a fixture.
pub fn reference(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixture(name).join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

/// A JSON array of numbers as f64.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A JSON matrix of integers as rows of u32.
pub fn int_rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_u64().expect("int") as u32)
                .collect()
        })
        .collect()
}

/// The fixtures that carry `losses` and `schedules`.
pub const FIXTURES: [&str; 3] = ["phi3-tiny", "llama-gqa-tiny", "phi3-longrope-tiny"];

/// |got − want| / |want|.
pub fn rel(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}
