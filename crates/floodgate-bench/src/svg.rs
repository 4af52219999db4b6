//! A small inline-SVG line chart: axes with ticks, one polyline per series, a legend. Enough for
//! the HTML report's percentile spectrum and timelines, with no plotting dependency.

use std::fmt::Write as _;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;

/// One line of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// A line chart; y always starts at zero.
#[derive(Debug, Clone)]
pub(crate) struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    /// Where to draw x ticks, and their labels.
    pub x_ticks: Vec<(f64, String)>,
    pub series: Vec<Series>,
}

/// Evenly spaced "nice" ticks (steps of 1, 2 or 5 times a power of ten) from 0 to at least
/// `max`; the last tick is the top of the axis.
pub(crate) fn nice_ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude);
    let count = (max / step).ceil() as u32;
    (0..=count).map(|i| f64::from(i) * step).collect()
}

/// A tick label with as many decimals as the step between ticks needs.
pub(crate) fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{value:.decimals$}")
}

/// Escapes text for HTML and SVG.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Chart {
    /// The chart as an `<svg>` element.
    pub(crate) fn render(&self) -> String {
        let y_max =
            self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
        let y_ticks = nice_ticks(y_max);
        let y_top = y_ticks.last().copied().unwrap_or(1.0);
        let y_step = y_ticks.get(1).copied().unwrap_or(1.0);
        let plot = Plot { x_range: self.x_range, y_top };
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
        );
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{}</text>"#,
            escape(&self.title)
        );
        self.axes(&mut svg, &plot, &y_ticks, y_step);
        for series in &self.series {
            plot.series(&mut svg, series);
        }
        self.legend(&mut svg);
        svg.push_str("</svg>");
        svg
    }

    fn axes(&self, svg: &mut String, plot: &Plot, y_ticks: &[f64], y_step: f64) {
        let (bottom, right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
        for tick in y_ticks {
            let y = plot.y(*tick);
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                y + 4.0,
                tick_label(*tick, y_step)
            );
        }
        for (value, label) in &self.x_ticks {
            let x = plot.x(*value);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#f0f0f0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                bottom + 16.0,
                escape(label)
            );
        }
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#444"/>"##
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + (right - LEFT) / 2.0,
            HEIGHT - 8.0,
            escape(&self.x_label)
        );
        let _ = write!(
            svg,
            r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + (bottom - TOP) / 2.0,
            escape(&self.y_label)
        );
    }

    fn legend(&self, svg: &mut String) {
        let mut x = WIDTH - RIGHT;
        for series in self.series.iter().rev() {
            // About 6.5 px per character at this font size, plus the swatch.
            x -= 24.0 + series.name.len() as f64 * 6.5;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="8" width="10" height="10" fill="{}"/><text x="{:.1}" y="17">{}</text>"#,
                series.color,
                x + 14.0,
                escape(&series.name)
            );
        }
    }
}

/// Maps data to pixels.
struct Plot {
    x_range: (f64, f64),
    y_top: f64,
}

impl Plot {
    fn x(&self, value: f64) -> f64 {
        let (low, high) = self.x_range;
        let span = if high > low { high - low } else { 1.0 };
        LEFT + (value - low) / span * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        let top = if self.y_top > 0.0 { self.y_top } else { 1.0 };
        HEIGHT - BOTTOM - value / top * (HEIGHT - TOP - BOTTOM)
    }

    fn series(&self, svg: &mut String, series: &Series) {
        if let [(x, y)] = series.points.as_slice() {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                self.x(*x),
                self.y(*y),
                series.color
            );
            return;
        }
        let points: Vec<String> = series
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.x(*x), self.y(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            series.color,
            points.join(" ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_cover_the_maximum_in_round_steps() {
        assert_eq!(nice_ticks(7.3), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(nice_ticks(100.0), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(0.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(tick_label(0.6000000000000001, 0.2), "0.6");
        assert_eq!(tick_label(40.0, 20.0), "40");
    }

    #[test]
    fn renders_axes_series_and_escaped_text() {
        let chart = Chart {
            title: "a <b>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_range: (0.0, 2.0),
            x_ticks: vec![(0.0, "0".into()), (2.0, "2".into())],
            series: vec![
                Series {
                    name: "one".into(),
                    color: "#123456",
                    points: vec![(0.0, 1.0), (2.0, 3.0)],
                },
                Series { name: "dot".into(), color: "#abcdef", points: vec![(1.0, 2.0)] },
            ],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt;"));
        // The y axis runs 0..3 over 236 px from y = 272: (0, 1) is at (64, 193.3), (2, 3) at
        // (744, 36).
        assert!(svg.contains(r#"points="64.0,193.3 744.0,36.0""#), "{svg}");
        assert!(svg.contains(r##"<circle cx="404.0" cy="114.7" r="3" fill="#abcdef"/>"##));
    }
}
