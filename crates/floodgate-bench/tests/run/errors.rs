//! Failures are results: counted by HTTP status and by kind, each the way it really happened.

use std::time::Duration;

use floodgate_bench::ErrorKind;
use floodgate_mock_upstream::{ErrorKind as MockError, MockConfig, Script};

use crate::helpers::{assert_consistent, chat_url, closed, mock, run};

fn failing(kind: MockError) -> MockConfig {
    MockConfig { error_rate: 1.0, error_kind: kind, ..MockConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_counted_by_status() {
    let mock = mock(failing(MockError::Status500)).await;
    let report = run(closed(&chat_url(&mock), 2, 300)).await;
    assert_consistent(&report);
    assert!(report.totals.sent > 0);
    assert_eq!(report.totals.ok, 0);
    assert_eq!(report.errors_by_status.len(), 1);
    assert_eq!(report.errors_by_status.get(&500), Some(&report.totals.sent));
    assert_eq!(report.totals.sent, mock.stats().requests);
    assert!(report.latency_ms.is_none());
    assert!(report.table().contains("HTTP 500"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_counted_by_status() {
    let mock = mock(failing(MockError::Status429)).await;
    let report = run(closed(&chat_url(&mock), 2, 300)).await;
    assert_consistent(&report);
    assert!(report.totals.sent > 0);
    assert_eq!(report.errors_by_status.get(&429), Some(&report.totals.sent));
    assert!(report.errors_by_kind.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_connection_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let report = run(closed(&url, 2, 200)).await;
    assert_consistent(&report);
    assert!(report.totals.sent > 0);
    assert_eq!(report.totals.ok, 0);
    assert_eq!(report.errors_by_kind.get(&ErrorKind::ConnectRefused), Some(&report.totals.sent));
    assert!(report.table().contains("connect: refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_the_response_is_a_connection_reset() {
    let mock = mock(MockConfig::default()).await;
    mock.enqueue(Script::Reset);
    let report = run(closed(&chat_url(&mock), 1, 300)).await;
    assert_consistent(&report);
    assert_eq!(report.errors_by_kind.get(&ErrorKind::ConnectionReset), Some(&1));
    assert_eq!(report.totals.errors, 1);
    assert_eq!(report.totals.ok, report.totals.sent - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_times_out() {
    let mock = mock(failing(MockError::Hang)).await;
    let config = floodgate_bench::BenchConfig {
        timeout: Duration::from_millis(100),
        ..closed(&chat_url(&mock), 2, 250)
    };
    let report = run(config).await;
    assert_consistent(&report);
    assert!(report.totals.sent >= 2);
    assert_eq!(report.errors_by_kind.get(&ErrorKind::Timeout), Some(&report.totals.sent));
}

/// An OpenAI stream's first events, without the `[DONE]` that ends it.
fn openai_head() -> Vec<(Option<String>, String)> {
    let chunk = |delta: &str| {
        format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}]}}"#
        )
    };
    vec![
        (None, chunk(r#"{"role":"assistant","content":""}"#)),
        (None, chunk(r#"{"content":"Hello"}"#)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_before_its_end_is_incomplete() {
    let mock = mock(MockConfig::default()).await;
    mock.enqueue(Script::SseThenReset { events: openai_head(), delay: Duration::from_millis(5) });
    let config = floodgate_bench::BenchConfig { stream: true, ..closed(&chat_url(&mock), 1, 300) };
    let report = run(config).await;
    assert_consistent(&report);
    assert_eq!(report.errors_by_kind.get(&ErrorKind::StreamIncomplete), Some(&1));
    assert_eq!(report.totals.errors, 1);
    assert!(report.totals.ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_cleanly_without_done_is_incomplete() {
    let mock = mock(MockConfig::default()).await;
    mock.enqueue(Script::Sse { events: openai_head(), delay: Duration::ZERO });
    let config = floodgate_bench::BenchConfig { stream: true, ..closed(&chat_url(&mock), 1, 300) };
    let report = run(config).await;
    assert_consistent(&report);
    assert_eq!(report.errors_by_kind.get(&ErrorKind::StreamIncomplete), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_event_is_a_stream_error() {
    let mock = mock(MockConfig::default()).await;
    let mut events = openai_head();
    events.push((
        None,
        r#"{"error":{"message":"upstream failed","type":"server_error","param":null,"code":null}}"#
            .to_string(),
    ));
    events.push((None, "[DONE]".to_string()));
    mock.enqueue(Script::Sse { events, delay: Duration::ZERO });
    let config = floodgate_bench::BenchConfig { stream: true, ..closed(&chat_url(&mock), 1, 300) };
    let report = run(config).await;
    assert_consistent(&report);
    assert_eq!(report.errors_by_kind.get(&ErrorKind::StreamError), Some(&1));
    assert_eq!(report.totals.errors, 1);
}
