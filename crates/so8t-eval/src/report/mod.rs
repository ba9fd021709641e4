//! The A/B report (spec §7): `report.md`, `report.html` and `charts/*.svg` from an
//! [`AbReport`].
//!
//! Charts are drawn with `plotters` (the workspace's chart crate) through its SVG backend only,
//! without the `ttf` feature: the SVG backend writes text as `<text>` elements and needs font
//! metrics only for a rough layout estimate, which `plotters` provides without any font file, so
//! no system font and no bundled font are needed (see [`charts`]).
//!
//! The Markdown and the HTML are rendered from one document model ([`render::Block`]) so they
//! carry the same content; the HTML is a single self-contained page (inline CSS, inlined SVGs,
//! no scripts, no external resources). User-controlled text (task names, model paths, the
//! command line) is escaped in HTML, SVG and Markdown.

pub mod charts;
mod document;
mod latency;
pub mod render;

use std::io;
use std::path::{Path, PathBuf};

use crate::ab::AbReport;
use crate::run::write_atomic;
use crate::stats::{BootstrapCi, Verdict};
pub use document::document;
use render::Block;

/// The files [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// `charts/*.svg`, in the order they appear in the report.
    pub charts: Vec<PathBuf>,
}

/// The report's title.
pub const TITLE: &str = "A/B test: A vs B";

/// Writes `report.md`, `report.html` and `charts/*.svg` into `out_dir` (created if needed), each
/// file atomically. `command` is the command line shown in the report.
pub fn write_report(report: &AbReport, command: &str, out_dir: &Path) -> io::Result<ReportFiles> {
    let blocks = document(report, command)?;
    let mut chart_paths = Vec::new();
    for b in &blocks {
        if let Block::Chart { file, svg, .. } = b {
            let path = out_dir.join("charts").join(file);
            write_atomic(&path, svg.as_bytes())?;
            chart_paths.push(path);
        }
    }
    let markdown = out_dir.join("report.md");
    write_atomic(&markdown, render::to_markdown(&blocks).as_bytes())?;
    let html = out_dir.join("report.html");
    write_atomic(&html, render::to_html(TITLE, &blocks).as_bytes())?;
    Ok(ReportFiles {
        markdown,
        html,
        charts: chart_paths,
    })
}

/// A p-value as the report prints it: four decimals, scientific notation below 0.001, "n/a"
/// when not a number.
pub fn format_p(p: f64) -> String {
    if !p.is_finite() {
        "n/a".into()
    } else if p < 0.001 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

/// A proportion (accuracy, F1) as the report prints it: four decimals.
pub fn format_rate(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "n/a".into()
    }
}

/// A delta with its interval: `+0.0500 (-0.0200, +0.1200)`; `percent` prints ×100 with `%`.
pub fn format_ci(ci: &BootstrapCi, percent: bool) -> String {
    let f = |x: f64| {
        if !x.is_finite() {
            "n/a".to_string()
        } else if percent {
            format!("{:+.1}%", 100.0 * x)
        } else {
            format!("{x:+.4}")
        }
    };
    format!("{} ({}, {})", f(ci.estimate), f(ci.low), f(ci.high))
}

/// The verdict in plain words.
pub fn verdict_words(v: Verdict, alpha: f64) -> String {
    match v {
        Verdict::BBetter => "B better".into(),
        Verdict::BWorse => "B worse".into(),
        Verdict::NoSignificantDifference => format!("no significant difference (α = {alpha})"),
    }
}
