//! A provider's API keys and which of them are in use.
//!
//! Keys are handed out round-robin among those not taken out of use. A key
//! the upstream refuses (401/403) is taken out of use until an operator resets
//! it; the shared record of that lives in the state backend so every node
//! learns it, and this pool keeps the local view the hot path reads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use secrecy::SecretString;

#[derive(Debug)]
pub struct KeyPool {
    keys: Vec<Key>,
    next: AtomicUsize,
}

/// One key. Identified in logs, metrics and admin output by its position
/// (`#0`, `#1`…), never by any part of its value.
#[derive(Debug)]
pub struct Key {
    pub index: usize,
    pub secret: SecretString,
    disabled: AtomicBool,
    reason: Mutex<Option<String>>,
}

/// The result of asking for a key.
#[derive(Debug)]
pub enum Pick<'a> {
    Key(&'a Key),
    /// The provider is configured without keys (a local server): call without auth.
    Anonymous,
    /// Every key is out of use.
    Exhausted,
}

impl KeyPool {
    pub fn new(secrets: Vec<SecretString>) -> Self {
        let keys = secrets
            .into_iter()
            .enumerate()
            .map(|(index, secret)| Key {
                index,
                secret,
                disabled: AtomicBool::new(false),
                reason: Mutex::new(None),
            })
            .collect();
        KeyPool {
            keys,
            next: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self) -> Pick<'_> {
        if self.keys.is_empty() {
            return Pick::Anonymous;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.keys.len() {
            let key = &self.keys[(start + offset) % self.keys.len()];
            if !key.disabled.load(Ordering::Relaxed) {
                return Pick::Key(key);
            }
        }
        Pick::Exhausted
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
        self.keys
            .iter()
            .filter(|k| !k.disabled.load(Ordering::Relaxed))
            .count()
    }

    /// `(index, reason)` of every key out of use.
    pub fn disabled(&self) -> Vec<(usize, String)> {
        self.keys
            .iter()
            .filter(|k| k.disabled.load(Ordering::Relaxed))
            .map(|k| {
                let reason = k
                    .reason
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .unwrap_or_default();
                (k.index, reason)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> KeyPool {
        KeyPool::new(
            (0..n)
                .map(|i| SecretString::from(format!("key-{i}")))
                .collect(),
        )
    }

    fn picked(pool: &KeyPool) -> Option<usize> {
        match pool.pick() {
            Pick::Key(k) => Some(k.index),
            Pick::Anonymous | Pick::Exhausted => None,
        }
    }

    #[test]
    fn round_robin_skips_disabled_keys() {
        let pool = pool(3);
        assert_eq!(
            [picked(&pool), picked(&pool), picked(&pool)],
            [Some(0), Some(1), Some(2)]
        );
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
        assert!(matches!(pool.pick(), Pick::Exhausted));
        assert!(matches!(KeyPool::new(Vec::new()).pick(), Pick::Anonymous));
    }
}
