//! The behaviours every [`Limiter`] keeps, written once and run against each
//! backend: memory always, Redis when `FLOODGATE_TEST_REDIS_URL` is set, and
//! a Redis Cluster of three masters that the tests start themselves when
//! `redis-server` is installed (each test under its own random key prefix). These run on the real clock,
//! since Redis keeps its own; the exact boundaries are in `memory.rs`, with
//! paused time.

use std::time::Duration;

use super::*;

pub(crate) fn check(key: &str, rate: Rate, cost: u64) -> Check {
    Check { key: key.into(), rate, cost }
}

fn per_minute(limit: u64) -> Rate {
    Rate { limit, period: Duration::from_secs(60) }
}

/// `actual` is at most `expected`, and less by no more than the test's run time.
#[track_caller]
fn about(actual: Duration, expected: Duration) {
    assert!(
        actual <= expected && expected - actual < Duration::from_secs(2),
        "{actual:?} is not about {expected:?}"
    );
}

#[track_caller]
fn retry_after(verdict: &Verdict, index: usize) -> Option<Duration> {
    match &verdict.refusal {
        Some(Refusal::Limit { index: refused, retry_after }) if *refused == index => *retry_after,
        other => panic!("expected check {index} to refuse, got {other:?}"),
    }
}

async fn admit(limiter: &dyn Limiter, checks: &[Check]) -> Verdict {
    limiter.admit(checks, None, None).await.unwrap()
}

fn slot(key: &str, max: u32, lease_id: &str) -> Slot {
    Slot { key: key.into(), max, lease_id: lease_id.into(), lease: Duration::from_secs(60) }
}

fn budget(max_usd: f64, estimate_usd: f64) -> BudgetCheck {
    BudgetCheck {
        key: "b:key:2026-12".into(),
        max_usd,
        estimate_usd,
        ttl: Some(Duration::from_secs(60)),
    }
}

async fn a_limit_of_n_admits_n_at_once_then_one_per_interval(limiter: &dyn Limiter) {
    let rpm = [check("k:a:rpm", per_minute(5), 1)];
    for n in 0..5 {
        let verdict = admit(limiter, &rpm).await;
        assert!(verdict.allowed(), "request {n}: {verdict:?}");
    }
    let refused = admit(limiter, &rpm).await;
    about(retry_after(&refused, 0).unwrap(), Duration::from_secs(12));
    assert_eq!(refused.states[0].remaining, 0);
    about(refused.states[0].reset, Duration::from_secs(60));
}

async fn a_refusal_by_one_check_takes_nothing_from_the_others(limiter: &dyn Limiter) {
    let wide = check("k:a:rpm", per_minute(10), 1);
    let narrow = check("u:bob:rpm", per_minute(1), 1);
    assert!(admit(limiter, std::slice::from_ref(&narrow)).await.allowed());
    let refused = admit(limiter, &[wide.clone(), narrow]).await;
    about(retry_after(&refused, 1).unwrap(), Duration::from_secs(60));
    // As they stand: the wide limit untouched, the narrow one spent.
    assert_eq!(refused.states[0].remaining, 10);
    assert_eq!(refused.states[0].reset, Duration::ZERO);
    assert_eq!(refused.states[1].remaining, 0);
    let verdict = admit(limiter, &[wide]).await;
    assert_eq!(verdict.states[0].remaining, 9);
}

async fn a_token_limit_counts_the_cost(limiter: &dyn Limiter) {
    let tpm = [check("k:a:tpm", per_minute(1000), 400)];
    assert_eq!(admit(limiter, &tpm).await.states[0].remaining, 600);
    let verdict = admit(limiter, &tpm).await;
    assert_eq!(verdict.states[0].remaining, 200);
    about(verdict.states[0].reset, Duration::from_secs(48));
    let refused = admit(limiter, &tpm).await;
    about(retry_after(&refused, 0).unwrap(), Duration::from_secs(12));
    assert_eq!(refused.states[0].remaining, 200);
}

async fn a_cost_above_the_limit_can_never_pass(limiter: &dyn Limiter) {
    let refused = admit(limiter, &[check("k:a:tpm", per_minute(1000), 1001)]).await;
    assert_eq!(retry_after(&refused, 0), None);
    assert_eq!(refused.states[0].remaining, 1000);
    let exact = admit(limiter, &[check("k:a:tpm", per_minute(1000), 1000)]).await;
    assert!(exact.allowed());
    assert_eq!(exact.states[0].remaining, 0);
}

async fn remaining_and_reset_follow_each_request(limiter: &dyn Limiter) {
    let rpm = [check("k:a:rpm", per_minute(10), 1)];
    let first = admit(limiter, &rpm).await;
    assert_eq!(first.states[0].limit, 10);
    assert_eq!(first.states[0].remaining, 9);
    about(first.states[0].reset, Duration::from_secs(6));
    admit(limiter, &rpm).await;
    let third = admit(limiter, &rpm).await;
    assert_eq!(third.states[0].remaining, 7);
    about(third.states[0].reset, Duration::from_secs(18));
}

async fn a_slot_holds_at_most_max_until_released(limiter: &dyn Limiter) {
    let (a, b, c) = (slot("c:key", 2, "a"), slot("c:key", 2, "b"), slot("c:key", 2, "c"));
    let rpm = [check("k:a:rpm", per_minute(10), 1)];
    assert!(limiter.admit(&rpm, Some(&a), None).await.unwrap().allowed());
    assert!(limiter.admit(&rpm, Some(&b), None).await.unwrap().allowed());
    let refused = limiter.admit(&rpm, Some(&c), None).await.unwrap();
    assert_eq!(refused.refusal, Some(Refusal::Concurrency { running: 2 }));
    // Refused by the slot: the limit was not charged.
    assert_eq!(refused.states[0].remaining, 8);
    limiter.release(&a).await.unwrap();
    assert!(limiter.admit(&rpm, Some(&c), None).await.unwrap().allowed());
    assert!(!limiter.admit(&rpm, Some(&a), None).await.unwrap().allowed());
}

async fn a_budget_refuses_when_spent_or_when_the_estimate_would_pass_it(limiter: &dyn Limiter) {
    let ttl = Some(Duration::from_secs(60));
    let key = budget(1.0, 0.0).key;
    assert!(limiter.admit(&[], None, Some(&budget(1.0, 0.6))).await.unwrap().allowed());
    limiter.spend(&key, 0.25, ttl).await.unwrap();
    limiter.spend(&key, 0.25, ttl).await.unwrap();
    let refused = limiter.admit(&[], None, Some(&budget(1.0, 0.6))).await.unwrap();
    assert_eq!(refused.refusal, Some(Refusal::Budget { spent_usd: 0.5 }));
    assert!(limiter.admit(&[], None, Some(&budget(1.0, 0.5))).await.unwrap().allowed());
    limiter.spend(&key, 0.5, ttl).await.unwrap();
    let refused = limiter.admit(&[], None, Some(&budget(1.0, 0.0))).await.unwrap();
    assert_eq!(refused.refusal, Some(Refusal::Budget { spent_usd: 1.0 }));
}

async fn a_budget_refusal_takes_no_slot_and_no_limit(limiter: &dyn Limiter) {
    let key = budget(1.0, 0.0).key;
    limiter.spend(&key, 2.0, Some(Duration::from_secs(60))).await.unwrap();
    let rpm = [check("k:a:rpm", per_minute(10), 1)];
    let one = slot("c:key", 1, "a");
    let refused = limiter.admit(&rpm, Some(&one), Some(&budget(1.0, 0.0))).await.unwrap();
    assert_eq!(refused.refusal, Some(Refusal::Budget { spent_usd: 2.0 }));
    assert_eq!(refused.states[0].remaining, 10);
    let verdict = limiter.admit(&rpm, Some(&one), None).await.unwrap();
    assert_eq!(verdict.states[0].remaining, 9);
}

async fn seed_spend_sets_a_counter_only_once(limiter: &dyn Limiter) {
    let ttl = Some(Duration::from_secs(60));
    assert_eq!(limiter.seed_spend("b:seed", 2.5, ttl).await.unwrap(), 2.5);
    assert_eq!(limiter.seed_spend("b:seed", 7.0, ttl).await.unwrap(), 2.5);
    limiter.spend("b:seed", 0.5, ttl).await.unwrap();
    assert_eq!(limiter.seed_spend("b:seed", 0.0, ttl).await.unwrap(), 3.0);
    limiter.spend("b:fresh", 1.25, ttl).await.unwrap();
    assert_eq!(limiter.seed_spend("b:fresh", 9.0, ttl).await.unwrap(), 1.25);
}

async fn adjust_moves_a_limit_up_and_down_but_never_past_full(limiter: &dyn Limiter) {
    let rate = per_minute(10);
    let rpm = [check("k:a:tpm", rate, 1)];
    assert_eq!(admit(limiter, &rpm).await.states[0].remaining, 9);
    limiter.adjust("k:a:tpm", rate, 3).await.unwrap();
    assert_eq!(admit(limiter, &rpm).await.states[0].remaining, 5);
    limiter.adjust("k:a:tpm", rate, -2).await.unwrap();
    assert_eq!(admit(limiter, &rpm).await.states[0].remaining, 6);
    // A refund larger than what was taken leaves the bucket just full.
    limiter.adjust("k:a:tpm", rate, -100).await.unwrap();
    assert_eq!(admit(limiter, &rpm).await.states[0].remaining, 9);
    // Up on a counter never seen: it starts in use.
    limiter.adjust("k:new:tpm", rate, 4).await.unwrap();
    assert_eq!(admit(limiter, &[check("k:new:tpm", rate, 1)]).await.states[0].remaining, 5);
    limiter.ping().await.unwrap();
}

async fn a_key_checked_twice_in_one_admission_pays_both_costs(limiter: &dyn Limiter) {
    let twice = [check("k:x", per_minute(10), 4), check("k:x", per_minute(10), 4)];
    let verdict = admit(limiter, &twice).await;
    assert!(verdict.allowed());
    assert_eq!(verdict.states[1].remaining, 2);
    let refused = admit(limiter, &twice).await;
    about(retry_after(&refused, 0).unwrap(), Duration::from_secs(12));
    assert_eq!(refused.states[1].remaining, 2);
}

async fn a_limit_of_zero_never_passes_and_a_period_of_zero_always_does(limiter: &dyn Limiter) {
    let zero = [check("k:zero", per_minute(0), 1)];
    assert_eq!(retry_after(&admit(limiter, &zero).await, 0), None);
    let instant = [check("k:instant", Rate { limit: 5, period: Duration::ZERO }, 5)];
    for _ in 0..3 {
        let verdict = admit(limiter, &instant).await;
        assert!(verdict.allowed());
        assert_eq!(verdict.states[0].remaining, 5);
    }
}

/// A fresh Redis limiter under a prefix of its own, or `None` (with a
/// visible line) when `FLOODGATE_TEST_REDIS_URL` is not set.
pub(crate) async fn redis_limiter() -> Option<RedisLimiter> {
    let Ok(url) = std::env::var("FLOODGATE_TEST_REDIS_URL") else {
        eprintln!("skipped: FLOODGATE_TEST_REDIS_URL not set");
        return None;
    };
    let prefix = format!("floodgate-test:{}:", uuid::Uuid::new_v4().simple());
    Some(RedisLimiter::connect(&url, &prefix).await.unwrap())
}

/// A fresh Redis limiter on this process's Redis Cluster (three masters it
/// started), or `None` (with a visible line) without `redis-server`.
pub(crate) async fn cluster_limiter() -> Option<RedisLimiter> {
    use crate::state::redis::{RedisConnections, Target};
    let cluster = crate::state::test_servers::RedisCluster::shared()?;
    let prefix = format!("floodgate-test:{}:", uuid::Uuid::new_v4().simple());
    let connections =
        RedisConnections::connect_to(&Target::Cluster(cluster.nodes.clone()), 0).await.unwrap();
    Some(RedisLimiter::with_connections(connections, &prefix).await.unwrap())
}

macro_rules! on_every_backend {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(&super::MemoryLimiter::new()).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(limiter) = super::redis_limiter().await else { return };
                    super::$behaviour(&limiter).await;
                }
            )*
        }

        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(limiter) = super::cluster_limiter().await else { return };
                    super::$behaviour(&limiter).await;
                }
            )*
        }
    };
}

on_every_backend!(
    a_limit_of_n_admits_n_at_once_then_one_per_interval,
    a_refusal_by_one_check_takes_nothing_from_the_others,
    a_token_limit_counts_the_cost,
    a_cost_above_the_limit_can_never_pass,
    remaining_and_reset_follow_each_request,
    a_slot_holds_at_most_max_until_released,
    a_budget_refuses_when_spent_or_when_the_estimate_would_pass_it,
    a_budget_refusal_takes_no_slot_and_no_limit,
    seed_spend_sets_a_counter_only_once,
    adjust_moves_a_limit_up_and_down_but_never_past_full,
    a_key_checked_twice_in_one_admission_pays_both_costs,
    a_limit_of_zero_never_passes_and_a_period_of_zero_always_does,
);
