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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub max_body_bytes: Option<Spanned<u64>>,
    pub shutdown_grace: Option<HumanDuration>,
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
    pub redis_url: Option<Spanned<String>>,
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

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub retries: Option<u32>,
    pub backoff_base: Option<HumanDuration>,
    pub backoff_max: Option<HumanDuration>,
    pub max_retry_after: Option<HumanDuration>,
    pub allow_direct_targets: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: Spanned<String>,
    pub kind: Spanned<ProviderKind>,
    pub base_url: Option<Spanned<String>>,
    #[serde(default)]
    pub keys: Vec<Spanned<String>>,
    pub rpm: Option<Spanned<u32>>,
    pub tpm: Option<Spanned<u32>>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: Spanned<String>,
    pub targets: Spanned<Vec<Spanned<String>>>,
    pub retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub enabled: Option<bool>,
    #[expect(
        dead_code,
        reason = "accepted so a config written for the cache parses with it disabled"
    )]
    pub ttl_seconds: Option<u64>,
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
