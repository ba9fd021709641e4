//! The report's content as document blocks: models, summary, latency, the four-class task,
//! settings and command; charts rendered on the way.

use std::io;

use serde_json::Value;

use super::charts::{self, Chart, Group};
use super::latency;
use super::render::{Block, Span};
use super::{format_ci, format_p, format_rate, verdict_words, TITLE};
use crate::ab::{AbReport, TaskComparison};
use crate::run::CLASS_NAMES;
use crate::stats::{BootstrapCi, ConfusionMatrix};

fn seconds(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3} s")
    } else {
        "n/a".into()
    }
}

fn signed_seconds(x: f64) -> String {
    if x.is_finite() {
        format!("{x:+.3} s")
    } else {
        "n/a".into()
    }
}

/// The model's display name from a run.json: store name, path, URL or model id.
fn model_name(run: &Value) -> String {
    let m = &run["model"];
    for key in ["store_model", "path", "url", "model", "name"] {
        if let Some(s) = m[key].as_str().filter(|s| !s.is_empty()) {
            return s.to_string();
        }
    }
    m.as_str().unwrap_or("unknown model").to_string()
}

/// A short legend label: `A: file-name` (a path is cut to its last component).
fn legend_label(side: &str, run: &Value) -> String {
    let name = model_name(run);
    let tail = name
        .rsplit(['/', '\\'])
        .find(|s| !s.is_empty())
        .unwrap_or(&name);
    let tail: String = if tail.chars().count() > 24 {
        tail.chars().take(23).chain(['…']).collect()
    } else {
        tail.to_string()
    };
    format!("{side}: {tail}")
}

fn model_item(side: &str, run: &Value) -> Vec<Span> {
    let m = &run["model"];
    let mut spans = vec![
        Span::Bold(format!("{side}:")),
        Span::Text(" ".into()),
        Span::Code(model_name(run)),
    ];
    let mut field = |label: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            spans.push(Span::Text(format!("; {label} ")));
            spans.push(Span::Code(v.to_string()));
        }
    };
    if m["store_model"].is_string() {
        field("path", m["path"].as_str());
    }
    if m["store_model"].is_string() || m["path"].is_string() {
        field("URL", m["url"].as_str());
    }
    field("sha256", m["sha256"].as_str());
    field("backend", run["backend"].as_str().or(m["backend"].as_str()));
    if run.is_null() {
        spans.push(Span::Text(" (no run.json)".into()));
    }
    spans
}

fn confusion_table(cm: &ConfusionMatrix) -> Block {
    let mut header = vec!["true \\ predicted".to_string()];
    header.extend(CLASS_NAMES.iter().take(cm.n_classes).map(|s| s.to_string()));
    header.push("unparseable".into());
    let rows = cm
        .counts
        .iter()
        .enumerate()
        .map(|(r, row)| {
            let mut cells = vec![CLASS_NAMES.get(r).copied().unwrap_or("?").to_string()];
            cells.extend(row.iter().map(u64::to_string));
            cells
        })
        .collect();
    Block::Table { header, rows }
}

fn chart_block(c: Chart) -> Block {
    Block::Chart {
        file: c.file,
        alt: c.title,
        svg: c.svg,
    }
}

fn para(text: impl Into<String>) -> Block {
    Block::Para(vec![Span::Text(text.into())])
}

/// The report as document blocks (charts rendered).
pub fn document(report: &AbReport, command: &str) -> io::Result<Vec<Block>> {
    let s = &report.settings;
    let legend = (legend_label("A", &report.a), legend_label("B", &report.b));
    let mut out = vec![
        Block::Heading(1, TITLE.into()),
        Block::Heading(2, "Models".into()),
        Block::List(vec![model_item("A", &report.a), model_item("B", &report.b)]),
        Block::Heading(2, "Summary".into()),
        para(format!(
            "Both models answered the same items. Δ = B − A. Intervals: paired percentile \
             bootstrap over items ({} resamples, seed {}). McNemar: exact test on per-item \
             correctness; Holm: adjusted across the {} task(s); verdict at α = {}.",
            s.resamples,
            s.seed,
            report.tasks.len(),
            s.alpha
        )),
    ];
    let ci_pct = |c: &BootstrapCi| format!("{:.0}% CI", 100.0 * c.confidence);
    let conf = report
        .tasks
        .first()
        .map_or("95% CI".to_string(), |t| ci_pct(&t.acc_delta));
    let rows = report
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.task.clone(),
                t.n.to_string(),
                format_rate(t.acc_a.value),
                format_rate(t.acc_b.value),
                format_ci(&t.acc_delta, false),
                t.relative
                    .as_ref()
                    .map_or("n/a (A has no item right)".into(), |r| format_ci(r, true)),
                format!("{} / {}", t.mcnemar.b01, t.mcnemar.b10),
                format_p(t.mcnemar.p_value),
                format_p(t.p_holm),
                verdict_words(t.verdict, s.alpha),
            ]
        })
        .collect();
    out.push(Block::Table {
        header: [
            "task",
            "n",
            "acc A",
            "acc B",
            &format!("Δ abs ({conf})"),
            &format!("relative Δ ({conf})"),
            "A only / B only right",
            "McNemar p",
            "Holm p",
            "verdict",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    out.push(para(
        "acc A / acc B: accuracy of each model (per-model 95% intervals ±1.96 standard errors \
         are the whiskers of the chart). Relative Δ = (acc B − acc A) / acc A.",
    ));
    let errors: Vec<&TaskComparison> = report.tasks.iter().filter(|t| t.errors != (0, 0)).collect();
    if !errors.is_empty() {
        out.push(Block::List(
            errors
                .iter()
                .map(|t| {
                    vec![Span::Text(format!(
                        "{}: {} backend error(s) in A, {} in B (counted as wrong)",
                        t.task, t.errors.0, t.errors.1
                    ))]
                })
                .collect(),
        ));
    }
    let groups: Vec<Group> = report
        .tasks
        .iter()
        .map(|t| Group {
            label: t.task.clone(),
            a: t.acc_a.value,
            b: t.acc_b.value,
            ci_a: Some((t.acc_a.low, t.acc_a.high)),
            ci_b: Some((t.acc_b.low, t.acc_b.high)),
        })
        .collect();
    out.push(chart_block(charts::grouped_bars(
        "accuracy.svg".into(),
        "Accuracy per task, A vs B (whiskers: 95% interval)".into(),
        "task",
        "accuracy",
        &groups,
        (&legend.0, &legend.1),
    )?));

    out.push(Block::Heading(2, "Latency".into()));
    out.push(Block::Table {
        header: [
            "task",
            "median A",
            "median B",
            "Δ median (B − A)",
            "Wilcoxon p",
        ]
        .map(String::from)
        .to_vec(),
        rows: report
            .tasks
            .iter()
            .map(|t| {
                let l = &t.latency;
                vec![
                    t.task.clone(),
                    seconds(l.median_a),
                    seconds(l.median_b),
                    signed_seconds(l.median_b - l.median_a),
                    l.wilcoxon
                        .as_ref()
                        .map_or("n/a".into(), |w| format_p(w.p_value)),
                ]
            })
            .collect(),
    });
    out.push(para(
        "Wilcoxon signed-rank test on the paired per-item latencies (n/a: every pair equal or too \
         few items).",
    ));
    out.push(chart_block(latency::latency_chart(
        &report.tasks,
        (&legend.0, &legend.1),
    )?));

    let class_tasks: Vec<(usize, &TaskComparison)> = report
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.classes.is_some())
        .collect();
    if !class_tasks.is_empty() {
        out.push(Block::Heading(2, "Four-class task".into()));
        out.push(Block::Table {
            header: vec![
                "task".into(),
                "macro-F1 A".into(),
                "macro-F1 B".into(),
                format!("Δ macro-F1 ({conf})"),
            ],
            rows: class_tasks
                .iter()
                .filter_map(|(_, t)| {
                    let c = t.classes.as_ref()?;
                    Some(vec![
                        t.task.clone(),
                        format_rate(c.macro_f1_a),
                        format_rate(c.macro_f1_b),
                        format_ci(&c.macro_f1_delta, false),
                    ])
                })
                .collect(),
        });
        let groups: Vec<Group> = class_tasks
            .iter()
            .filter_map(|(_, t)| {
                let c = t.classes.as_ref()?;
                Some(Group {
                    label: t.task.clone(),
                    a: c.macro_f1_a,
                    b: c.macro_f1_b,
                    ci_a: None,
                    ci_b: None,
                })
            })
            .collect();
        out.push(chart_block(charts::grouped_bars(
            "macro_f1.svg".into(),
            "Macro-F1, A vs B".into(),
            "task",
            "macro-F1",
            &groups,
            (&legend.0, &legend.1),
        )?));
        for (i, t) in class_tasks {
            let Some(c) = t.classes.as_ref() else {
                continue;
            };
            if report.tasks.iter().filter(|t| t.classes.is_some()).count() > 1 {
                out.push(Block::Heading(3, t.task.clone()));
            }
            out.push(Block::Heading(3, "Per-class precision, recall, F1".into()));
            let prf = |p: Option<&crate::stats::ClassPrf>| {
                p.map_or(["n/a".to_string(), "n/a".into(), "n/a".into()], |p| {
                    [
                        format_rate(p.precision),
                        format_rate(p.recall),
                        format_rate(p.f1),
                    ]
                })
            };
            let rows = CLASS_NAMES
                .iter()
                .enumerate()
                .map(|(k, name)| {
                    let (a, b) = (c.per_class_a.get(k), c.per_class_b.get(k));
                    let support = a.or(b).map_or(0, |p| p.support);
                    let mut row = vec![name.to_string(), support.to_string()];
                    row.extend(prf(a));
                    row.extend(prf(b));
                    row
                })
                .collect();
            out.push(Block::Table {
                header: [
                    "class", "support", "P A", "R A", "F1 A", "P B", "R B", "F1 B",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            });
            let groups: Vec<Group> = CLASS_NAMES
                .iter()
                .enumerate()
                .map(|(k, name)| Group {
                    label: name.to_string(),
                    a: c.per_class_a.get(k).map_or(0.0, |p| p.f1),
                    b: c.per_class_b.get(k).map_or(0.0, |p| p.f1),
                    ci_a: None,
                    ci_b: None,
                })
                .collect();
            out.push(chart_block(charts::grouped_bars(
                format!("per_class_f1_{}.svg", charts::slug(i, &t.task)),
                format!("Per-class F1, {}, A vs B", t.task),
                "class",
                "F1",
                &groups,
                (&legend.0, &legend.1),
            )?));
            out.push(Block::Heading(
                3,
                "Confusion matrices (rows: true class)".into(),
            ));
            out.push(Block::Para(vec![Span::Bold("A".into())]));
            out.push(confusion_table(&c.confusion_a));
            out.push(Block::Para(vec![Span::Bold("B".into())]));
            out.push(confusion_table(&c.confusion_b));
            out.push(para(format!(
                "Unparseable outputs: {} in A, {} in B (counted as wrong).",
                c.confusion_a.unparseable, c.confusion_b.unparseable
            )));
            out.push(chart_block(charts::confusion_chart(i, &t.task, c)?));
        }
    }

    out.push(Block::Heading(2, "Settings".into()));
    out.push(Block::List(vec![
        vec![Span::Text(format!("bootstrap resamples: {}", s.resamples))],
        vec![Span::Text(format!("seed: {}", s.seed))],
        vec![Span::Text(format!("alpha: {}", s.alpha))],
    ]));
    out.push(Block::Heading(2, "Command".into()));
    out.push(Block::Code(command.to_string()));
    Ok(out)
}
