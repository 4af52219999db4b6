//! The attempt loop every routed request runs (see the module docs of
//! `routing` for the steps), and the three kinds of call it makes.

use std::time::Duration;

use floodgate_protocol::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, Part};
use tokio::time::Instant;

use super::breaker::BreakerPermit;
use super::estimate::{self, ChatEstimate, Tokenizer};
use super::rules::{self, Features};
use super::wait::WaitError;
use super::{
    Admission, Alias, Backoff, Route, RouteError, Routed, Router, StartedStream, Target,
    TargetFailure, balance,
};
use crate::config::{Hedge, RetryOn};
use crate::providers::{
    ClientHints, Disposition, ErrorKind, Key, Pick, Provider, ProviderError, Reservation,
};
use crate::telemetry::trace::{self, Span, SpanKind};
use crate::telemetry::{self, metric};

/// One kind of upstream call the attempt loop can make.
pub(super) trait Attempt: Sync {
    type Output: Send;
    /// Whether a slow first call may be hedged (non-streamed chat only).
    const HEDGE: bool;
    /// `gen_ai.operation.name` of its `upstream` spans.
    const OPERATION: &'static str;
    /// A stream: its call (and span) ends at its first content.
    const STREAMED: bool = false;
    /// Tokens to reserve against a key's token limits on this target.
    fn estimate(&self, target: &Target) -> u32;
    /// What routing rules look at; `None`: rules do not apply.
    fn features(&self) -> Option<&dyn Features>;
    /// Settles the reservation with what the call used (a stream hands it on
    /// to be settled when it ends).
    fn settle(output: &mut Self::Output, reservation: Reservation);
    /// What a successful call's span says about its answer (usage, model).
    fn record(_output: &Self::Output, _span: &Span) {}
    fn call<'a>(
        &'a self,
        target: &'a Target,
        key: Option<&'a Key>,
    ) -> impl Future<Output = Result<Self::Output, ProviderError>> + Send + 'a;
}

/// Capacity taken for one call: a key, its reservation and breaker permits.
#[derive(Debug)]
struct Slot<'t> {
    key: Option<&'t Key>,
    reservation: Reservation,
    target_permit: BreakerPermit,
    key_permit: Option<BreakerPermit>,
}

enum Admit<'t> {
    Ready(Slot<'t>),
    /// Every key the target may use is at its limit; room in this long.
    Busy(Duration),
    /// The target cannot take calls (breaker open, no usable key).
    Down(ProviderError),
}

/// One pass over a route's targets, in order, for the first that can take a call.
enum Scan<'t> {
    Ready(usize, Slot<'t>),
    Busy(Duration),
    Down(Vec<TargetFailure>),
}

/// How an outcome counts for breakers and statistics.
enum Verdict {
    /// The upstream is up (it answered, even if it refused the request).
    Healthy,
    /// Timeouts, 5xx, broken connections and streams, garbage answers.
    Unhealthy,
    /// Says nothing about health: a 429 (rate state), a refused key, a
    /// request this target cannot express.
    Neutral,
}

fn verdict(error: &ProviderError) -> Verdict {
    match error.kind {
        ErrorKind::Connect | ErrorKind::Timeout(_) | ErrorKind::Stream | ErrorKind::Decode => {
            Verdict::Unhealthy
        }
        ErrorKind::Status(status) if status >= 500 => Verdict::Unhealthy,
        ErrorKind::Status(401 | 403 | 429) => Verdict::Neutral,
        ErrorKind::Status(_) => Verdict::Healthy,
        ErrorKind::Translate
        | ErrorKind::Unsupported
        | ErrorKind::NoUsableKey
        | ErrorKind::KeysBusy
        | ErrorKind::CircuitOpen => Verdict::Neutral,
    }
}

/// Whether the retry policy retries this failure on the same target.
fn retried(on: RetryOn, error: &ProviderError) -> bool {
    match error.kind {
        ErrorKind::Connect | ErrorKind::Stream => on.connect,
        ErrorKind::Timeout(_) => on.timeout,
        ErrorKind::Status(429) => on.rate_limited,
        ErrorKind::Status(_) => on.server,
        _ => false,
    }
}

fn keys_busy(provider: &Provider, wait: Duration) -> ProviderError {
    let mut error = ProviderError::new(
        ErrorKind::KeysBusy,
        format!(
            "{}: every key is at its rate limit; room again in {}",
            provider.name,
            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
        ),
    );
    error.retry_after = Some(wait);
    error
}

enum Hedged<T> {
    /// No hedge was sent (or it could not be): the first call's result.
    Single(Result<T, ProviderError>),
    /// A second call was made; `hedged`: it answered first.
    Won {
        value: T,
        position: usize,
        hedged: bool,
    },
    BothFailed {
        first: ProviderError,
        second: (usize, ProviderError),
    },
}

impl Router {
    pub(super) async fn run<A: Attempt>(
        &self,
        route: &Route,
        op: &A,
        admission: Admission,
    ) -> Result<Routed<A::Output>, RouteError> {
        let alias = &*route.alias;
        let (rule, targets) = choose_targets(alias, op);
        if let Some(rule) = rule {
            let rule = rule.to_string();
            let labels = [("model", alias.name.as_str()), ("rule", rule.as_str())];
            telemetry::counter(metric::ROUTING_RULES, &labels).increment(1);
        }
        let order = order(alias, targets);
        let (start, slot, waited) = self.admit_first(alias, targets, &order, op, admission).await?;

        let policy = alias.policy;
        let mut failures: Vec<TargetFailure> = Vec::new();
        let mut calls = 0u32;
        let mut budget_spent = false;
        let mut ready = Some(slot);
        alias.budget.deposit();
        let mut index = start;
        'targets: while index < order.len() {
            let position = order[index];
            let target = &targets[position];
            let mut backoff = Backoff::new(policy.backoff_base, policy.backoff_max);
            let mut attempts = 0u32;
            let mut retries_left = policy.retries;
            let mut refused: Option<ProviderError> = None;
            // The failure being retried, reported if the retry cannot be made.
            let mut last: Option<ProviderError> = None;
            // A rate-limit pause was already waited out once for this target.
            let mut waited_out = false;
            // The reason of the retry about to be made, for its metric.
            let mut retrying: Option<&'static str> = None;
            let failure = loop {
                let slot = match ready.take() {
                    Some(slot) => slot,
                    None => match self.admit(target, op) {
                        Admit::Ready(slot) => slot,
                        Admit::Busy(wait) => {
                            // Retrying a 429 whose key is paused, with no other
                            // key free: wait out the pause if it is short enough.
                            let rate_limited =
                                last.as_ref().is_some_and(|e| e.kind == ErrorKind::Status(429));
                            if rate_limited && !waited_out && wait <= policy.max_retry_after {
                                waited_out = true;
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                            break last.take().unwrap_or_else(|| keys_busy(&target.provider, wait));
                        }
                        Admit::Down(error) => {
                            // The breaker opened on the failure being retried:
                            // that failure says more than "circuit open".
                            if let Some(last) = last.take() {
                                break last;
                            }
                            break match refused.take() {
                                Some(last) if error.kind == ErrorKind::NoUsableKey => {
                                    let mut error = error;
                                    error.message =
                                        format!("{} (last: {})", error.message, last.message);
                                    error
                                }
                                _ => error,
                            };
                        }
                    },
                };
                // Every call after a request's first adds upstream load.
                if calls > 0 && !alias.budget.try_withdraw() {
                    slot.reservation.settle(0);
                    budget_spent = true;
                    let labels = [("model", alias.name.as_str())];
                    telemetry::counter(metric::RETRY_BUDGET_EXHAUSTED, &labels).increment(1);
                    if let Some(error) = last.take().or_else(|| refused.take()) {
                        failures.push(TargetFailure {
                            target: target.label().to_string(),
                            attempts,
                            error,
                        });
                    }
                    break 'targets;
                }
                // A retry is counted when it is made (the breaker may have
                // opened, or the budget run out, while it waited).
                if let Some(reason) = retrying.take() {
                    let labels = [("provider", target.provider.name.as_str()), ("reason", reason)];
                    telemetry::counter(metric::UPSTREAM_RETRIES, &labels).increment(1);
                }
                attempts += 1;
                calls += 1;
                let hedge = if A::HEDGE && calls == 1 { alias.hedge } else { None };
                let result = match hedge {
                    Some(hedge) => {
                        match self.hedged(alias, targets, &order, index, op, slot, hedge).await {
                            Hedged::Single(result) => result,
                            Hedged::Won { value, position, hedged } => {
                                calls += 1;
                                return Ok(routed(
                                    &targets[position],
                                    value,
                                    calls,
                                    waited,
                                    hedged,
                                ));
                            }
                            Hedged::BothFailed { first, second: (second_index, second) } => {
                                calls += 1;
                                failures.push(TargetFailure {
                                    target: target.label().to_string(),
                                    attempts,
                                    error: first,
                                });
                                let second_target = &targets[order[second_index]];
                                failures.push(TargetFailure {
                                    target: second_target.label().to_string(),
                                    attempts: 1,
                                    error: second,
                                });
                                index = second_index + 1;
                                continue 'targets;
                            }
                        }
                    }
                    None => self.call(target, op, slot, calls, false).await,
                };
                let error = match result {
                    Ok(value) => return Ok(routed(target, value, calls, waited, false)),
                    Err(error) => error,
                };
                match error.disposition() {
                    Disposition::Reject => {
                        return Err(RouteError::Rejected {
                            target: target.label().to_string(),
                            error: Box::new(error),
                        });
                    }
                    Disposition::NextTarget => break error,
                    Disposition::RejectKey => {
                        // A refused key is not a retry: the next key is tried at
                        // once, and the loop ends when none is left.
                        // The key the refused call was made with (`call` records it).
                        match error.key_index() {
                            Some(index) => {
                                self.disable_key(&target.provider, index, &error).await;
                                refused = Some(error);
                            }
                            None => break error,
                        }
                    }
                    Disposition::Retry => {
                        if retries_left == 0 || !retried(policy.retry_on, &error) {
                            break error;
                        }
                        retries_left -= 1;
                        let wait = backoff.next_delay();
                        let wait = match error.retry_after {
                            Some(after) if after > policy.max_retry_after => break error,
                            // A 429's retry-after is the key's: the key is paused
                            // on this target, and another key may serve at once.
                            Some(_) if error.kind == ErrorKind::Status(429) => wait,
                            Some(after) => wait.max(after),
                            None => wait,
                        };
                        retrying = Some(error.label());
                        tracing::debug!(target = %target.label(), error = %error, wait_ms = wait.as_millis() as u64, "retrying");
                        last = Some(error);
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            };
            tracing::debug!(target = %target.label(), error = %failure, "target failed, falling back");
            failures.push(TargetFailure {
                target: target.label().to_string(),
                attempts,
                error: failure,
            });
            index += 1;
        }
        Err(RouteError::Exhausted { model: route.name.clone(), failures, budget_spent })
    }

    /// The routing decision a chat request starts with — its rule, the
    /// strategy's order, breakers, the key pick and its reservation — without
    /// calling upstream or waiting: the target and key the first call would
    /// use, or `None` when none can take it now. The reservation is settled
    /// as unused. For the routing benchmark and for tests.
    pub fn decide(&self, route: &Route, req: &ChatRequest) -> Option<(String, Option<usize>)> {
        let hints = ClientHints::default();
        let op = Chat::new(req, &hints);
        let alias = &*route.alias;
        let (_, targets) = choose_targets(alias, &op);
        let order = order(alias, targets);
        match self.scan(targets, &order, &op) {
            Scan::Ready(index, slot) => {
                let key = slot.key.map(|k| k.index);
                slot.reservation.settle(0);
                Some((targets[order[index]].label().to_string(), key))
            }
            Scan::Busy(_) | Scan::Down(_) => None,
        }
    }

    /// The first admission: at once when a target has room, else (when every
    /// target is only full) after waiting in the alias's queue.
    async fn admit_first<'t, A: Attempt>(
        &self,
        alias: &Alias,
        targets: &'t [Target],
        order: &[usize],
        op: &A,
        admission: Admission,
    ) -> Result<(usize, Slot<'t>, Duration), RouteError> {
        let model = || alias.name.clone();
        if alias.queue.is_empty() {
            match self.scan(targets, order, op) {
                Scan::Ready(index, slot) => return Ok((index, slot, Duration::ZERO)),
                Scan::Down(failures) => {
                    return Err(RouteError::Exhausted {
                        model: model(),
                        failures,
                        budget_spent: false,
                    });
                }
                Scan::Busy(_) => {}
            }
        }
        let started = Instant::now();
        let deadline = started + admission.max_wait;
        let outcome = alias
            .queue
            .wait_for(admission.priority, deadline, || match self.scan(targets, order, op) {
                Scan::Ready(index, slot) => Ok(Ok((index, slot))),
                Scan::Down(failures) => Ok(Err(failures)),
                Scan::Busy(hint) => Err(hint),
            })
            .await;
        match outcome {
            Ok(Ok((index, slot))) => Ok((index, slot, started.elapsed())),
            Ok(Err(failures)) => {
                Err(RouteError::Exhausted { model: model(), failures, budget_spent: false })
            }
            Err(WaitError::Full { max }) => Err(RouteError::QueueFull { model: model(), max }),
            Err(WaitError::Timeout { waited, retry_after }) => {
                Err(RouteError::Capacity { model: model(), waited, retry_after })
            }
        }
    }

    /// The first target in `order` that can take a call now.
    fn scan<'t, A: Attempt>(&self, targets: &'t [Target], order: &[usize], op: &A) -> Scan<'t> {
        let mut busy: Option<Duration> = None;
        let mut down = Vec::new();
        for (index, &position) in order.iter().enumerate() {
            let target = &targets[position];
            match self.admit(target, op) {
                Admit::Ready(slot) => return Scan::Ready(index, slot),
                Admit::Busy(wait) => busy = Some(busy.map_or(wait, |b| b.min(wait))),
                Admit::Down(error) => {
                    down.push(TargetFailure {
                        target: target.label().to_string(),
                        attempts: 0,
                        error,
                    });
                }
            }
        }
        match busy {
            Some(wait) => Scan::Busy(wait),
            None => Scan::Down(down),
        }
    }

    /// Takes a call's capacity on `target`: its breaker, a key with room and
    /// that key's breaker on this target.
    fn admit<'t, A: Attempt>(&self, target: &'t Target, op: &A) -> Admit<'t> {
        let health = &target.health;
        let Some(target_permit) = health.breaker.try_acquire() else {
            let snapshot = health.breaker.snapshot();
            let mut error = ProviderError::new(
                ErrorKind::CircuitOpen,
                format!(
                    "{}: circuit open after repeated failures{}",
                    target.label(),
                    snapshot
                        .retry_in_ms
                        .map(|ms| format!(
                            "; half-open in {}",
                            humantime::format_duration(Duration::from_millis(ms))
                        ))
                        .unwrap_or_default()
                ),
            );
            error.retry_after = snapshot.retry_in_ms.map(Duration::from_millis);
            return Admit::Down(error);
        };
        let keys = &health.key_breakers;
        let pick = target.provider.keys.pick(|| op.estimate(target), |index| health.key_use(index));
        let (key, reservation) = match pick {
            Pick::Key(key, reservation) => (Some(key), reservation),
            Pick::Anonymous(reservation) => (None, reservation),
            Pick::Busy(wait) => return Admit::Busy(wait),
            Pick::Blocked => {
                return Admit::Down(ProviderError::new(
                    ErrorKind::CircuitOpen,
                    format!("{}: the circuit of every key on this target is open", target.label()),
                ));
            }
            Pick::Exhausted => {
                return Admit::Down(ProviderError::new(
                    ErrorKind::NoUsableKey,
                    format!(
                        "{}: every key is out of use after being refused",
                        target.provider.name
                    ),
                ));
            }
        };
        let key_permit = match keys.get(key.map_or(0, |k| k.index)) {
            Some(breaker) => match breaker.try_acquire() {
                Some(permit) => Some(permit),
                None => {
                    // Its last probe slot went to another request a moment ago.
                    reservation.settle(0);
                    return Admit::Busy(Duration::from_millis(10));
                }
            },
            None => None,
        };
        Admit::Ready(Slot { key, reservation, target_permit, key_permit })
    }

    /// Makes one call with the capacity taken, and tells breakers and
    /// statistics how it went. `number` counts the request's upstream calls
    /// (retries, fallbacks and hedges included); each is an `upstream` span.
    async fn call<'t, A: Attempt>(
        &self,
        target: &'t Target,
        op: &A,
        slot: Slot<'t>,
        number: u32,
        hedge: bool,
    ) -> Result<A::Output, ProviderError> {
        let Slot { key, reservation, target_permit, key_permit } = slot;
        let span = upstream_span::<A>(target, key, number, hedge);
        // A call dropped mid-way (the hedge that lost, a client gone) says so.
        let mut unfinished = Unfinished { span: &span, answered: false };
        let stats = &target.health.stats;
        let in_flight = stats.start();
        let started = Instant::now();
        let result = span.run(op.call(target, key)).await;
        let latency = started.elapsed();
        unfinished.answered = true;
        if span.is_recording() {
            match &result {
                Ok(output) => {
                    span.set(UPSTREAM_OUTCOME, "ok");
                    A::record(output, &span);
                }
                Err(error) => {
                    span.set(UPSTREAM_OUTCOME, error.label());
                    span.fail(error.label());
                }
            }
        }
        drop(in_flight);
        let verdict = match &result {
            Ok(_) => Verdict::Healthy,
            Err(error) => verdict(error),
        };
        match verdict {
            Verdict::Healthy => {
                target_permit.success();
                if let Some(p) = key_permit {
                    p.success();
                }
                if result.is_ok() {
                    stats.record(latency, true);
                }
            }
            Verdict::Unhealthy => {
                target_permit.failure();
                if let Some(p) = key_permit {
                    p.failure();
                }
                stats.record(latency, false);
            }
            Verdict::Neutral => {}
        }
        match result {
            Ok(mut value) => {
                A::settle(&mut value, reservation);
                Ok(value)
            }
            Err(error) => {
                // A failed call consumed a request but no tokens.
                reservation.settle(0);
                if error.kind == ErrorKind::Status(429) {
                    let length = error.retry_after.unwrap_or(Duration::from_secs(1));
                    target.health.pause_key(key.map_or(0, |k| k.index), length);
                }
                Err(error.with_key(key.map(|k| k.index)))
            }
        }
    }

    /// The first call, and a second one on the next target that can take it
    /// if the first has not answered by the hedge delay; the first answer
    /// wins and the other call is dropped (its connection closed).
    #[expect(clippy::too_many_arguments, reason = "the loop's state, passed once")]
    async fn hedged<'t, A: Attempt>(
        &self,
        alias: &Alias,
        targets: &'t [Target],
        order: &[usize],
        index: usize,
        op: &A,
        slot: Slot<'t>,
        hedge: Hedge,
    ) -> Hedged<A::Output> {
        let target = &targets[order[index]];
        let delay = match hedge {
            Hedge::P95 => target.health.stats.p95(),
            Hedge::After(delay) => Some(delay),
        };
        // Hedging is for a request's first call only: it is call 1, the hedge 2.
        let first = self.call(target, op, slot, 1, false);
        let Some(delay) = delay else { return Hedged::Single(first.await) };
        tokio::pin!(first);
        tokio::select! {
            biased;
            result = &mut first => return Hedged::Single(result),
            () = tokio::time::sleep(delay) => {}
        }
        let second = order.iter().enumerate().skip(index + 1).find_map(|(i, &position)| match self
            .admit(&targets[position], op)
        {
            Admit::Ready(slot) => Some((i, slot)),
            Admit::Busy(_) | Admit::Down(_) => None,
        });
        let Some((second_index, second_slot)) = second else {
            return Hedged::Single(first.await);
        };
        if !alias.budget.try_withdraw() {
            second_slot.reservation.settle(0);
            return Hedged::Single(first.await);
        }
        let hedge_labels = |outcome| [("model", alias.name.as_str()), ("outcome", outcome)];
        telemetry::counter(metric::HEDGES, &hedge_labels("sent")).increment(1);
        let second_target = &targets[order[second_index]];
        let second = self.call(second_target, op, second_slot, 2, true);
        tokio::pin!(second);
        // The first answer wins; if it is a failure, the other call's answer.
        let (done, from_first) = tokio::select! {
            result = &mut first => (result, true),
            result = &mut second => (result, false),
        };
        let outcome = match done {
            Ok(value) => Ok((value, !from_first)),
            Err(first_error) if from_first => match second.await {
                Ok(value) => Ok((value, true)),
                Err(second_error) => Err((first_error, second_error)),
            },
            Err(second_error) => match first.await {
                Ok(value) => Ok((value, false)),
                Err(first_error) => Err((first_error, second_error)),
            },
        };
        match outcome {
            Ok((value, hedged)) => {
                let outcome = if hedged { "won" } else { "lost" };
                telemetry::counter(metric::HEDGES, &hedge_labels(outcome)).increment(1);
                let position = if hedged { order[second_index] } else { order[index] };
                Hedged::Won { value, position, hedged }
            }
            Err((first, second)) => Hedged::BothFailed { first, second: (second_index, second) },
        }
    }

    async fn disable_key(&self, provider: &Provider, index: usize, error: &ProviderError) {
        let reason = error.message.clone();
        if provider.keys.disable(index, &reason) {
            tracing::warn!(
                provider = %provider.name,
                key = index,
                reason = %reason,
                "upstream refused a key; it is out of use until an operator resets it"
            );
            let labels = [("provider", provider.name.as_str())];
            telemetry::counter(metric::KEYS_DISABLED, &labels).increment(1);
            if let Err(e) = self.state.disable_key(&provider.name, index, &reason).await {
                tracing::warn!(provider = %provider.name, error = %e, "could not record the disabled key in the state backend");
            }
        }
    }
}

/// The outcome attribute of an `upstream` span: `ok` or the failure's label,
/// as `floodgate_upstream_request_duration_seconds` names it.
const UPSTREAM_OUTCOME: &str = "floodgate.upstream.outcome";

/// Marks an `upstream` span whose call was dropped before it answered.
struct Unfinished<'s> {
    span: &'s Span,
    answered: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.span.set(UPSTREAM_OUTCOME, "cancelled");
        }
    }
}

/// The `upstream` span of one call (a child of the request's current span),
/// with the OpenTelemetry GenAI and HTTP client attributes that apply. No
/// attribute holds a key (only its index in the provider's list), a body or
/// a prompt.
fn upstream_span<A: Attempt>(target: &Target, key: Option<&Key>, number: u32, hedge: bool) -> Span {
    let span = Span::child("upstream", SpanKind::Client);
    if !span.is_recording() {
        return span;
    }
    let provider = &target.provider;
    span.set("gen_ai.operation.name", A::OPERATION);
    span.set("gen_ai.system", trace::gen_ai_system(provider.kind));
    span.set("gen_ai.provider.name", trace::gen_ai_system(provider.kind));
    span.set_str("gen_ai.request.model", &target.model);
    span.set_str("floodgate.provider", &provider.name);
    span.set("floodgate.attempt", i64::from(number));
    span.set("floodgate.hedge", hedge);
    if A::STREAMED {
        span.set("floodgate.stream", true);
    }
    if let Some(key) = key {
        span.set("floodgate.key_index", key.index as i64);
    }
    if let Ok(uri) = provider.base_url.parse::<http::Uri>() {
        if let Some(host) = uri.host() {
            span.set_str("server.address", host);
        }
        if let Some(port) = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        }) {
            span.set("server.port", i64::from(port));
        }
    }
    span
}

/// The index of the rule that matched, if any, and the targets it (or the
/// alias) chose. Rules count prompts with the tokenizer of the alias's first
/// target.
fn choose_targets<'a, A: Attempt>(alias: &'a Alias, op: &A) -> (Option<usize>, &'a [Target]) {
    let tokenizer = alias.targets.first().map_or(Tokenizer::Approx, |t| t.tokenizer);
    match op.features().and_then(|f| rules::choose(&alias.rules, f, tokenizer)) {
        Some((rule, targets)) => (Some(rule), targets),
        None => (None, &alias.targets),
    }
}

/// A successful call's value and where it came from.
fn routed<T>(
    target: &Target,
    value: T,
    attempts: u32,
    waited: Duration,
    hedged: bool,
) -> Routed<T> {
    Routed {
        value,
        provider: target.provider.name.clone(),
        model: target.model.clone(),
        attempts,
        waited,
        hedged,
    }
}

/// The order a request tries the targets in, by the alias's strategy.
fn order(alias: &Alias, targets: &[Target]) -> Vec<usize> {
    if targets.len() <= 1 || alias.strategy == crate::config::Strategy::Fallback {
        return (0..targets.len()).collect();
    }
    let now = (alias.strategy == crate::config::Strategy::LeastLatency).then(Instant::now);
    let candidates: Vec<balance::Candidate> = targets
        .iter()
        .map(|t| balance::Candidate {
            weight: t.weight,
            in_flight: t.health.stats.in_flight(),
            ewma: match now {
                Some(now) => t.health.stats.decayed_ewma(now),
                None => t.health.stats.ewma(),
            },
            available: t.health.breaker.allows(),
        })
        .collect();
    let mut rng = fastrand::Rng::new();
    balance::order(alias.strategy, &candidates, &mut rng)
}

pub(super) struct Chat<'r> {
    req: &'r ChatRequest,
    hints: &'r ClientHints,
    estimate: ChatEstimate<'r>,
}

impl<'r> Chat<'r> {
    pub(super) fn new(req: &'r ChatRequest, hints: &'r ClientHints) -> Self {
        Chat { req, hints, estimate: ChatEstimate::new(req) }
    }
}

fn has_images(req: &ChatRequest) -> bool {
    req.messages.iter().any(|m| m.content.iter().any(|p| matches!(p, Part::Image { .. })))
}

impl Features for Chat<'_> {
    fn prompt_tokens(&self, tokenizer: Tokenizer) -> u32 {
        self.estimate.prompt_tokens(tokenizer)
    }
    fn has_tools(&self) -> bool {
        !self.req.tools.is_empty()
    }
    fn has_images(&self) -> bool {
        has_images(self.req)
    }
}

impl Attempt for Chat<'_> {
    type Output = ChatResponse;
    const HEDGE: bool = true;
    const OPERATION: &'static str = "chat";
    fn estimate(&self, target: &Target) -> u32 {
        self.estimate.reservation(target.tokenizer)
    }
    fn features(&self) -> Option<&dyn Features> {
        Some(self)
    }
    fn settle(output: &mut ChatResponse, reservation: Reservation) {
        reservation.settle(output.usage.total());
    }
    fn record(output: &ChatResponse, span: &Span) {
        span.set("gen_ai.usage.input_tokens", i64::from(output.usage.input_tokens));
        span.set("gen_ai.usage.output_tokens", i64::from(output.usage.output_tokens));
        if !output.model.is_empty() {
            span.set_str("gen_ai.response.model", &output.model);
        }
    }
    fn call<'a>(
        &'a self,
        target: &'a Target,
        key: Option<&'a Key>,
    ) -> impl Future<Output = Result<ChatResponse, ProviderError>> + Send + 'a {
        target.provider.chat(self.req, &target.model, key, self.hints)
    }
}

pub(super) struct Stream<'r> {
    chat: Chat<'r>,
}

impl<'r> Stream<'r> {
    pub(super) fn new(req: &'r ChatRequest, hints: &'r ClientHints) -> Self {
        Stream { chat: Chat::new(req, hints) }
    }
}

impl Attempt for Stream<'_> {
    type Output = StartedStream;
    const HEDGE: bool = false;
    const OPERATION: &'static str = "chat";
    const STREAMED: bool = true;
    fn estimate(&self, target: &Target) -> u32 {
        self.chat.estimate(target)
    }
    fn features(&self) -> Option<&dyn Features> {
        Some(&self.chat)
    }
    fn settle(output: &mut StartedStream, reservation: Reservation) {
        output.reservation = reservation;
    }
    fn call<'a>(
        &'a self,
        target: &'a Target,
        key: Option<&'a Key>,
    ) -> impl Future<Output = Result<StartedStream, ProviderError>> + Send + 'a {
        start_stream(self.chat.req, self.chat.hints, target, key)
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

pub(super) struct Embeddings<'r> {
    pub(super) req: &'r EmbeddingsRequest,
}

impl Attempt for Embeddings<'_> {
    type Output = EmbeddingsResponse;
    const HEDGE: bool = false;
    const OPERATION: &'static str = "embeddings";
    fn estimate(&self, target: &Target) -> u32 {
        estimate::embeddings(self.req, target.tokenizer)
    }
    fn features(&self) -> Option<&dyn Features> {
        None
    }
    fn settle(output: &mut EmbeddingsResponse, reservation: Reservation) {
        reservation.settle(output.usage.input_tokens);
    }
    fn record(output: &EmbeddingsResponse, span: &Span) {
        span.set("gen_ai.usage.input_tokens", i64::from(output.usage.input_tokens));
    }
    fn call<'a>(
        &'a self,
        target: &'a Target,
        key: Option<&'a Key>,
    ) -> impl Future<Output = Result<EmbeddingsResponse, ProviderError>> + Send + 'a {
        target.provider.embeddings(self.req, &target.model, key)
    }
}
