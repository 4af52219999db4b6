//! The results of a run: [`Report`] (serde, the `--json` schema), its plain-text table for
//! stdout, and the way it is built from the recorded statistics.
//!
//! # JSON schema (`schema` = `"floodgate-bench/1"`)
//!
//! ```text
//! {
//!   "schema": "floodgate-bench/1",
//!   "config": {
//!     "url", "api": "openai" | "anthropic", "mode": "open" | "closed" | "scenario",
//!     "rate": req/s | null, "concurrency": n | null, "users": n | null, "ramp_up_s": s | null,
//!     "duration_s", "warmup_s", "timeout_s", "stream": bool, "model", "label": text | null,
//!     "source_ips": [ip, ...], "connections": n, "max_in_flight": n | null
//!   },
//!   "totals": {
//!     "sent", "ok", "errors",       // errors = sent - ok (HTTP statuses and kinds below)
//!     "dropped",                    // open loop: never sent, the client was at its cap
//!     "elapsed_s",                  // from the start of measurement to the last answer
//!     "ok_per_s", "sent_per_s"      // divided by elapsed_s
//!   },
//!   "latency_ms" | "ttft_ms" | "gap_ms": null | {
//!     "count", "mean", "p50", "p90", "p99", "p999", "max",
//!     "spectrum": [{"percentile": 0..100, "ms"}, ...]   // the percentile spectrum
//!   },
//!   "errors_by_status": {"500": n, ...},
//!   "errors_by_kind": {"connect_refused" | "connection_reset" | "connect" |
//!                      "client_open_files" | "client_ephemeral_ports" | "timeout" | "request" |
//!                      "body_read" | "stream_incomplete" | "stream_error" | "dropped": n},
//!   "client_limits": {"open_files": n | null, "ephemeral_ports": [low, high] | null},
//!   "timeline": [{"second", "ok", "errors", "dropped", "p50_ms", "p99_ms", "in_flight"}, ...],
//!   "mix": [{"weight", "model", "stream", "think_time_s", "sent", "ok", "errors"}, ...],
//!   "warnings": [text, ...]
//! }
//! ```
//!
//! Latencies are in milliseconds and count from the intended send time (open loop) or from the
//! moment a worker wanted to send (closed loop and users). TTFT is the first content event of a
//! stream; gaps are the times between successive content events. `timeline[i]` covers second
//! `i` of measurement by completion time (a dropped arrival by its intended time); `in_flight`
//! is sampled at its end. `errors_by_kind.dropped` equals `totals.dropped`; those arrivals are
//! not in `errors`. `mix` has one entry per scenario mix entry, or one for the command line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::ErrorKind;
use crate::config::{Api, Load, Plan};
use crate::error::BenchError;
use crate::limits::ClientLimits;
use crate::stats::{Stats, quantile_ms, to_ms};

/// The schema identifier written into every report.
pub const SCHEMA: &str = "floodgate-bench/1";

/// Everything a run measured (see the module documentation for the JSON form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub config: ReportConfig,
    pub totals: Totals,
    pub latency_ms: Option<LatencySummary>,
    pub ttft_ms: Option<LatencySummary>,
    pub gap_ms: Option<LatencySummary>,
    pub errors_by_status: BTreeMap<u16, u64>,
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    pub client_limits: ClientLimits,
    pub timeline: Vec<TimelinePoint>,
    pub mix: Vec<MixReport>,
    pub warnings: Vec<String>,
}

/// How the load was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Open,
    Closed,
    Scenario,
}

/// What was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportConfig {
    pub url: String,
    pub api: Api,
    pub mode: Mode,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub users: Option<usize>,
    pub ramp_up_s: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub timeout_s: f64,
    pub stream: bool,
    pub model: String,
    pub label: Option<String>,
    pub source_ips: Vec<IpAddr>,
    pub connections: usize,
    pub max_in_flight: Option<usize>,
}

/// Request counts and rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub dropped: u64,
    pub elapsed_s: f64,
    pub ok_per_s: f64,
    pub sent_per_s: f64,
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub spectrum: Vec<SpectrumPoint>,
}

/// One point of a percentile spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpectrumPoint {
    /// 0 to 100.
    pub percentile: f64,
    pub ms: f64,
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub ok: u64,
    pub errors: u64,
    pub dropped: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub in_flight: u64,
}

/// Counts of one kind of request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixReport {
    pub weight: u32,
    pub model: String,
    pub stream: bool,
    pub think_time_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
}

impl Report {
    pub(crate) fn build(
        plan: &Plan,
        stats: &Stats,
        client_limits: ClientLimits,
        warnings: Vec<String>,
    ) -> Report {
        let errors = stats.by_status.values().sum::<u64>()
            + stats
                .by_kind
                .iter()
                .filter(|(k, _)| **k != ErrorKind::Dropped)
                .map(|(_, n)| n)
                .sum::<u64>();
        let sent = stats.ok + errors;
        let elapsed_s = plan.duration.max(stats.last_done).as_secs_f64();
        Report {
            schema: SCHEMA.to_string(),
            config: report_config(plan),
            totals: Totals {
                sent,
                ok: stats.ok,
                errors,
                dropped: stats.dropped,
                elapsed_s: round(elapsed_s, 6),
                ok_per_s: round(stats.ok as f64 / elapsed_s, 3),
                sent_per_s: round(sent as f64 / elapsed_s, 3),
            },
            latency_ms: LatencySummary::of(&stats.latency),
            ttft_ms: LatencySummary::of(&stats.ttft),
            gap_ms: LatencySummary::of(&stats.gap),
            errors_by_status: stats.by_status.clone(),
            errors_by_kind: stats.by_kind.clone(),
            client_limits,
            timeline: timeline(stats),
            mix: plan
                .mixes
                .iter()
                .zip(&stats.mix)
                .map(|(mix, count)| MixReport {
                    weight: mix.weight,
                    model: mix.model.clone(),
                    stream: mix.stream,
                    think_time_s: seconds(mix.think_time),
                    sent: count.ok + count.errors,
                    ok: count.ok,
                    errors: count.errors,
                })
                .collect(),
            warnings,
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        pretty_json(self)
    }

    /// Writes [`Report::to_json`] to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        write_file(path, self.to_json() + "\n")
    }

    /// Writes [`Report::to_html`] to `path`.
    pub fn write_html(&self, path: &Path) -> Result<(), BenchError> {
        write_file(path, self.to_html())
    }

    /// Prints [`Report::table`] to stdout.
    pub fn print_table(&self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(self.table().as_bytes())?;
        out.flush()
    }

    /// A one-line description of the load, e.g. "closed loop, 64 workers, 10 s, streaming".
    pub fn describe_load(&self) -> String {
        let c = &self.config;
        let load = match c.mode {
            Mode::Open => format!(
                "open loop, {} req/s, at most {} in flight",
                c.rate.unwrap_or_default(),
                c.max_in_flight.unwrap_or_default()
            ),
            Mode::Closed => format!("closed loop, {} workers", c.concurrency.unwrap_or_default()),
            Mode::Scenario => format!(
                "scenario, {} users (ramp-up {} s)",
                c.users.unwrap_or_default(),
                c.ramp_up_s.unwrap_or_default()
            ),
        };
        let requests = match c.mode {
            Mode::Scenario => format!("{} request kinds (see mix)", self.mix.len()),
            Mode::Open | Mode::Closed => {
                let stream = if c.stream { "streaming" } else { "non-streaming" };
                format!("{stream}, model {}", c.model)
            }
        };
        let connections = match c.mode {
            Mode::Open => String::new(),
            Mode::Closed | Mode::Scenario => format!(", {} connections", c.connections),
        };
        format!("{load}, {} s, {requests}{connections}", c.duration_s)
    }

    /// The description of an error kind, with the client limits filled in.
    pub fn describe_kind(&self, kind: ErrorKind) -> String {
        match kind {
            ErrorKind::ClientOpenFiles => self.client_limits.open_files_message(),
            ErrorKind::ClientEphemeralPorts => self.client_limits.ephemeral_ports_message(),
            other => other.describe().to_string(),
        }
    }

    /// The summary as aligned plain text.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let _ =
            writeln!(out, "floodgate bench  {} ({})", self.config.url, api_name(self.config.api));
        let _ = writeln!(out, "  {}", self.describe_load());
        if let Some(label) = &self.config.label {
            let _ = writeln!(out, "  label: {label}");
        }
        let _ = writeln!(
            out,
            "\nrequests    sent {}   ok {}   errors {}   dropped {}",
            t.sent, t.ok, t.errors, t.dropped
        );
        let _ = writeln!(
            out,
            "throughput  {:.1} ok/s   {:.1} sent/s   over {:.2} s\n",
            t.ok_per_s, t.sent_per_s, t.elapsed_s
        );
        let _ = writeln!(
            out,
            "{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "count", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, summary) in self.summaries() {
            let _ = match summary {
                // Rows a non-streaming run cannot have are left out.
                None if name != "latency (ms)" && !self.streamed() => continue,
                Some(s) => writeln!(
                    out,
                    "{name:<14}{:>10}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                    s.count, s.mean, s.p50, s.p90, s.p99, s.p999, s.max
                ),
                None => writeln!(out, "{name:<14}{:>10}", 0),
            };
        }
        self.write_errors(&mut out);
        self.write_mix(&mut out);
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "\nwarnings");
            for warning in &self.warnings {
                let _ = writeln!(out, "  {warning}");
            }
        }
        out
    }

    /// Whether any request kind of the run streamed.
    pub fn streamed(&self) -> bool {
        self.config.stream || self.mix.iter().any(|m| m.stream)
    }

    /// The three latency summaries with their row names.
    pub fn summaries(&self) -> [(&'static str, Option<&LatencySummary>); 3] {
        [
            ("latency (ms)", self.latency_ms.as_ref()),
            ("ttft (ms)", self.ttft_ms.as_ref()),
            ("gap (ms)", self.gap_ms.as_ref()),
        ]
    }

    /// Every error line: description and count, statuses first.
    pub fn error_lines(&self) -> Vec<(String, u64)> {
        let statuses = self.errors_by_status.iter().map(|(s, n)| (format!("HTTP {s}"), *n));
        let kinds = self.errors_by_kind.iter().map(|(k, n)| (self.describe_kind(*k), *n));
        statuses.chain(kinds).collect()
    }

    fn write_errors(&self, out: &mut String) {
        let lines = self.error_lines();
        if lines.is_empty() {
            let _ = writeln!(out, "\nerrors      none");
            return;
        }
        let width = lines.iter().map(|(text, _)| text.len()).max().unwrap_or(0);
        let _ = writeln!(out, "\nerrors");
        for (text, count) in lines {
            let _ = writeln!(out, "  {text:<width$}  {count:>10}");
        }
    }

    fn write_mix(&self, out: &mut String) {
        if self.config.mode != Mode::Scenario {
            return;
        }
        let _ = writeln!(
            out,
            "\n{:<4}{:>7}  {:<20}{:>7}{:>9}{:>10}{:>10}{:>10}",
            "mix", "weight", "model", "stream", "think s", "sent", "ok", "errors"
        );
        for (index, mix) in self.mix.iter().enumerate() {
            let _ = writeln!(
                out,
                "{index:<4}{:>7}  {:<20}{:>7}{:>9.2}{:>10}{:>10}{:>10}",
                mix.weight,
                mix.model,
                if mix.stream { "yes" } else { "no" },
                mix.think_time_s,
                mix.sent,
                mix.ok,
                mix.errors
            );
        }
    }
}

/// The name of a wire format as the report shows it.
pub fn api_name(api: Api) -> &'static str {
    match api {
        Api::OpenAi => "OpenAI chat completions",
        Api::Anthropic => "Anthropic messages",
    }
}

impl LatencySummary {
    /// The summary of a histogram in microseconds; `None` when it is empty.
    pub(crate) fn of(histogram: &Histogram<u64>) -> Option<LatencySummary> {
        if histogram.is_empty() {
            return None;
        }
        let q = |q| quantile_ms(histogram, q).unwrap_or_default();
        Some(LatencySummary {
            count: histogram.len(),
            mean: round(histogram.mean() / 1000.0, 3),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: to_ms(histogram.max()),
            spectrum: spectrum(histogram),
        })
    }
}

/// Points every 0.05 on the x = log10(1 / (1 - p)) scale, up to the percentile the sample
/// count supports (at least 99 %, at most 99.999 %), then the maximum.
fn spectrum(histogram: &Histogram<u64>) -> Vec<SpectrumPoint> {
    let count = histogram.len() as f64;
    let limit = count.log10().clamp(2.0, 5.0);
    let steps = (limit / 0.05).round() as u32;
    let mut points: Vec<SpectrumPoint> = (0..steps)
        .map(|step| {
            let x = f64::from(step) * 0.05;
            let quantile = 1.0 - 10f64.powf(-x);
            SpectrumPoint {
                percentile: round(quantile * 100.0, 6),
                ms: to_ms(histogram.value_at_quantile(quantile)),
            }
        })
        .collect();
    let top = 1.0 - 10f64.powf(-limit);
    points.push(SpectrumPoint { percentile: round(top * 100.0, 6), ms: to_ms(histogram.max()) });
    points
}

/// `value` rounded to `decimals` places. Besides being all a reader needs, a short decimal
/// parses back to exactly the same `f64`, so the JSON report round-trips.
pub(crate) fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// A duration in seconds, to the microsecond.
pub(crate) fn seconds(duration: std::time::Duration) -> f64 {
    round(duration.as_secs_f64(), 6)
}

fn timeline(stats: &Stats) -> Vec<TimelinePoint> {
    stats
        .timeline
        .iter()
        .enumerate()
        .map(|(index, second)| TimelinePoint {
            second: index as u64,
            ok: second.ok,
            errors: second.errors,
            dropped: second.dropped,
            p50_ms: quantile_ms(&second.latency, 0.5),
            p99_ms: quantile_ms(&second.latency, 0.99),
            in_flight: second.in_flight,
        })
        .collect()
}

fn report_config(plan: &Plan) -> ReportConfig {
    let (mode, rate, concurrency, users, ramp_up_s, max_in_flight) = match plan.load {
        Load::Open { rate, cap } => (Mode::Open, Some(rate), None, None, None, Some(cap)),
        Load::Closed { concurrency } => (Mode::Closed, None, Some(concurrency), None, None, None),
        Load::Users { users, ramp_up } => {
            (Mode::Scenario, None, None, Some(users), Some(seconds(ramp_up)), None)
        }
    };
    ReportConfig {
        url: plan.url.clone(),
        api: plan.api,
        mode,
        rate,
        concurrency,
        users,
        ramp_up_s,
        duration_s: seconds(plan.duration),
        warmup_s: seconds(plan.warmup),
        timeout_s: seconds(plan.timeout),
        stream: plan.stream,
        model: plan.model.clone(),
        label: plan.label.clone(),
        source_ips: plan.source_ips.clone(),
        connections: plan.connections,
        max_in_flight,
    }
}

#[cfg(test)]
mod tests;

/// A report as pretty-printed JSON. Reports hold only strings, numbers and
/// maps with string or integer keys, which serde_json always serialises; the
/// fallback is never used.
pub(crate) fn pretty_json<T: Serialize>(report: &T) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Writes a report's text to `path`.
pub(crate) fn write_file(path: &Path, text: String) -> Result<(), BenchError> {
    std::fs::write(path, text)
        .map_err(|source| BenchError::Write { path: path.to_path_buf(), source })
}
