//! Routing that does not fall over: circuit breakers, the retry budget,
//! waiting for capacity in priority order, provider rate-limit headers,
//! quota alerts, hedging, strategies, rules and the admin view of it all.

use std::time::{Duration, Instant};

use floodgate_mock_upstream::{ErrorKind, MockConfig, RateLimit, Script};
use serde_json::{Value, json};

use crate::helpers::*;

const MASTER: &str = "master-key-0123456789abcdef";

fn with_master(config: &str) -> Options {
    Options {
        config: config.to_string(),
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    }
}

/// A provider on the mock with its own keys and limits, and an alias on it.
fn provider(name: &str, extra: &str) -> String {
    format!(
        "\n[[providers]]\nname = \"{name}\"\nkind = \"openai-compatible\"\nbase_url = \"{{openai}}\"\n{extra}\n"
    )
}

/// `routing` (TOML sections before the providers), provider `p` with one key
/// and `limits`, and alias `chat` on `p/m`.
fn chat_on_one_key(routing: &str, limits: &str) -> String {
    format!(
        "{routing}\n{}\n[[models]]\nname = \"chat\"\ntargets = [\"p/m\"]\n",
        provider("p", &format!("keys = [\"p-key-0123456789\"]\n{limits}"))
    )
}

async fn admin(app: &TestApp) -> Value {
    let (code, _, body) = json_of(app.get("/admin/providers").await).await;
    assert_eq!(code, 200, "{body}");
    body
}

#[expect(clippy::unwrap_used, reason = "a missing provider or target fails the test")]
fn target<'a>(admin: &'a Value, provider: &str, target: &str) -> &'a Value {
    let p = admin["providers"].as_array().unwrap().iter().find(|p| p["name"] == provider).unwrap();
    p["targets"].as_array().unwrap().iter().find(|t| t["target"] == target).unwrap()
}

fn model_calls(app: &TestApp, model: &str) -> usize {
    app.upstream_requests().iter().filter(|r| r.body["model"] == model).count()
}

#[tokio::test]
async fn a_failing_target_opens_its_breaker_is_skipped_then_probed_and_reset() {
    let config = format!(
        "[routing]\nretries = 0\nbackoff_base = \"1ms\"\n\n[routing.breaker]\nconsecutive_failures = 3\ncooldown = \"400ms\"\n{}\n{}",
        provider("p", "keys = [\"p-key-0123456789\"]"),
        "[[models]]\nname = \"chat\"\ntargets = [\"p/error-500-down\", \"p/healthy\"]\n"
    );
    let app = spawn_with(with_master(&config)).await;
    for _ in 0..3 {
        let (code, headers, body) =
            app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(headers["x-floodgate-model"], "healthy");
    }
    assert_eq!(model_calls(&app, "error-500-down"), 3);
    let view = admin(&app).await;
    let down = target(&view, "p", "p/error-500-down");
    assert_eq!(down["breaker"]["state"], "open", "{down}");
    assert_eq!(down["breaker"]["opened_total"], 1);
    assert_eq!(target(&view, "p", "p/healthy")["breaker"]["state"], "closed");
    // Open: the failing target is skipped without a call.
    for _ in 0..5 {
        let (code, headers, _) =
            app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
        assert_eq!(code, 200);
        assert_eq!(headers["x-floodgate-attempts"], "1");
    }
    assert_eq!(model_calls(&app, "error-500-down"), 3);
    // After the cooldown one probe goes through, fails, and reopens it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (code, headers, _) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-floodgate-attempts"], "2");
    assert_eq!(model_calls(&app, "error-500-down"), 4);
    let view = admin(&app).await;
    assert_eq!(target(&view, "p", "p/error-500-down")["breaker"]["opened_total"], 2);
    assert!(app.metrics().await.contains("floodgate_circuit_transitions_total"));

    // An operator reset closes it at once.
    let response = app
        .http
        .post(app.url("/admin/providers/p/reset"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    let (code, _, report) = json_of(response).await;
    assert_eq!(code, 200, "{report}");
    assert!(report["breakers_closed"].as_u64().unwrap() >= 1, "{report}");
    let view = admin(&app).await;
    assert_eq!(target(&view, "p", "p/error-500-down")["breaker"]["state"], "closed");
}

#[tokio::test]
async fn the_breaker_opens_on_error_rate_and_a_half_open_success_closes_it() {
    let config = format!(
        "[routing]\nretries = 0\n\n[routing.breaker]\nconsecutive_failures = 100\nerror_rate = 0.3\nmin_requests = 10\ncooldown = \"300ms\"\n{}\n[[models]]\nname = \"chat\"\ntargets = [\"p/flaky\", \"p/backup\"]\n",
        provider("p", "keys = [\"p-key-0123456789\"]")
    );
    let app = spawn_with(with_master(&config)).await;
    // Every other call to the first target fails: 6 of 11 > 30 % once 10 calls are in.
    for i in 0..11 {
        if i % 2 == 0 {
            app.mock.enqueue(Script::Status {
                status: 503,
                headers: vec![],
                body: json!({"error": {"message": "busy"}}),
            });
        }
        let (code, _, _) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
        assert_eq!(code, 200);
    }
    let view = admin(&app).await;
    let flaky = target(&view, "p", "p/flaky");
    assert_eq!(flaky["breaker"]["state"], "open", "{flaky}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The probe succeeds (nothing scripted): closed again.
    let (_, headers, _) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(headers["x-floodgate-model"], "flaky");
    let view = admin(&app).await;
    assert_eq!(target(&view, "p", "p/flaky")["breaker"]["state"], "closed");
}

#[tokio::test]
async fn the_retry_budget_caps_retries_during_a_full_outage() {
    // Every call fails; without a budget each request would make 1 + 3 calls.
    let config = format!(
        "[routing]\nretries = 3\nbackoff_base = \"1ms\"\nbackoff_max = \"1ms\"\nretry_budget = 0.2\nretry_budget_min_per_second = 0\n\n[routing.breaker]\nconsecutive_failures = 100000\nerror_rate = 1.0\n{}\n[[models]]\nname = \"chat\"\ntargets = [\"p/error-500-outage\"]\n",
        provider("p", "keys = [\"p-key-0123456789\"]")
    );
    let app = spawn_config(&config).await;
    let requests = 100;
    let mut spent = 0;
    for _ in 0..requests {
        let (code, _, body) =
            app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
        assert_eq!(code, 502, "{body}");
        if body["error"]["message"].as_str().unwrap().contains("retry budget") {
            spent += 1;
        }
    }
    let calls = model_calls(&app, "error-500-outage");
    assert!(calls <= requests + requests / 5, "{calls} upstream calls for {requests} requests");
    assert!(calls > requests, "some retries were allowed: {calls}");
    assert!(spent > 0, "the answers say why retries stopped");
    assert!(app.metrics().await.contains("floodgate_retry_budget_exhausted_total"));
}

#[tokio::test]
async fn waiting_requests_are_released_in_priority_order() {
    // One token window of 1,000: a request reserving ~950 holds it until its
    // answer settles the reservation (the mock uses ~30 tokens), so waiters
    // go one at a time as each answer frees the window.
    let config = chat_on_one_key("", "tpm = 1000");
    let app = spawn_with(Options {
        config,
        mock: MockConfig {
            record: true,
            latency: Duration::from_millis(400),
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    let body = |tag: &str| json!({"model": "chat", "max_tokens": 800, "messages": [{"role": "user", "content": tag}]});
    let send = |tag: &'static str, priority: u8| {
        let request = app
            .http
            .post(app.url("/v1/chat/completions"))
            .header("x-floodgate-priority", priority.to_string())
            .header("x-floodgate-max-wait-ms", "20000")
            .json(&body(tag));
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    let first = send("first", 5);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut waiting = Vec::new();
    for (tag, priority) in [("p1", 1), ("p9a", 9), ("p5", 5), ("p9b", 9), ("p3", 3)] {
        waiting.push(send(tag, priority));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(first.await.unwrap(), 200);
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    let mut seen: Vec<(Instant, String)> = app
        .upstream_requests()
        .into_iter()
        .map(|r| (r.received_at, r.body["messages"][0]["content"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    let order: Vec<String> = seen.into_iter().map(|(_, tag)| tag).collect();
    assert_eq!(order, ["first", "p9a", "p9b", "p5", "p3", "p1"]);
}

#[tokio::test]
async fn a_wait_past_its_deadline_is_429_and_the_queue_is_bounded() {
    let config = chat_on_one_key("[routing.wait]\nmax_waiting = 1\n", "rpm = 1");
    let app = spawn_with(with_master(&config)).await;
    let (code, _, _) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(code, 200);
    // The key's one request a minute is spent: this one may wait 300 ms.
    let waiter = {
        let request = app
            .http
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(MASTER)
            .header("x-floodgate-max-wait-ms", "300")
            .json(&chat_body("chat", false));
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The queue holds one: the next is refused at once.
    let response = app.post("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, _, body) = json_of(response).await;
    assert_eq!(body["error"]["code"], "wait_queue_full", "{body}");

    let started = Instant::now();
    let response = waiter.await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((50..=61).contains(&retry_after), "{retry_after}");
    let (_, _, body) = json_of(response).await;
    assert_eq!(body["error"]["code"], "capacity_exceeded", "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Anthropic clients get their own shape.
    let response = app
        .post_with(
            "/v1/messages",
            &messages_body("chat", false),
            &[("x-floodgate-max-wait-ms", "0")],
        )
        .await;
    assert_eq!(response.status(), 429);
    let (_, _, body) = json_of(response).await;
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(app.upstream_requests().len(), 1, "no call beyond the key's limit");
    assert!(app.metrics().await.contains("floodgate_wait_seconds"));
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_the_queue() {
    let config = chat_on_one_key("", "rpm = 1");
    let app = spawn_with(with_master(&config)).await;
    app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let result = impatient
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(MASTER)
        .header("x-floodgate-max-wait-ms", "30000")
        .json(&chat_body("chat", false))
        .send()
        .await;
    assert!(result.is_err(), "the client gave up");
    eventually(|| async { admin(&app).await["models"][0]["waiting"] == 0 }).await;
}

#[tokio::test]
async fn bad_priority_and_wait_headers_are_400_naming_the_header() {
    let app = spawn_app().await;
    for (name, value) in [
        ("x-floodgate-priority", "11"),
        ("x-floodgate-priority", "high"),
        ("x-floodgate-max-wait-ms", "-5"),
    ] {
        let response =
            app.post_with("/v1/chat/completions", &chat_body("gpt", false), &[(name, value)]).await;
        let (code, _, body) = json_of(response).await;
        assert_eq!(code, 400, "{name}: {value}");
        assert_eq!(body["error"]["param"], name, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(name), "{body}");
    }
}

#[tokio::test]
async fn provider_headers_teach_the_limit_and_no_request_goes_over_it() {
    // The gateway is told nothing about limits; the mock enforces 3 a minute
    // per key and says so in OpenAI's headers.
    let config = chat_on_one_key("", "");
    let app = spawn_with(Options {
        config,
        mock: MockConfig {
            record: true,
            rate_limit: Some(RateLimit { requests_per_minute: Some(3), tokens_per_minute: None }),
            ..MockConfig::default()
        },
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        let (code, _, body) =
            app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
        assert_eq!(code, 200, "{body}");
    }
    let response = app
        .post_with(
            "/v1/chat/completions",
            &chat_body("chat", false),
            &[("x-floodgate-max-wait-ms", "0")],
        )
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(app.mock.stats().rate_limited, 0, "the gateway never sent a request over the limit");
    assert_eq!(app.upstream_requests().len(), 3);
    let view = admin(&app).await;
    let rpm = &view["providers"][0]["keys"][0]["limits"]["rpm"];
    assert_eq!(rpm["limit"], 3, "{view}");
    assert_eq!(rpm["learned"], true);
    assert_eq!(rpm["remaining"], 0);
}

#[tokio::test]
async fn an_upstream_429_pauses_that_key_and_the_next_key_serves() {
    let config = format!(
        "[routing]\nbackoff_base = \"1ms\"\n{}\n[[models]]\nname = \"chat\"\ntargets = [\"p/m\"]\n",
        provider("p", "keys = [\"p-key-a-0123456789\", \"p-key-b-0123456789\"]")
    );
    let app = spawn_config(&config).await;
    app.mock.enqueue(Script::Status {
        status: 429,
        headers: vec![("retry-after".into(), "20".into())],
        body: json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
    });
    let (code, headers, body) =
        app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(headers["x-floodgate-attempts"], "2");
    let keys: Vec<String> = app
        .upstream_requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_ne!(keys[0], keys[1], "the retry used the other key at once, not after 20 s");
    // The paused key is not used for the next requests either.
    for _ in 0..4 {
        app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    }
    let later: Vec<String> = app.upstream_requests()[2..]
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert!(later.iter().all(|k| *k == keys[1]), "{later:?}");
}

/// A tiny HTTP server that records the JSON bodies POSTed to it.
#[expect(clippy::unwrap_used, reason = "a broken webhook receiver fails the test")]
async fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + length {
                        let body: Value =
                            serde_json::from_slice(&data[end + 4..end + 4 + length]).unwrap();
                        sink.lock().unwrap().push(body);
                        let _ = conn
                            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        data.clear();
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn quota_alerts_fire_once_per_threshold_with_a_webhook() {
    let (url, seen) = webhook().await;
    let config = format!(
        "[alerts]\nwebhook_url = \"{url}\"\n{}\n[[models]]\nname = \"chat\"\ntargets = [\"alerted/m\"]\n",
        provider("alerted", "keys = [\"p-key-0123456789\"]\nrpm = 20")
    );
    let app = spawn_config(&config).await;
    for _ in 0..20 {
        let (code, _, _) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
        assert_eq!(code, 200);
    }
    // Beyond the limit nothing new is used, so nothing new fires.
    for _ in 0..3 {
        let response = app
            .post_with(
                "/v1/chat/completions",
                &chat_body("chat", false),
                &[("x-floodgate-max-wait-ms", "0")],
            )
            .await;
        assert_eq!(response.status(), 429);
    }
    eventually(|| async { seen.lock().unwrap().iter().filter(|a| a["key"] == 0).count() >= 3 })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alerts = seen.lock().unwrap().clone();
    let key_alerts: Vec<(f64, u64)> = alerts
        .iter()
        .filter(|a| a["key"] == 0 && a["quota"] == "rpm")
        .map(|a| (a["threshold"].as_f64().unwrap(), a["used"].as_u64().unwrap()))
        .collect();
    assert_eq!(key_alerts, [(0.7, 14), (0.85, 17), (0.95, 19)], "{alerts:#?}");
    assert!(
        alerts
            .iter()
            .all(|a| a["type"] == "quota_alert" && a["provider"] == "alerted" && a["limit"] == 20)
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("floodgate_quota_alerts_total{scope=\"key\",provider=\"alerted\",key=\"0\",quota=\"rpm\",threshold=\"0.95\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_slow_first_target_is_hedged_and_the_loser_is_cancelled() {
    let config = format!(
        "{}\n[[models]]\nname = \"hedged\"\ntargets = [\"p/hang-first\", \"p/fast\"]\nhedge_after = \"100ms\"\n",
        provider("p", "keys = [\"p-key-0123456789\"]")
    );
    let app = spawn_config(&config).await;
    let started = Instant::now();
    let (code, headers, body) =
        app.post_json("/v1/chat/completions", &chat_body("hedged", false)).await;
    assert_eq!(code, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(headers["x-floodgate-model"], "fast");
    assert_eq!(headers["x-floodgate-hedged"], "true");
    assert_eq!(headers["x-floodgate-attempts"], "2");
    // The hanging call was dropped, not left to hang.
    eventually(|| async { app.mock.stats().hung == 0 }).await;
    assert!(
        app.metrics().await.contains("floodgate_hedges_total{model=\"hedged\",outcome=\"won\"} 1")
    );
    // A fast first target answers before the hedge delay: no second call.
    let config = format!(
        "{}\n[[models]]\nname = \"chat\"\ntargets = [\"p/fast\", \"p/other\"]\nhedge_after = \"2s\"\n",
        provider("p", "keys = [\"p-key-0123456789\"]")
    );
    let app = spawn_config(&config).await;
    let (_, headers, _) = app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    assert_eq!(headers["x-floodgate-attempts"], "1");
    assert!(headers.get("x-floodgate-hedged").is_none());
    assert_eq!(app.upstream_requests().len(), 1);
}

#[tokio::test]
async fn weighted_targets_share_traffic_by_weight() {
    let config = format!(
        "{}\n[[models]]\nname = \"chat\"\nstrategy = \"weighted\"\ntargets = [{{ target = \"p/heavy\", weight = 3 }}, \"p/light\"]\n",
        provider("p", "keys = [\"p-key-0123456789\"]")
    );
    let app = spawn_config(&config).await;
    for _ in 0..200 {
        app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    }
    let heavy = model_calls(&app, "heavy");
    assert!((120..=180).contains(&heavy), "heavy got {heavy} of 200");
    assert_eq!(heavy + model_calls(&app, "light"), 200);
}

#[tokio::test]
async fn least_latency_sends_most_traffic_to_the_faster_target() {
    let config = format!(
        "{}\n[[models]]\nname = \"chat\"\nstrategy = \"least-latency\"\ntargets = [\"p/slow-40\", \"p/quick\"]\n",
        provider("p", "keys = [\"p-key-0123456789\"]")
    );
    let app = spawn_config(&config).await;
    for _ in 0..60 {
        app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
    }
    let quick = model_calls(&app, "quick");
    assert!(quick >= 45, "quick got {quick} of 60");
}

#[tokio::test]
async fn rules_send_short_prompts_without_tools_to_the_cheap_target() {
    let config = format!(
        "{}\n[[models]]\nname = \"auto\"\ntargets = [\"p/strong\"]\n\n[[models.rules]]\nmax_prompt_tokens = 50\ntools = false\ntargets = [\"p/cheap\"]\n",
        provider("p", "keys = [\"p-key-0123456789\"]")
    );
    let app = spawn_config(&config).await;
    let (_, headers, _) = app.post_json("/v1/chat/completions", &chat_body("auto", false)).await;
    assert_eq!(headers["x-floodgate-model"], "cheap");
    let mut long = chat_body("auto", false);
    long["messages"][1]["content"] = json!("word ".repeat(200));
    let (_, headers, _) = app.post_json("/v1/chat/completions", &long).await;
    assert_eq!(headers["x-floodgate-model"], "strong");
    let mut tools = chat_body("auto", false);
    tools["tools"] =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let (_, headers, _) = app.post_json("/v1/chat/completions", &tools).await;
    assert_eq!(headers["x-floodgate-model"], "strong");
    assert!(
        app.metrics()
            .await
            .contains("floodgate_routing_rule_matches_total{model=\"auto\",rule=\"0\"} 1")
    );
}

#[tokio::test]
async fn a_stream_reset_before_its_first_content_falls_back() {
    let config = format!(
        "[routing]\nretries = 0\n{}\n[[models]]\nname = \"chat\"\ntargets = [\"p/first\", \"p/second\"]\n",
        provider("p", "keys = [\"p-key-0123456789\"]")
    );
    let app = spawn_config(&config).await;
    app.mock.enqueue(Script::SseThenReset { events: vec![], delay: Duration::ZERO });
    let (code, headers, events) =
        app.post_sse("/v1/chat/completions", &chat_body("chat", true)).await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-floodgate-model"], "second");
    assert!(events.iter().any(|e| e.data == "[DONE]"));
}

#[tokio::test]
async fn random_upstream_errors_are_absorbed_by_retries() {
    let config = format!(
        "[routing]\nretries = 2\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\nretry_budget_min_per_second = 100\n{}\n[[models]]\nname = \"chat\"\ntargets = [\"p/a\", \"p/b\"]\n",
        provider("p", "keys = [\"p-key-0123456789\"]")
    );
    let app = spawn_with(Options {
        config,
        mock: MockConfig {
            record: true,
            error_rate: 0.2,
            error_kind: ErrorKind::Status500,
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    for _ in 0..50 {
        let (code, _, body) =
            app.post_json("/v1/chat/completions", &chat_body("chat", false)).await;
        assert_eq!(code, 200, "{body}");
    }
}

#[tokio::test]
async fn admin_routes_need_the_master_key_and_name_unknown_providers() {
    let app = spawn_app().await;
    let (code, _, body) = json_of(app.get("/admin/providers").await).await;
    assert_eq!(code, 403);
    assert_eq!(body["error"]["code"], "admin_disabled");
    let app = spawn_with(with_master(DEFAULT_CONFIG)).await;
    let response = app.http.get(app.url("/admin/providers")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .get(app.url("/admin/providers"))
        .bearer_auth("wrong-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let view = admin(&app).await;
    let names: Vec<&str> =
        view["providers"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["oai", "ant", "gem"]);
    let oai = &view["providers"][0];
    assert_eq!(oai["keys"][0]["enabled"], true);
    assert!(oai["targets"][0]["stats"]["in_flight"].is_number(), "{oai}");
    assert_eq!(view["models"][0]["name"], "gpt");
    assert!(
        view.to_string().find("oai-key-0123456789abcdef").is_none(),
        "no key value in the admin view"
    );
    let (code, _, body) = json_of(app.get("/admin/providers/nope").await).await;
    assert_eq!(code, 404);
    assert!(body["error"]["message"].as_str().unwrap().contains("oai, ant, gem"), "{body}");
    let response = app
        .http
        .post(app.url("/admin/providers/nope/reset"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn reset_re_enables_a_refused_key_everywhere() {
    let config = DEFAULT_CONFIG
        .replace(
            "keys = [\"oai-key-0123456789abcdef\"]",
            "keys = [\"invalid-key-0123456789abcdef\", \"good-key-0123456789abcdef\"]",
        )
        .replace("name = \"oai\"", "name = \"resettable\"")
        .replace("\"oai/", "\"resettable/");
    let app = spawn_with(with_master(&config)).await;
    app.post_json("/v1/chat/completions", &chat_body("gpt", false)).await;
    let view = admin(&app).await;
    assert_eq!(view["providers"][0]["keys"][0]["enabled"], false);
    assert!(view["providers"][0]["keys"][0]["disabled_reason"].as_str().unwrap().contains("401"));
    let response = app
        .http
        .post(app.url("/admin/providers/resettable/reset"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    let (code, _, report) = json_of(response).await;
    assert_eq!(code, 200);
    assert_eq!(report["keys_enabled"], 1);
    let view = admin(&app).await;
    assert_eq!(view["providers"][0]["keys"][0]["enabled"], true);
    let (_, _, ready) = json_of(app.get("/health/ready").await).await;
    assert_eq!(ready["components"]["providers"]["providers"]["resettable"]["keys_usable"], 2);
}

/// A key with rpm = 60 never sees more than 60 requests in any minute, as
/// the mock counts them: 75 requests arrive at once, 60 are answered at
/// once, the other 15 wait (in the queue, not failing) until the window
/// frees a minute later. This test takes just over a minute.
#[tokio::test]
async fn a_key_at_60_rpm_never_sees_more_than_60_requests_in_any_minute() {
    let config = chat_on_one_key("[routing.wait]\nmax_wait_cap = \"90s\"\n", "rpm = 60");
    let app = spawn_config(&config).await;
    let mut tasks = Vec::new();
    for _ in 0..75 {
        let request = app
            .http
            .post(app.url("/v1/chat/completions"))
            .header("x-floodgate-max-wait-ms", "80000")
            .timeout(Duration::from_secs(90))
            .json(&chat_body("chat", false));
        tasks.push(tokio::spawn(async move { request.send().await.unwrap().status().as_u16() }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let mut times: Vec<Instant> = app.upstream_requests().iter().map(|r| r.received_at).collect();
    times.sort();
    assert_eq!(times.len(), 75);
    for (i, t) in times.iter().enumerate() {
        let in_minute =
            times[i..].iter().take_while(|u| **u < *t + Duration::from_secs(60)).count();
        assert!(in_minute <= 60, "{in_minute} requests in the minute from request {i}");
    }
    let span = times[74] - times[0];
    assert!(span >= Duration::from_secs(60) && span < Duration::from_secs(63), "{span:?}");
}
