//! Scripted answers: status, JSON, SSE, aborted SSE, hang, reset, delay, and queue order.

use std::time::{Duration, Instant};

use floodgate_mock_upstream::Script;
use serde_json::json;

use crate::common::{
    anthropic, builder, client, gemini, openai, send, send_json, start, wait_for_stats,
};

fn chat() -> serde_json::Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn events(list: &[(Option<&str>, &str)]) -> Vec<(Option<String>, String)> {
    list.iter().map(|(name, data)| (name.map(str::to_owned), (*data).to_owned())).collect()
}

/// The whole error chain of an error, for assertions and messages.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(error) = source {
        text.push_str(": ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text
}

#[tokio::test]
async fn status_script_sends_status_headers_and_body() {
    let server = start(3).await;
    let body = json!({"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}});
    server.enqueue(Script::Status {
        status: 429,
        headers: vec![("retry-after".into(), "7".into()), ("x-extra".into(), "yes".into())],
        body: body.clone(),
    });
    let response =
        openai(&server, &client(), "/chat/completions").json(&chat()).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.headers()["x-extra"], "yes");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.json::<serde_json::Value>().await.unwrap(), body);
    assert_eq!(server.pending_scripts(), 0);
}

#[tokio::test]
async fn status_script_with_a_string_body_sends_raw_text() {
    let server = start(3).await;
    server.enqueue(Script::Status {
        status: 502,
        headers: vec![("content-type".into(), "text/html".into())],
        body: json!("<html>Bad Gateway</html>"),
    });
    let (status, content_type, body) =
        send(openai(&server, &client(), "/chat/completions").json(&chat())).await;
    assert_eq!(
        (status, content_type.as_str(), body.as_str()),
        (502, "text/html", "<html>Bad Gateway</html>")
    );
}

#[tokio::test]
async fn json_script_answers_even_an_invalid_body() {
    let server = start(3).await;
    let answer = json!({"anything": ["goes", 1]});
    server.enqueue(Script::Json(answer.clone()));
    let (status, body) =
        send_json(openai(&server, &client(), "/chat/completions").body("not json")).await;
    assert_eq!((status, body), (200, answer));
}

#[tokio::test]
async fn sse_script_sends_the_exact_transcript() {
    let server = start(3).await;
    let list =
        events(&[(Some("message_start"), "{\"a\":1}"), (None, "two\nlines"), (None, "[DONE]")]);
    server.enqueue(Script::Sse { events: list, delay: Duration::ZERO });
    let (status, content_type, body) = send(anthropic(&server, &client()).json(&json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/event-stream");
    assert_eq!(
        body,
        "event: message_start\ndata: {\"a\":1}\n\ndata: two\ndata: lines\n\ndata: [DONE]\n\n"
    );
    let stats = server.stats();
    assert_eq!(
        (stats.streams_started, stats.streams_completed, stats.streams_cancelled),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn sse_script_delay_paces_events() {
    let server = start(3).await;
    let list = events(&[(None, "1"), (None, "2"), (None, "3")]);
    server.enqueue(Script::Sse { events: list, delay: Duration::from_millis(100) });
    let started = Instant::now();
    let (_, _, body) = send(openai(&server, &client(), "/chat/completions").json(&chat())).await;
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    assert_eq!(body, "data: 1\n\ndata: 2\n\ndata: 3\n\n");
}

#[tokio::test]
async fn sse_then_reset_delivers_events_then_breaks_the_body() {
    let server = start(3).await;
    let list = events(&[(None, "first"), (None, "second")]);
    server.enqueue(Script::SseThenReset { events: list, delay: Duration::ZERO });
    let mut response =
        openai(&server, &client(), "/chat/completions").json(&chat()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => panic!("the body ended cleanly"),
            Err(error) => break error,
        }
    };
    assert_eq!(String::from_utf8(received).unwrap(), "data: first\n\ndata: second\n\n");
    assert!(error.is_body() || error.is_decode(), "{}", chain(&error));
}

#[tokio::test]
async fn hang_script_never_answers_and_counts_as_hung() {
    let server = start(3).await;
    server.enqueue(Script::Hang);
    let client = builder().timeout(Duration::from_millis(300)).build().unwrap();
    let request = openai(&server, &client, "/chat/completions").json(&chat()).send();
    let (result, stats) = tokio::join!(request, wait_for_stats(&server, |stats| stats.hung == 1));
    assert_eq!(stats.hung, 1);
    let error = result.unwrap_err();
    assert!(error.is_timeout(), "{}", chain(&error));
    let stats = wait_for_stats(&server, |stats| stats.hung == 0).await;
    assert_eq!(stats.hung, 0, "the hang ends when the client goes away");
}

#[tokio::test]
async fn reset_script_drops_the_connection_without_a_response() {
    let server = start(3).await;
    server.enqueue(Script::Reset);
    let started = Instant::now();
    let error =
        openai(&server, &client(), "/chat/completions").json(&chat()).send().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!error.is_timeout());
    let text = chain(&error);
    assert!(text.contains("Connection reset by peer"), "{text}");
    // The mock keeps serving other connections.
    let (status, _) =
        send_json(openai(&server, &client(), "/chat/completions").json(&chat())).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn delay_script_waits_then_plays_the_inner_script() {
    let server = start(3).await;
    server.enqueue(Script::Delay(
        Duration::from_millis(200),
        Box::new(Script::Json(json!({"ok": 1}))),
    ));
    let started = Instant::now();
    let (status, body) =
        send_json(openai(&server, &client(), "/chat/completions").json(&chat())).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!((status, body), (200, json!({"ok": 1})));
}

#[tokio::test]
async fn scripts_are_played_in_order_across_routes_then_defaults_resume() {
    let server = start(3).await;
    let client = client();
    server.enqueue(Script::Json(json!({"n": 1})));
    server.enqueue(Script::Json(json!({"n": 2})));
    server.enqueue(Script::Json(json!({"n": 3})));
    assert_eq!(server.pending_scripts(), 3);

    let (_, body) = send_json(anthropic(&server, &client).json(&json!({}))).await;
    assert_eq!(body, json!({"n": 1}));
    let (_, body) = send_json(openai(&server, &client, "/embeddings").json(&json!({}))).await;
    assert_eq!(body, json!({"n": 2}));
    let (_, body) = send_json(gemini(&server, &client, "m:generateContent").json(&json!({}))).await;
    assert_eq!(body, json!({"n": 3}));
    let (_, body) = send_json(openai(&server, &client, "/chat/completions").json(&chat())).await;
    assert_eq!(body["object"], "chat.completion");
}

#[tokio::test]
async fn models_and_health_do_not_consume_scripts_and_bad_keys_do_not_either() {
    let server = start(3).await;
    let client = client();
    server.enqueue(Script::Json(json!({"n": 1})));
    let (status, _, _) = send(client.get(format!("{}/health", server.base_url()))).await;
    assert_eq!(status, 200);
    let models = client
        .get(format!("{}/models", server.openai_base_url()))
        .header("authorization", "Bearer sk-x");
    assert_eq!(send(models).await.0, 200);
    let bad_key = client
        .post(format!("{}/chat/completions", server.openai_base_url()))
        .header("authorization", "Bearer invalid-key")
        .json(&chat());
    assert_eq!(send(bad_key).await.0, 401);
    assert_eq!(server.pending_scripts(), 1);
}

#[tokio::test]
async fn stream_dropped_by_the_client_counts_as_cancelled() {
    let server = start(3).await;
    let list: Vec<_> = (0..50).map(|n| (None, n.to_string())).collect();
    server.enqueue(Script::Sse { events: list, delay: Duration::from_millis(20) });
    let mut response =
        openai(&server, &client(), "/chat/completions").json(&chat()).send().await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: 0\n\n");
    drop(response);
    let stats = wait_for_stats(&server, |stats| stats.streams_cancelled == 1).await;
    assert_eq!(
        (stats.streams_started, stats.streams_completed, stats.streams_cancelled),
        (1, 0, 1)
    );
}
