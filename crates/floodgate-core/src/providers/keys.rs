//! A provider's API keys: which are in use, which have room, which to use.
//!
//! Selection: the highest priority first; within a priority, the key with
//! the most headroom (the largest share left of its tightest limit), ties
//! taken in rotation so unlimited keys share the load evenly. Keys are ranked
//! on headroom each key publishes in an atomic, so ranking a hundred keys
//! takes no lock; only the chosen key's limits are locked, and if it turns
//! out to be full (its published headroom was stale) the next best is tried.
//! Keys without room, or that the caller says are not usable now (their
//! breaker on the target is open, or they are paused there after a 429),
//! are skipped without a network call.
//!
//! A key the upstream refuses (401/403) is taken out of use until an operator
//! resets it; the shared record of that lives in the state backend so every
//! node learns it, and this pool keeps the local view the hot path reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;

use super::limits::{Clock, KeyLimits, Levels, Observed, Reservation};
use super::quota::{Quota, QuotaUse};
use crate::alerts::Alerts;
use crate::config::KeyConfig;
use crate::routing::wait::CapacitySignal;

#[derive(Debug)]
pub struct KeyPool {
    keys: Vec<Key>,
    /// Key indexes by descending priority (config order within a priority),
    /// cut into `tiers` of equal priority.
    by_priority: Vec<usize>,
    tiers: Vec<std::ops::Range<usize>>,
    /// Limits of a provider configured without keys (a local server whose
    /// capacity the operator caps).
    anonymous: Option<Arc<KeyLimits>>,
    next: AtomicUsize,
    /// The clock every key's limits count on.
    clock: Clock,
    quota: Arc<Quota>,
    signal: Arc<CapacitySignal>,
}

/// One key. Identified in logs, metrics and admin output by its position
/// (`#0`, `#1`…), never by any part of its value.
#[derive(Debug)]
pub struct Key {
    pub index: usize,
    pub secret: SecretString,
    pub priority: i32,
    /// The key's limits (always present: limits the config does not set can
    /// be learned from the provider's headers).
    pub limits: Arc<KeyLimits>,
    disabled: AtomicBool,
    reason: Mutex<Option<String>>,
}

/// The result of asking for a key.
#[derive(Debug)]
pub enum Pick<'a> {
    /// This key, with the call's tokens reserved against its limits.
    Key(&'a Key, Reservation),
    /// The provider is configured without keys (a local server): call without
    /// auth, with the call's tokens reserved against the provider's limits.
    Anonymous(Reservation),
    /// Every key is out of use.
    Exhausted,
    /// Keys are in use but every one the caller may use has its circuit open.
    Blocked,
    /// Keys are in use but none has room under its limits now (or each is
    /// paused after a 429); this is the shortest wait until one has.
    Busy(Duration),
}

/// Whether the caller may use a key now (see [`KeyPool::pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    Usable,
    /// Not on this target (its breaker there is open).
    Blocked,
    /// Not for this long (paused after a 429).
    Wait(Duration),
}

/// One key as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyView {
    pub key: usize,
    pub priority: i32,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub headroom: f64,
    pub limits: Levels,
}

impl KeyPool {
    /// `anonymous` holds the limits of a provider without keys.
    pub fn new(
        provider: &str,
        keys: &[KeyConfig],
        anonymous: &KeyConfig,
        alerts: Arc<Alerts>,
        signal: Arc<CapacitySignal>,
    ) -> Self {
        let clock = Clock::new();
        let quota = Quota::new(provider, keys.len(), alerts, clock.unix_offset());
        let keys: Vec<Key> = keys
            .iter()
            .enumerate()
            .map(|(index, config)| Key {
                index,
                secret: config.secret.clone(),
                priority: config.priority,
                limits: KeyLimits::new(config, clock, signal.clone(), quota.clone()),
                disabled: AtomicBool::new(false),
                reason: Mutex::new(None),
            })
            .collect();
        let anonymous = keys
            .is_empty()
            .then(|| KeyLimits::new(anonymous, clock, signal.clone(), quota.clone()));
        let mut by_priority: Vec<usize> = (0..keys.len()).collect();
        by_priority.sort_by_key(|i| std::cmp::Reverse(keys[*i].priority));
        let mut tiers = Vec::new();
        let mut start = 0;
        for i in 1..=by_priority.len() {
            if i == by_priority.len()
                || keys[by_priority[i]].priority != keys[by_priority[start]].priority
            {
                tiers.push(start..i);
                start = i;
            }
        }
        KeyPool {
            keys,
            by_priority,
            tiers,
            anonymous,
            next: AtomicUsize::new(0),
            clock,
            quota,
            signal,
        }
    }

    /// The best key in use with room for a call, its tokens reserved.
    ///
    /// `tokens` is called at most once, and only when a key counts tokens
    /// (counting them may run a tokenizer); `usable(index)` says whether the
    /// caller may use a key now.
    pub fn pick(&self, tokens: impl Fn() -> u32, usable: impl Fn(usize) -> KeyUse) -> Pick<'_> {
        let estimate = std::cell::OnceCell::new();
        let tokens_for = |limits: &KeyLimits| {
            if limits.counts_tokens() { *estimate.get_or_init(&tokens) } else { 0 }
        };
        if self.keys.is_empty() {
            match usable(0) {
                KeyUse::Usable => {}
                KeyUse::Blocked => return Pick::Blocked,
                KeyUse::Wait(left) => return Pick::Busy(left),
            }
            let Some(limits) = &self.anonymous else {
                return Pick::Anonymous(Reservation::none());
            };
            return match limits.try_take(tokens_for(limits), None) {
                Ok(reservation) => {
                    self.check_provider();
                    Pick::Anonymous(reservation)
                }
                Err(wait) => Pick::Busy(wait),
            };
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut shortest_wait: Option<Duration> = None;
        let mut blocked = false;
        let mut note_wait = |wait: Duration| {
            shortest_wait = Some(shortest_wait.map_or(wait, |w: Duration| w.min(wait)));
        };
        for tier in &self.tiers {
            let members = &self.by_priority[tier.clone()];
            let n = members.len();
            // Positions in this tier already tried (allocated only if the
            // first choice turns out full).
            let mut tried: Option<Vec<bool>> = None;
            loop {
                let mut best: Option<(usize, f64)> = None;
                for offset in 0..n {
                    let position = (start + offset) % n;
                    if tried.as_ref().is_some_and(|t| t[position]) {
                        continue;
                    }
                    let key = &self.keys[members[position]];
                    if key.disabled.load(Ordering::Relaxed) {
                        continue;
                    }
                    match usable(key.index) {
                        KeyUse::Usable => {}
                        KeyUse::Blocked => {
                            blocked = true;
                            continue;
                        }
                        KeyUse::Wait(left) => {
                            note_wait(left);
                            continue;
                        }
                    }
                    let headroom = key.limits.headroom();
                    if best.is_none_or(|(_, h)| headroom > h) {
                        best = Some((position, headroom));
                    }
                }
                let Some((position, _)) = best else { break };
                let key = &self.keys[members[position]];
                match key.limits.try_take(tokens_for(&key.limits), Some(key.index)) {
                    Ok(reservation) => {
                        self.check_provider();
                        return Pick::Key(key, reservation);
                    }
                    Err(wait) => {
                        note_wait(wait);
                        tried.get_or_insert_with(|| vec![false; n])[position] = true;
                    }
                }
            }
        }
        match shortest_wait {
            Some(wait) => Pick::Busy(wait),
            None if blocked => Pick::Blocked,
            None => Pick::Exhausted,
        }
    }

    /// The provider-wide quota check, at most once a second.
    fn check_provider(&self) {
        let now = self.clock.now();
        if !self.quota.provider_check_due(now) {
            return;
        }
        let mut total: Option<QuotaUse> = None;
        let all = self.keys.iter().map(|k| &k.limits).chain(self.anonymous.as_ref());
        for limits in all {
            let use_ = limits.quota_use();
            total = Some(match total {
                None => use_,
                Some(sum) => sum.sum(use_),
            });
        }
        if let Some(total) = total {
            self.quota.observe_provider(&total, now);
        }
    }

    fn limits_of(&self, key: Option<usize>) -> Option<&Arc<KeyLimits>> {
        match key {
            Some(index) => self.keys.get(index).map(|k| &k.limits),
            None => self.anonymous.as_ref(),
        }
    }

    /// The provider's rate-limit headers on an answer made with `key`.
    pub fn observe(&self, key: Option<usize>, observed: &Observed) {
        if let Some(limits) = self.limits_of(key) {
            limits.observe(observed);
        }
    }

    /// Whether some key counts tokens (so calls need an estimate).
    pub fn counts_tokens(&self) -> bool {
        self.keys
            .iter()
            .map(|k| &k.limits)
            .chain(self.anonymous.as_ref())
            .any(|l| l.counts_tokens())
    }

    /// Whether a call could be made now or later (some key is in use, or
    /// the provider needs none). Takes nothing from any limit.
    pub fn in_use(&self) -> bool {
        self.keys.is_empty() || self.usable() > 0
    }

    /// Takes key `index` out of use. Returns false if it already was.
    pub fn disable(&self, index: usize, reason: &str) -> bool {
        let Some(key) = self.keys.get(index) else {
            return false;
        };
        if key.disabled.swap(true, Ordering::Relaxed) {
            return false;
        }
        if let Ok(mut slot) = key.reason.lock() {
            *slot = Some(reason.to_string());
        }
        true
    }

    /// Puts every key back in use (admin reset). Returns how many keys were
    /// out of use.
    pub fn enable_all(&self) -> usize {
        let mut enabled = 0;
        for key in &self.keys {
            if key.disabled.swap(false, Ordering::Relaxed) {
                enabled += 1;
            }
            if let Ok(mut slot) = key.reason.lock() {
                *slot = None;
            }
        }
        self.signal.freed();
        enabled
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Holds every key to its share of its configured limits on a cluster
    /// of `nodes` (see `limits`).
    pub fn set_share(&self, nodes: u64) {
        for key in &self.keys {
            key.limits.set_share(nodes);
        }
        if let Some(limits) = &self.anonymous {
            limits.set_share(nodes);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn usable(&self) -> usize {
        self.keys.iter().filter(|k| !k.disabled.load(Ordering::Relaxed)).count()
    }

    /// Indexes of the keys (0 for a provider without keys), for per-key state.
    pub fn indexes(&self) -> std::ops::Range<usize> {
        0..self.keys.len().max(1)
    }

    /// `(index, reason)` of every key out of use.
    pub fn disabled(&self) -> Vec<(usize, String)> {
        self.keys
            .iter()
            .filter(|k| k.disabled.load(Ordering::Relaxed))
            .map(|k| {
                let reason = k.reason.lock().ok().and_then(|r| r.clone()).unwrap_or_default();
                (k.index, reason)
            })
            .collect()
    }

    /// Every key as the admin API shows it (one entry, key 0, for a provider
    /// without keys).
    pub fn views(&self) -> Vec<KeyView> {
        if let Some(limits) = &self.anonymous {
            return vec![KeyView {
                key: 0,
                priority: 0,
                enabled: true,
                disabled_reason: None,
                headroom: limits.headroom(),
                limits: limits.levels(),
            }];
        }
        self.keys
            .iter()
            .map(|k| {
                let reason = k.reason.lock().ok().and_then(|r| r.clone());
                KeyView {
                    key: k.index,
                    priority: k.priority,
                    enabled: !k.disabled.load(Ordering::Relaxed),
                    disabled_reason: reason,
                    headroom: k.limits.headroom(),
                    limits: k.limits.levels(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
