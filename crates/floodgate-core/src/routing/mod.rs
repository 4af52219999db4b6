//! Model aliases → ordered targets, and the attempt loop every request runs:
//! pick a key, call, classify the failure, then retry with backoff (honouring
//! `retry-after`), take a refused key out of use, or move to the next target.
//!
//! A streamed request commits to a target only when its first chunk has
//! arrived: before that, a failure falls back exactly like a non-streamed one,
//! because nothing has reached the client yet.

mod backoff;
pub mod estimate;

use std::collections::HashMap;

/// Looked up on every request: a fast hasher (keys come from our config).
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use floodgate_protocol::{
    ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, StreamChunk,
};

pub use backoff::Backoff;

use crate::config::{Config, RoutingConfig};
use crate::providers::{
    ClientHints, Disposition, ErrorKind, Key, Pick, Provider, ProviderError, Reservation,
    UpstreamStream,
};
use crate::state::StateBackend;
use crate::telemetry::metric;

/// One place a model alias can be served.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub model: String,
}

impl Target {
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider.name, self.model)
    }
}

#[derive(Debug)]
struct Alias {
    targets: Vec<Target>,
    retries: u32,
}

/// A resolved model name.
#[derive(Debug, Clone)]
pub struct Route {
    /// The alias, or `provider/model` for a direct target.
    pub name: String,
    pub targets: Vec<Target>,
    pub retries: u32,
}

/// A result and where it came from.
#[derive(Debug)]
pub struct Routed<T> {
    pub value: T,
    pub provider: String,
    pub model: String,
    /// Upstream calls made, the successful one included.
    pub attempts: u32,
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

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("model {model:?} does not exist")]
    UnknownModel { model: String },
    /// The upstream refused the request itself (400, 413, 422…): every target
    /// would, so the client gets the upstream's answer.
    #[error("{}", .error.message)]
    Rejected { target: String, error: Box<ProviderError> },
    #[error("{}", describe_exhausted(.model, .failures))]
    Exhausted { model: String, failures: Vec<TargetFailure> },
}

fn describe_exhausted(model: &str, failures: &[TargetFailure]) -> String {
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
    out
}

#[derive(Debug)]
pub struct Router {
    providers: Map<Arc<Provider>>,
    aliases: Map<Alias>,
    /// Alias names in config order, for `/v1/models`.
    order: Vec<String>,
    config: RoutingConfig,
    state: Arc<dyn StateBackend>,
}

impl Router {
    pub fn new(
        config: &Config,
        providers: Vec<Arc<Provider>>,
        state: Arc<dyn StateBackend>,
    ) -> Router {
        let providers: Map<Arc<Provider>> =
            providers.into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut aliases = Map::default();
        let mut order = Vec::new();
        for model in &config.models {
            let targets = model
                .targets
                .iter()
                .filter_map(|t| {
                    providers
                        .get(&t.provider)
                        .map(|p| Target { provider: p.clone(), model: t.model.clone() })
                })
                .collect();
            let retries = model.retries.unwrap_or(config.routing.retries);
            aliases.insert(model.name.clone(), Alias { targets, retries });
            order.push(model.name.clone());
        }
        Router { providers, aliases, order, config: config.routing.clone(), state }
    }

    /// Alias names, in config order.
    pub fn model_names(&self) -> &[String] {
        &self.order
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }

    pub fn resolve(&self, model: &str) -> Result<Route, RouteError> {
        if let Some(alias) = self.aliases.get(model) {
            return Ok(Route {
                name: model.to_string(),
                targets: alias.targets.clone(),
                retries: alias.retries,
            });
        }
        if self.config.allow_direct_targets
            && let Some((provider, upstream_model)) = model.split_once('/')
            && let Some(provider) = self.providers.get(provider)
            && !upstream_model.is_empty()
        {
            return Ok(Route {
                name: model.to_string(),
                targets: vec![Target {
                    provider: provider.clone(),
                    model: upstream_model.to_string(),
                }],
                retries: self.config.retries,
            });
        }
        Err(RouteError::UnknownModel { model: model.to_string() })
    }

    pub async fn chat(
        &self,
        route: &Route,
        req: &ChatRequest,
        hints: &ClientHints,
    ) -> Result<Routed<ChatResponse>, RouteError> {
        self.run(route, &Chat { req, hints }).await
    }

    pub async fn chat_stream(
        &self,
        route: &Route,
        req: &ChatRequest,
        hints: &ClientHints,
    ) -> Result<Routed<StartedStream>, RouteError> {
        self.run(route, &Stream { req, hints }).await
    }

    pub async fn embeddings(
        &self,
        route: &Route,
        req: &EmbeddingsRequest,
    ) -> Result<Routed<EmbeddingsResponse>, RouteError> {
        self.run(route, &Embeddings { req }).await
    }

    async fn run<A: Attempt>(
        &self,
        route: &Route,
        op: &A,
    ) -> Result<Routed<A::Output>, RouteError> {
        let mut failures = Vec::new();
        let mut total_attempts = 0;
        for target in &route.targets {
            let mut backoff = Backoff::new(self.config.backoff_base, self.config.backoff_max);
            let mut attempts = 0;
            let mut retries_left = route.retries;
            let mut refused: Option<ProviderError> = None;
            let failure = loop {
                let (key, reservation) = match target.provider.keys.pick(op.estimate()) {
                    Pick::Key(key, reservation) => (Some(key), reservation),
                    Pick::Anonymous(reservation) => (None, reservation),
                    Pick::Busy(wait) => {
                        let mut error = ProviderError::new(
                            ErrorKind::KeysBusy,
                            format!(
                                "{}: every key is at its rpm/tpm limit; room again in {}",
                                target.provider.name,
                                humantime::format_duration(Duration::from_millis(
                                    wait.as_millis() as u64
                                ))
                            ),
                        );
                        error.retry_after = Some(wait);
                        break error;
                    }
                    Pick::Exhausted => {
                        let last = refused
                            .as_ref()
                            .map(|e| format!(" (last: {})", e.message))
                            .unwrap_or_default();
                        break ProviderError::new(
                            ErrorKind::NoUsableKey,
                            format!(
                                "{}: every key is out of use after being refused{last}",
                                target.provider.name
                            ),
                        );
                    }
                };
                attempts += 1;
                total_attempts += 1;
                let error = match op.call(target, key).await {
                    Ok(mut value) => {
                        A::settle(&mut value, reservation);
                        return Ok(Routed {
                            value,
                            provider: target.provider.name.clone(),
                            model: target.model.clone(),
                            attempts: total_attempts,
                        });
                    }
                    Err(error) => {
                        // A failed call consumed a request but no tokens.
                        reservation.settle(0);
                        error
                    }
                };
                match error.disposition() {
                    Disposition::Reject => {
                        return Err(RouteError::Rejected {
                            target: target.label(),
                            error: Box::new(error),
                        });
                    }
                    Disposition::NextTarget => break error,
                    Disposition::RejectKey => {
                        // A refused key is not a retry: the next key is tried at
                        // once, and the loop ends when none is left.
                        match key {
                            Some(key) => {
                                self.disable_key(&target.provider, key, &error).await;
                                refused = Some(error);
                            }
                            None => break error,
                        }
                    }
                    Disposition::Retry => {
                        if retries_left == 0 {
                            break error;
                        }
                        retries_left -= 1;
                        let wait = backoff.next_delay();
                        let wait = match error.retry_after {
                            Some(after) if after > self.config.max_retry_after => break error,
                            Some(after) => wait.max(after),
                            None => wait,
                        };
                        let labels = [
                            ("provider", target.provider.name.clone()),
                            ("reason", error.label().to_string()),
                        ];
                        metrics::counter!(metric::UPSTREAM_RETRIES, &labels).increment(1);
                        tracing::debug!(target = %target.label(), error = %error, wait_ms = wait.as_millis() as u64, "retrying");
                        sleep(wait).await;
                    }
                }
            };
            tracing::debug!(target = %target.label(), error = %failure, "target failed, falling back");
            failures.push(TargetFailure { target: target.label(), attempts, error: failure });
        }
        Err(RouteError::Exhausted { model: route.name.clone(), failures })
    }

    async fn disable_key(&self, provider: &Provider, key: &Key, error: &ProviderError) {
        let reason = error.message.clone();
        if provider.keys.disable(key.index, &reason) {
            tracing::warn!(
                provider = %provider.name,
                key = key.index,
                reason = %reason,
                "upstream refused a key; it is out of use until an operator resets it"
            );
            let labels = [("provider", provider.name.clone())];
            metrics::counter!(metric::KEYS_DISABLED, &labels).increment(1);
            if let Err(e) = self.state.disable_key(&provider.name, key.index, &reason).await {
                tracing::warn!(provider = %provider.name, error = %e, "could not record the disabled key in the state backend");
            }
        }
    }
}

/// One kind of upstream call the attempt loop can make.
trait Attempt: Sync {
    type Output;
    /// Tokens to reserve against the key's tpm before the call.
    fn estimate(&self) -> u32;
    /// Settles the reservation with what the call used (a stream hands it on
    /// to be settled when it ends).
    fn settle(output: &mut Self::Output, reservation: Reservation);
    fn call<'a>(
        &'a self,
        target: &'a Target,
        key: Option<&'a Key>,
    ) -> impl Future<Output = Result<Self::Output, ProviderError>> + Send + 'a;
}

struct Chat<'r> {
    req: &'r ChatRequest,
    hints: &'r ClientHints,
}

impl Attempt for Chat<'_> {
    type Output = ChatResponse;
    fn estimate(&self) -> u32 {
        estimate::chat(self.req)
    }
    fn settle(output: &mut ChatResponse, reservation: Reservation) {
        reservation.settle(output.usage.total());
    }
    fn call<'a>(
        &'a self,
        target: &'a Target,
        key: Option<&'a Key>,
    ) -> impl Future<Output = Result<ChatResponse, ProviderError>> + Send + 'a {
        target.provider.chat(self.req, &target.model, key, self.hints)
    }
}

struct Stream<'r> {
    req: &'r ChatRequest,
    hints: &'r ClientHints,
}

impl Attempt for Stream<'_> {
    type Output = StartedStream;
    fn estimate(&self) -> u32 {
        estimate::chat(self.req)
    }
    fn settle(output: &mut StartedStream, reservation: Reservation) {
        output.reservation = reservation;
    }
    fn call<'a>(
        &'a self,
        target: &'a Target,
        key: Option<&'a Key>,
    ) -> impl Future<Output = Result<StartedStream, ProviderError>> + Send + 'a {
        start_stream(self.req, self.hints, target, key)
    }
}

/// Opens a stream and reads it until its first content, which is when it is
/// committed to this target.
async fn start_stream(
    req: &ChatRequest,
    hints: &ClientHints,
    target: &Target,
    key: Option<&Key>,
) -> Result<StartedStream, ProviderError> {
    let mut rest = target.provider.chat_stream(req, &target.model, key, hints).await?;
    let mut head = Vec::new();
    loop {
        match rest.next_chunk().await {
            Some(Ok(chunk)) => {
                let has_content = !chunk.events.is_empty();
                head.push(chunk);
                if has_content {
                    return Ok(StartedStream { head, rest, reservation: Reservation::none() });
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(ProviderError::new(
                    ErrorKind::Stream,
                    format!("{}: the stream ended before any content", target.provider.name),
                ));
            }
        }
    }
}

struct Embeddings<'r> {
    req: &'r EmbeddingsRequest,
}

impl Attempt for Embeddings<'_> {
    type Output = EmbeddingsResponse;
    fn estimate(&self) -> u32 {
        estimate::embeddings(self.req, estimate::Tokenizer::Approx)
    }
    fn settle(output: &mut EmbeddingsResponse, reservation: Reservation) {
        reservation.settle(output.usage.input_tokens);
    }
    fn call<'a>(
        &'a self,
        target: &'a Target,
        key: Option<&'a Key>,
    ) -> impl Future<Output = Result<EmbeddingsResponse, ProviderError>> + Send + 'a {
        target.provider.embeddings(self.req, &target.model, key)
    }
}

async fn sleep(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests;
