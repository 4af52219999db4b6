//! Exponential backoff with full jitter: the n-th wait is uniform in
//! `[0, min(max, base·2ⁿ)]`, which spreads retries of many clients apart
//! (the AWS architecture blog's "full jitter"). Three lines of arithmetic, so
//! no crate.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, attempt: 0 }
    }

    /// The ceiling of the next wait, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ceiling_doubles_up_to_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let mut ceilings = Vec::new();
        for _ in 0..5 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(ceilings, [100, 200, 400, 500, 500]);
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_ceiling(base_ms in 0u64..10_000, max_ms in 0u64..60_000, n in 0usize..64) {
            let mut b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            for _ in 0..n {
                let ceiling = b.ceiling();
                let delay = b.next_delay();
                prop_assert!(delay <= ceiling);
                prop_assert!(ceiling <= Duration::from_millis(max_ms));
            }
        }
    }
}
