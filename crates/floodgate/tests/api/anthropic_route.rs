//! `POST /v1/messages` against each upstream format.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn same_format_passes_the_body_and_beta_headers_through() {
    let app = spawn_app().await;
    let mut body = messages_body("claude", false);
    body["system"] =
        json!([{"type": "text", "text": "Long prompt.", "cache_control": {"type": "ephemeral"}}]);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let response = app
        .http
        .post(app.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (code, _, answer) = json_of(response).await;
    assert_eq!(code, 200, "{answer}");
    let sent = &app.upstream_requests()[0];
    assert_eq!(sent.header("anthropic-beta"), Some("prompt-caching-2024-07-31"));
    assert_eq!(sent.body["system"][0]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(sent.body["thinking"]["budget_tokens"], 1024);
    assert_eq!(sent.body["model"], "claude-haiku-4-5");
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["text"], floodgate_mock_upstream::answer_text(20));
    assert_eq!(answer["stop_reason"], "end_turn");
}

#[tokio::test]
async fn anthropic_client_reaches_openai_and_gemini_with_tools() {
    let app = spawn_app().await;
    for model in ["gpt", "gemini"] {
        let body = json!({
            "model": model,
            "max_tokens": 256,
            "system": "Use tools.",
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}]
        });
        let (code, _, answer) = app.post_json("/v1/messages", &body).await;
        assert_eq!(code, 200, "{model}: {answer}");
        assert_eq!(answer["type"], "message");
        assert_eq!(answer["stop_reason"], "tool_use", "{model}: {answer}");
        let tool_use = answer["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap()
            .clone();
        assert_eq!(tool_use["name"], "get_weather");
        assert_eq!(tool_use["input"], json!({"mock": true}));
        assert!(answer["usage"]["input_tokens"].as_u64().unwrap() > 0);

        // Send the result back as an Anthropic tool_result; a text answer comes back.
        let mut follow = body.clone();
        let messages = follow["messages"].as_array_mut().unwrap();
        messages.push(json!({"role": "assistant", "content": [tool_use.clone()]}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "21 C"}]}));
        let (code, _, answer) = app.post_json("/v1/messages", &follow).await;
        assert_eq!(code, 200, "{model}: {answer}");
        assert_eq!(answer["content"][0]["text"], floodgate_mock_upstream::answer_text(20));
    }
    let sent = app.upstream_requests();
    // OpenAI upstream: system message, tools as functions, tool result as a tool message.
    assert_eq!(sent[0].body["messages"][0], json!({"role": "system", "content": "Use tools."}));
    assert_eq!(sent[0].body["tools"][0]["function"]["name"], "get_weather");
    let tool_message = sent[1].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(tool_message["role"], "tool");
    assert_eq!(tool_message["content"], "21 C");
    // Gemini upstream: a functionResponse naming the function.
    let turn = sent[3].body["contents"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(turn["parts"][0]["functionResponse"]["name"], "get_weather");
}

#[tokio::test]
async fn anthropic_client_streams_from_every_upstream_with_valid_events() {
    let app = spawn_app().await;
    for model in ["claude", "gpt", "gemini"] {
        let (code, headers, events) =
            app.post_sse("/v1/messages", &messages_body(model, true)).await;
        assert_eq!(code, 200, "{model}");
        assert_eq!(headers["content-type"], "text/event-stream");
        let names: Vec<&str> = events
            .iter()
            .map(|e| e.event.as_deref().unwrap_or(""))
            .filter(|n| *n != "ping")
            .collect();
        assert_eq!(names.first(), Some(&"message_start"), "{model}: {names:?}");
        assert_eq!(
            &names[names.len() - 2..],
            ["message_delta", "message_stop"],
            "{model}: {names:?}"
        );
        assert!(
            names.contains(&"content_block_start") && names.contains(&"content_block_stop"),
            "{model}"
        );
        let data: Vec<Value> =
            events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
        let text: String = data.iter().filter_map(|d| d["delta"]["text"].as_str()).collect();
        assert_eq!(text, floodgate_mock_upstream::answer_text(20), "{model}");
        let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{model}");
        assert_eq!(delta["usage"]["output_tokens"], 20, "{model}: {delta}");
    }
}
