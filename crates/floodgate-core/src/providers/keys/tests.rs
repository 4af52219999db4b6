use std::time::Duration;

use super::*;
use crate::alerts::Alerts;

fn pool_of(keys: Vec<KeyConfig>) -> KeyPool {
    KeyPool::new(
        "p",
        &keys,
        &KeyConfig::plain(""),
        Alerts::log_only(Vec::new()),
        CapacitySignal::new(),
    )
}

fn pool(n: usize) -> KeyPool {
    pool_of((0..n).map(|i| KeyConfig::plain(format!("key-{i}"))).collect())
}

fn picked(pool: &KeyPool) -> Option<usize> {
    match pool.pick(|| 10, |_| KeyUse::Usable) {
        Pick::Key(k, r) => {
            r.settle(10);
            Some(k.index)
        }
        Pick::Anonymous(_) | Pick::Exhausted | Pick::Blocked | Pick::Busy(_) => None,
    }
}

#[tokio::test]
async fn unlimited_keys_take_turns_and_disabled_ones_are_skipped() {
    let pool = pool(3);
    let mut seen = [picked(&pool), picked(&pool), picked(&pool)];
    seen.sort_unstable();
    assert_eq!(seen, [Some(0), Some(1), Some(2)]);
    assert!(pool.disable(1, "401"));
    assert!(!pool.disable(1, "401"));
    let seen: Vec<_> = (0..4).map(|_| picked(&pool)).collect();
    assert!(seen.iter().all(|i| *i != Some(1)), "{seen:?}");
    assert_eq!(pool.usable(), 2);
    assert_eq!(pool.disabled(), vec![(1, "401".to_string())]);
    assert_eq!(pool.enable_all(), 1);
    assert_eq!(pool.usable(), 3);
}

#[tokio::test]
async fn all_disabled_is_exhausted_blocked_is_blocked_and_no_keys_is_anonymous() {
    let pool = pool(1);
    assert!(matches!(pool.pick(|| 1, |_| KeyUse::Blocked), Pick::Blocked));
    pool.disable(0, "403");
    assert!(matches!(pool.pick(|| 1, |_| KeyUse::Usable), Pick::Exhausted));
    assert!(!pool.in_use());
    assert!(matches!(pool_of(Vec::new()).pick(|| 1, |_| KeyUse::Usable), Pick::Anonymous(_)));
}

#[tokio::test(start_paused = true)]
async fn highest_priority_first_then_most_headroom() {
    let keys = vec![
        KeyConfig { rpm: Some(10), ..KeyConfig::plain("low") },
        KeyConfig { rpm: Some(4), priority: 5, ..KeyConfig::plain("high-a") },
        KeyConfig { rpm: Some(2), priority: 5, ..KeyConfig::plain("high-b") },
    ];
    let pool = pool_of(keys);
    let order: Vec<Option<usize>> = (0..7).map(|_| picked(&pool)).collect();
    // Priority 5 first: key 1 (4 rpm) and key 2 (2 rpm) by headroom — 1 (1.0
    // vs 1.0, first in turn or not), then whichever has more left — until
    // both are full; then the low-priority key.
    let high: Vec<_> = order[..6].to_vec();
    assert_eq!(high.iter().filter(|k| **k == Some(1)).count(), 4, "{order:?}");
    assert_eq!(high.iter().filter(|k| **k == Some(2)).count(), 2, "{order:?}");
    assert_eq!(order[6], Some(0));
    // Headroom ranking: after key 1 took 2 of 4 and key 2 took 1 of 2, both
    // were at 50 %; it never left key 2 with more use than its share.
}

#[tokio::test(start_paused = true)]
async fn keys_without_room_are_skipped_then_busy_says_how_long() {
    let keys = (0..2).map(|i| KeyConfig { rpm: Some(1), ..KeyConfig::plain(format!("k{i}")) });
    let pool = pool_of(keys.collect());
    let mut used = vec![picked(&pool), picked(&pool)];
    used.sort_unstable();
    assert_eq!(used, [Some(0), Some(1)]);
    assert!(
        matches!(pool.pick(|| 0, |_| KeyUse::Usable), Pick::Busy(wait) if wait == Duration::from_secs(61))
    );
    assert!(pool.in_use());
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(picked(&pool).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_key_is_skipped_and_the_estimate_is_only_made_when_tokens_count() {
    let pool = pool_of(vec![
        KeyConfig::plain("a"),
        KeyConfig { tpm: Some(1000), ..KeyConfig::plain("b") },
    ]);
    let calls = std::cell::Cell::new(0);
    let paused_a =
        |i: usize| if i == 0 { KeyUse::Wait(Duration::from_secs(2)) } else { KeyUse::Usable };
    match pool.pick(
        || {
            calls.set(calls.get() + 1);
            100
        },
        paused_a,
    ) {
        Pick::Key(k, r) => {
            assert_eq!(k.index, 1);
            r.settle(100);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.get(), 1);
    let all_paused = |i: usize| KeyUse::Wait(Duration::from_secs(if i == 0 { 2 } else { 5 }));
    assert!(matches!(pool.pick(|| 1, all_paused), Pick::Busy(w) if w == Duration::from_secs(2)));
    let calls = std::cell::Cell::new(0);
    match pool.pick(
        || {
            calls.set(calls.get() + 1);
            1
        },
        |i| if i == 0 { KeyUse::Usable } else { KeyUse::Blocked },
    ) {
        Pick::Key(k, _) => assert_eq!(k.index, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.get(), 0, "key 0 counts no tokens: no estimate needed");
}

#[tokio::test(start_paused = true)]
async fn breaker_filter_is_respected() {
    let pool = pool(2);
    for _ in 0..4 {
        match pool.pick(|| 1, |i| if i == 1 { KeyUse::Usable } else { KeyUse::Blocked }) {
            Pick::Key(k, _) => assert_eq!(k.index, 1),
            other => panic!("{other:?}"),
        }
    }
}
