//! Typed configuration: defaults in code, a TOML file (with `${ENV}`
//! substitution), environment overrides and CLI flags, merged in that order of
//! increasing precedence, then validated as a whole.
//!
//! [`load`] and `floodgate check-config` run the same code, so anything the
//! checker accepts starts, and every problem is reported at once with the file
//! and line it comes from.

pub mod env;
mod raw;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

pub use env::Env;
pub use raw::{CacheNamespace, LogFormat, ProviderKind, RedisMode, StateBackendKind, Strategy};
use raw::{HumanDuration, RawConfig, RawKey, RawProvider, RawTarget, RawTimeouts};
use toml::Spanned;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// When set, client routes require it (or, later, a virtual key) and the
    /// admin API is on. When unset, client auth is off.
    pub master_key: Option<SecretString>,
    /// Allow binding a non-loopback address without a master key.
    pub allow_unauthenticated: bool,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub state: StateConfig,
    pub database: DatabaseConfig,
    pub routing: RoutingConfig,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
    pub pricing: Vec<PriceConfig>,
    pub alerts: AlertsConfig,
    /// End-user tokens (`[auth.jwt]`); `None` when not configured.
    pub jwt: Option<crate::pipeline::jwt::JwtConfig>,
    pub limits: LimitsConfig,
    pub cache: CacheConfig,
    pub queue: QueueConfig,
    pub realtime: RealtimeConfig,
    /// OTLP trace export (`[telemetry]`); `None`: off (no endpoint set).
    pub telemetry: Option<TelemetryConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests and streams.
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long the node keeps accepting (and serving) while
    /// `/health/ready` says `draining`, so load balancers take it out of
    /// their pool before it stops accepting.
    pub drain_delay: Duration,
    /// gzip/br for clients that ask; never on SSE.
    pub compression: bool,
    /// Serving threads, each with its own runtime (see `workers`).
    pub workers: usize,
    /// Requests at once on this node before new ones get 503 (see `pipeline::shed`).
    pub max_in_flight: usize,
    /// Client connections open at once; at the limit the node stops accepting
    /// (see `http::listener`).
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// OTLP trace export: where spans go and which requests are traced.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The collector's traces URL (`…/v1/traces`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Sent with every export (a collector's credentials).
    pub headers: Vec<(String, SecretString)>,
    /// One export's deadline (connection, request and answer).
    pub timeout: Duration,
    /// `service.name` of the spans' resource.
    pub service_name: String,
    /// Share of new traces recorded; a request that comes with a
    /// `traceparent` follows its caller's sampling decision.
    pub sample_ratio: f64,
}

/// The OTLP encodings over HTTP (gRPC is not built in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    HttpProtobuf,
    HttpJson,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::HttpJson => "http/json",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub backend: StateBackendKind,
    /// Where Redis is (`redis_mode` with `redis_url`, or `redis_nodes` and
    /// `redis_sentinel_master`); used with `backend = "redis"`.
    pub redis: crate::state::redis::Target,
    /// Prepended to every Redis key this node writes.
    pub redis_prefix: String,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created when missing), `sqlite::memory:` or `postgres://…`.
    pub url: String,
    pub pool: crate::store::PoolConfig,
    /// A PostgreSQL read replica for the read-heavy admin queries
    /// (`read_url`, `read_max_connections`).
    pub read: Option<crate::store::ReadReplica>,
    /// Usage records held in memory for the writer; beyond it they go
    /// straight to the spill file.
    pub ledger_buffer: usize,
    /// Where records wait while the database is down (append-only).
    pub ledger_spill_path: std::path::PathBuf,
    /// Each record is also written to a journal next to the spill file
    /// before the request ends, so a killed process loses none.
    pub ledger_journal: bool,
}

/// Client-side limits: per IP, per end user (default and tiers). Per-key
/// limits live on each virtual key.
#[derive(Debug, Clone, Default)]
pub struct LimitsConfig {
    /// Proxies whose `x-forwarded-for` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Every client and admin route, per client IP.
    pub ip: Option<crate::limiter::Rate>,
    /// AI routes (chat, messages, embeddings), per client IP.
    pub ip_ai: Option<crate::limiter::Rate>,
    /// Every end user without a tier.
    pub user: UserLimits,
    /// Selected by the JWT tier claim.
    pub tiers: std::collections::BTreeMap<String, UserLimits>,
    /// A Redis concurrency slot whose node died is freed after this.
    pub concurrency_lease: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
}

impl UserLimits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.max_concurrent.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Extra attempts on the same target after a retryable failure.
    pub retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A `retry-after` longer than this moves on to the next target at once.
    pub max_retry_after: Duration,
    /// Accept `provider/model` as a model name besides the aliases.
    pub allow_direct_targets: bool,
    /// Which failures are retried (on the same target, then the next).
    pub retry_on: RetryOn,
    pub retry_budget: RetryBudgetConfig,
    pub breaker: BreakerConfig,
    pub wait: WaitConfig,
}

/// Failure classes a retry policy may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// Connection refused or broken, a stream that broke before its first content.
    pub connect: bool,
    pub timeout: bool,
    /// 500–599, and 408, 409, 425.
    pub server: bool,
    /// 429 (honouring `retry-after`).
    pub rate_limited: bool,
}

impl RetryOn {
    pub const ALL: RetryOn =
        RetryOn { connect: true, timeout: true, server: true, rate_limited: true };
    pub const NAMES: &str = "\"connect\", \"timeout\", \"5xx\", \"429\"";
}

/// Retries (and hedges) may add at most `ratio` of extra upstream calls
/// over `window`, plus `min_per_second` so that a quiet alias can still retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    pub ratio: f64,
    pub min_per_second: f64,
    pub window: Duration,
}

/// Circuit breakers, per target and per key on each target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Opens after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or when failures over `window` exceed this share of calls…
    pub error_rate: f64,
    /// …counted once the window holds at least this many calls.
    pub min_requests: u32,
    pub window: Duration,
    /// Open this long, then half-open.
    pub cooldown: Duration,
    /// Calls let through when half-open; that many successes close it.
    pub half_open_probes: u32,
}

/// Requests waiting for capacity when every key of every target is at its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitConfig {
    /// How long a request waits unless it sends `x-floodgate-max-wait-ms`.
    pub max_wait: Duration,
    /// The most a client may ask for.
    pub max_wait_cap: Duration,
    /// Requests waiting at once on this node; beyond that, 429 at once.
    pub max_waiting: usize,
    /// Priority (0–10) of a request without `x-floodgate-priority`.
    pub default_priority: u8,
}

/// Where the job queue keeps jobs, resolved from `[queue] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueBackend {
    Sqlite,
    Redis,
}

/// The durable job queue (`[queue]`).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub backend: QueueBackend,
    /// The SQLite backend's file (`sqlite://…` URL), the queue's own.
    pub sqlite_url: String,
    /// Jobs this node runs at once; 0 makes an API-only node.
    pub workers: usize,
    /// How long a leased job is a worker's before another may take it;
    /// running jobs are heartbeated every third of it.
    pub lease: Duration,
    /// How often an idle worker looks for jobs submitted on other nodes.
    pub poll_interval: Duration,
    /// Retry backoff: full jitter over `retry_base · 2^(attempt-1)`, at most `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A submission's `max_attempts` when it names none, and the most it may name.
    pub max_attempts: u32,
    pub max_attempts_cap: u32,
    /// How long a job may wait in the router for provider capacity.
    pub max_wait: Duration,
    /// Completed and cancelled jobs (with their results) are kept this long.
    pub result_ttl: Duration,
    /// Completed and cancelled jobs are kept in the job history (the store)
    /// this long after they finished; zero keeps them.
    pub history_ttl: Duration,
    /// Webhook signatures are keyed by this (per virtual key, derived);
    /// without it, by the master key; with neither, webhooks are unsigned.
    pub webhook_secret: Option<SecretString>,
    pub webhook_timeout: Duration,
    /// Deliveries tried per job before the webhook counts as failed.
    pub webhook_attempts: u32,
}

impl QueueConfig {
    /// The defaults for a node with the given state backend and database URL.
    pub fn defaults(state: StateBackendKind, database_url: &str) -> QueueConfig {
        QueueConfig {
            backend: match state {
                StateBackendKind::Memory => QueueBackend::Sqlite,
                StateBackendKind::Redis => QueueBackend::Redis,
            },
            sqlite_url: default_queue_url(database_url),
            workers: 4,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            max_attempts: 3,
            max_attempts_cap: 20,
            max_wait: Duration::from_secs(300),
            result_ttl: Duration::from_secs(24 * 3600),
            history_ttl: Duration::from_secs(30 * 24 * 3600),
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(10),
            webhook_attempts: 5,
        }
    }
}

/// Realtime connections (`[realtime]`): `/ws`, Socket.IO and room SSE.
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    pub enabled: bool,
    /// Realtime connections on this node (all transports) before new ones
    /// are refused with a retry hint.
    pub max_connections: usize,
    /// Per virtual key (or end user) on this node; 0 = no cap.
    pub max_connections_per_key: usize,
    /// Topics one connection may listen to at once.
    pub max_subscriptions: usize,
    /// Messages queued for one connection before it is dropped as too slow.
    pub send_buffer: usize,
    /// Largest incoming frame, and largest published `data`.
    pub max_message_bytes: usize,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Rooms' options when no `[[realtime.rooms]]` rule matches.
    pub default_room: RoomOptions,
    /// First match wins.
    pub rooms: Vec<RoomRule>,
    /// Room patterns a JWT end user may join; `{sub}` is their id.
    pub user_rooms: Vec<String>,
}

/// What a room keeps: its last messages (for recovery) and who is in it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomOptions {
    /// Messages kept; 0 keeps none (no recovery).
    pub history_size: usize,
    /// How long a quiet room's history is kept.
    pub history_ttl: Duration,
    pub presence: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoomRule {
    pub pattern: String,
    pub options: RoomOptions,
}

impl RealtimeConfig {
    /// The options of room `name` (without the `room:` prefix).
    pub fn room(&self, name: &str) -> &RoomOptions {
        self.rooms
            .iter()
            .find(|r| crate::realtime::pattern_matches(&r.pattern, name))
            .map_or(&self.default_room, |r| &r.options)
    }
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            enabled: true,
            max_connections: 10_000,
            max_connections_per_key: 1_000,
            max_subscriptions: 100,
            send_buffer: 256,
            max_message_bytes: 64 * 1024,
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            default_room: RoomOptions {
                history_size: 0,
                history_ttl: Duration::from_secs(600),
                presence: false,
            },
            rooms: Vec::new(),
            user_rooms: vec!["user-{sub}".to_string(), "user-{sub}-*".to_string()],
        }
    }
}

/// The queue's SQLite file next to the store's (`floodgate.db` →
/// `floodgate-jobs.db`); in memory when the store is; `floodgate-jobs.db`
/// in the working directory when the store is PostgreSQL.
fn default_queue_url(database_url: &str) -> String {
    let Some(path) = database_url.strip_prefix("sqlite://") else {
        return if database_url.starts_with("sqlite:") {
            "sqlite::memory:".to_string()
        } else {
            "sqlite://floodgate-jobs.db".to_string()
        };
    };
    let path = path.split('?').next().unwrap_or(path);
    if path.contains(":memory:") {
        return "sqlite::memory:".to_string();
    }
    let file = std::path::Path::new(path);
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("floodgate");
    format!("sqlite://{}", file.with_file_name(format!("{stem}-jobs.db")).display())
}

/// The response cache (`[cache]`); each alias may override it in `[models.cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub enabled: bool,
    pub ttl: Duration,
    /// Per route (`chat`, `messages`, `embeddings`), over `ttl`.
    pub route_ttl: Vec<(String, Duration)>,
    /// Bound of the in-process layer (L1), answers' bytes counted.
    pub max_bytes: u64,
    /// Larger answers are not cached.
    pub max_entry_bytes: usize,
    pub namespace: CacheNamespace,
    /// Cache requests whose temperature is above 0 or unset (the providers'
    /// default temperature is 1): off by default, such answers vary.
    pub sampled: bool,
    /// Identical requests in flight at once make one upstream call.
    pub coalesce: bool,
    /// With `[state] backend = "redis"`, answers are shared in Redis (L2).
    pub l2: bool,
    /// An L2 read or write slower than this counts as a failure.
    pub l2_timeout: Duration,
    pub semantic_max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            ttl: Duration::from_secs(3600),
            route_ttl: Vec::new(),
            max_bytes: 256 << 20,
            max_entry_bytes: 1 << 20,
            namespace: CacheNamespace::Key,
            sampled: false,
            coalesce: true,
            l2: true,
            l2_timeout: Duration::from_millis(50),
            semantic_max_entries: 100_000,
        }
    }
}

/// `[models.cache]`: what an alias changes of `[cache]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelCacheConfig {
    pub enabled: Option<bool>,
    pub ttl: Option<Duration>,
    pub namespace: Option<CacheNamespace>,
    pub sampled: Option<bool>,
    pub semantic: Option<SemanticConfig>,
}

/// The semantic cache of an alias.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticConfig {
    /// The alias (or `provider/model`) that embeds prompts, through the router.
    pub embedding_model: String,
    /// Cosine similarity at or above which a cached answer is served.
    pub threshold: f32,
}

/// The routes whose answers can be cached, for `route_ttl_seconds`.
pub const CACHE_ROUTES: [&str; 3] = ["chat", "messages", "embeddings"];

/// Quota-use alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// Shares of a quota (ascending, in (0, 1]) at which an alert fires once per window.
    pub thresholds: Vec<f64>,
    pub webhook_url: Option<String>,
    pub webhook_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the response head arrives (for a non-streamed answer, that is
    /// the whole generation).
    pub first_byte: Duration,
    /// Longest silence between two chunks of a stream.
    pub chunk: Duration,
    /// The whole exchange, stream included.
    pub total: Duration,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// `None` only for a `mock` provider, which then runs in-process.
    pub base_url: Option<String>,
    /// Each key with its limits resolved (its own, else the provider's).
    pub keys: Vec<KeyConfig>,
    /// Limits of a provider without keys (a local server the operator caps).
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub daily_requests: Option<u64>,
    pub daily_tokens: Option<u64>,
    pub headers: Vec<(String, String)>,
    pub timeouts: Timeouts,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// HTTP/2 without TLS (h2c prior knowledge) to a plain `http://` upstream.
    pub http2_prior_knowledge: bool,
}

/// One provider key and its limits.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub secret: SecretString,
    /// Requests per minute (any 60 s window).
    pub rpm: Option<u32>,
    /// Tokens per minute: reserved by estimate, settled by reported usage.
    pub tpm: Option<u32>,
    /// Per UTC day.
    pub daily_requests: Option<u64>,
    pub daily_tokens: Option<u64>,
    /// Higher is picked first; keys of equal priority by most headroom.
    pub priority: i32,
}

impl KeyConfig {
    /// A key with no limits of its own.
    pub fn plain(secret: impl Into<String>) -> Self {
        KeyConfig {
            secret: SecretString::from(secret.into()),
            rpm: None,
            tpm: None,
            daily_requests: None,
            daily_tokens: None,
            priority: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub targets: Vec<TargetRef>,
    pub strategy: Strategy,
    /// Overrides [`RoutingConfig::retries`] for this alias.
    pub retries: Option<u32>,
    pub retry_on: Option<RetryOn>,
    pub backoff_base: Option<Duration>,
    pub backoff_max: Option<Duration>,
    /// Overrides [`RetryBudgetConfig::ratio`].
    pub retry_budget: Option<f64>,
    pub hedge: Option<Hedge>,
    /// Tried in order before `targets`; the first that matches chooses.
    pub rules: Vec<RuleConfig>,
    pub cache: ModelCacheConfig,
}

impl ModelConfig {
    /// An alias with one target and every policy at its default.
    pub fn single(name: impl Into<String>, target: TargetRef) -> Self {
        ModelConfig {
            name: name.into(),
            targets: vec![target],
            strategy: Strategy::Fallback,
            retries: None,
            retry_on: None,
            backoff_base: None,
            backoff_max: None,
            retry_budget: None,
            hedge: None,
            rules: Vec::new(),
            cache: ModelCacheConfig::default(),
        }
    }
}

/// When a second target is asked while the first has not answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hedge {
    /// After the first target's recent p95 latency.
    P95,
    After(Duration),
}

/// A routing rule: every condition set must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    pub max_prompt_tokens: Option<u32>,
    pub min_prompt_tokens: Option<u32>,
    /// `Some(false)`: only requests without tools; `Some(true)`: only with.
    pub tools: Option<bool>,
    pub images: Option<bool>,
    pub targets: Vec<TargetRef>,
}

/// `provider/model`, split at the first `/` (upstream model names may
/// contain `/`, e.g. `meta-llama/Llama-3.1-8B-Instruct`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    pub provider: String,
    pub model: String,
    /// For the `weighted` strategy; 1 unless set.
    pub weight: u32,
}

impl TargetRef {
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        TargetRef { provider: provider.into(), model: model.into(), weight: 1 }
    }
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PriceConfig {
    pub model: String,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    pub cache_read_usd_per_mtok: Option<f64>,
}

/// Values from the command line, which win over the file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub allow_unauthenticated: bool,
    pub log_format: Option<LogFormat>,
}

/// One thing wrong with a config, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based; `None` for problems not tied to a line (e.g. an environment value).
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render(.0))]
    Invalid(Vec<Problem>),
}

fn render(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// Reads, substitutes, parses and validates a config. `path = None` means no
/// file: defaults plus the providers found in `env`.
pub fn load(path: Option<&Path>, env: &Env, overrides: &Overrides) -> Result<Config, ConfigError> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            from_text(&text, &path.display().to_string(), env, overrides)
        }
        None => from_text("", "defaults", env, overrides),
    }
}

/// As [`load`], from text already read; `file` names it in messages.
pub fn from_text(
    text: &str,
    file: &str,
    env: &Env,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let substituted = env::substitute(text, env).map_err(|errors| {
        ConfigError::Invalid(
            errors
                .into_iter()
                .map(|e| Problem { file: file.to_string(), line: Some(e.line), message: e.message })
                .collect(),
        )
    })?;
    let raw: RawConfig = toml::from_str(&substituted).map_err(|err| {
        ConfigError::Invalid(vec![Problem {
            file: file.to_string(),
            line: err.span().map(|span| line_of(&substituted, &span)),
            message: err.message().trim().to_string(),
        }])
    })?;
    let mut builder =
        Builder { file, text: &substituted, problems: Vec::new(), semantic_spans: Vec::new() };
    let config = builder.build(raw, env, overrides);
    if builder.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(builder.problems))
    }
}

/// An OTLP/HTTP endpoint: an `http(s)` URL with a host.
fn otlp_url(text: &str) -> Result<http::Uri, &'static str> {
    let uri: http::Uri = text.parse().map_err(|_| "is not a URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err("is not an http(s) URL such as \"http://127.0.0.1:4318\" \
                    (OTLP over HTTP; gRPC on port 4317 is not supported)");
    }
    Ok(uri)
}

/// The file's endpoint as the traces URL: a bare collector address
/// (`http://collector:4318`) gets OTLP's `/v1/traces`; a URL with a path is
/// taken as the full traces URL.
fn traces_url(text: &str, uri: &http::Uri) -> String {
    if matches!(uri.path(), "" | "/") && uri.query().is_none() {
        format!("{}/v1/traces", text.trim_end_matches('/'))
    } else {
        text.to_string()
    }
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

const DEFAULT_DATABASE: &str = "sqlite://floodgate.db";
const DEFAULT_SPILL: &str = "floodgate-ledger.spill";

/// The providers `floodgate serve` picks up from the environment when the
/// config names none, with the alias each gets.
const ENV_PROVIDERS: [(&str, ProviderKind, &str); 3] = [
    ("OPENAI_API_KEY", ProviderKind::Openai, "gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", ProviderKind::Anthropic, "claude-haiku-4-5"),
    ("GEMINI_API_KEY", ProviderKind::Gemini, "gemini-2.5-flash"),
];

/// The model the built-in mock provider answers as, and its alias.
pub const MOCK_ALIAS: &str = "mock";

struct Builder<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
    /// Semantic caches' embedding models, checked once every alias is known.
    semantic_spans: Vec<(String, Range<usize>)>,
}

impl Builder<'_> {
    fn problem(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let line = span.map(|s| line_of(self.text, &s));
        self.problems.push(Problem { file: self.file.to_string(), line, message: message.into() });
    }

    fn build(&mut self, raw: RawConfig, env: &Env, overrides: &Overrides) -> Config {
        let listen = self.listen(&raw, env, overrides);
        let master_key = self.master_key(&raw, env);
        let server = raw.server.unwrap_or_default();
        let max_body_bytes = match server.max_body_bytes {
            Some(v) if *v.get_ref() == 0 => {
                self.problem(Some(v.span()), "server.max_body_bytes must be greater than 0");
                0
            }
            Some(v) => usize::try_from(*v.get_ref()).unwrap_or(usize::MAX),
            None => 10 * 1024 * 1024,
        };
        let log = raw.log.unwrap_or_default();
        let log_format = overrides
            .log_format
            .or_else(|| match env.get("FLOODGATE_LOG_FORMAT").map(String::as_str) {
                Some("json") => Some(LogFormat::Json),
                Some("pretty") => Some(LogFormat::Pretty),
                _ => None,
            })
            .or(log.format)
            .unwrap_or_default();
        let log_level = match (env.get("FLOODGATE_LOG"), log.level) {
            (Some(level), _) => {
                if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                    self.problem(None, format!("FLOODGATE_LOG={level:?} is not a log filter such as \"info\" or \"floodgate_core=debug,info\""));
                }
                level.clone()
            }
            (None, Some(level)) => {
                if tracing_subscriber::EnvFilter::try_new(level.get_ref()).is_err() {
                    self.problem(
                        Some(level.span()),
                        format!("log.level {:?} is not a log filter such as \"info\" or \"floodgate_core=debug,info\"", level.get_ref()),
                    );
                }
                level.into_inner()
            }
            (None, None) => "info".to_string(),
        };

        let state = self.state(raw.state.unwrap_or_default());
        let database = self.database(raw.database.unwrap_or_default(), env);
        let upstream = raw.upstream.unwrap_or_default();
        let from_file = !raw.providers.is_empty();
        let mut providers: Vec<ProviderConfig> =
            raw.providers.into_iter().filter_map(|p| self.provider(p, &upstream)).collect();
        let mut default_aliases = Vec::new();
        if !from_file {
            for (var, kind, alias) in ENV_PROVIDERS {
                if let Some(key) = env.get(var).filter(|k| !k.is_empty()) {
                    providers.push(provider_defaults(
                        kind,
                        kind.as_str(),
                        vec![key.clone()],
                        &upstream,
                    ));
                    default_aliases.push((alias.to_string(), kind.as_str().to_string()));
                }
            }
            if providers.is_empty() {
                providers.push(provider_defaults(
                    ProviderKind::Mock,
                    "mock",
                    Vec::new(),
                    &upstream,
                ));
                default_aliases.push((MOCK_ALIAS.to_string(), "mock".to_string()));
            }
        }
        let models = if raw.models.is_empty() {
            default_aliases
                .into_iter()
                .map(|(alias, provider)| {
                    ModelConfig::single(alias.clone(), TargetRef::new(provider, alias))
                })
                .collect()
        } else {
            self.models(raw.models, &providers)
        };
        let routing = self.routing(raw.routing.unwrap_or_default(), from_file);
        let alerts = self.alerts(raw.alerts.unwrap_or_default());
        let cache = raw.cache.map(|c| self.cache(c.into_inner())).unwrap_or_default();
        self.check_semantic_models(&models, &providers);
        let pricing = self.pricing(raw.pricing);
        let jwt = raw.auth.and_then(|a| a.jwt).and_then(|j| self.jwt(j));
        let queue = self.queue(raw.queue.unwrap_or_default(), &state, &database.url, env);
        let limits = self.limits(raw.limits.unwrap_or_default(), jwt.as_ref());
        let realtime = self.realtime(raw.realtime.unwrap_or_default());
        let telemetry = self.telemetry(raw.telemetry.unwrap_or_default(), env);
        Config {
            listen,
            master_key,
            allow_unauthenticated: overrides.allow_unauthenticated,
            server: ServerConfig {
                max_body_bytes,
                shutdown_grace: dur(server.shutdown_grace, Duration::from_secs(30)),
                drain_delay: dur(server.drain_delay, Duration::ZERO),
                compression: server.compression.unwrap_or(true),
                workers: match server.workers {
                    Some(w) if *w.get_ref() == 0 => {
                        self.problem(Some(w.span()), "server.workers must be at least 1");
                        1
                    }
                    Some(w) => *w.get_ref(),
                    None => crate::workers::default_count(),
                },
                max_in_flight: match server.max_in_flight {
                    Some(m) if *m.get_ref() == 0 => {
                        self.problem(Some(m.span()), "server.max_in_flight must be at least 1");
                        1
                    }
                    Some(m) => *m.get_ref(),
                    None => crate::pipeline::shed::default_max_in_flight(),
                },
                max_connections: match server.max_connections {
                    Some(m) if *m.get_ref() == 0 => {
                        self.problem(Some(m.span()), "server.max_connections must be at least 1");
                        1
                    }
                    Some(m) => *m.get_ref(),
                    None => crate::pipeline::shed::default_max_in_flight(),
                },
            },
            log: LogConfig { format: log_format, level: log_level },
            state,
            database,
            routing,
            providers,
            models,
            pricing,
            alerts,
            jwt,
            limits,
            cache,
            queue,
            realtime,
            telemetry,
        }
    }

    /// `[telemetry]`, with the standard OpenTelemetry variables as fallbacks
    /// for what the file leaves out (the OpenTelemetry convention: explicit
    /// configuration wins over the environment): `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// (used as it is), `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/traces`
    /// appended), `OTEL_SERVICE_NAME`; `OTEL_SDK_DISABLED=true` turns export off.
    fn telemetry(&mut self, raw: raw::RawTelemetry, env: &Env) -> Option<TelemetryConfig> {
        let endpoint = match raw.otlp_endpoint {
            // `otlp_endpoint = "${OTLP_ENDPOINT:-}"` with the variable unset.
            Some(url) if url.get_ref().trim().is_empty() => None,
            Some(url) => {
                let text = url.get_ref().trim();
                match otlp_url(text) {
                    Ok(uri) => Some(traces_url(text, &uri)),
                    Err(why) => {
                        self.problem(
                            Some(url.span()),
                            format!("telemetry.otlp_endpoint {text:?} {why}"),
                        );
                        None
                    }
                }
            }
            None => self.otlp_env_endpoint(env),
        };
        let protocol = match raw.otlp_protocol {
            None => OtlpProtocol::HttpProtobuf,
            Some(p) => match p.get_ref().trim() {
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                "http/json" => OtlpProtocol::HttpJson,
                "grpc" => {
                    self.problem(
                        Some(p.span()),
                        "telemetry.otlp_protocol \"grpc\" is not supported: export over HTTP with \
                         \"http/protobuf\" (a collector's port 4318) or \"http/json\"",
                    );
                    OtlpProtocol::HttpProtobuf
                }
                other => {
                    self.problem(
                        Some(p.span()),
                        format!(
                            "telemetry.otlp_protocol {other:?} is not an OTLP protocol; valid: \
                             \"http/protobuf\" (the default), \"http/json\""
                        ),
                    );
                    OtlpProtocol::HttpProtobuf
                }
            },
        };
        let mut headers = Vec::new();
        for (name, value) in raw.otlp_headers {
            // The value may be a credential: messages never show it.
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.problem(
                    Some(value.span()),
                    format!("telemetry.otlp_headers: {name:?} is not a valid HTTP header name"),
                );
            } else if http::HeaderValue::from_str(value.get_ref()).is_err() {
                self.problem(
                    Some(value.span()),
                    format!(
                        "telemetry.otlp_headers.{name}: the value is not a valid HTTP header value \
                         (visible ASCII only, no line breaks)"
                    ),
                );
            } else {
                headers.push((name, SecretString::from(value.into_inner())));
            }
        }
        let timeout = self.positive_duration(
            raw.otlp_timeout,
            "telemetry.otlp_timeout",
            Duration::from_secs(10),
        );
        let service_name = match raw.service_name {
            Some(name) if name.get_ref().trim().is_empty() => {
                self.problem(
                    Some(name.span()),
                    "telemetry.service_name is empty; leave it out for \"floodgate\"",
                );
                "floodgate".to_string()
            }
            Some(name) => name.get_ref().trim().to_string(),
            None => env
                .get("OTEL_SERVICE_NAME")
                .map(|n| n.trim())
                .filter(|n| !n.is_empty())
                .unwrap_or("floodgate")
                .to_string(),
        };
        let sample_ratio = self.share(raw.sample_ratio, "telemetry.sample_ratio", 1.0, true);
        let disabled = env.get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        Some(TelemetryConfig {
            endpoint: endpoint.filter(|_| !disabled)?,
            protocol,
            headers,
            timeout,
            service_name,
            sample_ratio,
        })
    }

    /// The traces URL from the standard variables, when the file has none.
    fn otlp_env_endpoint(&mut self, env: &Env) -> Option<String> {
        for (var, base) in
            [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", false), ("OTEL_EXPORTER_OTLP_ENDPOINT", true)]
        {
            let Some(text) = env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
                continue;
            };
            return match otlp_url(text) {
                // A base URL gets the traces path whatever its own path is.
                Ok(_) if base => Some(format!("{}/v1/traces", text.trim_end_matches('/'))),
                Ok(_) => Some(text.to_string()),
                Err(why) => {
                    self.problem(None, format!("{var}={text:?} {why}"));
                    None
                }
            };
        }
        None
    }

    fn realtime(&mut self, raw: raw::RawRealtime) -> RealtimeConfig {
        let defaults = RealtimeConfig::default();
        let max_connections = self.at_least_one(
            raw.max_connections,
            "realtime.max_connections",
            defaults.max_connections,
        );
        let max_subscriptions = self.at_least_one(
            raw.max_subscriptions,
            "realtime.max_subscriptions",
            defaults.max_subscriptions,
        );
        let send_buffer =
            self.at_least_one(raw.send_buffer, "realtime.send_buffer", defaults.send_buffer);
        let max_message_bytes = match raw.max_message_bytes {
            Some(v) if *v.get_ref() < 256 || *v.get_ref() > 16 * 1024 * 1024 => {
                self.problem(
                    Some(v.span()),
                    "realtime.max_message_bytes must be from 256 to 16777216 (16 MiB)",
                );
                defaults.max_message_bytes
            }
            Some(v) => *v.get_ref(),
            None => defaults.max_message_bytes,
        };
        let ping_interval = self.positive_duration(
            raw.ping_interval,
            "realtime.ping_interval",
            defaults.ping_interval,
        );
        let ping_timeout = self.positive_duration(
            raw.ping_timeout,
            "realtime.ping_timeout",
            defaults.ping_timeout,
        );
        let history = |this: &mut Self, v: Option<Spanned<usize>>, d: usize| match v {
            Some(v) if *v.get_ref() > 10_000 => {
                this.problem(
                    Some(v.span()),
                    "history_size must be at most 10000 messages (0 keeps no history)",
                );
                d
            }
            Some(v) => *v.get_ref(),
            None => d,
        };
        let default_room = RoomOptions {
            history_size: history(self, raw.history_size, defaults.default_room.history_size),
            history_ttl: self.positive_duration(
                raw.history_ttl,
                "realtime.history_ttl",
                defaults.default_room.history_ttl,
            ),
            presence: raw.presence.unwrap_or(defaults.default_room.presence),
        };
        let mut rooms = Vec::new();
        for rule in raw.rooms {
            let pattern = rule.pattern.get_ref().clone();
            if let Err(message) = crate::realtime::check_pattern(&pattern) {
                self.problem(
                    Some(rule.pattern.span()),
                    format!("realtime.rooms.pattern: {message}"),
                );
            }
            let options = RoomOptions {
                history_size: history(self, rule.history_size, default_room.history_size),
                history_ttl: self.positive_duration(
                    rule.history_ttl,
                    "realtime.rooms.history_ttl",
                    default_room.history_ttl,
                ),
                presence: rule.presence.unwrap_or(default_room.presence),
            };
            rooms.push(RoomRule { pattern, options });
        }
        let user_rooms = match raw.user_rooms {
            None => defaults.user_rooms,
            Some(list) => {
                let mut patterns = Vec::new();
                for p in list {
                    if let Err(message) =
                        crate::realtime::check_pattern(&p.get_ref().replace("{sub}", "x"))
                    {
                        self.problem(Some(p.span()), format!("realtime.user_rooms: {message}"));
                    }
                    patterns.push(p.into_inner());
                }
                patterns
            }
        };
        RealtimeConfig {
            enabled: raw.enabled.unwrap_or(true),
            max_connections,
            max_connections_per_key: raw
                .max_connections_per_key
                .map_or(defaults.max_connections_per_key, Spanned::into_inner),
            max_subscriptions,
            send_buffer,
            max_message_bytes,
            ping_interval,
            ping_timeout,
            default_room,
            rooms,
            user_rooms,
        }
    }

    fn queue(
        &mut self,
        raw: raw::RawQueue,
        state: &StateConfig,
        database_url: &str,
        env: &Env,
    ) -> QueueConfig {
        let defaults = QueueConfig::defaults(state.backend, database_url);
        let backend = match raw.backend {
            None => defaults.backend,
            Some(b) => match b.get_ref() {
                raw::QueueBackendKind::Auto => defaults.backend,
                raw::QueueBackendKind::Sqlite => QueueBackend::Sqlite,
                raw::QueueBackendKind::Redis => {
                    if state.backend != StateBackendKind::Redis {
                        self.problem(
                            Some(b.span()),
                            "queue.backend = \"redis\" needs [state] backend = \"redis\" (and its \
                             redis_url); or use \"sqlite\" (or \"auto\") on a single node",
                        );
                    }
                    QueueBackend::Redis
                }
            },
        };
        let sqlite_url = match raw.path {
            None => defaults.sqlite_url,
            Some(p) if p.get_ref().trim().is_empty() => {
                self.problem(
                    Some(p.span()),
                    "queue.path is empty; give a file such as \"floodgate-jobs.db\"",
                );
                defaults.sqlite_url
            }
            Some(p) => {
                let path = p.into_inner();
                if path.starts_with("sqlite:") { path } else { format!("sqlite://{path}") }
            }
        };
        let lease = self.positive_duration(raw.lease, "queue.lease", defaults.lease);
        if lease < Duration::from_secs(1) {
            self.problem(
                None,
                "queue.lease must be at least 1s (workers heartbeat every third of it)",
            );
        }
        let retry_base =
            self.positive_duration(raw.retry_base, "queue.retry_base", defaults.retry_base);
        let retry_max =
            self.positive_duration(raw.retry_max, "queue.retry_max", defaults.retry_max);
        let max_attempts_cap = self.at_least_one(
            raw.max_attempts_cap,
            "queue.max_attempts_cap",
            defaults.max_attempts_cap,
        );
        let max_attempts = match raw.max_attempts {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > max_attempts_cap => {
                self.problem(
                    Some(v.span()),
                    format!("queue.max_attempts must be from 1 to queue.max_attempts_cap ({max_attempts_cap})"),
                );
                defaults.max_attempts.min(max_attempts_cap)
            }
            Some(v) => *v.get_ref(),
            None => defaults.max_attempts.min(max_attempts_cap),
        };
        let webhook_secret = match raw.webhook_secret {
            Some(s) if s.get_ref().len() < 16 => {
                self.problem(
                    Some(s.span()),
                    "queue.webhook_secret must be at least 16 characters (use ${FLOODGATE_WEBHOOK_SECRET})",
                );
                None
            }
            Some(s) => Some(SecretString::from(s.into_inner())),
            None => env
                .get("FLOODGATE_WEBHOOK_SECRET")
                .filter(|s| s.len() >= 16)
                .map(|s| SecretString::from(s.clone())),
        };
        QueueConfig {
            backend,
            sqlite_url,
            workers: raw.workers.map_or(defaults.workers, Spanned::into_inner),
            lease,
            poll_interval: self.positive_duration(
                raw.poll_interval,
                "queue.poll_interval",
                defaults.poll_interval,
            ),
            retry_base,
            retry_max: retry_max.max(retry_base),
            max_attempts,
            max_attempts_cap,
            max_wait: raw.max_wait.map_or(defaults.max_wait, |d| d.into_inner().0),
            result_ttl: self.positive_duration(
                raw.result_ttl,
                "queue.result_ttl",
                defaults.result_ttl,
            ),
            history_ttl: raw.history_ttl.map_or(defaults.history_ttl, |d| d.into_inner().0),
            webhook_secret,
            webhook_timeout: self.positive_duration(
                raw.webhook_timeout,
                "queue.webhook_timeout",
                defaults.webhook_timeout,
            ),
            webhook_attempts: self.at_least_one(
                raw.webhook_attempts,
                "queue.webhook_attempts",
                defaults.webhook_attempts,
            ),
        }
    }

    fn routing(&mut self, raw: raw::RawRouting, from_file: bool) -> RoutingConfig {
        let retry_on = match raw.retry_on {
            Some(list) => self.retry_on(list, "routing.retry_on"),
            None => RetryOn::ALL,
        };
        let ratio = self.share(raw.retry_budget, "routing.retry_budget", 0.2, true);
        let min_per_second = match raw.retry_budget_min_per_second {
            Some(v) if !v.get_ref().is_finite() || *v.get_ref() < 0.0 => {
                self.problem(
                    Some(v.span()),
                    "routing.retry_budget_min_per_second must be a number >= 0, e.g. 1",
                );
                1.0
            }
            Some(v) => *v.get_ref(),
            None => 1.0,
        };
        let window = self.positive_duration(
            raw.retry_budget_window,
            "routing.retry_budget_window",
            Duration::from_secs(10),
        );
        let breaker = raw.breaker.unwrap_or_default();
        let consecutive_failures = match breaker.consecutive_failures {
            Some(v) if *v.get_ref() == 0 => {
                self.problem(
                    Some(v.span()),
                    "routing.breaker.consecutive_failures must be at least 1",
                );
                1
            }
            Some(v) => *v.get_ref(),
            None => 5,
        };
        let half_open_probes = match breaker.half_open_probes {
            Some(v) if *v.get_ref() == 0 => {
                self.problem(Some(v.span()), "routing.breaker.half_open_probes must be at least 1");
                1
            }
            Some(v) => *v.get_ref(),
            None => 1,
        };
        let breaker = BreakerConfig {
            consecutive_failures,
            error_rate: self.share(breaker.error_rate, "routing.breaker.error_rate", 0.5, false),
            min_requests: breaker.min_requests.unwrap_or(20),
            window: self.positive_duration(
                breaker.window,
                "routing.breaker.window",
                Duration::from_secs(30),
            ),
            cooldown: dur(breaker.cooldown, Duration::from_secs(30)),
            half_open_probes,
        };
        let wait = raw.wait.unwrap_or_default();
        let default_priority = match wait.default_priority {
            Some(v) if *v.get_ref() > 10 => {
                self.problem(Some(v.span()), "routing.wait.default_priority must be 0 to 10");
                5
            }
            Some(v) => *v.get_ref(),
            None => 5,
        };
        let max_wait_cap = dur(wait.max_wait_cap, Duration::from_secs(60));
        let wait = WaitConfig {
            max_wait: dur(wait.max_wait, Duration::from_secs(10)).min(max_wait_cap),
            max_wait_cap,
            max_waiting: wait.max_waiting.unwrap_or(1000),
            default_priority,
        };
        RoutingConfig {
            retries: raw.retries.unwrap_or(2),
            backoff_base: dur(raw.backoff_base, Duration::from_millis(200)),
            backoff_max: dur(raw.backoff_max, Duration::from_secs(5)),
            max_retry_after: dur(raw.max_retry_after, Duration::from_secs(30)),
            // With no models configured, `provider/model` is how to reach
            // anything beyond the default alias.
            allow_direct_targets: raw.allow_direct_targets.unwrap_or(!from_file),
            retry_on,
            retry_budget: RetryBudgetConfig { ratio, min_per_second, window },
            breaker,
            wait,
        }
    }

    fn retry_on(&mut self, list: Spanned<Vec<Spanned<String>>>, what: &str) -> RetryOn {
        let mut on = RetryOn { connect: false, timeout: false, server: false, rate_limited: false };
        for name in list.into_inner() {
            match name.get_ref().as_str() {
                "connect" => on.connect = true,
                "timeout" => on.timeout = true,
                "5xx" => on.server = true,
                "429" => on.rate_limited = true,
                other => self.problem(
                    Some(name.span()),
                    format!("{what}: {other:?} is not a failure class; valid: {}", RetryOn::NAMES),
                ),
            }
        }
        on
    }

    /// A share in `[0, 1]` (`zero_ok`) or `(0, 1]`.
    fn share(
        &mut self,
        value: Option<Spanned<f64>>,
        what: &str,
        default: f64,
        zero_ok: bool,
    ) -> f64 {
        match value {
            Some(v) => {
                let x = *v.get_ref();
                let ok = x.is_finite() && x <= 1.0 && (x > 0.0 || (zero_ok && x == 0.0));
                if !ok {
                    let range = if zero_ok { "0 to 1" } else { "above 0, at most 1" };
                    self.problem(Some(v.span()), format!("{what} must be {range}, e.g. {default}"));
                    default
                } else {
                    x
                }
            }
            None => default,
        }
    }

    /// A count that must be at least 1; a 0 is reported (with its line) and
    /// the default used.
    fn at_least_one<T: Copy + Default + PartialEq>(
        &mut self,
        value: Option<Spanned<T>>,
        what: &str,
        default: T,
    ) -> T {
        match value {
            Some(v) if *v.get_ref() == T::default() => {
                self.problem(Some(v.span()), format!("{what} must be at least 1"));
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }

    fn positive_duration(
        &mut self,
        value: Option<Spanned<HumanDuration>>,
        what: &str,
        default: Duration,
    ) -> Duration {
        match value {
            Some(v) if v.get_ref().0.is_zero() => {
                self.problem(Some(v.span()), format!("{what} must be longer than 0"));
                default
            }
            Some(v) => v.get_ref().0,
            None => default,
        }
    }

    fn alerts(&mut self, raw: raw::RawAlerts) -> AlertsConfig {
        let thresholds = match raw.thresholds {
            Some(list) => {
                let values = list.get_ref().clone();
                let ascending = values.windows(2).all(|w| w[0] < w[1]);
                if values.iter().any(|v| !v.is_finite() || *v <= 0.0 || *v > 1.0) || !ascending {
                    self.problem(
                        Some(list.span()),
                        "alerts.thresholds must be ascending shares above 0 and at most 1, \
                         e.g. [0.70, 0.85, 0.95]",
                    );
                }
                values
            }
            None => vec![0.70, 0.85, 0.95],
        };
        let webhook_url = raw.webhook_url.and_then(|url| {
            let text = url.get_ref().trim().to_string();
            if text.is_empty() {
                // `webhook_url = "${ALERT_HOOK:-}"` with the variable unset.
                return None;
            }
            if !(text.starts_with("http://") || text.starts_with("https://"))
                || text.parse::<http::Uri>().is_err()
            {
                self.problem(
                    Some(url.span()),
                    format!(
                        "alerts.webhook_url {text:?} is not an http(s) URL such as \
                         \"https://hooks.example.com/floodgate\""
                    ),
                );
                return None;
            }
            Some(text)
        });
        AlertsConfig {
            thresholds,
            webhook_url,
            webhook_timeout: dur(raw.webhook_timeout, Duration::from_secs(5)),
        }
    }

    fn listen(&mut self, raw: &RawConfig, env: &Env, overrides: &Overrides) -> SocketAddr {
        if let Some(addr) = overrides.listen {
            return addr;
        }
        if let Some(text) = env.get("FLOODGATE_LISTEN") {
            match text.parse() {
                Ok(addr) => return addr,
                Err(_) => self.problem(
                    None,
                    format!("FLOODGATE_LISTEN={text:?} is not IP:PORT such as \"0.0.0.0:8080\""),
                ),
            }
        }
        match &raw.listen {
            Some(listen) => listen.get_ref().0,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }

    fn master_key(&mut self, raw: &RawConfig, env: &Env) -> Option<SecretString> {
        let from_env = env.get("FLOODGATE_MASTER_KEY").filter(|k| !k.is_empty());
        let key = match (&raw.master_key, from_env) {
            (_, Some(key)) => key.clone(),
            (Some(key), None) => {
                if key.get_ref().is_empty() {
                    // `master_key = "${FLOODGATE_MASTER_KEY:-}"` with the variable unset.
                    return None;
                }
                if key.get_ref().len() < 16 {
                    self.problem(
                        Some(key.span()),
                        "master_key is shorter than 16 characters; use a long random value \
                         (e.g. `openssl rand -hex 32`)",
                    );
                }
                key.get_ref().clone()
            }
            (None, None) => return None,
        };
        Some(SecretString::from(key))
    }

    fn state(&mut self, raw: raw::RawState) -> StateConfig {
        use crate::state::redis::Target;
        let backend = raw.backend.map_or(StateBackendKind::Memory, |b| *b.get_ref());
        let mode = raw.redis_mode.as_ref().map_or(RedisMode::Standalone, |m| *m.get_ref());
        let mode_span = raw.redis_mode.as_ref().map(Spanned::span);
        let redis_url = raw.redis_url.map(|url| {
            let text = url.get_ref().trim().to_string();
            if !is_redis_url(&text) {
                self.problem(
                    Some(url.span()),
                    format!(
                        "state.redis_url {text:?} is not a Redis URL such as \
                         \"redis://127.0.0.1:6379\" or \"rediss://user:pass@host:6380/0\""
                    ),
                );
            }
            (text, url.span())
        });
        let nodes = raw.redis_nodes.map(|list| {
            let span = list.span();
            let mut nodes = Vec::new();
            for node in list.into_inner() {
                let text = node.get_ref().trim().to_string();
                if !is_redis_url(&text) {
                    self.problem(
                        Some(node.span()),
                        format!(
                            "state.redis_nodes: {text:?} is not a Redis URL such as \
                             \"redis://10.0.0.1:6379\" or \"redis://:password@10.0.0.1:26379\""
                        ),
                    );
                } else if mode == RedisMode::Cluster && redis_db(&text) != 0 {
                    self.problem(
                        Some(node.span()),
                        format!(
                            "state.redis_nodes: {} names database {}, but a Redis Cluster has \
                             only database 0; drop the /{} from the URL",
                            crate::app::redact_url(&text),
                            redis_db(&text),
                            redis_db(&text)
                        ),
                    );
                }
                nodes.push(text);
            }
            (nodes, span)
        });
        let master = raw.redis_sentinel_master.map(|m| (m.get_ref().trim().to_string(), m.span()));
        let redis_prefix = raw.redis_prefix.map(|p| (p.get_ref().clone(), p.span()));
        let nodes_needed = |mode: &str, what: &str| {
            format!(
                "redis_mode = \"{mode}\" needs redis_nodes, {what}, e.g. \
                 redis_nodes = [\"redis://10.0.0.1:{port}\", \"redis://10.0.0.2:{port}\"]",
                port = if mode == "sentinel" { 26379 } else { 6379 }
            )
        };
        let redis = match mode {
            RedisMode::Standalone => {
                if let Some((_, span)) = &nodes {
                    self.problem(
                        Some(span.clone()),
                        "state.redis_nodes is for redis_mode = \"cluster\" or \"sentinel\"; \
                         a single Redis is redis_url",
                    );
                }
                if let Some((_, span)) = &master {
                    self.problem(
                        Some(span.clone()),
                        "state.redis_sentinel_master is for redis_mode = \"sentinel\"",
                    );
                }
                Target::Standalone(
                    redis_url.map_or_else(|| "redis://127.0.0.1:6379".to_string(), |(u, _)| u),
                )
            }
            RedisMode::Cluster => {
                if let Some((_, span)) = &redis_url {
                    self.problem(
                        Some(span.clone()),
                        "with redis_mode = \"cluster\" the cluster is found from redis_nodes \
                         (some of its nodes); remove redis_url",
                    );
                }
                if let Some((_, span)) = &master {
                    self.problem(
                        Some(span.clone()),
                        "state.redis_sentinel_master is for redis_mode = \"sentinel\"",
                    );
                }
                if let Some((prefix, span)) = &redis_prefix
                    && prefix.contains(['{', '}'])
                {
                    self.problem(
                        Some(span.clone()),
                        format!(
                            "state.redis_prefix {prefix:?}: in a Redis Cluster Floodgate adds its \
                             own hash tags (the queue under {{<prefix>q}}, the limiter under \
                             {{<prefix>limits}}), so the prefix must not contain {{ or }}"
                        ),
                    );
                }
                let nodes = nodes.map(|(n, _)| n).unwrap_or_default();
                if nodes.is_empty() {
                    self.problem(
                        mode_span.clone(),
                        nodes_needed("cluster", "some of the cluster's nodes"),
                    );
                }
                Target::Cluster(nodes)
            }
            RedisMode::Sentinel => {
                if let Some((_, span)) = &redis_url {
                    self.problem(
                        Some(span.clone()),
                        "with redis_mode = \"sentinel\" the primary is found through the \
                         sentinels in redis_nodes, named by redis_sentinel_master; remove redis_url",
                    );
                }
                let sentinels = nodes.map(|(n, _)| n).unwrap_or_default();
                if sentinels.is_empty() {
                    self.problem(mode_span.clone(), nodes_needed("sentinel", "the sentinels"));
                }
                let master = match master {
                    Some((name, _)) if !name.is_empty() => name,
                    Some((_, span)) => {
                        self.problem(
                            Some(span),
                            "state.redis_sentinel_master is empty; name the primary as the \
                             sentinels monitor it, e.g. \"mymaster\"",
                        );
                        String::new()
                    }
                    None => {
                        self.problem(
                            mode_span,
                            "redis_mode = \"sentinel\" needs redis_sentinel_master, the name the \
                             sentinels monitor the primary under (e.g. \"mymaster\")",
                        );
                        String::new()
                    }
                };
                Target::Sentinel { sentinels, master }
            }
        };
        let redis_prefix = redis_prefix.map_or_else(|| "floodgate:".to_string(), |(p, _)| p);
        StateConfig { backend, redis, redis_prefix }
    }

    fn database(&mut self, raw: raw::RawDatabase, env: &Env) -> DatabaseConfig {
        let read = (raw.read_url.clone(), raw.read_max_connections.clone());
        let url = match (env.get("FLOODGATE_DATABASE_URL"), &raw.url) {
            (Some(url), _) => {
                if !supported_database(url) {
                    self.problem(
                        None,
                        format!("FLOODGATE_DATABASE_URL: {}", unsupported_database(url)),
                    );
                }
                url.clone()
            }
            (None, Some(url)) => {
                if !supported_database(url.get_ref()) {
                    self.problem(
                        Some(url.span()),
                        format!("database.url: {}", unsupported_database(url.get_ref())),
                    );
                }
                url.get_ref().clone()
            }
            (None, None) => DEFAULT_DATABASE.to_string(),
        };
        let defaults = crate::store::PoolConfig::default();
        let max_connections = match raw.max_connections {
            Some(v) if *v.get_ref() == 0 => {
                self.problem(Some(v.span()), "database.max_connections must be at least 1");
                defaults.max_connections
            }
            Some(v) => *v.get_ref(),
            None => defaults.max_connections,
        };
        let min_connections = match raw.min_connections {
            Some(v) if *v.get_ref() > max_connections => {
                self.problem(
                    Some(v.span()),
                    format!(
                        "database.min_connections ({}) must not exceed max_connections ({max_connections})",
                        v.get_ref()
                    ),
                );
                0
            }
            Some(v) => *v.get_ref(),
            None => defaults.min_connections,
        };
        // "0s" turns the idle timeout and the lifetime off.
        let off_if_zero = |d: Duration| (!d.is_zero()).then_some(d);
        let pool = crate::store::PoolConfig {
            max_connections,
            min_connections,
            idle_timeout: raw.idle_timeout.map_or(defaults.idle_timeout, |d| off_if_zero(d.0)),
            max_lifetime: raw.max_lifetime.map_or(defaults.max_lifetime, |d| off_if_zero(d.0)),
            acquire_timeout: self.positive_duration(
                raw.acquire_timeout,
                "database.acquire_timeout",
                defaults.acquire_timeout,
            ),
            test_before_acquire: raw.test_before_acquire.unwrap_or(defaults.test_before_acquire),
        };
        let ledger_buffer = match raw.ledger_buffer {
            Some(v) if *v.get_ref() == 0 => {
                self.problem(
                    Some(v.span()),
                    "database.ledger_buffer must be at least 1, e.g. 65536",
                );
                65536
            }
            Some(v) => *v.get_ref(),
            None => 65536,
        };
        let ledger_spill_path = raw.ledger_spill_path.map_or_else(
            || std::path::PathBuf::from(DEFAULT_SPILL),
            |p| std::path::PathBuf::from(p.into_inner()),
        );
        let ledger_journal = raw.ledger_journal.unwrap_or(true);
        let read = self.read_replica(read.0, read.1, &url, &pool);
        DatabaseConfig { url, pool, read, ledger_buffer, ledger_spill_path, ledger_journal }
    }

    /// `read_url` and its pool: a PostgreSQL replica for the admin reads.
    fn read_replica(
        &mut self,
        read_url: Option<Spanned<String>>,
        read_max_connections: Option<Spanned<u32>>,
        url: &str,
        pool: &crate::store::PoolConfig,
    ) -> Option<crate::store::ReadReplica> {
        let Some(read_url) = read_url else {
            if let Some(v) = &read_max_connections {
                self.problem(
                    Some(v.span()),
                    "database.read_max_connections sizes the read_url pool; set read_url too",
                );
            }
            return None;
        };
        let text = read_url.get_ref().trim().to_string();
        let postgres = |u: &str| u.starts_with("postgres://") || u.starts_with("postgresql://");
        if !postgres(&text) {
            self.problem(
                Some(read_url.span()),
                format!(
                    "database.read_url: {}; a read replica is \"postgres://user:password@replica:5432/database\"",
                    unsupported_database(&text)
                ),
            );
            return None;
        }
        if !postgres(url) {
            self.problem(
                Some(read_url.span()),
                "database.read_url is a PostgreSQL read replica, but database.url is SQLite, \
                 which has none; remove read_url, or move database.url to PostgreSQL",
            );
            return None;
        }
        let max_connections = match &read_max_connections {
            Some(v) if *v.get_ref() == 0 => {
                self.problem(Some(v.span()), "database.read_max_connections must be at least 1");
                pool.max_connections
            }
            Some(v) => *v.get_ref(),
            None => pool.max_connections,
        };
        Some(crate::store::ReadReplica {
            url: text,
            pool: crate::store::PoolConfig {
                max_connections,
                min_connections: pool.min_connections.min(max_connections),
                ..pool.clone()
            },
        })
    }

    fn jwt(&mut self, raw: Spanned<raw::RawJwt>) -> Option<crate::pipeline::jwt::JwtConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let secret = raw.hs256_secret.filter(|s| !s.get_ref().is_empty());
        if let Some(s) = &secret
            && s.get_ref().len() < 32
        {
            self.problem(
                Some(s.span()),
                "auth.jwt.hs256_secret must be at least 32 characters (RFC 7518 asks for a key as \
                 long as the hash, 256 bits)",
            );
        }
        let jwks_url = match raw.jwks_url.filter(|u| !u.get_ref().is_empty()) {
            Some(url) => {
                let text = url.get_ref().trim().to_string();
                if !(text.starts_with("http://") || text.starts_with("https://"))
                    || text.parse::<http::Uri>().is_err()
                {
                    self.problem(
                        Some(url.span()),
                        format!(
                            "auth.jwt.jwks_url {text:?} is not an http(s) URL such as \
                             \"https://auth.example.com/.well-known/jwks.json\""
                        ),
                    );
                }
                Some(text)
            }
            None => None,
        };
        if secret.is_none() && jwks_url.is_none() {
            self.problem(
                Some(span),
                "[auth.jwt] needs hs256_secret (HS256) or jwks_url (RS256/ES256 keys), or both",
            );
            return None;
        }
        let jwks_refresh = self.positive_duration(
            raw.jwks_refresh,
            "auth.jwt.jwks_refresh",
            Duration::from_secs(300),
        );
        Some(crate::pipeline::jwt::JwtConfig {
            hs256_secret: secret.map(|s| SecretString::from(s.into_inner())),
            jwks_url,
            issuer: raw.issuer.filter(|i| !i.is_empty()),
            audience: match raw.audience {
                None => Vec::new(),
                Some(raw::StringOrList::One(a)) => vec![a],
                Some(raw::StringOrList::Many(list)) => list,
            },
            leeway: dur(raw.leeway, Duration::from_secs(30)),
            user_claim: raw.user_claim.unwrap_or_else(|| "sub".to_string()),
            tier_claim: raw.tier_claim,
            jwks_refresh,
        })
    }

    fn limits(
        &mut self,
        raw: raw::RawLimits,
        jwt: Option<&crate::pipeline::jwt::JwtConfig>,
    ) -> LimitsConfig {
        let mut trusted_proxies = Vec::new();
        for entry in raw.trusted_proxies.map(Spanned::into_inner).unwrap_or_default() {
            let text = entry.get_ref().trim();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.problem(
                    Some(entry.span()),
                    format!(
                        "limits.trusted_proxies: {text:?} is not an IP address or CIDR range such \
                         as \"10.0.0.0/8\", \"127.0.0.1\" or \"::1/128\""
                    ),
                ),
            }
        }
        let ip = raw.ip.and_then(|l| self.period_limit(l, "limits.ip"));
        let ip_ai = raw.ip_ai.and_then(|l| self.period_limit(l, "limits.ip_ai"));
        let user = raw.user.map(|u| self.user_limits(&u, "limits.user", None)).unwrap_or_default();
        let mut tiers = std::collections::BTreeMap::new();
        if !raw.tiers.is_empty() && jwt.is_none_or(|j| j.tier_claim.is_none()) {
            self.problem(
                None,
                "[limits.tiers.*] are chosen by a JWT claim: set auth.jwt.tier_claim (e.g. \"plan\")",
            );
        }
        for (name, tier) in raw.tiers {
            let span = tier.span();
            let limits =
                self.user_limits(tier.get_ref(), &format!("limits.tiers.{name}"), Some(span));
            tiers.insert(name, limits);
        }
        LimitsConfig {
            trusted_proxies,
            ip,
            ip_ai,
            user,
            tiers,
            concurrency_lease: dur(raw.concurrency_lease, Duration::from_secs(600)),
        }
    }

    fn period_limit(
        &mut self,
        raw: Spanned<raw::RawPeriodLimit>,
        what: &str,
    ) -> Option<crate::limiter::Rate> {
        let span = raw.span();
        let raw = raw.into_inner();
        match (raw.requests, raw.per) {
            (Some(0), _) => {
                self.problem(Some(span), format!("{what}.requests must be at least 1"));
                None
            }
            (Some(limit), Some(per)) if !per.0.is_zero() => {
                Some(crate::limiter::Rate { limit, period: per.0 })
            }
            _ => {
                self.problem(
                    Some(span),
                    format!(
                        "{what} needs requests and a per period longer than 0, e.g. \
                         {{ requests = 1000, per = \"15m\" }}"
                    ),
                );
                None
            }
        }
    }

    fn user_limits(
        &mut self,
        raw: &raw::RawUserLimits,
        what: &str,
        span: Option<Range<usize>>,
    ) -> UserLimits {
        if raw.rpm == Some(0) || raw.tpm == Some(0) || raw.max_concurrent == Some(0) {
            self.problem(
                span,
                format!("{what}: rpm, tpm and max_concurrent must be at least 1 (leave one out for no limit)"),
            );
        }
        UserLimits {
            rpm: raw.rpm.filter(|v| *v > 0),
            tpm: raw.tpm.filter(|v| *v > 0),
            max_concurrent: raw.max_concurrent.filter(|v| *v > 0),
        }
    }

    fn provider(&mut self, raw: RawProvider, upstream: &RawTimeouts) -> Option<ProviderConfig> {
        let name = raw.name.get_ref().clone();
        let kind = *raw.kind.get_ref();
        let mut ok = true;
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            self.problem(
                Some(raw.name.span()),
                format!("provider name {name:?} must be non-empty, without `/` or spaces"),
            );
            ok = false;
        }
        let base_url = match raw.base_url {
            Some(url) => {
                let text = url.get_ref().trim_end_matches('/').to_string();
                if let Some(message) = check_base_url(kind, &text) {
                    self.problem(Some(url.span()), format!("providers.{name}.base_url: {message}"));
                    ok = false;
                }
                Some(text)
            }
            None => default_base_url(kind).map(str::to_string),
        };
        if base_url.is_none() && kind == ProviderKind::OpenaiCompatible {
            self.problem(
                Some(raw.kind.span()),
                format!(
                    "provider {name:?} of kind \"openai-compatible\" needs base_url, \
                     e.g. \"http://localhost:11434/v1\" (include /v1, as the OpenAI SDK does)"
                ),
            );
            ok = false;
        }
        for limit in [&raw.daily_requests, &raw.daily_tokens].into_iter().flatten() {
            if *limit.get_ref() == 0 {
                self.problem(
                    Some(limit.span()),
                    "daily_requests and daily_tokens must be greater than 0 when set",
                );
                ok = false;
            }
        }
        let rpm = raw.rpm.as_ref().map(|v| *v.get_ref());
        let tpm = raw.tpm.as_ref().map(|v| *v.get_ref());
        let daily_requests = raw.daily_requests.as_ref().map(|v| *v.get_ref());
        let daily_tokens = raw.daily_tokens.as_ref().map(|v| *v.get_ref());
        let mut keys: Vec<KeyConfig> = Vec::new();
        for key in raw.keys {
            let span = key.span();
            match key.into_inner() {
                // Empty values come from optional `${VAR:-}` references: skip them.
                RawKey::Plain(secret) if secret.is_empty() => {}
                RawKey::Plain(secret) => keys.push(KeyConfig {
                    rpm,
                    tpm,
                    daily_requests,
                    daily_tokens,
                    ..KeyConfig::plain(secret)
                }),
                RawKey::Table(table) if table.key.is_empty() => {}
                RawKey::Table(table) => {
                    let zero32 =
                        [&table.rpm, &table.tpm].into_iter().flatten().any(|v| *v.get_ref() == 0);
                    let zero64 = [&table.daily_requests, &table.daily_tokens]
                        .into_iter()
                        .flatten()
                        .any(|v| *v.get_ref() == 0);
                    if zero32 || zero64 {
                        self.problem(
                            Some(span),
                            format!(
                                "provider {name:?}: a key's rpm, tpm, daily_requests and \
                                 daily_tokens must be greater than 0 when set"
                            ),
                        );
                        ok = false;
                    }
                    keys.push(KeyConfig {
                        secret: SecretString::from(table.key),
                        rpm: table.rpm.map(|v| *v.get_ref()).or(rpm),
                        tpm: table.tpm.map(|v| *v.get_ref()).or(tpm),
                        daily_requests: table
                            .daily_requests
                            .map(|v| *v.get_ref())
                            .or(daily_requests),
                        daily_tokens: table.daily_tokens.map(|v| *v.get_ref()).or(daily_tokens),
                        priority: table.priority.unwrap_or(0),
                    });
                }
            }
        }
        let needs_keys =
            matches!(kind, ProviderKind::Openai | ProviderKind::Anthropic | ProviderKind::Gemini);
        if needs_keys && keys.is_empty() {
            self.problem(
                Some(raw.name.span()),
                format!(
                    "provider {name:?} of kind {:?} has no keys; add keys = [\"${{…_API_KEY}}\"] \
                     (empty values are skipped)",
                    kind.as_str()
                ),
            );
            ok = false;
        }
        for limit in [&raw.rpm, &raw.tpm].into_iter().flatten() {
            if *limit.get_ref() == 0 {
                self.problem(Some(limit.span()), "rpm and tpm must be greater than 0 when set");
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let mut config = provider_defaults(kind, &name, Vec::new(), upstream);
        config.base_url = base_url;
        config.keys = keys;
        config.rpm = rpm;
        config.tpm = tpm;
        config.daily_requests = daily_requests;
        config.daily_tokens = daily_tokens;
        config.headers = raw.headers.into_iter().collect();
        let t = &mut config.timeouts;
        t.connect = dur(raw.connect_timeout, t.connect);
        t.first_byte = dur(raw.first_byte_timeout, t.first_byte);
        t.chunk = dur(raw.chunk_timeout, t.chunk);
        t.total = dur(raw.total_timeout, t.total);
        config.http2_prior_knowledge = raw.http2_prior_knowledge.unwrap_or(false);
        Some(config)
    }

    fn models(
        &mut self,
        raw: Vec<raw::RawModel>,
        providers: &[ProviderConfig],
    ) -> Vec<ModelConfig> {
        let mut models: Vec<ModelConfig> = Vec::new();
        let provider_names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        for model in raw {
            let name = model.name.get_ref().clone();
            if name.is_empty() {
                self.problem(Some(model.name.span()), "models.name must not be empty");
                continue;
            }
            if models.iter().any(|m| m.name == name) {
                self.problem(Some(model.name.span()), format!("model {name:?} is defined twice"));
                continue;
            }
            if model.targets.get_ref().is_empty() {
                self.problem(
                    Some(model.targets.span()),
                    format!("model {name:?} has no targets; list at least one \"provider/model\""),
                );
                continue;
            }
            let targets = self.targets(model.targets.into_inner(), &provider_names);
            let mut rules = Vec::new();
            for rule in model.rules {
                if rule.targets.get_ref().is_empty() {
                    self.problem(
                        Some(rule.targets.span()),
                        format!("a rule of model {name:?} has no targets"),
                    );
                    continue;
                }
                if let (Some(min), Some(max)) = (rule.min_prompt_tokens, rule.max_prompt_tokens)
                    && min > max
                {
                    self.problem(
                        Some(rule.targets.span()),
                        format!(
                            "a rule of model {name:?} has min_prompt_tokens {min} above \
                             max_prompt_tokens {max}; it could never match"
                        ),
                    );
                }
                rules.push(RuleConfig {
                    max_prompt_tokens: rule.max_prompt_tokens,
                    min_prompt_tokens: rule.min_prompt_tokens,
                    tools: rule.tools,
                    images: rule.images,
                    targets: self.targets(rule.targets.into_inner(), &provider_names),
                });
            }
            let retry_on = model.retry_on.map(|list| self.retry_on(list, "models.retry_on"));
            let retry_budget =
                model.retry_budget.map(|v| self.share(Some(v), "models.retry_budget", 0.2, true));
            let hedge = match (model.hedge, model.hedge_after) {
                (Some(false), _) => None,
                (_, Some(after)) => Some(Hedge::After(after.0)),
                (Some(true), None) => Some(Hedge::P95),
                (None, None) => None,
            };
            let cache = model.cache.map(|c| self.model_cache(&name, c)).unwrap_or_default();
            models.push(ModelConfig {
                cache,
                name,
                targets,
                strategy: model.strategy.unwrap_or_default(),
                retries: model.retries,
                retry_on,
                backoff_base: model.backoff_base.map(|d| d.0),
                backoff_max: model.backoff_max.map(|d| d.0),
                retry_budget,
                hedge,
                rules,
            });
        }
        models
    }

    fn cache(&mut self, raw: raw::RawCache) -> CacheConfig {
        let defaults = CacheConfig::default();
        let mut route_ttl = Vec::new();
        for (route, ttl) in raw.route_ttl_seconds {
            if !CACHE_ROUTES.contains(&route.as_str()) {
                self.problem(
                    Some(ttl.span()),
                    format!(
                        "cache.route_ttl_seconds has an unknown route {route:?}; the routes are {}",
                        CACHE_ROUTES.join(", ")
                    ),
                );
                continue;
            }
            route_ttl.push((route, Duration::from_secs(*ttl.get_ref())));
        }
        let ttl = self.cache_ttl(raw.ttl_seconds, "cache.ttl_seconds").unwrap_or(defaults.ttl);
        let max_bytes = match raw.max_bytes {
            Some(v) if *v.get_ref() < 1 << 20 => {
                self.problem(
                    Some(v.span()),
                    "cache.max_bytes must be at least 1048576 (1 MiB), e.g. 268435456 for 256 MiB",
                );
                defaults.max_bytes
            }
            Some(v) => *v.get_ref(),
            None => defaults.max_bytes,
        };
        let max_entry_bytes = match raw.max_entry_bytes {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > max_bytes => {
                self.problem(
                    Some(v.span()),
                    format!(
                        "cache.max_entry_bytes must be between 1 and cache.max_bytes ({max_bytes})"
                    ),
                );
                defaults.max_entry_bytes
            }
            Some(v) => usize::try_from(*v.get_ref()).unwrap_or(usize::MAX),
            None => defaults.max_entry_bytes.min(usize::try_from(max_bytes).unwrap_or(usize::MAX)),
        };
        let l2_timeout = match raw.l2_timeout {
            Some(t) if t.get_ref().0.is_zero() => {
                self.problem(Some(t.span()), "cache.l2_timeout must be above zero, e.g. \"50ms\"");
                defaults.l2_timeout
            }
            Some(t) => t.get_ref().0,
            None => defaults.l2_timeout,
        };
        let semantic_max_entries = match raw.semantic_max_entries {
            Some(v) if *v.get_ref() == 0 => {
                self.problem(Some(v.span()), "cache.semantic_max_entries must be at least 1");
                defaults.semantic_max_entries
            }
            Some(v) => *v.get_ref(),
            None => defaults.semantic_max_entries,
        };
        CacheConfig {
            enabled: raw.enabled.unwrap_or(false),
            ttl,
            route_ttl,
            max_bytes,
            max_entry_bytes,
            namespace: raw.namespace.unwrap_or_default(),
            sampled: raw.sampled.unwrap_or(false),
            coalesce: raw.coalesce.unwrap_or(true),
            l2: raw.l2.unwrap_or(true),
            l2_timeout,
            semantic_max_entries,
        }
    }

    fn cache_ttl(&mut self, raw: Option<Spanned<u64>>, field: &str) -> Option<Duration> {
        let ttl = raw?;
        if *ttl.get_ref() == 0 {
            self.problem(
                Some(ttl.span()),
                format!("{field} must be at least 1 (seconds); to not cache, set enabled = false"),
            );
            return None;
        }
        Some(Duration::from_secs(*ttl.get_ref()))
    }

    fn model_cache(&mut self, alias: &str, raw: raw::RawModelCache) -> ModelCacheConfig {
        let semantic = raw.semantic.and_then(|semantic| {
            let span = semantic.span();
            let semantic = semantic.into_inner();
            let threshold = match semantic.threshold {
                Some(t)
                    if !(t.get_ref().is_finite() && *t.get_ref() > 0.0 && *t.get_ref() <= 1.0) =>
                {
                    self.problem(
                        Some(t.span()),
                        format!(
                            "models.cache.semantic.threshold of {alias:?} must be a cosine \
                             similarity above 0 and at most 1, e.g. 0.95"
                        ),
                    );
                    return None;
                }
                Some(t) => *t.get_ref() as f32,
                None => 0.95,
            };
            let embedding_model = semantic.embedding_model.get_ref().trim().to_string();
            if embedding_model.is_empty() {
                self.problem(Some(span), "models.cache.semantic.embedding_model must not be empty");
                return None;
            }
            self.semantic_spans.push((embedding_model.clone(), semantic.embedding_model.span()));
            Some(SemanticConfig { embedding_model, threshold })
        });
        ModelCacheConfig {
            enabled: raw.enabled,
            ttl: self.cache_ttl(raw.ttl_seconds, "models.cache.ttl_seconds"),
            namespace: raw.namespace,
            sampled: raw.sampled,
            semantic,
        }
    }

    /// Each semantic cache's embedding model is an alias or a `provider/model`.
    fn check_semantic_models(&mut self, models: &[ModelConfig], providers: &[ProviderConfig]) {
        for (name, span) in std::mem::take(&mut self.semantic_spans) {
            let alias = models.iter().any(|m| m.name == name);
            let direct = name
                .split_once('/')
                .is_some_and(|(provider, _)| providers.iter().any(|p| p.name == provider));
            if !alias && !direct {
                let aliases: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                self.problem(
                    Some(span),
                    format!(
                        "models.cache.semantic.embedding_model {name:?} is neither a model alias \
                         ({}) nor \"provider/model\" of a configured provider",
                        aliases.join(", ")
                    ),
                );
            }
        }
    }

    fn targets(&mut self, raw: Vec<Spanned<RawTarget>>, provider_names: &[&str]) -> Vec<TargetRef> {
        let mut targets = Vec::new();
        for target in raw {
            let span = target.span();
            let text = target.get_ref().name();
            let weight = target.get_ref().weight();
            if weight == Some(0) {
                self.problem(
                    Some(span.clone()),
                    format!("target {text:?} has weight 0; weights are at least 1"),
                );
            }
            match text.split_once('/') {
                Some((provider, upstream_model))
                    if provider_names.contains(&provider) && !upstream_model.is_empty() =>
                {
                    targets.push(TargetRef {
                        provider: provider.to_string(),
                        model: upstream_model.to_string(),
                        weight: weight.unwrap_or(1).max(1),
                    });
                }
                Some((provider, upstream_model)) if !upstream_model.is_empty() => self.problem(
                    Some(span),
                    format!(
                        "target {text:?} names provider {provider:?}, which is not defined; \
                         defined providers: {}",
                        provider_names.join(", ")
                    ),
                ),
                _ => self.problem(
                    Some(span),
                    format!(
                        "target {text:?} is not \"provider/model\" (e.g. \"openai/gpt-4o-mini\")"
                    ),
                ),
            }
        }
        targets
    }

    fn pricing(&mut self, raw: Vec<raw::RawPrice>) -> Vec<PriceConfig> {
        let mut out = Vec::new();
        for price in raw {
            let values = [
                Some(price.input_usd_per_mtok),
                Some(price.output_usd_per_mtok),
                price.cache_read_usd_per_mtok,
            ];
            if values.into_iter().flatten().any(|v| !v.is_finite() || v < 0.0) {
                self.problem(
                    Some(price.model.span()),
                    format!(
                        "pricing for {:?}: prices must be finite and >= 0",
                        price.model.get_ref()
                    ),
                );
                continue;
            }
            out.push(PriceConfig {
                model: price.model.into_inner(),
                input_usd_per_mtok: price.input_usd_per_mtok,
                output_usd_per_mtok: price.output_usd_per_mtok,
                cache_read_usd_per_mtok: price.cache_read_usd_per_mtok,
            });
        }
        out
    }
}

fn is_redis_url(text: &str) -> bool {
    text.starts_with("redis://") || text.starts_with("rediss://")
}

/// The database number in a Redis URL's path (0 when none).
fn redis_db(url: &str) -> i64 {
    use redis::IntoConnectionInfo;
    url.into_connection_info().map_or(0, |info| info.redis_settings().db())
}

fn supported_database(url: &str) -> bool {
    url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Names the scheme only: the URL may hold a password.
fn unsupported_database(url: &str) -> String {
    let scheme = url.split(':').next().unwrap_or_default();
    format!(
        "the {scheme:?} database is not supported; valid: \"sqlite://path/to/file.db\", \
         \"sqlite::memory:\" or \"postgres://user:password@host:5432/database\""
    )
}

fn dur(value: Option<HumanDuration>, default: Duration) -> Duration {
    value.map_or(default, |v| v.0)
}

fn default_base_url(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::Openai => Some("https://api.openai.com/v1"),
        ProviderKind::Anthropic => Some("https://api.anthropic.com"),
        ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
        ProviderKind::OpenaiCompatible | ProviderKind::Mock => None,
    }
}

/// Checks a base URL against the provider SDK's convention.
fn check_base_url(kind: ProviderKind, url: &str) -> Option<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(format!(
            "{url:?} is not an http(s) URL such as \"https://api.openai.com/v1\""
        ));
    };
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.starts_with('/') {
        return Some(format!(
            "{url:?} is not an http(s) URL such as \"https://api.openai.com/v1\""
        ));
    }
    let ends_v1 = url.ends_with("/v1");
    match kind {
        ProviderKind::Anthropic if ends_v1 => Some(format!(
            "{url:?} ends with /v1, but Anthropic base URLs do not include it (as in the Anthropic \
             SDK); write {:?}",
            url.trim_end_matches("/v1")
        )),
        ProviderKind::Gemini if ends_v1 || url.ends_with("/v1beta") => Some(format!(
            "{url:?} includes the API version, but Gemini base URLs do not (as in the Google GenAI \
             SDK); write {:?}",
            url.trim_end_matches("/v1beta").trim_end_matches("/v1")
        )),
        _ => None,
    }
}

fn provider_defaults(
    kind: ProviderKind,
    name: &str,
    keys: Vec<String>,
    upstream: &RawTimeouts,
) -> ProviderConfig {
    ProviderConfig {
        name: name.to_string(),
        kind,
        base_url: default_base_url(kind).map(str::to_string),
        keys: keys.into_iter().map(KeyConfig::plain).collect(),
        rpm: None,
        tpm: None,
        daily_requests: None,
        daily_tokens: None,
        headers: Vec::new(),
        timeouts: Timeouts {
            connect: dur(upstream.connect_timeout, Duration::from_secs(10)),
            first_byte: dur(upstream.first_byte_timeout, Duration::from_secs(300)),
            chunk: dur(upstream.chunk_timeout, Duration::from_secs(120)),
            total: dur(upstream.total_timeout, Duration::from_secs(600)),
        },
        pool_idle_timeout: dur(upstream.pool_idle_timeout, Duration::from_secs(90)),
        pool_max_idle_per_host: upstream.pool_max_idle_per_host.unwrap_or(256),
        http2_prior_knowledge: false,
    }
}

impl Config {
    /// Defaults with no file: what `floodgate serve` runs with no `--config`.
    pub fn defaults(env: &Env) -> Result<Config, ConfigError> {
        from_text("", "defaults", env, &Overrides::default())
    }
}

#[cfg(test)]
mod tests;
