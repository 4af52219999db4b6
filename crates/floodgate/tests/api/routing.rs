//! Retry, fallback, key handling and the 502/503/504 answers.

use std::time::{Duration, Instant};

use floodgate_mock_upstream::Script;
use serde_json::json;

use crate::helpers::*;

fn fallback_config(extra_models: &str) -> String {
    format!("{DEFAULT_CONFIG}\n{extra_models}")
}

fn status(code: u16) -> Script {
    Script::Status {
        status: code,
        headers: vec![],
        body: json!({"error": {"message": format!("upstream says {code}"), "type": "server_error"}}),
    }
}

#[tokio::test]
async fn retryable_failures_are_retried_then_the_next_target_answers() {
    let app = spawn_config(&fallback_config(
        "[[models]]\nname = \"chat\"\ntargets = [\"oai/first\", \"ant/second\"]\n",
    ))
    .await;
    // First target: 500, 503, 500 (retries = 2, so 3 attempts); then the Anthropic target answers.
    app.mock.enqueue(status(500));
    app.mock.enqueue(status(503));
    app.mock.enqueue(status(500));
    let (code, headers, body) =
        app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-floodgate-provider"], "ant");
    assert_eq!(headers["x-floodgate-model"], "second");
    assert_eq!(headers["x-floodgate-attempts"], "4");
    let calls: Vec<(String, String)> = app
        .upstream_requests()
        .iter()
        .map(|r| (r.path.clone(), r.body["model"].as_str().unwrap_or_default().to_string()))
        .collect();
    assert_eq!(
        calls,
        [
            ("/v1/chat/completions".to_string(), "first".to_string()),
            ("/v1/chat/completions".to_string(), "first".to_string()),
            ("/v1/chat/completions".to_string(), "first".to_string()),
            ("/v1/messages".to_string(), "second".to_string()),
        ]
    );
    // The OpenAI client got an OpenAI answer from the Anthropic upstream.
    assert_eq!(body["object"], "chat.completion");
    assert!(app.metrics().await.contains("floodgate_upstream_retries_total"));
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_long_one_skips_ahead() {
    let app = spawn_config(&fallback_config(
        "[[models]]\nname = \"chat\"\ntargets = [\"oai/first\", \"oai/second\"]\n",
    ))
    .await;
    app.mock.enqueue(Script::Status {
        status: 429,
        headers: vec![("retry-after".into(), "1".into())],
        body: json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
    });
    let started = Instant::now();
    let (code, headers, _) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-floodgate-model"], "first", "retried on the same target");
    assert!(started.elapsed() >= Duration::from_secs(1), "waited for retry-after");

    // A retry-after beyond max_retry_after (30 s) moves on at once.
    app.mock.clear_requests();
    app.mock.enqueue(Script::Status {
        status: 429,
        headers: vec![("retry-after".into(), "3600".into())],
        body: json!({"error": {"message": "come back in an hour"}}),
    });
    let (code, headers, _) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-floodgate-model"], "second");
    assert_eq!(app.upstream_requests().len(), 2);
}

#[tokio::test]
async fn a_refused_key_is_taken_out_of_use_and_reported() {
    let config = DEFAULT_CONFIG.replace(
        "keys = [\"oai-key-0123456789abcdef\"]",
        "keys = [\"invalid-key-0123456789abcdef\", \"good-key-0123456789abcdef\"]",
    );
    let app = spawn_config(&config).await;
    for _ in 0..4 {
        let (code, _, body) = app.post_json("/v1/chat/completions", &chat_body("gpt", false)).await;
        assert_eq!(code, 200, "{body}");
    }
    let keys: Vec<String> = app
        .upstream_requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_string())
        .collect();
    // The bad key is tried once, refused, and never again.
    assert_eq!(keys.iter().filter(|k| k.contains("invalid-key")).count(), 1, "{keys:?}");
    assert_eq!(keys.len(), 5);
    let (code, _, ready) = json_of(app.get("/health/ready").await).await;
    assert_eq!(code, 200);
    let oai = &ready["components"]["providers"]["providers"]["oai"];
    assert_eq!(oai["keys_usable"], 1);
    assert_eq!(oai["keys_disabled"][0]["key"], 0);
    // The reason is the upstream's message, scrubbed of the key it echoed.
    let reason = oai["keys_disabled"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("401") && !reason.contains("invalid-key-0123456789abcdef"), "{reason}");
    assert!(
        app.metrics().await.contains("floodgate_provider_keys_disabled_total{provider=\"oai\"} 1")
    );
}

#[tokio::test]
async fn every_key_refused_is_503_and_not_ready() {
    let config = DEFAULT_CONFIG.replace(
        "keys = [\"oai-key-0123456789abcdef\"]",
        "keys = [\"invalid-a-0123456789abcdef\"]",
    );
    let app = spawn_config(&config).await;
    let (code, _, body) = app.post_json("/v1/chat/completions", &chat_body("gpt", false)).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("oai/gpt-4o-mini") && !message.contains("invalid-a-0123456789abcdef"),
        "{message}"
    );
}

#[tokio::test]
async fn all_targets_failing_is_502_naming_what_was_tried() {
    let app = spawn_config(&fallback_config(
        "[[models]]\nname = \"chat\"\ntargets = [\"oai/error-500-a\", \"ant/error-500-b\"]\n",
    ))
    .await;
    let (code, _, body) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(code, 502);
    assert_eq!(body["error"]["code"], "upstream_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("oai/error-500-a (3 attempts)")
            && message.contains("ant/error-500-b (3 attempts)"),
        "{message}"
    );
    for key in ["oai-key-0123456789abcdef", "ant-key-0123456789abcdef"] {
        assert!(!message.contains(key));
    }
    // Anthropic clients get the same in their shape.
    let (code, _, body) = app.post_json("/v1/messages", &messages_body("chat", false)).await;
    assert_eq!(code, 502);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
}

#[tokio::test]
async fn timeouts_are_504_and_rate_limits_503_with_retry_after() {
    let app = spawn_config(&fallback_config(
        r#"
[[providers]]
name = "slowpoke"
kind = "openai-compatible"
base_url = "{openai}"
keys = ["slow-key"]
first_byte_timeout = "200ms"

[[models]]
name = "slow"
targets = ["slowpoke/hang-model"]

[[models]]
name = "limited"
targets = ["oai/error-429-x"]
"#,
    ))
    .await;
    let (code, _, body) = app.post_json("/v1/chat/completions", &chat_body("slow", false)).await;
    assert_eq!(code, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(body["error"]["message"].as_str().unwrap().contains("timed out"), "{body}");

    let response = app.post("/v1/chat/completions", &chat_body("limited", false)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test]
async fn an_upstream_refusal_of_the_request_is_passed_to_the_client() {
    let app = spawn_config(&fallback_config(
        "[[models]]\nname = \"chat\"\ntargets = [\"oai/first\", \"ant/second\"]\n",
    ))
    .await;
    app.mock.enqueue(Script::Status {
        status: 400,
        headers: vec![],
        body: json!({"error": {"message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
    });
    let (code, _, body) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(code, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("oai/first refused the request")
            && message.contains("maximum context length"),
        "{message}"
    );
    // Not retried, not sent to the fallback: every target would refuse it.
    assert_eq!(app.upstream_requests().len(), 1);
}

#[tokio::test]
async fn connection_failures_fall_back() {
    let app = spawn_config(&fallback_config(
        "[[providers]]\nname = \"gone\"\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[[models]]\nname = \"chat\"\ntargets = [\"gone/x\", \"oai/y\"]\n",
    ))
    .await;
    app.mock.enqueue(Script::Reset);
    let (code, headers, body) =
        app.post_json("/v1/chat/completions", &chat_body("gpt", false)).await;
    assert_eq!(code, 200, "reset is retried: {body}");
    assert_eq!(headers["x-floodgate-attempts"], "2");
    let (code, headers, _) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-floodgate-provider"], "oai");
}

#[tokio::test]
async fn keys_at_their_rpm_limit_are_skipped_without_a_call() {
    let app = spawn_config(&fallback_config(
        r#"
[[providers]]
name = "small"
kind = "openai-compatible"
base_url = "{openai}"
keys = ["small-key-a-0123456789", "small-key-b-0123456789"]
rpm = 2

[[models]]
name = "chat"
targets = ["small/x", "oai/y"]

[[models]]
name = "only-small"
targets = ["small/x"]
"#,
    ))
    .await;
    // Two keys at 2 requests a minute: four calls fit, the fifth falls back.
    let mut providers = Vec::new();
    for _ in 0..5 {
        let (code, headers, _) =
            app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
        assert_eq!(code, 200);
        providers.push(headers["x-floodgate-provider"].to_str().unwrap().to_string());
    }
    assert_eq!(providers, ["small", "small", "small", "small", "oai"]);
    let small_keys: Vec<String> = app
        .upstream_requests()
        .iter()
        .filter(|r| r.body["model"] == "x")
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(small_keys.iter().filter(|k| k.contains("small-key-a")).count(), 2);
    assert_eq!(small_keys.iter().filter(|k| k.contains("small-key-b")).count(), 2);

    // With nowhere to fall back and no time to wait: 429 with retry-after
    // (the next free slot of the one-minute window), and no upstream call.
    let before = app.upstream_requests().len();
    let response = app
        .post_with(
            "/v1/chat/completions",
            &chat_body("only-small", false),
            &[("x-floodgate-max-wait-ms", "0")],
        )
        .await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=61).contains(&retry_after), "{retry_after}");
    let (_, _, body) = json_of(response).await;
    assert_eq!(body["error"]["code"], "capacity_exceeded", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("rate limit"), "{body}");
    assert_eq!(app.upstream_requests().len(), before);

    let (_, _, ready) = json_of(app.get("/health/ready").await).await;
    let limits = &ready["components"]["providers"]["providers"]["small"]["key_limits"];
    assert_eq!(limits[0]["requests_left"], 0, "{limits}");
}

#[tokio::test]
async fn token_budget_is_settled_with_real_usage() {
    // 1,000 tokens a minute; each call reserves its prompt plus max_tokens (500)
    // and gives back what it did not use (the mock answers with 20 tokens).
    let app = spawn_config(&fallback_config(
        r#"
[[providers]]
name = "tight"
kind = "openai-compatible"
base_url = "{openai}"
keys = ["tight-key-0123456789"]
tpm = 1000

[[models]]
name = "tight"
targets = ["tight/x"]
"#,
    ))
    .await;
    let mut body = chat_body("tight", false);
    body["max_tokens"] = json!(500);
    // Without settlement only one call would fit (2 × ~520 > 1,000).
    for _ in 0..5 {
        let (code, _, answer) = app.post_json("/v1/chat/completions", &body).await;
        assert_eq!(code, 200, "{answer}");
    }
    body["max_tokens"] = json!(990);
    let response =
        app.post_with("/v1/chat/completions", &body, &[("x-floodgate-max-wait-ms", "50")]).await;
    assert_eq!(
        response.status(),
        429,
        "a call that cannot fit the remaining budget waits, then 429"
    );
}
