//! Gemini routes: generateContent, streamGenerateContent?alt=sse, function calls, embeddings,
//! models, key in the query.

use floodgate_mock_upstream::embedding_vector;
use serde_json::{Value, json};

use crate::common::{client, floats, gemini, send, send_json, sse_json, start};

fn request() -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]
    })
}

fn tools() -> Value {
    json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "Current weather",
         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}},
        {"name": "get_time"}
    ]}])
}

fn usage(prompt: u64, candidates: u64) -> Value {
    json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]
    })
}

/// A `GenerateContentResponse` of the first answer of a fresh mock.
fn generated(part: Value, finish_reason: Option<&str>, usage: Value) -> Value {
    let mut candidate = json!({"content": {"parts": [part], "role": "model"}, "index": 0});
    if let Some(reason) = finish_reason {
        candidate["finishReason"] = json!(reason);
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.0-flash",
        "responseId": "mock000000000001"
    })
}

#[tokio::test]
async fn generate_content_has_the_documented_shape() {
    let server = start(3).await;
    let (status, content_type, body) =
        send(gemini(&server, &client(), "gemini-2.0-flash:generateContent").json(&request())).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let body: Value = serde_json::from_str(&body).unwrap();
    // "Be brief." + "Hello there": ceil(20 / 4) = 5 prompt tokens.
    assert_eq!(body, generated(json!({"text": "mock reply from"}), Some("STOP"), usage(5, 3)));
}

#[tokio::test]
async fn stream_sends_one_chunk_per_word_with_cumulative_usage_and_crlf() {
    let server = start(3).await;
    let target = "gemini-2.0-flash:streamGenerateContent?alt=sse";
    let (status, content_type, body) =
        send(gemini(&server, &client(), target).json(&request())).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/event-stream");
    let expected = vec![
        generated(json!({"text": "mock"}), None, usage(5, 1)),
        generated(json!({"text": " reply"}), None, usage(5, 2)),
        generated(json!({"text": " from"}), Some("STOP"), usage(5, 3)),
    ];
    assert_eq!(sse_json(&body), expected);
    assert_eq!(body.matches("\r\n\r\n").count(), 3);
    assert_eq!(body.matches('\n').count(), 6, "every line ends with CRLF");
    insta::assert_snapshot!("gemini_text_stream", body.replace('\r', "\\r"));
}

#[tokio::test]
async fn stream_without_alt_sse_is_refused() {
    let server = start(3).await;
    let target = "gemini-2.0-flash:streamGenerateContent";
    let (status, body) = send_json(gemini(&server, &client(), target).json(&request())).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(server.stats().streams_started, 0);
}

#[tokio::test]
async fn declared_functions_give_a_function_call() {
    let server = start(3).await;
    let request = json!({
        "contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
        "tools": tools()
    });
    let target = "gemini-2.0-flash:generateContent";
    let (_, body) = send_json(gemini(&server, &client(), target).json(&request)).await;
    let call = json!({"functionCall": {"name": "get_weather", "args": {"mock": true}}});
    assert_eq!(body, generated(call.clone(), Some("STOP"), usage(2, 4)));

    let target = "gemini-2.0-flash:streamGenerateContent?alt=sse";
    let (_, _, body) = send(gemini(&server, &client(), target).json(&request)).await;
    let mut chunks = sse_json(&body);
    assert_eq!(chunks.len(), 1);
    chunks[0]["responseId"] = json!("mock000000000001");
    assert_eq!(chunks[0], generated(call, Some("STOP"), usage(2, 4)));
}

#[tokio::test]
async fn function_calling_modes_and_function_responses() {
    let server = start(3).await;
    let client = client();
    let call = |config: Value, contents: Value| {
        let request = json!({"contents": contents, "tools": tools(), "toolConfig": config});
        send_json(gemini(&server, &client, "gemini-2.0-flash:generateContent").json(&request))
    };
    let user = json!([{"role": "user", "parts": [{"text": "Time?"}]}]);
    let part = |body: &Value| body["candidates"][0]["content"]["parts"][0].clone();

    let forced =
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}});
    let (_, body) = call(forced, user.clone()).await;
    assert_eq!(part(&body)["functionCall"]["name"], "get_time");

    let none = json!({"functionCallingConfig": {"mode": "NONE"}});
    let (_, body) = call(none, user).await;
    assert_eq!(part(&body), json!({"text": "mock reply from"}));

    let after_response = json!([
        {"role": "user", "parts": [{"text": "Time?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_time", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_time", "response": {"time": "noon"}}}]}
    ]);
    let (_, body) = call(json!({"functionCallingConfig": {"mode": "AUTO"}}), after_response).await;
    assert_eq!(part(&body), json!({"text": "mock reply from"}));
}

#[tokio::test]
async fn max_output_tokens_gives_finish_reason_max_tokens() {
    let server = start(20).await;
    let mut request = request();
    request["generationConfig"] = json!({"maxOutputTokens": 2});
    let target = "gemini-2.0-flash:generateContent";
    let (_, body) = send_json(gemini(&server, &client(), target).json(&request)).await;
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], "mock reply");
    assert_eq!(body["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 2);
}

#[tokio::test]
async fn batch_and_single_embeddings() {
    let server = start(3).await;
    let client = client();
    let request = json!({"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "wor"}, {"text": "ld"}]},
         "outputDimensionality": 4}
    ]});
    let target = "text-embedding-004:batchEmbedContents";
    let (status, body) = send_json(gemini(&server, &client, target).json(&request)).await;
    assert_eq!(status, 200);
    let embeddings = body["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    assert_eq!(body.as_object().unwrap().len(), 1);
    assert_eq!(embeddings[0].as_object().unwrap().len(), 1);
    assert_eq!(floats(&embeddings[0]["values"]), embedding_vector("hello", 16));
    assert_eq!(floats(&embeddings[1]["values"]), embedding_vector("world", 4));

    let request = json!({"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 8});
    let target = "text-embedding-004:embedContent";
    let (status, body) = send_json(gemini(&server, &client, target).json(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(floats(&body["embedding"]["values"]), embedding_vector("hello", 8));

    let target = "text-embedding-004:batchEmbedContents";
    let (status, body) =
        send_json(gemini(&server, &client, target).json(&json!({"requests": []}))).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
}

#[tokio::test]
async fn key_in_the_query_is_accepted() {
    let server = start(3).await;
    let url = format!(
        "{}/v1beta/models/gemini-2.0-flash:generateContent?key=AIza-query",
        server.base_url()
    );
    let (status, _) = send_json(client().post(url).json(&request())).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn models_list_and_unknown_methods() {
    let server = start(3).await;
    let client = client();
    let list = client
        .get(format!("{}/v1beta/models", server.base_url()))
        .header("x-goog-api-key", "AIza-test");
    let (status, body) = send_json(list).await;
    assert_eq!(status, 200);
    let first = &body["models"][0];
    assert_eq!(first["name"], "models/gemini-2.0-flash");
    assert_eq!(first["supportedGenerationMethods"], json!(["generateContent", "countTokens"]));

    let (status, body) =
        send_json(gemini(&server, &client, "gemini-2.0-flash:countTokens").json(&request())).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["status"], "NOT_FOUND");

    let (status, body) = send_json(
        gemini(&server, &client, "gemini-2.0-flash:generateContent").json(&json!({"x": 1})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {
            "code": 400,
            "message": "* GenerateContentRequest.contents: contents is not specified",
            "status": "INVALID_ARGUMENT"
        }})
    );
}
