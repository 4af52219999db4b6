//! Streams: time to first token and inter-token gaps for every request, in both formats.

use floodgate_mock_upstream::MockConfig;

use crate::helpers::{assert_consistent, chat_url, closed, messages_url, mock, run};

const CHUNKS: usize = 5;

fn streaming_mock() -> MockConfig {
    MockConfig {
        chunks: CHUNKS,
        chunk_delay: std::time::Duration::from_millis(1),
        ..MockConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_streams_record_ttft_and_every_gap() {
    let mock = mock(streaming_mock()).await;
    let config = floodgate_bench::BenchConfig { stream: true, ..closed(&chat_url(&mock), 3, 400) };
    let report = run(config).await;
    assert_consistent(&report);
    let ok = report.totals.ok;
    assert!(ok > 0);
    assert_eq!(report.totals.errors, 0);
    assert_eq!(mock.stats().streams_completed, ok);
    assert_eq!(report.ttft_ms.as_ref().unwrap().count, ok);
    assert_eq!(report.gap_ms.as_ref().unwrap().count, ok * (CHUNKS as u64 - 1));
    // The first token cannot come after the end of the stream.
    let (ttft, latency) = (report.ttft_ms.unwrap(), report.latency_ms.unwrap());
    assert!(ttft.p50 <= latency.max);
    assert!(report.config.stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_streams_record_ttft_and_every_gap() {
    let mock = mock(streaming_mock()).await;
    let config =
        floodgate_bench::BenchConfig { stream: true, ..closed(&messages_url(&mock), 3, 400) };
    let report = run(config).await;
    assert_consistent(&report);
    let ok = report.totals.ok;
    assert!(ok > 0);
    assert_eq!(report.totals.errors, 0);
    assert_eq!(mock.stats().streams_completed, ok);
    assert_eq!(report.ttft_ms.as_ref().unwrap().count, ok);
    assert_eq!(report.gap_ms.as_ref().unwrap().count, ok * (CHUNKS as u64 - 1));
}
