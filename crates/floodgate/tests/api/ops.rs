//! Health, readiness, metrics, request ids, compression, model listing.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let (code, _, body) = json_of(app.get("/health").await).await;
    assert_eq!((code.as_u16(), body), (200, json!({"status": "ok"})));
    let (code, _, body) = json_of(app.get("/health/ready").await).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["components"]["database"], json!({"status": "ok", "backend": "sqlite"}));
    assert_eq!(body["components"]["state"], json!({"status": "ok", "backend": "memory"}));
    assert_eq!(body["components"]["providers"]["providers"]["ant"]["kind"], "anthropic");
}

#[tokio::test]
async fn metrics_cover_requests_upstreams_and_tokens() {
    // Metrics are per process and tests share it: these names are this test's own.
    let app = spawn_config(&format!(
        "{DEFAULT_CONFIG}\n[[models]]\nname = \"mgpt\"\ntargets = [\"oai/metrics-gpt\"]\n\n[[models]]\nname = \"mclaude\"\ntargets = [\"ant/metrics-claude\"]\n"
    ))
    .await;
    app.post_json("/v1/chat/completions", &chat_body("mgpt", false)).await;
    app.post_sse("/v1/messages", &messages_body("mclaude", true)).await;
    let text = app.metrics().await;
    for needle in [
        "floodgate_http_requests_total{route=\"/v1/chat/completions\",model=\"mgpt\",provider=\"oai\",status=\"200\"} 1",
        "floodgate_http_request_duration_seconds_bucket{route=\"/v1/messages\",model=\"mclaude\",provider=\"ant\",status=\"200\"",
        "floodgate_upstream_request_duration_seconds_bucket{provider=\"oai\",model=\"metrics-gpt\",outcome=\"ok\"",
        "floodgate_upstream_time_to_first_token_seconds_bucket{provider=\"ant\",model=\"metrics-claude\"",
        "floodgate_tokens_total{direction=\"output\",provider=\"ant\",model=\"metrics-claude\"} 20",
        "floodgate_http_requests_in_flight",
        "# TYPE floodgate_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = spawn_app().await;
    let response =
        app.http.get(app.url("/health")).header("x-request-id", "trace-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    let response = app
        .http
        .get(app.url("/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let made = response.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 36, "a UUID replaces an unusable id: {made}");
    let (_, headers, _) = app.post_json("/v1/chat/completions", &chat_body("gpt", false)).await;
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn responses_are_compressed_on_request_but_streams_never() {
    let app = spawn_app().await;
    let big = json!({"model": "gpt", "messages": [{"role": "user", "content": "x ".repeat(2000)}]});
    let response = app
        .http
        .post(app.url("/v1/chat/completions"))
        .header("accept-encoding", "gzip")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut stream = chat_body("gpt", true);
    stream["messages"] = big["messages"].clone();
    let response = app
        .http
        .post(app.url("/v1/chat/completions"))
        .header("accept-encoding", "gzip, br")
        .json(&stream)
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("content-encoding"));
}

#[tokio::test]
async fn models_are_listed_in_the_clients_shape() {
    let app = spawn_app().await;
    let (code, _, body) = json_of(app.get("/v1/models").await).await;
    assert_eq!(code, 200);
    let ids: Vec<&str> =
        body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt", "claude", "gemini", "embed"]);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["object"], "model");

    let response = app
        .http
        .get(app.url("/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    let (_, _, body) = json_of(response).await;
    assert_eq!(body["data"][0]["type"], "model");
    assert_eq!(body["first_id"], "gpt");
    assert_eq!(body["has_more"], false);

    let (code, _, body) = json_of(app.get("/v1/models/claude").await).await;
    assert_eq!((code.as_u16(), body["id"].as_str()), (200, Some("claude")));
    let (code, _, _) = json_of(app.get("/v1/models/none").await).await;
    assert_eq!(code, 404);
}
