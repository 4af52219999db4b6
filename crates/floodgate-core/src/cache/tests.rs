use std::time::Duration;

use bytes::Bytes;
use floodgate_protocol::Usage;
use http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

use super::*;
use crate::config::{CacheConfig, ModelCacheConfig, ModelConfig, TargetRef};

fn config() -> CacheConfig {
    CacheConfig { enabled: true, ttl: Duration::from_secs(60), ..CacheConfig::default() }
}

fn models(cache: ModelCacheConfig) -> Vec<ModelConfig> {
    let mut chat = ModelConfig::single("chat", TargetRef::new("mock", "m"));
    chat.cache = cache;
    vec![chat, ModelConfig::single("other", TargetRef::new("mock", "m"))]
}

fn body(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn prompt(text: &str) -> Map<String, Value> {
    body(json!({"temperature": 0, "messages": [{"role": "user", "content": text}]}))
}

fn plan_of(
    cache: &Cache,
    alias: &str,
    key: Option<&str>,
    headers: &HeaderMap,
    temperature: Option<f64>,
) -> Decision {
    cache.plan("chat", alias, key, headers, Some(&prompt("hi")), temperature).unwrap()
}

fn use_plan(decision: Decision) -> Plan {
    match decision {
        Decision::Use(plan) => *plan,
        other => panic!("not cacheable: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn entries_expire_with_their_ttl_on_the_runtime_clock() {
    let cache = Cache::new(&config(), &models(ModelCacheConfig::default()), None);
    let mut headers = HeaderMap::new();
    headers.insert(TTL_HEADER, HeaderValue::from_static("10"));
    let short = use_plan(plan_of(&cache, "chat", None, &headers, Some(0.0)));
    assert_eq!(short.ttl, Duration::from_secs(10));
    cache.put(&short, Bytes::from_static(b"{}"), "mock", "m", Usage::default());
    assert!(cache.get(&short).await.is_some());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(cache.get(&short).await.map(|(_, layer)| layer), Some(Layer::L1));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(cache.get(&short).await.is_none(), "expired after 10 s");
    // The configured TTL applies without the header.
    let long = use_plan(plan_of(&cache, "chat", None, &HeaderMap::new(), Some(0.0)));
    assert_eq!(long.ttl, Duration::from_secs(60));
}

#[test]
fn ttl_precedence_is_header_then_alias_then_route_then_global() {
    let mut config = config();
    config.route_ttl = vec![("chat".to_string(), Duration::from_secs(30))];
    let cache = Cache::new(
        &config,
        &models(ModelCacheConfig { ttl: Some(Duration::from_secs(600)), ..Default::default() }),
        None,
    );
    let none = HeaderMap::new();
    assert_eq!(use_plan(plan_of(&cache, "chat", None, &none, Some(0.0))).ttl.as_secs(), 600);
    assert_eq!(use_plan(plan_of(&cache, "other", None, &none, Some(0.0))).ttl.as_secs(), 30);
    let embeddings = cache.plan("embeddings", "other", None, &none, Some(&prompt("x")), None);
    assert_eq!(use_plan(embeddings.unwrap()).ttl.as_secs(), 60);
    let mut headers = HeaderMap::new();
    headers.insert(TTL_HEADER, HeaderValue::from_static("2h"));
    assert_eq!(use_plan(plan_of(&cache, "chat", None, &headers, Some(0.0))).ttl.as_secs(), 7200);
    for bad in ["0", "soon", "-5", "500ms"] {
        headers.insert(TTL_HEADER, HeaderValue::from_static(bad));
        let error = cache
            .plan("chat", "chat", None, &headers, Some(&prompt("hi")), Some(0.0))
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(error.name, TTL_HEADER);
        assert!(error.message.contains("seconds"), "{}", error.message);
    }
}

#[test]
fn only_deterministic_requests_are_cached_unless_the_alias_allows_sampling() {
    let cache = Cache::new(
        &config(),
        &models(ModelCacheConfig { sampled: Some(true), ..Default::default() }),
        None,
    );
    let none = HeaderMap::new();
    assert!(matches!(plan_of(&cache, "other", None, &none, None), Decision::Bypass));
    assert!(matches!(plan_of(&cache, "other", None, &none, Some(0.7)), Decision::Bypass));
    assert!(matches!(plan_of(&cache, "other", None, &none, Some(0.0)), Decision::Use(_)));
    assert!(matches!(plan_of(&cache, "chat", None, &none, Some(0.7)), Decision::Use(_)));
    let off = Cache::new(&CacheConfig::default(), &models(ModelCacheConfig::default()), None);
    assert!(matches!(plan_of(&off, "chat", None, &none, Some(0.0)), Decision::Off));
    assert!(!off.enabled());
}

#[test]
fn cache_control_and_namespaces() {
    let cache = Cache::new(&config(), &models(ModelCacheConfig::default()), None);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("No-Cache, max-age=0"));
    let plan = use_plan(plan_of(&cache, "chat", None, &headers, Some(0.0)));
    assert!(!plan.lookup && plan.store && !plan.coalesce);
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let plan = use_plan(plan_of(&cache, "chat", None, &headers, Some(0.0)));
    assert!(plan.lookup && !plan.store);
    let none = HeaderMap::new();
    let a = use_plan(plan_of(&cache, "chat", Some("a"), &none, Some(0.0)));
    let b = use_plan(plan_of(&cache, "chat", Some("b"), &none, Some(0.0)));
    let app = use_plan(plan_of(&cache, "chat", None, &none, Some(0.0)));
    assert_ne!(a.key, b.key);
    assert_ne!(a.key, app.key);
    assert_eq!(&*a.namespace, "k:a");
    let shared = Cache::new(
        &CacheConfig { namespace: CacheNamespace::Shared, ..config() },
        &models(ModelCacheConfig::default()),
        None,
    );
    let a = use_plan(plan_of(&shared, "chat", Some("a"), &none, Some(0.0)));
    let b = use_plan(plan_of(&shared, "chat", Some("b"), &none, Some(0.0)));
    assert_eq!(a.key, b.key);
}

#[tokio::test]
async fn large_answers_are_not_stored_and_clears_pick_their_entries() {
    let cache = Cache::new(
        &CacheConfig { max_entry_bytes: 100, ..config() },
        &models(ModelCacheConfig::default()),
        None,
    );
    let none = HeaderMap::new();
    let plan = use_plan(plan_of(&cache, "chat", Some("a"), &none, Some(0.0)));
    assert!(
        cache.put(&plan, Bytes::from(vec![b' '; 101]), "mock", "m", Usage::default()).is_none()
    );
    assert!(cache.get(&plan).await.is_none());
    let put = |alias: &str, key: &str| {
        let plan = use_plan(plan_of(&cache, alias, Some(key), &none, Some(0.0)));
        cache.put(&plan, Bytes::from_static(b"{}"), "mock", "m", Usage::default());
        plan
    };
    let (chat_a, chat_b, other_a) = (put("chat", "a"), put("chat", "b"), put("other", "a"));
    let report = cache.clear(None, Some("a")).await.unwrap();
    assert_eq!(report.l1, 2);
    assert!(cache.get(&chat_a).await.is_none() && cache.get(&other_a).await.is_none());
    assert!(cache.get(&chat_b).await.is_some());
    put("other", "b");
    assert_eq!(cache.clear(Some("chat"), None).await.unwrap().l1, 1);
    assert_eq!(cache.clear(None, None).await.unwrap().l1, 1);
    let view = cache.view();
    assert_eq!(view["models"]["chat"]["stores"], 2);
    assert_eq!(view["l1"]["entries"], 0);
}
