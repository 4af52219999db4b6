//! Latency of the response cache's layers, without HTTP around them:
//! the key of a typical chat body, an L1 hit, and an L2 hit (a Redis GET and
//! the decoding of the stored answer) from 1 and from 32 tasks at once.
//! HDR percentiles; run with `cargo bench -p floodgate-core --bench cache`
//! (Redis from `FLOODGATE_BENCH_REDIS_URL`, default `redis://127.0.0.1:6379`).

#![expect(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark's report"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate_core::cache::l2::L2;
use floodgate_core::cache::{Decision, Entry, key, unix_ms};
use floodgate_core::config::{CacheConfig, ModelConfig, TargetRef};
use floodgate_core::state::redis::RedisConnections;
use floodgate_protocol::Usage;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

const ITERATIONS: u64 = 50_000;

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<44} n={:>7}  p50={:>7.1} µs  p99={:>7.1} µs  p99.9={:>7.1} µs  max={:>8.1} µs",
        h.len(),
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
}

fn body() -> Map<String, Value> {
    let value = json!({
        "model": "chat", "temperature": 0, "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that answers briefly."},
            {"role": "user", "content": "Please summarise the following notes about a load test in one sentence. ".repeat(4)}
        ]
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn answer() -> Bytes {
    Bytes::from(
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "word ".repeat(60)},
            "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 60, "completion_tokens": 60, "total_tokens": 120}})
        .to_string(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let body = body();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        std::hint::black_box(key::exact("chat", "chat", "k:abc", std::hint::black_box(&body)));
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    report("key: SHA-256 of a 600-byte chat body", &h);

    let config = CacheConfig { enabled: true, sampled: true, ..CacheConfig::default() };
    let models = [ModelConfig::single("chat", TargetRef::new("mock", "m"))];
    let cache = floodgate_core::cache::Cache::new(&config, &models, None);
    let decision = cache
        .plan("chat", "chat", Some("abc"), &http::HeaderMap::new(), Some(&body), Some(0.0))
        .unwrap();
    let Decision::Use(plan) = decision else { panic!("not cacheable") };
    cache.put(&plan, answer(), "mock", "gpt-4o-mini", Usage::default());
    let mut h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        std::hint::black_box(cache.get(&plan).await.unwrap());
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    report("L1 hit: Cache::get", &h);

    let url = std::env::var("FLOODGATE_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let connections = RedisConnections::connect(&url, 0).await.expect("Redis answers");
    let prefix = format!("fgbench{}:", unix_ms());
    let l2 = Arc::new(L2::new(connections.clone(), &prefix, Duration::from_millis(50)));
    let digest = plan.key;
    let entry = Entry::new(
        answer(),
        "chat",
        "k:abc",
        "mock".into(),
        "gpt-4o-mini".into(),
        Usage::default(),
        unix_ms(),
        unix_ms() + 600_000,
    );
    l2.put(&digest, &entry).await;
    assert!(l2.get("chat", "k:abc", &digest).await.is_some(), "the L2 entry was written");
    for tasks in [1u64, 32] {
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let l2 = l2.clone();
            handles.push(tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).unwrap();
                for _ in 0..ITERATIONS / tasks.min(8) {
                    let t = Instant::now();
                    assert!(l2.get("chat", "k:abc", &digest).await.is_some());
                    h.record(t.elapsed().as_nanos() as u64).unwrap();
                }
                h
            }));
        }
        let mut all = Histogram::<u64>::new(3).unwrap();
        let started = Instant::now();
        for handle in handles {
            all.add(handle.await.unwrap()).unwrap();
        }
        let per_s = all.len() as f64 / started.elapsed().as_secs_f64();
        report(&format!("L2 hit: Redis GET + decode, {tasks} task(s)"), &all);
        println!("{:<44} {per_s:>10.0} hits/s", "");
    }
    assert!(!l2.degraded(), "no L2 command failed or timed out during the run");
    let mut redis = connections.shared();
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}cache:chat:k%3Aabc:{}", floodgate_core::keys::hex(&digest)))
        .query_async(&mut redis)
        .await
        .unwrap();
}
