//! `split` end to end on files: stratified proportions, nothing lost or duplicated,
//! reproducibility, empty splits, bad ratios, malformed lines and tiny classes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use so8t_data::split::{split, SplitOptions, SplitStats, SPLIT_NAMES};
use so8t_data::{Label, Lang, Record};

fn record(i: usize, label: Label) -> Record {
    Record {
        id: format!("r{i}"),
        source: "test".into(),
        instruction: format!("request number {i} — 依頼 {i}"),
        input: String::new(),
        output: if i % 2 != 1 {
            format!("answer {i}")
        } else {
            String::new()
        },
        system: String::new(),
        four_class_label: label,
        lang: [Lang::Ja, Lang::En, Lang::En][i % 3],
    }
}

/// Writes `counts[c]` records of each class, interleaved, and returns the input path.
fn write_input(dir: &Path, counts: [usize; 4]) -> PathBuf {
    let mut lines = Vec::new();
    let mut left = counts;
    let mut i = 0;
    while left.iter().any(|&c| c > 0) {
        for (c, l) in Label::ALL.iter().enumerate() {
            if left[c] > 0 {
                left[c] -= 1;
                lines.push(serde_json::to_string(&record(i, *l)).unwrap());
                i += 1;
            }
        }
    }
    let path = dir.join("input.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn opts(input: &Path, out: &Path, ratios: [f64; 3], seed: u64) -> SplitOptions {
    SplitOptions {
        input: input.to_path_buf(),
        out_dir: out.to_path_buf(),
        ratios,
        seed,
    }
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn outputs(out: &Path) -> [Vec<String>; 3] {
    SPLIT_NAMES.map(|s| read_lines(&out.join(format!("{s}.jsonl"))))
}

fn class_counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for l in lines {
        let r: Record = serde_json::from_str(l).unwrap();
        *m.entry(r.four_class_label.name().to_string()).or_insert(0) += 1;
    }
    m
}

/// Every input line appears in exactly one output, each output keeps input order.
fn assert_partition(input: &Path, outs: &[Vec<String>; 3]) {
    let inp = read_lines(input);
    let pos: BTreeMap<&str, usize> = inp
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    assert_eq!(pos.len(), inp.len(), "test input lines must be distinct");
    let mut all: Vec<&String> = outs.iter().flatten().collect();
    assert_eq!(all.len(), inp.len(), "records lost or duplicated");
    for o in outs {
        let idx: Vec<usize> = o.iter().map(|l| pos[l.as_str()]).collect();
        assert!(
            idx.windows(2).all(|w| w[0] < w[1]),
            "output not in input order"
        );
    }
    all.sort();
    let mut sorted_in: Vec<&String> = inp.iter().collect();
    sorted_in.sort();
    assert_eq!(all, sorted_in, "union of outputs differs from the input");
}

#[test]
fn stratified_proportions_and_exact_partition() {
    let t = tempfile::tempdir().unwrap();
    let counts = [400, 130, 77, 23];
    let input = write_input(t.path(), counts);
    let before = std::fs::read(&input).unwrap();
    let out = t.path().join("splits");
    let ratios = [0.8, 0.1, 0.1];
    let stats = split(&opts(&input, &out, ratios, 42)).unwrap();
    assert_eq!(std::fs::read(&input).unwrap(), before, "input modified");
    let outs = outputs(&out);
    assert_partition(&input, &outs);
    assert_eq!(stats.total, counts.iter().sum::<usize>() as u64);
    for (s, name) in SPLIT_NAMES.iter().enumerate() {
        let got = class_counts(&outs[s]);
        for (c, label) in Label::ALL.iter().enumerate() {
            let n = got.get(label.name()).copied().unwrap_or(0);
            let want = counts[c] as f64 * ratios[s];
            assert!(
                (n as f64 - want).abs() <= 1.0,
                "{name}/{label}: {n} records, expected {want:.1} ± 1"
            );
            assert_eq!(
                stats.per_split[*name][label.name()],
                n,
                "stats disagree with files"
            );
        }
    }
    // Stats serialize for reports.
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["total"], 630);
    assert!(json["per_split"]["validation"]["ALLOW"].is_u64());
    // Lines are copied byte for byte: the output bytes are a subset of input lines.
    let text = std::fs::read_to_string(out.join("train.jsonl")).unwrap();
    assert!(text.ends_with('\n'));
    // No temp files left behind.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn same_seed_same_files_other_seed_other_assignment() {
    let t = tempfile::tempdir().unwrap();
    let input = write_input(t.path(), [60, 40, 30, 20]);
    let run = |dir: &str, seed| -> [Vec<u8>; 3] {
        let out = t.path().join(dir);
        split(&opts(&input, &out, [0.6, 0.2, 0.2], seed)).unwrap();
        SPLIT_NAMES.map(|s| std::fs::read(out.join(format!("{s}.jsonl"))).unwrap())
    };
    let a = run("a", 7);
    let b = run("b", 7);
    assert_eq!(a, b, "same seed gave different files");
    let c = run("c", 8);
    assert_ne!(a, c, "different seeds gave the same assignment");
    // Re-running into an existing folder replaces the files.
    let a2 = run("a", 7);
    assert_eq!(a, a2);
}

#[test]
fn zero_ratio_gives_an_empty_file() {
    let t = tempfile::tempdir().unwrap();
    let input = write_input(t.path(), [10, 5, 3, 1]);
    let out = t.path().join("o");
    let stats = split(&opts(&input, &out, [0.9, 0.0, 0.1], 1)).unwrap();
    let outs = outputs(&out);
    assert!(outs[1].is_empty(), "validation should be empty");
    assert_eq!(
        std::fs::read(out.join("validation.jsonl")).unwrap().len(),
        0
    );
    assert!(stats.per_split["validation"].values().all(|&n| n == 0));
    assert_partition(&input, &outs);

    let out = t.path().join("all-train");
    split(&opts(&input, &out, [1.0, 0.0, 0.0], 1)).unwrap();
    let outs = outputs(&out);
    assert_eq!(
        outs[0],
        read_lines(&input),
        "all-train must equal the input"
    );
    assert!(outs[1].is_empty() && outs[2].is_empty());
}

#[test]
fn bad_ratios_are_rejected() {
    let t = tempfile::tempdir().unwrap();
    let input = write_input(t.path(), [3, 3, 3, 3]);
    let out = t.path().join("o");
    for r in [
        [0.8, 0.1, 0.2],
        [0.5, 0.5, 0.5],
        [1.2, -0.1, -0.1],
        [f64::NAN, 0.5, 0.5],
        [0.0, 0.0, 0.0],
    ] {
        let e = split(&opts(&input, &out, r, 0)).unwrap_err().to_string();
        assert!(e.contains("ratios"), "{r:?}: {e}");
    }
    assert!(!out.exists(), "nothing is written on a configuration error");
    // Within 1e-6 is accepted.
    split(&opts(&input, &out, [0.7, 0.2, 0.1 + 5e-7], 0)).unwrap();
}

#[test]
fn malformed_lines_name_file_and_line() {
    let t = tempfile::tempdir().unwrap();
    let good = serde_json::to_string(&record(0, Label::Deny)).unwrap();
    let cases = [
        (format!("{good}\n\n{{\"id\": \"x\",\n"), 3, "EOF"),
        (
            format!("{good}\n{{\"id\":\"x\",\"four_class_label\":\"MAYBE\"}}\n"),
            2,
            "MAYBE",
        ),
        (
            format!("{good}\n{good}\n{{\"id\":\"x\"}}\n"),
            3,
            "four_class_label",
        ),
        (format!("[1, 2]\n{good}\n"), 1, "four_class_label"),
    ];
    for (text, line, needle) in cases {
        let input = t.path().join("bad.jsonl");
        std::fs::write(&input, &text).unwrap();
        let out = t.path().join("o");
        let e = split(&opts(&input, &out, [0.8, 0.1, 0.1], 0)).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, so8t_data::Error::Record { line: l, .. } if *l == line),
            "{msg}"
        );
        assert!(msg.contains(&format!("bad.jsonl:{line}")), "{msg}");
        assert!(msg.contains(needle), "{msg}");
        for s in SPLIT_NAMES {
            assert!(
                !out.join(format!("{s}.jsonl")).exists(),
                "partial output {s}"
            );
        }
    }
    // Invalid UTF-8.
    let input = t.path().join("bin.jsonl");
    std::fs::write(&input, [good.as_bytes(), b"\n\xff\xfe\n"].concat()).unwrap();
    let e = split(&opts(&input, &t.path().join("o"), [0.8, 0.1, 0.1], 0)).unwrap_err();
    assert!(e.to_string().contains("bin.jsonl:2"), "{e}");
}

#[test]
fn tiny_classes_and_edge_inputs() {
    let t = tempfile::tempdir().unwrap();
    // One ALLOW, two ESCALATION, no DENY, one REFUSE.
    let input = write_input(t.path(), [1, 2, 0, 1]);
    for seed in 0..20 {
        let out = t.path().join(format!("o{seed}"));
        let stats = split(&opts(&input, &out, [0.8, 0.1, 0.1], seed)).unwrap();
        let outs = outputs(&out);
        assert_partition(&input, &outs);
        assert_eq!(stats.total, 4);
        let train = &stats.per_split["train"];
        assert_eq!(
            train["ALLOW"], 1,
            "a single record goes to the largest split"
        );
        assert_eq!(train["REFUSE"], 1);
        assert_eq!(train["DENY"], 0);
        // 2 × (0.8, 0.1, 0.1) = (1.6, 0.2, 0.2): 2 train.
        assert_eq!(train["ESCALATION"], 2);
    }
    // Empty input → three empty files.
    let empty = t.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let out = t.path().join("e");
    let stats = split(&opts(&empty, &out, [0.8, 0.1, 0.1], 0)).unwrap();
    assert_eq!(stats.total, 0);
    assert!(outputs(&out).iter().all(Vec::is_empty));
    // No trailing newline on the last line, CRLF endings and blank lines: lines are copied
    // byte for byte and each output line ends with a newline.
    let a = serde_json::to_string(&record(1, Label::Allow)).unwrap();
    let b = serde_json::to_string(&record(2, Label::Allow)).unwrap();
    let crlf = t.path().join("crlf.jsonl");
    std::fs::write(&crlf, format!("{a}\r\n\r\n{b}")).unwrap();
    let out = t.path().join("c");
    split(&opts(&crlf, &out, [1.0, 0.0, 0.0], 0)).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("train.jsonl")).unwrap(),
        format!("{a}\r\n{b}\n")
    );
}

#[test]
fn output_folder_must_not_hold_the_input() {
    let t = tempfile::tempdir().unwrap();
    let input = write_input(t.path(), [5, 5, 5, 5]);
    let before = std::fs::read(&input).unwrap();
    let e = split(&opts(&input, t.path(), [0.8, 0.1, 0.1], 0)).unwrap_err();
    assert!(e.to_string().contains("holds the input"), "{e}");
    // Also through a different spelling of the same folder.
    let e = split(&opts(&input, &t.path().join("."), [0.8, 0.1, 0.1], 0)).unwrap_err();
    assert!(e.to_string().contains("holds the input"), "{e}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
    // A missing input is an I/O error naming it.
    let e = split(&opts(
        &t.path().join("nope.jsonl"),
        &t.path().join("o"),
        [0.8, 0.1, 0.1],
        0,
    ))
    .unwrap_err();
    assert!(e.to_string().contains("nope.jsonl"), "{e}");
}

#[test]
fn stats_shape() {
    let s = SplitStats::default();
    assert_eq!(s.total, 0);
    let t = tempfile::tempdir().unwrap();
    let input = write_input(t.path(), [2, 0, 0, 0]);
    let stats = split(&opts(&input, &t.path().join("o"), [0.5, 0.5, 0.0], 3)).unwrap();
    assert_eq!(stats.per_split.len(), 3);
    for m in stats.per_split.values() {
        assert_eq!(m.len(), 4, "every class listed, zeros included");
    }
    assert_eq!(
        stats.per_split["train"]["ALLOW"] + stats.per_split["validation"]["ALLOW"],
        2
    );
}
