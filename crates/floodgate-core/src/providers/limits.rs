//! The limits of one provider key: requests and tokens per minute, and
//! requests and tokens per UTC day. (A pause after an upstream 429 is per
//! key *on a target*, since providers limit per model: see `routing`.)
//!
//! Per-minute limits are sliding windows of one-second slots. A call is let
//! through only when the last 61 slots (the current, partly elapsed second and
//! the 60 before it) hold less than the limit, so no 60-second window, however
//! it is placed, ever sees more calls than the limit: a token bucket of the
//! same size would let twice the limit through in a minute (a full bucket,
//! then its refill). The cost is at most one second of extra wait at the
//! window's edge.
//!
//! A call reserves one request and its estimated tokens from every limit or
//! from none (a crate limiter such as governor checks one quota at a time and
//! cannot give tokens back, which both of these need). When the upstream
//! reports what the call really used, the reservation is settled in the slot
//! it was taken from: unused tokens return, a shortfall is added (the window
//! may go over its limit, which delays later calls as the provider would).
//!
//! The provider's own rate-limit headers correct the windows
//! ([`KeyLimits::observe`]): when the upstream says fewer calls or tokens
//! remain than the window thinks, the difference is booked so that it expires
//! when the upstream says its limit resets; a limit the config does not set is
//! learned from the headers.
//!
//! In a cluster every node keeps its own windows, each holding a configured
//! limit divided by the number of live nodes ([`KeyLimits::set_share`], fed
//! by `state::members`), so N nodes together stay within the provider's
//! limit without a Redis round trip per upstream call. Limits learned from
//! the provider's headers are not divided: their `remaining` is already the
//! provider's count across every node.
//!
//! Each key publishes its headroom (the smallest share left of any of its
//! limits) in an atomic, so a pool of many keys is ranked without taking
//! their locks; the lock is taken only on the key chosen.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::quota::{Quota, QuotaUse};
use crate::config::KeyConfig;
use crate::routing::wait::CapacitySignal;

/// Slots of one second a per-minute window counts (see the module docs).
const SLOTS: usize = 61;
const SECONDS_PER_DAY: u64 = 86_400;
/// Published headroom is a share in millionths.
const HEADROOM_SCALE: f64 = 1_000_000.0;

/// One per-minute limit as a sliding window of one-second slots.
#[derive(Debug, Clone)]
struct Window {
    limit: u64,
    /// The configured limit, before this node's share is taken of it.
    configured: u64,
    /// Taken from the provider's headers rather than the config.
    learned: bool,
    slots: [u64; SLOTS],
    total: u64,
    /// The second (since the clock's start) of the newest slot.
    head: u64,
}

impl Window {
    fn new(limit: u64, learned: bool, now: u64) -> Self {
        Window { limit, configured: limit, learned, slots: [0; SLOTS], total: 0, head: now }
    }

    fn set_share(&mut self, nodes: u64) {
        if !self.learned {
            self.limit = share(self.configured, nodes);
        }
    }

    /// Drops the slots that left the window by second `now`.
    fn advance(&mut self, now: u64) {
        if now <= self.head {
            return;
        }
        let steps = (now - self.head).min(SLOTS as u64);
        for step in 1..=steps {
            let index = ((self.head + step) % SLOTS as u64) as usize;
            self.total = self.total.saturating_sub(self.slots[index]);
            self.slots[index] = 0;
        }
        self.head = now;
    }

    fn in_window(&self, second: u64) -> bool {
        second <= self.head && self.head - second < SLOTS as u64
    }

    fn add(&mut self, second: u64, amount: u64) {
        if self.in_window(second) {
            self.slots[(second % SLOTS as u64) as usize] += amount;
            self.total += amount;
        }
    }

    fn remove(&mut self, second: u64, amount: u64) {
        if self.in_window(second) {
            let slot = &mut self.slots[(second % SLOTS as u64) as usize];
            let taken = amount.min(*slot);
            *slot -= taken;
            self.total -= taken;
        }
    }

    /// How long from `now` until `amount` more fits (zero if it does).
    fn wait_for(&self, amount: u64, now: f64) -> Duration {
        if self.total + amount <= self.limit {
            return Duration::ZERO;
        }
        let mut excess = self.total + amount - self.limit;
        let oldest = self.head.saturating_sub(SLOTS as u64 - 1);
        for second in oldest..=self.head {
            let held = self.slots[(second % SLOTS as u64) as usize];
            if held == 0 {
                continue;
            }
            excess = excess.saturating_sub(held);
            if excess == 0 {
                // That slot stops counting at the start of second `second + SLOTS`.
                return secs((second + SLOTS as u64) as f64 - now);
            }
        }
        // More than the whole limit (a call larger than the window): it waits
        // for the window to empty.
        secs((self.head + SLOTS as u64) as f64 - now)
    }

    fn room(&self) -> u64 {
        self.limit.saturating_sub(self.total)
    }

    fn share_left(&self) -> f64 {
        if self.limit == 0 { 0.0 } else { self.room() as f64 / self.limit as f64 }
    }

    /// The provider says only `remaining` is left, and that its window is
    /// full again `reset` from now: book the difference so it expires then.
    fn correct(&mut self, remaining: u64, reset: Option<Duration>, now: f64) {
        let room = self.room();
        if remaining >= room {
            return;
        }
        let missing = room - remaining;
        let expires = match reset {
            Some(reset) => now + reset.as_secs_f64(),
            None => now + SLOTS as f64,
        };
        // A slot for second s stops counting at s + SLOTS.
        let second = (expires - SLOTS as f64).ceil().max(0.0) as u64;
        let oldest = self.head.saturating_sub(SLOTS as u64 - 1);
        self.add(second.clamp(oldest, self.head), missing);
    }
}

/// This node's part of `limit` among `nodes`: rounded down, so the nodes
/// together never exceed it, and at least one.
fn share(limit: u64, nodes: u64) -> u64 {
    (limit / nodes.max(1)).max(1)
}

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// A per-day limit, reset at midnight UTC.
#[derive(Debug, Clone)]
struct Daily {
    limit: u64,
    configured: u64,
    used: u64,
    day: u64,
}

impl Daily {
    fn roll(&mut self, day: u64) {
        if day != self.day {
            self.day = day;
            self.used = 0;
        }
    }

    fn fits(&self, amount: u64) -> bool {
        self.used + amount <= self.limit
    }
}

/// The clock of one pool: seconds since its start (tokio time, so tests can
/// pause it) and the UTC day.
///
/// Seconds start at [`SLOTS`] rather than zero, so that a correction from the
/// provider's headers can be booked in a slot "before" the start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    /// Unix time at clock second zero.
    unix_offset: f64,
}

impl Clock {
    pub fn new() -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        Clock { start: Instant::now(), unix_offset: unix - SLOTS as f64 }
    }

    /// Seconds on this clock.
    pub fn now(&self) -> f64 {
        Instant::now().saturating_duration_since(self.start).as_secs_f64() + SLOTS as f64
    }

    /// Unix time at clock second zero: `unix_offset() + now` is Unix time.
    pub fn unix_offset(&self) -> f64 {
        self.unix_offset
    }

    fn day(&self, now: f64) -> u64 {
        ((self.unix_offset + now) / SECONDS_PER_DAY as f64) as u64
    }

    /// Time from `now` until the next midnight UTC.
    fn until_tomorrow(&self, now: f64) -> Duration {
        let unix = self.unix_offset + now;
        let next = ((unix / SECONDS_PER_DAY as f64).floor() + 1.0) * SECONDS_PER_DAY as f64;
        secs(next - unix)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[derive(Debug)]
struct State {
    requests: Option<Window>,
    tokens: Option<Window>,
    daily_requests: Option<Daily>,
    daily_tokens: Option<Daily>,
}

/// What the upstream said about a key's limits in one answer's headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    pub requests: Reading,
    pub tokens: Reading,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Until the limit is whole again.
    pub reset: Option<Duration>,
}

impl Observed {
    pub fn is_empty(&self) -> bool {
        *self == Observed::default()
    }
}

/// The limits of one key (or of a provider configured without keys).
#[derive(Debug)]
pub struct KeyLimits {
    state: Mutex<State>,
    clock: Clock,
    /// The smallest share left of any limit, in millionths (see module docs).
    headroom: AtomicU32,
    /// Some limit counts tokens (so calls need an estimate).
    counts_tokens: AtomicBool,
    signal: Arc<CapacitySignal>,
    quota: Arc<Quota>,
}

/// Levels of one limit, for readiness and admin output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Level {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    /// True when the limit came from the provider's headers.
    pub learned: bool,
}

/// Every limit of a key, as now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Levels {
    pub rpm: Option<Level>,
    pub tpm: Option<Level>,
    pub daily_requests: Option<Level>,
    pub daily_tokens: Option<Level>,
}

impl KeyLimits {
    pub fn new(
        config: &KeyConfig,
        clock: Clock,
        signal: Arc<CapacitySignal>,
        quota: Arc<Quota>,
    ) -> Arc<KeyLimits> {
        let now = clock.now();
        let second = now as u64;
        let day = clock.day(now);
        let state = State {
            requests: config.rpm.map(|l| Window::new(u64::from(l), false, second)),
            tokens: config.tpm.map(|l| Window::new(u64::from(l), false, second)),
            daily_requests: config.daily_requests.map(|limit| Daily {
                limit,
                configured: limit,
                used: 0,
                day,
            }),
            daily_tokens: config.daily_tokens.map(|limit| Daily {
                limit,
                configured: limit,
                used: 0,
                day,
            }),
        };
        Arc::new(KeyLimits {
            state: Mutex::new(state),
            clock,
            headroom: AtomicU32::new(HEADROOM_SCALE as u32),
            counts_tokens: AtomicBool::new(config.tpm.is_some() || config.daily_tokens.is_some()),
            signal,
            quota,
        })
    }

    /// Whether a call can be reserved against token estimates (any token limit).
    pub fn counts_tokens(&self) -> bool {
        self.counts_tokens.load(Ordering::Relaxed)
    }

    /// The share of the tightest limit left, as last published (no lock):
    /// what keys are ranked by.
    pub fn headroom(&self) -> f64 {
        f64::from(self.headroom.load(Ordering::Relaxed)) / HEADROOM_SCALE
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere poisoned the lock: the counts are still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds this node to its share of every configured limit: `1/nodes`.
    pub fn set_share(&self, nodes: u64) {
        let mut guard = self.lock();
        let s = &mut *guard;
        for w in [&mut s.requests, &mut s.tokens].into_iter().flatten() {
            w.set_share(nodes);
        }
        for d in [&mut s.daily_requests, &mut s.daily_tokens].into_iter().flatten() {
            d.limit = share(d.configured, nodes);
        }
        self.publish(s);
        // A larger share may let waiting requests go.
        self.signal.freed();
    }

    /// `(used, limit)` of each limit now.
    pub fn quota_use(&self) -> QuotaUse {
        let mut guard = self.lock();
        let s = &mut *guard;
        let now = self.clock.now();
        let day = self.clock.day(now);
        for w in [&mut s.requests, &mut s.tokens].into_iter().flatten() {
            w.advance(now as u64);
        }
        for d in [&mut s.daily_requests, &mut s.daily_tokens].into_iter().flatten() {
            d.roll(day);
        }
        QuotaUse::of(s)
    }

    /// Takes one request and `tokens` tokens from every limit, or nothing;
    /// on refusal, says how long until all would fit. A call estimated above
    /// a whole per-minute token limit is charged the whole limit, so it can
    /// still pass when the key is idle.
    pub fn try_take(
        self: &Arc<Self>,
        tokens: u32,
        key: Option<usize>,
    ) -> Result<Reservation, Duration> {
        let now = self.clock.now();
        let second = now as u64;
        let day = self.clock.day(now);
        let mut s = self.lock();
        let mut wait = Duration::ZERO;
        let mut charged = u64::from(tokens);
        if let Some(w) = s.requests.as_mut() {
            w.advance(second);
            wait = wait.max(w.wait_for(1, now));
        }
        if let Some(w) = s.tokens.as_mut() {
            w.advance(second);
            charged = charged.min(w.limit);
            wait = wait.max(w.wait_for(charged, now));
        }
        let until_tomorrow = self.clock.until_tomorrow(now);
        if let Some(d) = s.daily_requests.as_mut() {
            d.roll(day);
            if !d.fits(1) {
                wait = wait.max(until_tomorrow);
            }
        }
        if let Some(d) = s.daily_tokens.as_mut() {
            d.roll(day);
            if !d.fits(charged.min(d.limit)) {
                wait = wait.max(until_tomorrow);
            }
        }
        if !wait.is_zero() {
            self.publish(&s);
            return Err(wait);
        }
        if let Some(w) = s.requests.as_mut() {
            w.add(second, 1);
        }
        if let Some(w) = s.tokens.as_mut() {
            w.add(second, charged);
        }
        if let Some(d) = s.daily_requests.as_mut() {
            d.used += 1;
        }
        if let Some(d) = s.daily_tokens.as_mut() {
            d.used += charged;
        }
        self.publish(&s);
        let used = QuotaUse::of(&s);
        drop(s);
        self.quota.observe(key, &used, charged, now);
        Ok(Reservation { limits: Some(self.clone()), tokens: charged, second, day })
    }

    fn settle(&self, reservation: &Reservation, used: u64) {
        if used == reservation.tokens {
            return;
        }
        let mut s = self.lock();
        let now = self.clock.now();
        if let Some(w) = s.tokens.as_mut() {
            w.advance(now as u64);
            if used < reservation.tokens {
                w.remove(reservation.second, reservation.tokens - used);
            } else {
                w.add(reservation.second, used - reservation.tokens);
            }
        }
        if let Some(d) = s.daily_tokens.as_mut()
            && d.day == reservation.day
        {
            d.used = (d.used + used).saturating_sub(reservation.tokens);
        }
        self.publish(&s);
        drop(s);
        if used < reservation.tokens {
            self.signal.freed();
        }
    }

    /// Corrects the windows from the provider's headers (and learns limits
    /// the config does not set).
    pub fn observe(&self, observed: &Observed) {
        if observed.is_empty() {
            return;
        }
        let mut guard = self.lock();
        let s = &mut *guard;
        let now = self.clock.now();
        let second = now as u64;
        let mut learned_any = false;
        for (slot, reading) in
            [(&mut s.requests, &observed.requests), (&mut s.tokens, &observed.tokens)]
        {
            if slot.is_none()
                && let Some(limit) = reading.limit.filter(|l| *l > 0)
            {
                *slot = Some(Window::new(limit, true, second));
                learned_any = true;
            }
            if let Some(w) = slot.as_mut() {
                if w.learned
                    && let Some(limit) = reading.limit.filter(|l| *l > 0)
                {
                    w.limit = limit;
                }
                w.advance(second);
                if let Some(remaining) = reading.remaining {
                    w.correct(remaining, reading.reset, now);
                }
            }
        }
        if learned_any && s.tokens.is_some() {
            self.counts_tokens.store(true, Ordering::Relaxed);
        }
        self.publish(s);
    }

    fn publish(&self, s: &State) {
        let mut share: f64 = 1.0;
        for w in [&s.requests, &s.tokens].into_iter().flatten() {
            share = share.min(w.share_left());
        }
        for d in [&s.daily_requests, &s.daily_tokens].into_iter().flatten() {
            share = share.min(d.limit.saturating_sub(d.used) as f64 / d.limit.max(1) as f64);
        }
        self.headroom.store((share.clamp(0.0, 1.0) * HEADROOM_SCALE) as u32, Ordering::Relaxed);
    }

    /// Every limit's levels now.
    pub fn levels(&self) -> Levels {
        let mut s = self.lock();
        let now = self.clock.now();
        let day = self.clock.day(now);
        let window = |w: &mut Option<Window>| {
            w.as_mut().map(|w| {
                w.advance(now as u64);
                Level { limit: w.limit, used: w.total, remaining: w.room(), learned: w.learned }
            })
        };
        let daily = |d: &mut Option<Daily>| {
            d.as_mut().map(|d| {
                d.roll(day);
                Level {
                    limit: d.limit,
                    used: d.used,
                    remaining: d.limit.saturating_sub(d.used),
                    learned: false,
                }
            })
        };
        Levels {
            rpm: window(&mut s.requests),
            tpm: window(&mut s.tokens),
            daily_requests: daily(&mut s.daily_requests),
            daily_tokens: daily(&mut s.daily_tokens),
        }
    }
}

impl QuotaUse {
    fn of(s: &State) -> QuotaUse {
        QuotaUse {
            rpm: s.requests.as_ref().map(|w| (w.total, w.limit)),
            tpm: s.tokens.as_ref().map(|w| (w.total, w.limit)),
            daily_requests: s.daily_requests.as_ref().map(|d| (d.used, d.limit)),
            daily_tokens: s.daily_tokens.as_ref().map(|d| (d.used, d.limit)),
        }
    }
}

/// Tokens reserved for one call. Settle it with what the call used; dropped
/// unsettled (the call's outcome is unknown), the reservation stands.
#[derive(Debug)]
pub struct Reservation {
    limits: Option<Arc<KeyLimits>>,
    tokens: u64,
    second: u64,
    day: u64,
}

impl Reservation {
    /// A reservation against no limit.
    pub fn none() -> Self {
        Reservation { limits: None, tokens: 0, second: 0, day: 0 }
    }

    pub fn settle(mut self, used: u32) {
        if let Some(limits) = self.limits.take() {
            limits.settle(&self, u64::from(used));
        }
    }
}

#[cfg(test)]
mod tests;
