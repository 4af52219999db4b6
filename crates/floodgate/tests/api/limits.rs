//! Per-IP and per-user limits, JWT end users and tiers, limits shared
//! through Redis by two nodes, and a ledger that survives a database outage.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{
    DEFAULT_CONFIG, Options, TcpProxy, TestApp, TestDatabase, chat_body, eventually, json_of,
    spawn_with,
};

const MASTER: &str = "master-key-for-limit-tests-000";
const JWT_SECRET: &str = "a-shared-hs256-secret-of-at-least-32-chars";

fn options(extra: &str) -> Options {
    Options {
        config: format!("{DEFAULT_CONFIG}\n{extra}"),
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    }
}

#[expect(clippy::expect_used, reason = "a test helper: a failed send fails the test")]
async fn chat(
    app: &TestApp,
    key: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
    let mut request = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body("gpt", false));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    json_of(request.send().await.expect("request sent")).await
}

#[tokio::test]
async fn per_ip_limits_count_the_peer_unless_it_is_a_trusted_proxy() {
    let limits = r#"
[limits.ip]
requests = 3
per = "15m"
"#;
    // Untrusted peer: forwarded-for is ignored, so "two clients" share one counter.
    let app = spawn_with(options(limits)).await;
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let (status, headers, _) = chat(&app, MASTER, &[("x-forwarded-for", ip)]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-ratelimit-limit-requests"], "3");
    }
    let (status, headers, body) = chat(&app, MASTER, &[("x-forwarded-for", "203.0.113.4")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("127.0.0.1"), "{body}");
    // 3 per 15 minutes: one comes back every 5 minutes.
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((290..=300).contains(&retry), "{retry}");
    // The limit covers every client route, not only AI ones.
    assert_eq!(app.get("/v1/models").await.status(), StatusCode::TOO_MANY_REQUESTS);

    // Loopback trusted: each forwarded client has its own counter.
    let app = spawn_with(options(
        "[limits]\ntrusted_proxies = [\"127.0.0.1\"]\nip = { requests = 3, per = \"15m\" }\n",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(
            chat(&app, MASTER, &[("x-forwarded-for", "203.0.113.1")]).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        chat(&app, MASTER, &[("x-forwarded-for", "203.0.113.1")]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(chat(&app, MASTER, &[("x-forwarded-for", "203.0.113.2")]).await.0, StatusCode::OK);
    // A client that forges a hop to the left is still counted as itself.
    assert_eq!(
        chat(&app, MASTER, &[("x-forwarded-for", "198.51.100.9, 203.0.113.1")]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_ai_route_limit_is_stricter_and_leaves_other_routes_alone() {
    let app = spawn_with(options(
        "[limits]\nip = { requests = 100, per = \"15m\" }\nip_ai = { requests = 2, per = \"5m\" }\n",
    ))
    .await;
    assert_eq!(chat(&app, MASTER, &[]).await.0, StatusCode::OK);
    assert_eq!(chat(&app, MASTER, &[]).await.0, StatusCode::OK);
    let (status, _, body) = chat(&app, MASTER, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["error"]["message"].as_str().unwrap().contains("AI routes"), "{body}");
    assert_eq!(app.get("/v1/models").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn end_users_from_the_header_or_the_body_have_their_own_limits() {
    let app = spawn_with(options("[limits.user]\nrpm = 2\n")).await;
    for _ in 0..2 {
        assert_eq!(chat(&app, MASTER, &[("x-floodgate-user", "alice")]).await.0, StatusCode::OK);
    }
    let (status, _, body) = chat(&app, MASTER, &[("x-floodgate-user", "alice")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["error"]["message"].as_str().unwrap().contains("user \"alice\""), "{body}");
    assert_eq!(chat(&app, MASTER, &[("x-floodgate-user", "bob")]).await.0, StatusCode::OK);
    // OpenAI's `user` field names the same user.
    let mut body = chat_body("gpt", false);
    body["user"] = json!("alice");
    let response = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // Requests without a user are not held to a user limit.
    for _ in 0..3 {
        assert_eq!(chat(&app, MASTER, &[]).await.0, StatusCode::OK);
    }
    app.ledger_after(8).await;
    let (_, _, report) =
        json_of(app.send_as(Some(MASTER), Method::GET, "/admin/usage?group_by=user", None).await)
            .await;
    // Refused requests are recorded too, as errors.
    let alice = report["rows"].as_array().unwrap().iter().find(|r| r["user"] == "alice").cloned();
    let alice = alice.expect("alice has a row");
    assert_eq!(
        (alice["requests"].as_i64(), alice["errors"].as_i64()),
        (Some(4), Some(2)),
        "{report}"
    );
}

#[expect(clippy::unwrap_used, reason = "a test helper")]
fn token(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[expect(clippy::unwrap_used, reason = "a test helper")]
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn jwt_end_users_are_verified_and_their_tier_chooses_their_limits() {
    let app = spawn_with(options(&format!(
        r#"
[auth.jwt]
hs256_secret = "{JWT_SECRET}"
audience = "floodgate"
issuer = "https://auth.example.com"
tier_claim = "plan"

[limits.user]
rpm = 1

[limits.tiers.pro]
rpm = 3
"#
    )))
    .await;
    let claims = |sub: &str, plan: Option<&str>, exp: u64, aud: &str| {
        let mut c = json!({"sub": sub, "exp": exp, "aud": aud, "iss": "https://auth.example.com"});
        if let Some(plan) = plan {
            c["plan"] = json!(plan);
        }
        c
    };
    let later = now() + 600;
    let pro = token(claims("carol", Some("pro"), later, "floodgate"), JWT_SECRET);
    let free = token(claims("dave", None, later, "floodgate"), JWT_SECRET);
    for _ in 0..3 {
        let (status, _, body) = chat(&app, &pro, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(chat(&app, &pro, &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(chat(&app, &free, &[]).await.0, StatusCode::OK);
    assert_eq!(chat(&app, &free, &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    // The token's user cannot be overridden by the header.
    assert_eq!(
        chat(&app, &free, &[("x-floodgate-user", "someone-else")]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    let cases = [
        (token(claims("x", None, now() - 3600, "floodgate"), JWT_SECRET), "expired"),
        (token(claims("x", None, later, "other-app"), JWT_SECRET), "audience"),
        (
            token(claims("x", None, later, "floodgate"), "a-different-secret-also-32-chars-long"),
            "signature",
        ),
    ];
    for (bad, expected) in cases {
        let (status, _, body) = chat(&app, &bad, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "invalid_token");
        let message = body["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains(expected), "{message:?} should mention {expected}");
        assert!(!message.contains(JWT_SECRET));
    }
    // A JWT end user is not an admin.
    assert_eq!(
        app.send_as(Some(&pro), Method::GET, "/admin/keys", None).await.status(),
        StatusCode::FORBIDDEN
    );
}

/// Two nodes on one Redis share a key's limit.
#[tokio::test]
async fn two_nodes_on_redis_share_a_keys_rpm() {
    let Ok(redis) = std::env::var("FLOODGATE_TEST_REDIS_URL") else {
        eprintln!("skipped two_nodes_on_redis_share_a_keys_rpm: FLOODGATE_TEST_REDIS_URL not set");
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", shared.path().join("shared.db").display());
    let prefix = format!("fgtest{:x}:", crate::helpers::fastrand_u64());
    let node = || Options {
        database_url: Some(url.clone()),
        ..options(&format!(
            "[state]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nredis_prefix = \"{prefix}\"\n"
        ))
    };
    let a = spawn_with(node()).await;
    let b = spawn_with(node()).await;
    let (status, _, created) = json_of(
        a.send_as(
            Some(MASTER),
            Method::POST,
            "/admin/keys",
            Some(&json!({"name": "shared", "rpm": 4})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let key = created["key"].as_str().unwrap().to_string();
    eventually(|| async { chat(&b, &key, &[]).await.0 == StatusCode::OK }).await;
    // One request used on b; three more between the two nodes, then none.
    assert_eq!(chat(&a, &key, &[]).await.0, StatusCode::OK);
    assert_eq!(chat(&b, &key, &[]).await.0, StatusCode::OK);
    assert_eq!(chat(&a, &key, &[]).await.0, StatusCode::OK);
    assert_eq!(chat(&b, &key, &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(chat(&a, &key, &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    let (_, _, ready) = json_of(a.get("/health/ready").await).await;
    assert_eq!(ready["components"]["limiter"]["backend"], "redis");
    assert_eq!(ready["components"]["limiter"]["status"], "ok");
}

/// Redis going away leaves the node serving, on local limits, and saying so.
#[tokio::test]
async fn a_node_whose_redis_goes_away_keeps_serving_and_says_so() {
    let Ok(redis) = std::env::var("FLOODGATE_TEST_REDIS_URL") else {
        eprintln!(
            "skipped a_node_whose_redis_goes_away_keeps_serving_and_says_so: FLOODGATE_TEST_REDIS_URL not set"
        );
        return;
    };
    let target = redis.trim_start_matches("redis://").split('/').next().unwrap().to_string();
    use std::net::ToSocketAddrs;
    let proxy = TcpProxy::start(target.to_socket_addrs().unwrap().next().unwrap()).await;
    let prefix = format!("fgtest{:x}:", crate::helpers::fastrand_u64());
    let app = spawn_with(options(&format!(
        "[state]\nbackend = \"redis\"\nredis_url = \"redis://{}\"\nredis_prefix = \"{prefix}\"\n[limits.user]\nrpm = 1000\n",
        proxy.addr
    )))
    .await;
    assert_eq!(chat(&app, MASTER, &[("x-floodgate-user", "u")]).await.0, StatusCode::OK);
    proxy.cut();
    // Served all the same, on this node's own counters.
    for _ in 0..3 {
        assert_eq!(chat(&app, MASTER, &[("x-floodgate-user", "u")]).await.0, StatusCode::OK);
    }
    let (status, _, ready) = json_of(app.get("/health/ready").await).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["components"]["limiter"]["status"], "degraded", "{ready}");
    assert!(app.metrics().await.contains("floodgate_limiter_degraded 1"));
    proxy.restore();
    eventually(|| async {
        let (_, _, ready) = json_of(app.get("/health/ready").await).await;
        ready["components"]["limiter"]["status"] == "ok"
    })
    .await;
}

async fn burst(app: &TestApp, n: usize) -> usize {
    for _ in 0..n {
        let (status, _, body) = chat(app, MASTER, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    n
}

/// The database goes away mid-run: records spill to disk and are replayed
/// when it returns; every request is recorded exactly once.
#[tokio::test]
async fn the_ledger_survives_a_database_outage_with_nothing_lost_or_doubled() {
    let Some(db) = TestDatabase::create("the_ledger_survives_a_database_outage").await else {
        return;
    };
    let proxy = TcpProxy::start(db.server()).await;
    let mut options = options("");
    options.database_url = Some(db.url_via(proxy.addr));
    options.database_extra = "acquire_timeout = \"500ms\"\nmax_connections = 4\n".to_string();
    let app = spawn_with(options).await;
    let mut sent = burst(&app, 40).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.cut();
    sent += burst(&app, 80).await;
    // Long enough for the writer to fail, spill, and keep spilling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sent += burst(&app, 40).await;
    let spill = app.dir().join("ledger.spill");
    assert!(spill.exists(), "records went to the spill file while the database was down");
    proxy.restore();
    sent += burst(&app, 40).await;
    let direct = floodgate_core::store::open(&db.url, &Default::default()).await.unwrap();
    let rows =
        async || direct.usage_totals().await.unwrap().iter().map(|t| t.requests).sum::<i64>();
    eventually(|| async { rows().await == 200 }).await;
    // Now a database that hangs rather than refusing: requests are served
    // all the same (the writer gives up on it and spills), and nothing is lost.
    proxy.hang();
    sent += burst(&app, 60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sent += burst(&app, 20).await;
    proxy.restore();
    sent += burst(&app, 20).await;
    eventually(|| async { rows().await == 300 }).await;
    app.begin_shutdown();
    app.wait_stopped().await.unwrap();
    assert_eq!(rows().await, 300, "no record lost or written twice");
    assert_eq!(sent, 300);
}
