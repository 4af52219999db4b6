use std::collections::BTreeMap;

use proptest::prelude::*;
use tokio::time::advance;

use super::*;

const WINDOW: Duration = Duration::from_secs(10);
const SLOT: Duration = Duration::from_secs(1);

fn budget(ratio: f64, min_per_second: f64) -> RetryBudget {
    RetryBudget::new(RetryBudgetConfig { ratio, min_per_second, window: WINDOW })
}

fn withdrawals(budget: &RetryBudget) -> u64 {
    let mut granted = 0;
    while budget.try_withdraw() {
        granted += 1;
        assert!(granted <= 1_000_000, "the budget never runs out");
    }
    granted
}

#[tokio::test(start_paused = true)]
async fn a_ratio_of_first_calls_may_be_retried() {
    let b = budget(0.2, 0.0);
    for _ in 0..100 {
        b.deposit();
    }
    assert_eq!(withdrawals(&b), 20);
    let s = b.snapshot();
    assert_eq!((s.requests, s.retries, s.available), (100, 20, 0));
}

#[tokio::test(start_paused = true)]
async fn no_traffic_and_no_minimum_means_no_retries() {
    let b = budget(0.2, 0.0);
    assert!(!b.try_withdraw());
    for _ in 0..4 {
        b.deposit();
    }
    assert!(!b.try_withdraw(), "0.2 × 4 is less than one retry");
    b.deposit();
    assert!(b.try_withdraw());
}

#[tokio::test(start_paused = true)]
async fn the_minimum_allows_retries_without_traffic() {
    let b = budget(0.2, 2.0);
    assert_eq!(b.snapshot().available, 20);
    assert_eq!(withdrawals(&b), 20);
    // The minimum is on top of the ratio.
    for _ in 0..10 {
        b.deposit();
    }
    assert_eq!(withdrawals(&b), 2);
}

#[tokio::test(start_paused = true)]
async fn the_allowance_is_the_whole_number_a_person_would_compute() {
    let b = budget(0.29, 0.0);
    for _ in 0..100 {
        b.deposit();
    }
    assert_eq!(withdrawals(&b), 29);
}

#[tokio::test(start_paused = true)]
async fn old_slots_expire_as_time_advances() {
    let b = budget(0.2, 0.0);
    for _ in 0..100 {
        b.deposit();
    }
    assert_eq!(withdrawals(&b), 20);
    advance(WINDOW / 2).await;
    let s = b.snapshot();
    assert_eq!((s.requests, s.retries), (100, 20), "still inside the window");
    for _ in 0..50 {
        b.deposit();
    }
    assert_eq!(withdrawals(&b), 10);

    // The first hundred calls and their retries leave the window together.
    advance(WINDOW / 2).await;
    let s = b.snapshot();
    assert_eq!((s.requests, s.retries, s.available), (50, 10, 0));
    advance(WINDOW / 2).await;
    let s = b.snapshot();
    assert_eq!((s.requests, s.retries, s.available), (0, 0, 0));
    assert!(!b.try_withdraw());
}

/// Every request fails and asks to retry until refused, for a minute at 100
/// requests a second: extra calls stay within the budget in every window,
/// and the budget is spent rather than refused outright.
#[tokio::test(start_paused = true)]
async fn a_full_outage_adds_at_most_the_budget() {
    let (ratio, min_per_second) = (0.2, 1.0);
    let b = budget(ratio, min_per_second);
    let start = Instant::now();
    // Per one-second slot since the start: (first calls, extra calls).
    let mut slots: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for _ in 0..6_000 {
        let slot = slots.entry((start.elapsed().as_nanos() / SLOT.as_nanos()) as u64).or_default();
        b.deposit();
        slot.0 += 1;
        while b.try_withdraw() {
            slot.1 += 1;
        }
        advance(Duration::from_millis(10)).await;
    }
    let reserve = min_per_second * WINDOW.as_secs_f64();
    // Each window that ends at a slot with retries: what was granted in it
    // never exceeds what its first calls earned.
    for (&last, _) in slots.iter().filter(|(_, (_, extra))| *extra > 0) {
        let (calls, extra) = sum(&slots, last.saturating_sub(9), last);
        assert!(
            extra as f64 <= ratio * calls as f64 + reserve,
            "window ending at second {last}: {extra} extra calls for {calls} calls"
        );
    }
    // Disjoint such windows cover every retry, so over the whole minute (at
    // most six of them fit) the total stays within the budget as well.
    let (calls, extra) = sum(&slots, 0, u64::MAX);
    assert!(extra as f64 <= ratio * calls as f64 + reserve * 6.0);
    assert!(extra as f64 >= ratio * calls as f64, "only {extra} extra calls for {calls}");
}

/// (first calls, extra calls) in slots `from..=to`.
fn sum(slots: &BTreeMap<u64, (u64, u64)>, from: u64, to: u64) -> (u64, u64) {
    slots.range(from..=to).fold((0, 0), |(c, e), (_, (dc, de))| (c + dc, e + de))
}

#[test]
fn shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RetryBudget>();

    let b = RetryBudget::new(RetryBudgetConfig {
        ratio: 0.5,
        min_per_second: 0.0,
        window: Duration::from_secs(3600),
    });
    for _ in 0..1000 {
        b.deposit();
    }
    let granted: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4).map(|_| scope.spawn(|| withdrawals(&b))).collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(granted, 500, "every withdrawal is counted exactly once");
}

#[derive(Debug, Clone)]
enum Op {
    Deposit(u32),
    Withdraw(u32),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..50).prop_map(Op::Deposit),
        (1u32..50).prop_map(Op::Withdraw),
        (0u64..4_000).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whenever a retry is granted, the retries in the window (the slot and
    /// the nine before it) stay within what that window's first calls earned;
    /// the snapshot always agrees with an independent count; and over the
    /// whole run, retries stay within ratio × first calls plus the minimum
    /// for each window the run spans.
    #[test]
    fn withdrawals_never_exceed_the_budget(
        ops in prop::collection::vec(op(), 1..200),
        ratio in 0.0f64..2.0,
        min_per_second in 0.0f64..3.0,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let b = budget(ratio, min_per_second);
            let start = Instant::now();
            let slot = || (start.elapsed().as_nanos() / SLOT.as_nanos()) as u64;
            let mut slots: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            for op in ops {
                let now = slot();
                match op {
                    Op::Deposit(n) => {
                        for _ in 0..n {
                            b.deposit();
                        }
                        slots.entry(now).or_default().0 += u64::from(n);
                    }
                    Op::Withdraw(n) => {
                        for _ in 0..n {
                            if b.try_withdraw() {
                                slots.entry(now).or_default().1 += 1;
                                let (requests, retries) = sum(&slots, now.saturating_sub(9), now);
                                prop_assert!(retries <= b.allowed(requests));
                            }
                        }
                    }
                    Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                }
                let now = slot();
                let (requests, retries) = sum(&slots, now.saturating_sub(9), now);
                let s = b.snapshot();
                prop_assert_eq!((s.requests, s.retries), (requests, retries));
                prop_assert_eq!(s.available, b.allowed(requests).saturating_sub(retries));
            }
            let (requests, retries) = sum(&slots, 0, u64::MAX);
            let windows = (slot() + 10) / 10;
            let reserve = min_per_second * WINDOW.as_secs_f64();
            prop_assert!(
                retries as f64 <= ratio * requests as f64 + reserve * windows as f64 + 1e-6
            );
            Ok(())
        })?;
    }
}
