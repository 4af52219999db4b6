//! When a key's or a provider's use of a limit crosses an alert threshold.
//!
//! Each threshold fires at most once per window of its limit: once per
//! clock minute for rpm and tpm (their windows are one minute long), once per
//! UTC day for the daily quotas. A key is checked each time a call is
//! reserved on it (a few comparisons, and a lock only once its use reaches
//! the lowest threshold); the provider as a whole (the sum of its keys' use
//! against the sum of their limits, for limits every key has) once per clock
//! second at most, by the pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::alerts::{Alert, Alerts};

/// `(used, limit)` of each limit a key (or provider) has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUse {
    pub rpm: Option<(u64, u64)>,
    pub tpm: Option<(u64, u64)>,
    pub daily_requests: Option<(u64, u64)>,
    pub daily_tokens: Option<(u64, u64)>,
}

/// A limit's name, its `(used, limit)`, and whether it is a daily one.
type Entry = (&'static str, Option<(u64, u64)>, bool);

impl QuotaUse {
    fn entries(&self) -> [Entry; 4] {
        [
            ("rpm", self.rpm, false),
            ("tpm", self.tpm, false),
            ("daily_requests", self.daily_requests, true),
            ("daily_tokens", self.daily_tokens, true),
        ]
    }

    /// Adds `other`; a limit one side lacks is dropped (a provider-wide
    /// share only means something when every key has that limit).
    pub fn sum(self, other: QuotaUse) -> QuotaUse {
        let add = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
            (Some((u1, l1)), Some((u2, l2))) => Some((u1 + u2, l1 + l2)),
            _ => None,
        };
        QuotaUse {
            rpm: add(self.rpm, other.rpm),
            tpm: add(self.tpm, other.tpm),
            daily_requests: add(self.daily_requests, other.daily_requests),
            daily_tokens: add(self.daily_tokens, other.daily_tokens),
        }
    }
}

/// The window each threshold last fired in, per limit.
#[derive(Debug, Default)]
struct Fired {
    /// `[limit][threshold]` → window id (minute or day number, plus one so zero means never).
    windows: [Vec<u64>; 4],
}

impl Fired {
    fn new(thresholds: usize) -> Self {
        Fired { windows: std::array::from_fn(|_| vec![0; thresholds]) }
    }
}

/// Quota alert tracking for one provider and its keys.
#[derive(Debug)]
pub struct Quota {
    provider: String,
    alerts: Arc<Alerts>,
    keys: Vec<Mutex<Fired>>,
    whole: Mutex<Fired>,
    /// The second of the last provider-wide check, plus one (no lock on the hot path).
    last_provider_check: AtomicU64,
    /// The lowest threshold: below it nothing is locked or checked.
    lowest: f64,
    unix_offset: f64,
}

impl Quota {
    pub fn new(provider: &str, keys: usize, alerts: Arc<Alerts>, unix_offset: f64) -> Arc<Quota> {
        let n = alerts.thresholds.len();
        let lowest = alerts.thresholds.iter().copied().fold(f64::INFINITY, f64::min);
        Arc::new(Quota {
            provider: provider.to_string(),
            keys: (0..keys.max(1)).map(|_| Mutex::new(Fired::new(n))).collect(),
            whole: Mutex::new(Fired::new(n)),
            last_provider_check: AtomicU64::new(0),
            lowest,
            alerts,
            unix_offset,
        })
    }

    /// A call was reserved on `key` (`None`: a provider without keys, which
    /// is then its own only key); `now` is seconds on the pool's clock.
    pub fn observe(&self, key: Option<usize>, use_: &QuotaUse, _charged: u64, now: f64) {
        if !self.reaches_a_threshold(use_) {
            return;
        }
        let Some(slot) = self.keys.get(key.unwrap_or(0)) else { return };
        let mut fired = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.check(&mut fired, key, use_, now);
    }

    /// Whether the provider-wide check is due (at most once a second).
    pub fn provider_check_due(&self, now: f64) -> bool {
        if self.alerts.thresholds.is_empty() {
            return false;
        }
        let second = now as u64 + 1;
        let last = self.last_provider_check.load(Ordering::Relaxed);
        last != second
            && self
                .last_provider_check
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether any limit's use is at or above the lowest threshold.
    fn reaches_a_threshold(&self, use_: &QuotaUse) -> bool {
        use_.entries().iter().any(|(_, entry, _)| {
            entry
                .is_some_and(|(used, limit)| limit > 0 && used as f64 / limit as f64 >= self.lowest)
        })
    }

    /// The provider's summed use, checked against the thresholds.
    pub fn observe_provider(&self, use_: &QuotaUse, now: f64) {
        if !self.reaches_a_threshold(use_) {
            return;
        }
        let mut whole = self.whole.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.check(&mut whole, None, use_, now);
    }

    fn check(&self, fired: &mut Fired, key: Option<usize>, use_: &QuotaUse, now: f64) {
        let unix = self.unix_offset + now;
        for (i, (quota, entry, daily)) in use_.entries().into_iter().enumerate() {
            let Some((used, limit)) = entry else { continue };
            if limit == 0 {
                continue;
            }
            let share = used as f64 / limit as f64;
            let window = if daily { (unix / 86_400.0) as u64 } else { (unix / 60.0) as u64 } + 1;
            // Only the highest threshold crossed fires; the lower ones are
            // marked too, so a jump from 60 % to 96 % is one alert, not three.
            let mut highest = None;
            for (t, threshold) in self.alerts.thresholds.iter().enumerate() {
                if share >= *threshold && fired.windows[i][t] != window {
                    fired.windows[i][t] = window;
                    highest = Some(*threshold);
                }
            }
            if let Some(threshold) = highest {
                self.alerts.fire(Alert {
                    kind: "quota_alert",
                    provider: self.provider.clone(),
                    key,
                    quota,
                    threshold,
                    used,
                    limit,
                    at: unix as u64,
                });
            }
        }
    }
}
