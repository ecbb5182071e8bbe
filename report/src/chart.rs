//! The SVG chart: per function, memory used over time with one line per execution environment
//! (and the configured size), beside the growing sites as horizontal bars. Plain SVG 1.1, no
//! script; every series carries `data-log-stream`, every bar `data-site`, so it can be checked.

use crate::model::{FunctionReport, Report};
use crate::render::{bytes, short_stream};
use crate::window::format_clock;
use std::fmt::Write as _;

const WIDTH: f64 = 1180.0;
const BLOCK: f64 = 390.0;
/// Memory panel: left, right, top, bottom (inside a block).
const MEM: (f64, f64, f64, f64) = (70.0, 620.0, 50.0, 270.0);
/// Bars panel.
const BARS: (f64, f64, f64, f64) = (700.0, 1160.0, 50.0, 270.0);
/// Environments drawn at most per function (the ones using the most memory).
pub const MAX_SERIES: usize = 12;
const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939",
];

/// A round tick step (1, 2 or 5 × 10^k) giving about five ticks, and the axis top it reaches.
fn nice_axis(top: f64) -> (f64, f64) {
    let rough = (top / 5.0).max(1e-9);
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    (step, (top / step).ceil() * step)
}

/// Escapes text and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The SVG document for the whole report: one row per function, memory lines on the left,
/// growing-site bars on the right.
pub fn svg(r: &Report) -> String {
    let height = BLOCK * r.functions.len().max(1) as f64 + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<title>Memory report, namespace {}, {} to {}</title>"#,
        esc(&r.namespace),
        esc(&r.window.start),
        esc(&r.window.end)
    );
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    for (i, f) in r.functions.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<g class="function" data-function="{}" transform="translate(0,{})">"#,
            esc(&f.function),
            i as f64 * BLOCK + 10.0
        );
        memory_panel(&mut out, f);
        bars_panel(&mut out, f);
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

fn axes(out: &mut String, (l, r, t, b): (f64, f64, f64, f64), x_label: &str, y_label: &str) {
    let _ = writeln!(
        out,
        r#"<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="black"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text class="axis-label x" x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (l + r) / 2.0,
        b + 34.0,
        esc(x_label)
    );
    if !y_label.is_empty() {
        let _ = writeln!(
            out,
            r#"<text class="axis-label y" x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"#,
            l - 48.0,
            (t + b) / 2.0,
            l - 48.0,
            (t + b) / 2.0,
            esc(y_label)
        );
    }
}

fn memory_panel(out: &mut String, f: &FunctionReport) {
    let (l, r, t, b) = MEM;
    let _ = writeln!(
        out,
        r#"<text class="title" x="{l}" y="20" font-size="14" font-weight="bold">{}: memory used per environment</text>"#,
        esc(&f.function)
    );
    axes(out, MEM, "time (UTC)", "max memory used (MiB)");
    let mut series: Vec<_> = f
        .memory_series
        .iter()
        .filter(|s| !s.points.is_empty())
        .collect();
    if series.is_empty() {
        let _ = writeln!(
            out,
            r#"<text class="empty" x="{}" y="{}" text-anchor="middle">no report lines in the window</text>"#,
            (l + r) / 2.0,
            (t + b) / 2.0
        );
        return;
    }
    let peak = |s: &crate::model::EnvironmentSeries| {
        s.points
            .iter()
            .map(|p| p.max_memory_used_mb)
            .fold(0.0, f64::max)
    };
    series.sort_by(|a, b| peak(b).total_cmp(&peak(a)));
    let hidden = series.len().saturating_sub(MAX_SERIES);
    series.truncate(MAX_SERIES);
    let points = series.iter().flat_map(|s| s.points.iter());
    let t0 = points.clone().map(|p| p.at_ms).min().unwrap_or(0);
    let mut t1 = points.clone().map(|p| p.at_ms).max().unwrap_or(0);
    if t1 <= t0 {
        t1 = t0 + 1000;
    }
    let used = points.map(|p| p.max_memory_used_mb).fold(1.0, f64::max);
    // The configured size when it is in view; otherwise the lines would lie flat at the bottom.
    let size = f.memory_size_mb.filter(|s| *s <= used * 2.5);
    let (step, y_max) = nice_axis(size.unwrap_or(0.0).max(used) * 1.1);
    let x = |ms: i64| l + (ms - t0) as f64 / (t1 - t0) as f64 * (r - l);
    let y = |mb: f64| b - mb / y_max * (b - t);
    let fine = t1 - t0 < 60_000;
    for k in 0..=4 {
        let at = t0 + ((t1 - t0) as f64 * f64::from(k) / 4.0) as i64;
        let _ = writeln!(
            out,
            r#"<text class="tick x" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(at),
            b + 16.0,
            format_clock(at, fine)
        );
    }
    let mut mb = 0.0;
    while mb <= y_max + 1e-9 {
        let _ = writeln!(
            out,
            r##"<text class="tick y" x="{}" y="{:.1}" text-anchor="end">{mb:.0}</text><line x1="{l}" y1="{1:.1}" x2="{r}" y2="{1:.1}" stroke="#eee"/>"##,
            l - 6.0,
            y(mb) + 4.0,
        );
        mb += step;
    }
    match (size, f.memory_size_mb) {
        (Some(size), _) => {
            let _ = writeln!(
                out,
                r##"<line class="memory-size" x1="{l}" y1="{0:.1}" x2="{r}" y2="{0:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{r}" y="{1:.1}" text-anchor="end" fill="#555">memory size {size:.0} MiB</text>"##,
                y(size),
                y(size) - 4.0
            );
        }
        (None, Some(size)) => {
            let _ = writeln!(
                out,
                r##"<text class="memory-size" x="{r}" y="{}" text-anchor="end" fill="#555">memory size {size:.0} MiB (above the chart)</text>"##,
                t - 6.0
            );
        }
        (None, None) => {}
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.at_ms), y(p.max_memory_used_mb)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline class="series" data-log-stream="{}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            esc(&s.log_stream),
            pts.join(" ")
        );
        for p in &s.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                x(p.at_ms),
                y(p.max_memory_used_mb)
            );
        }
        let _ = writeln!(
            out,
            r#"<text class="legend" x="{}" y="{}" fill="{colour}">{}</text>"#,
            l + (i % 4) as f64 * 137.0,
            b + 54.0 + (i / 4) as f64 * 14.0,
            esc(&short_stream(&s.log_stream))
        );
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            r#"<text class="legend" x="{l}" y="{}">+{hidden} more environments not drawn</text>"#,
            b + 54.0 + 3.0 * 14.0
        );
    }
}

fn bars_panel(out: &mut String, f: &FunctionReport) {
    let (l, r, t, b) = BARS;
    let _ = writeln!(
        out,
        r#"<text class="title" x="{l}" y="20" font-size="14" font-weight="bold">growing sites (ranked across environments)</text>"#
    );
    axes(out, BARS, "bytes kept per invocation (KiB)", "");
    let sites = f.growing_sites.as_deref().unwrap_or(&[]);
    let shown: Vec<_> = sites.iter().take(8).collect();
    if shown.is_empty() {
        let _ = writeln!(
            out,
            r#"<text class="empty" x="{}" y="{}" text-anchor="middle">no growing site: no leak line names one</text>"#,
            (l + r) / 2.0,
            (t + b) / 2.0
        );
        return;
    }
    let max = shown.iter().map(|s| s.bytes_per_invoke).fold(1.0, f64::max);
    let row_h = (b - t) / shown.len().max(4) as f64;
    for (i, s) in shown.iter().enumerate() {
        let w = s.bytes_per_invoke.max(0.0) / max * (r - l - 90.0);
        let top = t + i as f64 * row_h + 4.0;
        let label = {
            let chars: Vec<char> = s.site.chars().collect();
            if chars.len() > 48 {
                format!("…{}", chars[chars.len() - 47..].iter().collect::<String>())
            } else {
                s.site.clone()
            }
        };
        let _ = writeln!(
            out,
            r##"<rect class="bar" data-site="{}" x="{l}" y="{top:.1}" width="{w:.1}" height="{:.1}" fill="#d62728" fill-opacity="0.75"/>"##,
            esc(&s.site),
            row_h * 0.45
        );
        let _ = writeln!(
            out,
            r#"<text class="bar-label" x="{}" y="{:.1}">{} — {} in {} env.</text>"#,
            l + 4.0,
            top + row_h * 0.45 + 12.0,
            esc(&label),
            esc(&bytes(s.bytes_per_invoke)),
            s.environments
        );
    }
    for k in 0..=2 {
        let frac = f64::from(k) / 2.0;
        let _ = writeln!(
            out,
            r#"<text class="tick x" x="{:.1}" y="{}" text-anchor="middle">{:.1}</text>"#,
            l + frac * (r - l - 90.0),
            b + 16.0,
            max * frac / 1024.0
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn axes_use_round_steps() {
        assert_eq!(super::nice_axis(47.3), (10.0, 50.0));
        assert_eq!(super::nice_axis(563.2), (200.0, 600.0));
        assert_eq!(super::nice_axis(3.0), (1.0, 3.0));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(super::esc(r#"<a & "b">"#), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
