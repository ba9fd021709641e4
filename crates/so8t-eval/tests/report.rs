//! The A/B report: Markdown, self-contained HTML and SVG charts from a synthetic comparison.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use so8t_eval::ab::{compare, AbReport, AbSettings};
use so8t_eval::report::{format_p, format_rate, verdict_words, write_report};
use so8t_eval::score::ItemResult;

const ODD: &str = "odd<b>&\"name";

/// Deterministic pseudo-random numbers in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn item(task: &str, i: usize, gold: usize, pred: Option<usize>, latency_s: f64) -> ItemResult {
    ItemResult {
        task: task.into(),
        id: format!("{task}-{i}"),
        kind: if task == "four_class" {
            "four_class"
        } else {
            "mmlu"
        }
        .into(),
        correct: pred == Some(gold),
        correct_alt: None,
        gold: Some(gold),
        pred,
        loglikelihoods: Vec::new(),
        greedy: Vec::new(),
        output: None,
        extracted: None,
        latency_s,
        tokens: 10,
        error: None,
    }
}

/// A multiple-choice task: A right with probability `pa`, B with `pb`.
fn choice_task(
    task: &str,
    n: usize,
    pa: f64,
    pb: f64,
    rng: &mut Lcg,
) -> (Vec<ItemResult>, Vec<ItemResult>) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..n {
        let gold = i % 4;
        let u = rng.next();
        for (out, p, lat) in [(&mut a, pa, 0.5), (&mut b, pb, 0.4)] {
            let pred = if u < p { gold } else { (gold + 1) % 4 };
            let mut r = item(task, i, gold, Some(pred), lat + 0.2 * rng.next());
            r.loglikelihoods = (0..4)
                .map(|k| if k == pred { -1.0 } else { -3.0 - k as f64 })
                .collect();
            out.push(r);
        }
    }
    (a, b)
}

/// The four-class task: generated outputs, some unparseable.
fn four_class(n: usize, rng: &mut Lcg) -> (Vec<ItemResult>, Vec<ItemResult>) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..n {
        let gold = i % 4;
        let u = rng.next();
        for (out, p, lat) in [(&mut a, 0.55, 1.2), (&mut b, 0.8, 1.0)] {
            let pred = if u < p {
                Some(gold)
            } else if u > 0.95 {
                None
            } else {
                Some((gold + 1 + i % 3) % 4)
            };
            let mut r = item("four_class", i, gold, pred, lat + rng.next());
            r.output = Some(format!("answer {pred:?}"));
            out.push(r);
        }
    }
    (a, b)
}

fn build() -> AbReport {
    let mut rng = Lcg(42);
    let mut ra = BTreeMap::new();
    let mut rb = BTreeMap::new();
    for (name, (a, b)) in [
        ("mmlu", choice_task("mmlu", 300, 0.55, 0.75, &mut rng)),
        (ODD, choice_task(ODD, 60, 0.6, 0.62, &mut rng)),
        ("four_class", four_class(200, &mut rng)),
    ] {
        ra.insert(name.to_string(), a);
        rb.insert(name.to_string(), b);
    }
    let settings = AbSettings {
        resamples: 2000,
        seed: 7,
        alpha: 0.05,
    };
    let tasks = compare(&ra, &rb, settings).expect("compare");
    AbReport {
        a: json!({"model": {"backend": "local", "path": "/models/base.gguf", "sha256": "ab12cd34"},
                  "command": ["so8t", "eval"], "settings": {}, "tasks": []}),
        b: json!({"model": {"backend": "openai", "url": "http://localhost:8080/v1"}}),
        settings,
        tasks,
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn writes_markdown_html_and_charts() {
    let report = build();
    assert!(
        report.tasks.iter().any(|t| t.classes.is_some()),
        "four_class detected"
    );
    let dir = tempfile::tempdir().unwrap();
    let command = "so8t ab runs/a runs/b --out report http://example.com/x";
    let files = write_report(&report, command, dir.path()).unwrap();
    if let Ok(keep) = std::env::var("SO8T_REPORT_KEEP") {
        write_report(&report, command, Path::new(&keep)).unwrap();
    }

    // Files.
    assert!(files.markdown.is_file() && files.html.is_file());
    let names: Vec<String> = files
        .charts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["accuracy.svg", "latency.svg", "macro_f1.svg"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("per_class_f1_")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("confusion_")),
        "{names:?}"
    );
    for p in &files.charts {
        assert!(
            p.starts_with(dir.path().join("charts")) && p.is_file(),
            "{}",
            p.display()
        );
        let svg = read(p);
        assert!(svg.starts_with("<svg"), "{}", p.display());
        assert!(svg.trim_end().ends_with("</svg>"), "{}", p.display());
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(
            !svg.contains("<b>") && !svg.contains("&\""),
            "escaped in {}",
            p.display()
        );
    }
    let acc = read(&dir.path().join("charts/accuracy.svg"));
    for text in [
        "accuracy",
        "task",
        "A: base.gguf",
        "B: v1",
        "0.5",
        "1.0",
        "mmlu",
    ] {
        assert!(acc.contains(text), "accuracy.svg lacks {text:?}");
    }
    assert!(
        acc.contains("odd&lt;b&gt;&amp;"),
        "task name escaped in SVG"
    );
    let lat = read(&dir.path().join("charts/latency.svg"));
    assert!(lat.contains("seconds per item") && lat.contains("four_class"));
    let conf = names.iter().find(|n| n.starts_with("confusion_")).unwrap();
    let conf = read(&dir.path().join("charts").join(conf));
    for text in [
        "ALLOW",
        "ESCALATION",
        "DENY",
        "REFUSE",
        "unparseable",
        "predicted",
        "true class",
    ] {
        assert!(conf.contains(text), "confusion chart lacks {text:?}");
    }

    // Markdown.
    let md = read(&files.markdown);
    assert!(md.starts_with("# A/B test: A vs B"));
    assert!(md.contains("/models/base.gguf") && md.contains("ab12cd34"));
    assert!(md.contains("http://localhost:8080/v1"));
    let mmlu = report.tasks.iter().find(|t| t.task == "mmlu").unwrap();
    assert!(md.contains(&format!(
        "| mmlu | 300 | {} | {} |",
        format_rate(mmlu.acc_a.value),
        format_rate(mmlu.acc_b.value)
    )));
    assert!(md.contains(&format_p(mmlu.mcnemar.p_value)));
    assert!(md.contains(&format_p(mmlu.p_holm)));
    assert!(md.contains(&verdict_words(mmlu.verdict, 0.05)));
    assert!(md.contains("B better"), "mmlu: B clearly better\n{md}");
    assert!(md.contains("no significant difference (α = 0.05)"));
    assert!(md.contains("%"), "relative delta in percent");
    let fc = report
        .tasks
        .iter()
        .find(|t| t.task == "four_class")
        .unwrap();
    let cc = fc.classes.as_ref().unwrap();
    assert!(md.contains(&format_rate(cc.macro_f1_a)) && md.contains(&format_rate(cc.macro_f1_b)));
    assert!(
        md.contains("| true \\\\ predicted | ALLOW | ESCALATION | DENY | REFUSE | unparseable |")
    );
    let row0: Vec<String> = cc.confusion_a.counts[0]
        .iter()
        .map(u64::to_string)
        .collect();
    assert!(md.contains(&format!("| ALLOW | {} |", row0.join(" | "))));
    for chart in &names {
        assert!(
            md.contains(&format!("](charts/{chart})")),
            "md embeds {chart}"
        );
    }
    assert!(md.contains("resamples: 2000") && md.contains("seed: 7") && md.contains(command));
    assert!(
        md.contains("odd\\<b\\>\\&\"name"),
        "task name escaped in Markdown"
    );
    assert!(!md.contains("<b>"));

    // HTML.
    let html = read(&files.html);
    assert!(html.starts_with("<!DOCTYPE html>"));
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"));
    for external in ["src=", "href=", "url(", "@import", "<link", "xmlns=\"http"] {
        assert!(!lower.contains(external), "HTML has {external}");
    }
    assert!(html.matches("<svg").count() >= names.len());
    assert!(html.contains("<style>"));
    assert!(html.contains("odd&lt;b&gt;&amp;&quot;name"));
    assert!(!html.contains(ODD) && !html.contains("<b>"));
    assert!(html.contains(&format_rate(mmlu.acc_a.value)) && html.contains("B better"));
    assert!(
        html.contains("http://example.com/x"),
        "command shown as text"
    );
}

#[test]
fn report_without_four_class_task_has_no_class_charts() {
    let mut rng = Lcg(1);
    let (a, b) = choice_task("mmlu", 50, 0.5, 0.5, &mut rng);
    let tasks = compare(
        &BTreeMap::from([("mmlu".to_string(), a)]),
        &BTreeMap::from([("mmlu".to_string(), b)]),
        AbSettings {
            resamples: 2000,
            ..AbSettings::default()
        },
    )
    .unwrap();
    let report = AbReport {
        a: serde_json::Value::Null,
        b: serde_json::Value::Null,
        settings: AbSettings::default(),
        tasks,
    };
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&report, "so8t ab a b", &dir.path().join("nested/out")).unwrap();
    assert_eq!(files.charts.len(), 2, "{:?}", files.charts);
    let md = read(&files.markdown);
    assert!(!md.contains("macro-F1") && md.contains("no run.json"));
}
