//! SVG plots of cost against scale, one line per contender (plotters).

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use plotters::prelude::*;

use super::report::{METRICS, Results, stats};

/// One plot per workload metric, and one for the control plane.
pub fn all(dir: &Path, r: &Results) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for metric in &METRICS {
        let series: Vec<(String, Vec<(f64, f64)>)> = r
            .contenders()
            .into_iter()
            .map(|c| {
                let points = r
                    .data
                    .iter()
                    .filter(|row| row.contender == c)
                    .map(|row| (row.scale as f64, stats(row, metric).0))
                    .collect();
                (c.label().to_owned(), points)
            })
            .collect();
        let path = dir.join(format!("{}.svg", metric.file));
        draw(&path, metric.title, metric.unit, &series, false)?;
        written.push(path);
    }
    let control = vec![
        (
            "proxy cold sync".to_owned(),
            r.control
                .iter()
                .map(|c| (c.scale as f64, c.cold_sync_ms))
                .collect(),
        ),
        (
            "iptables-restore".to_owned(),
            loads(r, super::Contender::Iptables),
        ),
        ("nft -f".to_owned(), loads(r, super::Contender::Nftables)),
    ];
    let path = dir.join("control-plane.svg");
    // Three orders of magnitude apart: a log scale keeps the proxy visible.
    draw(
        &path,
        "Time to program N Services from cold",
        "ms (log scale)",
        &control,
        true,
    )?;
    written.push(path);
    Ok(written)
}

fn loads(r: &Results, c: super::Contender) -> Vec<(f64, f64)> {
    r.loads
        .iter()
        .filter(|l| l.contender == c)
        .map(|l| (l.scale as f64, l.seconds * 1e3))
        .collect()
}

/// Draws `series` against N on a log x axis. With `log_y`, values are drawn
/// as their decimal logarithm and labelled as powers of ten.
fn draw(
    path: &Path,
    title: &str,
    unit: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_y: bool,
) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let y_of = |y: f64| if log_y { y.max(0.1).log10() } else { y };
    let series: Vec<(&String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, pts)| (label, pts.iter().map(|&(x, y)| (x, y_of(y))).collect()))
        .collect();
    let points = series.iter().flat_map(|(_, p)| p);
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max).max(10.0);
    let top = points.clone().map(|p| p.1).fold(f64::MIN, f64::max);
    let (y_min, y_max) = if log_y {
        let bottom = points.map(|p| p.1).fold(f64::MAX, f64::min);
        // Whole decades, and one more on top for the legend.
        (bottom.floor().min(0.0), top.ceil() + 1.0)
    } else {
        // Head room above the highest point for the legend.
        (0.0, top.max(1e-9) * 1.45)
    };
    let root = SVGBackend::new(path, (820, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..x_max * 1.5).log_scale(), y_min..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("Services (log scale)")
        .y_desc(unit)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_labels(if log_y {
            (y_max - y_min) as usize + 1
        } else {
            10
        })
        .y_label_formatter(&|y| {
            if log_y {
                let v = 10f64.powf(*y);
                if v < 1.0 {
                    format!("{v:.1}")
                } else {
                    format!("{}", v.round())
                }
            } else if y_max >= 100.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
