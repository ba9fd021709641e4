//! HF folder → GGUF: the files read back (round trip), carry llama.cpp's names and metadata, and
//! — with the llama.cpp peers under `/tmp/peers` (`bash ../shared/peers/setup.sh`) — load in
//! llama.cpp with so8t's own logits, tokenize like the HF tokenizer, and on SmolLM2 equal
//! llama.cpp's own conversion byte for byte (F16) and type for type (Q4_K_M).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use so8t_gguf::export::{export, ExportOptions, Quant};
use so8t_gguf::quant::dequantize;
use so8t_gguf::{GgmlType, GgufFile};
use so8t_model::init::{init_model, InitOptions, Preset};
use so8t_model::{Arch, Forward, Model, TextTokenizer, Weights};

fn tiny(dir: &Path, arch: Arch) -> PathBuf {
    let m = dir.join(format!("tiny-{}", arch.model_type()));
    init_model(
        &InitOptions {
            arch,
            preset: Preset::Tiny,
            seed: 11,
            tokenizer_corpus: vec![],
            dtype: None,
            vocab_size: None,
        },
        &m,
    )
    .unwrap();
    m
}

fn run(model: &Path, out: &Path, quants: &[Quant]) -> so8t_gguf::export::ExportReport {
    export(&ExportOptions {
        model: model.to_path_buf(),
        out: out.to_path_buf(),
        quants: quants.to_vec(),
        name: "m".into(),
        system: None,
        tokenizer_pre: None,
        progress: None,
    })
    .unwrap()
}

#[test]
fn tiny_models_round_trip_with_llama_cpp_names() {
    let t = tempfile::tempdir().unwrap();
    for arch in [Arch::Phi3, Arch::Llama] {
        let model = tiny(t.path(), arch);
        let out = t.path().join(format!("out-{}", arch.model_type()));
        let r = run(
            &model,
            &out,
            &[Quant::F32, Quant::F16, Quant::Q8_0, Quant::Q4KM],
        );
        assert_eq!(r.files.len(), 4);
        let w = Weights::from_model_dir(&model).unwrap();
        let f32_file = GgufFile::open(out.join("m-f32.gguf")).unwrap();
        let f16_file = GgufFile::open(out.join("m-f16.gguf")).unwrap();
        let name = arch.model_type();
        assert_eq!(
            f32_file.metadata("general.architecture").unwrap().as_str(),
            Some(name)
        );
        assert!(f32_file.metadata(&format!("{name}.block_count")).is_some());
        assert!(f32_file.metadata("tokenizer.chat_template").is_some());
        let embd = f32_file.tensor("token_embd.weight").unwrap();
        let src = w
            .get_any("model.embed_tokens.weight", DType::F32, &Device::Cpu)
            .unwrap();
        let src: Vec<f32> = src.flatten_all().unwrap().to_vec1().unwrap();
        let got = dequantize(embd.ty, f32_file.tensor_bytes(embd), src.len()).unwrap();
        assert_eq!(got, src, "{name}: F32 is lossless");
        let e16 = f16_file.tensor("token_embd.weight").unwrap();
        assert_eq!(e16.ty, GgmlType::F16);
        let got = dequantize(e16.ty, f16_file.tensor_bytes(e16), src.len()).unwrap();
        let worst = got
            .iter()
            .zip(&src)
            .map(|(a, b)| ((a - b) / b.abs().max(1e-3)).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "{name}: F16 off by {worst}");
        let names: Vec<&str> = f16_file.tensors().iter().map(|t| t.name.as_str()).collect();
        match arch {
            Arch::Phi3 => assert!(
                names.contains(&"blk.0.attn_qkv.weight") && names.contains(&"blk.1.ffn_up.weight")
            ),
            Arch::Llama => assert!(
                names.contains(&"blk.0.attn_q.weight") && names.contains(&"blk.0.ffn_gate.weight")
            ),
        }
        // Norms stay f32 in every flavour; the checksums beside the files verify.
        let q4 = GgufFile::open(out.join("m-q4_k_m.gguf")).unwrap();
        assert_eq!(
            q4.tensor("blk.0.attn_norm.weight").unwrap().ty,
            GgmlType::F32
        );
        for f in &r.files {
            let v = so8t_gguf::verify(&f.path).unwrap();
            assert!(v.is_ok(), "{v}");
            assert!(v.checksums.iter().any(|c| c.matches), "{v}");
            let mf = std::fs::read_to_string(&f.modelfile).unwrap();
            assert!(mf.contains(&format!(
                "FROM ./{}",
                f.path.file_name().unwrap().to_string_lossy()
            )));
        }
    }
}

#[test]
fn unsupported_and_broken_folders_are_named() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny(t.path(), Arch::Llama);
    let cfg = model.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("\"llama\"", "\"gpt_neox\"")
            .replace("LlamaForCausalLM", "GPTNeoXForCausalLM"),
    )
    .unwrap();
    let e = export(&ExportOptions {
        model: model.clone(),
        out: t.path().join("o"),
        quants: vec![Quant::F16],
        name: "m".into(),
        system: None,
        tokenizer_pre: None,
        progress: None,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("gpt_neox") || e.contains("GPTNeoX"), "{e}");
    assert!(Quant::parse("q3_k_s")
        .unwrap_err()
        .to_string()
        .contains("q4_k_m"));
}

// ------------------------------------------------------------------------------------------
// llama.cpp peers

fn peers(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var("SO8T_PEERS").unwrap_or_else(|_| "/tmp/peers".into()));
    let py = dir.join("venv/bin/python");
    if py.exists() && dir.join("bin/llama-quantize").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP {test}: llama.cpp peers not found under {} (bash ../shared/peers/setup.sh)",
            dir.display()
        );
        None
    }
}

/// llama.cpp's logits for `ids` and tokens for `texts` from `gguf`.
fn llama_cpp(peers: &Path, gguf: &Path, ids: &[u32], texts: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llama_cpp_peer.py");
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    let out = Command::new(peers.join("venv/bin/python"))
        .arg(script)
        .arg(gguf)
        .args([
            "--ids",
            &ids.join(","),
            "--texts",
            &serde_json::to_string(texts).unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// so8t's logits on the HF folder, [positions][vocab].
fn so8t_logits(model: &Path, ids: &[u32]) -> Vec<Vec<f32>> {
    let m = Model::load(model, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let l = m.forward(&x, Forward::default()).unwrap();
    l.squeeze(0).unwrap().to_vec2().unwrap()
}

/// max |a − b| / max |a| over the last position.
fn last_rel(a: &[Vec<f32>], b: &serde_json::Value) -> f64 {
    let b: Vec<f64> = b
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let a = a.last().unwrap();
    let scale = a.iter().fold(0f64, |m, x| m.max(x.abs() as f64));
    a.iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - y).abs()))
        / scale
}

/// llama.cpp's tokens of [`TEXTS`] (in the peer's answer `r`) equal the HF tokenizer's.
fn assert_tokens(tok: &TextTokenizer, r: &serde_json::Value, what: &str) {
    for (text, got) in TEXTS.iter().zip(r["tokens"].as_array().unwrap()) {
        let want = tok.encode(text, false).unwrap();
        let got: Vec<u32> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, want, "{what}: tokens of {text:?}");
    }
}

const TEXTS: [&str; 4] = [
    "Hello world! The capital of France is Paris.",
    "日本の首都は東京です。",
    "🚀 emoji 😶\u{200d}🌫️ and 🦙🦙",
    "  spaces\n\ttabs 3333 numbers",
];

#[test]
fn llama_cpp_loads_the_tiny_phi3_with_our_logits_and_tokens() {
    let Some(p) = peers("llama_cpp_loads_the_tiny_phi3") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let model = tiny(t.path(), Arch::Phi3);
    let out = t.path().join("out");
    run(&model, &out, &[Quant::F16, Quant::Q8_0, Quant::Q4KM]);
    let tok = TextTokenizer::from_dir(&model).unwrap();
    let ids = tok.encode("The capital of France is", false).unwrap();
    let ours = so8t_logits(&model, &ids);
    for (q, tol) in [("f16", 1e-3), ("q8_0", 5e-2), ("q4_k_m", 0.25)] {
        let r = llama_cpp(&p, &out.join(format!("m-{q}.gguf")), &ids, &TEXTS);
        assert_eq!(r["arch"], "phi3");
        let rel = last_rel(&ours, &r["logits"]);
        assert!(
            rel <= tol,
            "{q}: llama.cpp logits differ by {rel} (relative)"
        );
        assert_tokens(&tok, &r, q);
    }
}

#[test]
fn smollm2_equals_llama_cpp_conversion() {
    let Some(p) = peers("smollm2_equals_llama_cpp_conversion") else {
        return;
    };
    let model = Path::new("/tmp/so8t-peers/models/smollm2-hf");
    let reference = p.join("models/smollm2-135m-f16.gguf");
    if !model.join("config.json").exists() || !reference.exists() {
        eprintln!(
            "SKIP smollm2_equals_llama_cpp_conversion: no SmolLM2 (scripts/setup-test-peers.sh)"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    run(model, &out, &[Quant::F32, Quant::F16, Quant::Q4KM]);
    // F16: every tensor byte-identical to llama.cpp's own F16 of the same weights.
    let ours = GgufFile::open(out.join("m-f16.gguf")).unwrap();
    let theirs = GgufFile::open(&reference).unwrap();
    assert_eq!(ours.tensors().len(), theirs.tensors().len());
    for ti in theirs.tensors() {
        let oi = ours
            .tensor(&ti.name)
            .unwrap_or_else(|| panic!("{} missing", ti.name));
        assert_eq!((oi.ty, &oi.dims), (ti.ty, &ti.dims), "{}", ti.name);
        assert!(
            ours.tensor_bytes(oi) == theirs.tensor_bytes(ti),
            "{} differs",
            ti.name
        );
    }
    // Q4_K_M: the types llama-quantize picks for our F16.
    let lq = t.path().join("llama-q4_k_m.gguf");
    let st = Command::new(p.join("bin/llama-quantize"))
        .arg(out.join("m-f16.gguf"))
        .arg(&lq)
        .arg("Q4_K_M")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let lq = GgufFile::open(&lq).unwrap();
    let q4 = GgufFile::open(out.join("m-q4_k_m.gguf")).unwrap();
    let src = GgufFile::open(out.join("m-f32.gguf")).unwrap();
    let values = |f: &GgufFile, name: &str| {
        let t = f.tensor(name).unwrap();
        dequantize(t.ty, f.tensor_bytes(t), t.n_elements as usize).unwrap()
    };
    let rmse = |a: &[f32], b: &[f32]| {
        (a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            / a.len() as f64)
            .sqrt()
    };
    for ti in lq.tensors() {
        assert_eq!(q4.tensor(&ti.name).unwrap().ty, ti.ty, "{}", ti.name);
        // Reconstruction error against the source, ours ≤ 1.02 × llama.cpp's.
        let s = values(&src, &ti.name);
        let (ours, theirs) = (
            rmse(&values(&q4, &ti.name), &s),
            rmse(&values(&lq, &ti.name), &s),
        );
        assert!(
            ours <= 1.02 * theirs + 1e-12,
            "{}: RMSE {ours} vs llama.cpp {theirs}",
            ti.name
        );
    }
    // llama.cpp on our F16: so8t's logits within 1e-3 relative (as llama.cpp's own file),
    // the HF tokenizer's tokens.
    let tok = TextTokenizer::from_dir(model).unwrap();
    let ids = tok.encode("The capital of France is", false).unwrap();
    let r = llama_cpp(&p, &out.join("m-f16.gguf"), &ids, &TEXTS);
    let rel = last_rel(&so8t_logits(model, &ids), &r["logits"]);
    assert!(rel <= 1.5e-3, "llama.cpp logits differ by {rel} (relative)");
    assert_tokens(&tok, &r, "f16");
}

/// A SentencePiece-style vocabulary (Llama 2 / Phi-3 kind: `▁`, byte fallback): exported as
/// `tokenizer.ggml.model = llama` with scores and token types, llama.cpp tokenizes like HF.
#[test]
fn sentencepiece_vocabularies_tokenize_like_hf() {
    let Some(p) = peers("sentencepiece_vocabularies_tokenize_like_hf") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let model = tiny(t.path(), Arch::Llama);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/make_spm_tokenizer.py");
    let st = Command::new(p.join("venv/bin/python"))
        .arg(script)
        .arg(&model)
        .arg("512")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::write(
        model.join("tokenizer_config.json"),
        r#"{"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": "{% for m in messages %}{{ '<s>' + m['role'] + ': ' + m['content'] + '</s>' }}{% endfor %}"}"#,
    )
    .unwrap();
    let out = t.path().join("out");
    run(&model, &out, &[Quant::F16]);
    let f = GgufFile::open(out.join("m-f16.gguf")).unwrap();
    assert_eq!(
        f.metadata("tokenizer.ggml.model").unwrap().as_str(),
        Some("llama")
    );
    assert!(f.metadata("tokenizer.ggml.scores").is_some());
    let tok = TextTokenizer::from_dir(&model).unwrap();
    let ids = tok.encode("The capital of France is", false).unwrap();
    let r = llama_cpp(&p, &out.join("m-f16.gguf"), &ids, &TEXTS);
    assert_tokens(&tok, &r, "f16");
    let rel = last_rel(&so8t_logits(&model, &ids), &r["logits"]);
    assert!(rel <= 1e-3, "llama.cpp logits differ by {rel} (relative)");
}

/// A tensor that fails to load half-way through the stream (an integer dtype) stops the export
/// with an error naming it, every writer thread ends, and no partial file is left behind.
#[test]
fn a_failure_mid_stream_names_the_tensor_and_leaves_no_file() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny(t.path(), Arch::Llama);
    let st = model.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let needle = br#""model.layers.1.mlp.down_proj.weight":{"dtype":"F32""#;
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the tiny model's header lists the tensor as F32");
    let dtype = at + needle.len() - 4;
    bytes[dtype..dtype + 3].copy_from_slice(b"I32");
    std::fs::write(&st, &bytes).unwrap();
    let out = t.path().join("o");
    let e = export(&ExportOptions {
        model,
        out: out.clone(),
        quants: vec![Quant::F16, Quant::Q8_0, Quant::Q4KM],
        name: "m".into(),
        system: None,
        tokenizer_pre: None,
        progress: None,
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.layers.1.mlp.down_proj.weight") && e.contains("I32"),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}
