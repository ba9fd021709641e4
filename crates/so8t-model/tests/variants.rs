//! Model variants beyond the fixtures: sliding-window attention, half-precision checkpoints.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{fixture, reference};
use so8t_model::{Config, Forward, Model, Weights};

fn with_config(name: &str, edit: impl Fn(&mut serde_json::Value)) -> Model {
    let dir = fixture(name);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut v);
    let cfg = Config::from_value(&v, &dir.join("config.json")).unwrap();
    let w = Weights::from_model_dir(&dir).unwrap();
    Model::from_weights(cfg, &w, DType::F32, &Device::Cpu).unwrap()
}

fn rows(m: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let t = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    m.forward(&t, Forward::default())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn sliding_window_limits_attention() {
    let ids = [1u32, 30, 60, 90, 120, 150, 180, 210];
    // A window as long as the sequence changes nothing.
    let full = rows(&with_config("phi3-tiny", |_| {}), &ids);
    let wide = rows(
        &with_config("phi3-tiny", |v| v["sliding_window"] = 8.into()),
        &ids,
    );
    for (a, b) in full.iter().zip(&wide) {
        assert_eq!(max_diff(a, b), 0.0);
    }
    // A window of one: every token sees only itself, in every layer, so position t's logits
    // equal those of token t alone (RoPE is relative, a lone token's attention is its value).
    let one = with_config("phi3-tiny", |v| v["sliding_window"] = 1.into());
    let windowed = rows(&one, &ids);
    for (t, id) in ids.iter().enumerate() {
        let alone = rows(&one, &[*id]);
        let d = max_diff(&windowed[t], &alone[0]);
        assert!(d < 1e-4, "position {t}: |Δ| = {d}");
    }
    // And a window of 3 differs from full attention from position 3 on.
    let three = rows(
        &with_config("phi3-tiny", |v| v["sliding_window"] = 3.into()),
        &ids,
    );
    assert_eq!(max_diff(&three[2], &full[2]), 0.0);
    assert!(max_diff(&three[5], &full[5]) > 1e-4);
}

#[test]
fn half_precision_checkpoints_load_and_stay_close() {
    let r = reference("llama-gqa-tiny");
    let case = &r["cases"][2];
    let ids: Vec<u32> = case["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let want: Vec<Vec<f64>> = case["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    let src = Weights::from_model_dir(&fixture("llama-gqa-tiny")).unwrap();
    for dt in [DType::BF16, DType::F16] {
        let t = tempfile::tempdir().unwrap();
        let mut m = std::collections::BTreeMap::new();
        for n in src.names() {
            m.insert(n.clone(), src.get_any(&n, dt, &Device::Cpu).unwrap());
        }
        so8t_model::io::write_safetensors(&t.path().join("model.safetensors"), &m).unwrap();
        std::fs::copy(
            fixture("llama-gqa-tiny").join("config.json"),
            t.path().join("config.json"),
        )
        .unwrap();
        for compute in [DType::F32, dt] {
            let model = Model::load(t.path(), compute, &Device::Cpu).unwrap();
            let got = rows(&model, &ids);
            let d = got
                .iter()
                .zip(&want)
                .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()))
                .fold(0.0, f64::max);
            // Weights rounded to 8 (bf16) or 11 (f16) mantissa bits; logits are O(1).
            let tol = if dt == DType::BF16 { 0.1 } else { 0.02 };
            assert!(
                d < tol,
                "{dt:?} weights, {compute:?} compute: max |Δ| = {d}"
            );
        }
    }
}
