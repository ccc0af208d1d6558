//! The benchmark chart: each server's ratio to the C fork baseline, per metric, as grouped bars
//! around a line at 1.0. Drawn with plotters' SVG backend.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(214, 39, 40),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// `rows`: per server, (metric, ratio) in the same metric order.
pub fn draw(path: &Path, rows: &[(&str, Vec<(&str, f64)>)]) -> Result<()> {
    let metrics: Vec<&str> = rows
        .first()
        .map(|(_, r)| r.iter().map(|(m, _)| *m).collect())
        .unwrap_or_default();
    let top = rows
        .iter()
        .flat_map(|(_, r)| r.iter().map(|(_, v)| *v))
        .filter(|v| v.is_finite())
        .fold(1.5f64, f64::max)
        * 1.1;
    let area = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    area.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&area)
        .caption(
            "forkecho benchmark: ratio to the C fork-per-connection baseline",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..metrics.len() as f64, 0f64..top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(metrics.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 && i < metrics.len() {
                metrics[i].to_string()
            } else {
                String::new()
            }
        })
        .y_desc("ratio (1.0 = C baseline)")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let width = 0.8 / rows.len().max(1) as f64;
    for (s, (name, ratios)) in rows.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            // A ratio against a zero baseline (too short a run to measure) is not drawn.
            .draw_series(
                ratios
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, v))| v.is_finite())
                    .map(|(m, (_, v))| {
                        let x0 = m as f64 + 0.1 + s as f64 * width;
                        Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v.max(0.0))], color.filled())
                    }),
            )
            .map_err(|e| anyhow!("{e}"))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1.0), (metrics.len() as f64, 1.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    area.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
