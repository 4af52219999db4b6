//! Client-side limits: requests and tokens per period (GCRA), concurrent
//! requests, and budget spend, for virtual keys, end users and client IPs.
//!
//! One trait, two backends: [`MemoryLimiter`] in this process (one node) and
//! [`RedisLimiter`] (a cluster), where a whole admission — every limit of a
//! request, its concurrency slot and its budget — is one script call, so one
//! round trip, with the time taken from Redis.
//!
//! GCRA, per limit `limit` units per `period`: the emission interval is
//! `T = period / limit`; each limit keeps a theoretical arrival time `tat`.
//! A check of cost `c` at `now` computes `new_tat = max(tat, now) + c·T` and
//! is allowed iff `new_tat - now <= period`. So a full bucket admits `limit`
//! at once, then one per `T`; `remaining = floor((period - (new_tat - now)) / T)`,
//! `reset = new_tat - now` (until the limit is whole again), and a refusal's
//! `retry_after = (new_tat - now) - period`. A cost above `limit` can never
//! pass and is refused with `retry_after = None`.

mod fallback;
mod memory;
mod redis;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;

pub use fallback::Fallback;
pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;

/// `limit` units (requests or tokens) per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub period: Duration,
}

/// One limit to check: the counter `key` (e.g. `k:key_abc:rpm`), its rate,
/// and what this request costs against it (1 for a request limit, the
/// estimated tokens for a token limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub key: String,
    pub rate: Rate,
    pub cost: u64,
}

/// A concurrency slot to take with the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub key: String,
    pub max: u32,
    /// Unique per request; release with the same id.
    pub lease_id: String,
    /// A slot whose holder died is freed after this (Redis only; in memory a
    /// slot is freed when its request ends, however it ends).
    pub lease: Duration,
}

/// A budget to hold the request to.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetCheck {
    /// The spend counter, period included (e.g. `b:key_abc:2026-12`).
    pub key: String,
    pub max_usd: f64,
    /// What the request is expected to cost. Refused when the spend is
    /// already at `max_usd`, or when spend + estimate would pass it.
    pub estimate_usd: f64,
    /// The counter expires this long after its last write (the period's end
    /// plus a margin); `None` keeps it.
    pub ttl: Option<Duration>,
}

/// The state of one checked limit after the check (for `x-ratelimit-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub limit: u64,
    pub remaining: u64,
    /// Until the limit is whole again.
    pub reset: Duration,
}

impl LimitState {
    /// The state of a limit of `rate` whose bucket is whole again in `reset`:
    /// `remaining = floor((period - reset) / T)`, none once `reset` reaches
    /// the period (a limit in debt after an upward [`Limiter::adjust`]).
    pub fn at(rate: Rate, reset: Duration) -> LimitState {
        let period = rate.period.as_nanos();
        let remaining = if period == 0 {
            rate.limit
        } else {
            let room = period.saturating_sub(reset.as_nanos());
            u64::try_from(room.saturating_mul(u128::from(rate.limit)) / period).unwrap_or(u64::MAX)
        };
        LimitState { limit: rate.limit, remaining, reset }
    }
}

/// Which part of an admission refused it.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// `checks[index]` has no room; `retry_after` is `None` when the cost
    /// exceeds the limit itself (it can never pass).
    Limit { index: usize, retry_after: Option<Duration> },
    /// The slot's `max` requests are already running.
    Concurrency { running: u32 },
    /// The budget is spent (or would be by the estimate).
    Budget { spent_usd: f64 },
}

/// The answer to [`Limiter::admit`]. When refused, nothing was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// One per check, in order (after this admission when allowed; as it
    /// stands when refused).
    pub states: Vec<LimitState>,
    pub refusal: Option<Refusal>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.refusal.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("limiter {backend}: {message}")]
pub struct LimiterError {
    pub backend: &'static str,
    pub message: String,
}

#[async_trait]
pub trait Limiter: Send + Sync + std::fmt::Debug {
    /// `memory` or `redis`.
    fn name(&self) -> &'static str;

    /// Checks every limit, the slot and the budget at once: either all are
    /// taken, or none (and the verdict says which refused).
    async fn admit(
        &self,
        checks: &[Check],
        slot: Option<&Slot>,
        budget: Option<&BudgetCheck>,
    ) -> Result<Verdict, LimiterError>;

    /// Corrects a token limit once the real count is known: `delta` units
    /// more (positive) or fewer (negative) than were checked. Never refuses.
    async fn adjust(&self, key: &str, rate: Rate, delta: i64) -> Result<(), LimiterError>;

    /// Frees a slot taken by [`Limiter::admit`].
    async fn release(&self, slot: &Slot) -> Result<(), LimiterError>;

    /// Adds the real cost of a request to a budget counter.
    async fn spend(
        &self,
        budget_key: &str,
        usd: f64,
        ttl: Option<Duration>,
    ) -> Result<(), LimiterError>;

    /// Sets a budget counter if it does not exist yet (a node restoring the
    /// period's spend from the ledger at start); returns the counter's value.
    async fn seed_spend(
        &self,
        budget_key: &str,
        usd: f64,
        ttl: Option<Duration>,
    ) -> Result<f64, LimiterError>;

    /// Everything a request gives back when it ends, in one call (one round
    /// trip on Redis): each token limit corrected by its delta (see
    /// [`Limiter::adjust`]), the cost spent on a budget (see
    /// [`Limiter::spend`]), and its slots freed.
    async fn settle(&self, settlement: &Settlement) -> Result<(), LimiterError> {
        for (key, rate, delta) in &settlement.adjust {
            self.adjust(key, *rate, *delta).await?;
        }
        if let Some((key, usd, ttl)) = &settlement.spend {
            self.spend(key, *usd, *ttl).await?;
        }
        for slot in &settlement.release {
            self.release(slot).await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), LimiterError>;
}

/// What a request gives back when it ends ([`Limiter::settle`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settlement {
    /// `(counter, its rate, units more (+) or fewer (-) than were checked)`;
    /// deltas of 0 are left out.
    pub adjust: Vec<(String, Rate, i64)>,
    /// `(budget counter, USD, ttl)`.
    pub spend: Option<(String, f64, Option<Duration>)>,
    pub release: Vec<Slot>,
}

impl Settlement {
    pub fn is_empty(&self) -> bool {
        self.adjust.is_empty() && self.spend.is_none() && self.release.is_empty()
    }
}
