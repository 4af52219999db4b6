//! Retry budgets: one per model alias. A budget owns the answer to "may this
//! request make one more upstream call?" for every extra call (a retry, a
//! fallback after a failure, a hedge), so that when an upstream is failing
//! the gateway adds at most a fixed share of load to it instead of
//! multiplying its traffic by the retry count.
//!
//! The rule is Finagle's and linkerd's: over the last `window`, extra calls
//! may reach `ratio` × first calls, plus `min_per_second` × the window's
//! seconds so that an alias with little traffic can still retry. Unlike a
//! per-request retry limit, this caps the total, so a full outage costs at
//! most `1 + ratio` times the normal load.
//!
//! The window is a ring of ten time slots counting first calls and extra
//! calls; a slot is reused when time comes round to it, which is what
//! forgets old counts, so memory is fixed and there is no background task.
//! Counts and the check share one short `Mutex` section (a clock read, ten
//! additions), which keeps withdrawal exact: two threads can never both take
//! the last retry.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryBudgetConfig;

/// Time slots across the window: a call is forgotten between 90 % and 100 %
/// of `window` after it was counted.
const SLOTS: usize = 10;

/// Absorbs rounding in `ratio × requests` (0.29 × 100 is 28.999…) so the
/// allowance is the whole number a person would compute.
const ROUNDING: f64 = 1e-9;

#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// `min_per_second` × the window in seconds: extra calls always allowed.
    reserve: f64,
    slot_nanos: u64,
    /// Times are nanoseconds since this instant.
    origin: Instant,
    ring: Mutex<Ring>,
}

/// What a budget holds over its current window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetSnapshot {
    /// First upstream calls (deposits).
    pub requests: u64,
    /// Extra calls granted (withdrawals).
    pub retries: u64,
    /// Extra calls that would still be granted now.
    pub available: u64,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig) -> RetryBudget {
        // `max` also turns a NaN from a hand-built config into 0.
        let ratio = config.ratio.max(0.0);
        let reserve = (config.min_per_second * config.window.as_secs_f64()).max(0.0);
        let slot_nanos = (nanos(config.window) / SLOTS as u64).max(1);
        RetryBudget {
            ratio,
            reserve,
            slot_nanos,
            origin: Instant::now(),
            ring: Mutex::new(Ring { latest: 0, slots: [Slot::default(); SLOTS] }),
        }
    }

    /// A client request made its first upstream call.
    pub fn deposit(&self) {
        let index = self.index();
        let mut ring = self.lock();
        let slot = ring.current(index);
        slot.requests = slot.requests.saturating_add(1);
    }

    /// Asks for one extra upstream call (a retry, a fallback after a
    /// failure, a hedge): true (and counted) while retries in the window stay
    /// within `ratio` × first calls in the window + `min_per_second` ×
    /// window seconds.
    pub fn try_withdraw(&self) -> bool {
        let index = self.index();
        let mut ring = self.lock();
        let (requests, retries) = ring.totals(index);
        if retries >= self.allowed(requests) {
            return false;
        }
        let slot = ring.current(index);
        slot.retries = slot.retries.saturating_add(1);
        true
    }

    pub fn snapshot(&self) -> BudgetSnapshot {
        let index = self.index();
        let (requests, retries) = self.lock().totals(index);
        BudgetSnapshot {
            requests,
            retries,
            available: self.allowed(requests).saturating_sub(retries),
        }
    }

    /// Extra calls allowed in a window holding `requests` first calls.
    fn allowed(&self, requests: u64) -> u64 {
        // Float to integer casts saturate, and both terms are finite and >= 0.
        (self.ratio * requests as f64 + self.reserve + ROUNDING).floor() as u64
    }

    /// The current slot index. Read before taking the lock to keep the
    /// locked section short; `Ring` copes with readings that arrive late.
    fn index(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.origin)) / self.slot_nanos
    }

    /// The counts are plain numbers, consistent after any step, so a lock
    /// poisoned by a panic elsewhere is still safe to use.
    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Ring {
    /// The newest slot index seen: a thread whose clock reading is older
    /// than another's (it was preempted before locking) counts into the
    /// newest slot instead of one already recycled.
    latest: u64,
    slots: [Slot; SLOTS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    index: u64,
    requests: u32,
    retries: u32,
}

impl Ring {
    /// The slot for `index`, emptied first if it still holds an older round.
    fn current(&mut self, index: u64) -> &mut Slot {
        let index = index.max(self.latest);
        self.latest = index;
        let slot = &mut self.slots[(index % SLOTS as u64) as usize];
        if slot.index != index {
            *slot = Slot { index, requests: 0, retries: 0 };
        }
        slot
    }

    /// (requests, retries) in the slots still inside the window.
    fn totals(&self, index: u64) -> (u64, u64) {
        let index = index.max(self.latest);
        self.slots.iter().filter(|slot| index.wrapping_sub(slot.index) < SLOTS as u64).fold(
            (0, 0),
            |(requests, retries), slot| {
                (requests + u64::from(slot.requests), retries + u64::from(slot.retries))
            },
        )
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
