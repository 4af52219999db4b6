//! What goes over the wire: each URL gets its own format's body and headers.

use floodgate_mock_upstream::MockConfig;
use serde_json::json;

use crate::helpers::{KEY, chat_url, closed, messages_url, mock, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_url_sends_an_anthropic_body() {
    let mock = mock(MockConfig { record: true, ..MockConfig::default() }).await;
    let config = floodgate_bench::BenchConfig {
        stream: true,
        model: "claude-haiku-4-5".into(),
        prompt_tokens: 3,
        ..closed(&messages_url(&mock), 1, 200)
    };
    let report = run(config).await;
    assert!(report.totals.ok > 0);
    let requests = mock.requests();
    assert_eq!(requests.len() as u64, report.totals.sent);
    let first = &requests[0];
    assert_eq!((first.method.as_str(), first.path.as_str()), ("POST", "/v1/messages"));
    assert_eq!(first.header("x-api-key"), Some(KEY));
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(first.header("authorization"), None);
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(
        first.body,
        json!({
            "model": "claude-haiku-4-5",
            "messages": [{"role": "user", "content": "Please summarise"}],
            "max_tokens": 256,
            "stream": true
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_url_sends_an_openai_body() {
    let mock = mock(MockConfig { record: true, ..MockConfig::default() }).await;
    let config = floodgate_bench::BenchConfig {
        stream: true,
        max_tokens: Some(16),
        prompt_tokens: 1,
        ..closed(&chat_url(&mock), 1, 200)
    };
    let report = run(config).await;
    assert!(report.totals.ok > 0);
    let first = &mock.requests()[0];
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.header("authorization"), Some("Bearer bench-key"));
    assert_eq!(first.header("x-api-key"), None);
    assert_eq!(
        first.body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Please"}],
            "max_tokens": 16,
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}
