//! Shared setup: a mock upstream and a quiet benchmark configuration aimed at it.

use std::time::Duration;

use floodgate_bench::{BenchConfig, Report};
use floodgate_mock_upstream::{MockConfig, MockServer};

pub const KEY: &str = "bench-key";

pub async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

/// A quiet closed-loop run of `workers` for `millis` against `url`.
pub fn closed(url: &str, workers: usize, millis: u64) -> BenchConfig {
    BenchConfig {
        concurrency: Some(workers),
        duration: Some(Duration::from_millis(millis)),
        key: Some(KEY.to_string()),
        quiet: true,
        ..BenchConfig::new(url)
    }
}

/// A quiet open-loop run at `rate` for `millis` against `url`.
pub fn open(url: &str, rate: f64, millis: u64) -> BenchConfig {
    BenchConfig { concurrency: None, rate: Some(rate), ..closed(url, 1, millis) }
}

pub fn chat_url(mock: &MockServer) -> String {
    format!("{}/v1/chat/completions", mock.base_url())
}

pub fn messages_url(mock: &MockServer) -> String {
    format!("{}/v1/messages", mock.base_url())
}

pub async fn run(config: BenchConfig) -> Report {
    floodgate_bench::run(config).await.unwrap()
}

/// The invariants of every report: counts add up across totals, breakdowns and timeline.
pub fn assert_consistent(report: &Report) {
    let t = &report.totals;
    assert_eq!(t.sent, t.ok + t.errors, "{t:?}");
    let by_status: u64 = report.errors_by_status.values().sum();
    let by_kind: u64 = report
        .errors_by_kind
        .iter()
        .filter(|(kind, _)| **kind != floodgate_bench::ErrorKind::Dropped)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(t.errors, by_status + by_kind);
    assert_eq!(
        t.dropped,
        report.errors_by_kind.get(&floodgate_bench::ErrorKind::Dropped).copied().unwrap_or(0)
    );
    let timeline_ok: u64 = report.timeline.iter().map(|s| s.ok).sum();
    let timeline_errors: u64 = report.timeline.iter().map(|s| s.errors).sum();
    let timeline_dropped: u64 = report.timeline.iter().map(|s| s.dropped).sum();
    assert_eq!((timeline_ok, timeline_errors, timeline_dropped), (t.ok, t.errors, t.dropped));
    assert_eq!(report.latency_ms.as_ref().map_or(0, |l| l.count), t.ok);
    let mix_sent: u64 = report.mix.iter().map(|m| m.sent).sum();
    assert_eq!(mix_sent, t.sent);
}
