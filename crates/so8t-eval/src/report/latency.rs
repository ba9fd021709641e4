//! The latency chart: per-item seconds as Tukey box plots, one panel per task.

use std::io;

use plotters::prelude::*;

use super::charts::{err, label_style, short, Chart, COLOR_A, COLOR_B, FONT};
use crate::ab::TaskComparison;
use crate::stats::percentile_linear;

/// Tukey box: quartiles, whiskers at the furthest points within 1.5 IQR, outliers.
fn box_stats(v: &[f64]) -> Option<([f64; 5], Vec<f64>)> {
    let q = |p: f64| percentile_linear(v, p).ok();
    let (q1, med, q3) = (q(0.25)?, q(0.5)?, q(0.75)?);
    let iqr = q3 - q1;
    let (lo_f, hi_f) = (q1 - 1.5 * iqr, q3 + 1.5 * iqr);
    let inside = v.iter().copied().filter(|x| *x >= lo_f && *x <= hi_f);
    let lo = inside.clone().fold(f64::INFINITY, f64::min).min(q1);
    let hi = inside.fold(f64::NEG_INFINITY, f64::max).max(q3);
    let out = v
        .iter()
        .copied()
        .filter(|x| *x < lo_f || *x > hi_f)
        .collect();
    Some(([lo, q1, med, q3, hi], out))
}

/// Latency per item, one box-plot panel per task (A and B side by side, own y axis).
pub(crate) fn latency_chart(tasks: &[TaskComparison], legend: (&str, &str)) -> io::Result<Chart> {
    let title = "Latency per item (seconds): box = quartiles, whiskers = 1.5 IQR, dots = outliers"
        .to_string();
    let panel_w = 280u32;
    let mut svg = String::new();
    {
        let width = (panel_w * tasks.len().max(1) as u32).max(560);
        let root = SVGBackend::with_string(&mut svg, (width, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        // The long title (what box, whiskers and dots mean) is the caption in the report.
        let body = root
            .titled("Latency per item (seconds)", (FONT, 19))
            .map_err(err)?;
        let panels = body.split_evenly((1, tasks.len().max(1)));
        for (t, area) in tasks.iter().zip(panels.iter()) {
            let ymax = t
                .latency
                .a
                .iter()
                .chain(&t.latency.b)
                .copied()
                .filter(|x| x.is_finite())
                .fold(0.0, f64::max);
            let ymax = if ymax > 0.0 { ymax * 1.08 } else { 1.0 };
            let mut chart = ChartBuilder::on(area)
                .caption(short(&t.task, 30), (FONT, 18))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(0f64..2f64, 0f64..ymax)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_labels(8)
                .y_label_formatter(&|v| format!("{v:.3}"))
                .y_desc("seconds per item")
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 16))
                .x_desc("model")
                .draw()
                .map_err(err)?;
            for (side, color, values, name) in [
                (0, COLOR_A, &t.latency.a, legend.0),
                (1, COLOR_B, &t.latency.b, legend.1),
            ] {
                let xc = 0.5 + side as f64;
                let (px, py) = chart.backend_coord(&(xc, 0.0));
                area.draw(&Text::new(
                    if side == 0 { "A" } else { "B" }.to_string(),
                    (
                        px - area.get_base_pixel().0,
                        py - area.get_base_pixel().1 + 6,
                    ),
                    label_style(16),
                ))
                .map_err(err)?;
                let Some(([lo, q1, med, q3, hi], out)) = box_stats(values) else {
                    continue;
                };
                let w = color.stroke_width(2);
                chart
                    .draw_series([Rectangle::new(
                        [(xc - 0.25, q1), (xc + 0.25, q3)],
                        color.mix(0.35).filled(),
                    )])
                    .map_err(err)?
                    .label(name.to_string())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                    });
                chart
                    .draw_series([
                        PathElement::new(
                            vec![
                                (xc - 0.25, q1),
                                (xc + 0.25, q1),
                                (xc + 0.25, q3),
                                (xc - 0.25, q3),
                                (xc - 0.25, q1),
                            ],
                            w,
                        ),
                        PathElement::new(
                            vec![(xc - 0.25, med), (xc + 0.25, med)],
                            BLACK.stroke_width(3),
                        ),
                        PathElement::new(vec![(xc, q3), (xc, hi)], w),
                        PathElement::new(vec![(xc, q1), (xc, lo)], w),
                        PathElement::new(vec![(xc - 0.1, hi), (xc + 0.1, hi)], w),
                        PathElement::new(vec![(xc - 0.1, lo), (xc + 0.1, lo)], w),
                    ])
                    .map_err(err)?;
                chart
                    .draw_series(
                        out.into_iter()
                            .map(|y| Circle::new((xc, y), 3, color.stroke_width(1))),
                    )
                    .map_err(err)?;
            }
            // No legend: the x axis names the models, and a legend would cover the boxes.
        }
        root.present().map_err(err)?;
    }
    Ok(Chart {
        file: "latency.svg".into(),
        title,
        svg,
    })
}
