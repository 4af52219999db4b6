//! `floodgate bench`: a load generator for LLM chat APIs (OpenAI Chat Completions and Anthropic
//! Messages bodies), with HDR latency histograms, time to first token and inter-token gaps for
//! streams, errors by status and kind, client-side limits explained, and JSON, HTML and
//! plain-text reports; and, apart, for the gateway's realtime side ([`realtime`]): many held
//! WebSocket or Socket.IO connections, a publisher, delivery loss and latency, server memory
//! per connection.
//!
//! Three ways to generate load:
//! - open loop (`rate`): constant arrival rate, latency measured from each request's intended
//!   send time (coordinated-omission correction); arrivals beyond the in-flight cap are dropped
//!   and counted, so an overloaded server shows up as errors and drops, never as a flattering
//!   lower rate;
//! - closed loop (`concurrency`): workers sending back to back on kept-alive connections;
//! - a [`Scenario`]: a population of users with think time and a weighted mix of requests.
//!
//! The client is hyper's (HTTP/1.1 keep-alive, `TCP_NODELAY`), one per source address so that a
//! run can exceed the ephemeral ports of one address. At most `connections` connections are
//! kept; in the closed loop and scenarios fewer connections than workers make workers wait for
//! a free one (and that wait counts in their latency).

mod client;
mod config;
mod error;
mod events;
mod html;
mod limits;
mod load;
mod progress;
pub mod realtime;
mod report;
mod request;
mod scenario;
mod stats;
mod svg;

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

pub use client::ErrorKind;
pub use config::{Api, BenchConfig, DEFAULT_MAX_IN_FLIGHT, parse_duration, parse_ip_range};
pub use error::{BenchError, EXIT_USAGE};
pub use limits::ClientLimits;
pub use realtime::{RealtimeConfig, RealtimeReport, Transport, run as run_realtime};
pub use report::{
    LatencySummary, MixReport, Mode, Report, ReportConfig, SCHEMA, SpectrumPoint, TimelinePoint,
    Totals,
};
pub use scenario::{MixEntry, Scenario};

use config::Plan;
use load::Shared;
use progress::Progress;
use stats::Recorder;

/// Runs the benchmark described by `config` and returns what it measured.
///
/// Warnings about client limits that will cap the run are written to stderr at the start (and
/// kept in the report). Errors of the requests themselves are results, in the report; this
/// fails only when the configuration is refused ([`BenchError::Usage`]) or a histogram cannot
/// be created.
pub async fn run(config: BenchConfig) -> Result<Report, BenchError> {
    let plan = Plan::new(&config, std::io::stderr().is_terminal())?;
    check_source_ips(&plan.source_ips)?;
    let limits = ClientLimits::read();
    let warnings = limits.warnings(plan.peak_connections, plan.source_ips.len());
    warn(&warnings);
    let t0 = Instant::now();
    let recorder = Recorder::new(t0 + plan.warmup, plan.mixes.len())?;
    let progress = Arc::new(Progress::new(plan.progress, plan.duration));
    let shared = Arc::new(Shared::new(plan, recorder));
    let stop = CancellationToken::new();
    let ticker =
        tokio::spawn(progress::tick(Arc::clone(&shared), Arc::clone(&progress), t0, stop.clone()));
    load::drive(Arc::clone(&shared), t0).await;
    stop.cancel();
    // The ticker only reads; if it failed, the report is still complete.
    let _ticker_result = ticker.await;
    progress.finish();
    let stats = shared.recorder.snapshot();
    Ok(Report::build(&shared.plan, &stats, limits, warnings))
}

/// Refuses a source address this machine does not have (binding would fail with the same
/// error as running out of ports, and be reported as that).
fn check_source_ips(source_ips: &[std::net::IpAddr]) -> Result<(), BenchError> {
    for ip in source_ips {
        if let Err(error) = std::net::TcpListener::bind((*ip, 0)) {
            return Err(BenchError::Usage(format!(
                "--source-ips: cannot bind to {ip} ({error}); give addresses of this machine"
            )));
        }
    }
    Ok(())
}

fn warn(warnings: &[String]) {
    let mut stderr = std::io::stderr().lock();
    for warning in warnings {
        // Nothing useful can be done when stderr is gone; the warning is also in the report.
        let _ignored = writeln!(stderr, "floodgate bench: warning: {warning}");
    }
}
