//! `funion sim privacy --plots DIR`: one SVG figure per kind of row the
//! experiments place in a figure, each line with its 95 % intervals and,
//! dashed, its positive control.

use std::collections::BTreeMap;
use std::path::Path;

use funion_sim::privacy::Row;
use plotters::prelude::*;

/// How one figure is drawn: its title, its axes and whether x is on a log scale.
struct Layout {
    title: &'static str,
    x_label: &'static str,
    y_label: &'static str,
    log_x: bool,
}

fn layout(figure: &str) -> Layout {
    match figure {
        "entropy_vs_population" => Layout {
            title: "One echo: sender entropy against the population",
            x_label: "user clients N",
            y_label: "entropy H (bits); dotted: log2 N",
            log_x: true,
        },
        "advantage_vs_mu_lambda" => Layout {
            title: "Two-sender advantage against μ·λ_s",
            x_label: "mean hop delay × send rate (μ·λ_s)",
            y_label: "advantage",
            log_x: true,
        },
        "auc_vs_window" => Layout {
            title: "Active against idle: AUC against the observation window",
            x_label: "window (s)",
            y_label: "AUC",
            log_x: true,
        },
        _ => Layout {
            title: "",
            x_label: "x",
            y_label: "value",
            log_x: false,
        },
    }
}

/// One point of a line: x, value, interval, positive control.
type Point = (f64, f64, f64, f64, f64);

/// Writes `DIR/<figure>.svg` for every figure the rows name; returns the
/// files written.
pub fn write_plots(rows: &[Row], dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let mut figures: BTreeMap<&str, BTreeMap<String, Vec<Point>>> = BTreeMap::new();
    for row in rows {
        let Some(plot) = &row.plot else { continue };
        if !row.value.value.is_finite() {
            continue;
        }
        let v = &row.value;
        figures
            .entry(plot.figure)
            .or_default()
            .entry(plot.series.clone())
            .or_default()
            .push((plot.x, v.value, v.low, v.high, row.control_value));
    }
    let mut written = Vec::new();
    for (figure, mut series) in figures {
        series
            .values_mut()
            .for_each(|points| points.sort_by(|a, b| a.0.total_cmp(&b.0)));
        let path = dir.join(format!("{figure}.svg"));
        draw(&path, figure, &series)
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(
    path: &Path,
    figure: &str,
    series: &BTreeMap<String, Vec<Point>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let layout = layout(figure);
    let points = series.values().flatten();
    let finite = |x: f64| x.is_finite().then_some(x);
    let xs: Vec<f64> = points.clone().map(|p| p.0).collect();
    let ys: Vec<f64> = points
        .flat_map(|p| [p.1, p.2, p.3, p.4])
        .filter_map(finite)
        .chain(if figure == "entropy_vs_population" {
            xs.iter().map(|x| x.log2()).collect::<Vec<_>>()
        } else {
            Vec::new()
        })
        .collect();
    let (x_min, x_max) = bounds(&xs);
    let (y_min, y_max) = bounds(&ys);
    let (x_min, x_max) = if layout.log_x {
        (x_min / 1.5, x_max * 1.5)
    } else {
        pad(x_min, x_max)
    };
    let (y_min, y_max) = pad(y_min.min(0.0), y_max);

    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(layout.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(56);
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    macro_rules! plot {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .light_line_style(RGBColor(238, 238, 238))
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .x_desc(layout.x_label)
                .y_desc(layout.y_label)
                .draw()?;
            for (i, (name, line)) in series.iter().enumerate() {
                let colour = colours[i % colours.len()];
                chart
                    .draw_series(LineSeries::new(line.iter().map(|p| (p.0, p.1)), colour))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
                chart.draw_series(
                    line.iter()
                        .map(|p| Circle::new((p.0, p.1), 3, colour.filled())),
                )?;
                // The 95 % interval of each point.
                for p in line.iter().filter(|p| p.2.is_finite() && p.3.is_finite()) {
                    chart.draw_series(LineSeries::new([(p.0, p.2), (p.0, p.3)], colour))?;
                }
                let controls: Vec<(f64, f64)> = line
                    .iter()
                    .filter(|p| p.4.is_finite())
                    .map(|p| (p.0, p.4))
                    .collect();
                if !controls.is_empty() {
                    let faint = colour.mix(0.5);
                    chart
                        .draw_series(DashedLineSeries::new(controls.clone(), 6, 4, faint.into()))?
                        .label(format!("{name}: positive control"))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], faint));
                    chart.draw_series(
                        controls
                            .iter()
                            .map(|&c| TriangleMarker::new(c, 4, faint.filled())),
                    )?;
                }
            }
            if figure == "entropy_vs_population" {
                let ideal: Vec<(f64, f64)> = xs.iter().map(|&x| (x, x.log2())).collect();
                chart.draw_series(DashedLineSeries::new(ideal, 2, 3, BLACK.into()))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    if layout.log_x {
        plot!(builder.build_cartesian_2d((x_min..x_max).log_scale(), y_min..y_max)?);
    } else {
        plot!(builder.build_cartesian_2d(x_min..x_max, y_min..y_max)?);
    }
    root.present()?;
    Ok(())
}

/// An axis label: three significant figures, no float noise.
fn tick(x: &f64) -> String {
    let text = format!("{:.3}", x);
    let text = if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

fn bounds(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if low.is_finite() {
        (low, high)
    } else {
        (0.0, 1.0)
    }
}

fn pad(low: f64, high: f64) -> (f64, f64) {
    let span = (high - low).max(1e-9);
    (low - 0.05 * span, high + 0.05 * span)
}
