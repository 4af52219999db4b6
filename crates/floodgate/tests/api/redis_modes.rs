//! Nodes on a Redis Cluster and on a Sentinel-managed primary, each started
//! by the test itself on loopback ports (`redis_servers`): two nodes on one
//! cluster share cached answers, the queue and job events; a node on a
//! sentinel primary keeps limiting and caching in Redis after a failover.
//! Skipped, with a line saying so, without `redis-server`.

use std::sync::Arc;
use std::time::Duration;

use floodgate_mock_upstream::MockConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    DEFAULT_CONFIG, Options, TestApp, eventually, json_of, parse_sse, spawn_with,
};
use crate::redis_servers::{RedisCluster, RedisSentinel, cli};

const MASTER: &str = "fg-test-master-key-redis-modes-01";

fn fresh_prefix() -> String {
    format!("fgtest{:x}:", crate::helpers::fastrand_u64())
}

/// A node with the cache on, on `state`; `workers` job workers.
async fn node(state: &str, workers: usize) -> TestApp {
    spawn_with(Options {
        config: format!(
            "{DEFAULT_CONFIG}\n[cache]\nenabled = true\n{state}\n[queue]\nworkers = {workers}\npoll_interval = \"20ms\"\n"
        ),
        mock: MockConfig { record: true, ..MockConfig::default() },
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    })
    .await
}

fn question(text: &str) -> Value {
    json!({"model": "gpt", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

async fn chat(app: &TestApp, key: &str, body: &Value) -> (StatusCode, String) {
    let response = app.send_as(Some(key), Method::POST, "/v1/chat/completions", Some(body)).await;
    let cache = response
        .headers()
        .get("x-floodgate-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (response.status(), cache)
}

/// Keys matching `pattern` on the Redis at `port`.
fn keys_on(port: u16, pattern: &str) -> Vec<String> {
    cli(port, &["--scan", "--pattern", pattern]).lines().map(str::to_string).collect()
}

#[tokio::test]
async fn two_nodes_on_a_redis_cluster_share_answers_the_queue_and_job_events() {
    let Some(cluster) = tokio::task::spawn_blocking(RedisCluster::own).await.unwrap() else {
        return;
    };
    let prefix = fresh_prefix();
    let state = cluster.state_toml(&prefix);
    let a = node(&state, 0).await;
    let b = node(&state, 2).await;

    // A cached answer on A is a hit on B.
    let body = question("Shared across a cluster?");
    assert_eq!(chat(&a, MASTER, &body).await, (StatusCode::OK, "miss".into()));
    eventually(|| async { chat(&b, MASTER, &body).await.1 == "hit" }).await;

    // Many answers spread over the masters; a clear on A removes them from
    // every master (a scan of each) and empties B's L1.
    for n in 0..24 {
        assert_eq!(chat(&a, MASTER, &question(&format!("spread {n}"))).await.0, StatusCode::OK);
    }
    eventually(|| async {
        cluster.ports.iter().all(|p| !keys_on(*p, &format!("{prefix}cache:*")).is_empty())
    })
    .await;
    let (status, _, cleared) = json_of(
        a.send_as(Some(MASTER), Method::POST, "/admin/cache/clear", Some(&json!({}))).await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["cleared"]["l2"], 25, "{cleared}");
    for port in &cluster.ports {
        assert_eq!(keys_on(*port, &format!("{prefix}cache:*")), Vec::<String>::new());
    }
    eventually(|| async { chat(&b, MASTER, &body).await.1 == "miss" }).await;

    // A job submitted on A (which runs none) runs on B, and its events
    // reach a client of A; every queue key is under one tag, on one master.
    let (status, _, job) = json_of(
        a.send_as(
            Some(MASTER),
            Method::POST,
            "/v1/jobs",
            Some(&json!({"request": question("a job in the cluster")})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap_or_default().to_string();
    let events = a.send_as(Some(MASTER), Method::GET, &format!("/v1/jobs/{id}/events"), None).await;
    let bytes = tokio::time::timeout(Duration::from_secs(10), events.bytes())
        .await
        .unwrap_or_else(|_| panic!("no final event"))
        .unwrap_or_default();
    let names: Vec<String> = parse_sse(&bytes).iter().filter_map(|e| e.event.clone()).collect();
    assert_eq!(names.last().map(String::as_str), Some("completed"), "{names:?}");
    let queue_tag = format!("{{{prefix}q}}:*");
    let holding: Vec<u16> =
        cluster.ports.iter().copied().filter(|p| !keys_on(*p, &queue_tag).is_empty()).collect();
    assert_eq!(holding.len(), 1, "queue keys on {holding:?}");
    // The limiter is on Redis too, under its own tag.
    let (_, _, ready) = json_of(a.get("/health/ready").await).await;
    assert_eq!(ready["components"]["limiter"]["backend"], "redis", "{ready}");
}

#[tokio::test]
async fn after_a_sentinel_failover_a_node_keeps_limiting_and_caching_in_redis() {
    let Some(sentinel) = tokio::task::spawn_blocking(RedisSentinel::own).await.unwrap() else {
        return;
    };
    let sentinel = Arc::new(sentinel);
    let prefix = fresh_prefix();
    let app = node(&sentinel.state_toml(&prefix), 0).await;
    let key_with_rpm = |rpm: u32| {
        let app = &app;
        async move {
            let body = json!({"name": format!("rpm {rpm}"), "rpm": rpm});
            let (status, _, created) =
                json_of(app.send_as(Some(MASTER), Method::POST, "/admin/keys", Some(&body)).await)
                    .await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            created["key"].as_str().unwrap_or_default().to_string()
        }
    };
    let key = key_with_rpm(2).await;
    let body = question("before the failover");
    assert_eq!(chat(&app, &key, &body).await.0, StatusCode::OK);
    let old_primary = sentinel.primary_port();
    assert!(!keys_on(old_primary, &format!("{prefix}*")).is_empty());

    let failing = sentinel.clone();
    let new_primary = tokio::task::spawn_blocking(move || failing.fail_over()).await.unwrap();
    assert_ne!(new_primary, old_primary);

    // The node finds the new primary: its limiter and L2 answer from there.
    eventually(|| async {
        let (_, _, ready) = json_of(app.get("/health/ready").await).await;
        let fresh = question(&format!("after {}", crate::helpers::fastrand_u64()));
        let _ = chat(&app, MASTER, &fresh).await;
        ready["components"]["limiter"]["status"] == "ok"
            && ready["components"]["cache"]["layers"] == "l1+l2"
            && !keys_on(new_primary, &format!("{prefix}cache:*")).is_empty()
    })
    .await;
    // A limit set now is kept in Redis on the new primary.
    let limited = key_with_rpm(2).await;
    let after = question("after the failover");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(chat(&app, &limited, &after).await.0);
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    assert!(!keys_on(new_primary, &format!("{prefix}k:*")).is_empty(), "limits on the new primary");
    // A node started after the failover shares answers with this one there.
    let b = node(&sentinel.state_toml(&prefix), 0).await;
    let shared = question("after the failover, shared");
    assert_eq!(chat(&app, MASTER, &shared).await.1, "miss");
    eventually(|| async { chat(&b, MASTER, &shared).await.1 == "hit" }).await;
}
