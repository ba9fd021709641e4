//! Tokenizers built from GGUF metadata alone tokenize and detokenize like llama.cpp (the peers
//! under `/tmp/peers`, `bash ../shared/peers/setup.sh`; those tests skip without them), and bad
//! metadata is refused with the key named.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use so8t_gguf::{GgufFile, GgufWriter, Value};
use so8t_model::TextTokenizer;
use so8t_serve::tokenizer::{tokenizer_from_gguf, TokenizerError};

/// Texts both tokenizers see.
const CORPUS: &[&str] = &[
    "",
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "   three leading spaces",
    "multiple   spaces    inside",
    "line one\nline two\n\nline four",
    "\n\n\n",
    "tabs\tand\t\ttabs",
    "def f(x):\n    return x * 2\n",
    "fn main() {\n\tprintln!(\"hi\");\n}\n",
    "if (a && b) { c = d[0]; } // comment",
    "12345678",
    "3.14159",
    "1,000,000 and 42 and 0.5%",
    "!!!??? ... --- *** ###",
    "don't, won't, I'LL, we've, she'd, they're, it's",
    "It'S LOUD'D",
    "# 思考ステップ",
    "分類: DENY",
    "日本の首都は東京です。今日は良い天気ですね。",
    "한국어 텍스트와 中文 混合",
    "Ελληνικά και русский текст",
    "emoji 🚀🦙 rocket",
    "family 👨‍👩‍👧‍👦 ZWJ",
    "flags 🇯🇵🇺🇸 and skin 👍🏽",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>",
    "text<|endoftext|>more text",
    "<s>bos in text</s>",
    "<|im_end|><|im_end|>",
    "partial <|im_ and |> markers",
    "\u{fffd} replacement and \u{0} nul \u{7f} del",
    "control \u{1} \u{1b}[0m chars",
    "combining e\u{301} and \u{200b}zero width",
    "  \n  \t  mixed whitespace  \n",
    "URL: https://example.com/path?q=1&r=2#frag",
    "email me at someone@example.org",
    "CamelCaseIdentifier snake_case_name kebab-case-name",
    "$$$ €100 ¥200 £300",
    "a",
    " ",
    "x\r\ny\r\n",
    "<0x41> literal byte token text",
    "▁ already escaped ▁▁",
    "[PAD600] [EMPTY_1]",
];

fn peers(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var("SO8T_PEERS").unwrap_or_else(|_| "/tmp/peers".into()));
    if dir.join("venv/bin/python").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP {test}: llama.cpp peers not found under {} (bash ../shared/peers/setup.sh)",
            dir.display()
        );
        None
    }
}

/// llama.cpp's view of `gguf`'s vocabulary (see tests/data/llama_cpp_vocab.py).
fn llama_cpp(peers: &Path, gguf: &Path, texts: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llama_cpp_vocab.py");
    let req = serde_json::json!({"gguf": gguf, "texts": texts});
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), req.to_string()).unwrap();
    let out = Command::new(peers.join("venv/bin/python"))
        .arg(script)
        .stdin(std::fs::File::open(input.path()).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "llama.cpp peer failed on {}: {}",
        gguf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// llama.cpp's pieces of `ids` concatenated, as text.
fn pieces(r: &serde_json::Value, key: &str, ids: &[u32]) -> String {
    let p = r[key].as_array().unwrap();
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&i| unhex(p[i as usize].as_str().unwrap()))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every difference between `tok` and llama.cpp's answer `r` on `texts`.
fn differences(tok: &TextTokenizer, r: &serde_json::Value, texts: &[&str]) -> Vec<String> {
    let mut bad = vec![];
    for (t, want) in texts.iter().zip(r["texts"].as_array().unwrap()) {
        for (add, key) in [(false, "plain"), (true, "bos")] {
            let want = ids(&want[key]);
            let ours = tok.encode(t, add).unwrap();
            if ours != want {
                bad.push(format!(
                    "encode({t:?}, {add}): ours {ours:?}, llama.cpp {want:?}"
                ));
            }
            for (skip, pk) in [(false, "pieces_special"), (true, "pieces")] {
                let ours = tok.decode(&want, skip).unwrap();
                let theirs = pieces(r, pk, &want);
                if ours != theirs {
                    bad.push(format!(
                        "decode({want:?}, skip_special={skip}): ours {ours:?}, llama.cpp {theirs:?}"
                    ));
                }
            }
        }
    }
    let n = r["n_vocab"].as_u64().unwrap() as u32;
    assert_eq!(tok.vocab_size() as u32, n, "vocabulary size");
    for id in 0..n {
        for (skip, pk) in [(false, "pieces_special"), (true, "pieces")] {
            let ours = tok.decode(&[id], skip).unwrap();
            let theirs = pieces(r, pk, &[id]);
            if ours != theirs {
                bad.push(format!(
                    "decode([{id}], skip_special={skip}): ours {ours:?}, llama.cpp {theirs:?}"
                ));
            }
        }
    }
    let eog = ids(&r["eog"]);
    if tok.stop_token_ids != eog {
        bad.push(format!(
            "stop ids: ours {:?}, llama.cpp's end-of-generation ids {eog:?}",
            tok.stop_token_ids
        ));
    }
    bad
}

fn assert_same(tok: &TextTokenizer, r: &serde_json::Value, what: &str) {
    let bad = differences(tok, r, CORPUS);
    assert!(
        bad.is_empty(),
        "{what}: {} differences from llama.cpp, first:\n{}",
        bad.len(),
        bad.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// A metadata-only copy of `src` with `edit` applied to its metadata.
fn rewrite(src: &Path, out: &Path, edit: impl Fn(&mut Vec<(String, Value)>)) {
    let f = GgufFile::open(src).unwrap();
    let mut md = f.metadata_entries().to_vec();
    edit(&mut md);
    GgufWriter::create(out, md, vec![])
        .unwrap()
        .finish()
        .unwrap();
}

fn set(md: &mut Vec<(String, Value)>, key: &str, v: Value) {
    md.retain(|(k, _)| k != key);
    md.push((key.to_string(), v));
}

const SMOLLM2: &[&str] = &[
    "smollm2-135m-f16.gguf",
    "smollm2-135m-q8_0.gguf",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
];

#[test]
fn smollm2_tokenizes_and_detokenizes_like_llama_cpp() {
    let Some(p) = peers("smollm2_tokenizes_and_detokenizes_like_llama_cpp") else {
        return;
    };
    let mut tested = 0;
    for name in SMOLLM2 {
        let path = p.join("models").join(name);
        if !path.exists() {
            eprintln!("SKIP {name}: not under {}", p.join("models").display());
            continue;
        }
        let f = GgufFile::open(&path).unwrap();
        let t0 = Instant::now();
        let tok = tokenizer_from_gguf(&f).unwrap();
        eprintln!(
            "{name}: tokenizer of {} tokens built in {:?}",
            tok.vocab_size(),
            t0.elapsed()
        );
        let im_end = tok.token_id("<|im_end|>").expect("<|im_end|> in SmolLM2");
        assert!(
            tok.stop_token_ids.contains(&im_end),
            "{name}: <|im_end|> stops"
        );
        assert!(tok.chat_template.is_some(), "{name}: chat template");
        let r = llama_cpp(&p, &path, CORPUS);
        assert_eq!(
            tok.bos_token.as_deref().and_then(|b| tok.token_id(b)),
            Some(r["bos"].as_u64().unwrap() as u32)
        );
        assert_same(&tok, &r, name);
        tested += 1;
    }
    assert!(tested > 0, "no SmolLM2 GGUF under {}", p.display());
}

/// The SmolLM2 vocabulary under other `tokenizer.ggml.pre` names (and BOS settings) exercises
/// the other pre-tokenizers against llama.cpp.
#[test]
fn other_pre_tokenizers_match_llama_cpp() {
    let Some(p) = peers("other_pre_tokenizers_match_llama_cpp") else {
        return;
    };
    let src = p.join("models").join(SMOLLM2[0]);
    if !src.exists() {
        eprintln!(
            "SKIP other_pre_tokenizers_match_llama_cpp: no {}",
            src.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (pre, add_bos) in [
        ("gpt-2", Some(true)),
        ("llama-bpe", None),
        ("qwen2", Some(false)),
        ("default", None),
        ("gpt-4o", None),
        ("tekken", None),
        ("deepseek-coder", None),
    ] {
        let out = dir.path().join(format!("{pre}.gguf"));
        rewrite(&src, &out, |md| {
            set(md, "tokenizer.ggml.pre", Value::string(pre));
            md.retain(|(k, _)| k != "tokenizer.ggml.add_bos_token");
            if let Some(b) = add_bos {
                set(md, "tokenizer.ggml.add_bos_token", Value::Bool(b));
            }
        });
        let tok = tokenizer_from_gguf(&GgufFile::open(&out).unwrap()).unwrap();
        let r = llama_cpp(&p, &out, CORPUS);
        assert_same(&tok, &r, pre);
    }
}

/// A SentencePiece (`llama`) GGUF made by so8t's exporter from a trained SentencePiece-style
/// tokenizer (as in so8t-gguf's export tests), its `<0xNN>` tokens typed BYTE as llama.cpp's
/// converter types them.
#[test]
fn sentencepiece_gguf_tokenizes_like_llama_cpp() {
    let Some(p) = peers("sentencepiece_gguf_tokenizes_like_llama_cpp") else {
        return;
    };
    use so8t_model::init::{init_model, InitOptions, Preset};
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("tiny-llama");
    init_model(
        &InitOptions {
            arch: so8t_model::Arch::Llama,
            preset: Preset::Tiny,
            seed: 11,
            tokenizer_corpus: vec![],
            dtype: None,
            vocab_size: None,
        },
        &model,
    )
    .unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../so8t-gguf/tests/data/make_spm_tokenizer.py");
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
    so8t_gguf::export::export(&so8t_gguf::export::ExportOptions {
        model: model.clone(),
        out: out.clone(),
        quants: vec![so8t_gguf::export::Quant::F16],
        name: "m".into(),
        system: None,
        tokenizer_pre: None,
        progress: None,
    })
    .unwrap();
    let gguf = t.path().join("spm.gguf");
    rewrite(&out.join("m-f16.gguf"), &gguf, |md| {
        let tokens: Vec<String> = md
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .and_then(|(_, v)| v.as_strings())
            .unwrap()
            .into_iter()
            .map(str::to_string)
            .collect();
        let types = md
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.token_type")
            .unwrap()
            .1
            .as_array()
            .unwrap()
            .iter()
            .zip(&tokens)
            .map(|(v, t)| {
                let byte = t.len() == 6 && t.starts_with("<0x") && t.ends_with('>');
                if byte {
                    6
                } else {
                    v.as_i32().unwrap()
                }
            })
            .collect::<Vec<_>>();
        set(md, "tokenizer.ggml.token_type", Value::i32s(types));
    });
    let tok = tokenizer_from_gguf(&GgufFile::open(&gguf).unwrap()).unwrap();
    assert!(tok.chat_template.is_some());
    let r = llama_cpp(&p, &gguf, CORPUS);
    assert!(r["add_bos"].as_bool().unwrap());
    assert_eq!(tok.encode("Hi", true).unwrap()[0], 1, "BOS first");
    assert_same(&tok, &r, "SentencePiece GGUF");
    // Without the space prefix.
    let noprefix = t.path().join("spm-noprefix.gguf");
    rewrite(&gguf, &noprefix, |md| {
        set(md, "tokenizer.ggml.add_space_prefix", Value::Bool(false));
        set(md, "tokenizer.ggml.add_bos_token", Value::Bool(false));
    });
    let tok = tokenizer_from_gguf(&GgufFile::open(&noprefix).unwrap()).unwrap();
    let r = llama_cpp(&p, &noprefix, CORPUS);
    assert_same(&tok, &r, "SentencePiece GGUF without space prefix");
}

// Metadata errors (no peers needed).

fn small_vocab() -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::string("llama")),
        ("tokenizer.ggml.model".into(), Value::string("llama")),
        (
            "tokenizer.ggml.tokens".into(),
            Value::strings(["<unk>", "<s>", "</s>", "▁a", "a", "▁", "b"]),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::f32s([0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0]),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::i32s([2, 3, 3, 1, 1, 1, 1]),
        ),
    ]
}

fn build(md: Vec<(String, Value)>) -> Result<TextTokenizer, TokenizerError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.gguf");
    GgufWriter::create(&path, md, vec![])
        .unwrap()
        .finish()
        .unwrap();
    tokenizer_from_gguf(&GgufFile::open(&path).unwrap())
}

#[test]
fn small_sentencepiece_vocab_builds() {
    let tok = build(small_vocab()).unwrap();
    assert_eq!(tok.encode("a b", true).unwrap(), vec![1, 3, 5, 6]);
    assert_eq!(tok.encode("a</s>", false).unwrap(), vec![3, 2]);
    assert_eq!(tok.decode(&[1, 3, 5, 6, 2], true).unwrap(), " a b");
    assert_eq!(tok.decode(&[1, 3, 2], false).unwrap(), "<s> a</s>");
    assert_eq!(tok.stop_token_ids, vec![2]);
    assert_eq!(tok.bos_token.as_deref(), Some("<s>"));
}

fn expect_err(md: Vec<(String, Value)>, needles: &[&str]) {
    let e = match build(md) {
        Ok(_) => panic!("expected an error mentioning {needles:?}"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(e.contains(n), "error {e:?} should mention {n:?}");
    }
}

#[test]
fn bad_metadata_is_refused_with_the_key_named() {
    let mut md = small_vocab();
    md.retain(|(k, _)| k != "tokenizer.ggml.tokens");
    expect_err(md, &["tokenizer.ggml.tokens", "missing"]);

    let mut md = small_vocab();
    md.retain(|(k, _)| k != "tokenizer.ggml.model");
    expect_err(md, &["tokenizer.ggml.model", "missing"]);

    let mut md = small_vocab();
    set(&mut md, "tokenizer.ggml.scores", Value::f32s([0.0, 1.0]));
    expect_err(md, &["tokenizer.ggml.scores", "2 entries", "at least 7"]);

    let mut md = small_vocab();
    set(&mut md, "tokenizer.ggml.token_type", Value::i32s([1, 1, 1]));
    expect_err(md, &["tokenizer.ggml.token_type", "3 entries"]);

    let mut md = small_vocab();
    set(&mut md, "tokenizer.ggml.model", Value::string("t5"));
    expect_err(md, &["tokenizer.ggml.model", "\"t5\"", "gpt2"]);

    let mut md = small_vocab();
    set(&mut md, "tokenizer.ggml.model", Value::U32(3));
    expect_err(md, &["tokenizer.ggml.model", "string"]);

    let mut md = small_vocab();
    set(&mut md, "tokenizer.ggml.tokens", Value::i32s([1, 2, 3]));
    expect_err(md, &["tokenizer.ggml.tokens", "array of strings"]);

    let mut md = small_vocab();
    set(
        &mut md,
        "tokenizer.ggml.tokens",
        Value::strings(["<unk>", "<s>", "</s>", "a", "a", "▁", "b"]),
    );
    expect_err(md, &["tokenizer.ggml.tokens", "twice"]);

    let mut md = small_vocab();
    set(&mut md, "tokenizer.ggml.model", Value::string("gpt2"));
    expect_err(md, &["tokenizer.ggml.merges", "missing"]);

    let mut md = small_vocab();
    set(&mut md, "tokenizer.ggml.add_bos_token", Value::U32(1));
    expect_err(md, &["tokenizer.ggml.add_bos_token", "bool"]);

    let mut md = small_vocab();
    set(
        &mut md,
        "tokenizer.chat_template",
        Value::string("{% if %}"),
    );
    expect_err(md, &["tokenizer.chat_template"]);
}
