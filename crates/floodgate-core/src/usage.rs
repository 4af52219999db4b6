//! Accounting for one request: token and cost metrics, and its ledger record.
//!
//! An [`Accounting`] is made when a request is routed and finished exactly
//! once with its [`Outcome`] — by the handler for a complete answer or a
//! failure, by the stream relay when a stream ends, fails or is abandoned —
//! or, dropped unfinished because its client went away first, as a 499.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use floodgate_protocol::Usage;

use crate::admission::Admitted;
use crate::app::AppState;
use crate::ledger::Ledger;
use crate::pipeline::observe::RequestId;
use crate::pricing::PriceTable;
use crate::store::UsageRecord;
use crate::telemetry::{self, metric};

#[derive(Debug)]
pub struct Accounting {
    ledger: Ledger,
    prices: Arc<PriceTable>,
    request_id: Arc<str>,
    route: &'static str,
    model: String,
    stream: bool,
    started: Instant,
    key_id: Option<String>,
    user: Option<String>,
    /// Client limits held until the request ends.
    admitted: Option<Admitted>,
    finished: bool,
}

/// How a request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    provider: String,
    upstream_model: String,
    status: u16,
    usage: Usage,
    ttft: Option<Duration>,
    error: Option<&'static str>,
    retries: u32,
    /// Served from the response cache: no upstream tokens were spent.
    cache_hit: bool,
}

impl Outcome {
    pub fn answered(
        provider: &str,
        upstream_model: &str,
        usage: Usage,
        ttft: Option<Duration>,
    ) -> Self {
        Outcome {
            provider: provider.to_string(),
            upstream_model: upstream_model.to_string(),
            status: 200,
            usage,
            ttft,
            error: None,
            retries: 0,
            cache_hit: false,
        }
    }

    /// An answer served from the cache (or from an identical request's call):
    /// recorded with the tokens the client received, at no cost.
    pub fn cached(provider: &str, upstream_model: &str, usage: Usage) -> Self {
        Outcome { cache_hit: true, ..Outcome::answered(provider, upstream_model, usage, None) }
    }

    /// Upstream calls beyond the first (`attempts` counts them all).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.retries = attempts.saturating_sub(1);
        self
    }

    pub fn failed(status: u16, error: &'static str) -> Self {
        Outcome {
            provider: String::new(),
            upstream_model: String::new(),
            status,
            usage: Usage::default(),
            ttft: None,
            error: Some(error),
            retries: 0,
            cache_hit: false,
        }
    }

    /// An answer that began but did not complete (a stream that broke off
    /// or was abandoned): its tokens still count.
    pub fn with_error(mut self, error: &'static str) -> Self {
        self.error = Some(error);
        self
    }
}

impl Drop for Accounting {
    /// A request dropped before it was finished: its client went away while
    /// it waited (for capacity, or for a complete answer). It is recorded
    /// with nginx's 499 so the ledger still holds every request.
    fn drop(&mut self) {
        if !self.finished {
            self.record(Outcome::failed(499, "client_disconnected"));
        }
    }
}

/// A record id that sorts by time: the millisecond in hex, then 64 random
/// bits. New ids land at the end of the store's unique index instead of at
/// random places in it, which keeps inserts cheap as the table grows.
fn record_id(at_ms: i64) -> String {
    format!("{:012x}{:016x}", at_ms.max(0), fastrand::u64(..))
}

impl Accounting {
    pub fn new(
        app: &AppState,
        id: &RequestId,
        route: &'static str,
        model: &str,
        stream: bool,
    ) -> Self {
        Accounting {
            ledger: app.ledger.clone(),
            prices: app.prices.clone(),
            request_id: id.0.clone(),
            route,
            model: model.to_string(),
            stream,
            started: Instant::now(),
            key_id: None,
            user: None,
            admitted: None,
            finished: false,
        }
    }

    /// A record of another upstream call made for the same request (the
    /// semantic cache's embedding), by the same client, holding no limits.
    pub fn sibling(&self, route: &'static str, model: &str) -> Accounting {
        Accounting {
            ledger: self.ledger.clone(),
            prices: self.prices.clone(),
            request_id: self.request_id.clone(),
            route,
            model: model.to_string(),
            stream: false,
            started: Instant::now(),
            key_id: self.key_id.clone(),
            user: self.user.clone(),
            admitted: None,
            finished: false,
        }
    }

    /// Who made the request.
    pub fn set_client(&mut self, key_id: Option<&str>, user: Option<&str>) {
        self.key_id = key_id.map(str::to_string);
        self.user = user.map(str::to_string);
    }

    /// The client limits the request holds until it ends.
    pub fn hold(&mut self, admitted: Admitted) {
        self.admitted = Some(admitted);
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        self.finished = true;
        let cost = if outcome.cache_hit {
            0.0
        } else {
            self.prices.cost(&outcome.upstream_model, &outcome.usage)
        };
        if let Some(admitted) = self.admitted.take() {
            // A cached answer spends none of the client's tokens per minute.
            let tokens = if outcome.cache_hit {
                0
            } else {
                u64::from(outcome.usage.input_tokens) + u64::from(outcome.usage.output_tokens)
            };
            admitted.settle(tokens, cost);
        }
        if !outcome.provider.is_empty() && !outcome.cache_hit {
            let (provider, model) = (outcome.provider.as_str(), outcome.upstream_model.as_str());
            let labels =
                |direction| [("direction", direction), ("provider", provider), ("model", model)];
            telemetry::counter(metric::TOKENS, &labels("input"))
                .increment(u64::from(outcome.usage.input_tokens));
            telemetry::counter(metric::TOKENS, &labels("output"))
                .increment(u64::from(outcome.usage.output_tokens));
            // A gauge that only grows: the metrics facade's counters are integers.
            telemetry::gauge(metric::COST, &[("provider", provider), ("model", model)])
                .increment(cost);
        }
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let at_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.ledger.record(UsageRecord {
            record_id: record_id(at_ms),
            at_ms,
            request_id: self.request_id.to_string(),
            route: self.route.to_string(),
            key_id: self.key_id.take(),
            user: self.user.take(),
            model: std::mem::take(&mut self.model),
            provider: outcome.provider,
            upstream_model: outcome.upstream_model,
            status: outcome.status,
            stream: self.stream,
            input_tokens: outcome.usage.input_tokens,
            output_tokens: outcome.usage.output_tokens,
            cached_tokens: outcome.usage.cache_read_tokens,
            cost_usd: cost,
            latency_ms: millis(self.started.elapsed()),
            ttft_ms: outcome.ttft.map(millis),
            retries: outcome.retries,
            cache_hit: outcome.cache_hit,
            error: outcome.error.map(str::to_string),
        });
    }
}
