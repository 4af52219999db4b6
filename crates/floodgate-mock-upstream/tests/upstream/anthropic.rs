//! Anthropic routes: messages (plain, streamed, tools), required header and fields, models.

use serde_json::{Value, json};

use crate::common::{anthropic, client, named_events as events, send, send_json, start};

fn request() -> Value {
    json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello there"}]
    })
}

fn tools() -> Value {
    json!([
        {"name": "get_weather", "description": "Current weather",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
    ])
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output
    })
}

fn message_start(model: &str, input_tokens: u64) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_mock000000000001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
        "usage": usage(input_tokens, 1)
    }})
}

#[tokio::test]
async fn message_has_the_documented_shape() {
    let server = start(3).await;
    let (status, content_type, body) = send(anthropic(&server, &client()).json(&request())).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let body: Value = serde_json::from_str(&body).unwrap();
    // "Be brief." + "Hello there": ceil(20 / 4) = 5 input tokens.
    let expected = json!({
        "id": "msg_mock000000000001",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [{"type": "text", "text": "mock reply from"}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": usage(5, 3)
    });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn stream_has_every_documented_event_in_order() {
    let server = start(3).await;
    let mut request = request();
    request["stream"] = json!(true);
    let (status, content_type, body) = send(anthropic(&server, &client()).json(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/event-stream");
    let text = |text: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}});
    let expected = vec![
        message_start("claude-sonnet-4-20250514", 5),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        text("mock"),
        text(" reply"),
        text(" from"),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 3}}),
        json!({"type": "message_stop"}),
    ];
    assert_eq!(events(&body), expected);
    insta::assert_snapshot!("anthropic_text_stream", body);
}

#[tokio::test]
async fn tools_give_a_tool_use_block() {
    let server = start(3).await;
    let request = json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 100,
        "tools": tools(),
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}]
    });
    let (status, body) = send_json(anthropic(&server, &client()).json(&request)).await;
    assert_eq!(status, 200);
    let expected = json!({
        "id": "msg_mock000000000001",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [{
            "type": "tool_use",
            "id": "toolu_mock000000000001",
            "name": "get_weather",
            "input": {"mock": true}
        }],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": usage(2, 4)
    });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn streamed_tool_use_splits_input_json_in_two() {
    let server = start(3).await;
    let request = json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 100,
        "stream": true,
        "tools": tools(),
        "messages": [{"role": "user", "content": "Weather?"}]
    });
    let (_, _, body) = send(anthropic(&server, &client()).json(&request)).await;
    let part = |json: &str| {
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "input_json_delta", "partial_json": json}})
    };
    let expected = vec![
        message_start("claude-sonnet-4-20250514", 2),
        json!({"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_mock000000000001", "name": "get_weather", "input": {}
        }}),
        json!({"type": "ping"}),
        part("{\"mock\":"),
        part("true}"),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"output_tokens": 4}}),
        json!({"type": "message_stop"}),
    ];
    assert_eq!(events(&body), expected);
    insta::assert_snapshot!("anthropic_tool_stream", body);
}

#[tokio::test]
async fn forced_tool_none_and_tool_results() {
    let server = start(3).await;
    let client = client();
    let call = |tool_choice: Value, messages: Value| {
        let request = json!({
            "model": "claude-sonnet-4-20250514", "max_tokens": 100,
            "tools": tools(), "tool_choice": tool_choice, "messages": messages
        });
        send_json(anthropic(&server, &client).json(&request))
    };
    let user = json!([{"role": "user", "content": "Time?"}]);

    let (_, body) = call(json!({"type": "tool", "name": "get_time"}), user.clone()).await;
    assert_eq!(body["content"][0]["name"], "get_time");

    let (_, body) = call(json!({"type": "any"}), user.clone()).await;
    assert_eq!(body["content"][0]["name"], "get_weather");

    let (_, body) = call(json!({"type": "none"}), user).await;
    assert_eq!(body["content"], json!([{"type": "text", "text": "mock reply from"}]));
    assert_eq!(body["stop_reason"], "end_turn");

    let after_result = json!([
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "noon"}
        ]}
    ]);
    let (_, body) = call(json!({"type": "auto"}), after_result).await;
    assert_eq!(body["content"], json!([{"type": "text", "text": "mock reply from"}]));
    // "Time?" + "noon": ceil(9 / 4) = 3 input tokens.
    assert_eq!(body["usage"]["input_tokens"], 3);
}

#[tokio::test]
async fn small_max_tokens_stops_with_max_tokens() {
    let server = start(20).await;
    let mut request = request();
    request["max_tokens"] = json!(2);
    let (_, body) = send_json(anthropic(&server, &client()).json(&request)).await;
    assert_eq!(body["content"][0]["text"], "mock reply");
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn missing_version_header_and_fields_get_400_in_anthropic_shape() {
    let server = start(3).await;
    let client = client();
    let unversioned = client
        .post(format!("{}/v1/messages", server.base_url()))
        .header("x-api-key", "sk-ant-test")
        .json(&request());
    let (status, body) = send_json(unversioned).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "anthropic-version: header is required"
        }})
    );

    for (field, message) in [
        ("max_tokens", "max_tokens: Field required"),
        ("model", "model: Field required"),
        ("messages", "messages: Field required"),
    ] {
        let mut request = request();
        request.as_object_mut().unwrap().remove(field);
        let (status, body) = send_json(anthropic(&server, &client).json(&request)).await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        );
    }

    let (status, body) = send_json(anthropic(&server, &client).body("{oops")).await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn models_list_has_the_anthropic_shape_with_a_version_header() {
    let server = start(3).await;
    let request = client()
        .get(format!("{}/v1/models", server.base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01");
    let (status, body) = send_json(request).await;
    assert_eq!(status, 200);
    assert_eq!(body["has_more"], false);
    assert_eq!(body["first_id"], "claude-sonnet-4-20250514");
    assert_eq!(body["last_id"], "claude-3-5-haiku-20241022");
    assert_eq!(
        body["data"][0],
        json!({
            "type": "model",
            "id": "claude-sonnet-4-20250514",
            "display_name": "Claude Sonnet 4",
            "created_at": "2025-05-22T00:00:00Z"
        })
    );
    assert!(body.get("object").is_none());
}
