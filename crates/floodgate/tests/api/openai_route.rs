//! `POST /v1/chat/completions` and `/v1/embeddings` against each upstream format.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn same_format_passes_unknown_fields_through_both_ways() {
    let app = spawn_app().await;
    let mut body = chat_body("gpt", false);
    body["seed"] = json!(7);
    body["logit_bias"] = json!({"50256": -100});
    body["messages"][1]["x_vendor_field"] = json!({"keep": true});
    let (code, headers, answer) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(headers["x-floodgate-provider"], "oai");
    let sent = &app.upstream_requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer oai-key-0123456789abcdef"));
    assert_eq!(sent.body["model"], "gpt-4o-mini", "the alias is replaced by the target's model");
    assert_eq!(sent.body["seed"], 7);
    assert_eq!(sent.body["logit_bias"], json!({"50256": -100}));
    assert_eq!(sent.body["messages"][1]["x_vendor_field"], json!({"keep": true}));
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        floodgate_mock_upstream::answer_text(20)
    );
    assert_eq!(answer["usage"]["completion_tokens"], 20);
}

#[tokio::test]
async fn openai_client_reaches_anthropic_with_tools_and_multipart_content() {
    let app = spawn_app().await;
    let body = json!({
        "model": "claude",
        "max_tokens": 300,
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and what is the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "required"
    });
    let (code, _, answer) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(code, 200, "{answer}");
    let sent = &app.upstream_requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("ant-key-0123456789abcdef"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.body["system"], "Use tools.");
    assert_eq!(sent.body["max_tokens"], 300);
    assert_eq!(sent.body["tool_choice"], json!({"type": "any"}));
    assert_eq!(sent.body["tools"][0]["input_schema"]["required"], json!(["city"]));
    assert_eq!(
        sent.body["messages"][0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );
    // The mock calls the tool; the OpenAI client sees a tool call.
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"mock": true})
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");

    // The tool result goes back as an Anthropic tool_result, and a text answer comes back.
    let id = call["id"].as_str().unwrap();
    let mut follow_up = body.clone();
    let messages = follow_up["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "{\"temp_c\": 21}"}));
    let (code, _, answer) = app.post_json("/v1/chat/completions", &follow_up).await;
    assert_eq!(code, 200, "{answer}");
    let sent = &app.upstream_requests()[1];
    let last = sent.body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], id);
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        floodgate_mock_upstream::answer_text(20)
    );
}

#[tokio::test]
async fn openai_client_streams_from_anthropic_and_gemini() {
    let app = spawn_app().await;
    for model in ["claude", "gemini"] {
        let mut body = chat_body(model, true);
        body["stream_options"] = json!({"include_usage": true});
        let (code, headers, events) = app.post_sse("/v1/chat/completions", &body).await;
        assert_eq!(code, 200);
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(events.last().unwrap().data, "[DONE]", "{model}");
        let chunks = data_of(&events);
        assert!(
            chunks.iter().all(|c| c["object"] == "chat.completion.chunk"),
            "{model}: {chunks:?}"
        );
        let text: String =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, floodgate_mock_upstream::answer_text(20), "{model}");
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("stop")], "{model}");
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage["completion_tokens"], 20, "{model}: {usage}");
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    }
    let gemini = &app.upstream_requests()[1];
    assert_eq!(gemini.path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_eq!(gemini.query.as_deref(), Some("alt=sse"));
    assert_eq!(gemini.header("x-goog-api-key"), Some("gem-key-0123456789abcdef"));
    assert_eq!(gemini.body["systemInstruction"]["parts"][0]["text"], "You are terse.");
}

#[tokio::test]
async fn response_format_reaches_every_upstream() {
    let app = spawn_app().await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]});
    for model in ["gpt", "claude", "gemini"] {
        let mut body = chat_body(model, false);
        body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": true}});
        let (code, _, answer) = app.post_json("/v1/chat/completions", &body).await;
        assert_eq!(code, 200, "{model}: {answer}");
    }
    let sent = app.upstream_requests();
    assert_eq!(sent[0].body["response_format"]["json_schema"]["schema"], schema);
    assert_eq!(sent[1].body["tool_choice"], json!({"type": "tool", "name": "json_response"}));
    assert_eq!(sent[2].body["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(sent[2].body["generationConfig"]["responseJsonSchema"], schema);
}

#[tokio::test]
async fn embeddings_from_openai_and_gemini() {
    let config = format!(
        "{DEFAULT_CONFIG}\n[[models]]\nname = \"gembed\"\ntargets = [\"gem/text-embedding-004\"]\n\n[[models]]\nname = \"nembed\"\ntargets = [\"ant/none\"]\n"
    );
    let app = spawn_config(&config).await;
    let (code, headers, body) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": "embed", "input": ["a", "b"], "dimensions": 4}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-floodgate-provider"], "oai");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 4);

    let (code, headers, body) =
        app.post_json("/v1/embeddings", &json!({"model": "gembed", "input": "hello"})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-floodgate-provider"], "gem");
    assert_eq!(body["object"], "list");
    let expected: Vec<f32> = floodgate_mock_upstream::embedding_vector("hello", 16);
    let got: Vec<f32> = body["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        app.upstream_requests()[1].path,
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );

    // base64 requested by the client, served by Gemini: encoded by the gateway.
    let (code, _, body) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": "gembed", "input": "hello", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(code, 200);
    assert!(body["data"][0]["embedding"].is_string());

    // An upstream without embeddings: a clear error naming it.
    let (code, _, body) =
        app.post_json("/v1/embeddings", &json!({"model": "nembed", "input": "x"})).await;
    assert_eq!(code, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("has no embeddings API"), "{body}");
}
