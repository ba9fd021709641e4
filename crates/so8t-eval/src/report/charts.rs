//! The report's SVG charts, drawn with `plotters` (SVG backend, no `ttf` feature: text becomes
//! SVG `<text>` elements that the viewer renders with its own fonts, so no font file is needed;
//! `plotters` only estimates text widths for layout). `plotters` escapes text it writes.
//!
//! Category axes (tasks, classes, A/B) are labelled by hand at the pixel positions of the groups,
//! since `plotters` picks numeric tick positions itself.

use std::io;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ab::ClassComparison;
use crate::run::CLASS_NAMES;

/// Colour of model A.
pub(crate) const COLOR_A: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// Colour of model B.
pub(crate) const COLOR_B: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
pub(crate) const FONT: &str = "sans-serif";

/// One chart of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// File name under `charts/` (e.g. `accuracy.svg`).
    pub file: String,
    /// Title, also the image's alternative text.
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

pub(crate) fn err<E: std::fmt::Debug>(e: E) -> io::Error {
    io::Error::other(format!("drawing a chart: {e:?}"))
}

/// A file-name-safe form of a task name, prefixed by its index so names stay unique.
pub(crate) fn slug(index: usize, task: &str) -> String {
    let clean: String = task
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{index}_{clean}")
}

pub(crate) fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub(crate) fn label_style(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top))
}

/// One group of two bars (A, B) with optional CI whiskers.
pub(crate) struct Group {
    pub label: String,
    pub a: f64,
    pub b: f64,
    pub ci_a: Option<(f64, f64)>,
    pub ci_b: Option<(f64, f64)>,
}

/// Grouped bars A vs B on a 0–1 axis, with whiskers where a CI is given.
pub(crate) fn grouped_bars(
    file: String,
    title: String,
    x_desc: &str,
    y_desc: &str,
    groups: &[Group],
    legend: (&str, &str),
) -> io::Result<Chart> {
    let width = (160 + 150 * groups.len() as u32).max(560);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = groups.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(short(&title, 90), (FONT, 24))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n, 0f64..1f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(11)
            .y_label_formatter(&|v| format!("{v:.1}"))
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(err)?;
        for (side, color, name) in [(0, COLOR_A, legend.0), (1, COLOR_B, legend.1)] {
            let x0 = |i: usize| i as f64 + 0.12 + 0.38 * side as f64;
            let bars = groups.iter().enumerate().map(|(i, g)| {
                let v = if side == 0 { g.a } else { g.b };
                Rectangle::new(
                    [(x0(i), 0.0), (x0(i) + 0.36, v.clamp(0.0, 1.0))],
                    color.filled(),
                )
            });
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(name.to_string())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            for (i, g) in groups.iter().enumerate() {
                let (v, ci) = if side == 0 {
                    (g.a, g.ci_a)
                } else {
                    (g.b, g.ci_b)
                };
                let xc = x0(i) + 0.18;
                if let Some((lo, hi)) = ci {
                    let (lo, hi) = (lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0));
                    let w = BLACK.stroke_width(1);
                    chart
                        .draw_series([
                            PathElement::new(vec![(xc, lo), (xc, hi)], w),
                            PathElement::new(vec![(xc - 0.06, lo), (xc + 0.06, lo)], w),
                            PathElement::new(vec![(xc - 0.06, hi), (xc + 0.06, hi)], w),
                        ])
                        .map_err(err)?;
                }
                let top = ci.map_or(v, |(_, hi)| hi.max(v)).clamp(0.0, 0.94) + 0.01;
                let style = TextStyle::from((FONT, 15).into_font())
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom));
                chart
                    .draw_series([Text::new(format!("{v:.3}"), (xc, top), style)])
                    .map_err(err)?;
            }
        }
        for (i, g) in groups.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                short(&g.label, 28),
                (px, py + 6),
                label_style(16),
            ))
            .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 16))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Chart { file, title, svg })
}

/// Draws one confusion-matrix heatmap into `area` (pixel coordinates).
fn heatmap(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    cm: &crate::stats::ConfusionMatrix,
    color: RGBColor,
) -> io::Result<()> {
    let (cell_w, cell_h, left, top) = (84, 40, 112, 78);
    area.draw(&Text::new(
        title.to_string(),
        (left + cell_w * 5 / 2, 8),
        label_style(21),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        "predicted".to_string(),
        (left + cell_w * 5 / 2, 34),
        label_style(17),
    ))
    .map_err(err)?;
    let max = cm
        .counts
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let cols = cm.n_classes + 1;
    for c in 0..cols {
        let name = CLASS_NAMES
            .get(c)
            .copied()
            .filter(|_| c < cm.n_classes)
            .unwrap_or("unparseable");
        let x = left + cell_w * c as i32 + cell_w / 2;
        area.draw(&Text::new(name.to_string(), (x, top - 20), label_style(14)))
            .map_err(err)?;
    }
    let right = TextStyle::from((FONT, 14).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    for (r, row) in cm.counts.iter().enumerate() {
        let y = top + cell_h * r as i32;
        let name = CLASS_NAMES.get(r).copied().unwrap_or("?");
        area.draw(&Text::new(
            name.to_string(),
            (left - 6, y + cell_h / 2),
            right.clone(),
        ))
        .map_err(err)?;
        for (c, &count) in row.iter().enumerate() {
            let x = left + cell_w * c as i32;
            let t = count as f64 / max;
            let mix = |ch: u8| (255.0 - (255.0 - ch as f64) * t).round() as u8;
            let fill = RGBColor(mix(color.0), mix(color.1), mix(color.2));
            area.draw(&Rectangle::new(
                [(x, y), (x + cell_w, y + cell_h)],
                fill.filled(),
            ))
            .map_err(err)?;
            area.draw(&Rectangle::new(
                [(x, y), (x + cell_w, y + cell_h)],
                BLACK.mix(0.3),
            ))
            .map_err(err)?;
            let ink = if t > 0.55 { WHITE } else { BLACK };
            let style = TextStyle::from((FONT, 18).into_font())
                .color(&ink)
                .pos(Pos::new(HPos::Center, VPos::Center));
            area.draw(&Text::new(
                count.to_string(),
                (x + cell_w / 2, y + cell_h / 2),
                style,
            ))
            .map_err(err)?;
        }
    }
    let rows = cm.counts.len() as i32;
    let mid = top + cell_h * rows / 2;
    let vertical = TextStyle::from((FONT, 16).into_font().transform(FontTransform::Rotate270))
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new("true class".to_string(), (14, mid), vertical))
        .map_err(err)?;
    Ok(())
}

/// Confusion matrices of A and B side by side as heatmaps with counts.
pub(crate) fn confusion_chart(index: usize, task: &str, cc: &ClassComparison) -> io::Result<Chart> {
    let title = format!("Confusion matrices, {task} (rows: true class, columns: predicted)");
    let rows = cc.confusion_a.counts.len().max(cc.confusion_b.counts.len()) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 110 + 40 * rows)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (left, right) = root.split_horizontally(550);
        heatmap(&left, "A", &cc.confusion_a, COLOR_A)?;
        heatmap(&right, "B", &cc.confusion_b, COLOR_B)?;
        root.present().map_err(err)?;
    }
    Ok(Chart {
        file: format!("confusion_{}.svg", slug(index, task)),
        title,
        svg,
    })
}
