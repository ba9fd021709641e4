//! Shared helpers for the model-core integration tests.
#![allow(dead_code)]

pub mod fake_hub;

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

/// A JSON array of integers as u32.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as u32)
        .collect()
}

/// A JSON matrix as rows of f64.
pub fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("num"))
                .collect()
        })
        .collect()
}

/// Largest absolute difference between two equally shaped matrices.
pub fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len(), "row count differs");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "row width differs");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

/// All fixture names.
pub const FIXTURES: [&str; 3] = ["phi3-tiny", "phi3-longrope-tiny", "llama-gqa-tiny"];

/// Largest absolute difference between two f32 tensors of the same shape.
pub fn tensor_max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
