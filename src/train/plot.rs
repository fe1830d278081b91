//! The loss curves as an SVG file (training loss per logged step, validation loss per evaluation): readable in
//! any browser, no plotting dependency.

use std::fmt::Write;
use std::path::Path;

/// One named curve of (step, value) points, drawn in `colour`.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
}

pub fn write_svg(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 60.0, 20.0, 40.0, 40.0);
    let all: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.1.is_finite()).collect();
    let (x_max, y_min, y_max) = all
        .iter()
        .fold((1.0f64, f64::INFINITY, f64::NEG_INFINITY), |(x, lo, hi), &(px, py)| (x.max(px), lo.min(py), hi.max(py)));
    let (y_min, y_max) = if all.is_empty() {
        (0.0, 1.0)
    } else if y_max > y_min {
        (y_min, y_max)
    } else {
        (y_min - 1.0, y_max + 1.0)
    };
    let sx = |x: f64| left + x / x_max * (w - left - right);
    let sy = |y: f64| top + (y_max - y) / (y_max - y_min) * (h - top - bottom);
    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
    writeln!(svg, r#"<text x="{left}" y="24" font-size="15">{}</text>"#, escape(title))?;
    writeln!(svg, r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, h - bottom, w - right, h - bottom)?;
    writeln!(svg, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#, h - bottom)?;
    for i in 0..=4 {
        let y = y_min + (y_max - y_min) * f64::from(i) / 4.0;
        writeln!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{y:.3}</text>"#, left - 6.0, sy(y) + 4.0)?;
        let x = x_max * f64::from(i) / 4.0;
        writeln!(svg, r#"<text x="{:.1}" y="{}" text-anchor="middle">{x:.0}</text>"#, sx(x), h - bottom + 16.0)?;
    }
    writeln!(svg, r#"<text x="{}" y="{}" text-anchor="end">step</text>"#, w - right, h - 6.0)?;
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> =
            s.points.iter().filter(|p| p.1.is_finite()).map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            s.colour,
            points.join(" ")
        )?;
        let ly = top + 16.0 * i as f64;
        writeln!(
            svg,
            r#"<text x="{}" y="{ly}" text-anchor="end" fill="{}">{}</text>"#,
            w - right,
            s.colour,
            escape(s.name)
        )?;
    }
    svg.push_str("</svg>\n");
    crate::data::io::write_atomic(path, svg.as_bytes())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
