//! The results of a realtime run: [`RealtimeReport`] (serde, the `--json` schema) and its
//! plain-text summary for stdout.
//!
//! # JSON schema (`schema` = `"floodgate-bench-realtime/1"`)
//!
//! ```text
//! {
//!   "schema": "floodgate-bench-realtime/1",
//!   "mode": "ws" | "socketio",
//!   "urls": [base URL, ...],            // the nodes, connections spread round robin
//!   "label": text | null,
//!   "config": {
//!     "room", "topic",                  // "bench", "room:bench"
//!     "connections", "connect_rate", "max_handshakes", "timeout_s", "duration_s",
//!     "source_ips": [ip, ...], "publish_rate": msg/s | null, "message_bytes",
//!     "publish_all_nodes": bool, "server_pids": [pid, ...]
//!   },
//!   "connections": {
//!     "requested", "opened", "subscribed", "failed",   // requested = subscribed + failed
//!     "failures": {"refused: 1013 node full" | "connect: Connection refused" |
//!                  "timeout: subscribe" | ...: n},
//!     "subscribed_per_url": [n, ...],   // in the order of "urls"
//!     "connect_phase_s",                // from the first connect to the last settled
//!     "open_at_end",                    // still open when the run ended
//!     "closed_during_run",              // closed by the server (or lost) after subscribing
//!     "closed": {"4008 slow consumer" | "ended without a close frame" | ...: n}
//!   },
//!   "connect_ms": null | {"count", "mean", "p50", "p90", "p99", "p999", "max", "spectrum"},
//!   "servers": [{"pid", "rss_before_bytes", "rss_after_connect_bytes", "rss_end_bytes",
//!                "connections", "rss_per_connection_bytes", "hold_cpu_cores"}, ...],
//!   "servers_total": null | {same, "pid": null},
//!   "client": {same, "pid": the bench's own},
//!   "publish": null | {"urls", "rate", "message_bytes", "scheduled", "sent", "ok", "failed",
//!                      "failures": {"HTTP 503" | "timeout" | ...: n},
//!                      "duration_s", "achieved_per_s"},
//!   "delivery": null | {"subscribed", "expected", "received", "lost", "duplicates", "other",
//!                       "received_per_s", "drain_s", "latency_ms": null | {...}},
//!   "client_limits": {"open_files": n | null, "ephemeral_ports": [low, high] | null},
//!   "warnings": [text, ...]
//! }
//! ```
//!
//! - `opened` counts transports that opened (WebSocket upgraded; for Socket.IO, CONNECT
//!   accepted), so a plain WebSocket refused by a close frame after its upgrade (1013) counts
//!   as opened and failed; `subscribed` counts those whose subscription was acknowledged, the
//!   ones held. `failed` = `requested` − `subscribed`, grouped by reason in `failures`.
//! - `connect_ms`: from the start of a connection's TCP connect to its subscription's
//!   acknowledgement, successful connections only.
//! - `servers`: each `--server-pid`'s `VmRSS` before connecting, once every connection
//!   settled, and at the end (before closing them); `rss_per_connection_bytes` =
//!   (after_connect − before) / `connections`, where `connections` is the subscribed
//!   connections of that pid's node when there are as many pids as urls (pid i serving url i),
//!   else all subscribed connections. `hold_cpu_cores` is the CPU time the process used from
//!   the after-connect reading to the end one, divided by that time (1.0 = one core busy).
//!   `servers_total` adds the pids up. `client` is the same for the bench process itself (all
//!   its connections), to tell whether the load generator was the bottleneck.
//! - `publish`: `scheduled` = floor(rate × duration_s) messages; `sent` posts (fewer when the
//!   publisher fell more than 1 s behind), `ok` answered 2xx, `failed` = sent − ok by reason;
//!   `achieved_per_s` = ok / duration_s.
//! - `delivery`: `expected` = publish.ok × `subscribed`; `received` counts each sequence number
//!   once per connection (`duplicates` the repeats); `lost` = expected − received (0 at
//!   least); `other` counts messages on the room that were not this run's. `received_per_s`
//!   divides `received` by the time from the first post to the last message received;
//!   `drain_s` is how long the run waited after publishing stopped (at most 5 s).
//!   `latency_ms` is receipt time − `sent_us` (Unix microseconds, the same machine's clock).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::connection::Opening;
use super::plan::{Plan, Transport};
use super::procfs::Sample;
use super::publish::Published;
use super::{Deliveries, Samples};
use crate::error::BenchError;
use crate::limits::ClientLimits;
use crate::report::{LatencySummary, round, seconds};

/// The schema identifier written into every realtime report.
pub const REALTIME_SCHEMA: &str = "floodgate-bench-realtime/1";

/// Everything a realtime run measured (see the module documentation for the JSON form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealtimeReport {
    pub schema: String,
    pub mode: Transport,
    pub urls: Vec<String>,
    pub label: Option<String>,
    pub config: RealtimeRunConfig,
    pub connections: ConnectionsReport,
    pub connect_ms: Option<LatencySummary>,
    pub servers: Vec<ProcessReport>,
    pub servers_total: Option<ProcessReport>,
    pub client: ProcessReport,
    pub publish: Option<PublishReport>,
    pub delivery: Option<DeliveryReport>,
    pub client_limits: ClientLimits,
    pub warnings: Vec<String>,
}

/// What was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealtimeRunConfig {
    pub room: String,
    pub topic: String,
    pub connections: usize,
    pub connect_rate: f64,
    pub max_handshakes: usize,
    pub timeout_s: f64,
    pub duration_s: f64,
    pub source_ips: Vec<IpAddr>,
    pub publish_rate: Option<f64>,
    pub message_bytes: usize,
    pub publish_all_nodes: bool,
    pub server_pids: Vec<u32>,
}

/// How the connections fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionsReport {
    pub requested: u64,
    pub opened: u64,
    pub subscribed: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub subscribed_per_url: Vec<u64>,
    pub connect_phase_s: f64,
    pub open_at_end: u64,
    pub closed_during_run: u64,
    pub closed: BTreeMap<String, u64>,
}

/// The resident memory and CPU use of one process (`pid`), or of all servers (`pid` null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: Option<u32>,
    pub rss_before_bytes: Option<u64>,
    pub rss_after_connect_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
    /// The connections the growth is divided by.
    pub connections: u64,
    pub rss_per_connection_bytes: Option<f64>,
    pub hold_cpu_cores: Option<f64>,
}

/// What the publisher did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishReport {
    pub urls: Vec<String>,
    pub rate: f64,
    pub message_bytes: usize,
    pub scheduled: u64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub duration_s: f64,
    pub achieved_per_s: f64,
}

/// What reached the subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub subscribed: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub other: u64,
    pub received_per_s: f64,
    pub drain_s: f64,
    pub latency_ms: Option<LatencySummary>,
}

/// Everything [`super::run`] gathered, for [`RealtimeReport::build`].
#[derive(Debug)]
pub(crate) struct Measured {
    pub opening: Opening,
    pub published: Option<Published>,
    pub deliveries: Deliveries,
    pub drain: std::time::Duration,
    pub open_at_end: u64,
    pub closed: BTreeMap<String, u64>,
    pub samples: Samples,
    pub client_limits: ClientLimits,
    pub warnings: Vec<String>,
}

impl RealtimeReport {
    pub(crate) fn build(plan: &Plan, measured: Measured) -> RealtimeReport {
        let opening = &measured.opening;
        let urls: Vec<String> = plan.nodes.iter().map(|node| node.url.clone()).collect();
        let publish = measured.published.as_ref().zip(plan.publishing.as_ref()).map(
            |(published, publishing)| PublishReport {
                urls: if plan.publish_all_nodes { urls.clone() } else { urls[..1].to_vec() },
                rate: publishing.rate,
                message_bytes: plan.message_bytes,
                scheduled: publishing.messages,
                sent: published.sent,
                ok: published.ok,
                failed: published.sent - published.ok.min(published.sent),
                failures: published.failures.clone(),
                duration_s: seconds(plan.duration),
                achieved_per_s: rate(published.ok, plan.duration.as_secs_f64()),
            },
        );
        let delivery = measured.published.as_ref().map(|published| {
            let d = &measured.deliveries;
            let expected = published.ok * opening.subscribed;
            let window_us =
                published.first_sent_us.map_or(0, |first| d.last_us.saturating_sub(first));
            DeliveryReport {
                subscribed: opening.subscribed,
                expected,
                received: d.received,
                lost: expected.saturating_sub(d.received),
                duplicates: d.duplicates,
                other: d.other,
                received_per_s: rate(d.received, window_us as f64 / 1e6),
                drain_s: seconds(measured.drain),
                latency_ms: LatencySummary::of(&d.latency),
            }
        });
        let (servers, servers_total, client) = process_reports(plan, opening, &measured.samples);
        let mut warnings = measured.warnings;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if let Some(used) = client.hold_cpu_cores
            && used >= 0.9 * cores as f64
        {
            warnings.push(format!(
                "the bench itself kept {used:.2} of this machine's {cores} cores busy while \
                 holding: its own queueing is part of the delivery latency"
            ));
        }
        RealtimeReport {
            schema: REALTIME_SCHEMA.to_string(),
            mode: plan.transport,
            urls,
            label: plan.label.clone(),
            config: RealtimeRunConfig {
                room: plan.room.clone(),
                topic: plan.topic.clone(),
                connections: plan.connections,
                connect_rate: plan.connect_rate,
                max_handshakes: plan.max_handshakes,
                timeout_s: seconds(plan.timeout),
                duration_s: seconds(plan.duration),
                source_ips: plan.source_ips.clone(),
                publish_rate: plan.publishing.as_ref().map(|p| p.rate),
                message_bytes: plan.message_bytes,
                publish_all_nodes: plan.publish_all_nodes,
                server_pids: plan.server_pids.clone(),
            },
            connections: ConnectionsReport {
                requested: plan.connections as u64,
                opened: opening.opened,
                subscribed: opening.subscribed,
                failed: opening.failed(),
                failures: opening.failures.clone(),
                subscribed_per_url: opening.subscribed_per_node.clone(),
                connect_phase_s: seconds(opening.elapsed),
                open_at_end: measured.open_at_end,
                closed_during_run: measured.closed.values().sum(),
                closed: measured.closed,
            },
            connect_ms: LatencySummary::of(&opening.latency),
            servers,
            servers_total,
            client,
            publish,
            delivery,
            client_limits: measured.client_limits,
            warnings,
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        crate::report::pretty_json(self)
    }

    /// Writes [`RealtimeReport::to_json`] to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        crate::report::write_file(path, self.to_json() + "\n")
    }

    /// Prints [`RealtimeReport::table`] to stdout.
    pub fn print_table(&self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(self.table().as_bytes())?;
        out.flush()
    }

    /// The summary as aligned plain text.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        let n = &self.connections;
        let _ = writeln!(
            out,
            "floodgate bench  realtime {}  {}",
            self.mode.as_str(),
            self.urls.join(", ")
        );
        let sources = match c.source_ips.len() {
            0 => String::new(),
            1 => " from 1 source IP".to_string(),
            ips => format!(" from {ips} source IPs"),
        };
        let publishing = match (&self.publish, c.publish_rate) {
            (Some(_), Some(rate)) => format!(", publishing {rate} msg/s of ~{} B", c.message_bytes),
            _ => ", no publishing".to_string(),
        };
        let _ = writeln!(
            out,
            "  {} connections at {}/s{sources} to {}, held {} s{publishing}",
            c.connections, c.connect_rate, c.topic, c.duration_s
        );
        if let Some(label) = &self.label {
            let _ = writeln!(out, "  label: {label}");
        }
        let _ = writeln!(
            out,
            "\nconnections  requested {}   subscribed {}   failed {}   (transport opened {})",
            n.requested, n.subscribed, n.failed, n.opened
        );
        let _ = writeln!(
            out,
            "             connect phase {:.2} s   open at the end {}   closed during the run {}",
            n.connect_phase_s, n.open_at_end, n.closed_during_run
        );
        if self.urls.len() > 1 {
            let spread: Vec<String> = n.subscribed_per_url.iter().map(u64::to_string).collect();
            let _ = writeln!(out, "             subscribed per node {}", spread.join(" / "));
        }
        let rows = [
            ("connect (ms)", self.connect_ms.as_ref()),
            ("delivery (ms)", self.delivery.as_ref().and_then(|d| d.latency_ms.as_ref())),
        ];
        let _ = writeln!(
            out,
            "\n{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "count", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, summary) in rows {
            let _ = match summary {
                None if name == "delivery (ms)" && self.delivery.is_none() => continue,
                Some(s) => writeln!(
                    out,
                    "{name:<14}{:>10}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                    s.count, s.mean, s.p50, s.p90, s.p99, s.p999, s.max
                ),
                None => writeln!(out, "{name:<14}{:>10}", 0),
            };
        }
        write_counts(&mut out, "failures", &n.failures);
        write_counts(&mut out, "closed by the server", &n.closed);
        if let Some(p) = &self.publish {
            let _ = writeln!(
                out,
                "\npublish      sent {} of {} scheduled   ok {}   failed {}   {:.1} msg/s achieved",
                p.sent, p.scheduled, p.ok, p.failed, p.achieved_per_s
            );
        }
        if let Some(d) = &self.delivery {
            let _ = writeln!(
                out,
                "delivery     received {} of {} expected   lost {}   duplicates {}   other {}",
                d.received, d.expected, d.lost, d.duplicates, d.other
            );
            let _ = writeln!(
                out,
                "             {:.1} msg/s received   drain {:.2} s",
                d.received_per_s, d.drain_s
            );
        }
        if let Some(p) = &self.publish {
            write_counts(&mut out, "publish failures", &p.failures);
        }
        let _ = writeln!(
            out,
            "\n{:<13}{:>8}{:>12}{:>12}{:>12}{:>13}{:>14}{:>7}",
            "memory", "pid", "before", "connected", "end", "connections", "B/connection", "cores"
        );
        let rows = self.servers.iter().chain(&self.servers_total).map(|p| ("server", p));
        for (who, process) in rows.chain([("bench", &self.client)]) {
            let pid = process.pid.map_or_else(|| "total".to_string(), |pid| pid.to_string());
            let per = process
                .rss_per_connection_bytes
                .map_or_else(|| "-".to_string(), |bytes| format!("{bytes:.0}"));
            let cores =
                process.hold_cpu_cores.map_or_else(|| "-".to_string(), |c| format!("{c:.2}"));
            let _ = writeln!(
                out,
                "  {who:<11}{pid:>8}{:>12}{:>12}{:>12}{:>13}{per:>14}{cores:>7}",
                mib(process.rss_before_bytes),
                mib(process.rss_after_connect_bytes),
                mib(process.rss_end_bytes),
                process.connections
            );
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "\nwarnings");
            for warning in &self.warnings {
                let _ = writeln!(out, "  {warning}");
            }
        }
        out
    }
}

fn write_counts(out: &mut String, title: &str, counts: &BTreeMap<String, u64>) {
    if counts.is_empty() {
        return;
    }
    let width = counts.keys().map(String::len).max().unwrap_or(0);
    let _ = writeln!(out, "\n{title}");
    for (reason, count) in counts {
        let _ = writeln!(out, "  {reason:<width$}  {count:>10}");
    }
}

/// Bytes as MiB with one decimal, `-` when unknown.
fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".to_string(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
}

/// `count / seconds`, 0 over no time.
fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { round(count as f64 / seconds, 3) } else { 0.0 }
}

/// One report per server pid, their total, and the bench's own, from the three readings.
fn process_reports(
    plan: &Plan,
    opening: &Opening,
    samples: &Samples,
) -> (Vec<ProcessReport>, Option<ProcessReport>, ProcessReport) {
    let held = samples.held.as_secs_f64();
    let report = |pid, [before, connected, end]: [Sample; 3], connections: u64| ProcessReport {
        pid,
        rss_before_bytes: before.rss,
        rss_after_connect_bytes: connected.rss,
        rss_end_bytes: end.rss,
        connections,
        rss_per_connection_bytes: match (before.rss, connected.rss) {
            (Some(before), Some(after)) if connections > 0 => {
                Some(round((after as f64 - before as f64) / connections as f64, 1))
            }
            _ => None,
        },
        hold_cpu_cores: match (connected.cpu_s, end.cpu_s) {
            (Some(from), Some(to)) if held > 0.0 => Some(round((to - from) / held, 3)),
            _ => None,
        },
    };
    let at = |i: usize| {
        let get = |readings: &[Sample]| readings.get(i).copied().unwrap_or_default();
        [get(&samples.before), get(&samples.connected), get(&samples.end)]
    };
    let one_per_node = plan.server_pids.len() == plan.nodes.len();
    let servers: Vec<ProcessReport> = plan
        .server_pids
        .iter()
        .enumerate()
        .map(|(i, pid)| {
            let connections =
                if one_per_node { opening.subscribed_per_node[i] } else { opening.subscribed };
            report(Some(*pid), at(i), connections)
        })
        .collect();
    let client = report(Some(std::process::id()), at(servers.len()), opening.subscribed);
    if servers.is_empty() {
        return (servers, None, client);
    }
    let sum = |readings: &[Sample]| Sample {
        rss: readings[..servers.len()].iter().map(|s| s.rss).sum(),
        cpu_s: readings[..servers.len()].iter().map(|s| s.cpu_s).sum(),
    };
    let total = [sum(&samples.before), sum(&samples.connected), sum(&samples.end)];
    (servers, Some(report(None, total, opening.subscribed)), client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A three-node broadcast run with every kind of row: failures, closes, publish failures,
    /// duplicates, per-node memory and a warning.
    fn sample() -> RealtimeReport {
        let latency = |count, base: f64| LatencySummary {
            count,
            mean: base * 1.2,
            p50: base,
            p90: base * 2.0,
            p99: base * 4.0,
            p999: base * 8.0,
            max: base * 10.0,
            spectrum: Vec::new(),
        };
        let process = |pid, before: u64, connections: u64| ProcessReport {
            pid,
            rss_before_bytes: Some(before),
            rss_after_connect_bytes: Some(before + connections * 5000),
            rss_end_bytes: Some(before + connections * 5100),
            connections,
            rss_per_connection_bytes: Some(5000.0),
            hold_cpu_cores: Some(0.25),
        };
        let urls: Vec<String> =
            (1..=3).map(|port| format!("http://127.0.0.1:1944{port}")).collect();
        let count = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(reason, n)| (reason.to_string(), *n)).collect()
        };
        RealtimeReport {
            schema: REALTIME_SCHEMA.to_string(),
            mode: Transport::Ws,
            urls: urls.clone(),
            label: Some("nightly".into()),
            config: RealtimeRunConfig {
                room: "bench".into(),
                topic: "room:bench".into(),
                connections: 9000,
                connect_rate: 2000.0,
                max_handshakes: 1000,
                timeout_s: 10.0,
                duration_s: 20.0,
                source_ips: vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
                publish_rate: Some(100.0),
                message_bytes: 100,
                publish_all_nodes: false,
                server_pids: vec![101, 102, 103],
            },
            connections: ConnectionsReport {
                requested: 9000,
                opened: 8998,
                subscribed: 8990,
                failed: 10,
                failures: count(&[("refused: 1013 node full", 8), ("timeout: subscribe", 2)]),
                subscribed_per_url: vec![2997, 2997, 2996],
                connect_phase_s: 4.6,
                open_at_end: 8987,
                closed_during_run: 3,
                closed: count(&[("4008 slow consumer", 3)]),
            },
            connect_ms: Some(latency(8990, 0.4)),
            servers: vec![process(Some(101), 50 << 20, 2997), process(Some(102), 48 << 20, 2997)],
            servers_total: Some(process(None, 98 << 20, 8990)),
            client: process(Some(7), 6 << 20, 8990),
            publish: Some(PublishReport {
                urls: urls[..1].to_vec(),
                rate: 100.0,
                message_bytes: 100,
                scheduled: 2000,
                sent: 2000,
                ok: 1999,
                failed: 1,
                failures: count(&[("HTTP 503", 1)]),
                duration_s: 20.0,
                achieved_per_s: 99.95,
            }),
            delivery: Some(DeliveryReport {
                subscribed: 8990,
                expected: 17_971_010,
                received: 17_970_000,
                lost: 1010,
                duplicates: 4,
                other: 0,
                received_per_s: 898_500.0,
                drain_s: 0.35,
                latency_ms: Some(latency(17_970_000, 2.5)),
            }),
            client_limits: ClientLimits { open_files: Some(20000), ephemeral_ports: None },
            warnings: vec!["the bench itself kept 1.90 of this machine's 2 cores busy".into()],
        }
    }

    #[test]
    fn the_table_shows_every_part() {
        insta::assert_snapshot!(sample().table());
    }

    #[test]
    fn the_json_keeps_its_field_names() {
        let report = sample();
        let json = report.to_json();
        insta::assert_snapshot!(json);
        assert_eq!(serde_json::from_str::<RealtimeReport>(&json).unwrap(), report);
    }
}
