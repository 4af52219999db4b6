//! Virtual keys through the admin API, used on client routes: limits,
//! model lists, budgets, revocation on every node, and the usage report.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    DEFAULT_CONFIG, Options, TestApp, chat_body, eventually, json_of, spawn_with,
};

const MASTER: &str = "master-key-for-virtual-key-tests";

fn options(config: &str) -> Options {
    Options {
        config: config.to_string(),
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    }
}

async fn spawn() -> TestApp {
    spawn_with(options(DEFAULT_CONFIG)).await
}

/// Creates a key; returns (id, key).
#[expect(clippy::unwrap_used, reason = "a test helper: a missing field fails the test")]
async fn create(app: &TestApp, body: Value) -> (String, String) {
    let (status, _, created) =
        json_of(app.send_as(Some(MASTER), Method::POST, "/admin/keys", Some(&body)).await).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (created["id"].as_str().unwrap().to_string(), created["key"].as_str().unwrap().to_string())
}

async fn chat_as(
    app: &TestApp,
    key: &str,
    model: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    json_of(
        app.send_as(
            Some(key),
            Method::POST,
            "/v1/chat/completions",
            Some(&chat_body(model, false)),
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn a_created_key_is_shown_once_listed_without_it_and_works_on_client_routes() {
    let app = spawn().await;
    let (status, _, created) = json_of(
        app.send_as(
            Some(MASTER),
            Method::POST,
            "/admin/keys",
            Some(&json!({"name": "web", "metadata": {"team": "growth"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("fg-"), "{created}");
    assert_eq!(created["prefix"], key[..9]);
    assert_eq!(created["metadata"]["team"], "growth");
    assert_eq!(created["budget_period"], "total");

    let (status, _, list) =
        json_of(app.send_as(Some(MASTER), Method::GET, "/admin/keys", None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["keys"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(key), "the list must never show the key");
    assert!(list["keys"][0].get("key").is_none());

    let (status, headers, body) = chat_as(&app, key, "gpt").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers.get("x-floodgate-provider").is_some());

    let (status, _, body) = chat_as(&app, "fg-not-a-real-key", "gpt").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // A virtual key is not the master key.
    let (status, _, body) =
        json_of(app.send_as(Some(key), Method::GET, "/admin/keys", None).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn bad_key_bodies_say_what_was_wrong_and_what_is_valid() {
    let app = spawn().await;
    let cases = [
        (json!({}), "name is required"),
        (json!({"name": "x", "rpm": 0}), "rpm must be at least 1"),
        (json!({"name": "x", "models": ["nope"]}), "valid: gpt, claude, gemini, embed"),
        (json!({"name": "x", "budget_period": "week"}), "budget_period"),
        (json!({"name": "x", "max_budget_usd": -1}), "above 0"),
        (json!({"name": "x", "expires_at": "tomorrow"}), "RFC 3339"),
        (json!({"name": "x", "colour": "red"}), "valid fields"),
        (json!({"name": "x", "metadata": [1]}), "JSON object"),
        (json!({"name": "x", "scopes": ["root"]}), "valid: publish"),
    ];
    for (body, expected) in cases {
        let (status, _, answer) =
            json_of(app.send_as(Some(MASTER), Method::POST, "/admin/keys", Some(&body)).await)
                .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message:?} should mention {expected:?}");
    }
    let (status, _, answer) = json_of(
        app.send_as(Some(MASTER), Method::PATCH, "/admin/keys/key_nope", Some(&json!({"rpm": 5})))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[tokio::test]
async fn a_key_limited_to_some_models_gets_403_for_others() {
    let app = spawn().await;
    let (_, key) = create(&app, json!({"name": "claude-only", "models": ["claude"]})).await;
    let (status, _, body) = chat_as(&app, &key, "gpt").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    assert!(body["error"]["message"].as_str().unwrap().contains("claude"));
    let (status, _, _) = chat_as(&app, &key, "claude").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn rpm_is_exact_and_answers_carry_rate_limit_headers() {
    let app = spawn().await;
    let (id, key) = create(&app, json!({"name": "three", "rpm": 3})).await;
    for remaining in [2, 1, 0] {
        let (status, headers, body) = chat_as(&app, &key, "gpt").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["x-ratelimit-limit-requests"], "3");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining.to_string().as_str());
        assert!(headers.get("x-ratelimit-reset-requests").is_some());
    }
    let (status, headers, body) = chat_as(&app, &key, "gpt").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "one request every 20 s comes back: {retry}");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");

    // Raising the limit takes effect at once.
    let (status, _, patched) = json_of(
        app.send_as(
            Some(MASTER),
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(&json!({"rpm": 100})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["rpm"], 100);
    let (status, _, body) = chat_as(&app, &key, "gpt").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The refused request did not reach the upstream.
    assert_eq!(app.upstream_requests().len(), 4);
}

#[tokio::test]
async fn tpm_refuses_with_tokens_exceeded() {
    let app = spawn().await;
    let (_, key) = create(&app, json!({"name": "tokens", "tpm": 40})).await;
    let mut refused = None;
    for _ in 0..20 {
        let (status, headers, body) = chat_as(&app, &key, "gpt").await;
        assert!(headers.get("x-ratelimit-limit-tokens").is_some());
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(body);
            break;
        }
    }
    let body = refused.expect("a 40-token-per-minute key is refused within 20 requests");
    assert_eq!(body["error"]["code"], "tokens_exceeded", "{body}");
}

#[tokio::test]
async fn a_request_larger_than_the_token_limit_is_refused_outright() {
    let app = spawn().await;
    let (_, key) = create(&app, json!({"name": "tiny", "tpm": 5})).await;
    let mut body = chat_body("gpt", false);
    body["messages"][1]["content"] = json!("word ".repeat(400));
    let (status, headers, answer) =
        json_of(app.send_as(Some(&key), Method::POST, "/v1/chat/completions", Some(&body)).await)
            .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "tokens_exceeded");
    assert!(answer["error"]["message"].as_str().unwrap().contains("shorter"));
    assert!(headers.get("retry-after").is_none(), "waiting would not help");
}

#[tokio::test]
async fn max_concurrent_refuses_the_request_beyond_the_limit() {
    let mut options = options(DEFAULT_CONFIG);
    options.mock.latency = std::time::Duration::from_millis(600);
    let app = spawn_with(options).await;
    let (_, key) = create(&app, json!({"name": "one-at-a-time", "max_concurrent": 1})).await;
    let slow = chat_as(&app, &key, "gpt");
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        chat_as(&app, &key, "gpt").await
    };
    let ((first_status, _, _), (status, headers, body)) = tokio::join!(slow, second);
    assert_eq!(first_status, StatusCode::OK);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "concurrency_exceeded");
    assert!(headers.get("retry-after").is_some());
    // The slot is freed when the first request ends.
    let (status, _, _) = chat_as(&app, &key, "gpt").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_and_on_another_node_within_a_sync() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", shared.path().join("shared.db").display());
    let node =
        |url: &str| Options { database_url: Some(url.to_string()), ..options(DEFAULT_CONFIG) };
    let a = spawn_with(node(&url)).await;
    let b = spawn_with(node(&url)).await;
    let (id, key) = create(&a, json!({"name": "shared"})).await;
    // Node b learns of the key from the database.
    eventually(|| async { chat_as(&b, &key, "gpt").await.0 == StatusCode::OK }).await;

    let (status, _, body) =
        json_of(a.send_as(Some(MASTER), Method::DELETE, &format!("/admin/keys/{id}"), None).await)
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], true);
    let (status, _, _) = chat_as(&a, &key, "gpt").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "refused at once on the node that revoked it");
    eventually(|| async { chat_as(&b, &key, "gpt").await.0 == StatusCode::UNAUTHORIZED }).await;

    // Revoked keys are listed only when asked for.
    let (_, _, list) =
        json_of(a.send_as(Some(MASTER), Method::GET, "/admin/keys", None).await).await;
    assert!(list["keys"].as_array().unwrap().is_empty(), "{list}");
    let (_, _, list) = json_of(
        a.send_as(Some(MASTER), Method::GET, "/admin/keys?include_revoked=true", None).await,
    )
    .await;
    assert_eq!(list["keys"][0]["id"], id.as_str());
    assert!(list["keys"][0]["revoked_at"].is_string());
}

#[tokio::test]
async fn an_expired_key_says_when_it_expired() {
    let app = spawn().await;
    let (_, key) = create(&app, json!({"name": "old", "expires_at": "2020-01-01T00:00:00Z"})).await;
    let (status, _, body) = chat_as(&app, &key, "gpt").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "expired_api_key");
    assert!(body["error"]["message"].as_str().unwrap().contains("2020-01-01T00:00:00"), "{body}");
}

/// Prices that make every token cost $0.01, so budgets are reached in a few requests.
const PRICED: &str = r#"
[[pricing]]
model = "gpt-4o-mini"
input_usd_per_mtok = 10000.0
output_usd_per_mtok = 10000.0
"#;

#[tokio::test]
async fn a_budget_admits_until_spent_and_overruns_by_at_most_one_request() {
    let app = spawn_with(options(&format!("{DEFAULT_CONFIG}{PRICED}"))).await;
    let (id, key) =
        create(&app, json!({"name": "budgeted", "max_budget_usd": 1.0, "budget_period": "month"}))
            .await;
    let mut admitted = 0;
    let mut refusal = None;
    for _ in 0..100 {
        let (status, headers, body) = chat_as(&app, &key, "gpt").await;
        if status == StatusCode::OK {
            admitted += 1;
            // Spend is charged after the answer, in the background.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        }
        refusal = Some((status, headers, body));
        break;
    }
    let (status, headers, body) = refusal.expect("a $1 budget runs out");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("month"), "{body}");
    assert!(headers.get("retry-after").is_some(), "a monthly budget resets");
    assert!(admitted >= 1);

    let (_, _, view) =
        json_of(app.send_as(Some(MASTER), Method::GET, &format!("/admin/keys/{id}"), None).await)
            .await;
    let ledger = app.ledger_after(admitted + 1).await;
    let cost: f64 = ledger.iter().map(|t| t.cost_usd).sum();
    let per_request = cost / admitted as f64;
    assert!(cost >= 1.0 - per_request, "spent {cost} over {admitted} requests");
    assert!(cost < 1.0 + per_request + 1e-9, "overran by more than one request: {cost}");
    eventually(|| async {
        let (_, _, view) = json_of(
            app.send_as(Some(MASTER), Method::GET, &format!("/admin/keys/{id}"), None).await,
        )
        .await;
        (view["spent_usd"].as_f64().unwrap() - cost).abs() < 1e-6
    })
    .await;
    assert!(view["spent_usd"].is_number());
}

#[tokio::test]
async fn usage_is_reported_per_key_model_and_day() {
    let app = spawn().await;
    let (id_a, key_a) = create(&app, json!({"name": "a"})).await;
    let (_, key_b) = create(&app, json!({"name": "b"})).await;
    for _ in 0..3 {
        assert_eq!(chat_as(&app, &key_a, "gpt").await.0, StatusCode::OK);
    }
    assert_eq!(chat_as(&app, &key_a, "claude").await.0, StatusCode::OK);
    assert_eq!(chat_as(&app, &key_b, "gpt").await.0, StatusCode::OK);
    app.ledger_after(5).await;

    let (status, _, report) = json_of(
        app.send_as(Some(MASTER), Method::GET, "/admin/usage?group_by=key,model", None).await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let rows = report["rows"].as_array().unwrap();
    let row = |key: &str, model: &str| {
        rows.iter().find(|r| r["key_id"] == key && r["model"] == model).cloned()
    };
    let a_gpt = row(&id_a, "gpt").expect("a row for key a on gpt");
    assert_eq!(a_gpt["requests"], 3);
    assert_eq!(a_gpt["key_name"], "a");
    assert!(a_gpt["input_tokens"].as_i64().unwrap() > 0);
    assert_eq!(report["totals"]["requests"], 5);

    let today = &floodgate_core::time::day(floodgate_core::time::now_ms());
    let (_, _, by_day) = json_of(
        app.send_as(
            Some(MASTER),
            Method::GET,
            &format!("/admin/usage?group_by=day&key_id={id_a}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(by_day["rows"][0]["day"], today.as_str());
    assert_eq!(by_day["rows"][0]["requests"], 4);

    // `to` is exclusive: nothing before the first of January 2000.
    let (_, _, none) =
        json_of(app.send_as(Some(MASTER), Method::GET, "/admin/usage?to=2000-01-01", None).await)
            .await;
    assert_eq!(none["totals"]["requests"], 0, "{none}");

    let (status, _, bad) =
        json_of(app.send_as(Some(MASTER), Method::GET, "/admin/usage?group_by=colour", None).await)
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["error"]["message"].as_str().unwrap().contains("key, user, model, provider, day"));
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    let app = spawn().await;
    let (_, key) = create(&app, json!({"name": "secret"})).await;
    assert_eq!(chat_as(&app, &key, "gpt").await.0, StatusCode::OK);
    app.ledger_after(1).await;
    let secret_part = &key[3..];
    for entry in std::fs::read_dir(app.dir()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(secret_part.len()).any(|w| w == secret_part.as_bytes()),
            "{} holds the key in clear",
            path.display()
        );
    }
}

#[tokio::test]
async fn room_rules_are_shown_kept_cleared_and_checked() {
    let app = spawn().await;
    let admin = |method: Method, path: String, body: Option<Value>| {
        let app = &app;
        async move { json_of(app.send_as(Some(MASTER), method, &path, body.as_ref()).await).await }
    };
    let rooms = json!(["team-42-*", "lobby"]);
    let (status, _, created) =
        admin(Method::POST, "/admin/keys".into(), Some(json!({"name": "team-42", "rooms": rooms})))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["rooms"], rooms);
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/admin/keys/{id}");
    let (_, _, shown) = admin(Method::GET, path.clone(), None).await;
    assert_eq!(shown["rooms"], rooms, "{shown}");
    let (_, _, list) = admin(Method::GET, "/admin/keys".into(), None).await;
    assert_eq!(list["keys"][0]["rooms"], rooms, "{list}");

    // A PATCH without `rooms` keeps them; an empty list means no room; null, every room.
    let (_, _, patched) = admin(Method::PATCH, path.clone(), Some(json!({"rpm": 5}))).await;
    assert_eq!(patched["rooms"], rooms, "{patched}");
    let (_, _, patched) = admin(Method::PATCH, path.clone(), Some(json!({"rooms": []}))).await;
    assert_eq!(patched["rooms"], json!([]), "{patched}");
    let (status, _, patched) =
        admin(Method::PATCH, path.clone(), Some(json!({"rooms": null}))).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert!(patched["rooms"].is_null(), "{patched}");
    let (_, _, shown) = admin(Method::GET, path.clone(), None).await;
    assert!(shown["rooms"].is_null(), "{shown}");

    let too_many: Vec<String> = (0..101).map(|i| format!("room-{i}")).collect();
    let bad = [
        (Method::POST, "/admin/keys".to_string(), json!({"name": "x", "rooms": ["team 42"]})),
        (Method::PATCH, path.clone(), json!({"rooms": too_many})),
    ];
    for (method, target, body) in bad {
        let (status, _, answer) = admin(method, target, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("rooms"), "{message:?} should name rooms");
        assert!(message.contains("valid:"), "{message:?} should say what is valid");
    }
    // Neither refusal changed the key.
    let (_, _, shown) = admin(Method::GET, path, None).await;
    assert!(shown["rooms"].is_null(), "{shown}");
    let (_, _, list) = admin(Method::GET, "/admin/keys".into(), None).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 1, "{list}");
}
