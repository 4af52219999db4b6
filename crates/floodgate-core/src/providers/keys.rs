//! A provider's API keys: which are in use and which have room.
//!
//! Keys are handed out round-robin among those in use whose rpm/tpm buckets
//! can take the call; keys without room are skipped without a network call.
//! A key the upstream refuses (401/403) is taken out of use until an operator
//! resets it; the shared record of that lives in the state backend so every
//! node learns it, and this pool keeps the local view the hot path reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;

use super::limits::{KeyLimits, Reservation};

#[derive(Debug)]
pub struct KeyPool {
    keys: Vec<Key>,
    /// Limits of a provider configured without keys (a local server whose
    /// capacity the operator caps with rpm/tpm).
    anonymous: Option<Arc<KeyLimits>>,
    next: AtomicUsize,
}

/// One key. Identified in logs, metrics and admin output by its position
/// (`#0`, `#1`…), never by any part of its value.
#[derive(Debug)]
pub struct Key {
    pub index: usize,
    pub secret: SecretString,
    /// The key's rpm/tpm buckets, when the provider sets limits.
    pub limits: Option<Arc<KeyLimits>>,
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
    /// Keys are in use but none has room under its rpm/tpm now; this is the
    /// shortest wait until one has.
    Busy(Duration),
}

impl KeyPool {
    /// `rpm` and `tpm` apply to each key separately, as providers count them.
    pub fn new(secrets: Vec<SecretString>, rpm: Option<u32>, tpm: Option<u32>) -> Self {
        let keys: Vec<Key> = secrets
            .into_iter()
            .enumerate()
            .map(|(index, secret)| Key {
                index,
                secret,
                limits: KeyLimits::new(rpm, tpm),
                disabled: AtomicBool::new(false),
                reason: Mutex::new(None),
            })
            .collect();
        let anonymous = if keys.is_empty() { KeyLimits::new(rpm, tpm) } else { None };
        KeyPool { keys, anonymous, next: AtomicUsize::new(0) }
    }

    /// The next key in use with room for a call of about `tokens` tokens.
    pub fn pick(&self, tokens: u32) -> Pick<'_> {
        if self.keys.is_empty() {
            return match &self.anonymous {
                None => Pick::Anonymous(Reservation::none()),
                Some(limits) => match limits.try_take(tokens) {
                    Ok(reservation) => Pick::Anonymous(reservation),
                    Err(wait) => Pick::Busy(wait),
                },
            };
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut shortest_wait: Option<Duration> = None;
        for offset in 0..self.keys.len() {
            let key = &self.keys[(start + offset) % self.keys.len()];
            if key.disabled.load(Ordering::Relaxed) {
                continue;
            }
            match &key.limits {
                None => return Pick::Key(key, Reservation::none()),
                Some(limits) => match limits.try_take(tokens) {
                    Ok(reservation) => return Pick::Key(key, reservation),
                    Err(wait) => shortest_wait = Some(shortest_wait.map_or(wait, |w| w.min(wait))),
                },
            }
        }
        match shortest_wait {
            Some(wait) => Pick::Busy(wait),
            None => Pick::Exhausted,
        }
    }

    /// Whether a call could be made now or later (some key is in use, or
    /// the provider needs none). Takes nothing from any bucket.
    pub fn in_use(&self) -> bool {
        self.keys.is_empty() || self.usable() > 0
    }

    /// Each key's `(index, requests left, tokens left)` under its limits
    /// (index 0 for a provider without keys).
    pub fn levels(&self) -> Vec<(usize, Option<u32>, Option<u32>)> {
        let anonymous = self.anonymous.as_ref().map(|l| (0, l.levels()));
        self.keys
            .iter()
            .filter_map(|k| k.limits.as_ref().map(|l| (k.index, l.levels())))
            .chain(anonymous)
            .map(|(index, (requests, tokens))| (index, requests, tokens))
            .collect()
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

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn usable(&self) -> usize {
        self.keys.iter().filter(|k| !k.disabled.load(Ordering::Relaxed)).count()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> KeyPool {
        KeyPool::new((0..n).map(|i| SecretString::from(format!("key-{i}"))).collect(), None, None)
    }

    fn picked(pool: &KeyPool) -> Option<usize> {
        match pool.pick(10) {
            Pick::Key(k, _) => Some(k.index),
            Pick::Anonymous(_) | Pick::Exhausted | Pick::Busy(_) => None,
        }
    }

    #[test]
    fn round_robin_skips_disabled_keys() {
        let pool = pool(3);
        assert_eq!([picked(&pool), picked(&pool), picked(&pool)], [Some(0), Some(1), Some(2)]);
        assert!(pool.disable(1, "401"));
        assert!(!pool.disable(1, "401"));
        let seen: Vec<_> = (0..4).map(|_| picked(&pool)).collect();
        assert!(seen.iter().all(|i| *i != Some(1)), "{seen:?}");
        assert_eq!(pool.usable(), 2);
        assert_eq!(pool.disabled(), vec![(1, "401".to_string())]);
    }

    #[test]
    fn all_disabled_is_exhausted_and_no_keys_is_anonymous() {
        let pool = pool(1);
        pool.disable(0, "403");
        assert!(matches!(pool.pick(1), Pick::Exhausted));
        assert!(!pool.in_use());
        assert!(matches!(KeyPool::new(Vec::new(), None, None).pick(1), Pick::Anonymous(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_without_room_are_skipped_then_busy_says_how_long() {
        let secrets = (0..2).map(|i| SecretString::from(format!("key-{i}"))).collect();
        let pool = KeyPool::new(secrets, Some(1), None);
        let mut used = Vec::new();
        for _ in 0..2 {
            match pool.pick(0) {
                Pick::Key(k, r) => {
                    used.push(k.index);
                    r.settle(0);
                }
                other => panic!("{other:?}"),
            }
        }
        used.sort_unstable();
        assert_eq!(used, [0, 1]);
        assert!(matches!(pool.pick(0), Pick::Busy(wait) if wait == Duration::from_secs(60)));
        assert!(pool.in_use());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(matches!(pool.pick(0), Pick::Key(..)));
    }
}
