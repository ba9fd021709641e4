//! The engine against references: the HF fixtures' logits (transformers, f32), incremental and
//! batched decoding against one-shot passes, GGUF against the same weights as an HF folder, and
//! — with the llama.cpp peers under `/tmp/peers` — SmolLM2's F16 / Q8_0 / Q4_K_M files against
//! llama.cpp's own logits.

#![allow(clippy::needless_range_loop)] // positions are the natural index here

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

mod common;

use common::{fixture, max_abs_diff, peers, reference};
use so8t_serve::engine::{BatchEntry, EngineModel, ForwardOut, Runner};

fn logits_all(r: &mut Runner, ids: &[u32]) -> Vec<f32> {
    r.logits_all(ids).unwrap()
}

#[test]
fn hf_fixtures_match_transformers() {
    for name in ["phi3-tiny", "phi3-longrope-tiny", "llama-gqa-tiny"] {
        let model = Arc::new(EngineModel::load(&fixture(name)).unwrap());
        for threads in [1, 2, 3] {
            let mut r = Runner::new(model.clone(), threads);
            for case in reference(name)["cases"].as_array().unwrap() {
                let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
                let want: Vec<Vec<f32>> = serde_json::from_value(case["logits"].clone()).unwrap();
                let want: Vec<f32> = want.concat();
                let got = logits_all(&mut r, &ids);
                let d = max_abs_diff(&got, &want);
                assert!(
                    d < 1e-4,
                    "{name} ({} tokens, {threads} threads): max |Δlogit| {d}",
                    ids.len()
                );
            }
        }
    }
}

#[test]
fn incremental_and_batched_decoding_equal_one_pass() {
    let model = Arc::new(EngineModel::load(&fixture("llama-gqa-tiny")).unwrap());
    let mut r = Runner::new(model.clone(), 2);
    let vocab = model.cfg.vocab;
    let a: Vec<u32> = (0..23).map(|i| (i * 37 + 5) % vocab as u32).collect();
    let b: Vec<u32> = (0..17).map(|i| (i * 11 + 3) % vocab as u32).collect();
    let (full_a, full_b) = (logits_all(&mut r, &a), logits_all(&mut r, &b));
    // Sequence a: prefill 9 tokens, then one at a time; sequence b: prefill 4, then one at a
    // time, in the same batches as a.
    let (mut ca, mut cb) = (model.new_cache(), model.new_cache());
    let mut got_a = vec![0f32; a.len() * vocab];
    let mut got_b = vec![0f32; b.len() * vocab];
    let (mut pa, mut pb) = (0usize, 0usize);
    while pa < a.len() || pb < b.len() {
        let mut batch = Vec::new();
        let ta = if pa == 0 { 9 } else { 1 };
        let tb = if pb == 0 { 4 } else { 1 };
        for pos in pa..(pa + ta).min(a.len()) {
            batch.push(BatchEntry {
                cache: 0,
                token: a[pos],
                pos,
                logits: true,
            });
        }
        for pos in pb..(pb + tb).min(b.len()) {
            batch.push(BatchEntry {
                cache: 1,
                token: b[pos],
                pos,
                logits: true,
            });
        }
        let mut out = ForwardOut::default();
        r.forward(&mut [&mut ca, &mut cb], &batch, false, &mut out)
            .unwrap();
        for (k, e) in batch.iter().enumerate() {
            let dst = if e.cache == 0 { &mut got_a } else { &mut got_b };
            dst[e.pos * vocab..(e.pos + 1) * vocab]
                .copy_from_slice(&out.logits[k * vocab..(k + 1) * vocab]);
        }
        pa = (pa + ta).min(a.len());
        pb = (pb + tb).min(b.len());
    }
    assert!(max_abs_diff(&got_a, &full_a) < 1e-5);
    assert!(max_abs_diff(&got_b, &full_b) < 1e-5);
    assert_eq!(ca.len, a.len());
}

fn llama_cpp_logits(peers: &Path, gguf: &Path, ids: &[u32]) -> Vec<f32> {
    llama_cpp_logits_with(peers, gguf, ids, None)
}

fn llama_cpp_logits_with(peers: &Path, gguf: &Path, ids: &[u32], lora: Option<&Path>) -> Vec<f32> {
    let ids_s: Vec<String> = ids.iter().map(u32::to_string).collect();
    let mut cmd = Command::new(peers.join("venv/bin/python"));
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../so8t-gguf/tests/data/llama_cpp_peer.py"),
    )
    .arg(gguf)
    .arg("--ids")
    .arg(ids_s.join(","));
    if let Some(l) = lora {
        cmd.arg("--lora").arg(l);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<Vec<f32>> = serde_json::from_value(v["logits"].clone()).unwrap();
    rows.concat()
}

/// Relative error of the last position: max |Δ| / max |logit|.
fn rel_last(a: &[f32], b: &[f32], vocab: usize) -> f32 {
    let (a, b) = (&a[a.len() - vocab..], &b[b.len() - vocab..]);
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    max_abs_diff(a, b) / scale
}

#[test]
fn smollm2_gguf_matches_llama_cpp_and_the_hf_folder() {
    let Some(p) = peers("smollm2_gguf_matches_llama_cpp_and_the_hf_folder") else {
        return;
    };
    // "The capital of France is" in SmolLM2's vocabulary, plus a longer tail.
    let ids: Vec<u32> = vec![
        504, 3575, 282, 4649, 314, 7042, 30, 378, 1345, 2013, 282, 6893, 314,
    ];
    let hf = p.join("models/smollm2-hf");
    let f16 = p.join("models/smollm2-135m-f16.gguf");
    let mut hf_r = Runner::new(Arc::new(EngineModel::load(&hf).unwrap()), 2);
    let hf_logits = logits_all(&mut hf_r, &ids);
    // llama.cpp's own F16 logits: the quantized files are judged against their own
    // quantization noise (two implementations of the same Q8_0 arithmetic diverge by up to
    // that much, since a tiny difference flips roundings of the activation quantization).
    let cpp_f16 = llama_cpp_logits(&p, &f16, &ids);
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
            .0
    };
    for file in [
        "smollm2-135m-f16.gguf",
        "smollm2-135m-q8_0.gguf",
        "smollm2-135m-q4_k_m.gguf",
    ] {
        let path = p.join("models").join(file);
        let model = Arc::new(EngineModel::load(&path).unwrap());
        let vocab = model.cfg.vocab;
        let mut r = Runner::new(model, 2);
        let ours = logits_all(&mut r, &ids);
        let theirs = if path == f16 {
            cpp_f16.clone()
        } else {
            llama_cpp_logits(&p, &path, &ids)
        };
        let rel = rel_last(&ours, &theirs, vocab);
        let noise = rel_last(&theirs, &cpp_f16, vocab);
        eprintln!(
            "{file}: ours vs llama.cpp F16 {:.2e}",
            rel_last(&ours, &cpp_f16, vocab)
        );
        eprintln!("{file}: relative max |Δlogit| vs llama.cpp {rel:.2e} (llama.cpp's own distance to F16 {noise:.2e})");
        let tol = if path == f16 {
            2e-3
        } else {
            1.5 * noise + 2e-3
        };
        assert!(rel < tol, "{file}: {rel} vs llama.cpp (tolerance {tol})");
        let last = |v: &[f32]| v[v.len() - vocab..].to_vec();
        assert_eq!(
            argmax(&last(&ours)),
            argmax(&last(&theirs)),
            "{file}: a different next token"
        );
        if path == f16 {
            let rel_hf = rel_last(&ours, &hf_logits, vocab);
            eprintln!("{file}: vs the HF folder {rel_hf:.2e}");
            assert!(rel_hf < 2e-3, "{file} vs HF folder: {rel_hf}");
        }
    }
}

#[test]
fn gguf_lora_adapter_matches_llama_cpp() {
    let Some(p) = peers("gguf_lora_adapter_matches_llama_cpp") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("lora.gguf");
    let f16 = p.join("models/smollm2-135m-f16.gguf");
    common::make_lora_adapter(&p, &f16, &adapter);
    let ids: Vec<u32> = vec![504, 3575, 282, 4649, 314, 7042, 30, 378, 1345];
    let mut model = EngineModel::load(&f16).unwrap();
    let vocab = model.cfg.vocab;
    let base = Runner::new(Arc::new(EngineModel::load(&f16).unwrap()), 2)
        .logits_all(&ids)
        .unwrap();
    // 4 layers × (q, v, output, down, gate).
    assert_eq!(model.apply_lora(&adapter, 1.0).unwrap(), 20);
    let ours = Runner::new(Arc::new(model), 2).logits_all(&ids).unwrap();
    let theirs = llama_cpp_logits_with(&p, &f16, &ids, Some(&adapter));
    let rel = rel_last(&ours, &theirs, vocab);
    let moved = rel_last(&base, &theirs, vocab);
    eprintln!("with the adapter: ours vs llama.cpp {rel:.2e}; without it {moved:.2e}");
    assert!(rel < 2e-3, "{rel} vs llama.cpp with the adapter");
    assert!(
        moved > 20.0 * rel,
        "the adapter barely changes the logits ({moved})"
    );
    // Not an adapter / a mismatched one: clear errors.
    let mut m = EngineModel::load(&f16).unwrap();
    let e = m.apply_lora(&f16, 1.0).unwrap_err().to_string();
    assert!(e.contains("not a LoRA adapter"), "{e}");
    let hf = EngineModel::load(&p.join("models/smollm2-hf"));
    let e = hf
        .unwrap()
        .apply_lora(&adapter, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs a GGUF base model"), "{e}");
}
