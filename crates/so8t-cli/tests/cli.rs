//! The `so8t` binary end to end: init, info, logits, init-gates, generate, bake,
//! errors and `--help` on every command.

mod common;

use std::path::Path;

use common::{fails, fixture, ok, s};

#[test]
fn init_is_deterministic_and_seeded() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    for (dir, seed) in [(&a, "3"), (&b, "3"), (&c, "4")] {
        ok(&[
            "model",
            "init",
            "--arch",
            "llama",
            "--preset",
            "tiny",
            "--seed",
            seed,
            "--out",
            s(dir),
        ]);
    }
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs for equal seeds"
        );
    }
    assert_eq!(
        std::fs::read(a.join("tokenizer.json")).unwrap(),
        std::fs::read(c.join("tokenizer.json")).unwrap()
    );
    assert_ne!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(c.join("model.safetensors")).unwrap()
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["model", "info", s(&a), "--json"])).unwrap();
    assert_eq!(info["architecture"], "LlamaForCausalLM");
    assert_eq!(info["num_key_value_heads"], 2);
    assert_eq!(info["chat_template"], true);
}

#[test]
fn logits_json_matches_reference_fixture() {
    let dir = fixture("phi3-tiny");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let case = &r["so8t"]["cases"][0];
    let ids: Vec<String> = case["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect();
    let gates = dir.join("so8t_gates.safetensors");
    let out = ok(&[
        "model",
        "logits",
        "--model",
        s(&dir),
        "--ids",
        &ids.join(","),
        "--gates",
        s(&gates),
        "--alpha",
        "0.75",
        "--json",
    ]);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (g, w) = (
        got["logits"].as_array().unwrap(),
        case["logits"].as_array().unwrap(),
    );
    assert_eq!(g.len(), w.len());
    let mut max = 0f64;
    for (gr, wr) in g.iter().zip(w) {
        for (x, y) in gr.as_array().unwrap().iter().zip(wr.as_array().unwrap()) {
            max = max.max((x.as_f64().unwrap() - y.as_f64().unwrap()).abs());
        }
    }
    assert!(max < 1e-4, "gated logits via CLI differ by {max}");
}

#[test]
fn gates_generate_and_bake_through_the_cli() {
    let t = tempfile::tempdir().unwrap();
    let (m, g, b) = (
        t.path().join("m"),
        t.path().join("g.safetensors"),
        t.path().join("baked"),
    );
    ok(&[
        "model",
        "init",
        "--preset",
        "tiny",
        "--seed",
        "1",
        "--out",
        s(&m),
    ]);
    ok(&[
        "model",
        "init-gates",
        "--model",
        s(&m),
        "--layers",
        "0",
        "--init-scale",
        "0.3",
        "--seed",
        "2",
        "--out",
        s(&g),
    ]);
    let gen = |dir: &Path, gated: bool| {
        let mut a = vec![
            "generate",
            "--model",
            s(dir),
            "--prompt",
            "Hello",
            "--chat",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--json",
        ];
        if gated {
            a.extend(["--gates", s(&g), "--alpha", "0.5"]);
        }
        let v: serde_json::Value = serde_json::from_str(&ok(&a)).unwrap();
        v["tokens"].clone()
    };
    let gated = gen(&m, true);
    assert_ne!(
        gated,
        gen(&m, false),
        "gates should change the greedy output of the tiny model"
    );
    let out = ok(&[
        "bake",
        "--model",
        s(&m),
        "--gates",
        s(&g),
        "--alpha",
        "0.5",
        "--out",
        s(&b),
    ]);
    for line in out.lines() {
        let d: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(d < 1e-4, "{line}");
    }
    assert_eq!(
        gen(&b, false),
        gated,
        "the baked model must generate what the gated one does"
    );
    assert!(b.join("tokenizer.json").exists() && b.join("config.json").exists());
    // Warm-up runs are untimed and leave the timed run's sampling as it was (sampled, seeded).
    let sampled = |warmup: &str| {
        let v: serde_json::Value = serde_json::from_str(&ok(&[
            "generate",
            "--model",
            s(&m),
            "--prompt",
            "Hello",
            "--temperature",
            "0.9",
            "--seed",
            "5",
            "--max-tokens",
            "8",
            "--json",
            "--warmup",
            warmup,
        ]))
        .unwrap();
        v["tokens"].clone()
    };
    assert_eq!(sampled("2"), sampled("0"));
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let t = tempfile::tempdir().unwrap();
    let e = fails(&["model", "info", s(t.path())]);
    assert!(e.contains("config.json") && e.contains("not found"), "{e}");
    let e = fails(&[
        "model",
        "logits",
        "--model",
        s(&fixture("phi3-tiny")),
        "--ids",
        "1,x",
    ]);
    assert!(e.contains("\"x\""), "{e}");
    let e = fails(&[
        "generate",
        "--model",
        s(&fixture("phi3-tiny")),
        "--prompt",
        "hi",
    ]);
    assert!(e.contains("tokenizer.json"), "{e}");
    let e = fails(&[
        "model",
        "init-gates",
        "--model",
        s(&fixture("phi3-tiny")),
        "--layers",
        "9",
        "--out",
        s(&t.path().join("g")),
    ]);
    assert!(e.contains("layer 9") && e.contains("2 layers"), "{e}");
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec![],
        vec!["model"],
        vec!["model", "info"],
        vec!["model", "logits"],
        vec!["model", "init"],
        vec!["model", "init-gates"],
        vec!["generate"],
        vec!["bake"],
        vec!["pull"],
        vec!["quickstart"],
        vec!["data"],
        vec!["data", "collect"],
        vec!["data", "split"],
        vec!["data", "think"],
        vec!["data", "tokenize"],
        vec!["data", "pull"],
        vec!["train"],
        vec!["train", "status"],
        vec!["bench"],
        vec!["bench", "train"],
        vec!["bench", "kernels"],
        vec!["bench", "infer"],
    ] {
        let mut a = cmd.clone();
        a.push("--help");
        let out = ok(&a);
        assert!(out.contains("Usage:"), "so8t {cmd:?} --help:\n{out}");
    }
}

#[test]
fn bench_train_runs_on_the_cpu_and_devices_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m");
    ok(&["model", "init", "--preset", "tiny", "--out", s(&m)]);
    // `bench train` on the CPU, 16 tokens × 2 rows, with `extra` arguments.
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "train",
            "--model",
            s(&m),
            "--device",
            "cpu",
            "--seq",
            "16",
            "--batch",
            "2",
        ];
        args.extend_from_slice(extra);
        ok(&args)
    };
    let out = bench(&["--steps", "2", "--warmup", "1", "--lora-rank", "4"]);
    assert!(
        out.contains("RESULT so8t seq=16 batch=2") && out.contains("tokens/s"),
        "{out}"
    );
    // The 8-bit frozen base (Q8_0 blocks) trains too.
    let q = bench(&["--steps", "1", "--warmup", "0", "--base-dtype", "int8"]);
    assert!(q.contains("lora=1 base=int8:"), "{q}");
    let e = fails(&["bench", "train", "--model", s(&m), "--device", "tpu"]);
    assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
    // The fused kernels are CUDA-only: on the CPU the command says so.
    let e = fails(&["bench", "kernels", "--device", "cpu"]);
    assert!(e.contains("do not run on cpu"), "{e}");
    let e = fails(&[
        "model",
        "logits",
        "--model",
        s(&m),
        "--ids",
        "1,2",
        "--device",
        "cuda:x",
    ]);
    assert!(e.contains("cuda:x"), "{e}");
}

#[test]
fn bench_infer_times_the_engine_like_llama_bench() {
    let m = fixture("llama-gqa-tiny");
    let out = ok(&[
        "--threads",
        "2",
        "bench",
        "infer",
        "--model",
        s(&m),
        "-p",
        "16",
        "-n",
        "8",
        "-r",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let tests = v["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 2, "{out}");
    for (t, name) in tests.iter().zip(["pp16", "tg8"]) {
        assert_eq!(t["test"], name, "{out}");
        assert_eq!(t["samples_ts"].as_array().unwrap().len(), 2, "{out}");
        assert!(t["avg_ts"].as_f64().unwrap() > 0.0, "{out}");
    }
    assert_eq!(v["threads"], 2);
    let table = ok(&[
        "bench",
        "infer",
        "--model",
        s(&m),
        "-p",
        "8",
        "-n",
        "0",
        "-r",
        "1",
    ]);
    assert!(
        table.contains("| pp8 |") && !table.contains("tg0"),
        "{table}"
    );
    // The fixture's context is 256 tokens.
    let e = fails(&["bench", "infer", "--model", s(&m), "-p", "250", "-n", "10"]);
    assert!(e.contains("exceed the model's context of 256"), "{e}");
    let e = fails(&["bench", "infer", "--model", "/nonexistent.gguf"]);
    assert!(e.contains("/nonexistent.gguf"), "{e}");
}

#[test]
fn bench_infer_check_holds_the_device_engine_to_the_native_one() {
    let m = fixture("phi3-longrope-tiny");
    let check = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "--threads",
            "2",
            "bench",
            "infer",
            "--model",
            s(&m),
            "--check",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--prompt", "24", "--json"]);
        serde_json::from_str(ok(&args).trim()).unwrap()
    };
    // candle's kernels (on its CPU backend here, on a GPU with --device cuda) vs the native engine.
    let v = check(&["--device", "cpu", "--device-engine"]);
    assert_eq!(
        (v["device"].as_str(), v["positions"].as_u64()),
        (Some("cpu"), Some(24))
    );
    assert!(v["max_rel"].as_f64().unwrap() < 1e-5, "{v}");
    assert_eq!(v["top1"].as_f64(), Some(1.0), "{v}");
    // Against another model, the distance shows: the same shape with other weights.
    let other = fixture("phi3-tiny");
    let v = check(&["--device", "cpu", "--reference", s(&other)]);
    assert!(v["max_rel"].as_f64().unwrap() > 1e-2, "{v}");
    let e = fails(&["bench", "infer", "--model", s(&m), "--reference", s(&other)]);
    assert!(e.contains("--check"), "{e}");
    let e = fails(&[
        "bench",
        "infer",
        "--model",
        s(&m),
        "-p",
        "8",
        "-n",
        "1",
        "--device",
        "cuda:x",
    ]);
    assert!(e.contains("cuda:x"), "{e}");
}
