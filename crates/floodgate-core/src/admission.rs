//! Client limits on the request path: per client IP (a middleware, before
//! the body is read), then per virtual key and per end user, with the key's
//! budget (in the handler, once the model and the prompt are known).
//!
//! Each stage is one [`Limiter::admit`] call: every limit of that stage,
//! its concurrency slot and its budget are taken together or not at all.
//! The state of the tightest request limit and the tightest token limit
//! becomes the answer's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
//! headers (reset in seconds); a refusal is 429 with `retry-after` and a
//! `code`: `rate_limit_exceeded`, `tokens_exceeded`, `concurrency_exceeded`
//! or `budget_exceeded`.
//!
//! Token limits are charged the prompt estimate at admission and corrected
//! with the real usage when the request ends. A budget admits a request while
//! spend + the estimated prompt cost fits; the actual cost (output included)
//! is charged afterwards, so the last admitted request may overrun the
//! budget by its own cost — never by more.
//!
//! `floodgate_budget_used_ratio_max` warns before a budget runs out: the
//! highest fraction spent among the budgets of the keys this node serves
//! ([`BudgetUse`]), read back from the limiter after a request's spend, at
//! most every [`BUDGET_READ_EVERY`] per key, and on every budget refusal.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::app::AppState;
use crate::config::{LimitsConfig, UserLimits};
use crate::http::error::{ApiError, format_for_path};
use crate::limiter::{
    BudgetCheck, Check, LimitState, Limiter, Rate, Refusal, Settlement, Slot, Verdict,
};
use crate::pipeline::auth::Caller;
use crate::store::{BudgetPeriod, Store, VirtualKey};
use crate::telemetry::trace::{Span, SpanKind};
use crate::telemetry::{self, metric};

const MINUTE: Duration = Duration::from_secs(60);

/// How long restoring a key's spend from the ledger may hold its first request.
const SEED_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a key's budget use is read back for the gauge (per node, per key).
const BUDGET_READ_EVERY: Duration = Duration::from_secs(10);

/// The end-user header an app's backend sets.
pub const USER_HEADER: &str = "x-floodgate-user";

#[derive(Debug)]
pub struct Limits {
    pub limiter: Arc<dyn Limiter>,
    config: LimitsConfig,
    store: Arc<dyn Store>,
    /// Budget counters this node has restored from the ledger.
    seeded: Mutex<HashSet<String>>,
    uses: Arc<BudgetUse>,
}

/// The budgets of the keys this node has served, for
/// `floodgate_budget_used_ratio_max`: per budget counter (a key's period),
/// the fraction spent when last read. One gauge for the node however many
/// keys (an alert says a budget is near its end; `/admin/usage` says whose).
#[derive(Debug, Default)]
struct BudgetUse(Mutex<Uses>);

#[derive(Debug, Default)]
struct Uses {
    counters: HashMap<String, Used>,
    /// What the gauge says, and when it was last recomputed from every counter.
    highest: f64,
    recomputed: Option<tokio::time::Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Used {
    ratio: f64,
    /// Unix ms at which the period ends (`None`: a total budget): then the
    /// counter no longer counts.
    until: Option<i64>,
    read: Option<tokio::time::Instant>,
}

impl BudgetUse {
    /// Whether the counter is due a read; if so it counts as read now, so
    /// that concurrent requests of one key read it once.
    fn due(&self, counter: &str, until: Option<i64>) -> bool {
        let now = tokio::time::Instant::now();
        let Ok(mut uses) = self.0.lock() else {
            return false;
        };
        let used = uses.counters.entry(counter.to_string()).or_insert(Used {
            ratio: 0.0,
            until,
            read: None,
        });
        if used.read.is_some_and(|at| now.duration_since(at) < BUDGET_READ_EVERY) {
            return false;
        }
        used.read = Some(now);
        true
    }

    /// Reads a budget's spend without taking anything: a budget-only
    /// admission whose estimate is the whole budget passes only when nothing
    /// is spent, and its refusal carries the spend.
    async fn read(&self, limiter: &dyn Limiter, counter: String, watch: &Watch) {
        let probe = BudgetCheck {
            key: counter,
            max_usd: watch.max_usd,
            estimate_usd: watch.max_usd,
            ttl: watch.ttl,
        };
        let until = watch.until;
        match limiter.admit(&[], None, Some(&probe)).await {
            Ok(Verdict { refusal: Some(Refusal::Budget { spent_usd }), .. }) => {
                self.record(&probe.key, spent_usd, probe.max_usd, until);
            }
            Ok(Verdict { refusal: None, .. }) => self.record(&probe.key, 0.0, probe.max_usd, until),
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "cannot read a budget's spend for its gauge"),
        }
    }

    /// Notes a budget's spend and updates the gauge: at once when it is the
    /// highest, and from every counter (ended periods dropped) at most every
    /// [`BUDGET_READ_EVERY`], so a budget that was reset or raised stops
    /// counting by then.
    fn record(&self, counter: &str, spent_usd: f64, max_usd: f64, until: Option<i64>) {
        let ratio = if max_usd > 0.0 { spent_usd / max_usd } else { 0.0 };
        let now = tokio::time::Instant::now();
        let Ok(mut uses) = self.0.lock() else {
            return;
        };
        let read = uses.counters.get(counter).and_then(|used| used.read);
        uses.counters.insert(counter.to_string(), Used { ratio, until, read });
        if uses.recomputed.is_none_or(|at| now.duration_since(at) >= BUDGET_READ_EVERY) {
            let now_ms = crate::time::now_ms();
            uses.counters.retain(|_, used| used.until.is_none_or(|end| end > now_ms));
            uses.highest = uses.counters.values().map(|used| used.ratio).fold(0.0, f64::max);
            uses.recomputed = Some(now);
        } else {
            uses.highest = uses.highest.max(ratio);
        }
        metrics::gauge!(metric::BUDGET_USED_MAX).set(uses.highest);
    }
}

/// A request's budget, for its gauge once its spend is settled.
#[derive(Debug)]
struct Watch {
    uses: Arc<BudgetUse>,
    max_usd: f64,
    ttl: Option<Duration>,
    until: Option<i64>,
}

/// What the answer's `x-ratelimit-*` headers will say: the tightest request
/// and token limits seen by any stage.
#[derive(Debug, Clone, Default)]
pub struct RateHeaders(Arc<Mutex<Tightest>>);

#[derive(Debug, Default)]
struct Tightest {
    requests: Option<LimitState>,
    tokens: Option<LimitState>,
    /// On AI routes, the per-IP checks, left for the handler's admission so
    /// that a request costs one limiter call (one Redis round trip).
    deferred_ip: Vec<Named>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Requests,
    Tokens,
}

impl RateHeaders {
    fn defer(&self, checks: Vec<Named>) {
        if let Ok(mut t) = self.0.lock() {
            t.deferred_ip = checks;
        }
    }

    fn take_deferred(&self) -> Vec<Named> {
        self.0.lock().map(|mut t| std::mem::take(&mut t.deferred_ip)).unwrap_or_default()
    }

    fn note(&self, unit: Unit, state: LimitState) {
        let Ok(mut t) = self.0.lock() else {
            return;
        };
        let slot = match unit {
            Unit::Requests => &mut t.requests,
            Unit::Tokens => &mut t.tokens,
        };
        if slot.is_none_or(|s| state.remaining < s.remaining) {
            *slot = Some(state);
        }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        let Ok(t) = self.0.lock() else {
            return;
        };
        for (unit, state) in [(Unit::Requests, t.requests), (Unit::Tokens, t.tokens)] {
            let Some(state) = state else {
                continue;
            };
            let reset = state.reset.as_secs() + u64::from(state.reset.subsec_nanos() > 0);
            let names = match unit {
                Unit::Requests => &REQUEST_HEADERS,
                Unit::Tokens => &TOKEN_HEADERS,
            };
            for (name, value) in names.iter().zip([state.limit, state.remaining, reset]) {
                headers.insert(name.clone(), HeaderValue::from(value));
            }
        }
    }
}

const REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// One limit of a stage, named for messages and metrics.
#[derive(Debug)]
struct Named {
    check: Check,
    unit: Unit,
    /// `key "name"`, `user "id"`, `IP 1.2.3.4`.
    who: String,
    scope: &'static str,
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// nearest address in `x-forwarded-for` that is not a trusted proxy.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Garbage in the chain: trust nothing further left.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

fn is_ai_route(path: &str) -> bool {
    matches!(path, "/v1/chat/completions" | "/v1/messages" | "/v1/embeddings")
        || path.starts_with("/v1/jobs")
}

fn period_text(period: Duration) -> String {
    humantime::format_duration(period).to_string()
}

fn secs_ceil(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The per-IP stage; also puts the [`RateHeaders`] in request extensions and
/// writes them on the answer. On AI routes the checks are handed to the
/// handler's admission instead, which takes them with the key's and the end
/// user's in one limiter call; so there an IP is charged for the requests
/// that reach admission (a request refused earlier, for a bad key or a
/// malformed body, costs the gateway little and is not counted).
pub async fn limit_ip(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let headers = RateHeaders::default();
    request.extensions_mut().insert(headers.clone());
    let limits = &app.limits;
    let path = request.uri().path();
    let mut checks = Vec::new();
    if limits.config.ip.is_some() || limits.config.ip_ai.is_some() {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        let ip = client_ip(request.headers(), peer, &limits.config.trusted_proxies);
        if let Some(rate) = limits.config.ip {
            checks.push(Named {
                check: Check { key: format!("ip:{ip}"), rate, cost: 1 },
                unit: Unit::Requests,
                who: format!("IP address {ip}"),
                scope: "ip",
            });
        }
        if let Some(rate) = limits.config.ip_ai
            && is_ai_route(path)
        {
            checks.push(Named {
                check: Check { key: format!("ipai:{ip}"), rate, cost: 1 },
                unit: Unit::Requests,
                who: format!("IP address {ip} on AI routes"),
                scope: "ip_ai",
            });
        }
    }
    if !checks.is_empty() && is_ai_route(path) {
        headers.defer(checks);
    } else if !checks.is_empty() {
        let format = format_for_path(path);
        if let Err(error) = limits.run(&checks, None, None, &headers).await {
            let mut response = error.into_response_for(format);
            headers.apply(response.headers_mut());
            return response.into_response();
        }
    }
    let mut response = next.run(request).await;
    headers.apply(response.headers_mut());
    response
}

/// What the handler knows when it admits a request.
#[derive(Debug)]
pub struct Ask<'a> {
    pub caller: &'a Caller,
    /// The end user: JWT `sub`, else `x-floodgate-user`, else the body's `user`.
    pub user: Option<&'a str>,
    /// The model name as the client sent it (an alias).
    pub model: &'a str,
    /// Estimated prompt tokens.
    pub tokens: u64,
    /// Estimated prompt cost in USD.
    pub cost_usd: f64,
}

/// The end user of a request: the JWT's, else the header's, else the body's.
pub fn end_user<'a>(
    caller: &'a Caller,
    headers: &'a HeaderMap,
    body_user: Option<&'a str>,
) -> Option<&'a str> {
    if let Caller::User(user) = caller {
        return Some(&user.id);
    }
    headers
        .get(USER_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(body_user)
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= 256)
}

/// Limits held for one request until it ends: settle them with the real
/// usage, or drop them (the slot is freed either way).
#[derive(Debug)]
pub struct Admitted {
    limiter: Arc<dyn Limiter>,
    /// Token limits and what was charged to them.
    tokens: Vec<(String, Rate, u64)>,
    slots: Vec<Slot>,
    budget: Option<(String, Option<Duration>)>,
    watch: Option<Watch>,
    settled: bool,
}

impl Admitted {
    /// Corrects token limits to `tokens` (input + output), charges `cost_usd`
    /// to the budget and frees the slots, in the background.
    pub fn settle(mut self, tokens: u64, cost_usd: f64) {
        self.settled = true;
        let limiter = self.limiter.clone();
        let adjust = std::mem::take(&mut self.tokens);
        let slots = std::mem::take(&mut self.slots);
        let budget = self.budget.take();
        // The budget's use is read back after its spend, when due.
        let read = match (&budget, self.watch.take()) {
            (Some((counter, _)), Some(watch))
                if cost_usd > 0.0 && watch.uses.due(counter, watch.until) =>
            {
                Some((counter.clone(), watch))
            }
            _ => None,
        };
        if adjust.is_empty() && slots.is_empty() && budget.is_none() {
            return;
        }
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        let settlement = Settlement {
            adjust: adjust
                .into_iter()
                .map(|(key, rate, charged)| {
                    (key, rate, tokens - i64::try_from(charged).unwrap_or(i64::MAX))
                })
                .filter(|(_, _, delta)| *delta != 0)
                .collect(),
            spend: budget.filter(|_| cost_usd > 0.0).map(|(key, ttl)| (key, cost_usd, ttl)),
            release: slots,
        };
        if settlement.is_empty() {
            return;
        }
        let settle = async move {
            if let Err(error) = limiter.settle(&settlement).await {
                tracing::warn!(%error, "could not settle a request's limits");
            } else if let Some((counter, watch)) = read {
                watch.uses.read(&*limiter, counter, &watch).await;
            }
        };
        // The memory limiter answers at once: no task for it.
        let mut settle = Box::pin(settle);
        if futures_util::FutureExt::now_or_never(settle.as_mut()).is_none() {
            spawn(settle);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.settled || self.slots.is_empty() {
            return;
        }
        let limiter = self.limiter.clone();
        let slots = std::mem::take(&mut self.slots);
        spawn(async move {
            for slot in slots {
                let _ = limiter.release(&slot).await;
            }
        });
    }
}

fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
    }
}

impl Limits {
    pub fn new(limiter: Arc<dyn Limiter>, config: LimitsConfig, store: Arc<dyn Store>) -> Self {
        Limits {
            limiter,
            config,
            store,
            seeded: Mutex::new(HashSet::new()),
            uses: Arc::new(BudgetUse::default()),
        }
    }

    /// The key and end-user stage, with the key's model list and budget;
    /// the `admission` span of the request's trace.
    pub async fn admit(&self, ask: &Ask<'_>, headers: &RateHeaders) -> Result<Admitted, ApiError> {
        let span = Span::child("admission", SpanKind::Internal);
        let result = self.check(ask, headers).await;
        if span.is_recording() {
            let outcome = match &result {
                Ok(_) => "admitted",
                Err(error) => error.kind(),
            };
            span.set("floodgate.admission.outcome", outcome);
            span.set("floodgate.admission.end_user", ask.user.is_some());
        }
        result
    }

    async fn check(&self, ask: &Ask<'_>, headers: &RateHeaders) -> Result<Admitted, ApiError> {
        let key = ask.caller.key();
        if let Some(key) = key
            && let Some(models) = &key.models
            && !models.iter().any(|m| m == ask.model)
        {
            return Err(ApiError::ModelNotAllowed {
                model: ask.model.to_string(),
                allowed: models.clone(),
            });
        }
        let mut checks = headers.take_deferred();
        let mut slots = Vec::new();
        if let Some(key) = key {
            let who = format!("key {:?}", key.name);
            let id = &key.id;
            self.rates(
                &mut checks,
                &format!("k:{id}"),
                &who,
                "key",
                key.rpm.map(u64::from),
                key.tpm.map(u64::from),
                ask.tokens,
            );
            if let Some(max) = key.max_concurrent {
                slots.push((self.slot(format!("k:{id}:conc"), max), who, "key"));
            }
        }
        if let Some(user) = ask.user {
            let limits = self.user_limits(ask.caller);
            // An app's users are its own: the same id under two keys is two users.
            let scope = key.map_or("-", |k| k.id.as_str());
            let counter = format!("u:{scope}:{user}");
            let who = format!("user {user:?}");
            self.rates(&mut checks, &counter, &who, "user", limits.rpm, limits.tpm, ask.tokens);
            if let Some(max) = limits.max_concurrent {
                slots.push((self.slot(format!("{counter}:conc"), max), who, "user"));
            }
        }
        let budget = match key {
            Some(key) => self.budget(key, ask.cost_usd).await,
            None => None,
        };
        if checks.is_empty() && slots.is_empty() && budget.is_none() {
            return Ok(self.admitted(Vec::new(), Vec::new(), None));
        }
        // The first slot goes with the limits; a second (key and user both
        // capped) takes its own call.
        let mut slots = slots.into_iter();
        let first = slots.next();
        self.run(
            &checks,
            first.as_ref().map(|(slot, who, scope)| (slot, who.as_str(), *scope)),
            budget.as_ref().map(|(check, period, _)| (check, *period)),
            headers,
        )
        .await?;
        let tokens = checks
            .iter()
            .filter(|n| n.unit == Unit::Tokens)
            .map(|n| (n.check.key.clone(), n.check.rate, n.check.cost))
            .collect();
        let watch = budget.as_ref().map(|(check, _, until)| Watch {
            uses: self.uses.clone(),
            max_usd: check.max_usd,
            ttl: check.ttl,
            until: *until,
        });
        let mut admitted = self.admitted(
            tokens,
            first.into_iter().map(|(slot, _, _)| slot).collect(),
            budget.map(|(check, _, _)| (check.key, check.ttl)),
        );
        admitted.watch = watch;
        for (slot, who, scope) in slots {
            // A refusal drops `admitted`, which frees the first slot.
            self.run(&[], Some((&slot, &who, scope)), None, headers).await?;
            admitted.slots.push(slot);
        }
        Ok(admitted)
    }

    fn admitted(
        &self,
        tokens: Vec<(String, Rate, u64)>,
        slots: Vec<Slot>,
        budget: Option<(String, Option<Duration>)>,
    ) -> Admitted {
        Admitted {
            limiter: self.limiter.clone(),
            tokens,
            slots,
            budget,
            watch: None,
            settled: false,
        }
    }

    fn user_limits(&self, caller: &Caller) -> UserLimits {
        if let Caller::User(user) = caller
            && let Some(tier) = &user.tier
            && let Some(limits) = self.config.tiers.get(tier)
        {
            return *limits;
        }
        self.config.user
    }

    #[expect(clippy::too_many_arguments, reason = "one call per scope, all named at the call")]
    fn rates(
        &self,
        out: &mut Vec<Named>,
        counter: &str,
        who: &str,
        scope: &'static str,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) {
        // The limit is part of the counter's name: a changed limit starts a
        // fresh counter rather than inheriting a debt measured at the old rate.
        if let Some(limit) = rpm {
            out.push(Named {
                check: Check {
                    key: format!("{counter}:rpm:{limit}"),
                    rate: Rate { limit, period: MINUTE },
                    cost: 1,
                },
                unit: Unit::Requests,
                who: who.to_string(),
                scope,
            });
        }
        if let Some(limit) = tpm {
            out.push(Named {
                check: Check {
                    key: format!("{counter}:tpm:{limit}"),
                    rate: Rate { limit, period: MINUTE },
                    cost: tokens,
                },
                unit: Unit::Tokens,
                who: who.to_string(),
                scope,
            });
        }
    }

    fn slot(&self, key: String, max: u32) -> Slot {
        let lease_id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
            .into_uuid()
            .to_string();
        Slot { key, max, lease_id, lease: self.config.concurrency_lease }
    }

    /// The key's budget for the current period (and when the period ends),
    /// its counter restored from the ledger the first time this node meets it.
    async fn budget(
        &self,
        key: &VirtualKey,
        estimate: f64,
    ) -> Option<(BudgetCheck, BudgetPeriod, Option<i64>)> {
        let max = key.max_budget_usd?;
        let now = crate::time::now_ms();
        let (label, start, end) = match key.budget_period {
            BudgetPeriod::Day => (
                crate::time::day(now),
                crate::time::day_start(now),
                Some(crate::time::next_day_start(now)),
            ),
            BudgetPeriod::Month => (
                crate::time::month(now),
                crate::time::month_start(now),
                Some(crate::time::next_month_start(now)),
            ),
            BudgetPeriod::Total => ("total".to_string(), 0, None),
        };
        let counter = format!("b:{}:{label}", key.id);
        // Kept a day past the period's end, then gone.
        let ttl = end.map(|end| Duration::from_millis((end - now).max(0) as u64 + 86_400_000));
        let fresh = self.seeded.lock().map(|s| !s.contains(&counter)).unwrap_or(false);
        if fresh {
            // Once per key and period on this node, whatever the outcome: a
            // database that is down must not cost every request a timeout.
            if let Ok(mut seeded) = self.seeded.lock() {
                seeded.insert(counter.clone());
            }
            let spent = tokio::time::timeout(SEED_TIMEOUT, self.store.key_spend(&key.id, start))
                .await
                .map_err(|_| "no answer in time".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match spent {
                Ok(spent) => {
                    if let Err(error) = self.limiter.seed_spend(&counter, spent, ttl).await {
                        tracing::warn!(%error, key = %key.id, "cannot restore a key's spend into the limiter");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, key = %key.id, "cannot read a key's spend from the ledger; on this node its budget counts from now");
                }
            }
        }
        Some((
            BudgetCheck { key: counter, max_usd: max, estimate_usd: estimate, ttl },
            key.budget_period,
            end,
        ))
    }

    /// One limiter call for a stage; a refusal becomes the 429.
    async fn run(
        &self,
        checks: &[Named],
        slot: Option<(&Slot, &str, &'static str)>,
        budget: Option<(&BudgetCheck, BudgetPeriod)>,
        headers: &RateHeaders,
    ) -> Result<(), ApiError> {
        let plain: Vec<Check> = checks.iter().map(|n| n.check.clone()).collect();
        let verdict: Verdict =
            match self.limiter.admit(&plain, slot.map(|s| s.0), budget.map(|b| b.0)).await {
                Ok(verdict) => verdict,
                Err(error) => {
                    // The fallback limiter already keeps serving on local
                    // state; an error here means even that failed: let the
                    // request through rather than refuse everyone.
                    metrics::counter!(metric::LIMITER_ERRORS).increment(1);
                    tracing::warn!(%error, "the limiter failed; admitting without limits");
                    return Ok(());
                }
            };
        for (named, state) in checks.iter().zip(&verdict.states) {
            headers.note(named.unit, *state);
        }
        let Some(refusal) = verdict.refusal else {
            return Ok(());
        };
        let error = match refusal {
            Refusal::Limit { index, retry_after } => {
                let Some(named) = checks.get(index) else {
                    return Ok(());
                };
                let rate = named.check.rate;
                let (code, unit) = match named.unit {
                    Unit::Requests => ("rate_limit_exceeded", "requests"),
                    Unit::Tokens => ("tokens_exceeded", "tokens"),
                };
                let per = period_text(rate.period);
                let message = match retry_after {
                    Some(after) => format!(
                        "{} is at its limit of {} {unit} per {per}; retry in {} s",
                        named.who,
                        rate.limit,
                        secs_ceil(after)
                    ),
                    None => format!(
                        "this request needs about {} {unit}, more than the {} {unit} per {per} \
                         that {} may use; send a shorter request",
                        named.check.cost, rate.limit, named.who
                    ),
                };
                telemetry::counter(metric::LIMITED, &[("scope", named.scope), ("code", code)])
                    .increment(1);
                ApiError::Limited { code, message, retry_after }
            }
            Refusal::Concurrency { running } => {
                let (slot, who, scope) = slot.map_or((None, "", "key"), |s| (Some(s.0), s.1, s.2));
                telemetry::counter(
                    metric::LIMITED,
                    &[("scope", scope), ("code", "concurrency_exceeded")],
                )
                .increment(1);
                ApiError::Limited {
                    code: "concurrency_exceeded",
                    message: format!(
                        "{who} already has {running} requests running, its limit of {}; retry when one finishes",
                        slot.map_or(running, |s| s.max)
                    ),
                    retry_after: Some(Duration::from_secs(1)),
                }
            }
            Refusal::Budget { spent_usd } => {
                let (check, period) =
                    budget.map_or((None, BudgetPeriod::Total), |b| (Some(b.0), b.1));
                telemetry::counter(
                    metric::LIMITED,
                    &[("scope", "key"), ("code", "budget_exceeded")],
                )
                .increment(1);
                let now = crate::time::now_ms();
                let retry_after = match period {
                    BudgetPeriod::Day => Some(crate::time::next_day_start(now) - now),
                    BudgetPeriod::Month => Some(crate::time::next_month_start(now) - now),
                    BudgetPeriod::Total => None,
                }
                .map(|ms| Duration::from_millis(ms.max(0) as u64));
                if let Some(check) = check {
                    let until = retry_after.map(|after| now + after.as_millis() as i64);
                    self.uses.record(&check.key, spent_usd, check.max_usd, until);
                }
                let description = match retry_after {
                    Some(reset) => format!(
                        "{} budget; it resets in {}",
                        period.as_str(),
                        period_text(Duration::from_secs(reset.as_secs()))
                    ),
                    None => "total budget".to_string(),
                };
                ApiError::Limited {
                    code: "budget_exceeded",
                    message: format!(
                        "this key has spent ${spent_usd:.6} of its ${:.2} {description}",
                        check.map_or(0.0, |c| c.max_usd)
                    ),
                    retry_after,
                }
            }
        };
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static(value));
        h
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn highest(uses: &BudgetUse) -> f64 {
        uses.0.lock().unwrap().highest
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_gauge_follows_the_highest_budget_of_a_period_not_over() {
        let uses = BudgetUse::default();
        let now = crate::time::now_ms();
        let month = Some(now + 86_400_000);
        // Each key is read once per interval, concurrent requests included.
        assert!(uses.due("b:a:2026-12", month));
        assert!(!uses.due("b:a:2026-12", month));
        uses.record("b:a:2026-12", 30.0, 100.0, month);
        assert!((highest(&uses) - 0.3).abs() < 1e-12);
        // A higher one shows at once.
        uses.record("b:b:2026-12", 95.0, 100.0, Some(now + 1_000));
        assert!((highest(&uses) - 0.95).abs() < 1e-12);
        // A lower one waits for the next recompute, every BUDGET_READ_EVERY.
        uses.record("b:b:2026-12", 50.0, 100.0, Some(now + 1_000));
        assert!((highest(&uses) - 0.95).abs() < 1e-12);
        tokio::time::advance(BUDGET_READ_EVERY).await;
        assert!(uses.due("b:a:2026-12", month), "due again after the interval");
        uses.record("b:a:2026-12", 40.0, 100.0, month);
        assert!((highest(&uses) - 0.5).abs() < 1e-12);
        // A period that has ended (here: b's, whose end is in the past) stops counting.
        uses.record("b:b:2026-12", 99.0, 100.0, Some(now - 1));
        tokio::time::advance(BUDGET_READ_EVERY).await;
        uses.record("b:a:2026-12", 40.0, 100.0, month);
        assert!((highest(&uses) - 0.4).abs() < 1e-12);
        assert_eq!(uses.0.lock().unwrap().counters.len(), 1);
    }

    #[tokio::test]
    async fn a_budget_is_read_without_taking_anything() {
        let limiter = crate::limiter::MemoryLimiter::new();
        let uses = BudgetUse::default();
        let watch =
            Watch { uses: Arc::new(BudgetUse::default()), max_usd: 2.0, ttl: None, until: None };
        uses.read(&limiter, "b:k:total".into(), &watch).await;
        assert_eq!(highest(&uses), 0.0, "nothing spent");
        limiter.spend("b:k:total", 1.5, None).await.unwrap();
        uses.read(&limiter, "b:k:total".into(), &watch).await;
        assert!((highest(&uses) - 0.75).abs() < 1e-12);
        // Reading took nothing: a request within the budget is still admitted.
        let check =
            BudgetCheck { key: "b:k:total".into(), max_usd: 2.0, estimate_usd: 0.4, ttl: None };
        assert!(limiter.admit(&[], None, Some(&check)).await.unwrap().allowed());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        // Untrusted peer: the header is the client's own claim and ignored.
        assert_eq!(client_ip(&xff("203.0.113.7"), peer, &[]), peer);
        // Trusted peer: the nearest untrusted hop.
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(&xff("203.0.113.7"), peer, &trusted), client);
        // A client forging a hop to the left does not move its address.
        assert_eq!(client_ip(&xff("1.1.1.1, 203.0.113.7, 10.0.0.9"), peer, &trusted), client);
        // No header: the proxy itself.
        assert_eq!(client_ip(&HeaderMap::new(), peer, &trusted), peer);
        // Garbage stops the walk at the last good hop.
        assert_eq!(client_ip(&xff("nonsense, 203.0.113.7"), peer, &trusted), client);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(client_ip(&xff("2001:db8::1"), peer, &trusted), v6);
    }
}
