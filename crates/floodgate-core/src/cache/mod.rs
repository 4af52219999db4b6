//! The response cache: an exact cache in two layers, request coalescing, and
//! an opt-in semantic cache.
//!
//! - **Keys** ([`key`]): a SHA-256 of the request body in a canonical
//!   encoding, with the route, the resolved alias and the namespace (the
//!   virtual key's id, or `shared`).
//! - **L1**: in this process, a [`moka`] cache bounded by the answers' bytes
//!   (TinyLFU admission, so one scan of new prompts does not flush the
//!   popular ones), each entry with its own TTL.
//! - **L2** ([`l2`]): with `[state] backend = "redis"`, the same answers in
//!   Redis; an L2 hit fills L1. L2 never fails a request.
//! - **Coalescing** ([`flight`]): a miss joins the identical request already
//!   in flight instead of calling the upstream again.
//! - **Semantic** ([`semantic`]): for aliases that opt in, the nearest cached
//!   prompt by embedding, above a similarity threshold.
//!
//! What is cached is the answer as written for the client's format (the
//! format is part of the key through the route), so a hit is served without
//! decoding; a streaming request's hit is replayed as a stream from it.

pub mod flight;
pub mod key;
pub mod l2;
pub mod semantic;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use floodgate_protocol::Usage;
use http::HeaderMap;
use serde_json::{Map, Value, json};

use crate::config::{CacheConfig, CacheNamespace, ModelConfig, SemanticConfig};
use crate::telemetry::{self, metric};
pub use flight::{Flights, Joined, Waiter};
pub use key::Digest;
use l2::{ClearMessage, L2};
use semantic::{SemanticEntry, SemanticIndex, SemanticStore};

/// `x-floodgate-cache`: `hit`, `semantic-hit`, `coalesced`, `miss` or `bypass`.
pub const CACHE_HEADER: http::HeaderName = http::HeaderName::from_static("x-floodgate-cache");
/// `l1` or `l2` on a hit.
pub const LAYER_HEADER: http::HeaderName = http::HeaderName::from_static("x-floodgate-cache-layer");
/// The cosine similarity of a semantic hit.
pub const SIMILARITY_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-floodgate-cache-similarity");
/// A request's own TTL: seconds, or a duration such as `10m`.
pub const TTL_HEADER: &str = "x-floodgate-cache-ttl";

/// [`crate::time::now_ms`], unsigned as the cache's expiry times are.
pub fn unix_ms() -> u64 {
    u64::try_from(crate::time::now_ms()).unwrap_or(0)
}

/// A cached answer.
#[derive(Debug)]
pub struct Entry {
    /// The answer as the client's format writes it (a complete response).
    pub body: Bytes,
    pub alias: Arc<str>,
    pub namespace: Arc<str>,
    /// Who answered originally.
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub stored_at_ms: u64,
    pub expires_at_ms: u64,
    /// The same expiry on the runtime's clock, which tests can pause.
    expires: tokio::time::Instant,
}

impl Entry {
    #[expect(clippy::too_many_arguments, reason = "a plain record")]
    pub fn new(
        body: Bytes,
        alias: &str,
        namespace: &str,
        provider: String,
        model: String,
        usage: Usage,
        stored_at_ms: u64,
        expires_at_ms: u64,
    ) -> Entry {
        let left = Duration::from_millis(expires_at_ms.saturating_sub(unix_ms()));
        Entry {
            body,
            alias: alias.into(),
            namespace: namespace.into(),
            provider,
            model,
            usage,
            stored_at_ms,
            expires_at_ms,
            expires: tokio::time::Instant::now() + left,
        }
    }

    /// Seconds since it was stored, for the `age` header.
    pub fn age_seconds(&self) -> u64 {
        unix_ms().saturating_sub(self.stored_at_ms) / 1000
    }

    fn ttl_left(&self) -> Duration {
        self.expires.saturating_duration_since(tokio::time::Instant::now())
    }

    fn weight(&self) -> u32 {
        u32::try_from(self.body.len() + self.provider.len() + self.model.len() + 160)
            .unwrap_or(u32::MAX)
    }
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    L1,
    L2,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::L1 => "l1",
            Layer::L2 => "l2",
        }
    }
}

/// An alias's cache policy: `[models.cache]` over `[cache]`.
#[derive(Debug, Clone)]
struct Policy {
    enabled: bool,
    ttl: Option<Duration>,
    namespace: CacheNamespace,
    sampled: bool,
    semantic: Option<SemanticConfig>,
}

/// What the cache does for one request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub key: Digest,
    pub alias: Arc<str>,
    pub namespace: Arc<str>,
    pub ttl: Duration,
    /// `cache-control: no-cache` skips the lookup (the answer is still stored).
    pub lookup: bool,
    /// `cache-control: no-store`: the answer is not stored.
    pub store: bool,
    /// Join an identical request in flight.
    pub coalesce: bool,
    pub semantic: Option<SemanticPlan>,
}

#[derive(Debug, Clone)]
pub struct SemanticPlan {
    pub parts: key::SemanticParts,
    pub config: SemanticConfig,
}

/// The cache's decision for a request.
#[derive(Debug)]
pub enum Decision {
    /// The cache is off for this alias: no header.
    Off,
    /// Not cacheable (sampled, or a body the cache cannot key): `bypass`.
    Bypass,
    Use(Box<Plan>),
}

/// A bad cache header, for a 400 naming it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HeaderError {
    pub name: &'static str,
    pub message: String,
}

/// Lookup results counted per alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    HitL1,
    HitL2,
    SemanticHit,
    Coalesced,
    Miss,
    Bypass,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::HitL1,
        Outcome::HitL2,
        Outcome::SemanticHit,
        Outcome::Coalesced,
        Outcome::Miss,
        Outcome::Bypass,
    ];

    /// An exact hit in `layer`.
    pub fn hit(layer: Layer) -> Outcome {
        match layer {
            Layer::L1 => Outcome::HitL1,
            Layer::L2 => Outcome::HitL2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::HitL1 => "hit_l1",
            Outcome::HitL2 => "hit_l2",
            Outcome::SemanticHit => "semantic_hit",
            Outcome::Coalesced => "coalesced",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    outcomes: [AtomicU64; 6],
    stores: AtomicU64,
}

/// The semantic cache: an index here, its vectors in Redis in a cluster.
#[derive(Debug)]
struct Semantic {
    index: SemanticIndex,
    store: Option<SemanticStore>,
}

#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
    policies: HashMap<String, Policy>,
    /// For names that are not configured aliases (`provider/model`).
    default_policy: Policy,
    l1: moka::sync::Cache<Digest, Arc<Entry>>,
    l2: Option<L2>,
    pub flights: Arc<Flights>,
    semantic: Option<Semantic>,
    counters: HashMap<String, Counters>,
    other: Counters,
    /// This node, so it ignores its own clear messages.
    node: String,
}

struct EntryExpiry;

impl moka::Expiry<Digest, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl_left())
    }
}

impl Cache {
    /// The cache for `models`; `redis` (with its key prefix) gives it L2 and
    /// the semantic vectors' store.
    pub fn new(
        config: &CacheConfig,
        models: &[ModelConfig],
        redis: Option<(crate::state::redis::RedisConnections, &str)>,
    ) -> Cache {
        let default_policy = Policy {
            enabled: config.enabled,
            ttl: None,
            namespace: config.namespace,
            sampled: config.sampled,
            semantic: None,
        };
        let policies: HashMap<String, Policy> = models
            .iter()
            .map(|m| {
                let c = &m.cache;
                let policy = Policy {
                    enabled: c.enabled.unwrap_or(config.enabled),
                    ttl: c.ttl,
                    namespace: c.namespace.unwrap_or(config.namespace),
                    sampled: c.sampled.unwrap_or(config.sampled),
                    semantic: c.semantic.clone(),
                };
                (m.name.clone(), policy)
            })
            .collect();
        let l1 = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_k: &Digest, v: &Arc<Entry>| v.weight())
            .expire_after(EntryExpiry)
            .build();
        let any_semantic = policies.values().any(|p| p.enabled && p.semantic.is_some());
        let (l2, semantic_store) = match redis {
            Some((connections, prefix)) => (
                config.l2.then(|| L2::new(connections.clone(), prefix, config.l2_timeout)),
                Some(SemanticStore::new(connections.shared(), prefix)),
            ),
            None => (None, None),
        };
        let semantic = any_semantic.then(|| Semantic {
            index: SemanticIndex::new(config.semantic_max_entries),
            store: semantic_store,
        });
        let counters = policies.keys().map(|name| (name.clone(), Counters::default())).collect();
        Cache {
            config: config.clone(),
            policies,
            default_policy,
            l1,
            l2,
            flights: Arc::new(Flights::default()),
            semantic,
            counters,
            other: Counters::default(),
            node: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The cache is on for at least one alias.
    pub fn enabled(&self) -> bool {
        self.config.enabled || self.policies.values().any(|p| p.enabled)
    }

    fn policy(&self, alias: &str) -> &Policy {
        self.policies.get(alias).unwrap_or(&self.default_policy)
    }

    /// Decides what the cache does for a request to `route` for `alias`.
    pub fn plan(
        &self,
        route: &'static str,
        alias: &str,
        key_id: Option<&str>,
        headers: &HeaderMap,
        body: Option<&Map<String, Value>>,
        temperature: Option<f64>,
    ) -> Result<Decision, HeaderError> {
        let policy = self.policy(alias);
        if !policy.enabled {
            return Ok(Decision::Off);
        }
        let (lookup, store) = cache_control(headers);
        let header_ttl = ttl_header(headers)?;
        // Embeddings are deterministic; chat answers only at temperature 0,
        // unless the alias says sampled answers may be reused.
        let deterministic = route == "embeddings" || temperature == Some(0.0);
        let Some(body) = body else { return Ok(Decision::Bypass) };
        if !deterministic && !policy.sampled {
            return Ok(Decision::Bypass);
        }
        let namespace = namespace(policy.namespace, key_id);
        let key = key::exact(route, alias, &namespace, body);
        let ttl = header_ttl
            .or(policy.ttl)
            .or_else(|| self.config.route_ttl.iter().find(|(r, _)| r == route).map(|(_, t)| *t))
            .unwrap_or(self.config.ttl);
        let semantic = match (&policy.semantic, &self.semantic) {
            (Some(config), Some(_)) if route != "embeddings" => {
                key::semantic(route, alias, &namespace, body)
                    .map(|parts| SemanticPlan { parts, config: config.clone() })
            }
            _ => None,
        };
        Ok(Decision::Use(Box::new(Plan {
            key,
            alias: alias.into(),
            namespace: namespace.into(),
            ttl,
            lookup,
            store,
            // A client that asked for a fresh answer does not take a share
            // of a call that started before it.
            coalesce: self.config.coalesce && lookup,
            semantic,
        })))
    }

    /// Counts a lookup's outcome for `alias`.
    pub fn count(&self, alias: &str, outcome: Outcome) {
        let counters = self.counters.get(alias).unwrap_or(&self.other);
        counters.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        telemetry::counter(
            metric::CACHE_LOOKUPS,
            &[("model", alias), ("result", outcome.as_str())],
        )
        .increment(1);
    }

    /// The answer for `plan`, from L1, else from L2 (which fills L1).
    pub async fn get(&self, plan: &Plan) -> Option<(Arc<Entry>, Layer)> {
        self.get_key(&plan.key, &plan.alias, &plan.namespace).await
    }

    async fn get_key(
        &self,
        key: &Digest,
        alias: &str,
        namespace: &str,
    ) -> Option<(Arc<Entry>, Layer)> {
        if let Some(entry) = self.l1.get(key) {
            if !entry.ttl_left().is_zero() {
                return Some((entry, Layer::L1));
            }
            self.l1.invalidate(key);
        }
        let l2 = self.l2.as_ref()?;
        let entry = Arc::new(l2.get(alias, namespace, key).await?);
        if entry.ttl_left().is_zero() {
            return None;
        }
        self.l1.insert(*key, entry.clone());
        Some((entry, Layer::L2))
    }

    /// Stores an answer for `plan` in L1 now and in L2 in the background.
    /// Answers above `max_entry_bytes` are not stored.
    pub fn put(
        &self,
        plan: &Plan,
        body: Bytes,
        provider: &str,
        model: &str,
        usage: Usage,
    ) -> Option<Arc<Entry>> {
        if !plan.store || body.len() > self.config.max_entry_bytes {
            return None;
        }
        let now = unix_ms();
        let ttl_ms = u64::try_from(plan.ttl.as_millis()).unwrap_or(u64::MAX);
        let entry = Arc::new(Entry::new(
            body,
            &plan.alias,
            &plan.namespace,
            provider.to_string(),
            model.to_string(),
            usage,
            now,
            now.saturating_add(ttl_ms),
        ));
        self.l1.insert(plan.key, entry.clone());
        let counters = self.counters.get(&*plan.alias).unwrap_or(&self.other);
        counters.stores.fetch_add(1, Ordering::Relaxed);
        telemetry::counter(metric::CACHE_STORES, &[("model", &plan.alias)]).increment(1);
        Some(entry)
    }

    /// Writes an entry to L2 (call from a task of its own: it may wait up to `l2_timeout`).
    pub async fn put_shared(&self, key: &Digest, entry: &Entry) {
        if let Some(l2) = &self.l2 {
            l2.put(key, entry).await;
        }
    }

    pub fn has_l2(&self) -> bool {
        self.l2.is_some()
    }

    /// The nearest cached prompt of a semantic plan, by its embedding.
    pub async fn semantic_get(
        &self,
        plan: &Plan,
        vector: &[f32],
    ) -> Option<(Arc<Entry>, Layer, f32)> {
        let semantic = self.semantic.as_ref()?;
        let sp = plan.semantic.as_ref()?;
        let (answer, similarity) =
            semantic.index.nearest(&sp.parts.context, vector, sp.config.threshold, unix_ms())?;
        // The answer's alias and namespace are the request's: both are in
        // the context digest that matched.
        let Some((entry, layer)) = self.get_key(&answer, &plan.alias, &plan.namespace).await else {
            semantic.index.remove(&answer);
            return None;
        };
        Some((entry, layer, similarity))
    }

    /// Remembers a stored answer's prompt embedding for semantic lookups, at
    /// once; returns the record when it is to be saved to Redis as well
    /// ([`Cache::semantic_save`]).
    pub fn semantic_put(
        &self,
        plan: &Plan,
        vector: Vec<f32>,
        entry: &Entry,
    ) -> Option<SemanticEntry> {
        let (Some(semantic), Some(sp)) = (&self.semantic, &plan.semantic) else { return None };
        let record = SemanticEntry {
            alias: plan.alias.to_string(),
            context: sp.parts.context,
            vector,
            answer_key: plan.key,
            expires_at_ms: entry.expires_at_ms,
        };
        semantic.index.insert(record.clone());
        semantic.store.is_some().then_some(record)
    }

    /// Saves a semantic record to Redis, so other and later nodes have it.
    pub async fn semantic_save(&self, record: &SemanticEntry) {
        let Some(Semantic { store: Some(store), .. }) = &self.semantic else { return };
        match tokio::time::timeout(self.config.l2_timeout, store.save(record)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not save a semantic cache vector to Redis")
            }
            Err(_) => tracing::warn!("saving a semantic cache vector to Redis timed out"),
        }
    }

    /// Loads the semantic vectors other nodes stored (a new node warms up).
    pub async fn load_semantic(&self) -> usize {
        let Some(Semantic { index, store: Some(store) }) = &self.semantic else { return 0 };
        match tokio::time::timeout(Duration::from_secs(10), store.load_all()).await {
            Ok(Ok(entries)) => {
                let n = entries.len();
                entries.into_iter().for_each(|e| index.insert(e));
                n
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not load the semantic cache's vectors from Redis");
                0
            }
            Err(_) => {
                tracing::warn!("loading the semantic cache's vectors from Redis took over 10 s");
                0
            }
        }
    }

    /// Clears the answers of an alias, of a virtual key's namespace, or all,
    /// on this node and (with Redis) everywhere.
    pub async fn clear(
        &self,
        model: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<ClearReport, String> {
        let l1 = self.clear_local(model, key_id);
        let namespace = key_id.map(key_namespace);
        let mut l2_deleted = None;
        if let Some(l2) = &self.l2 {
            let message = ClearMessage {
                model: model.map(str::to_string),
                key_id: key_id.map(str::to_string),
                origin: self.node.clone(),
            };
            let deleted = l2
                .clear(model, namespace.as_deref(), &message)
                .await
                .map_err(|e| format!("the shared cache (Redis) could not be cleared: {e}"))?;
            l2_deleted = Some(deleted);
        }
        let mut semantic = 0;
        if let Some(s) = &self.semantic
            && key_id.is_none()
        {
            semantic = s.index.clear(model);
            if let Some(store) = &s.store {
                let _ = store.clear(model).await;
            }
        }
        Ok(ClearReport { l1, l2: l2_deleted, semantic })
    }

    /// Clears this node's L1 (and semantic index); returns how many entries.
    fn clear_local(&self, model: Option<&str>, key_id: Option<&str>) -> usize {
        let namespace = key_id.map(key_namespace);
        let matches = |e: &Entry| {
            model.is_none_or(|m| &*e.alias == m)
                && namespace.as_deref().is_none_or(|n| &*e.namespace == n)
        };
        let doomed: Vec<Digest> =
            self.l1.iter().filter(|(_, e)| matches(e)).map(|(k, _)| *k).collect();
        for key in &doomed {
            self.l1.invalidate(key);
        }
        doomed.len()
    }

    /// Background work: the L2 probe and the listener for other nodes' clears.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let Some(l2) = &self.l2 else { return };
        let apply = |clear: &ClearMessage| {
            let cleared = self.clear_local(clear.model.as_deref(), clear.key_id.as_deref());
            if let Some(s) = &self.semantic
                && clear.key_id.is_none()
            {
                s.index.clear(clear.model.as_deref());
            }
            tracing::info!(cleared, model = ?clear.model, "cache cleared by another node");
        };
        let reset = || {
            self.l1.invalidate_all();
            tracing::info!("cache clear channel reconnected: this node's L1 was dropped");
        };
        tokio::join!(
            l2.run_probe(shutdown.clone()),
            l2.run_clear_listener(&self.node, apply, reset, shutdown.clone()),
        );
    }

    /// `GET /admin/cache`.
    pub fn view(&self) -> Value {
        self.l1.run_pending_tasks();
        let stats = |c: &Counters| {
            let n: Vec<u64> = c.outcomes.iter().map(|a| a.load(Ordering::Relaxed)).collect();
            let lookups: u64 = n.iter().take(5).sum();
            let rate = |v: u64| if lookups == 0 { 0.0 } else { v as f64 / lookups as f64 };
            let mut out = Map::new();
            for (outcome, v) in Outcome::ALL.iter().zip(&n) {
                out.insert(outcome.as_str().to_string(), json!(v));
            }
            out.insert("stores".into(), json!(c.stores.load(Ordering::Relaxed)));
            out.insert("hit_rate".into(), json!(rate(n[0] + n[1] + n[2] + n[3])));
            out.insert("l1_hit_rate".into(), json!(rate(n[0])));
            out.insert("l2_hit_rate".into(), json!(rate(n[1])));
            out.insert("semantic_hit_rate".into(), json!(rate(n[2])));
            Value::Object(out)
        };
        let mut models = Map::new();
        for (name, counters) in &self.counters {
            let policy = self.policy(name);
            let mut view = stats(counters);
            if let Value::Object(map) = &mut view {
                map.insert("enabled".into(), json!(policy.enabled));
                map.insert("namespace".into(), json!(policy.namespace.as_str()));
                map.insert("sampled".into(), json!(policy.sampled));
                map.insert(
                    "ttl_seconds".into(),
                    json!(policy.ttl.unwrap_or(self.config.ttl).as_secs()),
                );
                map.insert(
                    "semantic".into(),
                    json!(policy.semantic.as_ref().map(|s| json!({
                        "embedding_model": s.embedding_model, "threshold": s.threshold,
                    }))),
                );
            }
            models.insert(name.clone(), view);
        }
        let l2 = match &self.l2 {
            None => json!({"status": "off"}),
            Some(l2) => json!({
                "status": if l2.degraded() { "degraded" } else { "ok" },
                "errors": l2.errors(),
            }),
        };
        let semantic = self.semantic.as_ref().map(|s| {
            let by_model: Map<String, Value> =
                s.index.len_by_alias().into_iter().map(|(a, n)| (a, json!(n))).collect();
            json!({"entries": s.index.len(), "by_model": by_model,
                   "persisted": s.store.is_some()})
        });
        json!({
            "enabled": self.enabled(),
            "l1": {
                "entries": self.l1.entry_count(),
                "bytes": self.l1.weighted_size(),
                "max_bytes": self.config.max_bytes,
            },
            "l2": l2,
            "semantic": semantic,
            "in_flight": self.flights.len(),
            "total": stats(&self.total()),
            "other_models": stats(&self.other),
            "models": models,
        })
    }

    fn total(&self) -> Counters {
        let total = Counters::default();
        for c in self.counters.values().chain([&self.other]) {
            for (t, v) in total.outcomes.iter().zip(&c.outcomes) {
                t.fetch_add(v.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            total.stores.fetch_add(c.stores.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        total
    }

    /// For `/health/ready`: `None` when there is no L2.
    pub fn l2_degraded(&self) -> Option<bool> {
        self.l2.as_ref().map(L2::degraded)
    }

    /// Prompts in the semantic index.
    pub fn semantic_len(&self) -> usize {
        self.semantic.as_ref().map_or(0, |s| s.index.len())
    }

    /// Entries and bytes of L1, for the gauges.
    pub fn l1_size(&self) -> (u64, u64) {
        (self.l1.entry_count(), self.l1.weighted_size())
    }
}

/// What a clear removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClearReport {
    /// This node's L1 entries.
    pub l1: usize,
    /// Redis entries; `None` without L2.
    pub l2: Option<u64>,
    pub semantic: usize,
}

/// The namespace of a virtual key.
fn key_namespace(id: &str) -> String {
    format!("k:{id}")
}

/// A virtual key's own namespace; the master key, JWT end users and an
/// open gateway (no key id) are the app itself.
fn namespace(policy: CacheNamespace, key_id: Option<&str>) -> String {
    match (policy, key_id) {
        (CacheNamespace::Key, Some(id)) => key_namespace(id),
        (CacheNamespace::Key, None) => "app".to_string(),
        (CacheNamespace::Shared, _) => "shared".to_string(),
    }
}

/// `(lookup, store)` from `cache-control`.
fn cache_control(headers: &HeaderMap) -> (bool, bool) {
    let (mut lookup, mut store) = (true, true);
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',') {
            match directive.trim().to_ascii_lowercase().as_str() {
                "no-cache" => lookup = false,
                "no-store" => store = false,
                _ => {}
            }
        }
    }
    (lookup, store)
}

fn ttl_header(headers: &HeaderMap) -> Result<Option<Duration>, HeaderError> {
    let Some(value) = headers.get(TTL_HEADER) else { return Ok(None) };
    let bad = || HeaderError {
        name: TTL_HEADER,
        message: format!(
            "{TTL_HEADER} must be a number of seconds (at least 1) or a duration such as \"10m\" \
             or \"2h\"; got {:?}",
            String::from_utf8_lossy(value.as_bytes())
        ),
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    let ttl = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|_| bad())?,
    };
    if ttl < Duration::from_secs(1) {
        return Err(bad());
    }
    Ok(Some(ttl))
}

#[cfg(test)]
mod tests;
