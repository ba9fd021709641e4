//! `so8t serve` end to end over real sockets: the official Ollama and OpenAI clients, lm-eval's
//! `local-completions`, bad input, bearer auth and CORS, many streaming clients and a client that
//! hangs up, the model store commands (and a corrupt blob), and the audit log's hash chain.
//!
//! Every test needs the SmolLM2 peers under `/tmp/peers` (`SO8T_PEERS`) and prints `SKIP …`
//! without them.

mod server;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use server::{http, stream, Lines, Resp, Server};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_so8t");

// ---------------------------------------------------------------------------------------------
// Peers

struct Peers {
    python: PathBuf,
    gguf: PathBuf,
    hf_tokenizer: PathBuf,
    dir: PathBuf,
}

fn peers(test: &str) -> Option<Peers> {
    let dir = PathBuf::from(std::env::var("SO8T_PEERS").unwrap_or_else(|_| "/tmp/peers".into()));
    let p = Peers {
        python: dir.join("venv/bin/python"),
        gguf: dir.join("models/smollm2-135m-q8_0.gguf"),
        hf_tokenizer: dir.join("models/smollm2-hf-tokenizer"),
        dir: dir.clone(),
    };
    if p.python.exists() && p.gguf.exists() && p.hf_tokenizer.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP {test}: the SmolLM2 peers are not under {} (bash .ci/setup-peers.sh)",
            dir.display()
        );
        None
    }
}

fn shared_peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn so8t(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn so8t_ok(args: &[&str]) -> String {
    let o = so8t(args);
    assert!(
        o.status.success(),
        "so8t {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn serve_smol(p: &Peers, store: &Path, extra: &[&str]) -> Server {
    let model = format!("smol={}", p.gguf.display());
    let mut args = vec!["--store", s(store), "--model", &model];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn short_generate(model: &str) -> Value {
    json!({"model": model, "prompt": "Say hello.", "stream": false,
           "options": {"num_predict": 4, "temperature": 0}})
}

// ---------------------------------------------------------------------------------------------
// 1. The official clients

/// Runs the official `ollama` and `openai` client checks against `srv` with `model`; every
/// check must pass.
fn client_checks(p: &Peers, srv: &Server, model: &str) {
    let base = format!("http://127.0.0.1:{}", srv.port);
    let v1 = format!("{base}/v1");
    for (script, url, extra) in [
        ("ollama_client_check.py", base.as_str(), &[][..]),
        ("openai_client_check.py", v1.as_str(), &["--embeddings"][..]),
    ] {
        let o = Command::new(&p.python)
            .arg(shared_peers().join(script))
            .arg(url)
            .args(["--model", model])
            .args(extra)
            .output()
            .unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success() && out.contains(" 0 failed") && !out.contains("FAIL "),
            "{script} on {model} failed ({}):\n{out}\n--- server log ---\n{}",
            o.status,
            srv.log()
        );
    }
}

#[test]
fn official_clients_pass() {
    let Some(p) = peers("official_clients_pass") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let srv = serve_smol(&p, t.path(), &[]);
    client_checks(&p, &srv, "smol");
}

// ---------------------------------------------------------------------------------------------
// 2. lm-eval's local-completions

const MC_ITEMS: &[(&str, [&str; 3], usize)] = &[
    (
        "What color is the sky on a clear day?",
        ["blue", "green", "red"],
        0,
    ),
    ("How many legs does a cat have?", ["two", "four", "six"], 1),
    ("Which animal barks?", ["cat", "fish", "dog"], 2),
    ("What is frozen water called?", ["ice", "steam", "sand"], 0),
    ("Which one is a fruit?", ["chair", "apple", "rock"], 1),
];

const GEN_ITEMS: &[(&str, &str)] = &[
    ("What is 2 + 2?", "4"),
    ("What is the capital of France?", "Paris"),
    ("What color is grass?", "green"),
];

#[test]
fn lm_eval_runs_against_the_server() {
    let Some(p) = peers("lm_eval_runs_against_the_server") else {
        return;
    };
    let lm_eval = p.dir.join("venv/bin/lm_eval");
    if !lm_eval.exists() {
        eprintln!(
            "SKIP lm_eval_runs_against_the_server: no {}",
            lm_eval.display()
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tasks = t.path().join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    let mc_data = tasks.join("so8t_mc.jsonl");
    let gen_data = tasks.join("so8t_gen.jsonl");
    let mut mc = String::new();
    for (q, c, a) in MC_ITEMS {
        mc.push_str(&format!(
            "{}\n",
            json!({"question": q, "choices": c, "answer": a})
        ));
    }
    std::fs::write(&mc_data, mc).unwrap();
    let mut gen = String::new();
    for (q, a) in GEN_ITEMS {
        gen.push_str(&format!("{}\n", json!({"question": q, "answer": a})));
    }
    std::fs::write(&gen_data, gen).unwrap();
    std::fs::write(
        tasks.join("so8t_mc.yaml"),
        format!(
            r#"task: so8t_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"#,
            mc_data.display()
        ),
    )
    .unwrap();
    std::fs::write(
        tasks.join("so8t_gen.yaml"),
        format!(
            r#"task: so8t_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\nA:"
doc_to_target: answer
target_delimiter: " "
generation_kwargs:
  until:
    - "\n"
  max_gen_toks: 12
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
"#,
            gen_data.display()
        ),
    )
    .unwrap();
    let store = t.path().join("store");
    let srv = serve_smol(&p, &store, &[]);
    let out_dir = t.path().join("out");
    let model_args = format!(
        "model=smol,base_url=http://127.0.0.1:{}/v1/completions,tokenizer_backend=huggingface,tokenizer={},num_concurrent=1,max_retries=1",
        srv.port,
        p.hf_tokenizer.display()
    );
    let t0 = Instant::now();
    let o = Command::new(&lm_eval)
        .args(["--model", "local-completions", "--model_args", &model_args])
        .args(["--tasks", "so8t_mc,so8t_gen", "--include_path", s(&tasks)])
        .args(["--output_path", s(&out_dir), "--limit", "5"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("HF_DATASETS_CACHE", t.path().join("hf-datasets"))
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "lm_eval failed ({}) after {:?}:\n{log}\n--- server log ---\n{}",
        o.status,
        t0.elapsed(),
        srv.log()
    );
    // OUT/<model>/results_<time>.json
    let mut found = Vec::new();
    let mut dirs = vec![out_dir.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                dirs.push(e);
            } else if e
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("results") && n.ends_with(".json"))
            {
                found.push(e);
            }
        }
    }
    assert_eq!(found.len(), 1, "results files {found:?}\n{log}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&found[0]).unwrap()).unwrap();
    let acc = r["results"]["so8t_mc"]["acc,none"].as_f64();
    assert!(
        acc.is_some_and(|a| (0.0..=1.0).contains(&a)),
        "no acc for so8t_mc: {}",
        r["results"]
    );
    let em = r["results"]["so8t_gen"]["exact_match,none"].as_f64();
    assert!(
        em.is_some_and(|a| (0.0..=1.0).contains(&a)),
        "no exact_match for so8t_gen: {}",
        r["results"]
    );
    assert_eq!(
        r["n-samples"]["so8t_mc"]["effective"], 5,
        "{}",
        r["n-samples"]
    );
    assert_eq!(
        r["n-samples"]["so8t_gen"]["effective"], 3,
        "{}",
        r["n-samples"]
    );
    eprintln!(
        "lm_eval: acc {acc:?}, exact_match {em:?} in {:?}",
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Bad input

fn assert_ollama_error(r: &Resp, status: u16, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let v = r.json();
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no string `error` in {v}"));
    assert!(!msg.is_empty(), "{what}: empty error");
    msg.to_string()
}

fn assert_openai_error(r: &Resp, status: u16, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let v = r.json();
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no `error.message` in {v}"));
    assert!(!msg.is_empty(), "{what}: empty error");
    msg.to_string()
}

#[test]
fn bad_input_gets_json_errors_and_the_server_keeps_serving() {
    let Some(p) = peers("bad_input_gets_json_errors_and_the_server_keeps_serving") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let srv = serve_smol(&p, t.path(), &["--max-body", "4096"]);
    let port = srv.port;
    let raw = |path: &str, body: &[u8]| http(port, "POST", path, &[], Some(body.to_vec()));

    let r = raw("/api/generate", br#"{"model": "smol", "prompt": "#);
    let m = assert_ollama_error(&r, 400, "malformed JSON");
    assert!(m.to_lowercase().contains("json"), "{m}");

    let r = srv.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "hi", "options": {"temperature": "hot"}}),
    );
    let m = assert_ollama_error(&r, 400, "temperature: \"hot\"");
    assert!(m.contains("options.temperature"), "{m}");

    let r = srv.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "hi", "stream": false, "options": {"num_predict": -5}}),
    );
    let m = assert_ollama_error(&r, 400, "num_predict -5");
    assert!(m.contains("num_predict"), "{m}");

    let r = srv.post(
        "/api/generate",
        json!({"model": "no-such-model", "prompt": "hi", "stream": false}),
    );
    let m = assert_ollama_error(&r, 404, "unknown model");
    assert!(m.contains("no-such-model"), "{m}");

    let big = json!({"model": "smol", "prompt": "word ".repeat(1000), "stream": false});
    let r = srv.post("/api/generate", big);
    assert_ollama_error(&r, 413, "body over --max-body 4096");

    let r = srv.get("/api/nothing-here");
    assert_ollama_error(&r, 404, "unknown route");

    let r = srv.post(
        "/v1/chat/completions",
        json!({"model": "smol", "messages": 3}),
    );
    let m = assert_openai_error(&r, 400, "messages: 3");
    assert!(m.contains("messages"), "{m}");

    let r = srv.post(
        "/v1/chat/completions",
        json!({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
    );
    let m = assert_openai_error(&r, 400, "max_tokens -1");
    assert!(m.contains("max_tokens"), "{m}");

    let r = srv.post(
        "/v1/completions",
        json!({"model": "nope", "prompt": "hi", "max_tokens": 2}),
    );
    assert_openai_error(&r, 404, "unknown model on /v1");

    let long = "the quick brown fox jumps over the lazy dog ".repeat(23); // ~200 words
    for stream in [false, true] {
        let r = srv.post(
            "/api/generate",
            json!({"model": "smol", "prompt": long, "stream": stream,
                   "options": {"num_ctx": 16, "num_predict": 4, "temperature": 0}}),
        );
        let what = format!("prompt over num_ctx 16 (stream {stream})");
        if stream && r.status == 200 {
            // A streamed answer may already have sent its 200: then the error must be the
            // NDJSON body's only line.
            let v: Value = serde_json::from_str(r.text().trim())
                .unwrap_or_else(|e| panic!("{what}: {e}: {}", r.text()));
            assert!(v["error"].is_string(), "{what}: {v}");
        } else {
            assert!(
                (400..500).contains(&r.status),
                "{what}: {} {}",
                r.status,
                r.text()
            );
            let m = assert_ollama_error(&r, r.status, &what);
            assert!(m.contains("context"), "{what}: {m}");
        }
    }

    let r = srv.post("/api/generate", short_generate("smol"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), srv.log());
    let v = r.json();
    assert_eq!(v["done"], true, "{v}");
    assert!(
        v["eval_count"]
            .as_u64()
            .is_some_and(|n| (1..=4).contains(&n)),
        "{v}"
    );
    assert_eq!(srv.get("/api/version").status, 200);
}

// ---------------------------------------------------------------------------------------------
// 4. Auth and CORS

#[test]
fn auth_token_is_required_when_set() {
    let Some(p) = peers("auth_token_is_required_when_set") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let srv = serve_smol(&p, t.path(), &["--token", "s3cret"]);
    let origin = ("Origin", "http://evil.example");
    for path in ["/api/tags", "/v1/models"] {
        let r = http(srv.port, "GET", path, &[origin], None);
        assert_eq!(r.status, 401, "{path} without a token: {}", r.text());
        let v = r.json();
        if path.starts_with("/v1") {
            assert!(v["error"]["message"].is_string(), "{v}");
        } else {
            assert!(v["error"].is_string(), "{v}");
        }
        assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");

        let r = http(
            srv.port,
            "GET",
            path,
            &[origin, ("Authorization", "Bearer wrong")],
            None,
        );
        assert_eq!(r.status, 401, "{path} with a wrong token: {}", r.text());
        r.json();
        let r = http(
            srv.port,
            "GET",
            path,
            &[origin, ("Authorization", "s3cret")],
            None,
        );
        assert_eq!(r.status, 401, "{path} without `Bearer `: {}", r.text());

        let r = http(
            srv.port,
            "GET",
            path,
            &[origin, ("Authorization", "Bearer s3cret")],
            None,
        );
        assert_eq!(r.status, 200, "{path} with the token: {}", r.text());
        let v = r.json();
        let names: Vec<&str> = if path == "/api/tags" {
            v["models"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["name"].as_str())
                .collect()
        } else {
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["id"].as_str())
                .collect()
        };
        assert!(names.iter().any(|n| n.starts_with("smol")), "{path}: {v}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    }
    // A preflight gets no CORS grant either.
    let r = http(
        srv.port,
        "OPTIONS",
        "/api/generate",
        &[origin, ("Access-Control-Request-Method", "POST")],
        None,
    );
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    // Generation needs the token too.
    let r = srv.post("/api/generate", short_generate("smol"));
    assert_eq!(r.status, 401, "{}", r.text());
    let body = short_generate("smol").to_string().into_bytes();
    let r = http(
        srv.port,
        "POST",
        "/api/generate",
        &[("Authorization", "Bearer s3cret")],
        Some(body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["done"], true);
}

// ---------------------------------------------------------------------------------------------
// 5. Many streaming clients, and a client that hangs up

fn rss_bytes(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = st
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Reads an NDJSON stream to its `done: true` line; returns the line and the text.
fn read_to_done(lines: &mut Lines) -> Result<(Value, String), String> {
    let mut text = String::new();
    while let Some(v) = lines.next_line() {
        if let Some(e) = v.get("error") {
            return Err(format!("error line {e}"));
        }
        text.push_str(v["response"].as_str().unwrap_or(""));
        if v["done"] == true {
            return Ok((v, text));
        }
    }
    Err(format!(
        "the stream ended without done: true (text so far {text:?})"
    ))
}

#[test]
fn sixty_four_streaming_clients_all_finish() {
    let Some(p) = peers("sixty_four_streaming_clients_all_finish") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let srv = serve_smol(&p, t.path(), &["--parallel", "8"]);
    // Load the model first so the clock below measures serving.
    let r = srv.post("/api/generate", short_generate("smol"));
    assert_eq!(r.status, 200, "{}", r.text());
    let idle_rss = rss_bytes(srv.pid());

    let n = 64;
    let port = srv.port;
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let body = json!({"model": "smol", "prompt": format!("Client {i} says: once upon a time"),
                              "raw": true, "stream": true,
                              "options": {"num_predict": 8, "temperature": 0}});
            let res = (|| {
                let (status, mut lines) = stream(port, "/api/generate", &body);
                if status != 200 {
                    return Err(format!("status {status}"));
                }
                read_to_done(&mut lines)
            })();
            let _ = tx.send((i, res));
        });
    }
    drop(tx);
    let deadline = Duration::from_secs(180);
    let mut ok = 0;
    let mut failures = Vec::new();
    while ok + failures.len() < n {
        let left = deadline.saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok((_, Ok((done, _)))) => {
                assert!(
                    done["eval_count"]
                        .as_u64()
                        .is_some_and(|c| (1..=8).contains(&c)),
                    "{done}"
                );
                ok += 1;
            }
            Ok((i, Err(e))) => failures.push(format!("client {i}: {e}")),
            Err(_) => break,
        }
    }
    let took = t0.elapsed();
    assert!(
        failures.is_empty() && ok == n,
        "{ok}/{n} finished in {took:?}; failures: {failures:#?}\n--- server log ---\n{}",
        srv.log()
    );
    let rss = rss_bytes(srv.pid());
    eprintln!(
        "64 streaming clients: {took:?}; RSS idle {:.0} MB, after {:.0} MB",
        idle_rss as f64 / 1e6,
        rss as f64 / 1e6
    );
    // SmolLM2-135M Q8_0 is 0.14 GB on disk (0.54 GB even if expanded to f32); 8 slots of these
    // short requests hold a few hundred tokens of KV cache at 46 KB per token (30 layers × 2 ×
    // 3 KV heads × 64 × 4 bytes). Measured: ~0.2 GB idle and after the 64 clients. 1 GB leaves
    // room for the runtime but not for a leak per request or connection, nor for KV caches
    // preallocated to the full context (8 × 0.19 GB at 4096 tokens on top of the weights).
    assert!(
        rss < 1_000_000_000,
        "RSS {:.0} MB after 64 clients (idle {:.0} MB)",
        rss as f64 / 1e6,
        idle_rss as f64 / 1e6
    );
    drop(srv);

    // --parallel 1: a client that hangs up mid-stream must free the only slot.
    let srv = serve_smol(&p, t.path(), &["--parallel", "1"]);
    let r = srv.post("/api/generate", short_generate("smol"));
    assert_eq!(r.status, 200, "{}", r.text());
    let long = json!({"model": "smol", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "raw": true,
                      "stream": true, "options": {"num_predict": 2000, "temperature": 0}});
    {
        let (status, mut lines) = stream(srv.port, "/api/generate", &long);
        assert_eq!(status, 200);
        let first = lines.next_line().expect("a first streamed line");
        assert_eq!(first["done"], false, "{first}");
        // The socket drops here.
    }
    let t0 = Instant::now();
    let r = srv.post("/api/generate", short_generate("smol"));
    let took = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["done"], true);
    assert!(
        took < Duration::from_secs(20),
        "a short request after a hung-up 2000-token stream took {took:?}: the slot was not freed"
    );
    // The same long request, kept open, really is long (else the check above proves nothing):
    // it is still going after the time the short one took plus a margin.
    let (status, mut lines) = stream(srv.port, "/api/generate", &long);
    assert_eq!(status, 200);
    let t1 = Instant::now();
    let mut n_lines = 0;
    while t1.elapsed() < took + Duration::from_secs(5) {
        let v = lines.next_line().expect("the long stream ended early");
        assert_eq!(
            v["done"], false,
            "the 2000-token stream ended after {n_lines} lines: {v}"
        );
        n_lines += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The store commands

#[test]
fn store_commands_round_trip() {
    let Some(p) = peers("store_commands_round_trip") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("models");
    let mf = t.path().join("Modelfile");
    std::fs::write(
        &mf,
        format!(
            "FROM {}\nSYSTEM You are terse.\nPARAMETER temperature 0\n",
            p.gguf.display()
        ),
    )
    .unwrap();
    let st = s(&store);
    so8t_ok(&["create", "smol", "-f", s(&mf), "--store", st]);
    let list = so8t_ok(&["list", "--store", st]);
    assert!(list.contains("smol:latest"), "{list}");

    let modelfile = so8t_ok(&["show", "smol", "--modelfile", "--store", st]);
    assert!(modelfile.contains("FROM "), "{modelfile}");
    assert!(modelfile.contains("You are terse."), "{modelfile}");
    assert!(modelfile.contains("temperature 0"), "{modelfile}");
    let params = so8t_ok(&["show", "smol", "--parameters", "--store", st]);
    assert!(params.contains("temperature"), "{params}");
    let temp = params
        .lines()
        .find_map(|l| l.trim().strip_prefix("temperature"))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(temp, Some(0.0), "{params}");
    let system = so8t_ok(&["show", "smol", "--system", "--store", st]);
    assert_eq!(system.trim(), "You are terse.");
    let info = so8t_ok(&["show", "smol", "--store", st]);
    assert!(info.contains("llama"), "{info}");
    assert!(info.contains("Q8_0"), "{info}");

    so8t_ok(&["cp", "smol", "smol2", "--store", st]);
    so8t_ok(&["rm", "smol", "--store", st]);
    let list = so8t_ok(&["list", "--store", st]);
    assert!(list.contains("smol2:latest"), "{list}");
    assert!(!list.contains("smol:latest"), "{list}");
    let o = so8t(&["show", "smol", "--store", st]);
    assert!(!o.status.success(), "show of a removed model succeeded");

    {
        let srv = Server::start(&["--store", st]);
        let r = srv.get("/api/tags");
        let names: Vec<String> = r.json()["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["smol2:latest"]);
        let r = srv.post("/api/generate", short_generate("smol2"));
        assert_eq!(r.status, 200, "{}\n{}", r.text(), srv.log());
        assert_eq!(r.json()["done"], true);
        let r = srv.post("/api/show", json!({"model": "smol2"}));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["system"], "You are terse.");
        let r = srv.post("/api/generate", short_generate("smol"));
        assert_eq!(r.status, 404, "{}", r.text());
    }

    // Corrupt the model layer (the largest blob) in the middle of its tensor data.
    let blob = std::fs::read_dir(store.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sha256-"))
        })
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let len = std::fs::metadata(&blob).unwrap().len();
    assert!(len > 100_000_000, "{} is {len} bytes", blob.display());
    {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&blob)
            .unwrap();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        let mut b = [0u8; 1];
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&[b[0] ^ 0xff]).unwrap();
    }
    let hex = blob
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_start_matches("sha256-")
        .to_string();
    let srv = Server::start(&["--store", st]);
    let r = srv.post("/api/generate", short_generate("smol2"));
    assert!(
        r.status >= 400,
        "generation from a corrupt blob answered {}: {}",
        r.status,
        r.text()
    );
    let m = assert_ollama_error(&r, r.status, "corrupt blob");
    assert!(
        m.contains(&hex[..12]),
        "the error does not name the corrupt blob sha256-{hex}: {m}"
    );
    let r = srv.get("/api/version");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["version"].is_string());
}

// ---------------------------------------------------------------------------------------------
// 7. The audit log

#[test]
fn audit_log_chains_every_request() {
    let Some(p) = peers("audit_log_chains_every_request") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let audit = t.path().join("audit.db");
    {
        let srv = serve_smol(&p, &t.path().join("store"), &["--audit", s(&audit)]);
        let alice = [("x-user-id", "alice")];
        for (path, body) in [
            ("/api/generate", short_generate("smol")),
            (
                "/api/chat",
                json!({"model": "smol", "stream": false, "messages": [{"role": "user", "content": "Hi"}],
                       "options": {"num_predict": 4, "temperature": 0}}),
            ),
            (
                "/v1/chat/completions",
                json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": 4, "temperature": 0}),
            ),
        ] {
            let r = http(
                srv.port,
                "POST",
                path,
                &alice,
                Some(body.to_string().into_bytes()),
            );
            assert_eq!(r.status, 200, "{path}: {}", r.text());
        }
        // Requests that fail before generating write no row.
        let r = srv.post("/api/generate", json!({"model": "nope", "prompt": "x"}));
        assert_eq!(r.status, 404);
    }
    let a = s(&audit);
    let out = so8t_ok(&["audit", "verify", "--audit", a, "--json"]);
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["rows"], 3, "{v}");

    let conn = rusqlite::Connection::open(&audit).unwrap();
    let rows: Vec<(i64, Option<String>, String, String)> = conn
        .prepare("SELECT id, user_id, model, endpoint FROM audit ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let endpoints: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(
        endpoints,
        ["/api/generate", "/api/chat", "/v1/chat/completions"],
        "{rows:?}"
    );
    for r in &rows {
        assert_eq!(r.1.as_deref(), Some("alice"), "{rows:?}");
        assert!(r.2.starts_with("smol"), "{rows:?}");
    }
    let edited = rows[1].0;
    let n = conn
        .execute("UPDATE audit SET model = 'mallory' WHERE id = ?1", [edited])
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);

    let o = so8t(&["audit", "verify", "--audit", a, "--json"]);
    assert!(!o.status.success(), "verify passed an edited row");
    let out = String::from_utf8_lossy(&o.stdout);
    let v: Value = serde_json::from_str(out.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["ok"], false, "{v}");
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["id"] == edited),
        "row {edited} not reported: {v}"
    );
    let o = so8t(&["audit", "verify", "--audit", a]);
    assert!(!o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("row {edited}")), "{text}");
}

// ---------------------------------------------------------------------------------------------
// 8. A GGUF that `so8t export gguf` wrote, created from its own Modelfile (Go template)

#[test]
fn official_clients_pass_on_an_exported_gguf_with_its_modelfile() {
    let Some(p) = peers("official_clients_pass_on_an_exported_gguf_with_its_modelfile") else {
        return;
    };
    let hf = p.dir.join("models/smollm2-hf");
    if !hf.join("config.json").exists() {
        eprintln!(
            "SKIP official_clients_pass_on_an_exported_gguf_with_its_modelfile: no {}",
            hf.display()
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("gguf");
    let store = t.path().join("store");
    so8t_ok(&[
        "export",
        "gguf",
        "--model",
        s(&hf),
        "--out",
        s(&out),
        "--quant",
        "q8_0",
        "--name",
        "smolx",
    ]);
    let modelfile = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "Modelfile"))
        .expect("the export writes a Modelfile");
    let text = std::fs::read_to_string(&modelfile).unwrap();
    assert!(text.contains("TEMPLATE"), "{text}");
    so8t_ok(&["create", "smolx", "-f", s(&modelfile), "--store", s(&store)]);
    let srv = Server::start(&["--store", s(&store)]);
    client_checks(&p, &srv, "smolx");
}

#[test]
fn modelfile_adapter_is_applied() {
    let Some(p) = peers("modelfile_adapter_is_applied") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("models");
    let adapter = t.path().join("lora.gguf");
    let made = Command::new(&p.python)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../so8t-serve/tests/data/make_lora_gguf.py"),
        )
        .args([&p.gguf, &adapter])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let st = s(&store);
    for (name, extra) in [
        ("base", String::new()),
        ("tuned", format!("ADAPTER {}\n", adapter.display())),
    ] {
        let mf = t.path().join(format!("{name}.Modelfile"));
        std::fs::write(&mf, format!("FROM {}\n{extra}", p.gguf.display())).unwrap();
        so8t_ok(&["create", name, "-f", s(&mf), "--store", st]);
    }
    // A file that is not a LoRA adapter is refused by `create`.
    let mf = t.path().join("bad.Modelfile");
    std::fs::write(&mf, format!("FROM {0}\nADAPTER {0}\n", p.gguf.display())).unwrap();
    let o = so8t(&["create", "bad", "-f", s(&mf), "--store", st]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not a LoRA adapter"),
        "{err}"
    );
    let srv = serve_smol(&p, &store, &[]);
    let prompt_lp = |model: &str| -> Vec<f64> {
        let r = srv.post(
            "/v1/completions",
            json!({"model": model, "prompt": "The capital of France is Paris", "echo": true,
                   "logprobs": 1, "max_tokens": 1, "temperature": 0}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let lp = &r.json()["choices"][0]["logprobs"]["token_logprobs"];
        lp.as_array().unwrap()[1..]
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (base, tuned, adhoc) = (prompt_lp("base"), prompt_lp("tuned"), prompt_lp("smol"));
    assert_eq!(base, adhoc, "the same file without an adapter");
    let moved = base
        .iter()
        .zip(&tuned)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 0.05,
        "the adapter did not change the log-probabilities: {base:?} vs {tuned:?}"
    );
    assert_eq!(srv.post("/api/generate", short_generate("bad")).status, 404);
}
