//! Bad input gets a clear error naming the file, the tensor and what was expected; no panic.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{fixture, tensor_max_diff};
use so8t_model::so8::{LayerSelection, So8Gates};
use so8t_model::{Model, Weights};

fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    (tmp, dst)
}

fn load_err(dir: &Path) -> String {
    match Model::load(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} should mention {p:?}");
    }
}

#[test]
fn rejects_missing_config() {
    let (_t, d) = copy_fixture("phi3-tiny");
    std::fs::remove_file(d.join("config.json")).unwrap();
    assert_has(&load_err(&d), &["config.json", "not found"]);
}

#[test]
fn rejects_malformed_config_with_line_and_column() {
    let (_t, d) = copy_fixture("phi3-tiny");
    std::fs::write(
        d.join("config.json"),
        "{\n  \"hidden_size\": 64,\n  oops\n}",
    )
    .unwrap();
    assert_has(&load_err(&d), &["config.json", "line 3"]);
}

#[test]
fn rejects_unknown_architecture_and_missing_fields() {
    let (_t, d) = copy_fixture("phi3-tiny");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("Phi3ForCausalLM", "GPT2LMHeadModel")
            .replace("\"phi3\"", "\"gpt2\""),
    )
    .unwrap();
    assert_has(
        &load_err(&d),
        &[
            "config.json",
            "unknown architecture",
            "GPT2LMHeadModel",
            "Phi3ForCausalLM",
        ],
    );
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"hidden_size\": 64,", ""),
    )
    .unwrap();
    assert_has(&load_err(&d), &["config.json", "hidden_size"]);
}

#[test]
fn rejects_truncated_safetensors() {
    let (_t, d) = copy_fixture("phi3-tiny");
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    assert_has(&load_err(&d), &["model.safetensors", "truncated"]);
    std::fs::write(&p, &bytes[..5]).unwrap();
    assert_has(&load_err(&d), &["model.safetensors", "too short"]);
}

#[test]
fn rejects_a_tensor_of_the_wrong_shape() {
    let (_t, d) = copy_fixture("phi3-tiny");
    let w = Weights::from_model_dir(&d).unwrap();
    let mut all = std::collections::BTreeMap::new();
    for n in w.names() {
        all.insert(n.clone(), w.get_any(&n, DType::F32, &Device::Cpu).unwrap());
    }
    drop(w);
    all.insert(
        "model.layers.1.self_attn.o_proj.weight".into(),
        Tensor::zeros((64, 32), DType::F32, &Device::Cpu).unwrap(),
    );
    so8t_model::io::write_safetensors(&d.join("model.safetensors"), &all).unwrap();
    assert_has(
        &load_err(&d),
        &[
            "model.safetensors",
            "model.layers.1.self_attn.o_proj.weight",
            "[64, 32]",
            "expected [64, 64]",
        ],
    );
}

#[test]
fn rejects_a_missing_shard_and_a_missing_tensor() {
    let (_t, d) = copy_fixture("llama-gqa-tiny");
    let w = Weights::from_model_dir(&d).unwrap();
    let names = w.names();
    let (first, second) = names.split_at(names.len() / 2);
    let mut index = serde_json::Map::new();
    for (i, part) in [first, second].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let mut m = std::collections::BTreeMap::new();
        for n in part.iter() {
            m.insert(n.clone(), w.get_any(n, DType::F32, &Device::Cpu).unwrap());
            index.insert(n.clone(), file.clone().into());
        }
        so8t_model::io::write_safetensors(&d.join(&file), &m).unwrap();
    }
    drop(w);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::write(
        d.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": index}).to_string(),
    )
    .unwrap();
    // The sharded folder loads and equals the single file.
    let sharded = Model::load(&d, DType::F32, &Device::Cpu).unwrap();
    let single = Model::load(&fixture("llama-gqa-tiny"), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
    let a = sharded.forward(&ids, Default::default()).unwrap();
    let b = single.forward(&ids, Default::default()).unwrap();
    assert_eq!(tensor_max_diff(&a, &b), 0.0);
    drop(sharded);
    std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    assert_has(
        &load_err(&d),
        &[
            "model-00002-of-00002.safetensors",
            "not found",
            "index.json",
        ],
    );
    // A listed tensor that the shard does not hold.
    let mut idx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let wm = idx["weight_map"].as_object_mut().unwrap();
    wm.retain(|_, f| f == "model-00001-of-00002.safetensors");
    wm.insert(
        "model.norm.weight".into(),
        "model-00001-of-00002.safetensors".into(),
    );
    std::fs::write(d.join("model.safetensors.index.json"), idx.to_string()).unwrap();
    assert_has(&load_err(&d), &["model.norm.weight"]);
}

#[test]
fn rejects_gates_with_wrong_shapes_or_layers() {
    let (_t, d) = copy_fixture("phi3-tiny");
    let p = d.join("bad_gates.safetensors");
    let mut m = std::collections::BTreeMap::new();
    m.insert(
        "layers.0.generator".to_string(),
        Tensor::zeros((4, 28), DType::F32, &Device::Cpu).unwrap(),
    );
    so8t_model::io::write_safetensors(&p, &m).unwrap();
    let e = So8Gates::load(&p, 64, 2, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_has(
        &e,
        &[
            "bad_gates.safetensors",
            "layers.0.generator",
            "[4, 28]",
            "expected [8, 28]",
        ],
    );
    m.clear();
    m.insert(
        "layers.5.generator".to_string(),
        Tensor::zeros((8, 28), DType::F32, &Device::Cpu).unwrap(),
    );
    so8t_model::io::write_safetensors(&p, &m).unwrap();
    let e = So8Gates::load(&p, 64, 2, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_has(&e, &["layers.5.generator", "out of range", "2 layers"]);
    m.clear();
    m.insert(
        "something.else".to_string(),
        Tensor::zeros((8, 28), DType::F32, &Device::Cpu).unwrap(),
    );
    so8t_model::io::write_safetensors(&p, &m).unwrap();
    let e = So8Gates::load(&p, 64, 2, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_has(&e, &["no `layers.{i}.generator`"]);
}

#[test]
fn rejects_bad_layer_selections_and_widths() {
    let sel: LayerSelection = "".parse().unwrap();
    assert!(sel.resolve(4).unwrap_err().to_string().contains("empty"));
    let sel: LayerSelection = "1,7".parse().unwrap();
    assert_has(
        &sel.resolve(4).unwrap_err().to_string(),
        &["layer 7", "4 layers"],
    );
    assert!("1,x".parse::<LayerSelection>().is_err());
    assert_eq!(
        "0-2,5"
            .parse::<LayerSelection>()
            .unwrap()
            .resolve(6)
            .unwrap(),
        vec![0, 1, 2, 5]
    );
    let spread = |s: &str, n: usize| s.parse::<LayerSelection>().unwrap().resolve(n).unwrap();
    assert_eq!(spread("spread:8", 32), vec![3, 7, 11, 15, 19, 23, 27, 31]);
    assert_eq!(spread("spread:3", 4), vec![0, 1, 3]);
    assert_eq!(spread("spread:9", 4), vec![0, 1, 2, 3]);
    assert_eq!(spread("spread:1", 30), vec![29]);
    assert!("spread:0".parse::<LayerSelection>().is_err());
    assert!("spread:x".parse::<LayerSelection>().is_err());
    let e = So8Gates::random(&[0], 60, 0.05, 0, Default::default(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_has(&e, &["60", "divisible by 8"]);
}

#[test]
fn rejects_out_of_vocabulary_ids() {
    let m = Model::load(&fixture("phi3-tiny"), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1u32, 256]], &Device::Cpu).unwrap();
    let e = m.forward(&ids, Default::default()).unwrap_err().to_string();
    assert_has(&e, &["256", "vocabulary"]);
}
