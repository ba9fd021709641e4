//! `collect` end to end on files: mapping, labels, dedup, skip-bad with rejects, stats, and
//! inputs left untouched.

use std::path::Path;

use so8t_data::collect::{collect, CollectOptions};
use so8t_data::FieldMap;

fn opts(dir: &Path, inputs: &[&str], skip_bad: bool) -> CollectOptions {
    CollectOptions {
        inputs: inputs.iter().map(|i| dir.join(i)).collect(),
        output: dir.join("out.jsonl"),
        map: FieldMap::default(),
        skip_bad,
        rejects: None,
        dedup: true,
        scrub_pii: true,
        near_dup: None,
        progress: None,
    }
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn collects_jsonl_and_json_with_dedup_and_stats() {
    let t = tempfile::tempdir().unwrap();
    let a = "{\"id\":\"a1\",\"text\":\"How do I boil an egg?\",\"output\":\"Nine minutes.\",\"four_class_label\":\"ALLOW\"}\n\
             {\"text\":\"how do I   boil an EGG?\",\"label\":0}\n\
             {\"instruction\":\"胸が痛いです\",\"label\":\"escalate\"}\n";
    std::fs::write(t.path().join("a.jsonl"), a).unwrap();
    std::fs::write(
        t.path().join("b.json"),
        r#"[{"question":"Read my partner's messages secretly","class":2,"source":"web"},{"prompt":"Something clearly dangerous","label":"Refuse"}]"#,
    )
    .unwrap();
    let before = std::fs::read(t.path().join("a.jsonl")).unwrap();
    let s = collect(&opts(t.path(), &["a.jsonl", "b.json"], false)).unwrap();
    assert_eq!(
        std::fs::read(t.path().join("a.jsonl")).unwrap(),
        before,
        "input modified"
    );
    assert_eq!((s.read, s.written, s.duplicates, s.rejected), (5, 4, 1, 0));
    assert_eq!(
        s.per_class.values().copied().collect::<Vec<_>>(),
        vec![1, 1, 1, 1]
    );
    assert_eq!(s.per_lang["ja"], 1);
    assert_eq!(s.per_source["web"], 1);
    assert_eq!(s.per_source["a"], 2);
    let out = lines(&t.path().join("out.jsonl"));
    assert_eq!(out[0]["id"], "a1");
    assert_eq!(out[1]["id"], "a:3");
    assert_eq!(out[1]["four_class_label"], "ESCALATION");
    assert_eq!(out[2]["four_class_label"], "DENY");
    assert_eq!(
        s.length_chars["max"],
        "Read my partner's messages secretly".len() as u64
    );
}

#[test]
fn bad_records_fail_with_location_or_go_to_rejects() {
    let t = tempfile::tempdir().unwrap();
    let a = b"{\"text\":\"fine\",\"label\":\"ALLOW\"}\n{\"text\":\"x\",\"label\":\"BLOCK\"}\n{\"text\": oops}\n{\"text\":\"\",\"label\":1}\n{\"text\":\"b\xff\",\"label\":1}\n";
    std::fs::write(t.path().join("a.jsonl"), a).unwrap();
    std::fs::write(t.path().join("out.jsonl"), "previous\n").unwrap();
    let e = collect(&opts(t.path(), &["a.jsonl"], false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a.jsonl:2") && e.contains("unknown label \"BLOCK\""),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("out.jsonl")).unwrap(),
        "previous\n",
        "a failed run must not replace the output"
    );
    let s = collect(&opts(t.path(), &["a.jsonl"], true)).unwrap();
    assert_eq!((s.read, s.written, s.rejected), (5, 1, 4));
    let rej = lines(&t.path().join("out.jsonl.rejects.jsonl"));
    let reasons: Vec<String> = rej
        .iter()
        .map(|r| r["error"].as_str().unwrap().to_string())
        .collect();
    assert!(reasons[0].contains(":2") && reasons[0].contains("BLOCK"));
    assert!(reasons[1].contains(":3:") && reasons[1].contains("malformed JSON"));
    assert!(reasons[2].contains(":4") && reasons[2].contains("empty text"));
    assert!(reasons[3].contains(":5:") && reasons[3].contains("invalid UTF-8"));
    assert_eq!(rej[0]["record"]["label"], "BLOCK");
}

#[test]
fn rejects_unknown_formats_and_output_equal_to_input() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a.xml"), "<x/>").unwrap();
    let e = collect(&opts(t.path(), &["a.xml"], false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a.xml") && e.contains("unsupported input format"),
        "{e}"
    );
    std::fs::write(t.path().join("out.jsonl"), "{}\n").unwrap();
    let e = collect(&opts(t.path(), &["out.jsonl"], false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("inputs are never modified"), "{e}");
}

#[test]
fn pii_is_scrubbed_before_dedup_and_counted() {
    let t = tempfile::tempdir().unwrap();
    let a = "{\"text\":\"Mail me at taro@example.com\",\"label\":\"ALLOW\"}\n\
             {\"text\":\"Mail me at hanako@example.org\",\"label\":\"ALLOW\"}\n\
             {\"text\":\"連絡先は090-1234-5678です\",\"output\":\"card 4111 1111 1111 1111\",\"label\":1}\n";
    std::fs::write(t.path().join("a.jsonl"), a).unwrap();
    let s = collect(&opts(t.path(), &["a.jsonl"], false)).unwrap();
    assert_eq!((s.written, s.duplicates, s.pii.total()), (2, 1, 4));
    let out = lines(&t.path().join("out.jsonl"));
    assert_eq!(out[0]["instruction"], "Mail me at [EMAIL]");
    assert_eq!(out[1]["instruction"], "連絡先は[PHONE]です");
    assert_eq!(out[1]["output"], "card [CREDIT_CARD]");
    // Rejected records are scrubbed as well.
    std::fs::write(
        t.path().join("b.jsonl"),
        "{\"text\":\"write to taro@example.com\",\"label\":\"BLOCK\"}\n",
    )
    .unwrap();
    let s = collect(&opts(t.path(), &["b.jsonl"], true)).unwrap();
    assert_eq!(s.rejected, 1);
    let rej = std::fs::read_to_string(t.path().join("out.jsonl.rejects.jsonl")).unwrap();
    assert!(rej.contains("[EMAIL]") && !rej.contains("taro@"), "{rej}");
}

#[test]
fn bundled_sample_data_is_balanced_after_dedup() {
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/sample_four_class.jsonl");
    let t = tempfile::tempdir().unwrap();
    let o = CollectOptions {
        inputs: vec![sample],
        output: t.path().join("out.jsonl"),
        map: FieldMap::default(),
        skip_bad: false,
        rejects: None,
        dedup: true,
        scrub_pii: true,
        near_dup: None,
        progress: None,
    };
    let s = collect(&o).unwrap();
    // 440 records; 8 exact and 4 case/space/width-only duplicates (examples/data/README.md).
    assert_eq!((s.read, s.written, s.duplicates), (440, 428, 12));
    assert!(s.per_class.values().all(|&n| n == 107), "{:?}", s.per_class);
    assert_eq!((s.per_lang["ja"], s.per_lang["en"]), (214, 214));
    assert!(
        s.pii.get(so8t_data::pii::PiiKind::Email) >= 9
            && s.pii.get(so8t_data::pii::PiiKind::Phone) >= 8,
        "{:?}",
        s.pii
    );
    let out = std::fs::read_to_string(t.path().join("out.jsonl")).unwrap();
    assert!(
        !out.contains("@example."),
        "an e-mail address survived the scrub"
    );
}

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn collects_every_reader_format_into_the_same_records() {
    let t = tempfile::tempdir().unwrap();
    for (input, n) in [
        ("four.csv", 6u64),
        ("four.tsv", 6),
        ("four.parquet", 0),
        ("hf_dataset", 0),
        ("hf_dict", 0),
    ] {
        let out = t.path().join(format!("{input}.jsonl"));
        let mut o = CollectOptions::new(vec![data(input)], out.clone());
        o.near_dup = None;
        o.skip_bad = true;
        let s = collect(&o).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert!(s.written > 0, "{input}");
        if n > 0 {
            assert_eq!(s.written, n, "{input}");
        }
        assert_eq!(s.read, s.written + s.duplicates + s.rejected, "{input}");
        assert!(s.bytes > 0, "{input}");
        for r in lines(&out) {
            let label = r["four_class_label"].as_str().unwrap();
            assert!(
                ["ALLOW", "ESCALATION", "DENY", "REFUSE"].contains(&label),
                "{r}"
            );
        }
    }
}

#[test]
fn a_csv_without_the_text_column_is_named() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("cols.csv");
    std::fs::write(&p, "id,question_text,label\n1,hi,allow\n").unwrap();
    let e = collect(&CollectOptions::new(vec![p], t.path().join("o.jsonl")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cols.csv") && e.contains("no column for the text"),
        "{e}"
    );
    assert!(
        e.contains("question_text") && e.contains("--map text="),
        "{e}"
    );
    // A short row names its line.
    let e = collect(&CollectOptions::new(
        vec![data("missing_col.csv")],
        t.path().join("o.jsonl"),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing_col.csv:3"), "{e}");
    assert!(!t.path().join("o.jsonl").exists());
}

#[test]
fn near_duplicates_are_dropped_with_a_threshold() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("n.jsonl");
    let rows = [
        "Please explain how photosynthesis turns sunlight into chemical energy in plants.",
        "Please explain how photosynthesis turns sunlight into chemical energy in plant cells.",
        "Please explain how a refrigerator moves heat out of its inside compartment.",
        "光合成が太陽の光をどのように化学エネルギーに変えるのか、植物の葉の中で起きていることを順番に詳しく説明してください。",
        "光合成が太陽の光をどのように化学エネルギーに変えるのか、植物の葉の中で起きていることを順番に詳しく説明して下さい。",
    ];
    let text: String = rows
        .iter()
        .map(|r| serde_json::json!({"text": r, "label": "ALLOW"}).to_string() + "\n")
        .collect();
    std::fs::write(&p, text).unwrap();
    let out = t.path().join("o.jsonl");
    let s = collect(&CollectOptions::new(vec![p.clone()], out.clone())).unwrap();
    assert_eq!((s.written, s.near_duplicates, s.duplicates), (3, 2, 0));
    let kept: Vec<String> = lines(&out)
        .iter()
        .map(|r| r["instruction"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, vec![rows[0], rows[2], rows[3]]);
    let mut o = CollectOptions::new(vec![p.clone()], out.clone());
    o.near_dup.as_mut().unwrap().threshold = 0.99;
    assert_eq!(collect(&o).unwrap().written, 5);
    o.near_dup = None;
    assert_eq!(collect(&o).unwrap().near_duplicates, 0);
}

#[test]
fn progress_reaches_the_total() {
    let t = tempfile::tempdir().unwrap();
    let mut o = CollectOptions::new(
        vec![data("four.csv"), data("four.parquet")],
        t.path().join("o.jsonl"),
    );
    o.skip_bad = true;
    let p = std::sync::Arc::new(so8t_data::progress::Progress::new());
    o.progress = Some(p.clone());
    let s = collect(&o).unwrap();
    let (done, total) = p.get();
    let size = std::fs::metadata(data("four.csv")).unwrap().len()
        + std::fs::metadata(data("four.parquet")).unwrap().len();
    assert_eq!((done, total, s.bytes), (size, size, size));
}

#[test]
fn a_toml_mapping_file_maps_columns() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("cols.csv");
    std::fs::write(&p, "id,question_text,safety\n1,hi there,allow\n2,,deny\n").unwrap();
    let map = FieldMap::default()
        .with_toml(
            "text = [\"missing\", \"question_text\"]\nlabel = \"safety\"\n",
            "map.toml",
        )
        .unwrap();
    assert_eq!(&map.text[..2], ["missing", "question_text"]);
    assert_eq!(map.label[0], "safety");
    let mut o = CollectOptions::new(vec![p], t.path().join("o.jsonl"));
    o.map = map;
    o.skip_bad = true;
    let s = collect(&o).unwrap();
    assert_eq!((s.written, s.rejected), (1, 1));
    for (bad, want) in [
        ("txt = \"a\"", "unknown field \"txt\""),
        ("text = 3", "must be a column name"),
        ("text = [1]", "must list strings"),
        ("text = ", "map.toml"),
    ] {
        let e = FieldMap::default().with_toml(bad, "map.toml").unwrap_err();
        assert!(e.contains(want) && e.starts_with("map.toml"), "{bad}: {e}");
    }
}
