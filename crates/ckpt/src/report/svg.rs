//! The report's charts as one SVG picture, drawn with `plotters`: a panel per metric
//! family, the checkpoints on the monitored metric's panel.

use plotters::prelude::*;

use super::data::{Report, Status};
use super::html::{bounds, clean, families, marker_position, NAME};
use crate::Failure;

const PANEL: (u32, u32) = (900, 320);

pub(crate) fn render(r: &Report) -> Result<String, Failure> {
    let families = families(&r.metrics);
    let panels = families.len().max(1);
    let mut out = String::new();
    {
        let height = PANEL
            .1
            .saturating_mul(u32::try_from(panels).unwrap_or(u32::MAX));
        let root = SVGBackend::with_string(&mut out, (PANEL.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let areas = root.split_evenly((panels, 1));
        let monitor = r.monitor.as_deref();
        let monitor_family = monitor.map(|m| m.strip_prefix("val_").unwrap_or(m));
        let monitor_series = monitor
            .and_then(|m| r.metrics.iter().find(|(n, _)| n == m))
            .map(|(_, s)| s);
        let colors = [
            RGBColor(42, 111, 219),
            RGBColor(224, 103, 43),
            RGBColor(46, 157, 87),
        ];
        for (area, (family, members)) in areas.iter().zip(&families) {
            let markers: Vec<(f64, f64, Status, bool, bool)> =
                if Some(family.as_str()) == monitor_family {
                    r.checkpoints
                        .iter()
                        .filter_map(|c| {
                            let (x, y) = marker_position(c, monitor_series)?;
                            Some((x, y, c.status, c.best, c.other_run))
                        })
                        .collect()
                } else {
                    Vec::new()
                };
            let points = members
                .iter()
                .flat_map(|&m| r.metrics[m].1.iter().copied())
                .chain(markers.iter().map(|&(x, y, ..)| (x, y)));
            let (x0, x1, y0, y1) = bounds(points);
            let mut chart = ChartBuilder::on(area)
                .caption(clean(family, NAME), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(32)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(draw_error)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .light_line_style(RGBColor(238, 240, 244))
                .draw()
                .map_err(draw_error)?;
            for (k, &m) in members.iter().enumerate() {
                let (name, series) = &r.metrics[m];
                let color = colors[k % colors.len()];
                chart
                    .draw_series(LineSeries::new(
                        series.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(draw_error)?
                    .label(clean(name, NAME))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            chart
                .draw_series(markers.iter().map(|&(x, y, status, best, other_run)| {
                    let color = match (status, best) {
                        (_, true) => RGBColor(245, 180, 0),
                        (Status::Kept, _) => RGBColor(42, 111, 219),
                        (Status::Damaged, _) => RGBColor(214, 47, 47),
                        _ => RGBColor(154, 161, 173),
                    };
                    // Saves of another run than the newest file's are drawn faded.
                    let alpha = if other_run { 0.45 } else { 1.0 };
                    let style = match (status, best) {
                        (Status::Kept | Status::Damaged, _) | (_, true) => {
                            color.mix(alpha).filled()
                        }
                        _ => color.mix(alpha).stroke_width(2),
                    };
                    Circle::new((x, y), if best { 7 } else { 5 }, style)
                }))
                .map_err(draw_error)?;
            if !members.is_empty() {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(RGBColor(201, 206, 216))
                    .draw()
                    .map_err(draw_error)?;
            }
        }
        root.present().map_err(draw_error)?;
    }
    Ok(out)
}

fn draw_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> Failure {
    Failure::from(format!("cannot draw the chart: {e}"))
}
