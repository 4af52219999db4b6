//! Model aliases → targets, and everything a request goes through to reach
//! one: routing rules, the balancing strategy's order, circuit breakers per
//! target and per key on each target, key pools, waiting for capacity, the
//! retry policy and its budget, and hedging.
//!
//! The life of a routed request (`attempt.rs` runs it):
//! 1. `rules.rs` picks the alias's rule whose conditions hold, or its targets.
//! 2. `balance::order` orders them by the alias's strategy.
//! 3. Admission: the first target, in that order, whose breaker lets a call
//!    through and whose pool has a key with room, reserves it. When every
//!    target is only *full* (not failing), the request waits in the alias's
//!    `WaitQueue`, highest priority first, until capacity frees or its
//!    deadline passes (then 429).
//! 4. The call. A failure is classified once (`ProviderError::disposition`):
//!    retried on the same target with full-jitter backoff (honouring
//!    `retry-after`) when the policy retries that class, else the next
//!    target; every call after a request's first takes from the alias's retry
//!    budget, so an outage cannot multiply upstream load.
//! 5. Breakers and latency statistics learn from the outcome.
//!
//! A streamed request commits to a target only when its first chunk has
//! arrived: before that, a failure falls back exactly like a non-streamed one,
//! because nothing has reached the client yet.

mod attempt;
pub mod backoff;
pub mod balance;
pub mod breaker;
pub mod budget;
pub mod estimate;
mod rules;
pub mod wait;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_protocol::{
    ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, StreamChunk,
};

pub use backoff::Backoff;
use balance::{StatsSnapshot, TargetStats};
use breaker::{Breaker, BreakerLabels, BreakerSnapshot};
use budget::{BudgetSnapshot, RetryBudget};
use estimate::Tokenizer;
use rules::Rule;
use wait::{CapacitySignal, WaitQueue};

use crate::config::{
    BreakerConfig, Config, Hedge, ModelConfig, RetryOn, RoutingConfig, Strategy, TargetRef,
};
use crate::providers::{
    ClientHints, KeyUse, KeyView, Provider, ProviderError, Reservation, UpstreamStream,
};
use crate::state::StateBackend;

/// Looked up on every request: a fast hasher (keys come from our config).
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Direct `provider/model` routes remembered (with their breakers and
/// statistics); beyond this, a direct route gets fresh state each time, so
/// clients sending made-up model names cannot grow memory without bound.
const MAX_DIRECT_ROUTES: usize = 1024;

/// The live health of one `provider/model`, shared by every alias using it.
#[derive(Debug)]
pub struct TargetHealth {
    pub label: String,
    pub breaker: Arc<Breaker>,
    /// One breaker per key of the provider (one for a provider without keys).
    pub key_breakers: Vec<Arc<Breaker>>,
    /// Per key: no call before this, after the upstream answered 429 (a
    /// provider's rate limits are per model, so a key paused for one target
    /// still serves the others).
    key_pauses: Vec<Pause>,
    pub stats: Arc<TargetStats>,
}

/// A pause until a moment, readable without a lock.
#[derive(Debug)]
struct Pause {
    start: tokio::time::Instant,
    /// Milliseconds after `start`; 0: not paused.
    until_ms: std::sync::atomic::AtomicU64,
}

impl Pause {
    fn new() -> Self {
        Pause { start: tokio::time::Instant::now(), until_ms: std::sync::atomic::AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        tokio::time::Instant::now().saturating_duration_since(self.start).as_millis() as u64 + 1
    }

    fn left(&self) -> Option<Duration> {
        let until = self.until_ms.load(std::sync::atomic::Ordering::Relaxed);
        if until == 0 {
            // Never paused (the common case): no clock read, which would
            // cost more than the rest of a key's check.
            return None;
        }
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    fn pause(&self, length: Duration) {
        let until = self.now_ms() + length.as_millis() as u64;
        self.until_ms.fetch_max(until, std::sync::atomic::Ordering::Relaxed);
    }

    fn clear(&self) {
        self.until_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

impl TargetHealth {
    /// Whether key `index` may be used on this target now.
    pub fn key_use(&self, index: usize) -> KeyUse {
        if self.key_breakers.get(index).is_some_and(|b| !b.allows()) {
            return KeyUse::Blocked;
        }
        match self.key_pauses.get(index).and_then(Pause::left) {
            Some(left) => KeyUse::Wait(left),
            None => KeyUse::Usable,
        }
    }

    /// The upstream answered 429 to key `index` on this target.
    pub fn pause_key(&self, index: usize, length: Duration) {
        if let Some(pause) = self.key_pauses.get(index) {
            pause.pause(length);
        }
    }
}

impl TargetHealth {
    fn new(provider: &Provider, model: &str, config: BreakerConfig) -> Arc<TargetHealth> {
        let labels = |scope: &'static str, key: Option<usize>| BreakerLabels {
            scope,
            provider: provider.name.clone(),
            model: model.to_string(),
            key,
        };
        Arc::new(TargetHealth {
            label: format!("{}/{}", provider.name, model),
            breaker: Breaker::new(config, labels("target", None)),
            key_breakers: provider
                .keys
                .indexes()
                .map(|i| Breaker::new(config, labels("key", Some(i))))
                .collect(),
            key_pauses: provider.keys.indexes().map(|_| Pause::new()).collect(),
            stats: TargetStats::new(),
        })
    }
}

/// One place a model alias can be served.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub model: String,
    pub weight: u32,
    /// How this target's prompts are counted for token reservations.
    pub tokenizer: Tokenizer,
    pub health: Arc<TargetHealth>,
}

impl Target {
    /// `provider/model`.
    pub fn label(&self) -> &str {
        &self.health.label
    }
}

/// The retry policy of an alias.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Extra attempts on the same target after a retryable failure.
    pub retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub retry_on: RetryOn,
    /// A `retry-after` longer than this moves to the next target at once.
    pub max_retry_after: Duration,
}

/// A model name clients can send, with everything its requests share.
#[derive(Debug)]
pub struct Alias {
    pub name: String,
    pub targets: Vec<Target>,
    rules: Vec<Rule>,
    pub strategy: Strategy,
    pub policy: RetryPolicy,
    pub hedge: Option<Hedge>,
    pub budget: RetryBudget,
    pub queue: Arc<WaitQueue>,
}

/// A resolved model name.
#[derive(Debug, Clone)]
pub struct Route {
    /// The alias, or `provider/model` for a direct target.
    pub name: String,
    pub alias: Arc<Alias>,
}

impl Route {
    pub fn targets(&self) -> &[Target] {
        &self.alias.targets
    }
}

/// How long a request may wait for capacity, and its place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// 0–10, higher first.
    pub priority: u8,
    pub max_wait: Duration,
}

/// A result and where it came from.
#[derive(Debug)]
pub struct Routed<T> {
    pub value: T,
    pub provider: String,
    pub model: String,
    /// Upstream calls made, the successful one included (hedges included).
    pub attempts: u32,
    /// How long the request waited for capacity.
    pub waited: Duration,
    /// The answer came from a hedged second call.
    pub hedged: bool,
}

/// A stream that has produced its first chunks and is committed to a target.
#[derive(Debug)]
pub struct StartedStream {
    /// Chunks read before committing, to be sent first.
    pub head: Vec<StreamChunk>,
    pub rest: UpstreamStream,
    /// The key's tokens reserved for this call: settle it when the stream ends.
    pub reservation: Reservation,
}

/// One target's part in a failed request.
#[derive(Debug, Clone)]
pub struct TargetFailure {
    pub target: String,
    pub attempts: u32,
    pub error: ProviderError,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error("model {model:?} does not exist")]
    UnknownModel { model: String },
    /// The upstream refused the request itself (400, 413, 422…): every target
    /// would, so the client gets the upstream's answer.
    #[error("{}", .error.message)]
    Rejected { target: String, error: Box<ProviderError> },
    #[error("{}", describe_exhausted(.model, .failures, *.budget_spent))]
    Exhausted {
        model: String,
        failures: Vec<TargetFailure>,
        /// Retries stopped because the alias's retry budget was spent.
        budget_spent: bool,
    },
    /// Every key of every target stayed at its limit for as long as the
    /// request could wait.
    #[error(
        "no capacity for model {model:?}: every key of every target is at its rate limit \
         (waited {}); retry after {}",
        humantime::format_duration(round_ms(*.waited)),
        humantime::format_duration(round_ms(*.retry_after))
    )]
    Capacity { model: String, waited: Duration, retry_after: Duration },
    #[error(
        "too many requests are waiting for capacity for model {model:?} (at most {max}); \
         retry shortly"
    )]
    QueueFull { model: String, max: usize },
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

fn describe_exhausted(model: &str, failures: &[TargetFailure], budget_spent: bool) -> String {
    let mut out = format!("every target for model {model:?} failed ({} tried): ", failures.len());
    for (i, f) in failures.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(
            out,
            "{} ({} attempt{}): {}",
            f.target,
            f.attempts,
            if f.attempts == 1 { "" } else { "s" },
            f.error.message
        );
    }
    if budget_spent {
        let _ = write!(
            out,
            "; retries stopped: the retry budget of {model:?} is spent (retries may add only a \
             share of the alias's traffic)"
        );
    }
    out
}

/// A provider, its keys and its targets' health, as `GET /admin/providers` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderView {
    pub name: String,
    pub kind: &'static str,
    pub base_url: String,
    pub keys: Vec<KeyView>,
    pub targets: Vec<TargetView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetView {
    pub target: String,
    pub breaker: BreakerSnapshot,
    pub stats: StatsSnapshot,
    /// The breaker of each key on this target.
    pub key_breakers: Vec<KeyBreakerView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyBreakerView {
    pub key: usize,
    #[serde(flatten)]
    pub breaker: BreakerSnapshot,
    /// Milliseconds this key stays paused on this target after a 429.
    pub paused_ms: Option<u64>,
}

/// A model alias's routing state, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AliasView {
    pub name: String,
    pub strategy: &'static str,
    pub targets: Vec<String>,
    pub retry_budget: BudgetSnapshot,
    pub waiting: usize,
}

/// What `POST /admin/providers/{name}/reset` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ResetReport {
    pub breakers_closed: usize,
    pub keys_enabled: usize,
}

#[derive(Debug)]
pub struct Router {
    providers: Map<Arc<Provider>>,
    /// Provider names in config order.
    provider_order: Vec<String>,
    aliases: Map<Arc<Alias>>,
    /// Alias names in config order, for `/v1/models`.
    order: Vec<String>,
    config: RoutingConfig,
    state: Arc<dyn StateBackend>,
    signal: Arc<CapacitySignal>,
    /// Health of every configured target, by label.
    health: Map<Arc<TargetHealth>>,
    /// Direct `provider/model` routes seen so far (bounded).
    direct: Mutex<Map<Arc<Alias>>>,
}

impl Router {
    pub fn new(
        config: &Config,
        providers: Vec<Arc<Provider>>,
        state: Arc<dyn StateBackend>,
        signal: Arc<CapacitySignal>,
    ) -> Router {
        let provider_order: Vec<String> = providers.iter().map(|p| p.name.clone()).collect();
        let providers: Map<Arc<Provider>> =
            providers.into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut router = Router {
            providers,
            provider_order,
            aliases: Map::default(),
            order: Vec::new(),
            config: config.routing.clone(),
            state,
            signal,
            health: Map::default(),
            direct: Mutex::new(Map::default()),
        };
        for model in &config.models {
            let alias = router.alias(model);
            router.order.push(model.name.clone());
            router.aliases.insert(model.name.clone(), Arc::new(alias));
        }
        router
    }

    fn target(&mut self, target: &TargetRef) -> Option<Target> {
        let provider = self.providers.get(&target.provider)?.clone();
        let label = target.to_string();
        let breaker = self.config.breaker;
        let health = self
            .health
            .entry(label)
            .or_insert_with(|| TargetHealth::new(&provider, &target.model, breaker))
            .clone();
        Some(Target {
            tokenizer: Tokenizer::for_target(provider.kind, &target.model),
            provider,
            model: target.model.clone(),
            weight: target.weight,
            health,
        })
    }

    fn alias(&mut self, model: &ModelConfig) -> Alias {
        let targets = model.targets.iter().filter_map(|t| self.target(t)).collect();
        let rules = model
            .rules
            .iter()
            .map(|rule| {
                Rule::new(rule, rule.targets.iter().filter_map(|t| self.target(t)).collect())
            })
            .collect();
        let mut budget = self.config.retry_budget;
        if let Some(ratio) = model.retry_budget {
            budget.ratio = ratio;
        }
        Alias {
            name: model.name.clone(),
            targets,
            rules,
            strategy: model.strategy,
            policy: RetryPolicy {
                retries: model.retries.unwrap_or(self.config.retries),
                backoff_base: model.backoff_base.unwrap_or(self.config.backoff_base),
                backoff_max: model.backoff_max.unwrap_or(self.config.backoff_max),
                retry_on: model.retry_on.unwrap_or(self.config.retry_on),
                max_retry_after: self.config.max_retry_after,
            },
            hedge: model.hedge,
            budget: RetryBudget::new(budget),
            queue: WaitQueue::new(&model.name, self.config.wait.max_waiting, self.signal.clone()),
        }
    }

    /// Alias names, in config order.
    /// Requests waiting for provider capacity, over every alias. The job
    /// workers lease nothing while it is above zero.
    pub fn waiting(&self) -> usize {
        let direct = self.direct.lock().map_or(0, |d| d.values().map(|a| a.queue.len()).sum());
        self.aliases.values().map(|a| a.queue.len()).sum::<usize>() + direct
    }

    pub fn model_names(&self) -> &[String] {
        &self.order
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.provider_order.iter().filter_map(|name| self.providers.get(name))
    }

    pub fn routing_config(&self) -> &RoutingConfig {
        &self.config
    }

    pub fn resolve(&self, model: &str) -> Result<Route, RouteError> {
        if let Some(alias) = self.aliases.get(model) {
            return Ok(Route { name: model.to_string(), alias: alias.clone() });
        }
        if self.config.allow_direct_targets
            && let Some((provider, upstream_model)) = model.split_once('/')
            && self.providers.contains_key(provider)
            && !upstream_model.is_empty()
        {
            return Ok(Route {
                name: model.to_string(),
                alias: self.direct(provider, upstream_model),
            });
        }
        Err(RouteError::UnknownModel { model: model.to_string() })
    }

    /// The route of a direct `provider/model` name, remembered while there
    /// is room (see [`MAX_DIRECT_ROUTES`]).
    fn direct(&self, provider: &str, model: &str) -> Arc<Alias> {
        let name = format!("{provider}/{model}");
        let mut direct = self.direct.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(alias) = direct.get(&name) {
            return alias.clone();
        }
        let config = ModelConfig::single(name.clone(), TargetRef::new(provider, model));
        let alias = Arc::new(self.build_direct(&config));
        if direct.len() < MAX_DIRECT_ROUTES {
            direct.insert(name, alias.clone());
        }
        alias
    }

    fn build_direct(&self, model: &ModelConfig) -> Alias {
        let targets = model
            .targets
            .iter()
            .filter_map(|t| {
                let provider = self.providers.get(&t.provider)?.clone();
                let health = match self.health.get(&t.to_string()) {
                    Some(health) => health.clone(),
                    None => TargetHealth::new(&provider, &t.model, self.config.breaker),
                };
                Some(Target {
                    tokenizer: Tokenizer::for_target(provider.kind, &t.model),
                    provider,
                    model: t.model.clone(),
                    weight: 1,
                    health,
                })
            })
            .collect();
        Alias {
            name: model.name.clone(),
            targets,
            rules: Vec::new(),
            strategy: Strategy::Fallback,
            policy: RetryPolicy {
                retries: self.config.retries,
                backoff_base: self.config.backoff_base,
                backoff_max: self.config.backoff_max,
                retry_on: self.config.retry_on,
                max_retry_after: self.config.max_retry_after,
            },
            hedge: None,
            budget: RetryBudget::new(self.config.retry_budget),
            queue: WaitQueue::new(&model.name, self.config.wait.max_waiting, self.signal.clone()),
        }
    }

    pub async fn chat(
        &self,
        route: &Route,
        req: &ChatRequest,
        hints: &ClientHints,
        admission: Admission,
    ) -> Result<Routed<ChatResponse>, RouteError> {
        self.run(route, &attempt::Chat::new(req, hints), admission).await
    }

    pub async fn chat_stream(
        &self,
        route: &Route,
        req: &ChatRequest,
        hints: &ClientHints,
        admission: Admission,
    ) -> Result<Routed<StartedStream>, RouteError> {
        self.run(route, &attempt::Stream::new(req, hints), admission).await
    }

    pub async fn embeddings(
        &self,
        route: &Route,
        req: &EmbeddingsRequest,
        admission: Admission,
    ) -> Result<Routed<EmbeddingsResponse>, RouteError> {
        self.run(route, &attempt::Embeddings { req }, admission).await
    }

    /// Tokenizers requests will need: those of targets whose keys count
    /// tokens (a tpm or daily token quota), and of aliases whose rules have
    /// token conditions. Loading one costs 25–50 MB, so only these are loaded
    /// at start; a limit learned later from headers loads its table then.
    pub fn tokenizers_needed(&self) -> Vec<Tokenizer> {
        let mut needed = Vec::new();
        for alias in self.aliases.values() {
            let all = alias.targets.iter().chain(alias.rules.iter().flat_map(|r| r.targets.iter()));
            for target in all {
                if target.provider.keys.counts_tokens() {
                    needed.push(target.tokenizer);
                }
            }
            if alias.rules.iter().any(Rule::counts_tokens)
                && let Some(first) = alias.targets.first()
            {
                needed.push(first.tokenizer);
            }
        }
        needed.sort_by_key(|t| t.as_str());
        needed.dedup();
        needed
    }

    /// Every provider with its keys and its targets' health.
    pub fn provider_views(&self) -> Vec<ProviderView> {
        self.providers()
            .map(|provider| ProviderView {
                name: provider.name.clone(),
                kind: provider.kind.as_str(),
                base_url: provider.base_url.clone(),
                keys: provider.keys.views(),
                targets: self.targets_of(&provider.name).map(target_view).collect(),
            })
            .collect()
    }

    pub fn provider_view(&self, name: &str) -> Option<ProviderView> {
        self.provider_views().into_iter().find(|p| p.name == name)
    }

    pub fn alias_views(&self) -> Vec<AliasView> {
        self.order
            .iter()
            .filter_map(|name| self.aliases.get(name))
            .map(|alias| AliasView {
                name: alias.name.clone(),
                strategy: alias.strategy.as_str(),
                targets: alias.targets.iter().map(|t| t.label().to_string()).collect(),
                retry_budget: alias.budget.snapshot(),
                waiting: alias.queue.len(),
            })
            .collect()
    }

    /// Configured and remembered direct targets of a provider, sorted by label.
    fn targets_of(&self, provider: &str) -> impl Iterator<Item = Arc<TargetHealth>> {
        let direct = self.direct.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<Arc<TargetHealth>> = self.health.values().cloned().collect();
        for alias in direct.values() {
            all.extend(alias.targets.iter().map(|t| t.health.clone()));
        }
        drop(direct);
        let prefix = format!("{provider}/");
        all.retain(|h| h.label.starts_with(&prefix));
        all.sort_by(|a, b| a.label.cmp(&b.label));
        all.dedup_by(|a, b| Arc::ptr_eq(a, b));
        all.into_iter()
    }

    /// Closes every breaker of the provider's targets and keys, and puts its
    /// keys back in use on this node and in the state backend.
    pub async fn reset_provider(&self, name: &str) -> Option<ResetReport> {
        let provider = self.providers.get(name)?;
        let mut breakers_closed = 0;
        for health in self.targets_of(name) {
            for breaker in std::iter::once(&health.breaker).chain(&health.key_breakers) {
                if breaker.snapshot().state != "closed" {
                    breakers_closed += 1;
                }
                breaker.reset();
            }
            for pause in &health.key_pauses {
                pause.clear();
            }
        }
        let keys_enabled = provider.keys.enable_all();
        if let Err(error) = self.state.enable_keys(name).await {
            tracing::warn!(provider = %name, %error, "could not clear the disabled keys in the state backend");
        }
        tracing::info!(provider = %name, breakers_closed, keys_enabled, "provider reset by an operator");
        self.signal.freed();
        Some(ResetReport { breakers_closed, keys_enabled })
    }
}

fn target_view(health: Arc<TargetHealth>) -> TargetView {
    TargetView {
        target: health.label.clone(),
        breaker: health.breaker.snapshot(),
        stats: health.stats.snapshot(),
        key_breakers: health
            .key_breakers
            .iter()
            .enumerate()
            .map(|(key, b)| KeyBreakerView {
                key,
                breaker: b.snapshot(),
                paused_ms: health
                    .key_pauses
                    .get(key)
                    .and_then(Pause::left)
                    .map(|d| d.as_millis() as u64),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
