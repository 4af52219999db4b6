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
use raw::{HumanDuration, RawConfig, RawProvider, RawTimeouts};
pub use raw::{LogFormat, ProviderKind, StateBackendKind};

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
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests and streams.
    pub shutdown_grace: Duration,
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

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub backend: StateBackendKind,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created when missing) or `sqlite::memory:`.
    pub url: String,
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
    pub keys: Vec<SecretString>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub headers: Vec<(String, String)>,
    pub timeouts: Timeouts,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// HTTP/2 without TLS (h2c prior knowledge) to a plain `http://` upstream.
    pub http2_prior_knowledge: bool,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub targets: Vec<TargetRef>,
    /// Overrides [`RoutingConfig::retries`] for this alias.
    pub retries: Option<u32>,
}

/// `provider/model`, split at the first `/` (upstream model names may
/// contain `/`, e.g. `meta-llama/Llama-3.1-8B-Instruct`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    pub provider: String,
    pub model: String,
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
    let mut builder = Builder { file, text: &substituted, problems: Vec::new() };
    let config = builder.build(raw, env, overrides);
    if builder.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(builder.problems))
    }
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

const DEFAULT_DATABASE: &str = "sqlite://floodgate.db";

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
                .map(|(alias, provider)| ModelConfig {
                    targets: vec![TargetRef { provider, model: alias.clone() }],
                    name: alias,
                    retries: None,
                })
                .collect()
        } else {
            self.models(raw.models, &providers)
        };
        let routing = raw.routing.unwrap_or_default();
        let routing = RoutingConfig {
            retries: routing.retries.unwrap_or(2),
            backoff_base: dur(routing.backoff_base, Duration::from_millis(200)),
            backoff_max: dur(routing.backoff_max, Duration::from_secs(5)),
            max_retry_after: dur(routing.max_retry_after, Duration::from_secs(30)),
            // With no models configured, `provider/model` is how to reach
            // anything beyond the default alias.
            allow_direct_targets: routing.allow_direct_targets.unwrap_or(!from_file),
        };
        if let Some(cache) = raw.cache
            && cache.get_ref().enabled == Some(true)
        {
            self.problem(
                Some(cache.span()),
                "[cache] enabled = true: the response cache is not available in this version; \
                 remove [cache] or set enabled = false",
            );
        }
        let pricing = self.pricing(raw.pricing);
        Config {
            listen,
            master_key,
            allow_unauthenticated: overrides.allow_unauthenticated,
            server: ServerConfig {
                max_body_bytes,
                shutdown_grace: dur(server.shutdown_grace, Duration::from_secs(30)),
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
        let backend = match raw.backend {
            Some(b) if *b.get_ref() == StateBackendKind::Redis => {
                self.problem(
                    Some(b.span()),
                    "state.backend = \"redis\" is not available in this version; valid: \"memory\"",
                );
                StateBackendKind::Memory
            }
            Some(b) => *b.get_ref(),
            None => StateBackendKind::Memory,
        };
        // `redis_url` with the memory backend is accepted and unused: a config
        // ready to switch backends, as DESIGN.md's example writes it.
        let _ = raw.redis_url;
        StateConfig { backend }
    }

    fn database(&mut self, raw: raw::RawDatabase, env: &Env) -> DatabaseConfig {
        if let Some(url) = env.get("FLOODGATE_DATABASE_URL") {
            if !url.starts_with("sqlite:") {
                self.problem(
                    None,
                    format!(
                        "FLOODGATE_DATABASE_URL: {}",
                        unsupported_database(url.split(':').next().unwrap_or_default())
                    ),
                );
            }
            return DatabaseConfig { url: url.clone() };
        }
        let Some(url) = raw.url else {
            return DatabaseConfig { url: DEFAULT_DATABASE.to_string() };
        };
        if !url.get_ref().starts_with("sqlite:") {
            let scheme = url.get_ref().split(':').next().unwrap_or_default().to_string();
            self.problem(
                Some(url.span()),
                format!("database.url: {}", unsupported_database(&scheme)),
            );
        }
        DatabaseConfig { url: url.into_inner() }
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
        // Empty values come from optional `${VAR:-}` references: skip them.
        let keys: Vec<SecretString> = raw
            .keys
            .iter()
            .filter(|k| !k.get_ref().is_empty())
            .map(|k| SecretString::from(k.get_ref().clone()))
            .collect();
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
        config.rpm = raw.rpm.map(|v| *v.get_ref());
        config.tpm = raw.tpm.map(|v| *v.get_ref());
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
            let mut targets = Vec::new();
            for target in model.targets.get_ref() {
                match target.get_ref().split_once('/') {
                    Some((provider, upstream_model))
                        if provider_names.contains(&provider) && !upstream_model.is_empty() =>
                    {
                        targets.push(TargetRef {
                            provider: provider.to_string(),
                            model: upstream_model.to_string(),
                        });
                    }
                    Some((provider, upstream_model)) if !upstream_model.is_empty() => self.problem(
                        Some(target.span()),
                        format!(
                            "target {:?} names provider {provider:?}, which is not defined; \
                             defined providers: {}",
                            target.get_ref(),
                            provider_names.join(", ")
                        ),
                    ),
                    _ => self.problem(
                        Some(target.span()),
                        format!(
                            "target {:?} is not \"provider/model\" (e.g. \"openai/gpt-4o-mini\")",
                            target.get_ref()
                        ),
                    ),
                }
            }
            models.push(ModelConfig { name, targets, retries: model.retries });
        }
        models
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

fn unsupported_database(scheme: &str) -> String {
    format!(
        "the {scheme:?} database is not available in this version; valid: \
         \"sqlite://path/to/file.db\" or \"sqlite::memory:\""
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
        keys: keys.into_iter().map(SecretString::from).collect(),
        rpm: None,
        tpm: None,
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
