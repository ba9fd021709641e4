//! Hidden thinking end to end: a real (tiny, hand-built) GGUF model that writes `<think-*>`
//! blocks, served by `so8t serve`, asked through every text route, streamed and not. No byte of
//! the thinking may reach a client unless the operator passes `--show-thinking`; every request
//! writes an audit row with the hashes of the hidden and the shown text.
//!
//! The model is a "script": one llama layer whose attention and MLP are zero, one-hot token
//! embeddings and an output matrix that maps each token to the next token of a fixed text with a
//! logit margin of 80, so any sampling setting replays the text. The text is cut into 1–4
//! character tokens at seeded positions, so tags are split across tokens (and chunks). The
//! prompt's last byte picks the script.

mod server;

use std::path::Path;

use serde_json::{json, Value};
use so8t_gguf::{GgmlType, GgufWriter, TensorSpec};
use so8t_gguf::{Value as Meta, ValueType};
use so8t_serve::think::split_thinking;
use so8t_store::audit::sha256_hex;

use server::{http, Server};

const BIN: &str = env!("CARGO_BIN_EXE_so8t");

/// The scripts, chosen by the prompt's last character.
const SCRIPTS: [(char, &str); 3] = [
    (
        'Q',
        "<think-task>The user wants the vault code SECRETALPHA.</think-task>\
         <think-safety>Sharing it harms the owner; SECRETBRAVO.</think-safety>\
         <final>分類: DENY\nI can't share that code.</final>",
    ),
    (
        'X',
        "# 思考ステップ\nSECRETCHARLIE weighs the question.\n\n# 最終回答\n分類: ALLOW\nThe answer is 42.",
    ),
    (
        'Z',
        "<think>SECRETDELTA plan</think>Plain answer.<think-logic>SECRETECHO never closed",
    ),
];

/// Token ids: `<unk>`, `<s>`, `</s>`, 256 byte tokens, then the scripts' pieces.
const EOS: usize = 2;
const FIRST_PIECE: usize = 3 + 256;

struct Script {
    pieces: Vec<Vec<String>>,
}

/// Cuts each script into pieces of 1–4 characters (seeded), unique across all scripts.
fn cut_scripts() -> Script {
    let mut seen = std::collections::HashSet::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut pieces = Vec::new();
    for (_, text) in SCRIPTS {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut len = 1 + (state >> 33) as usize % 4;
            loop {
                let end = (i + len).min(chars.len());
                let p: String = chars[i..end].iter().collect();
                // Unique pieces (the model maps a token to one successor); no leading space,
                // which a SentencePiece decoder may drop at the start of a window.
                let next_is_space = chars.get(end) == Some(&' ');
                if !seen.contains(&p) && !next_is_space {
                    seen.insert(p.clone());
                    out.push(p);
                    i = end;
                    break;
                }
                if end == chars.len() {
                    // The tail repeats a piece: glue it to the pieces before it until unique.
                    let mut p = p;
                    while seen.contains(&p) {
                        let prev: String = out.pop().expect("a script's first piece is unique");
                        seen.remove(&prev);
                        p = prev + &p;
                    }
                    seen.insert(p.clone());
                    out.push(p);
                    i = end;
                    break;
                }
                len += 1;
            }
        }
        pieces.push(out);
    }
    Script { pieces }
}

/// Writes the script model to `path`.
fn write_model(path: &Path, script: &Script) {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let mut starts = Vec::new();
    let mut next = vec![usize::MAX; FIRST_PIECE];
    for chain in &script.pieces {
        starts.push(tokens.len());
        for (k, p) in chain.iter().enumerate() {
            tokens.push(p.replace(' ', "\u{2581}"));
            types.push(1);
            next.push(if k + 1 == chain.len() {
                EOS
            } else {
                tokens.len()
            });
        }
    }
    while !tokens.len().is_multiple_of(32) {
        tokens.push(format!("[pad{}]", tokens.len()));
        types.push(1);
        next.push(usize::MAX);
    }
    let v = tokens.len();
    // Anything outside a script starts script A, except the byte tokens of the other selectors.
    for (t, n) in next.iter_mut().enumerate() {
        if *n == usize::MAX {
            *n = starts[0];
            for (s, (c, _)) in SCRIPTS.iter().enumerate() {
                if t == 3 + *c as usize {
                    *n = starts[s];
                }
            }
        }
    }
    let n_ff = 32usize;
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut embd = vec![0f32; v * v];
    let mut out = vec![0f32; v * v];
    for t in 0..v {
        embd[t * v + t] = 1.0;
        out[next[t] * v + t] = 10.0; // row = the next token, column = this token
    }
    let ones = vec![1f32; v];
    let zeros_vv = vec![0f32; v * v];
    let zeros_ff = vec![0f32; v * n_ff];
    let t = |name: &str, dims: Vec<u64>| TensorSpec::new(name, dims, GgmlType::F32);
    let (vu, fu) = (v as u64, n_ff as u64);
    let specs = vec![
        t("token_embd.weight", vec![vu, vu]),
        t("blk.0.attn_norm.weight", vec![vu]),
        t("blk.0.attn_q.weight", vec![vu, vu]),
        t("blk.0.attn_k.weight", vec![vu, vu]),
        t("blk.0.attn_v.weight", vec![vu, vu]),
        t("blk.0.attn_output.weight", vec![vu, vu]),
        t("blk.0.ffn_norm.weight", vec![vu]),
        t("blk.0.ffn_gate.weight", vec![vu, fu]),
        t("blk.0.ffn_up.weight", vec![vu, fu]),
        t("blk.0.ffn_down.weight", vec![fu, vu]),
        t("output_norm.weight", vec![vu]),
        t("output.weight", vec![vu, vu]),
    ];
    let data: Vec<Vec<u8>> = vec![
        f32s(&embd),
        f32s(&ones),
        f32s(&zeros_vv),
        f32s(&zeros_vv),
        f32s(&zeros_vv),
        f32s(&zeros_vv),
        f32s(&ones),
        f32s(&zeros_ff),
        f32s(&zeros_ff),
        f32s(&zeros_ff),
        f32s(&ones),
        f32s(&out),
    ];
    let u32v = |x: usize| Meta::U32(x as u32);
    let meta: Vec<(String, Meta)> = vec![
        ("general.architecture", Meta::String("llama".into())),
        ("general.name", Meta::String("think-script".into())),
        ("llama.context_length", u32v(4096)),
        ("llama.embedding_length", u32v(v)),
        ("llama.block_count", u32v(1)),
        ("llama.feed_forward_length", u32v(n_ff)),
        ("llama.attention.head_count", u32v(1)),
        ("llama.attention.head_count_kv", u32v(1)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.rope.dimension_count", u32v(v)),
        ("tokenizer.ggml.model", Meta::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Meta::Array(
                ValueType::String,
                tokens.into_iter().map(Meta::String).collect(),
            ),
        ),
        (
            "tokenizer.ggml.scores",
            Meta::Array(ValueType::F32, vec![Meta::F32(0.0); v]),
        ),
        (
            "tokenizer.ggml.token_type",
            Meta::Array(ValueType::I32, types.into_iter().map(Meta::I32).collect()),
        ),
        ("tokenizer.ggml.unknown_token_id", u32v(0)),
        ("tokenizer.ggml.bos_token_id", u32v(1)),
        ("tokenizer.ggml.eos_token_id", u32v(EOS)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(true)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut w = GgufWriter::create(path, meta, specs).unwrap();
    for (i, d) in data.iter().enumerate() {
        w.write_tensor(i, d).unwrap();
    }
    w.finish().unwrap();
}

fn so8t_ok(args: &[&str]) -> String {
    let o = std::process::Command::new(BIN).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "so8t {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A store holding the script model as `scripted`, with a template that passes the messages through.
fn make_store(dir: &Path) -> std::path::PathBuf {
    let gguf = dir.join("think-script.gguf");
    write_model(&gguf, &cut_scripts());
    let modelfile = dir.join("Modelfile");
    std::fs::write(
        &modelfile,
        format!(
            "FROM {}\nTEMPLATE \"\"\"{{{{ range .Messages }}}}{{{{ .Content }}}}{{{{ end }}}}\"\"\"\n\
             PARAMETER temperature 0.8\n",
            gguf.display()
        ),
    )
    .unwrap();
    let store = dir.join("store");
    let st = store.to_str().unwrap();
    so8t_ok(&[
        "create",
        "scripted",
        "-f",
        modelfile.to_str().unwrap(),
        "--store",
        st,
    ]);
    store
}

/// What one request returned: the text a client assembles and the raw bytes on the wire.
struct Answer {
    text: String,
    wire: Vec<u8>,
}

/// The text of a streamed body: NDJSON (Ollama) or SSE `data:` lines (OpenAI).
fn assemble(route: &str, stream: bool, body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let pick = |v: &Value| -> String {
        let x = match route {
            "/api/generate" => &v["response"],
            "/api/chat" => &v["message"]["content"],
            "/v1/chat/completions" if stream => &v["choices"][0]["delta"]["content"],
            "/v1/chat/completions" => &v["choices"][0]["message"]["content"],
            _ => &v["choices"][0]["text"],
        };
        x.as_str().unwrap_or("").to_string()
    };
    if !stream {
        let v: Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{route}: {e}: {s}"));
        return pick(&v);
    }
    let mut out = String::new();
    for line in s.lines() {
        let line = line.trim();
        let json = line.strip_prefix("data:").map(str::trim).unwrap_or(line);
        if json.is_empty() || json == "[DONE]" {
            continue;
        }
        let v: Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{route}: {e}: {line}"));
        assert!(v.get("error").is_none(), "{route}: {v}");
        out.push_str(&pick(&v));
    }
    out
}

/// A prompt whose characters appear in no script, so it tokenizes to byte tokens and its last
/// byte selects the script.
fn prompt(which: char) -> String {
    let p = format!("%{which}");
    for (_, script) in SCRIPTS {
        assert!(
            !p.chars().any(|c| script.contains(c)),
            "{p:?} in {script:?}"
        );
    }
    p
}

fn ask(srv: &Server, route: &str, stream: bool, which: char, user: &str) -> Answer {
    let prompt = prompt(which);
    let body = match route {
        "/api/generate" => json!({"model": "scripted", "prompt": prompt, "raw": true,
                                  "stream": stream, "options": {"num_predict": 400}}),
        "/api/chat" => json!({"model": "scripted", "stream": stream,
                              "messages": [{"role": "user", "content": prompt}],
                              "options": {"num_predict": 400, "temperature": 0}}),
        "/v1/chat/completions" => json!({"model": "scripted", "stream": stream, "max_tokens": 400,
                              "messages": [{"role": "user", "content": prompt}]}),
        _ => json!({"model": "scripted", "stream": stream, "max_tokens": 400, "prompt": prompt,
                    "logprobs": 2, "echo": !stream}),
    };
    let r = http(
        srv.port,
        "POST",
        route,
        &[("x-user-id", user)],
        Some(body.to_string().into_bytes()),
    );
    assert_eq!(r.status, 200, "{route}: {}", r.text());
    Answer {
        text: assemble(route, stream, &r.body),
        wire: r.body,
    }
}

const ROUTES: [&str; 4] = [
    "/api/generate",
    "/api/chat",
    "/v1/chat/completions",
    "/v1/completions",
];

#[test]
fn no_thinking_leaves_the_server_on_any_route() {
    let t = tempfile::tempdir().unwrap();
    let store = make_store(t.path());
    let audit = t.path().join("audit.db");
    let srv = Server::start(&[
        "--store",
        store.to_str().unwrap(),
        "--audit",
        audit.to_str().unwrap(),
        "--store-thinking",
    ]);
    assert_eq!(
        split_thinking(SCRIPTS[0].1).final_text,
        "分類: DENY\nI can't share that code."
    );
    assert_eq!(
        split_thinking(SCRIPTS[1].1).final_text,
        "分類: ALLOW\nThe answer is 42."
    );
    let mut expected_rows = Vec::new();
    for route in ROUTES {
        for stream in [false, true] {
            for (which, script) in SCRIPTS {
                let a = ask(&srv, route, stream, which, "alice");
                let want = split_thinking(script);
                let wire = String::from_utf8_lossy(&a.wire).to_lowercase();
                for secret in ["secret", "think", "思考"] {
                    assert!(
                        !wire.contains(secret),
                        "{route} stream={stream} script {which}: {secret:?} on the wire:\n{wire}"
                    );
                }
                if route == "/v1/completions" && !stream {
                    // Echo: the prompt comes back first.
                    let prompt = prompt(which);
                    assert_eq!(a.text, format!("{prompt}{}", want.final_text), "{route}");
                } else {
                    assert_eq!(a.text, want.final_text, "{route} stream={stream} {which}");
                }
                expected_rows.push((route, want));
            }
        }
    }
    drop(srv);

    let out = so8t_ok(&[
        "audit",
        "verify",
        "--audit",
        audit.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["rows"], expected_rows.len(), "{v}");
    let conn = rusqlite::Connection::open(&audit).unwrap();
    let mut q = conn
        .prepare(
            "SELECT endpoint, user_id, thinking_sha256, final_sha256, class, thinking_text \
             FROM audit ORDER BY id",
        )
        .unwrap();
    type Row = (
        String,
        Option<String>,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = q
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (row, (route, want)) in rows.iter().zip(&expected_rows) {
        assert_eq!(row.0, *route);
        assert_eq!(row.1.as_deref(), Some("alice"));
        assert_eq!(row.2, sha256_hex(want.thinking.as_bytes()), "{row:?}");
        assert_eq!(row.3, sha256_hex(want.final_text.as_bytes()), "{row:?}");
        assert_eq!(row.4, want.class.map(|c| c.name().to_string()), "{row:?}");
        assert_eq!(row.5.as_deref(), Some(want.thinking.as_str()), "{row:?}");
        assert!(want.thinking.contains("SECRET"), "{:?}", want.thinking);
    }
    assert_eq!(rows[0].4.as_deref(), Some("DENY"));
    assert_eq!(rows[1].4.as_deref(), Some("ALLOW"));
}

#[test]
fn the_operator_flag_shows_the_whole_output() {
    let t = tempfile::tempdir().unwrap();
    let store = make_store(t.path());
    let audit = t.path().join("audit.db");
    let srv = Server::start(&[
        "--store",
        store.to_str().unwrap(),
        "--audit",
        audit.to_str().unwrap(),
        "--show-thinking",
    ]);
    for route in ["/api/generate", "/v1/chat/completions"] {
        for stream in [false, true] {
            for (which, script) in SCRIPTS {
                let a = ask(&srv, route, stream, which, "op");
                assert_eq!(a.text, script, "{route} stream={stream}");
            }
        }
    }
    drop(srv);
    // The thinking text is not stored without --store-thinking, only its hash.
    let conn = rusqlite::Connection::open(&audit).unwrap();
    let stored: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE thinking_text IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 0);
}
