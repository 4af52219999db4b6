//! Every bad-input case answers in the route's own error shape, says what was
//! wrong and what would be valid, and never reaches an upstream.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn malformed_json_says_where() {
    let app = spawn_app().await;
    let response =
        app.post_raw("/v1/chat/completions", "{\"model\": \"gpt\",\n \"messages\": [}").await;
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("not valid JSON") && message.contains("line 2"), "{message}");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = app.post_raw("/v1/messages", "{oops").await;
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("line 1"));
    assert!(app.upstream_requests().is_empty());
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let app = spawn_app().await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": 3}]});
    let (status, _, body) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "messages[1].content");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("messages[1].content: "));

    let body = json!({"model": "claude", "max_tokens": "many", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = app.post_json("/v1/messages", &body).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("max_tokens"), "{body}");

    let body = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = app.post_json("/v1/messages", &body).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("max_tokens"), "{body}");

    let body = json!({"model": "embed", "input": {"not": "text"}});
    let (status, _, body) = app.post_json("/v1/embeddings", &body).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "input");
    assert!(app.upstream_requests().is_empty());
}

#[tokio::test]
async fn unknown_model_is_404_and_says_how_to_list() {
    let app = spawn_app().await;
    let (status, _, body) = app.post_json("/v1/chat/completions", &chat_body("gpt-9", false)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"gpt-9\"") && message.contains("GET /v1/models"), "{message}");

    let (status, _, body) = app.post_json("/v1/messages", &messages_body("nope", false)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "not_found_error");
    // Direct provider/model names are off when models are configured.
    let (status, _, _) =
        app.post_json("/v1/chat/completions", &chat_body("oai/gpt-4o", false)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn body_over_the_limit_is_413_declared_or_streamed() {
    let config = format!("{DEFAULT_CONFIG}\n[server]\nmax_body_bytes = 1024\n")
        .replace("[server]\nshutdown_grace = \"5s\"\n", "");
    let app = spawn_config(&config).await;
    let big = json!({"model": "gpt", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (status, _, body) = app.post_json("/v1/chat/completions", &big).await;
    assert_eq!(status, 413);
    assert!(body["error"]["message"].as_str().unwrap().contains("1024-byte limit"));

    // Chunked, with no content-length: refused once the limit is passed.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        (0..8).map(|_| Ok(bytes::Bytes::from(vec![b' '; 512]))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, _, body) = json_of(app.post_raw("/v1/messages", body).await).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["type"], "request_too_large");
    assert!(app.upstream_requests().is_empty());
}

#[tokio::test]
async fn unknown_route_and_wrong_method() {
    let app = spawn_app().await;
    let (status, _, body) = json_of(app.get("/v1/completions").await).await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"].as_str().unwrap().contains("POST /v1/chat/completions"));
    let (status, _, body) = json_of(app.get("/v1/chat/completions").await).await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (status, _, body) = json_of(app.get("/v1/messages").await).await;
    assert_eq!(status, 405);
    assert_eq!(body["type"], "error");
}

#[tokio::test]
async fn keys_are_required_when_a_master_key_is_set() {
    let key = "fg-master-0123456789abcdef".to_string();
    let app = spawn_with(Options { master_key: Some(key.clone()), ..Options::default() }).await;
    let url = app.url("/v1/chat/completions");
    let body = chat_body("gpt", false);

    let (status, _, err) = json_of(app.http.post(&url).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "missing_api_key");
    let (status, _, err) =
        json_of(app.http.post(&url).bearer_auth("wrong").json(&body).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "invalid_api_key");
    let (status, _, err) = json_of(
        app.http
            .post(app.url("/v1/messages"))
            .header("x-api-key", "wrong")
            .json(&messages_body("claude", false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["type"], "authentication_error");

    let (status, _, _) =
        json_of(app.http.post(&url).bearer_auth(&key).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, _, _) = json_of(
        app.http
            .post(app.url("/v1/messages"))
            .header("x-api-key", &key)
            .json(&messages_body("claude", false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    // Operational routes need no key.
    assert_eq!(app.http.get(app.url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status(), 200);
    // Refused requests never reach an upstream.
    assert_eq!(app.upstream_requests().len(), 2);
}
