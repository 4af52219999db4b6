//! Closed and open loop: what is sent is what the server counted, and the open loop schedules
//! exactly floor(rate × duration) arrivals.

use std::time::Duration;

use floodgate_bench::{ErrorKind, Mode};
use floodgate_mock_upstream::MockConfig;

use crate::helpers::{assert_consistent, chat_url, closed, mock, open, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_records_exactly_what_the_server_counted() {
    let mock = mock(MockConfig::default()).await;
    let report = run(closed(&chat_url(&mock), 4, 500)).await;
    assert_consistent(&report);
    assert!(report.totals.sent > 0);
    assert_eq!(report.totals.sent, mock.stats().requests);
    assert_eq!(report.totals.ok, report.totals.sent);
    assert_eq!(report.totals.errors, 0);
    assert_eq!(report.config.mode, Mode::Closed);
    assert_eq!(report.config.concurrency, Some(4));
    assert_eq!(report.config.connections, 4);
    assert!(report.ttft_ms.is_none() && report.gap_ms.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_with_fewer_connections_than_workers_still_counts_everything() {
    let mock = mock(MockConfig::default()).await;
    let config =
        floodgate_bench::BenchConfig { connections: Some(2), ..closed(&chat_url(&mock), 6, 300) };
    let report = run(config).await;
    assert_consistent(&report);
    assert_eq!(report.totals.sent, mock.stats().requests);
    assert_eq!(report.totals.errors, 0);
    assert_eq!(report.config.connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_schedules_exactly_floor_rate_times_duration() {
    let mock = mock(MockConfig::default()).await;
    // 40 req/s for 1.55 s: floor(62.0) = 62 arrivals, all sent (the mock keeps up).
    let report = run(open(&chat_url(&mock), 40.0, 1_550)).await;
    assert_consistent(&report);
    assert_eq!(report.totals.sent + report.totals.dropped, 62);
    assert_eq!(report.totals.sent, mock.stats().requests);
    assert_eq!(report.config.mode, Mode::Open);
    assert_eq!(report.config.max_in_flight, Some(20_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_at_its_cap_drops_arrivals_and_counts_them() {
    // Each answer takes 300 ms while arrivals come every 10 ms: with at most 3 in flight, the
    // fourth arrival (at 30 ms) finds the cap reached.
    let mock =
        mock(MockConfig { latency: Duration::from_millis(300), ..MockConfig::default() }).await;
    let config = floodgate_bench::BenchConfig {
        max_in_flight: Some(3),
        ..open(&chat_url(&mock), 100.0, 500)
    };
    let report = run(config).await;
    assert_consistent(&report);
    assert_eq!(report.totals.sent + report.totals.dropped, 50);
    assert!(report.totals.dropped > 0, "{:?}", report.totals);
    assert_eq!(report.errors_by_kind.get(&ErrorKind::Dropped), Some(&report.totals.dropped));
    assert_eq!(report.totals.sent, mock.stats().requests);
    assert_eq!(report.totals.errors, 0);
    // Latency counts from the intended send time, so it is at least the mock's latency.
    assert!(report.latency_ms.as_ref().unwrap().p50 >= 300.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_requests_are_not_recorded() {
    let mock = mock(MockConfig::default()).await;
    let config = floodgate_bench::BenchConfig {
        warmup: Duration::from_millis(500),
        ..open(&chat_url(&mock), 20.0, 500)
    };
    let report = run(config).await;
    assert_consistent(&report);
    // 10 warm-up arrivals went to the server; only the 10 measured ones are in the report.
    assert_eq!(report.totals.sent + report.totals.dropped, 10);
    assert_eq!(mock.stats().requests, 20);
    assert_eq!(report.config.warmup_s, 0.5);
}
