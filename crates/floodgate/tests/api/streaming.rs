//! Streams: true pass-through, usage from the stream, cancellation on client
//! disconnect, fallback before the first byte, error events after it.

use std::time::Duration;

use floodgate_mock_upstream::{MockConfig, Script};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn openai_stream_is_passed_through_with_usage_counted() {
    let app = spawn_app().await;
    let mut body = chat_body("gpt", true);
    body["stream_options"] = json!({"include_usage": true});
    let (code, headers, events) = app.post_sse("/v1/chat/completions", &body).await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-floodgate-provider"], "oai");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks = data_of(&events);
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, floodgate_mock_upstream::answer_text(20));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 20);
    // The gateway always asks upstream for usage.
    assert_eq!(app.upstream_requests()[0].body["stream_options"]["include_usage"], true);
    let totals = app.ledger_after(1).await;
    assert_eq!(totals[0].output_tokens, 20);
    assert!(totals[0].input_tokens > 0);
}

#[tokio::test]
async fn usage_chunk_is_not_sent_to_a_client_that_did_not_ask() {
    let app = spawn_app().await;
    let (_, _, events) = app.post_sse("/v1/chat/completions", &chat_body("gpt", true)).await;
    let chunks = data_of(&events);
    assert!(chunks.iter().all(|c| c.get("usage").is_none_or(Value::is_null)), "{chunks:?}");
    // ...but the ledger still has it.
    assert_eq!(app.ledger_after(1).await[0].output_tokens, 20);
}

#[tokio::test]
async fn first_chunk_reaches_the_client_before_the_upstream_finishes() {
    let app = spawn_with(Options {
        mock: MockConfig {
            record: true,
            chunk_delay: Duration::from_millis(100),
            chunks: 30,
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    let response = app.post("/v1/chat/completions", &chat_body("gpt", true)).await;
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    // The upstream is still sending (30 chunks, 100 ms apart): nothing was buffered.
    let stats = app.mock.stats();
    assert_eq!((stats.streams_started, stats.streams_completed), (1, 0));
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let app = spawn_with(Options {
        mock: MockConfig {
            record: true,
            chunk_delay: Duration::from_millis(50),
            chunks: 200,
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    let response = app.post("/v1/messages", &messages_body("claude", true)).await;
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    eventually(|| async { app.mock.stats().streams_cancelled == 1 }).await;
    assert_eq!(app.mock.stats().streams_completed, 0);
    // What was generated is still accounted for.
    let totals = app.ledger_after(1).await;
    assert_eq!(totals[0].requests, 1);
}

#[tokio::test]
async fn a_stream_that_fails_before_any_byte_falls_back() {
    let app = spawn_config(&format!(
        "{DEFAULT_CONFIG}\n[[models]]\nname = \"chat\"\ntargets = [\"oai/first\", \"ant/second\"]\n"
    ))
    .await;
    // First target: an error event before any content, three times; then a reset stream.
    let error_event =
        (None, json!({"error": {"message": "overloaded", "type": "server_error"}}).to_string());
    for _ in 0..3 {
        app.mock.enqueue(Script::Sse { events: vec![error_event.clone()], delay: Duration::ZERO });
    }
    let (code, headers, events) =
        app.post_sse("/v1/chat/completions", &chat_body("chat", true)).await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-floodgate-provider"], "ant");
    // An OpenAI stream translated from the Anthropic upstream's events.
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let text: String = data_of(&events)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, floodgate_mock_upstream::answer_text(20));
}

#[tokio::test]
async fn a_stream_that_fails_mid_way_ends_with_an_error_event_in_the_clients_format() {
    let app = spawn_app().await;
    let chunk = |content: &str| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
        .to_string()
    };
    app.mock.enqueue(Script::SseThenReset {
        events: vec![(None, chunk("Hel")), (None, chunk("lo"))],
        delay: Duration::ZERO,
    });
    let (code, _, events) = app.post_sse("/v1/chat/completions", &chat_body("gpt", true)).await;
    assert_eq!(code, 200);
    let chunks = data_of(&events);
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "Hel");
    let error = chunks.iter().find(|c| c.get("error").is_some()).expect("an error event");
    assert!(error["error"]["message"].as_str().unwrap().contains("broke off"), "{error}");
    assert_eq!(events.last().unwrap().data, "[DONE]");

    // Anthropic client, OpenAI upstream failing mid-way: an Anthropic `error` event.
    app.mock
        .enqueue(Script::SseThenReset { events: vec![(None, chunk("Hi"))], delay: Duration::ZERO });
    let (_, _, events) = app.post_sse("/v1/messages", &messages_body("gpt", true)).await;
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let data: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(data["type"], "error");
}

#[tokio::test]
async fn http2_prior_knowledge_multiplexes_streams_to_the_upstream() {
    let app = spawn_with(Options {
        config: format!(
            "{DEFAULT_CONFIG}\n[[providers]]\nname = \"h2\"\nkind = \"openai-compatible\"\nbase_url = \"{{openai}}\"\nkeys = [\"h2-key\"]\nhttp2_prior_knowledge = true\n\n[[models]]\nname = \"h2\"\ntargets = [\"h2/x\"]\n"
        ),
        mock: MockConfig { record: true, chunk_delay: Duration::from_millis(100), chunks: 5, ..MockConfig::default() },
        ..Options::default()
    })
    .await;
    // More concurrent streams than hyper's default HTTP/2 stream limit (200).
    let streams: Vec<_> = (0..300)
        .map(|_| {
            let http = app.http.clone();
            let url = app.url("/v1/chat/completions");
            tokio::spawn(async move {
                let response = http.post(url).json(&chat_body("h2", true)).send().await.unwrap();
                parse_sse(&response.bytes().await.unwrap())
            })
        })
        .collect();
    for stream in streams {
        let events = stream.await.unwrap();
        assert_eq!(events.last().unwrap().data, "[DONE]");
    }
    let requests = app.upstream_requests();
    assert_eq!(requests.len(), 300);
    assert!(requests.iter().all(|r| r.version == "HTTP/2.0"), "{:?}", requests[0].version);
    assert_eq!(app.mock.stats().streams_completed, 300);
}
