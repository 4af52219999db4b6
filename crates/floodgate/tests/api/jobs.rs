//! The job queue end to end: `/v1/jobs` on a real gateway with its mock
//! upstream, on the embedded SQLite queue and (with
//! `FLOODGATE_TEST_REDIS_URL`) on Redis. Most tests run with
//! `[queue] workers = 0` and step the queue with `jobs::try_run_one`, so
//! the order of events is the test's, not a race.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_core::jobs;
use floodgate_mock_upstream::{MockConfig, Script};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    DEFAULT_CONFIG, Options, TestApp, data_of, eventually, json_of, parse_sse, spawn_with,
};

const MASTER: &str = "fg-test-master-key-for-jobs-0123";

/// `[state]` for each backend: SQLite (the default) and Redis, if set.
fn backends() -> Vec<String> {
    let mut list = vec![String::new()];
    if let Ok(redis) = std::env::var("FLOODGATE_TEST_REDIS_URL") {
        list.push(redis_state(&redis, &fresh_prefix()));
    }
    list
}

fn fresh_prefix() -> String {
    format!("fgtest{:x}:", crate::helpers::fastrand_u64())
}

fn redis_state(url: &str, prefix: &str) -> String {
    format!("[state]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n")
}

fn options(state: &str, queue: &str, mock: MockConfig) -> Options {
    Options {
        config: format!(
            "{DEFAULT_CONFIG}\n{state}\n[queue]\nretry_base = \"10ms\"\nretry_max = \"20ms\"\n{queue}\n"
        ),
        mock: MockConfig { record: true, ..mock },
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    }
}

/// A node that runs no jobs by itself: the test steps the queue.
async fn stepped(state: &str) -> TestApp {
    spawn_with(options(state, "workers = 0", MockConfig::default())).await
}

fn request(text: &str) -> Value {
    json!({"model": "gpt", "messages": [{"role": "user", "content": text}]})
}

async fn submit_as(app: &TestApp, key: &str, body: &Value) -> (StatusCode, Value) {
    let (status, _, job) =
        json_of(app.send_as(Some(key), Method::POST, "/v1/jobs", Some(body)).await).await;
    (status, job)
}

async fn submit(app: &TestApp, body: &Value) -> Value {
    let (status, job) = submit_as(app, MASTER, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["status"], "queued", "{job}");
    job
}

fn id_of(job: &Value) -> String {
    job["id"].as_str().unwrap_or_else(|| panic!("no id in {job}")).to_string()
}

async fn job_as(app: &TestApp, key: &str, id: &str) -> (StatusCode, Value) {
    let (status, _, job) =
        json_of(app.send_as(Some(key), Method::GET, &format!("/v1/jobs/{id}"), None).await).await;
    (status, job)
}

async fn job(app: &TestApp, id: &str) -> Value {
    let (status, job) = job_as(app, MASTER, id).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

async fn step(app: &TestApp) -> Option<String> {
    jobs::try_run_one(&app.state).await.unwrap_or_else(|e| panic!("the queue failed: {e}"))
}

/// Creates a virtual key; returns (id, key).
async fn create_key(app: &TestApp, name: &str) -> (String, String) {
    let body = json!({"name": name});
    let (status, _, created) =
        json_of(app.send_as(Some(MASTER), Method::POST, "/admin/keys", Some(&body)).await).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let text = |field: &str| created[field].as_str().unwrap_or_default().to_string();
    (text("id"), text("key"))
}

#[tokio::test]
async fn a_job_runs_through_the_router_and_keeps_its_result() {
    for state in backends() {
        let app = stepped(&state).await;
        let queued = submit(&app, &json!({"request": request("Hello, job."), "priority": 7})).await;
        let id = id_of(&queued);
        assert_eq!(queued["priority"], 7);
        assert_eq!(step(&app).await.as_deref(), Some(id.as_str()));
        let done = job(&app, &id).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["attempts"], 1);
        assert_eq!(done["result"]["object"], "chat.completion");
        let text = done["result"]["choices"][0]["message"]["content"].as_str().unwrap_or_default();
        assert!(text.starts_with("mock reply"), "{done}");
        assert!(done["result"]["usage"]["completion_tokens"].as_u64() > Some(0), "{done}");
        // One upstream call, recorded in the ledger like a synchronous request.
        let calls = app.upstream_requests();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].body["messages"][0]["content"], "Hello, job.");
        let totals = app.ledger_after(1).await;
        assert_eq!(totals.iter().map(|t| t.requests).sum::<i64>(), 1);
        assert_eq!(step(&app).await, None, "nothing else is queued");
    }
}

#[tokio::test]
async fn an_anthropic_job_answers_in_anthropic_format() {
    let app = stepped("").await;
    let body = json!({"format": "anthropic", "request": {
        "model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}});
    let id = id_of(&submit(&app, &body).await);
    step(&app).await;
    let done = job(&app, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["format"], "anthropic");
    assert_eq!(done["result"]["type"], "message", "{done}");
    assert_eq!(done["result"]["content"][0]["type"], "text");
}

#[tokio::test]
async fn jobs_run_in_strict_priority_order_then_fifo() {
    for state in backends() {
        let app = stepped(&state).await;
        let mut ids = Vec::new();
        for (n, priority) in [1, 10, 5, 10, 0].into_iter().enumerate() {
            let body = json!({"request": request(&format!("job {n}")), "priority": priority});
            ids.push(id_of(&submit(&app, &body).await));
        }
        let mut ran = Vec::new();
        while let Some(id) = step(&app).await {
            ran.push(id);
        }
        assert_eq!(ran, [&ids[1], &ids[3], &ids[2], &ids[0], &ids[4]].map(String::clone));
    }
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_job_per_key() {
    for state in backends() {
        let app = stepped(&state).await;
        let body = json!({"request": request("once"), "idempotency_key": "order-42"});
        let first = submit(&app, &body).await;
        let (status, again) = submit_as(&app, MASTER, &body).await;
        assert_eq!(status, StatusCode::OK, "a repeat is not a new job");
        assert_eq!(again["id"], first["id"]);
        // The header works too, and another key's same idempotency key is its own.
        let (_, other) = create_key(&app, "other").await;
        let response = app
            .http
            .post(app.url("/v1/jobs"))
            .bearer_auth(&other)
            .header("idempotency-key", "order-42")
            .json(&json!({"request": request("once")}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, _, theirs) = json_of(response).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_ne!(theirs["id"], first["id"]);
        assert_eq!(theirs["idempotency_key"], "order-42");
    }
}

#[tokio::test]
async fn failures_retry_with_backoff_then_dead_letter_then_an_admin_retry_runs_it() {
    for state in backends() {
        let app = stepped(&state).await;
        // Each attempt: the router's 3 tries (retries = 2) all get a 503.
        for _ in 0..6 {
            app.mock.enqueue(Script::Status {
                status: 503,
                headers: Vec::new(),
                body: json!({"error": {"message": "overloaded", "type": "server_error"}}),
            });
        }
        let id =
            id_of(&submit(&app, &json!({"request": request("flaky"), "max_attempts": 2})).await);
        assert_eq!(step(&app).await.as_deref(), Some(id.as_str()));
        let retrying = job(&app, &id).await;
        assert_eq!(retrying["status"], "queued", "{retrying}");
        assert_eq!(retrying["attempts"], 1);
        assert!(retrying["error"].as_str().unwrap_or_default().contains("503"), "{retrying}");
        // The backoff (10–20 ms here) passes before the job may run again.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(step(&app).await.as_deref(), Some(id.as_str()));
        let dead = job(&app, &id).await;
        assert_eq!(
            (dead["status"].as_str(), dead["dead_letter"].as_bool()),
            (Some("failed"), Some(true)),
            "{dead}"
        );
        assert_eq!(dead["attempts"], 2);

        let (status, _, letters) =
            json_of(app.get_as(MASTER, "/admin/queue/dead-letters").await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(letters["data"][0]["id"], id.as_str(), "{letters}");
        assert_eq!(letters["data"][0]["request"]["messages"][0]["content"], "flaky");
        let (_, _, stats) = json_of(app.get_as(MASTER, "/admin/queue").await).await;
        assert_eq!(stats["dead_letters"], 1, "{stats}");

        // Six failures in a row opened the target's breaker: reset it, as an
        // operator would once the provider is back.
        let reset =
            app.send_as(Some(MASTER), Method::POST, "/admin/providers/oai/reset", None).await;
        assert_eq!(reset.status(), StatusCode::OK);
        let (status, _, retried) = json_of(
            app.send_as(
                Some(MASTER),
                Method::POST,
                &format!("/admin/queue/dead-letters/{id}/retry"),
                None,
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{retried}");
        assert_eq!(retried["status"], "queued");
        assert_eq!(step(&app).await.as_deref(), Some(id.as_str()));
        assert_eq!(job(&app, &id).await["status"], "completed");
        let (status, _, missing) = json_of(
            app.send_as(
                Some(MASTER),
                Method::DELETE,
                &format!("/admin/queue/dead-letters/{id}"),
                None,
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "no longer a dead letter: {missing}");
    }
}

#[tokio::test]
async fn a_request_that_cannot_succeed_is_a_dead_letter_at_once_and_can_be_deleted() {
    let app = stepped("").await;
    app.mock.enqueue(Script::Status {
        status: 400,
        headers: Vec::new(),
        body: json!({"error": {"message": "bad tool schema", "type": "invalid_request_error"}}),
    });
    let id = id_of(&submit(&app, &json!({"request": request("bad"), "max_attempts": 5})).await);
    step(&app).await;
    let dead = job(&app, &id).await;
    assert_eq!(dead["status"], "failed", "{dead}");
    assert_eq!(dead["attempts"], 1, "a 400 is not retried");
    assert!(dead["error"].as_str().unwrap_or_default().contains("bad tool schema"), "{dead}");
    let path = format!("/admin/queue/dead-letters/{id}");
    let response = app.send_as(Some(MASTER), Method::DELETE, &path, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _) = job_as(&app, MASTER, &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancel_stops_a_queued_job_and_a_running_one() {
    for state in backends() {
        // A worker of its own, and an upstream slow enough to cancel mid-stream.
        let mock = MockConfig {
            chunks: 50,
            chunk_delay: Duration::from_millis(40),
            ..MockConfig::default()
        };
        let app = spawn_with(options(&state, "workers = 1", mock)).await;
        let id = id_of(&submit(&app, &json!({"request": request("long")})).await);
        eventually(|| async { app.mock.stats().streams_started == 1 }).await;
        assert_eq!(job(&app, &id).await["status"], "running");
        let (status, _, cancelled) = json_of(
            app.send_as(Some(MASTER), Method::DELETE, &format!("/v1/jobs/{id}"), None).await,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
        // The upstream call is dropped, and the job stays cancelled.
        eventually(|| async { app.mock.stats().streams_cancelled == 1 }).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = job(&app, &id).await;
        assert_eq!(after["status"], "cancelled", "{after}");
        assert_eq!(after["result"], Value::Null);
        app.begin_shutdown();
        let _ = app.wait_stopped().await;
    }
    for state in backends() {
        let app = stepped(&state).await;
        let id = id_of(&submit(&app, &json!({"request": request("never")})).await);
        let response =
            app.send_as(Some(MASTER), Method::DELETE, &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(step(&app).await, None, "a cancelled job does not run");
        assert_eq!(job(&app, &id).await["status"], "cancelled");
        assert!(app.upstream_requests().is_empty());
    }
}

#[tokio::test]
async fn a_job_whose_worker_died_runs_again_once_its_lease_expires_and_completes_once() {
    for state in backends() {
        let app = stepped(&state).await;
        let id = id_of(&submit(&app, &json!({"request": request("orphan")})).await);
        // A worker leases the job and dies (it never heartbeats or completes).
        let queue = app.state.jobs.queue.clone();
        let now = floodgate_core::time::now_ms();
        let leased = queue.lease("dead-worker", 1, 50, now).await.unwrap_or_default();
        assert_eq!(leased.len(), 1);
        assert_eq!(step(&app).await, None, "leased: not yet anyone else's");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(step(&app).await.as_deref(), Some(id.as_str()));
        let done = job(&app, &id).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["attempts"], 2);
        // The dead worker's late completion does not count.
        let late = queue.complete(&id, "dead-worker", &json!("stale"), now + 100).await;
        assert!(!late.unwrap_or(true));
        assert_eq!(job(&app, &id).await["result"]["object"], "chat.completion");
    }
}

#[tokio::test]
async fn queued_jobs_survive_a_restart_of_an_embedded_node() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let database = format!("sqlite://{}", dir.path().join("node.db").display());
    let node = || Options {
        database_url: Some(database.clone()),
        ..options("", "workers = 0", MockConfig::default())
    };
    let first = spawn_with(node()).await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(id_of(
                &submit(&first, &json!({"request": request(&format!("kept {n}"))})).await,
            ));
        }
        ids
    };
    first.begin_shutdown();
    let _ = first.wait_stopped().await;
    assert!(dir.path().join("node-jobs.db").exists(), "the queue's own file next to the database");
    let second = spawn_with(node()).await;
    let mut ran = Vec::new();
    while let Some(id) = step(&second).await {
        ran.push(id);
    }
    assert_eq!(ran, ids);
    for id in &ids {
        assert_eq!(job(&second, id).await["status"], "completed");
    }
}

/// A completed or cancelled job outlives the queue's `result_ttl` in the
/// job history (the store), for its owner only. (A dead letter stays in the
/// queue until an operator retries or deletes it.)
#[tokio::test]
async fn finished_jobs_are_kept_in_the_history_after_the_queue_forgets_them() {
    for state in backends() {
        let app = stepped(&state).await;
        let (_, alice) = create_key(&app, "alice").await;
        let (_, bob) = create_key(&app, "bob").await;
        let mut ids = Vec::new();
        for text in ["completes", "is cancelled"] {
            let (status, queued) =
                submit_as(&app, &alice, &json!({"request": request(text)})).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
            ids.push(id_of(&queued));
        }
        step(&app).await;
        let path = format!("/v1/jobs/{}", ids[1]);
        let cancel = app.send_as(Some(&alice), Method::DELETE, &path, None).await;
        assert_eq!(cancel.status(), StatusCode::OK);
        let mut seen = Vec::new();
        for id in &ids {
            seen.push(job_as(&app, &alice, id).await.1);
        }
        assert_eq!(seen[0]["status"], "completed", "{seen:?}");
        assert_eq!(seen[1]["status"], "cancelled", "{seen:?}");
        // The history has them; then the queue forgets them (as result_ttl does) ...
        eventually(|| async {
            let mut kept = true;
            for id in &ids {
                kept &= matches!(app.state.store.job_record(id).await, Ok(Some(_)));
            }
            kept
        })
        .await;
        let far = floodgate_core::time::now_ms() + 86_400_000;
        app.state.jobs.queue.purge(far).await.unwrap();
        assert!(app.state.jobs.queue.get(&ids[0]).await.unwrap().is_none());
        // ... and GET answers from the history, as the job ended.
        for (id, before) in ids.iter().zip(&seen) {
            let (status, after) = job_as(&app, &alice, id).await;
            assert_eq!(status, StatusCode::OK, "{after}");
            assert_eq!(&after, before);
            assert_eq!(job_as(&app, &bob, id).await.0, StatusCode::NOT_FOUND, "owners only");
            assert_eq!(job_as(&app, MASTER, id).await.0, StatusCode::OK);
        }
        assert_eq!(job_as(&app, &alice, "job_unknown").await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_job_is_seen_and_cancelled_only_by_its_key_or_the_master_key() {
    for state in backends() {
        let app = stepped(&state).await;
        let (_, alice) = create_key(&app, "alice").await;
        let (_, bob) = create_key(&app, "bob").await;
        let (status, queued) = submit_as(&app, &alice, &json!({"request": request("mine")})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let id = id_of(&queued);
        assert_eq!(job_as(&app, &alice, &id).await.0, StatusCode::OK);
        assert_eq!(job_as(&app, MASTER, &id).await.0, StatusCode::OK);
        let (status, error) = job_as(&app, &bob, &id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
        assert_eq!(error["error"]["code"], "not_found");
        let path = format!("/v1/jobs/{id}");
        assert_eq!(
            app.send_as(Some(&bob), Method::DELETE, &path, None).await.status(),
            StatusCode::NOT_FOUND
        );
        let events = app.send_as(Some(&bob), Method::GET, &format!("{path}/events"), None).await;
        assert_eq!(events.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            app.send_as(None, Method::GET, &path, None).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            job_as(&app, &alice, &id).await.1["status"],
            "queued",
            "bob's cancel did nothing"
        );
        // The job runs as alice: her ledger row.
        step(&app).await;
        assert_eq!(job_as(&app, &alice, &id).await.1["status"], "completed");
    }
}

#[tokio::test]
async fn a_job_of_a_revoked_key_does_not_run() {
    let app = stepped("").await;
    let (key_id, key) = create_key(&app, "leaving").await;
    let id = id_of(&submit_as(&app, &key, &json!({"request": request("late")})).await.1);
    let revoked =
        app.send_as(Some(MASTER), Method::DELETE, &format!("/admin/keys/{key_id}"), None).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    step(&app).await;
    let dead = job(&app, &id).await;
    assert_eq!(dead["status"], "failed", "{dead}");
    assert!(dead["error"].as_str().unwrap_or_default().contains("revoked"), "{dead}");
    assert!(app.upstream_requests().is_empty());
}

#[tokio::test]
async fn bad_submissions_are_400s_that_name_the_field() {
    let app = stepped("").await;
    let cases = [
        (json!({"request": request("x"), "priority": 11}), "priority"),
        (json!({"request": request("x"), "priority": "high"}), "priority"),
        (json!({"priority": 3}), "request"),
        (json!({"request": "hello"}), "request"),
        (
            json!({"request": {"model": "nope", "messages": [{"role": "user", "content": "x"}]}}),
            "request.model",
        ),
        (json!({"request": {"model": "gpt", "messages": []}}), "request.messages"),
        (json!({"request": request("x"), "max_attempts": 0}), "max_attempts"),
        (json!({"request": request("x"), "max_attempts": 21}), "max_attempts"),
        (json!({"request": request("x"), "webhook_url": "ftp://example.com/x"}), "webhook_url"),
        (json!({"request": request("x"), "deadline": "2020-01-01T00:00:00Z"}), "deadline"),
        (json!({"request": request("x"), "deadline": "tomorrow"}), "deadline"),
        (json!({"request": request("x"), "format": "gemini"}), "format"),
    ];
    for (body, param) in cases {
        let (status, error) = submit_as(&app, MASTER, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {error}");
        assert_eq!(error["error"]["param"], param, "{body} → {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("{param}: ")), "{message}");
    }
    let (status, error) =
        submit_as(&app, MASTER, &json!({"request": request("x"), "colour": "red"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"]["message"].as_str().unwrap_or_default().contains("valid fields"),
        "{error}"
    );
    let (status, _) =
        submit_as(&app, MASTER, &json!({"request": request("x"), "deadline": 4_102_444_800_u64}))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "Unix seconds in the future");
    assert!(app.upstream_requests().is_empty());
}

#[tokio::test]
async fn a_model_the_key_may_not_use_is_refused_at_submission() {
    let app = stepped("").await;
    let body = json!({"name": "claude-only", "models": ["claude"]});
    let (_, _, created) =
        json_of(app.send_as(Some(MASTER), Method::POST, "/admin/keys", Some(&body)).await).await;
    let key = created["key"].as_str().unwrap_or_default();
    let (status, error) = submit_as(&app, key, &json!({"request": request("x")})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["error"]["code"], "model_not_allowed");
}

#[tokio::test]
async fn the_event_stream_carries_the_state_tokens_and_the_result() {
    for state in backends() {
        let app = stepped(&state).await;
        let id = id_of(&submit(&app, &json!({"request": request("stream me")})).await);
        let response =
            app.send_as(Some(MASTER), Method::GET, &format!("/v1/jobs/{id}/events"), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let reader = tokio::spawn(async move { response.bytes().await });
        // The stream is listening before the job runs (it sent `queued`).
        tokio::time::sleep(Duration::from_millis(200)).await;
        step(&app).await;
        let bytes = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .unwrap_or_else(|_| panic!("the event stream did not end after the job"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let events = parse_sse(&bytes);
        let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
        assert_eq!(names.first(), Some(&"queued"), "{names:?}");
        assert_eq!(names.get(1), Some(&"started"), "{names:?}");
        assert_eq!(names.last(), Some(&"completed"), "{names:?}");
        let data = data_of(&events);
        let text: String = events
            .iter()
            .zip(&data)
            .filter(|(e, _)| e.event.as_deref() == Some("token"))
            .map(|(_, d)| d["text"].as_str().unwrap_or_default().to_string())
            .collect();
        let result = data.last().map(|d| d["result"]["choices"][0]["message"]["content"].clone());
        assert_eq!(Some(json!(text)), result, "the tokens make the result");
        assert!(names.iter().filter(|n| **n == "token").count() > 5, "{names:?}");
        // A finished job's stream is its final event alone.
        let again =
            app.send_as(Some(MASTER), Method::GET, &format!("/v1/jobs/{id}/events"), None).await;
        let events = parse_sse(&again.bytes().await.unwrap_or_default());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.as_deref(), Some("completed"));
    }
}

#[tokio::test]
async fn two_nodes_on_one_redis_share_the_queue_and_the_events() {
    let Ok(redis) = std::env::var("FLOODGATE_TEST_REDIS_URL") else { return };
    let state = redis_state(&redis, &fresh_prefix());
    let api = stepped(&state).await;
    let worker =
        spawn_with(options(&state, "workers = 2\npoll_interval = \"20ms\"", MockConfig::default()))
            .await;
    let id = id_of(&submit(&api, &json!({"request": request("elsewhere")})).await);
    // Events of a job run on the worker node reach a client of the API node.
    let response =
        api.send_as(Some(MASTER), Method::GET, &format!("/v1/jobs/{id}/events"), None).await;
    let bytes = tokio::time::timeout(Duration::from_secs(10), response.bytes())
        .await
        .unwrap_or_else(|_| panic!("no final event"))
        .unwrap_or_default();
    let names: Vec<String> = parse_sse(&bytes).iter().filter_map(|e| e.event.clone()).collect();
    assert_eq!(names.last().map(String::as_str), Some("completed"), "{names:?}");
    assert_eq!(job(&api, &id).await["status"], "completed");
    assert!(api.upstream_requests().is_empty(), "the API node ran nothing");
    assert_eq!(worker.upstream_requests().len(), 1);
}

/// A webhook receiver: answers the scripted statuses in turn (then 200),
/// recording each delivery's headers and body.
struct Receiver {
    url: String,
    deliveries: Arc<Mutex<Vec<(reqwest::header::HeaderMap, bytes::Bytes)>>>,
}

async fn receiver(statuses: Vec<u16>) -> Receiver {
    let deliveries: Arc<Mutex<Vec<(reqwest::header::HeaderMap, bytes::Bytes)>>> = Arc::default();
    let script = Arc::new(Mutex::new(statuses.into_iter()));
    let seen = deliveries.clone();
    let handler = move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
        let (seen, script) = (seen.clone(), script.clone());
        async move {
            let mut copied = reqwest::header::HeaderMap::new();
            for (name, value) in &headers {
                if let (Ok(n), Ok(v)) = (
                    reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
                    reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
                ) {
                    copied.insert(n, v);
                }
            }
            seen.lock().unwrap_or_else(|e| e.into_inner()).push((copied, body));
            let status = script.lock().unwrap_or_else(|e| e.into_inner()).next().unwrap_or(200);
            axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK)
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(handler));
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    Receiver { url: format!("http://{addr}/hook?token=s3cret"), deliveries }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_webhook_is_signed_with_the_key_s_secret_and_retried_until_delivered() {
    for state in backends() {
        let app = stepped(&state).await;
        let (key_id, key) = create_key(&app, "hooked").await;
        let hook = receiver(vec![500, 502]).await;
        let body = json!({"request": request("call me back"), "webhook_url": hook.url});
        let (status, queued) = submit_as(&app, &key, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
        assert_eq!(queued["webhook"]["status"], "pending");
        let id = id_of(&queued);
        step(&app).await;
        eventually(|| async {
            job_as(&app, &key, &id).await.1["webhook"]["status"] == "delivered"
        })
        .await;
        let done = job_as(&app, &key, &id).await.1;
        assert_eq!(done["webhook"]["attempts"], 3, "{done}");
        let deliveries = hook.deliveries.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(deliveries.len(), 3);
        let (_, _, secret) = json_of(
            app.get_as(MASTER, &format!("/admin/queue/webhook-secret?key_id={key_id}")).await,
        )
        .await;
        let secret = secret["secret"].as_str().unwrap_or_default().to_string();
        assert!(secret.starts_with("whsec_"), "{secret}");
        for (attempt, (headers, body)) in deliveries.iter().enumerate() {
            let signature = headers["x-floodgate-signature"].to_str().unwrap_or_default();
            assert_eq!(signature, format!("sha256={}", hmac_hex(&secret, body)));
            assert_eq!(headers["x-floodgate-event"], "job.completed");
            assert_eq!(headers["x-floodgate-delivery"].to_str().ok(), Some(id.as_str()));
            assert_eq!(
                headers["x-floodgate-delivery-attempt"].to_str().ok(),
                Some((attempt + 1).to_string().as_str())
            );
            let payload: Value = serde_json::from_slice(body).unwrap_or_default();
            assert_eq!(payload["type"], "job.completed");
            assert_eq!(payload["job"]["id"], id.as_str());
            assert_eq!(payload["job"]["result"]["object"], "chat.completion");
        }
        // Another key's secret does not verify it; the master key's jobs have their own.
        let (other_id, _) = create_key(&app, "other").await;
        let (_, _, other) = json_of(
            app.get_as(MASTER, &format!("/admin/queue/webhook-secret?key_id={other_id}")).await,
        )
        .await;
        assert_ne!(other["secret"].as_str(), Some(secret.as_str()));
        // No secret, token or signature in the logs' worth of job view.
        assert!(!done.to_string().contains("s3cret"), "{done}");
    }
}

#[tokio::test]
async fn a_webhook_that_never_answers_2xx_is_marked_failed() {
    let app =
        spawn_with(options("", "workers = 0\nwebhook_attempts = 2", MockConfig::default())).await;
    let hook = receiver(vec![500, 500, 500]).await;
    let id = id_of(&submit(&app, &json!({"request": request("x"), "webhook_url": hook.url})).await);
    step(&app).await;
    eventually(|| async { job(&app, &id).await["webhook"]["status"] == "failed" }).await;
    let done = job(&app, &id).await;
    assert_eq!(done["webhook"]["attempts"], 2);
    assert!(done["webhook"]["last_error"].as_str().unwrap_or_default().contains("500"), "{done}");
    assert_eq!(done["status"], "completed", "the job itself completed");
}

#[tokio::test]
async fn workers_run_submitted_jobs_and_a_draining_node_finishes_them() {
    for state in backends() {
        let mock = MockConfig { latency: Duration::from_millis(300), ..MockConfig::default() };
        let app = spawn_with(options(&state, "workers = 4", mock)).await;
        let mut ids = Vec::new();
        for n in 0..4 {
            ids.push(id_of(&submit(&app, &json!({"request": request(&format!("w{n}"))})).await));
        }
        eventually(|| async { app.state.jobs.busy() == 4 }).await;
        let (_, _, queue) = json_of(app.get_as(MASTER, "/admin/queue").await).await;
        assert_eq!(queue["running"], 4, "{queue}");
        assert_eq!(queue["node"]["busy"], 4, "{queue}");
        // Shutdown begins while all four run: they finish during the drain,
        // and nothing more is leased (not even by a worker finishing one).
        let extra = id_of(&submit(&app, &json!({"request": request("after")})).await);
        let queue = app.state.jobs.queue.clone();
        app.begin_shutdown();
        let status = |id: String| {
            let queue = queue.clone();
            async move {
                let job = queue.get(&id).await.unwrap_or_else(|e| panic!("{e}"));
                job.map(|j| j.status.as_str())
            }
        };
        for id in &ids {
            eventually(|| async { status(id.clone()).await == Some("completed") }).await;
        }
        assert_eq!(status(extra.clone()).await, Some("queued"));
        let _ = app.wait_stopped().await;
    }
}

#[tokio::test]
async fn workers_take_no_job_while_requests_wait_for_provider_capacity() {
    let tight = r#"
[[providers]]
name = "tight"
kind = "openai-compatible"
base_url = "{openai}"
keys = ["tight-key-0123456789"]
rpm = 1

[[models]]
name = "tight"
targets = ["tight/x"]
"#;
    let app =
        spawn_with(options(tight, "workers = 1\npoll_interval = \"20ms\"", MockConfig::default()))
            .await;
    let body = json!({"model": "tight", "messages": [{"role": "user", "content": "first"}]});
    assert_eq!(app.post_with("/v1/chat/completions", &body, &[]).await.status(), StatusCode::OK);
    // The next request waits for the key's minute to pass (up to 1 s).
    let waiting = {
        let (client, url, body) = (app.http.clone(), app.url("/v1/chat/completions"), body.clone());
        tokio::spawn(async move {
            let request =
                client.post(url).bearer_auth(MASTER).header("x-floodgate-max-wait-ms", "1000");
            request.json(&body).send().await.map(|r| r.status())
        })
    };
    eventually(|| async { app.state.router.waiting() == 1 }).await;
    let id = id_of(&submit(&app, &json!({"request": request("later")})).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(job(&app, &id).await["status"], "queued", "no lease while a request waits");
    let status = waiting.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Capacity is no longer awaited: the job runs (on the free alias).
    eventually(|| async { job(&app, &id).await["status"] == "completed" }).await;
}

#[tokio::test]
async fn queue_metrics_count_jobs_by_outcome() {
    let app = stepped("").await;
    let id = id_of(&submit(&app, &json!({"request": request("metered")})).await);
    step(&app).await;
    assert_eq!(job(&app, &id).await["status"], "completed");
    let metrics = app.metrics().await;
    // The queue's gauges are set every 5 s (the recorder is the process's:
    // other tests' nodes set them too, so only their presence is checked).
    eventually(|| async {
        app.metrics().await.contains("floodgate_queue_finished_jobs{status=\"completed\"}")
    })
    .await;
    for name in [
        "floodgate_queue_pending_jobs{priority=\"5\"}",
        "floodgate_queue_jobs_total{outcome=\"submitted\"}",
        "floodgate_queue_jobs_total{outcome=\"completed\"}",
        "floodgate_queue_job_wait_seconds_bucket",
        "floodgate_queue_job_run_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

#[tokio::test]
async fn a_cancel_on_one_node_stops_the_job_running_on_another() {
    let Ok(redis) = std::env::var("FLOODGATE_TEST_REDIS_URL") else { return };
    let state = redis_state(&redis, &fresh_prefix());
    let api = stepped(&state).await;
    let slow =
        MockConfig { chunks: 100, chunk_delay: Duration::from_millis(50), ..MockConfig::default() };
    let worker = spawn_with(options(&state, "workers = 1\npoll_interval = \"20ms\"", slow)).await;
    let id = id_of(&submit(&api, &json!({"request": request("long, elsewhere")})).await);
    eventually(|| async { worker.mock.stats().streams_started == 1 }).await;
    let response = api.send_as(Some(MASTER), Method::DELETE, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Told over the bus, the worker node drops the upstream call at once
    // (well before its next heartbeat, 10 s away).
    eventually(|| async { worker.mock.stats().streams_cancelled == 1 }).await;
    assert_eq!(job(&api, &id).await["status"], "cancelled");
    eventually(|| async { worker.state.jobs.busy() == 0 }).await;
}

#[tokio::test]
async fn an_end_user_s_job_is_theirs_and_runs_under_their_tier() {
    const SECRET: &str = "jwt-secret-for-job-tests-0123456789abcdef";
    let jwt = format!(
        "[auth.jwt]\nhs256_secret = \"{SECRET}\"\ntier_claim = \"plan\"\n[limits.tiers.pro]\nrpm = 1\n"
    );
    let app = stepped(&jwt).await;
    let token = |sub: &str| {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 600;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": sub, "exp": exp, "plan": "pro"}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let (carol, dave) = (token("carol"), token("dave"));
    let mut ids = Vec::new();
    for n in 0..2 {
        let (status, queued) = submit_as(
            &app,
            &carol,
            &json!({"request": request(&format!("c{n}")), "max_attempts": 1}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
        ids.push(id_of(&queued));
    }
    assert_eq!(job_as(&app, &carol, &ids[0]).await.0, StatusCode::OK);
    assert_eq!(job_as(&app, &dave, &ids[0]).await.0, StatusCode::NOT_FOUND);
    step(&app).await;
    step(&app).await;
    // Her tier allows one request a minute: the second job waits for it,
    // queued again until then, and the attempt it could not make is not
    // counted (with max_attempts 1 it would otherwise be lost).
    assert_eq!(job_as(&app, &carol, &ids[0]).await.1["status"], "completed");
    let second = job_as(&app, &carol, &ids[1]).await.1;
    assert_eq!(second["status"], "queued", "{second}");
    assert_eq!(second["attempts"], 0, "{second}");
    assert!(second["run_after"].is_string(), "{second}");
    assert_eq!(step(&app).await, None, "not before the minute has passed");
}

#[tokio::test]
async fn a_job_still_running_when_the_grace_period_ends_is_given_back_uncounted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let database = format!("sqlite://{}", dir.path().join("node.db").display());
    let node = |queue: &str| Options {
        database_url: Some(database.clone()),
        ..options("", queue, MockConfig::default())
    };
    let first = spawn_with(node("workers = 1\npoll_interval = \"20ms\"")).await;
    first.mock.enqueue(Script::Hang);
    let id = id_of(&submit(&first, &json!({"request": request("endless")})).await);
    eventually(|| async { first.state.jobs.busy() == 1 }).await;
    // shutdown_grace is 5 s: the hanging call outlasts it.
    first.begin_shutdown();
    let _ = first.wait_stopped().await;
    let second = spawn_with(node("workers = 0")).await;
    let released = job(&second, &id).await;
    assert_eq!(released["status"], "queued", "{released}");
    assert_eq!(released["attempts"], 0, "the attempt the shutdown cut is not counted");
    assert_eq!(step(&second).await.as_deref(), Some(id.as_str()));
    assert_eq!(job(&second, &id).await["status"], "completed");
}
