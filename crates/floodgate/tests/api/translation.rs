//! Cross-format translation end to end: the upstream plays a transcript shaped
//! like its provider's documentation, the client reads it in its own format.

use std::time::Duration;

use floodgate_mock_upstream::Script;
use serde_json::{Value, json};

use crate::helpers::*;

fn sse(events: &[(&str, Value)]) -> Script {
    Script::Sse {
        events: events
            .iter()
            .map(|(name, data)| (Some(name.to_string()), data.to_string()))
            .collect(),
        delay: Duration::ZERO,
    }
}

/// Anthropic's documented stream: thinking with a signature, a ping, text,
/// and a tool call whose JSON arrives in pieces.
fn anthropic_transcript() -> Script {
    sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": "claude-haiku-4-5", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 472, "output_tokens": 2, "cache_read_input_tokens": 100}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "The user wants weather."}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me "}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "check."}}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_01T1x", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 2})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 89}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ])
}

#[tokio::test]
async fn anthropic_stream_with_thinking_and_tool_use_reaches_an_openai_client() {
    let app = spawn_app().await;
    app.mock.enqueue(anthropic_transcript());
    let mut body = chat_body("claude", true);
    body["stream_options"] = json!({"include_usage": true});
    let (code, _, events) = app.post_sse("/v1/chat/completions", &body).await;
    assert_eq!(code, 200);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks = data_of(&events);
    assert!(
        chunks.iter().all(|c| c["id"] == "msg_01" && c["model"] == "claude-haiku-4-5"),
        "{chunks:#?}"
    );
    let delta = |field: &str| -> String {
        chunks.iter().filter_map(|c| c["choices"][0]["delta"][field].as_str()).collect()
    };
    assert_eq!(delta("reasoning_content"), "The user wants weather.");
    assert_eq!(delta("content"), "Let me check.");
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(calls[0]["id"], "toolu_01T1x");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: String =
        calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "Paris"}));
    let finishes: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finishes, [&json!("tool_calls")]);
    let usage = &chunks.last().unwrap()["usage"];
    // Anthropic counts cache reads apart; OpenAI's prompt_tokens includes them.
    assert_eq!(usage["prompt_tokens"], 572);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 100);
    assert_eq!(usage["completion_tokens"], 89);
    let totals = app.ledger_after(1).await;
    assert_eq!((totals[0].input_tokens, totals[0].output_tokens), (572, 89));
}

#[tokio::test]
async fn anthropic_client_gets_the_same_transcript_verbatim() {
    let app = spawn_app().await;
    app.mock.enqueue(anthropic_transcript());
    let (_, _, events) = app.post_sse("/v1/messages", &messages_body("claude", true)).await;
    let Script::Sse { events: sent, .. } = anthropic_transcript() else { unreachable!() };
    let received: Vec<(Option<String>, String)> =
        events.into_iter().map(|e| (e.event, e.data)).collect();
    assert_eq!(received, sent, "same-format streams pass through byte for byte");
}

#[tokio::test]
async fn openai_tool_call_stream_reaches_an_anthropic_client() {
    let app = spawn_app().await;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-4o-mini",
               "system_fingerprint": "fp_1", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    app.mock.enqueue(Script::Sse {
        events: [
            chunk(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": ""}}], "refusal": null}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Paris\"}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}}),
        ]
        .iter()
        .map(|c| (None, c.to_string()))
        .chain([(None, "[DONE]".to_string())])
        .collect(),
        delay: Duration::ZERO,
    });
    let (code, _, events) = app.post_sse("/v1/messages", &messages_body("gpt", true)).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {}})
    );
    let json_text: String =
        data.iter().filter_map(|d| d["delta"]["partial_json"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&json_text).unwrap(), json!({"city": "Paris"}));
    assert_eq!(data[5]["delta"]["stop_reason"], "tool_use");
    assert_eq!(data[5]["usage"]["output_tokens"], 17);
    assert_eq!(data[5]["usage"]["input_tokens"], 82);
}

#[tokio::test]
async fn gemini_function_call_stream_reaches_an_anthropic_client() {
    let app = spawn_app().await;
    let usage = json!({"promptTokenCount": 31, "candidatesTokenCount": 9, "totalTokenCount": 40});
    app.mock.enqueue(Script::Sse {
        events: vec![
            (None, json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking"}]}, "index": 0}], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash", "responseId": "r-1"}).to_string()),
            (None, json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}, "finishReason": "STOP", "index": 0}], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash", "responseId": "r-1"}).to_string()),
        ],
        delay: Duration::ZERO,
    });
    let (code, _, events) = app.post_sse("/v1/messages", &messages_body("gemini", true)).await;
    assert_eq!(code, 200);
    let data: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    let text: String = data.iter().filter_map(|d| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Checking");
    let tool =
        data.iter().find(|d| d["content_block"]["type"] == "tool_use").expect("a tool_use block");
    assert_eq!(tool["content_block"]["name"], "get_weather");
    let json_text: String =
        data.iter().filter_map(|d| d["delta"]["partial_json"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&json_text).unwrap(), json!({"city": "Paris"}));
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 9);
    assert_eq!(events.last().unwrap().event.as_deref(), Some("message_stop"));
}

#[tokio::test]
async fn upstream_error_shapes_cross_formats() {
    let app = spawn_app().await;
    // Anthropic's error, to an OpenAI client.
    app.mock.enqueue(Script::Status {
        status: 400,
        headers: vec![],
        body: json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages: roles must alternate between \"user\" and \"assistant\""}}),
    });
    let (code, _, body) = app.post_json("/v1/chat/completions", &chat_body("claude", false)).await;
    assert_eq!(code, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("roles must alternate"), "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // Gemini's error, to an Anthropic client.
    app.mock.enqueue(Script::Status {
        status: 400,
        headers: vec![],
        body: json!({"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \"foo\"", "status": "INVALID_ARGUMENT"}}),
    });
    let (code, _, body) = app.post_json("/v1/messages", &messages_body("gemini", false)).await;
    assert_eq!(code, 400);
    assert_eq!(body["type"], "error");
    assert!(body["error"]["message"].as_str().unwrap().contains("Invalid JSON payload"), "{body}");

    // OpenAI's 429s, retried and exhausted, to an Anthropic client: 503 overloaded.
    for _ in 0..3 {
        app.mock.enqueue(Script::Status {
            status: 429,
            headers: vec![("retry-after".into(), "0".into())],
            body: json!({"error": {"message": "Rate limit reached for gpt-4o-mini", "type": "requests", "code": "rate_limit_exceeded"}}),
        });
    }
    let response = app.post("/v1/messages", &messages_body("gpt", false)).await;
    assert_eq!(response.status(), 503);
    let (_, _, body) = json_of(response).await;
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("Rate limit reached"), "{body}");
}

#[tokio::test]
async fn non_streamed_documented_answers_translate() {
    let app = spawn_app().await;
    // Anthropic's documented tool-use answer, to an OpenAI client.
    app.mock.enqueue(Script::Json(json!({
        "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [
            {"type": "text", "text": "I'll check."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 384, "output_tokens": 91, "cache_creation_input_tokens": 12, "cache_read_input_tokens": 0}
    })));
    let (code, _, body) = app.post_json("/v1/chat/completions", &chat_body("claude", false)).await;
    assert_eq!(code, 200, "{body}");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "I'll check.");
    assert_eq!(message["tool_calls"][0]["id"], "toolu_01A09q90qw90lq917835lq9");
    let arguments: Value =
        serde_json::from_str(message["tool_calls"][0]["function"]["arguments"].as_str().unwrap())
            .unwrap();
    assert_eq!(arguments, json!({"location": "San Francisco, CA", "unit": "celsius"}));
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["prompt_tokens"], 396);
    assert_eq!(body["usage"]["completion_tokens"], 91);

    // OpenAI's documented answer with a refusal-free text and logprobs, to an Anthropic client.
    app.mock.enqueue(Script::Json(json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion", "created": 1741569952, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_06737a9306"
    })));
    let (code, _, body) = app.post_json("/v1/messages", &messages_body("gpt", false)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Hello! How can I assist you today?"}])
    );
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(body["usage"]["input_tokens"], 19);
    assert_eq!(body["usage"]["output_tokens"], 10);
}
