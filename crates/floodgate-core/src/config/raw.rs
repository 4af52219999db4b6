//! The config file as written: serde structs with `deny_unknown_fields`,
//! spans on the values that later checks point at, and value types whose
//! parse errors say what would be valid. Defaults live in [`super::Config`]'s
//! builder, not here, so a missing field stays distinguishable from a default.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<Spanned<Listen>>,
    pub master_key: Option<Spanned<String>>,
    pub server: Option<RawServer>,
    pub log: Option<RawLog>,
    pub state: Option<RawState>,
    pub database: Option<RawDatabase>,
    pub upstream: Option<RawTimeouts>,
    pub routing: Option<RawRouting>,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub models: Vec<RawModel>,
    pub cache: Option<Spanned<RawCache>>,
    #[serde(default)]
    pub pricing: Vec<RawPrice>,
    pub alerts: Option<RawAlerts>,
    pub auth: Option<RawAuth>,
    pub limits: Option<RawLimits>,
    pub queue: Option<RawQueue>,
    pub realtime: Option<RawRealtime>,
    pub telemetry: Option<RawTelemetry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub max_body_bytes: Option<Spanned<u64>>,
    pub shutdown_grace: Option<HumanDuration>,
    pub drain_delay: Option<HumanDuration>,
    pub compression: Option<bool>,
    pub workers: Option<Spanned<usize>>,
    pub max_in_flight: Option<Spanned<usize>>,
    pub max_connections: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<LogFormat>,
    /// A `tracing` filter such as `info` or `floodgate_core=debug,info`.
    pub level: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub backend: Option<Spanned<StateBackendKind>>,
    pub redis_mode: Option<Spanned<RedisMode>>,
    pub redis_url: Option<Spanned<String>>,
    pub redis_nodes: Option<Spanned<Vec<Spanned<String>>>>,
    pub redis_sentinel_master: Option<Spanned<String>>,
    pub redis_prefix: Option<Spanned<String>>,
}

/// How Redis is deployed (`[state] redis_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One primary at `redis_url`.
    #[default]
    Standalone,
    /// A Redis Cluster found from the seed nodes `redis_nodes`.
    Cluster,
    /// The primary `redis_sentinel_master` of the sentinels `redis_nodes`.
    Sentinel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackendKind {
    Memory,
    Redis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub url: Option<Spanned<String>>,
    pub read_url: Option<Spanned<String>>,
    pub read_max_connections: Option<Spanned<u32>>,
    pub max_connections: Option<Spanned<u32>>,
    pub min_connections: Option<Spanned<u32>>,
    pub idle_timeout: Option<HumanDuration>,
    pub max_lifetime: Option<HumanDuration>,
    pub acquire_timeout: Option<Spanned<HumanDuration>>,
    pub test_before_acquire: Option<bool>,
    pub ledger_buffer: Option<Spanned<usize>>,
    pub ledger_spill_path: Option<Spanned<String>>,
    pub ledger_journal: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub jwt: Option<Spanned<RawJwt>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub hs256_secret: Option<Spanned<String>>,
    pub jwks_url: Option<Spanned<String>>,
    pub issuer: Option<String>,
    pub audience: Option<StringOrList>,
    pub leeway: Option<HumanDuration>,
    pub user_claim: Option<String>,
    pub tier_claim: Option<String>,
    pub jwks_refresh: Option<Spanned<HumanDuration>>,
}

/// `"a"` or `["a", "b"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    pub ip: Option<Spanned<RawPeriodLimit>>,
    pub ip_ai: Option<Spanned<RawPeriodLimit>>,
    pub user: Option<RawUserLimits>,
    #[serde(default)]
    pub tiers: std::collections::BTreeMap<String, Spanned<RawUserLimits>>,
    pub concurrency_lease: Option<HumanDuration>,
}

/// `requests` per `per`, e.g. 1000 per "15m".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeriodLimit {
    pub requests: Option<u64>,
    pub per: Option<HumanDuration>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect_timeout: Option<HumanDuration>,
    pub first_byte_timeout: Option<HumanDuration>,
    pub chunk_timeout: Option<HumanDuration>,
    pub total_timeout: Option<HumanDuration>,
    pub pool_idle_timeout: Option<HumanDuration>,
    pub pool_max_idle_per_host: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub retries: Option<u32>,
    pub backoff_base: Option<HumanDuration>,
    pub backoff_max: Option<HumanDuration>,
    pub max_retry_after: Option<HumanDuration>,
    pub allow_direct_targets: Option<bool>,
    pub retry_on: Option<Spanned<Vec<Spanned<String>>>>,
    pub retry_budget: Option<Spanned<f64>>,
    pub retry_budget_min_per_second: Option<Spanned<f64>>,
    pub retry_budget_window: Option<Spanned<HumanDuration>>,
    pub breaker: Option<RawBreaker>,
    pub wait: Option<RawWait>,
}

/// `[routing.breaker]`: when a target (or a key on a target) stops being called.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub consecutive_failures: Option<Spanned<u32>>,
    pub error_rate: Option<Spanned<f64>>,
    pub min_requests: Option<u32>,
    pub window: Option<Spanned<HumanDuration>>,
    pub cooldown: Option<HumanDuration>,
    pub half_open_probes: Option<Spanned<u32>>,
}

/// `[routing.wait]`: requests waiting for provider capacity.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWait {
    pub max_wait: Option<HumanDuration>,
    pub max_wait_cap: Option<HumanDuration>,
    pub max_waiting: Option<usize>,
    pub default_priority: Option<Spanned<u8>>,
}

/// `[alerts]`: quota-use alerts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub thresholds: Option<Spanned<Vec<f64>>>,
    pub webhook_url: Option<Spanned<String>>,
    pub webhook_timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: Spanned<String>,
    pub kind: Spanned<ProviderKind>,
    pub base_url: Option<Spanned<String>>,
    #[serde(default)]
    pub keys: Vec<Spanned<RawKey>>,
    pub rpm: Option<Spanned<u32>>,
    pub tpm: Option<Spanned<u32>>,
    pub daily_requests: Option<Spanned<u64>>,
    pub daily_tokens: Option<Spanned<u64>>,
    /// Extra headers sent with every request (e.g. OpenRouter's `HTTP-Referer`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    // The timeout fields of `[upstream]`, per provider. Spelled out because
    // serde cannot combine `flatten` with `deny_unknown_fields`.
    pub connect_timeout: Option<HumanDuration>,
    pub first_byte_timeout: Option<HumanDuration>,
    pub chunk_timeout: Option<HumanDuration>,
    pub total_timeout: Option<HumanDuration>,
    /// Speak HTTP/2 without TLS (h2c), for local upstreams that offer it.
    pub http2_prior_knowledge: Option<bool>,
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    OpenaiCompatible,
    Anthropic,
    Gemini,
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai-compatible",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mock => "mock",
        }
    }
}

/// A key: `"sk-…"`, or a table with its own limits and priority.
#[derive(Debug)]
pub enum RawKey {
    Plain(String),
    Table(RawKeyTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyTable {
    pub key: String,
    pub rpm: Option<Spanned<u32>>,
    pub tpm: Option<Spanned<u32>>,
    pub daily_requests: Option<Spanned<u64>>,
    pub daily_tokens: Option<Spanned<u64>>,
    pub priority: Option<i32>,
}

impl<'de> Deserialize<'de> for RawKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrTable::<RawKeyTable>::new(
            "a key string or a table such as { key = \"${KEY}\", rpm = 500, priority = 1 }",
        ))
        .map(|v| match v {
            Either::Plain(s) => RawKey::Plain(s),
            Either::Table(t) => RawKey::Table(t),
        })
    }
}

/// A target: `"provider/model"`, or a table with a weight.
#[derive(Debug)]
pub enum RawTarget {
    Plain(String),
    Table(RawTargetTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetTable {
    pub target: String,
    pub weight: Option<u32>,
}

impl RawTarget {
    pub fn name(&self) -> &str {
        match self {
            RawTarget::Plain(s) => s,
            RawTarget::Table(t) => &t.target,
        }
    }

    pub fn weight(&self) -> Option<u32> {
        match self {
            RawTarget::Plain(_) => None,
            RawTarget::Table(t) => t.weight,
        }
    }
}

impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrTable::<RawTargetTable>::new(
            "\"provider/model\" or a table such as { target = \"openai/gpt-4o-mini\", weight = 3 }",
        ))
        .map(|v| match v {
            Either::Plain(s) => RawTarget::Plain(s),
            Either::Table(t) => RawTarget::Table(t),
        })
    }
}

enum Either<T> {
    Plain(String),
    Table(T),
}

/// Accepts a string or a table; a table keeps its own field errors
/// (`deny_unknown_fields` lists the valid ones).
struct StringOrTable<T> {
    expecting: &'static str,
    table: std::marker::PhantomData<T>,
}

impl<T> StringOrTable<T> {
    fn new(expecting: &'static str) -> Self {
        StringOrTable { expecting, table: std::marker::PhantomData }
    }
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for StringOrTable<T> {
    type Value = Either<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Either::Plain(v.to_string()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Either::Table)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Targets in the order written (the default).
    #[default]
    Fallback,
    /// A random first target, in proportion to the targets' weights.
    Weighted,
    /// Power of two choices on latency (EWMA) × in-flight requests.
    LeastLatency,
    /// The target with the fewest requests in flight.
    LeastBusy,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Fallback => "fallback",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least-latency",
            Strategy::LeastBusy => "least-busy",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: Spanned<String>,
    pub targets: Spanned<Vec<Spanned<RawTarget>>>,
    pub strategy: Option<Strategy>,
    pub retries: Option<u32>,
    pub retry_on: Option<Spanned<Vec<Spanned<String>>>>,
    pub backoff_base: Option<HumanDuration>,
    pub backoff_max: Option<HumanDuration>,
    pub retry_budget: Option<Spanned<f64>>,
    pub hedge: Option<bool>,
    pub hedge_after: Option<HumanDuration>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub cache: Option<RawModelCache>,
}

/// `[[models.rules]]`: conditions on the request, and the targets to use
/// when they all hold. The first matching rule wins.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub max_prompt_tokens: Option<u32>,
    pub min_prompt_tokens: Option<u32>,
    pub tools: Option<bool>,
    pub images: Option<bool>,
    pub targets: Spanned<Vec<Spanned<RawTarget>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub ttl_seconds: Option<Spanned<u64>>,
    /// Per route: `chat`, `messages`, `embeddings`.
    #[serde(default)]
    pub route_ttl_seconds: std::collections::BTreeMap<String, Spanned<u64>>,
    pub max_bytes: Option<Spanned<u64>>,
    pub max_entry_bytes: Option<Spanned<u64>>,
    pub namespace: Option<CacheNamespace>,
    pub sampled: Option<bool>,
    pub coalesce: Option<bool>,
    pub l2: Option<bool>,
    pub l2_timeout: Option<Spanned<HumanDuration>>,
    pub semantic_max_entries: Option<Spanned<usize>>,
}

/// `[telemetry]`: OTLP trace export.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<Spanned<String>>,
    /// `"http/protobuf"` or `"http/json"`; checked later, so that `"grpc"`
    /// gets its own message.
    pub otlp_protocol: Option<Spanned<String>>,
    /// Sent with every export (a collector's credentials): never logged.
    #[serde(default)]
    pub otlp_headers: std::collections::BTreeMap<String, Spanned<String>>,
    pub otlp_timeout: Option<Spanned<HumanDuration>>,
    pub service_name: Option<Spanned<String>>,
    pub sample_ratio: Option<Spanned<f64>>,
}

/// `[queue]`: the durable job queue and this node's workers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub backend: Option<Spanned<QueueBackendKind>>,
    pub path: Option<Spanned<String>>,
    pub workers: Option<Spanned<usize>>,
    pub lease: Option<Spanned<HumanDuration>>,
    pub poll_interval: Option<Spanned<HumanDuration>>,
    pub retry_base: Option<Spanned<HumanDuration>>,
    pub retry_max: Option<Spanned<HumanDuration>>,
    pub max_attempts: Option<Spanned<u32>>,
    pub max_attempts_cap: Option<Spanned<u32>>,
    pub max_wait: Option<Spanned<HumanDuration>>,
    pub result_ttl: Option<Spanned<HumanDuration>>,
    pub history_ttl: Option<Spanned<HumanDuration>>,
    pub webhook_secret: Option<Spanned<String>>,
    pub webhook_timeout: Option<Spanned<HumanDuration>>,
    pub webhook_attempts: Option<Spanned<u32>>,
}

/// `[realtime]`: WebSocket, Socket.IO and SSE rooms.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRealtime {
    pub enabled: Option<bool>,
    pub max_connections: Option<Spanned<usize>>,
    pub max_connections_per_key: Option<Spanned<usize>>,
    pub max_subscriptions: Option<Spanned<usize>>,
    pub send_buffer: Option<Spanned<usize>>,
    pub max_message_bytes: Option<Spanned<usize>>,
    pub ping_interval: Option<Spanned<HumanDuration>>,
    pub ping_timeout: Option<Spanned<HumanDuration>>,
    pub history_size: Option<Spanned<usize>>,
    pub history_ttl: Option<Spanned<HumanDuration>>,
    pub presence: Option<bool>,
    pub user_rooms: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub rooms: Vec<RawRoomRule>,
}

/// `[[realtime.rooms]]`: options for the rooms whose name matches `pattern`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoomRule {
    pub pattern: Spanned<String>,
    pub history_size: Option<Spanned<usize>>,
    pub history_ttl: Option<Spanned<HumanDuration>>,
    pub presence: Option<bool>,
}

/// Where jobs are kept: `auto` follows `[state] backend` (SQLite with
/// `memory`, Redis with `redis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackendKind {
    #[default]
    Auto,
    Sqlite,
    Redis,
}

/// Whose answers a cached answer may be served to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheNamespace {
    /// Only to requests made with the same virtual key (the default).
    #[default]
    Key,
    /// To every client of the gateway.
    Shared,
}

impl CacheNamespace {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheNamespace::Key => "key",
            CacheNamespace::Shared => "shared",
        }
    }
}

/// `[models.cache]`: an alias's own cache policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelCache {
    pub enabled: Option<bool>,
    pub ttl_seconds: Option<Spanned<u64>>,
    pub namespace: Option<CacheNamespace>,
    pub sampled: Option<bool>,
    pub semantic: Option<Spanned<RawSemantic>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSemantic {
    pub embedding_model: Spanned<String>,
    pub threshold: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub model: Spanned<String>,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    pub cache_read_usd_per_mtok: Option<f64>,
}

/// A socket address whose parse error says what it expects.
#[derive(Debug, Clone, Copy)]
pub struct Listen(pub SocketAddr);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Listen).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid listen address {text:?}: expected IP:PORT such as \"127.0.0.1:8080\" or \"0.0.0.0:8080\""
            ))
        })
    }
}

/// A duration written as `"500ms"`, `"30s"`, `"5m"`.
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(HumanDuration).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: expected a number with a unit, such as \"500ms\", \"30s\" or \"5m\""
            ))
        })
    }
}
