//! `so8t eval` against lm-eval: the same SmolLM2 GGUF and the same bundled task files, scored
//! in-process, through `so8t serve` with so8t's OpenAI backend, and by `lm_eval --model
//! local-completions` against `so8t serve` (with lm-eval's own HellaSwag preprocessing). The
//! per-choice log-likelihoods agree within 1e-6 and every per-item verdict is equal.
//!
//! Needs the peers under `/tmp/peers` (`SO8T_PEERS`; `bash .ci/setup-peers.sh`); prints `SKIP …`
//! without them.

mod server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use server::Server;

const BIN: &str = env!("CARGO_BIN_EXE_so8t");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/eval")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Peers {
    dir: PathBuf,
    gguf: PathBuf,
    tokenizer: PathBuf,
}

fn peers(test: &str) -> Option<Peers> {
    let dir = PathBuf::from(std::env::var("SO8T_PEERS").unwrap_or_else(|_| "/tmp/peers".into()));
    let p = Peers {
        gguf: dir.join("models/smollm2-135m-q8_0.gguf"),
        tokenizer: dir.join("models/smollm2-hf-tokenizer"),
        dir,
    };
    if p.gguf.exists() && p.dir.join("venv/bin/lm_eval").exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIP {test}: no SmolLM2 GGUF or lm_eval under {}",
            p.dir.display()
        );
        None
    }
}

fn so8t_eval(args: &[&str]) -> Value {
    let o = Command::new(BIN).arg("eval").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "so8t eval {args:?}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// lm-eval task files reading the bundled JSONL: MMLU's template with the subject in the
/// description, lm-eval's own HellaSwag `process_docs`, GSM8K's settings with two first-n shots.
fn lm_eval_tasks(dir: &Path) {
    let ex = examples();
    let mmlu = format!(
        r#"task: so8t_mmlu
dataset_path: json
dataset_kwargs:
  data_files:
    test: {}
test_split: test
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {{{{subject.replace('_', ' ')}}}}.\n\n"
doc_to_text: "{{{{question.strip()}}}}\nA. {{{{choices[0]}}}}\nB. {{{{choices[1]}}}}\nC. {{{{choices[2]}}}}\nD. {{{{choices[3]}}}}\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
metadata:
  version: 1.0
"#,
        s(&ex.join("mmlu.jsonl"))
    );
    let hellaswag = format!(
        r#"task: so8t_hellaswag
dataset_path: json
dataset_kwargs:
  data_files:
    test: {}
test_split: test
output_type: multiple_choice
process_docs: !function hs.process_docs
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
"#,
        s(&ex.join("hellaswag.jsonl"))
    );
    let gsm8k = format!(
        r#####"task: so8t_gsm8k
dataset_path: json
dataset_kwargs:
  data_files:
    test: {}
    train: {}
test_split: test
fewshot_split: train
fewshot_config:
  sampler: first_n
num_fewshot: 2
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\nAnswer:"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore:
      - ","
      - "\\$"
      - "(?s).*#### "
      - "\\.$"
generation_kwargs:
  until:
    - "Question:"
    - "</s>"
    - "<|im_end|>"
  do_sample: false
  temperature: 0.0
filter_list:
  - name: "strict-match"
    filter:
      - function: "regex"
        regex_pattern: "#### (\\-?[0-9\\.\\,]+)"
      - function: "take_first"
  - name: "flexible-extract"
    filter:
      - function: "regex"
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: "take_first"
metadata:
  version: 1.0
"#####,
        s(&ex.join("gsm8k.jsonl")),
        s(&ex.join("gsm8k_fewshot.jsonl"))
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("so8t_mmlu.yaml"), mmlu).unwrap();
    std::fs::write(dir.join("so8t_hellaswag.yaml"), hellaswag).unwrap();
    std::fs::write(dir.join("so8t_gsm8k.yaml"), gsm8k).unwrap();
    std::fs::write(
        dir.join("hs.py"),
        "from lm_eval.tasks.hellaswag.utils import process_docs  # noqa: F401\n",
    )
    .unwrap();
}

/// lm-eval's logged samples of `task`: doc_id → the sample (for GSM8K, one per filter).
fn lm_eval_samples(out: &Path, task: &str) -> Vec<Value> {
    let mut found = Vec::new();
    let mut dirs = vec![out.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("samples_{task}_")))
            {
                found.push(p);
            }
        }
    }
    assert_eq!(found.len(), 1, "{task}: {found:?}");
    read_jsonl(&found[0])
}

fn compare_choice_task(ours: &[Value], theirs: &[Value], what: &str, alt: Option<&str>) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    assert!(!theirs.is_empty(), "{what}");
    let (mut compared, mut max_diff) = (0, 0f64);
    for t in theirs {
        let i = t["doc_id"].as_u64().unwrap() as usize;
        let o = &ours[i];
        let lls: Vec<f64> = t["filtered_resps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r[0].as_f64()
                    .or_else(|| r[0].as_str().and_then(|x| x.parse().ok()))
                    .unwrap()
            })
            .collect();
        let mine: Vec<f64> = o["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(lls.len(), mine.len(), "{what} doc {i}");
        for (a, b) in lls.iter().zip(&mine) {
            assert!(
                (a - b).abs() <= 1e-6,
                "{what} doc {i}: lm-eval {lls:?} vs so8t {mine:?}"
            );
            max_diff = max_diff.max((a - b).abs());
            compared += 1;
        }
        assert_eq!(
            t["acc"].as_f64() == Some(1.0),
            o["correct"] == true,
            "{what} doc {i}"
        );
        if let Some(alt) = alt {
            assert_eq!(
                t[alt].as_f64() == Some(1.0),
                o["correct_alt"] == true,
                "{what} doc {i}"
            );
        }
    }
    eprintln!("{what}: {compared} log-likelihoods, largest difference from lm-eval {max_diff:e}");
}

#[test]
fn scores_equal_lm_evals_in_process_and_through_the_server() {
    let Some(p) = peers("scores_equal_lm_evals_in_process_and_through_the_server") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let ex = examples();
    let task_args = [
        format!("mmlu={}", s(&ex.join("mmlu.jsonl"))),
        format!("hellaswag={}", s(&ex.join("hellaswag.jsonl"))),
        format!(
            "gsm8k={},fewshot={},num_fewshot=2",
            s(&ex.join("gsm8k.jsonl")),
            s(&ex.join("gsm8k_fewshot.jsonl"))
        ),
    ];
    let local = t.path().join("local");
    let mut args = vec!["--model", s(&p.gguf), "--out", s(&local)];
    for a in &task_args {
        args.extend(["--task", a.as_str()]);
    }
    let summary = so8t_eval(&args);
    for (task, metric) in [
        ("mmlu", "acc"),
        ("hellaswag", "acc_norm"),
        ("gsm8k", "exact_match"),
    ] {
        let v = summary[task][metric].as_f64();
        assert!(
            v.is_some_and(|v| (0.0..=1.0).contains(&v)),
            "{task}: {summary}"
        );
        assert!(
            summary[task].get(format!("{metric}_stderr")).is_some(),
            "{summary}"
        );
    }

    let model = format!("smol={}", s(&p.gguf));
    let srv = Server::start(&["--store", s(&t.path().join("store")), "--model", &model]);
    // The same items through the server with so8t's OpenAI backend.
    let remote = t.path().join("remote");
    let url = format!("http://127.0.0.1:{}", srv.port);
    let mut args = vec![
        "--model",
        &url,
        "--model-name",
        "smol",
        "--out",
        s(&remote),
        "--concurrency",
        "4",
    ];
    for a in &task_args {
        args.extend(["--task", a.as_str()]);
    }
    so8t_eval(&args);
    // GSM8K through the Ollama API (generation only): the same answers as in-process.
    let ollama = t.path().join("ollama");
    so8t_eval(&[
        "--model",
        &url,
        "--backend",
        "ollama",
        "--model-name",
        "smol",
        "--out",
        s(&ollama),
        "--task",
        &task_args[2],
    ]);
    let (mine, theirs) = (
        read_jsonl(&local.join("gsm8k.jsonl")),
        read_jsonl(&ollama.join("gsm8k.jsonl")),
    );
    assert_eq!(mine.len(), theirs.len());
    for (m, o) in mine.iter().zip(&theirs) {
        assert_eq!(m["output"], o["output"], "in-process vs Ollama API");
        assert_eq!(m["correct"], o["correct"]);
    }

    // lm-eval against the same server.
    let tasks = t.path().join("tasks");
    lm_eval_tasks(&tasks);
    let out = t.path().join("lm_eval_out");
    let model_args = format!(
        "model=smol,base_url=http://127.0.0.1:{}/v1/completions,tokenizer_backend=huggingface,tokenizer={},num_concurrent=1,max_retries=1",
        srv.port,
        s(&p.tokenizer)
    );
    let o = Command::new(p.dir.join("venv/bin/lm_eval"))
        .args(["--model", "local-completions", "--model_args", &model_args])
        .args([
            "--tasks",
            "so8t_mmlu,so8t_hellaswag,so8t_gsm8k",
            "--include_path",
            s(&tasks),
        ])
        .args(["--output_path", s(&out), "--log_samples"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("HF_DATASETS_CACHE", t.path().join("hf-datasets"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "lm_eval failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    for dir in [&local, &remote] {
        let what = dir.file_name().unwrap().to_str().unwrap();
        compare_choice_task(
            &read_jsonl(&dir.join("mmlu.jsonl")),
            &lm_eval_samples(&out, "so8t_mmlu"),
            &format!("{what} mmlu"),
            None,
        );
        compare_choice_task(
            &read_jsonl(&dir.join("hellaswag.jsonl")),
            &lm_eval_samples(&out, "so8t_hellaswag"),
            &format!("{what} hellaswag"),
            Some("acc_norm"),
        );
        let ours = read_jsonl(&dir.join("gsm8k.jsonl"));
        let mut by_filter: HashMap<String, Vec<Value>> = HashMap::new();
        for smp in lm_eval_samples(&out, "so8t_gsm8k") {
            by_filter
                .entry(smp["filter"].as_str().unwrap().to_string())
                .or_default()
                .push(smp);
        }
        for (filter, field, idx) in [
            ("strict-match", "correct", 0),
            ("flexible-extract", "correct_alt", 1),
        ] {
            for smp in &by_filter[filter] {
                let i = smp["doc_id"].as_u64().unwrap() as usize;
                let theirs_text = smp["resps"][0][0].as_str().unwrap();
                assert_eq!(
                    ours[i]["output"].as_str().unwrap(),
                    theirs_text,
                    "{what} gsm8k doc {i}"
                );
                assert_eq!(
                    ours[i]["extracted"][idx].as_str().unwrap(),
                    smp["filtered_resps"][0].as_str().unwrap(),
                    "{what} gsm8k doc {i} {filter}"
                );
                assert_eq!(
                    smp["exact_match"].as_f64() == Some(1.0),
                    ours[i][field] == true,
                    "{what} gsm8k {i}"
                );
            }
        }
    }
}

fn so8t(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn init_tiny(dir: &Path, seed: &str) {
    let o = so8t(&["model", "init", "--out", s(dir), "--seed", seed]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn ab_of_two_tiny_models_and_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("A"), t.path().join("B"));
    init_tiny(&a, "1");
    init_tiny(&b, "2");
    let ex = examples();
    let out = t.path().join("ab");
    let mmlu = format!("mmlu={}", s(&ex.join("mmlu.jsonl")));
    let four = format!(
        "four_class={},max_tokens=8",
        s(&ex.join("four_class.jsonl"))
    );
    let o = so8t(&[
        "ab",
        "--model-a",
        s(&a),
        "--model-b",
        s(&b),
        "--task",
        &mmlu,
        "--task",
        &four,
        "--out",
        s(&out),
        "--resamples",
        "500",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("McNemar p"), "{stdout}");
    let ab: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ab.json")).unwrap()).unwrap();
    let tasks = ab["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{ab}");
    let four_class = tasks.iter().find(|t| t["task"] == "four_class").unwrap();
    assert_eq!(four_class["n"], 4);
    assert_eq!(
        four_class["classes"]["confusion_a"]["counts"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let mmlu_t = tasks.iter().find(|t| t["task"] == "mmlu").unwrap();
    assert_eq!(mmlu_t["n"], 6);
    assert!(mmlu_t["p_holm"].as_f64().unwrap() >= mmlu_t["mcnemar"]["p_value"].as_f64().unwrap());
    assert_eq!(ab["settings"]["resamples"], 500);
    assert_eq!(ab["a"]["model"]["path"], s(&a));
    for f in [
        "a/mmlu.jsonl",
        "a/summary.json",
        "b/run.json",
        "report.md",
        "report.html",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    // Results of different items cannot be paired (this run also goes into a run database).
    let fewer = t.path().join("fewer");
    let run_dir = t.path().join("run");
    let o = so8t(&[
        "eval",
        "--model",
        s(&b),
        "--task",
        &mmlu,
        "--limit",
        "4",
        "--out",
        s(&fewer),
        "--run-dir",
        s(&run_dir),
        "--label",
        "b-sample",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let db = so8t_store::Store::open_read_only(&run_dir).unwrap();
    let runs = db.eval_runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].label, "b-sample");
    assert_eq!(runs[0].model["path"], s(&b));
    assert_eq!(db.eval_items(runs[0].id).unwrap().len(), 4);
    let o = so8t(&[
        "ab",
        "--a",
        s(&out.join("a")),
        "--b",
        s(&fewer),
        "--out",
        s(&t.path().join("x")),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("task mmlu: A and B scored different items: 6 items in A, 4 in B"),
        "{err}"
    );

    // A model of the store (created FROM the HF folder: an F16 GGUF blob), by name.
    let store = t.path().join("store");
    let mf = t.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {}\n", s(&a))).unwrap();
    let o = so8t(&["create", "tiny", "-f", s(&mf), "--store", s(&store)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let by_name = t.path().join("by_name");
    let o = so8t(&[
        "eval",
        "--model",
        "tiny",
        "--store",
        s(&store),
        "--task",
        &mmlu,
        "--out",
        s(&by_name),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(by_name.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["model"]["store_model"], "tiny:latest", "{run}");
    assert_eq!(
        run["model"]["sha256"].as_str().map(str::len),
        Some(64),
        "{run}"
    );

    // A task file with a wrong answer index: the file and line, before any model loads.
    let bad = t.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 5}\n").unwrap();
    let o = so8t(&[
        "eval",
        "--model",
        "/nonexistent",
        "--task",
        &format!("mmlu={}", s(&bad)),
        "--out",
        s(&t.path().join("y")),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.jsonl:2: field `answer` = 5 is out of range"),
        "{err}"
    );
    // An unknown model.
    let o = so8t(&[
        "eval",
        "--model",
        "no-such-model",
        "--task",
        &mmlu,
        "--out",
        s(&t.path().join("z")),
        "--store",
        s(&t.path().join("store")),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-model"));
}
