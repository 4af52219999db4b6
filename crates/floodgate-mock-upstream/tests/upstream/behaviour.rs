//! Cross-cutting behaviour: API keys, magic model names, random errors, recording (and when
//! requests arrived), latency, health, `serve` and its shutdown, HTTP/2.

use std::time::{Duration, Instant};

use floodgate_mock_upstream::{ErrorKind, MockConfig, MockServer, serve};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::{
    anthropic, builder, client, gemini, openai, send, send_json, start, start_with,
};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn messages(model: &str) -> Value {
    json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
}

fn contents() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
}

#[tokio::test]
async fn openai_keys_missing_invalid_and_forbidden() {
    let server = start(3).await;
    let client = client();
    let url = format!("{}/chat/completions", server.openai_base_url());
    let with_key = |key: &str| client.post(&url).bearer_auth(key).json(&chat("gpt-4o"));

    let (status, body) = send_json(client.post(&url).json(&chat("gpt-4o"))).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": {
            "message": "You didn't provide an API key. You need to provide your API key in an \
                        Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key"
        }})
    );

    let (status, body) = send_json(with_key("invalid-sk-abc123xyz")).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": {
            "message": "Incorrect API key provided: invalid-sk-abc123xyz. You can find your API \
                        key at https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key"
        }})
    );

    let (status, body) = send_json(with_key("forbidden-sk-1")).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "insufficient_permissions");
    assert!(!body["error"]["message"].as_str().unwrap().contains("forbidden-sk-1"));

    let (status, _) = send_json(with_key("sk-fine")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn anthropic_keys_missing_invalid_and_forbidden() {
    let server = start(3).await;
    let client = client();
    let url = format!("{}/v1/messages", server.base_url());
    let request = |key: Option<&str>| {
        let request = client.post(&url).header("anthropic-version", "2023-06-01");
        let request = match key {
            Some(key) => request.header("x-api-key", key),
            None => request,
        };
        request.json(&messages("claude"))
    };
    let error = |kind: &str, message: &str| json!({"type": "error", "error": {"type": kind, "message": message}});
    assert_eq!(
        send_json(request(None)).await,
        (401, error("authentication_error", "x-api-key header is required"))
    );
    assert_eq!(
        send_json(request(Some("invalid-key"))).await,
        (401, error("authentication_error", "invalid x-api-key"))
    );
    let (status, body) = send_json(request(Some("forbidden-key"))).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["type"], "permission_error");
}

#[tokio::test]
async fn gemini_keys_missing_invalid_and_forbidden() {
    let server = start(3).await;
    let client = client();
    let url = format!("{}/v1beta/models/gemini-2.0-flash:generateContent", server.base_url());
    let (status, body) = send_json(client.post(&url).json(&contents())).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

    let invalid = client.post(format!("{url}?key=invalid-key")).json(&contents());
    let (status, body) = send_json(invalid).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": {
            "code": 401,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "UNAUTHENTICATED"
        }})
    );

    let forbidden = client.post(&url).header("x-goog-api-key", "forbidden-1").json(&contents());
    let (status, body) = send_json(forbidden).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
}

#[tokio::test]
async fn magic_error_models_fail_in_each_provider_shape() {
    let server = start(3).await;
    let client = client();

    let (status, body) =
        send_json(openai(&server, &client, "/chat/completions").json(&chat("gpt-error-500"))).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({"error": {"message": "The server had an error.", "type": "server_error", "param": null, "code": null}})
    );

    let response =
        anthropic(&server, &client).json(&messages("claude-error-429")).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached."}})
    );

    let target = "gemini-error-401:generateContent";
    let (status, body) = send_json(gemini(&server, &client, target).json(&contents())).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

    let embed = json!({"model": "emb-error-500", "input": "x"});
    let (status, _) = send_json(openai(&server, &client, "/embeddings").json(&embed)).await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn magic_hang_reset_and_slow_models() {
    let server = start(3).await;
    let quick = builder().timeout(Duration::from_millis(300)).build().unwrap();
    let error = openai(&server, &quick, "/chat/completions")
        .json(&chat("mock-hang"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout());

    let error = openai(&server, &client(), "/chat/completions")
        .json(&chat("mock-reset"))
        .send()
        .await
        .unwrap_err();
    assert!(!error.is_timeout());

    let started = Instant::now();
    let (status, body) =
        send_json(openai(&server, &client(), "/chat/completions").json(&chat("mock-slow-200")))
            .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(status, 200);
    assert_eq!(body["model"], "mock-slow-200");
}

#[tokio::test]
async fn error_rate_one_fails_everything_and_zero_nothing() {
    let failing = start_with(MockConfig {
        error_rate: 1.0,
        error_kind: ErrorKind::Status429,
        retry_after_secs: 7,
        ..MockConfig::default()
    })
    .await;
    let client = client();
    for _ in 0..10 {
        let response = openai(&failing, &client, "/chat/completions")
            .json(&chat("gpt-4o"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
    }
    let target = "gemini-2.0-flash:generateContent";
    let (status, body) = send_json(gemini(&failing, &client, target).json(&contents())).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"error": {
            "code": 429,
            "message": "Rate limit reached.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
        }})
    );
    // Routes other than chat/messages/embeddings never fail.
    let models = client.get(format!("{}/models", failing.openai_base_url())).bearer_auth("k");
    assert_eq!(send(models).await.0, 200);

    let healthy = start_with(MockConfig { error_rate: 0.0, ..MockConfig::default() }).await;
    for _ in 0..20 {
        let (status, _) =
            send_json(openai(&healthy, &client, "/chat/completions").json(&chat("gpt-4o"))).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn error_kind_reset_and_hang_apply_at_random() {
    let resetting = start_with(MockConfig {
        error_rate: 1.0,
        error_kind: ErrorKind::Reset,
        ..MockConfig::default()
    })
    .await;
    let result = anthropic(&resetting, &client()).json(&messages("claude")).send().await;
    assert!(result.is_err());

    let hanging = start_with(MockConfig {
        error_rate: 1.0,
        error_kind: ErrorKind::Hang,
        ..MockConfig::default()
    })
    .await;
    let quick = builder().timeout(Duration::from_millis(200)).build().unwrap();
    let error = anthropic(&hanging, &quick).json(&messages("claude")).send().await.unwrap_err();
    assert!(error.is_timeout());
}

#[tokio::test]
async fn requests_are_recorded_only_when_asked() {
    let server = start(3).await;
    let client = client();
    let request = chat("gpt-4o");
    let url = format!("{}/chat/completions?trace=1", server.openai_base_url());
    let sent = client.post(&url).bearer_auth("sk-1").header("X-Custom", "Yes").json(&request);
    assert_eq!(send(sent).await.0, 200);
    let raw = client.post(format!("{}/embeddings", server.openai_base_url())).body("plain text");
    assert_eq!(send(raw).await.0, 401);

    let recorded = server.requests();
    assert_eq!(recorded.len(), 2);
    let first = &recorded[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.query.as_deref(), Some("trace=1"));
    assert_eq!(first.header("x-custom"), Some("Yes"));
    assert_eq!(first.header("authorization"), Some("Bearer sk-1"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert!(first.headers.iter().all(|(name, _)| name.chars().all(|c| !c.is_ascii_uppercase())));
    assert_eq!(first.body, request);
    assert_eq!(recorded[1].body, Value::Null);
    assert_eq!(server.stats().requests, 2);
    server.clear_requests();
    assert!(server.requests().is_empty());

    let silent = start_with(MockConfig::default()).await;
    let sent = openai(&silent, &client, "/chat/completions").json(&request);
    assert_eq!(send(sent).await.0, 200);
    assert!(silent.requests().is_empty());
    assert_eq!(silent.stats().requests, 1);
}

#[tokio::test]
async fn received_at_is_when_the_head_arrived_and_increases() {
    let server = start(3).await;
    let client = client();
    let before = Instant::now();
    for pause in [0, 50, 0] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let sent = openai(&server, &client, "/chat/completions").json(&chat("gpt-4o"));
        assert_eq!(send(sent).await.0, 200);
    }
    // A body sent slowly: the head arrives at once, the body 300 ms later.
    let slow_body = futures_util::stream::unfold(0, |step| async move {
        match step {
            0 => Some((Ok::<_, std::io::Error>(b"{\"model\": \"gpt-4o\", ".to_vec()), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some((Ok(br#""messages": [{"role": "user", "content": "hi"}]}"#.to_vec()), 2))
            }
            _ => None,
        }
    });
    let slow_sent = Instant::now();
    let slow = openai(&server, &client, "/chat/completions")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(slow_body));
    assert_eq!(send(slow).await.0, 200);
    let after = Instant::now();

    let times: Vec<Instant> = server.requests().iter().map(|r| r.received_at).collect();
    assert_eq!(times.len(), 4);
    assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "{times:?}");
    assert!(before <= times[0] && times[3] <= after);
    assert!(times[1] - times[0] >= Duration::from_millis(50), "the pause shows");
    assert!(times[3] - slow_sent < Duration::from_millis(250), "stamped before the body came");
    assert!(after - slow_sent >= Duration::from_millis(300));
}

#[tokio::test]
async fn random_errors_of_every_kind_apply_to_every_provider() {
    let failing = |error_kind| {
        start_with(MockConfig {
            error_rate: 1.0,
            error_kind,
            retry_after_secs: 3,
            ..MockConfig::default()
        })
    };
    let requests = |server: &MockServer, client: &reqwest::Client| {
        [
            openai(server, client, "/chat/completions").json(&chat("gpt-4o")),
            openai(server, client, "/embeddings").json(&json!({"model": "e", "input": "x"})),
            anthropic(server, client).json(&messages("claude")),
            gemini(server, client, "gemini-2.0-flash:generateContent").json(&contents()),
            gemini(server, client, "text-embedding-004:embedContent")
                .json(&json!({"content": {"parts": [{"text": "x"}]}})),
        ]
    };
    // The error member each shape names its class with: OpenAI, OpenAI, Anthropic, Gemini x2.
    let class = |body: &Value| -> String {
        let error = &body["error"];
        let name = error.get("status").or_else(|| error.get("type")).unwrap();
        name.as_str().unwrap().to_owned()
    };
    let client = client();

    let server = failing(ErrorKind::Status500).await;
    let classes: Vec<String> =
        futures_util::future::join_all(requests(&server, &client).map(|request| async {
            let (status, body) = send_json(request).await;
            assert_eq!(status, 500, "{body}");
            class(&body)
        }))
        .await;
    assert_eq!(classes, ["server_error", "server_error", "api_error", "INTERNAL", "INTERNAL"]);

    let server = failing(ErrorKind::Status429).await;
    for request in requests(&server, &client) {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "3");
        let body: Value = response.json().await.unwrap();
        assert!(
            ["requests", "rate_limit_error", "RESOURCE_EXHAUSTED"].contains(&class(&body).as_str())
        );
    }

    let server = failing(ErrorKind::Reset).await;
    for request in requests(&server, &client) {
        let error = request.send().await.unwrap_err();
        assert!(!error.is_timeout(), "{error}");
    }

    let server = failing(ErrorKind::Hang).await;
    let quick = builder().timeout(Duration::from_millis(200)).build().unwrap();
    let hung = futures_util::future::join_all(
        requests(&server, &quick).map(|request| async { request.send().await.unwrap_err() }),
    )
    .await;
    assert!(hung.iter().all(reqwest::Error::is_timeout), "{hung:?}");
}

#[tokio::test]
async fn latency_and_chunk_delay_slow_answers_down() {
    let server = start_with(MockConfig {
        latency: Duration::from_millis(150),
        chunks: 4,
        chunk_delay: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let started = Instant::now();
    let (status, _) =
        send_json(openai(&server, &client, "/chat/completions").json(&chat("gpt-4o"))).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let mut request = chat("gpt-4o");
    request["stream"] = json!(true);
    let started = Instant::now();
    let mut response =
        openai(&server, &client, "/chat/completions").json(&request).send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150), "latency before the head");
    let mut chunks = 0;
    while response.chunk().await.unwrap().is_some() {
        chunks += 1;
    }
    // Four words, three delays of 50 ms between them.
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert!(chunks >= 2, "the stream arrived in {chunks} piece(s)");
}

#[tokio::test]
async fn health_answers_ok() {
    let server = start(3).await;
    let (status, _, body) = send(client().get(format!("{}/health", server.base_url()))).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = send_json(client().get(format!("{}/nope", server.base_url()))).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "Invalid URL (GET /nope)");
}

#[tokio::test]
async fn serve_runs_until_cancelled_and_ends_hanging_requests() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let server = tokio::spawn(serve(listener, MockConfig::default(), token.clone()));
    let client = client();
    let url = format!("http://{addr}/v1/chat/completions");
    let (status, _) = send_json(client.post(&url).bearer_auth("k").json(&chat("gpt-4o"))).await;
    assert_eq!(status, 200);

    let hanging = tokio::spawn(client.post(&url).bearer_auth("k").json(&chat("mock-hang")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(3), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert!(hanging.await.unwrap().is_err(), "the hanging request was dropped");
    assert!(client.get(format!("http://{addr}/health")).send().await.is_err());
}

#[tokio::test]
async fn shutdown_waits_for_the_server_to_stop() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let url = format!("{}/health", server.base_url());
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(3), server.shutdown()).await.unwrap();
    assert!(client().get(&url).send().await.is_err());
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let server = start(3).await;
    let client = builder().http2_prior_knowledge().build().unwrap();
    let response =
        openai(&server, &client, "/chat/completions").json(&chat("gpt-4o")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let mut request = chat("gpt-4o");
    request["stream"] = json!(true);
    let (_, _, body) = send(openai(&server, &client, "/chat/completions").json(&request)).await;
    assert!(body.ends_with("data: [DONE]\n\n"));
}
