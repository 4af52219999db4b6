//! The limiter of a single node: GCRA counters, concurrency counts and budget
//! spend in this process, in 64 mutex-guarded shards.
//!
//! An admission locks every shard its keys fall in, in ascending shard order
//! (so two admissions never wait on each other in a cycle), computes every
//! check, the slot and the budget, and writes only if all pass.
//!
//! Memory is bounded by the keys in use: a counter whose `tat` is past is the
//! same as no counter, so a shard about to take a new key first drops its
//! past counters and expired budgets once it holds [`SWEEP_MIN`] entries or
//! twice as many as survived its last sweep (amortised O(1) per new key).
//! [`MemoryLimiter::purge`] sweeps every shard at once, for a caller that
//! wants memory back after a burst of keys that never come again.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::fast::RandomState;
use tokio::time::Instant;

use super::{BudgetCheck, Check, LimitState, Limiter, LimiterError, Rate, Refusal, Slot, Verdict};

const SHARDS: usize = 64;

/// A shard sweeps before taking a new key once it holds this many entries.
pub(crate) const SWEEP_MIN: usize = 256;

/// Admissions with up to this many checks keep their working state on the stack.
const INLINE_CHECKS: usize = 8;

/// Nanoseconds since the limiter's base instant.
type Nanos = u64;

pub struct MemoryLimiter {
    base: Instant,
    /// Picks a key's shard. Seeded apart from the shards' maps, so the keys
    /// of one shard still spread over all of its map's buckets.
    router: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter::new()
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Theoretical arrival times; only ones in the future are kept.
    tats: HashMap<String, Nanos, RandomState>,
    /// Running requests per slot key; a key is removed when its count is 0.
    slots: HashMap<String, u32, RandomState>,
    budgets: HashMap<String, Spend, RandomState>,
    /// Entries (`tats` + `budgets`) at which the next new key sweeps first.
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Spend {
    usd: f64,
    expires: Option<Nanos>,
}

impl Spend {
    fn live(&self, now: Nanos) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

impl Shard {
    /// The counter's `tat`, never before `now` (a past `tat` is a full bucket).
    fn tat(&self, key: &str, now: Nanos) -> Nanos {
        self.tats.get(key).map_or(now, |tat| (*tat).max(now))
    }

    fn set_tat(&mut self, key: &str, tat: Nanos, now: Nanos) {
        if let Some(stored) = self.tats.get_mut(key) {
            *stored = tat;
        } else if tat > now {
            self.make_room(now);
            self.tats.insert(key.to_owned(), tat);
        }
    }

    fn spent(&self, key: &str, now: Nanos) -> f64 {
        self.budgets.get(key).filter(|spend| spend.live(now)).map_or(0.0, |spend| spend.usd)
    }

    fn make_room(&mut self, now: Nanos) {
        if self.tats.len() + self.budgets.len() >= self.sweep_at.max(SWEEP_MIN) {
            self.sweep(now);
            self.sweep_at = 2 * (self.tats.len() + self.budgets.len());
        }
    }

    fn sweep(&mut self, now: Nanos) {
        self.tats.retain(|_, tat| *tat > now);
        self.budgets.retain(|_, spend| spend.live(now));
    }
}

/// The shards an admission holds, by shard index.
trait Locked {
    fn shard(&mut self, index: usize) -> &mut Shard;
}

/// Every key in one shard: the common case, with no allocation.
struct One<'a>(MutexGuard<'a, Shard>);

impl Locked for One<'_> {
    fn shard(&mut self, _index: usize) -> &mut Shard {
        &mut self.0
    }
}

/// Guards of the shards set in `mask`, in ascending shard order: on the
/// stack for up to [`INLINE_GUARDS`] shards (an allocation per admission
/// costs a tenth of it), on the heap beyond.
struct Many<'a> {
    mask: u64,
    inline: [Option<MutexGuard<'a, Shard>>; INLINE_GUARDS],
    spilled: Vec<MutexGuard<'a, Shard>>,
}

const INLINE_GUARDS: usize = 6;

impl<'a> Many<'a> {
    fn lock(shards: &'a [Mutex<Shard>], mask: u64) -> Many<'a> {
        let mut many = Many { mask, inline: Default::default(), spilled: Vec::new() };
        let mut rest = mask;
        let mut position = 0;
        while rest != 0 {
            let guard = lock(&shards[rest.trailing_zeros() as usize]);
            match many.inline.get_mut(position) {
                Some(slot) => *slot = Some(guard),
                None => many.spilled.push(guard),
            }
            position += 1;
            rest &= rest - 1;
        }
        many
    }
}

impl Locked for Many<'_> {
    fn shard(&mut self, index: usize) -> &mut Shard {
        // The guard's position is the number of locked shards below `index`.
        let position = (self.mask & ((1u64 << index) - 1)).count_ones() as usize;
        match self.inline.get_mut(position) {
            Some(Some(guard)) => guard,
            // Positions past the inline ones are in `spilled`, in order; an
            // index always names a locked shard, so the inline slot is full.
            _ => &mut self.spilled[position - INLINE_GUARDS],
        }
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Shards are only changed by code that cannot panic half-way, so a
    // poisoned shard is still consistent.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One check's working state during an admission.
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    shard: u8,
    /// The stored `tat` (at least now).
    before: Nanos,
    /// The `tat` after this admission.
    after: Nanos,
}

fn nanos(duration: Duration) -> Nanos {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// `cost · T`, rounded down so that `limit` units fit exactly in a period.
fn increment(rate: Rate, units: u64) -> Nanos {
    if rate.limit == 0 {
        return 0;
    }
    let exact = u128::from(units) * rate.period.as_nanos() / u128::from(rate.limit);
    u64::try_from(exact).unwrap_or(u64::MAX)
}

impl MemoryLimiter {
    pub fn new() -> MemoryLimiter {
        MemoryLimiter {
            base: Instant::now(),
            router: RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn now(&self) -> Nanos {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    fn shard_of(&self, key: &str) -> u8 {
        // SHARDS is 64: the top six bits, which the maps' own hashers do not share.
        (self.router.hash_one(key) >> 58) as u8
    }

    /// Drops every past counter and expired budget now, in every shard.
    pub fn purge(&self) {
        let now = self.now();
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.sweep(now);
            shard.sweep_at = 2 * (shard.tats.len() + shard.budgets.len());
        }
    }

    /// Counters, slots and budgets held (past counters not yet swept included).
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = lock(shard);
                shard.tats.len() + shard.slots.len() + shard.budgets.len()
            })
            .sum()
    }

    /// [`Limiter::admit`] without the future: what the trait method runs.
    pub fn admit_now(
        &self,
        checks: &[Check],
        slot: Option<&Slot>,
        budget: Option<&BudgetCheck>,
    ) -> Verdict {
        let mut inline = [Step::default(); INLINE_CHECKS];
        let mut spilled = Vec::new();
        let steps: &mut [Step] = if checks.len() <= INLINE_CHECKS {
            &mut inline[..checks.len()]
        } else {
            spilled.resize(checks.len(), Step::default());
            &mut spilled
        };
        let mut mask = 0u64;
        for (step, check) in steps.iter_mut().zip(checks) {
            step.shard = self.shard_of(&check.key);
            mask |= 1 << step.shard;
        }
        let slot = slot.map(|slot| (slot, self.shard_of(&slot.key)));
        let budget = budget.map(|budget| (budget, self.shard_of(&budget.key)));
        for shard in slot.iter().map(|s| s.1).chain(budget.iter().map(|b| b.1)) {
            mask |= 1 << shard;
        }
        if mask.count_ones() <= 1 {
            let index = mask.trailing_zeros() as usize % SHARDS;
            let mut locked = One(lock(&self.shards[index]));
            decide(&mut locked, self.now(), checks, steps, slot, budget)
        } else {
            let mut locked = Many::lock(&self.shards, mask);
            decide(&mut locked, self.now(), checks, steps, slot, budget)
        }
    }
}

/// Computes every check, the slot and the budget with their shards held,
/// and takes them all only if none refuses. The first refusal in the order
/// checks, slot, budget is the one reported.
fn decide(
    locked: &mut impl Locked,
    now: Nanos,
    checks: &[Check],
    steps: &mut [Step],
    slot: Option<(&Slot, u8)>,
    budget: Option<(&BudgetCheck, u8)>,
) -> Verdict {
    let mut refusal = None;
    for (index, check) in checks.iter().enumerate() {
        let before = locked.shard(usize::from(steps[index].shard)).tat(&check.key, now);
        // A key checked twice in one admission: the later check comes after
        // the earlier one's cost.
        let current = checks[..index]
            .iter()
            .rposition(|earlier| earlier.key == check.key)
            .map_or(before, |earlier| steps[earlier].after);
        let after = current.saturating_add(increment(check.rate, check.cost));
        steps[index].before = before;
        steps[index].after = after;
        if refusal.is_none() {
            let period = nanos(check.rate.period);
            if check.cost > check.rate.limit {
                refusal = Some(Refusal::Limit { index, retry_after: None });
            } else if after - now > period {
                let retry_after = Duration::from_nanos(after - now - period);
                refusal = Some(Refusal::Limit { index, retry_after: Some(retry_after) });
            }
        }
    }
    if refusal.is_none()
        && let Some((slot, shard)) = slot
    {
        let running = locked.shard(usize::from(shard)).slots.get(&slot.key).copied().unwrap_or(0);
        if running >= slot.max {
            refusal = Some(Refusal::Concurrency { running });
        }
    }
    if refusal.is_none()
        && let Some((budget, shard)) = budget
    {
        let spent = locked.shard(usize::from(shard)).spent(&budget.key, now);
        if spent >= budget.max_usd || spent + budget.estimate_usd > budget.max_usd {
            refusal = Some(Refusal::Budget { spent_usd: spent });
        }
    }
    let allowed = refusal.is_none();
    if allowed {
        // In order, so a key checked twice ends with its last (cumulative) tat.
        for (check, step) in checks.iter().zip(steps.iter()) {
            locked.shard(usize::from(step.shard)).set_tat(&check.key, step.after, now);
        }
        if let Some((slot, shard)) = slot {
            let slots = &mut locked.shard(usize::from(shard)).slots;
            match slots.get_mut(slot.key.as_str()) {
                Some(running) => *running += 1,
                None => {
                    slots.insert(slot.key.clone(), 1);
                }
            }
        }
    }
    let states = checks
        .iter()
        .zip(steps.iter())
        .map(|(check, step)| {
            let tat = if allowed { step.after } else { step.before };
            LimitState::at(check.rate, Duration::from_nanos(tat - now))
        })
        .collect();
    Verdict { states, refusal }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn admit(
        &self,
        checks: &[Check],
        slot: Option<&Slot>,
        budget: Option<&BudgetCheck>,
    ) -> Result<Verdict, LimiterError> {
        Ok(self.admit_now(checks, slot, budget))
    }

    /// Moves the counter's `tat` by `delta · T`. Up, the limit may go into
    /// debt (later requests wait longer); down, the `tat` stops at now: a
    /// refund can fill the bucket but never past full.
    async fn adjust(&self, key: &str, rate: Rate, delta: i64) -> Result<(), LimiterError> {
        let now = self.now();
        let mut shard = lock(&self.shards[usize::from(self.shard_of(key))]);
        let tat = shard.tat(key, now);
        let moved = increment(rate, delta.unsigned_abs());
        let tat = if delta >= 0 { tat.saturating_add(moved) } else { tat.saturating_sub(moved) };
        shard.set_tat(key, tat.max(now), now);
        Ok(())
    }

    async fn release(&self, slot: &Slot) -> Result<(), LimiterError> {
        let mut shard = lock(&self.shards[usize::from(self.shard_of(&slot.key))]);
        if let Some(running) = shard.slots.get_mut(slot.key.as_str()) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                shard.slots.remove(slot.key.as_str());
            }
        }
        Ok(())
    }

    async fn spend(
        &self,
        budget_key: &str,
        usd: f64,
        ttl: Option<Duration>,
    ) -> Result<(), LimiterError> {
        let now = self.now();
        let mut shard = lock(&self.shards[usize::from(self.shard_of(budget_key))]);
        let expires_at = |ttl: Duration| now.saturating_add(nanos(ttl));
        match shard.budgets.get_mut(budget_key) {
            Some(spend) if spend.live(now) => {
                spend.usd += usd;
                if let Some(ttl) = ttl {
                    spend.expires = Some(expires_at(ttl));
                }
            }
            Some(spend) => *spend = Spend { usd, expires: ttl.map(expires_at) },
            None => {
                shard.make_room(now);
                shard
                    .budgets
                    .insert(budget_key.to_owned(), Spend { usd, expires: ttl.map(expires_at) });
            }
        }
        Ok(())
    }

    async fn seed_spend(
        &self,
        budget_key: &str,
        usd: f64,
        ttl: Option<Duration>,
    ) -> Result<f64, LimiterError> {
        let now = self.now();
        let mut shard = lock(&self.shards[usize::from(self.shard_of(budget_key))]);
        let seeded = Spend { usd, expires: ttl.map(|ttl| now.saturating_add(nanos(ttl))) };
        match shard.budgets.get_mut(budget_key) {
            Some(spend) if spend.live(now) => Ok(spend.usd),
            Some(spend) => {
                *spend = seeded;
                Ok(usd)
            }
            None => {
                shard.make_room(now);
                shard.budgets.insert(budget_key.to_owned(), seeded);
                Ok(usd)
            }
        }
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::tests::check;

    fn per(limit: u64, period: Duration) -> Rate {
        Rate { limit, period }
    }

    async fn admit(limiter: &MemoryLimiter, checks: &[Check]) -> Verdict {
        limiter.admit(checks, None, None).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn ten_a_minute_lets_the_next_one_in_at_exactly_six_seconds() {
        let limiter = MemoryLimiter::new();
        let rpm = [check("k:rpm", per(10, Duration::from_secs(60)), 1)];
        for n in 0..10 {
            let verdict = admit(&limiter, &rpm).await;
            assert!(verdict.allowed(), "request {n}");
            assert_eq!(verdict.states[0].remaining, 9 - n);
        }
        let refused = admit(&limiter, &rpm).await;
        assert_eq!(
            refused.refusal,
            Some(Refusal::Limit { index: 0, retry_after: Some(Duration::from_secs(6)) })
        );
        assert_eq!(refused.states[0].reset, Duration::from_secs(60));
        tokio::time::advance(Duration::from_millis(5999)).await;
        let refused = admit(&limiter, &rpm).await;
        assert_eq!(
            refused.refusal,
            Some(Refusal::Limit { index: 0, retry_after: Some(Duration::from_millis(1)) })
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let verdict = admit(&limiter, &rpm).await;
        assert!(verdict.allowed());
        assert_eq!(
            verdict.states[0],
            LimitState { limit: 10, remaining: 0, reset: Duration::from_secs(60) }
        );
        assert!(!admit(&limiter, &rpm).await.allowed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_per_fifteen_minutes_refills_one_every_900_ms() {
        let limiter = MemoryLimiter::new();
        let rate = [check("ip:1.2.3.4", per(1000, Duration::from_secs(15 * 60)), 1)];
        for _ in 0..1000 {
            assert!(admit(&limiter, &rate).await.allowed());
        }
        let refused = admit(&limiter, &rate).await;
        assert_eq!(
            refused.refusal,
            Some(Refusal::Limit { index: 0, retry_after: Some(Duration::from_millis(900)) })
        );
        tokio::time::advance(Duration::from_millis(899)).await;
        assert!(!admit(&limiter, &rate).await.allowed());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(admit(&limiter, &rate).await.allowed());
        // Idle for the whole period: the bucket is full again.
        tokio::time::advance(Duration::from_secs(15 * 60)).await;
        let verdict = admit(&limiter, &rate).await;
        assert_eq!(verdict.states[0].remaining, 999);
        assert_eq!(verdict.states[0].reset, Duration::from_millis(900));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_per_five_minutes_spaced_out_never_refuses() {
        let limiter = MemoryLimiter::new();
        let rate = [check("u:alice", per(10, Duration::from_secs(300)), 1)];
        // One every 30 s is exactly the sustained rate.
        for _ in 0..50 {
            let verdict = admit(&limiter, &rate).await;
            assert!(verdict.allowed());
            assert_eq!(verdict.states[0].remaining, 9);
            tokio::time::advance(Duration::from_secs(30)).await;
        }
        // After a pause the bucket is whole: a burst of 10.
        tokio::time::advance(Duration::from_secs(150)).await;
        let mut passed = 0;
        while admit(&limiter, &rate).await.allowed() {
            passed += 1;
        }
        assert_eq!(passed, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refund_fills_the_bucket_but_not_past_full() {
        let limiter = MemoryLimiter::new();
        let rate = per(100, Duration::from_secs(60));
        let tpm = [check("k:tpm", rate, 50)];
        assert_eq!(admit(&limiter, &tpm).await.states[0].remaining, 50);
        limiter.adjust("k:tpm", rate, -1000).await.unwrap();
        assert_eq!(admit(&limiter, &tpm).await.states[0].remaining, 50);
        // Debt: 30 more than checked leaves room for 20, so 50 must wait 18 s.
        limiter.adjust("k:tpm", rate, 30).await.unwrap();
        let refused = admit(&limiter, &tpm).await;
        assert_eq!(
            refused.refusal,
            Some(Refusal::Limit { index: 0, retry_after: Some(Duration::from_secs(18)) })
        );
        assert_eq!(refused.states[0].remaining, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_counter_expires_after_its_ttl() {
        let limiter = MemoryLimiter::new();
        let ttl = Some(Duration::from_secs(10));
        limiter.spend("b:k", 1.0, ttl).await.unwrap();
        let budget = BudgetCheck { key: "b:k".into(), max_usd: 1.0, estimate_usd: 0.0, ttl };
        assert!(!limiter.admit(&[], None, Some(&budget)).await.unwrap().allowed());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(limiter.admit(&[], None, Some(&budget)).await.unwrap().allowed());
        assert_eq!(limiter.seed_spend("b:k", 0.25, ttl).await.unwrap(), 0.25);
    }

    #[tokio::test(start_paused = true)]
    async fn releasing_more_than_was_taken_stays_at_zero() {
        let limiter = MemoryLimiter::new();
        let slot = Slot {
            key: "c:k".into(),
            max: 1,
            lease_id: "l".into(),
            lease: Duration::from_secs(60),
        };
        limiter.release(&slot).await.unwrap();
        limiter.release(&slot).await.unwrap();
        assert!(limiter.admit(&[], Some(&slot), None).await.unwrap().allowed());
        assert_eq!(
            limiter.admit(&[], Some(&slot), None).await.unwrap().refusal,
            Some(Refusal::Concurrency { running: 1 })
        );
        assert_eq!(limiter.entries(), 1);
        limiter.release(&slot).await.unwrap();
        assert_eq!(limiter.entries(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn past_counters_are_swept_so_memory_follows_the_active_keys() {
        let limiter = MemoryLimiter::new();
        let rate = per(1, Duration::from_secs(1));
        // 200 waves of 1,000 new keys, each wave's counters past by the next.
        for wave in 0..200 {
            for key in 0..1000 {
                let checks = [check(&format!("ip:{wave}:{key}"), rate, 1)];
                assert!(admit(&limiter, &checks).await.allowed());
            }
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        let bound = SHARDS * SWEEP_MIN + 2 * 1000;
        assert!(limiter.entries() <= bound, "{} entries after 200,000 keys", limiter.entries());
        limiter.purge();
        assert_eq!(limiter.entries(), 0);
        // What is still in use survives a purge.
        assert!(admit(&limiter, &[check("k:live", rate, 1)]).await.allowed());
        limiter.purge();
        assert_eq!(limiter.entries(), 1);
        assert!(!admit(&limiter, &[check("k:live", rate, 1)]).await.allowed());
    }

    proptest::proptest! {
        /// Whatever the arrivals and costs: what passes never exceeds a full
        /// bucket plus the refill since, and a refused request passes exactly
        /// when its `retry_after` says (not a nanosecond before), so a
        /// refusal took nothing.
        #[test]
        fn the_bucket_holds_whatever_the_arrivals(
            limit in 1u64..50,
            period_ms in 1u64..10_000,
            arrivals in proptest::collection::vec((0u64..3_000, 0u64..60), 1..100),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let rate = per(limit, Duration::from_millis(period_ms));
                let limiter = MemoryLimiter::new();
                let start = Instant::now();
                let (mut admitted, mut admissions) = (0u128, 0u128);
                for (wait_ms, cost) in arrivals {
                    tokio::time::advance(Duration::from_millis(wait_ms)).await;
                    let request = [check("k", rate, cost)];
                    let mut verdict = admit(&limiter, &request).await;
                    match verdict.refusal {
                        None => {}
                        Some(Refusal::Limit { index: 0, retry_after: None }) => {
                            assert!(cost > limit);
                            continue;
                        }
                        Some(Refusal::Limit { index: 0, retry_after: Some(wait) }) => {
                            assert!(cost <= limit && wait > Duration::ZERO);
                            tokio::time::advance(wait - Duration::from_nanos(1)).await;
                            assert!(!admit(&limiter, &request).await.allowed());
                            tokio::time::advance(Duration::from_nanos(1)).await;
                            verdict = admit(&limiter, &request).await;
                            assert!(verdict.allowed(), "{verdict:?}");
                        }
                        Some(other) => panic!("{other:?}"),
                    }
                    admitted += u128::from(cost);
                    admissions += 1;
                    let state = verdict.states[0];
                    assert!(state.remaining <= limit && state.reset <= rate.period);
                    let (elapsed, period) = (start.elapsed().as_nanos(), rate.period.as_nanos());
                    let limit = u128::from(limit);
                    // Each admission's cost·T is rounded down by under 1 ns.
                    assert!(admitted * period <= (elapsed + period) * limit + admissions * limit);
                }
            });
        }
    }
}
