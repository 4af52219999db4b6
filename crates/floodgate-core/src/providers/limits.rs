//! Per-key rate limits: requests per minute and tokens per minute, as two
//! token buckets that refill continuously.
//!
//! A call reserves one request and its estimated tokens from both buckets or
//! from neither (a crate limiter such as governor checks one quota at a time
//! and cannot give tokens back, which both of these need). When the upstream
//! reports what the call really used, the difference is settled: unused
//! tokens return to the bucket, a shortfall is taken (the bucket may go into
//! debt, which delays later calls as the provider itself would).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn per_minute(limit: u32, now: Instant) -> Self {
        let capacity = f64::from(limit);
        Bucket { capacity, per_sec: capacity / 60.0, level: capacity, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.per_sec).min(self.capacity);
        self.at = now;
    }

    /// How long until `amount` is available (zero if it is).
    fn wait_for(&self, amount: f64) -> Duration {
        if self.level >= amount {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((amount - self.level) / self.per_sec)
        }
    }
}

#[derive(Debug)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// The limits of one key.
#[derive(Debug)]
pub struct KeyLimits {
    buckets: Mutex<Buckets>,
}

impl KeyLimits {
    /// `None` when neither limit is set.
    pub fn new(rpm: Option<u32>, tpm: Option<u32>) -> Option<Arc<KeyLimits>> {
        if rpm.is_none() && tpm.is_none() {
            return None;
        }
        let now = Instant::now();
        Some(Arc::new(KeyLimits {
            buckets: Mutex::new(Buckets {
                requests: rpm.map(|r| Bucket::per_minute(r, now)),
                tokens: tpm.map(|t| Bucket::per_minute(t, now)),
            }),
        }))
    }

    /// Takes one request and `tokens` tokens, or nothing; on refusal, says
    /// how long until both would be available. A request estimated above the
    /// whole token budget is charged the whole budget, so it can still pass
    /// when the key is idle.
    pub fn try_take(self: &Arc<Self>, tokens: u32) -> Result<Reservation, Duration> {
        let Ok(mut b) = self.buckets.lock() else {
            // A panic elsewhere poisoned the lock: do not block traffic on it.
            return Ok(Reservation { limits: None, tokens: 0 });
        };
        let now = Instant::now();
        let mut charged = 0.0;
        let mut wait = Duration::ZERO;
        if let Some(r) = b.requests.as_mut() {
            r.refill(now);
            wait = wait.max(r.wait_for(1.0));
        }
        if let Some(t) = b.tokens.as_mut() {
            t.refill(now);
            charged = f64::from(tokens).min(t.capacity);
            wait = wait.max(t.wait_for(charged));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(r) = b.requests.as_mut() {
            r.level -= 1.0;
        }
        if let Some(t) = b.tokens.as_mut() {
            t.level -= charged;
        }
        Ok(Reservation { limits: Some(self.clone()), tokens: charged as u32 })
    }

    fn settle(&self, reserved: u32, used: u32) {
        if let Ok(mut b) = self.buckets.lock()
            && let Some(t) = b.tokens.as_mut()
        {
            t.refill(Instant::now());
            t.level = (t.level + f64::from(reserved) - f64::from(used)).min(t.capacity);
        }
    }

    /// Current levels `(requests, tokens)`, for readiness output.
    pub fn levels(&self) -> (Option<u32>, Option<u32>) {
        let Ok(mut b) = self.buckets.lock() else {
            return (None, None);
        };
        let now = Instant::now();
        let level = |bucket: Option<&mut Bucket>| {
            bucket.map(|x| {
                x.refill(now);
                x.level.max(0.0) as u32
            })
        };
        let requests = level(b.requests.as_mut());
        let tokens = level(b.tokens.as_mut());
        (requests, tokens)
    }
}

/// Tokens reserved for one call. Settle it with what the call used; dropped
/// unsettled (the call's outcome is unknown), the reservation stands.
#[derive(Debug)]
pub struct Reservation {
    limits: Option<Arc<KeyLimits>>,
    tokens: u32,
}

impl Reservation {
    /// A reservation against no limit.
    pub fn none() -> Self {
        Reservation { limits: None, tokens: 0 }
    }

    pub fn settle(mut self, used: u32) {
        if let Some(limits) = self.limits.take() {
            limits.settle(self.tokens, used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_refill_continuously() {
        let limits = KeyLimits::new(Some(60), None).unwrap();
        for _ in 0..60 {
            limits.try_take(0).unwrap().settle(0);
        }
        let wait = limits.try_take(0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(limits.try_take(0).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limits.try_take(0).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn both_or_neither_and_settling_returns_unused_tokens() {
        let limits = KeyLimits::new(Some(10), Some(1000)).unwrap();
        let first = limits.try_take(800).unwrap();
        // 200 tokens left: a 300-token call is refused and takes no request.
        assert_eq!(limits.try_take(300).unwrap_err(), Duration::from_secs(6));
        assert_eq!(limits.levels(), (Some(9), Some(200)));
        // The first call used only 100 of its 800.
        first.settle(100);
        assert_eq!(limits.levels(), (Some(9), Some(900)));
        limits.try_take(300).unwrap().settle(500);
        assert_eq!(limits.levels(), (Some(8), Some(400)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_call_waits_for_a_full_bucket_and_debt_delays_the_next() {
        let limits = KeyLimits::new(None, Some(100)).unwrap();
        let big = limits.try_take(5000).unwrap();
        assert!(limits.try_take(1).is_err());
        big.settle(160);
        // 60 tokens of debt: 1 token is available after 61 tokens of refill.
        assert_eq!(limits.try_take(1).unwrap_err(), Duration::from_secs_f64(61.0 * 60.0 / 100.0));
    }

    #[test]
    fn no_limits_means_no_buckets() {
        assert!(KeyLimits::new(None, None).is_none());
    }
}
