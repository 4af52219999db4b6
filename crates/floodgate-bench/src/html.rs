//! The `--html` report: one self-contained page (inline CSS and SVG, nothing fetched) with the
//! summary tables, the latency percentile spectrum and the per-second timelines.

use std::fmt::Write as _;

use crate::report::{LatencySummary, Report, TimelinePoint, api_name};
use crate::svg::{Chart, Series, escape, nice_ticks, tick_label};

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:820px}\
table{border-collapse:collapse;margin:8px 0 16px}\
td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #ddd}\
td:first-child,th:first-child{text-align:left}\
.warn{color:#a40}svg{display:block;margin:12px 0}";

/// The x position of a percentile on the log scale: log10(1 / (1 - p)).
fn percentile_x(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-9);
    -rest.log10()
}

impl Report {
    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut html = String::new();
        let title = match &self.config.label {
            Some(label) => format!("floodgate bench: {label}"),
            None => "floodgate bench".to_string(),
        };
        let _ = write!(
            html,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
            escape(&title)
        );
        let _ = writeln!(html, "<h1>{}</h1>", escape(&title));
        let _ = writeln!(
            html,
            "<p>{} ({})<br>{}</p>",
            escape(&self.config.url),
            api_name(self.config.api),
            escape(&self.describe_load())
        );
        self.html_totals(&mut html);
        self.html_latency_table(&mut html);
        self.html_errors(&mut html);
        html.push_str(&self.spectrum_chart().render());
        html.push('\n');
        let (throughput, latency) = self.timeline_charts();
        html.push_str(&throughput.render());
        html.push('\n');
        html.push_str(&latency.render());
        html.push('\n');
        for warning in &self.warnings {
            let _ = writeln!(html, "<p class=\"warn\">warning: {}</p>", escape(warning));
        }
        html.push_str("</body></html>\n");
        html
    }

    fn html_totals(&self, html: &mut String) {
        let t = &self.totals;
        let _ = writeln!(
            html,
            "<table><tr><th>sent</th><th>ok</th><th>errors</th><th>dropped</th><th>ok/s</th><th>sent/s</th><th>elapsed s</th></tr>\
             <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td></tr></table>",
            t.sent, t.ok, t.errors, t.dropped, t.ok_per_s, t.sent_per_s, t.elapsed_s
        );
    }

    fn html_latency_table(&self, html: &mut String) {
        html.push_str("<table><tr><th></th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n");
        for (name, summary) in self.summaries() {
            let _ = match summary {
                Some(s) => writeln!(
                    html,
                    "<tr><td>{name}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                    s.count, s.mean, s.p50, s.p90, s.p99, s.p999, s.max
                ),
                None => writeln!(html, "<tr><td>{name}</td><td>0</td><td colspan=\"6\"></td></tr>"),
            };
        }
        html.push_str("</table>\n");
    }

    fn html_errors(&self, html: &mut String) {
        let lines = self.error_lines();
        if lines.is_empty() {
            html.push_str("<p>No errors.</p>\n");
            return;
        }
        html.push_str("<table><tr><th>error</th><th>count</th></tr>\n");
        for (text, count) in lines {
            let _ = writeln!(html, "<tr><td>{}</td><td>{count}</td></tr>", escape(&text));
        }
        html.push_str("</table>\n");
    }

    /// Latency by percentile on the usual log scale, for total latency and (streams) TTFT.
    fn spectrum_chart(&self) -> Chart {
        let series_of = |name: &str, color, summary: Option<&LatencySummary>| {
            summary.map(|s| Series {
                name: name.to_string(),
                color,
                points: s.spectrum.iter().map(|p| (percentile_x(p.percentile), p.ms)).collect(),
            })
        };
        let series: Vec<Series> = [
            series_of("total latency", "#1f77b4", self.latency_ms.as_ref()),
            series_of("time to first token", "#ff7f0e", self.ttft_ms.as_ref()),
        ]
        .into_iter()
        .flatten()
        .collect();
        // The axis always reaches 99.99 % so that reports compare at a glance; a line stops
        // where its sample count stops supporting percentiles.
        let x_max = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(percentile_x(99.99), f64::max)
            .min(5.0);
        let x_ticks = [(0.0, "0%"), (50.0, "50%"), (90.0, "90%"), (99.0, "99%"), (99.9, "99.9%")]
            .into_iter()
            .chain([(99.99, "99.99%"), (99.999, "99.999%")])
            .map(|(p, label)| (percentile_x(p), label.to_string()))
            .filter(|(x, _)| *x <= x_max + 1e-9)
            .collect();
        Chart {
            title: "Latency by percentile".into(),
            x_label: "percentile".into(),
            y_label: "ms".into(),
            x_range: (0.0, x_max),
            x_ticks,
            series,
        }
    }

    /// Completions per second (whole measured seconds only: the partial last one and the
    /// drain after the duration would read as a collapse), and p50/p99 per second (all of it).
    fn timeline_charts(&self) -> (Chart, Chart) {
        let whole = self.config.duration_s.floor() as usize;
        let measured = if whole >= 1 {
            &self.timeline[..whole.min(self.timeline.len())]
        } else {
            &self.timeline[..]
        };
        let rate_series = |name: &str, color, f: fn(&TimelinePoint) -> u64| Series {
            name: name.to_string(),
            color,
            points: measured.iter().map(|p| (p.second as f64, f(p) as f64)).collect(),
        };
        let mut rate = vec![rate_series("ok/s", "#2ca02c", |p| p.ok)];
        if self.totals.errors > 0 || self.totals.dropped > 0 {
            rate.push(rate_series("errors/s", "#d62728", |p| p.errors));
            rate.push(rate_series("dropped/s", "#9467bd", |p| p.dropped));
        }
        let latency_series = |name: &str, color, f: fn(&TimelinePoint) -> Option<f64>| Series {
            name: name.to_string(),
            color,
            points: self
                .timeline
                .iter()
                .filter_map(|p| f(p).map(|y| (p.second as f64, y)))
                .collect(),
        };
        let throughput = Chart {
            title: "Throughput per second".into(),
            x_label: "second".into(),
            y_label: "requests/s".into(),
            x_range: (0.0, 0.0),
            x_ticks: Vec::new(),
            series: rate,
        };
        let latency = Chart {
            title: "Latency per second".into(),
            x_label: "second".into(),
            y_label: "ms".into(),
            x_range: (0.0, 0.0),
            x_ticks: Vec::new(),
            series: vec![
                latency_series("p50", "#1f77b4", |p| p.p50_ms),
                latency_series("p99", "#d62728", |p| p.p99_ms),
            ],
        };
        (with_second_axis(throughput), with_second_axis(latency))
    }
}

/// Gives a timeline chart an x axis in whole seconds covering its points.
fn with_second_axis(mut chart: Chart) -> Chart {
    let last = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(1.0, f64::max);
    let ticks = nice_ticks(last);
    let step = ticks.get(1).copied().unwrap_or(1.0);
    let ticks: Vec<f64> =
        if step < 1.0 { (0..=last.ceil() as u32).map(f64::from).collect() } else { ticks };
    chart.x_range = (0.0, ticks.last().copied().unwrap_or(1.0));
    chart.x_ticks = ticks.into_iter().map(|t| (t, tick_label(t, step.max(1.0)))).collect();
    chart
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_sit_on_the_log_scale() {
        assert!((percentile_x(90.0) - 1.0).abs() < 1e-9);
        assert!((percentile_x(99.9) - 3.0).abs() < 1e-9);
        assert!((percentile_x(50.0) - 2f64.log10()).abs() < 1e-9);
        assert_eq!(percentile_x(0.0), 0.0);
    }
}
