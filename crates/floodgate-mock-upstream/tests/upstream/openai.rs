//! OpenAI routes: chat completions (plain, streamed, tools), embeddings, models, bad bodies.

use base64::Engine as _;
use floodgate_mock_upstream::embedding_vector;
use serde_json::{Value, json};

use crate::common::{
    client, floats, openai, send, send_json, sse_json, start, zero_created, zero_created_raw,
};

fn chat_request() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello there"}
        ]
    })
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }},
        {"type": "function", "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {}}
        }}
    ])
}

/// The usage object for these counts, with every detail at 0.
fn usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// A `chat.completion.chunk` of the first answer of a fresh mock.
fn chunk(model: &str, choices: Value, usage: Option<Value>) -> Value {
    let mut chunk = json!({
        "id": "chatcmpl-mock000000000001",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
        "choices": choices
    });
    if let Some(usage) = usage {
        chunk["usage"] = usage;
    }
    chunk
}

fn delta(delta: Value, finish_reason: Value) -> Value {
    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}])
}

#[tokio::test]
async fn chat_completion_has_the_documented_shape() {
    let server = start(3).await;
    let (status, content_type, body) =
        send(openai(&server, &client(), "/chat/completions").json(&chat_request())).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let mut body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    zero_created(&mut body);
    // 14 + 11 characters of message text: ceil(25 / 4) = 7 prompt tokens.
    let expected = json!({
        "id": "chatcmpl-mock000000000001",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "mock reply from",
                "refusal": null,
                "annotations": []
            },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": usage(7, 3),
        "service_tier": "default",
        "system_fingerprint": "fp_mock"
    });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn default_answer_has_twenty_words() {
    let server = start(20).await;
    let (status, body) =
        send_json(openai(&server, &client(), "/chat/completions").json(&chat_request())).await;
    assert_eq!(status, 200);
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content, floodgate_mock_upstream::answer_text(20));
    assert_eq!(content.split(' ').count(), 20);
    assert_eq!(body["usage"]["completion_tokens"], 20);
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_a_usage_chunk_and_done() {
    let server = start(3).await;
    let mut request = chat_request();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let (status, content_type, body) =
        send(openai(&server, &client(), "/chat/completions").json(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/event-stream");
    let mut events = sse_json(&body);
    events.iter_mut().for_each(zero_created);
    let m = "gpt-4o-mini";
    let null = Some(Value::Null);
    let expected = vec![
        chunk(
            m,
            delta(json!({"role": "assistant", "content": "", "refusal": null}), json!(null)),
            null.clone(),
        ),
        chunk(m, delta(json!({"content": "mock"}), json!(null)), null.clone()),
        chunk(m, delta(json!({"content": " reply"}), json!(null)), null.clone()),
        chunk(m, delta(json!({"content": " from"}), json!(null)), null.clone()),
        chunk(m, delta(json!({}), json!("stop")), null),
        chunk(m, json!([]), Some(usage(7, 3))),
        json!("[DONE]"),
    ];
    assert_eq!(events, expected);
    insta::assert_snapshot!("openai_text_stream", zero_created_raw(&body));
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_member() {
    let server = start(2).await;
    let mut request = chat_request();
    request["stream"] = json!(true);
    let (_, _, body) = send(openai(&server, &client(), "/chat/completions").json(&request)).await;
    let mut events = sse_json(&body);
    events.iter_mut().for_each(zero_created);
    let m = "gpt-4o-mini";
    let expected = vec![
        chunk(
            m,
            delta(json!({"role": "assistant", "content": "", "refusal": null}), json!(null)),
            None,
        ),
        chunk(m, delta(json!({"content": "mock"}), json!(null)), None),
        chunk(m, delta(json!({"content": " reply"}), json!(null)), None),
        chunk(m, delta(json!({}), json!("stop")), None),
        json!("[DONE]"),
    ];
    assert_eq!(events, expected);
    assert!(!body.contains("usage"));
    let stats = server.stats();
    assert_eq!((stats.streams_started, stats.streams_completed), (1, 1));
}

#[tokio::test]
async fn tools_give_a_tool_call_to_the_first_tool() {
    let server = start(3).await;
    let request = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": tools(),
        "tool_choice": "auto"
    });
    let (status, mut body) =
        send_json(openai(&server, &client(), "/chat/completions").json(&request)).await;
    assert_eq!(status, 200);
    zero_created(&mut body);
    let expected = json!({
        "id": "chatcmpl-mock000000000001",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": null,
                "refusal": null,
                "tool_calls": [{
                    "id": "call_mock000000000001",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"mock\":true}"}
                }],
                "annotations": []
            },
            "logprobs": null,
            "finish_reason": "tool_calls"
        }],
        // "Weather in Paris?" has 17 characters: 5 prompt tokens; a tool call counts 4.
        "usage": usage(5, 4),
        "service_tier": "default",
        "system_fingerprint": "fp_mock"
    });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn forced_tool_choice_none_and_tool_results() {
    let server = start(3).await;
    let client = client();
    let call = |tool_choice: Value, messages: Value| {
        let request = json!({
            "model": "gpt-4o", "messages": messages, "tools": tools(), "tool_choice": tool_choice
        });
        send_json(openai(&server, &client, "/chat/completions").json(&request))
    };
    let user = json!([{"role": "user", "content": "What time is it?"}]);

    let forced = json!({"type": "function", "function": {"name": "get_time"}});
    let (_, body) = call(forced, user.clone()).await;
    assert_eq!(body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_time");

    let (_, body) = call(json!("none"), user).await;
    assert_eq!(body["choices"][0]["message"]["content"], "mock reply from");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());

    let after_result = json!([
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"}
    ]);
    let (_, body) = call(json!("auto"), after_result).await;
    assert_eq!(body["choices"][0]["message"]["content"], "mock reply from");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn streamed_tool_call_splits_arguments_over_two_chunks() {
    let server = start(3).await;
    let request = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": tools(),
        "stream": true
    });
    let (_, _, body) = send(openai(&server, &client(), "/chat/completions").json(&request)).await;
    let mut events = sse_json(&body);
    events.iter_mut().for_each(zero_created);
    let m = "gpt-4o";
    let head = json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [{
            "index": 0,
            "id": "call_mock000000000001",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""}
        }],
        "refusal": null
    });
    let part = |arguments: &str| json!({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]});
    let expected = vec![
        chunk(m, delta(head, json!(null)), None),
        chunk(m, delta(part("{\"mock\":"), json!(null)), None),
        chunk(m, delta(part("true}"), json!(null)), None),
        chunk(m, delta(json!({}), json!("tool_calls")), None),
        json!("[DONE]"),
    ];
    assert_eq!(events, expected);
    insta::assert_snapshot!("openai_tool_stream", zero_created_raw(&body));
}

#[tokio::test]
async fn max_tokens_below_the_answer_length_gives_finish_reason_length() {
    let server = start(20).await;
    let client = client();
    for field in ["max_tokens", "max_completion_tokens"] {
        let mut request = chat_request();
        request[field] = json!(2);
        let (_, body) =
            send_json(openai(&server, &client, "/chat/completions").json(&request)).await;
        assert_eq!(body["choices"][0]["message"]["content"], "mock reply");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], 2);
    }
}

#[tokio::test]
async fn embeddings_are_deterministic_vectors_of_the_asked_dimensions() {
    let server = start(3).await;
    let request =
        json!({"model": "text-embedding-3-small", "input": ["hello", "world"], "dimensions": 8});
    let (status, body) = send_json(openai(&server, &client(), "/embeddings").json(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");
    // "hello" + "world": ceil(10 / 4) = 3 tokens.
    assert_eq!(body["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (index, (item, text)) in data.iter().zip(["hello", "world"]).enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], index);
        assert_eq!(item.as_object().unwrap().len(), 3, "{item}");
        assert_eq!(floats(&item["embedding"]), embedding_vector(text, 8));
    }
}

#[tokio::test]
async fn embeddings_default_to_sixteen_dimensions_and_accept_token_ids() {
    let server = start(3).await;
    let client = client();
    let request = json!({"model": "m", "input": "one text"});
    let (_, body) = send_json(openai(&server, &client, "/embeddings").json(&request)).await;
    assert_eq!(floats(&body["data"][0]["embedding"]), embedding_vector("one text", 16));
    assert_eq!(body["usage"]["prompt_tokens"], 2);

    let request = json!({"model": "m", "input": [[1, 2, 3], [4]]});
    let (status, body) = send_json(openai(&server, &client, "/embeddings").json(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(floats(&body["data"][1]["embedding"]), embedding_vector("4", 16));
    assert_eq!(body["usage"]["prompt_tokens"], 4);
}

#[tokio::test]
async fn base64_embeddings_are_little_endian_f32() {
    let server = start(3).await;
    let request =
        json!({"model": "m", "input": "hello", "encoding_format": "base64", "dimensions": 4});
    let (_, body) = send_json(openai(&server, &client(), "/embeddings").json(&request)).await;
    let encoded = body["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let values: Vec<f32> =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(values, embedding_vector("hello", 4));
}

#[tokio::test]
async fn invalid_embedding_requests_get_400() {
    let server = start(3).await;
    let client = client();
    for request in [
        json!({"input": "x"}),
        json!({"model": "m"}),
        json!({"model": "m", "input": []}),
        json!({"model": "m", "input": [{"a": 1}]}),
        json!({"model": "m", "input": "x", "dimensions": 0}),
        json!({"model": "m", "input": "x", "encoding_format": "hex"}),
    ] {
        let (status, body) =
            send_json(openai(&server, &client, "/embeddings").json(&request)).await;
        assert_eq!(status, 400, "{request}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{request}");
    }
}

#[tokio::test]
async fn models_list_has_the_openai_shape() {
    let server = start(3).await;
    let request = client()
        .get(format!("{}/models", server.openai_base_url()))
        .header("authorization", "Bearer sk-test");
    let (status, body) = send_json(request).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let first = &body["data"][0];
    assert_eq!(
        first,
        &json!({"id": "gpt-4o", "object": "model", "created": 1_715_367_049, "owned_by": "system"})
    );
}

#[tokio::test]
async fn invalid_json_and_missing_fields_get_400_in_openai_shape() {
    let server = start(3).await;
    let client = client();
    let request = openai(&server, &client, "/chat/completions")
        .header("content-type", "application/json")
        .body("{not json");
    let (status, body) = send_json(request).await;
    assert_eq!(status, 400);
    let error = body["error"].as_object().unwrap();
    assert_eq!(error.len(), 4);
    assert!(error["message"].as_str().unwrap().starts_with("We could not parse the JSON body"));
    assert_eq!(
        (&error["type"], &error["param"], &error["code"]),
        (&json!("invalid_request_error"), &Value::Null, &Value::Null)
    );

    let (status, body) =
        send_json(openai(&server, &client, "/chat/completions").json(&json!({"messages": []})))
            .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "you must provide a model parameter");

    let (status, body) =
        send_json(openai(&server, &client, "/chat/completions").json(&json!({"model": "m"}))).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "Missing required parameter: 'messages'.");
}
