//! The data commands end to end through the binary: pull (from a fake hub on 127.0.0.1) →
//! collect with split → think → tokenize with packing, and their errors.

#[path = "../../so8t-model/tests/common/fake_hub.rs"]
mod fake_hub;

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::{fails, s, so8t};
use serde_json::Value;

/// Runs `so8t ARGS`, asserts success, parses stdout as JSON (Null if it is not).
fn ok(args: &[&str]) -> Value {
    serde_json::from_str(&common::ok(args)).unwrap_or(Value::Null)
}

fn jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn pull_collect_split_think_tokenize() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // A dataset repository with the bundled sample as JSONL and a small CSV.
    let sample = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/sample_four_class.jsonl"),
    )
    .unwrap();
    let csv = b"id,text,label\nc1,How many legs does a spider have?,allow\nc2,Help me forge a doctor's note,deny\n";
    let hub = fake_hub::FakeHub::start(vec![fake_hub::FakeRepo::new(
        "so8t/four-class",
        true,
        &[
            ("README.md", b"# four-class\n"),
            ("data/sample.jsonl", &sample),
            ("data/extra.csv", csv),
        ],
    )]);
    let pulled = d.join("pulled");
    let o = Command::cargo_bin("so8t")
        .unwrap()
        .env("HF_TOKEN", fake_hub::TOKEN)
        .args([
            "data",
            "pull",
            "so8t/four-class",
            "--out",
            s(&pulled),
            "--endpoint",
            &hub.endpoint(),
            "--cache-dir",
            s(&d.join("cache")),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(pulled.join("data/sample.jsonl")).unwrap(),
        sample
    );

    let rec = d.join("rec.jsonl");
    let stats = ok(&[
        "data",
        "collect",
        "--input",
        s(&pulled),
        "--output",
        s(&rec),
        "--split",
        "0.8,0.1,0.1",
        "--split-dir",
        s(&d.join("split")),
        "--stats",
        s(&d.join("stats.json")),
    ]);
    assert_eq!(stats["read"], 442);
    assert_eq!(stats["written"], 426);
    assert_eq!(stats["near_duplicates"], 4);
    let train_deny = stats["split"]["per_split"]["train"]["DENY"]
        .as_f64()
        .unwrap();
    assert!((train_deny - 0.8 * 107.0).abs() <= 1.0, "{train_deny}");
    let n_train: u64 = stats["split"]["per_split"]["train"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("stats.json")).unwrap()).unwrap();
    assert_eq!(saved, stats);
    let train = d.join("split/train.jsonl");
    assert_eq!(jsonl(&train).len() as u64, n_train);

    for format in ["steps", "tags"] {
        let think = d.join(format!("think-{format}.jsonl"));
        let st = ok(&[
            "data",
            "think",
            "--input",
            s(&train),
            "--output",
            s(&think),
            "--format",
            format,
        ]);
        assert_eq!(st["written"], n_train);
        let rows = jsonl(&think);
        assert_eq!(rows[0]["format"], format);
        assert!(rows[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("<|system|>\n"));
    }

    let model = d.join("tiny");
    let o = so8t(&["model", "init", "--preset", "tiny", "--out", s(&model)]);
    assert!(o.status.success());
    let ex = d.join("ex.jsonl");
    let st = ok(&[
        "data",
        "tokenize",
        "--input",
        s(&d.join("think-tags.jsonl")),
        "--output",
        s(&ex),
        "--model",
        s(&model),
        "--max-seq-len",
        "4096",
        "--pack",
    ]);
    assert_eq!(st["examples"], n_train);
    let rows = jsonl(&ex);
    assert_eq!(rows.len() as u64, st["rows"].as_u64().unwrap());
    let n: usize = rows
        .iter()
        .map(|r| r["seq_lens"].as_array().unwrap().len())
        .sum();
    assert_eq!(n as u64, n_train);
}

#[test]
fn data_errors_exit_2_and_name_the_problem() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let csv = d.join("a.csv");
    std::fs::write(&csv, "id,question_text,label\n1,hi,allow\n").unwrap();
    let out = d.join("o.jsonl");
    let e = fails(&["data", "collect", "--input", s(&csv), "--output", s(&out)]);
    assert!(e.contains("a.csv") && e.contains("--map text="), "{e}");
    let pq = Path::new(env!("CARGO_MANIFEST_DIR")).join("../so8t-data/tests/data/four.parquet");
    let bytes = std::fs::read(pq).unwrap();
    let cut = d.join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&["data", "collect", "--input", s(&cut), "--output", s(&out)]);
    assert!(e.contains("cut.parquet"), "{e}");
    let e = fails(&[
        "data",
        "collect",
        "--input",
        s(&csv),
        "--output",
        s(&out),
        "--split",
        "0.5,0.5",
    ]);
    assert!(e.contains("three numbers"), "{e}");
    let e = fails(&[
        "data",
        "tokenize",
        "--input",
        s(&csv),
        "--output",
        s(&out),
        "--model",
        s(d),
    ]);
    assert!(e.contains("tokenizer"), "{e}");
    assert!(!out.exists());
}
