//! The deployment artifacts against the code: every `floodgate_*` series the
//! Grafana dashboard (`deploy/grafana/floodgate.json`) and the alert rules
//! (`deploy/prometheus/alerts.yml`) read is one a running node exports, so a
//! renamed metric fails here; and the budget gauge the budget alert reads.

#![expect(clippy::unwrap_used, reason = "a test fails where a step does")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use floodgate_core::telemetry::{self, metric};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::helpers::*;
use crate::process::Running;

const MASTER: &str = "fg-master-deploy-0123456789abcdef";

/// Series that appear only after events this test does not cause: checked
/// against the names in the code instead of a scrape.
const NOT_DRIVEN: &[(&str, &str)] = &[
    (metric::LEDGER_SPILLED, "the database failing"),
    (metric::LEDGER_REPLAYED, "the database answering again after a failure"),
    (metric::REALTIME_DROPPED, "a subscriber too slow for its send buffer"),
];

/// Only a node on Redis exports these (without FLOODGATE_TEST_REDIS_URL
/// they are checked against the names in the code).
const REDIS_ONLY: &[&str] =
    &[metric::REDIS_UP, metric::LIMITER_DEGRADED, metric::CACHE_L2_DEGRADED];

fn deploy_file(path: &str) -> String {
    let path = format!("{}/../../deploy/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `floodgate_*` name in a PromQL expression.
fn names_in(expression: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = expression[from..].find("floodgate_").map(|i| i + from) {
        let tail = &expression[at..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        let boundary = !expression[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if boundary && end > "floodgate_".len() {
            names.insert(tail[..end].to_string());
        }
        from = at + end.max(1);
    }
    names
}

/// The dashboard's queries: each panel's targets and the variables' queries.
fn dashboard_expressions() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(&deploy_file("grafana/floodgate.json")).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = format!("panel {:?}", panel["title"].as_str().unwrap_or("?"));
            out.push((title, target["expr"].as_str().unwrap().to_string()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            out.push((format!("variable {}", variable["name"]), query.to_string()));
        }
    }
    out
}

/// The rules' `expr` values (inline, or a `|` block), read line by line:
/// the summaries and descriptions around them name metrics in prose.
fn alert_expressions() -> Vec<(String, String)> {
    let text = deploy_file("prometheus/alerts.yml");
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            alert = name.trim().to_string();
        } else if let Some(value) = trimmed.strip_prefix("expr: ") {
            let mut expression = value.trim().to_string();
            if expression == "|" {
                expression.clear();
                let indent = line.len() - trimmed.len();
                while let Some(next) = lines
                    .next_if(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                {
                    expression.push_str(next.trim());
                    expression.push('\n');
                }
            }
            out.push((format!("alert {alert}"), expression));
        }
    }
    assert!(out.len() >= 10, "read only {} alert expressions", out.len());
    out
}

/// Metric families of a scrape: name → type.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// Why a name an expression reads is not a series the scrape has.
fn missing(used: &str, families: &BTreeMap<String, String>) -> Option<String> {
    if let Some(kind) = families.get(used) {
        return matches!(kind.as_str(), "histogram" | "summary")
            .then(|| format!("{used} is a {kind}: read its _bucket, _sum or _count"));
    }
    for (suffix, kinds) in [
        ("_bucket", &["histogram"][..]),
        ("_sum", &["histogram", "summary"]),
        ("_count", &["histogram", "summary"]),
    ] {
        if let Some(kind) = used.strip_suffix(suffix).and_then(|base| families.get(base)) {
            return (!kinds.contains(&kind.as_str()))
                .then(|| format!("{used}: a {kind} has no {suffix} series"));
        }
    }
    Some(format!("{used} is not in the scrape"))
}

async fn chat(app: &TestApp, key: &str, model: &str, stream: bool) -> StatusCode {
    let body = chat_body(model, stream);
    let response = app.send_as(Some(key), Method::POST, "/v1/chat/completions", Some(&body)).await;
    let status = response.status();
    let _ = response.bytes().await.unwrap();
    status
}

/// A node that does a little of everything the dashboard shows: answers,
/// streams, an upstream failing (errors, retries, an open breaker), a
/// request waiting for provider capacity, client limits, a budget, the
/// cache, a job, a realtime subscriber and a room message.
async fn busy_node(redis: Option<&str>) -> TestApp {
    let state = match redis {
        Some(url) => format!(
            "[state]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"fg-deploy-{}:\"\n",
            fastrand_u64()
        ),
        None => String::new(),
    };
    let config = format!(
        r#"
[server]
shutdown_grace = "5s"

[routing]
retries = 1
backoff_base = "1ms"
backoff_max = "2ms"

[routing.breaker]
consecutive_failures = 2
cooldown = "60s"

{state}
[cache]
enabled = true

[queue]
workers = 1
poll_interval = "50ms"

[[providers]]
name = "oai"
kind = "openai-compatible"
base_url = "{{openai}}"
keys = ["oai-key-0123456789abcdef"]

[[providers]]
name = "tight"
kind = "openai-compatible"
base_url = "{{openai}}"
keys = ["tight-key-0123456789abcdef"]
rpm = 1

[[models]]
name = "gpt"
targets = ["oai/gpt-4o-mini"]

[[models]]
name = "broken"
targets = ["oai/error-500"]

[[models]]
name = "tight"
targets = ["tight/gpt-4o-mini"]

[[pricing]]
model = "gpt-4o-mini"
input_usd_per_mtok = 1000.0
output_usd_per_mtok = 1000.0
"#
    );
    spawn_with(Options { config, master_key: Some(MASTER.to_string()), ..Options::default() }).await
}

async fn drive(app: &TestApp) {
    for stream in [false, false, true] {
        assert_eq!(chat(app, MASTER, "gpt", stream).await, StatusCode::OK);
    }
    assert!(chat(app, MASTER, "broken", false).await.is_server_error());
    // The provider key's one request a minute, then one that waits for it and gives up.
    assert_eq!(chat(app, MASTER, "tight", false).await, StatusCode::OK);
    let waited = app
        .post_with(
            "/v1/chat/completions",
            &chat_body("tight", false),
            &[("x-floodgate-max-wait-ms", "50")],
        )
        .await;
    assert_eq!(waited.status(), StatusCode::TOO_MANY_REQUESTS);
    // A virtual key with a budget and a limit of one request a minute.
    let (status, _, created) = json_of(
        app.send_as(
            Some(MASTER),
            Method::POST,
            "/admin/keys",
            Some(&json!({"name": "deploy", "rpm": 1, "max_budget_usd": 1000})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap();
    assert_eq!(chat(app, key, "gpt", false).await, StatusCode::OK);
    assert_eq!(chat(app, key, "gpt", false).await, StatusCode::TOO_MANY_REQUESTS);
    // A job, run to its end.
    let (status, _, job) = json_of(
        app.send_as(
            Some(MASTER),
            Method::POST,
            "/v1/jobs",
            Some(&json!({"request": chat_body("gpt", false)})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    eventually(|| async {
        let (_, _, job) = json_of(app.get_as(MASTER, &path).await).await;
        job["status"] == "completed"
    })
    .await;
    // A realtime subscriber, and a room message handed to it.
    let url = format!("ws://{}/ws?token={MASTER}", app.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "connected");
    let subscribe = json!({"op": "subscribe", "topic": "room:deploy"}).to_string();
    ws.send(Frame::Text(subscribe.into())).await.unwrap();
    next_json(&mut ws).await;
    let (status, _, _) = json_of(
        app.send_as(
            Some(MASTER),
            Method::POST,
            "/v1/rooms/deploy/messages",
            Some(&json!({"data": {"hello": "dashboards"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_json(&mut ws).await["data"]["hello"], "dashboards");
    ws.close(None).await.unwrap();
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame as JSON.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        if let Frame::Text(text) = frame.unwrap().unwrap().unwrap() {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// A node at its in-flight limit of one sheds the next request.
async fn shed_one() {
    let app = spawn_with(Options {
        config: format!(
            "{DEFAULT_CONFIG}\n[[models]]\nname = \"slow\"\ntargets = [\"oai/slow-2000\"]\n"
        )
        .replace("[server]\n", "[server]\nmax_in_flight = 1\n"),
        ..Options::default()
    })
    .await;
    let body = chat_body("slow", false);
    let slow = app.post("/v1/chat/completions", &body);
    let probe = async {
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            if app.get("/v1/models").await.status() == StatusCode::SERVICE_UNAVAILABLE {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    let (slow, shed) = tokio::join!(slow, probe);
    assert!(shed, "no request was shed at max_in_flight = 1");
    assert_eq!(slow.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_read_is_exported() {
    // The recorder first: App::build sets some gauges (breakers at 0, the
    // Redis limiter's and L2's degraded flags) before it installs the
    // recorder itself, and a gauge set before is lost until it changes.
    let _ = telemetry::metrics_handle();
    let redis = std::env::var("FLOODGATE_TEST_REDIS_URL").ok();
    let app = busy_node(redis.as_deref()).await;
    drive(&app).await;
    shed_one().await;
    // The budget is read back after the request's spend, in the background.
    eventually(|| async { app.metrics().await.contains(metric::BUDGET_USED_MAX) }).await;
    // The queue's gauges are refreshed by its upkeep.
    eventually(|| async { app.metrics().await.contains(metric::QUEUE_OLDEST_WAIT) }).await;
    let scrape = app.metrics().await;
    let families = families(&scrape);
    assert!(families.len() > 20, "a scrape with # TYPE lines:\n{scrape}");

    let mut fallback: Vec<(&str, &str)> = NOT_DRIVEN.to_vec();
    if redis.is_none() {
        eprintln!("FLOODGATE_TEST_REDIS_URL not set: {REDIS_ONLY:?} checked by name only");
        fallback.extend(REDIS_ONLY.iter().map(|name| (*name, "a node on Redis")));
    }
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (place, expression) in dashboard_expressions().into_iter().chain(alert_expressions()) {
        for name in names_in(&expression) {
            uses.entry(name).or_default().insert(place.clone());
        }
    }
    assert!(uses.len() >= 25, "found only {} metric names: {uses:?}", uses.len());
    let mut problems = Vec::new();
    let mut by_name = 0;
    for (name, places) in &uses {
        let base =
            ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        if fallback.iter().any(|(known, _)| *known == name || *known == base) {
            by_name += 1;
            continue;
        }
        if let Some(why) = missing(name, &families) {
            problems.push(format!(
                "{why} (read by {})",
                places.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}\n\nscrape:\n{scrape}", problems.join("\n"));
    // The ones not scraped are still names the code defines, by constant.
    for (name, event) in &fallback {
        assert!(name.starts_with("floodgate_"), "{name} ({event})");
    }
    eprintln!(
        "{} metric names read by the dashboard and the alerts: {} found in a scrape, {by_name} checked by name",
        uses.len(),
        uses.len() - by_name
    );
}

#[test]
fn the_expression_readers_find_names_and_only_names() {
    assert_eq!(
        names_in(
            "sum(rate(floodgate_a_total{x=\"floodgate_not\"}[5m])) / floodgate_b_bucket and notfloodgate_c"
        ),
        ["floodgate_a_total", "floodgate_b_bucket", "floodgate_not"].map(String::from).into()
    );
    let families: BTreeMap<String, String> =
        [("h", "histogram"), ("g", "gauge")].map(|(n, k)| (n.to_string(), k.to_string())).into();
    assert_eq!(missing("h_bucket", &families), None);
    assert_eq!(missing("g", &families), None);
    assert!(missing("h", &families).unwrap().contains("histogram"));
    assert!(missing("g_bucket", &families).unwrap().contains("no _bucket"));
    assert!(missing("gone", &families).unwrap().contains("not in the scrape"));
    let alerts = alert_expressions();
    let (_, multi_line) = alerts.iter().find(|(a, _)| a == "alert FloodgateHighErrorRate").unwrap();
    assert!(
        multi_line.contains("and sum(rate(floodgate_http_requests_total[5m])) > 0.1"),
        "{multi_line}"
    );
}

/// The value of an unlabelled gauge in a scrape.
fn gauge(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn the_budget_gauge_is_the_highest_fraction_of_a_budget_spent() {
    // A process of its own: the gauge is the process's, and other tests in
    // this one spend budgets too.
    let mock = floodgate_mock_upstream::MockServer::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "master_key = \"${{FLOODGATE_MASTER_KEY}}\"\n\n[[providers]]\nname = \"m\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\nkeys = [\"mock-key\"]\n\n[[models]]\nname = \"gpt\"\ntargets = [\"m/gpt-4o-mini\"]\n\n[[pricing]]\nmodel = \"gpt-4o-mini\"\ninput_usd_per_mtok = 1000.0\noutput_usd_per_mtok = 1000.0\n",
        mock.openai_base_url()
    );
    std::fs::write(dir.path().join("floodgate.toml"), config).unwrap();
    let running = Running::spawn(
        &["serve", "-c", "floodgate.toml", "--listen", "127.0.0.1:0", "--log-format", "json"],
        dir.path(),
        &[("FLOODGATE_MASTER_KEY", MASTER)],
    );
    let base = format!("http://{}", running.address().await);
    let http = http_client();
    let create = async |body: Value| {
        let response =
            http.post(format!("{base}/admin/keys")).bearer_auth(MASTER).json(&body).send().await;
        let (status, _, key) = json_of(response.unwrap()).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        (key["id"].as_str().unwrap().to_string(), key["key"].as_str().unwrap().to_string())
    };
    let chat = async |key: &str| {
        let response = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&chat_body("gpt", false))
            .send()
            .await
            .unwrap();
        let (status, _, body) = json_of(response).await;
        (status, body)
    };
    let spent = async |id: &str| {
        let response = http.get(format!("{base}/admin/keys/{id}")).bearer_auth(MASTER).send().await;
        json_of(response.unwrap()).await.2["spent_usd"].as_f64().unwrap()
    };
    let scrape =
        async || http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();

    // What one request costs, on a key without a budget (no gauge for it).
    let (free_id, free) = create(json!({"name": "free"})).await;
    assert_eq!(chat(&free).await.0, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    let cost = loop {
        let cost = spent(&free_id).await;
        if cost > 0.0 {
            break cost;
        }
        assert!(Instant::now() < deadline, "the free key's spend never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(gauge(&scrape().await, metric::BUDGET_USED_MAX), None, "no budget served yet");

    // A budget of 2.5 requests: the first spends 40 % of it, read back at once.
    let max = 2.5 * cost;
    let (id, key) = create(json!({"name": "budgeted", "max_budget_usd": max})).await;
    assert_eq!(chat(&key).await.0, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(value) = gauge(&scrape().await, metric::BUDGET_USED_MAX) {
            break value;
        }
        assert!(
            Instant::now() < deadline,
            "no {} after a budgeted request",
            metric::BUDGET_USED_MAX
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!((first - 0.4).abs() < 1e-6, "{first}");
    // More until the budget refuses one: within 10 s of the last read the
    // spends are not read back, the refusal is (the spend it was refused at).
    let mut refused = None;
    for _ in 0..5 {
        let (status, body) = chat(&key).await;
        if status != StatusCode::OK {
            refused = Some((status, body));
            break;
        }
        assert_eq!(gauge(&scrape().await, metric::BUDGET_USED_MAX), Some(first));
    }
    let (status, body) = refused.expect("a budget of 2.5 requests runs out");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    let value = gauge(&scrape().await, metric::BUDGET_USED_MAX).unwrap();
    // Refused with spend + the prompt's estimate over the budget: at least
    // two requests' spend (80 %), the alert's side of 0.8.
    assert!(value > first && value >= 0.8 - 1e-9, "{value}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while (spent(&id).await / max - value).abs() > 1e-6 {
        assert!(Instant::now() < deadline, "gauge {value}, ledger {}", spent(&id).await / max);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    running.terminate();
    assert!(running.wait().await.0.success());
}
