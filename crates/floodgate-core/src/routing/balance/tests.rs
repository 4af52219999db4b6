use std::time::Duration;

use proptest::prelude::{prop_assert, proptest};
use proptest::strategy::Strategy as _;

use super::*;

const ALL: [Strategy; 4] =
    [Strategy::Fallback, Strategy::Weighted, Strategy::LeastLatency, Strategy::LeastBusy];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn up(weight: u32, in_flight: u32, ewma: Option<Duration>) -> Candidate {
    Candidate { weight, in_flight, ewma, available: true }
}

fn down() -> Candidate {
    Candidate { weight: 1, in_flight: 0, ewma: None, available: false }
}

/// How often each index comes first over `runs` orders.
fn first_shares(strategy: Strategy, candidates: &[Candidate], runs: usize) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut counts = vec![0usize; candidates.len()];
    for _ in 0..runs {
        counts[order(strategy, candidates, &mut rng)[0]] += 1;
    }
    counts.into_iter().map(|c| c as f64 / runs as f64).collect()
}

fn assert_near(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} is not within {tolerance} of {expected}"
    );
}

fn is_valid_order(candidates: &[Candidate], order: &[usize]) -> bool {
    let mut seen = vec![false; candidates.len()];
    for &i in order {
        if i >= candidates.len() || seen[i] {
            return false;
        }
        seen[i] = true;
    }
    let available = candidates.iter().filter(|c| c.available).count();
    let tail: Vec<usize> = order[available..].to_vec();
    let expected_tail: Vec<usize> =
        (0..candidates.len()).filter(|&i| !candidates[i].available).collect();
    order.len() == candidates.len() && tail == expected_tail
}

#[test]
fn every_strategy_returns_a_permutation_with_unavailable_last() {
    let candidates = [
        down(),
        up(3, 2, Some(ms(40))),
        up(1, 0, None),
        down(),
        up(5, 7, Some(ms(10))),
        up(2, 1, Some(ms(90))),
    ];
    let mut rng = fastrand::Rng::with_seed(1);
    for strategy in ALL {
        for _ in 0..100 {
            let order = order(strategy, &candidates, &mut rng);
            assert!(is_valid_order(&candidates, &order), "{strategy:?}: {order:?}");
            assert_eq!(&order[4..], [0, 3], "{strategy:?}");
        }
    }
}

#[test]
fn empty_and_single_routes() {
    let mut rng = fastrand::Rng::with_seed(1);
    for strategy in ALL {
        assert!(order(strategy, &[], &mut rng).is_empty());
        assert_eq!(order(strategy, &[up(1, 0, None)], &mut rng), [0]);
        assert_eq!(order(strategy, &[down(), up(1, 0, None)], &mut rng), [1, 0]);
        assert_eq!(order(strategy, &[down(), down()], &mut rng), [0, 1]);
    }
}

#[test]
fn fallback_keeps_written_order() {
    let candidates = [up(1, 9, Some(ms(900))), up(9, 0, Some(ms(1))), up(1, 0, None)];
    let mut rng = fastrand::Rng::with_seed(1);
    assert_eq!(order(Strategy::Fallback, &candidates, &mut rng), [0, 1, 2]);
}

#[test]
fn weighted_first_choice_follows_weights() {
    let candidates = [up(1, 0, None), up(2, 0, None), down(), up(7, 0, None)];
    let shares = first_shares(Strategy::Weighted, &candidates, 10_000);
    // The binomial standard deviation at p = 0.7 over 10,000 draws is 0.0046.
    assert_near(shares[0], 0.1, 0.02);
    assert_near(shares[1], 0.2, 0.02);
    assert_eq!(shares[2], 0.0);
    assert_near(shares[3], 0.7, 0.02);
}

#[test]
fn weighted_later_places_are_drawn_without_replacement() {
    // With weights 1, 1, 8: when the heavy one is first, the other two are
    // second half the time each; when a light one is first, the heavy one is
    // second with probability 8/9.
    let candidates = [up(1, 0, None), up(1, 0, None), up(8, 0, None)];
    let mut rng = fastrand::Rng::with_seed(3);
    let (mut light_first, mut heavy_second) = (0, 0);
    for _ in 0..10_000 {
        let order = order(Strategy::Weighted, &candidates, &mut rng);
        if order[0] != 2 {
            light_first += 1;
            if order[1] == 2 {
                heavy_second += 1;
            }
        }
    }
    assert_near(f64::from(heavy_second) / f64::from(light_first), 8.0 / 9.0, 0.03);
}

#[test]
fn weighted_zero_weights_go_after_the_others_in_written_order() {
    let candidates = [up(0, 0, None), up(0, 0, None), up(1, 0, None)];
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..100 {
        assert_eq!(order(Strategy::Weighted, &candidates, &mut rng), [2, 0, 1]);
    }
}

#[test]
fn least_latency_of_two_always_takes_the_lower_score() {
    let mut rng = fastrand::Rng::with_seed(1);
    let fast_idle = [up(1, 0, Some(ms(100))), up(1, 0, Some(ms(10)))];
    let fast_busy = [up(1, 0, Some(ms(100))), up(1, 20, Some(ms(10)))];
    for _ in 0..100 {
        assert_eq!(order(Strategy::LeastLatency, &fast_idle, &mut rng), [1, 0]);
        // 10 ms × 21 in flight scores worse than 100 ms × 1.
        assert_eq!(order(Strategy::LeastLatency, &fast_busy, &mut rng), [0, 1]);
    }
}

#[test]
fn least_latency_first_choice_has_power_of_two_statistics() {
    // Scores strictly increasing by index: index k wins whenever it is drawn
    // with a worse one, so P(first = k) = (n - 1 - k) / C(n, 2).
    let candidates: Vec<Candidate> = (1..=5).map(|k| up(1, 0, Some(ms(10 * k)))).collect();
    let shares = first_shares(Strategy::LeastLatency, &candidates, 10_000);
    for (k, expected) in [0.4, 0.3, 0.2, 0.1, 0.0].into_iter().enumerate() {
        assert_near(shares[k], expected, 0.02);
    }
}

#[test]
fn least_latency_orders_the_rest_by_score() {
    let candidates = [
        up(1, 0, Some(ms(50))),
        up(1, 3, Some(ms(10))), // 40
        up(1, 0, Some(ms(30))),
        up(1, 1, Some(ms(5))), // 10
        up(1, 0, Some(ms(30))),
    ];
    let mut rng = fastrand::Rng::with_seed(9);
    for _ in 0..100 {
        let order = order(Strategy::LeastLatency, &candidates, &mut rng);
        let rest: Vec<usize> = [3, 2, 4, 1, 0].into_iter().filter(|&i| i != order[0]).collect();
        assert_eq!(&order[1..], rest);
    }
}

#[test]
fn least_latency_tries_targets_without_latency() {
    // The new target scores as the lowest known EWMA (50 ms): it wins against
    // the 100 ms one, and ties against the 50 ms one half the time.
    let candidates = [up(1, 0, Some(ms(50))), up(1, 0, Some(ms(100))), up(1, 0, None)];
    let shares = first_shares(Strategy::LeastLatency, &candidates, 10_000);
    assert_near(shares[2], 0.5, 0.02);
    assert_near(shares[0], 0.5, 0.02);
    assert_eq!(shares[1], 0.0);
}

#[test]
fn least_latency_without_any_latency_prefers_the_less_busy() {
    let candidates = [up(1, 4, None), up(1, 0, None)];
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..100 {
        assert_eq!(order(Strategy::LeastLatency, &candidates, &mut rng), [1, 0]);
    }
}

#[test]
fn least_busy_sorts_by_in_flight_with_ties_in_written_order() {
    let candidates = [up(1, 3, None), up(1, 1, None), down(), up(1, 0, None), up(1, 1, None)];
    let mut rng = fastrand::Rng::with_seed(1);
    assert_eq!(order(Strategy::LeastBusy, &candidates, &mut rng), [3, 1, 4, 0, 2]);
}

#[test]
fn in_flight_guard_counts_until_dropped() {
    let stats = TargetStats::new();
    let first = stats.start();
    let second = stats.start();
    assert_eq!(stats.in_flight(), 2);
    drop(first);
    assert_eq!(stats.in_flight(), 1);
    assert_eq!(stats.candidate(3, true).in_flight, 1);
    drop(second);
    assert_eq!(stats.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn ewma_follows_successful_latencies() {
    let stats = TargetStats::new();
    assert_eq!(stats.ewma(), None);
    stats.record(ms(100), true);
    assert_eq!(stats.ewma(), Some(ms(100)));
    // 100 + 0.2 × (200 − 100), to the nanosecond (f64 arithmetic).
    stats.record(ms(200), true);
    assert_near(stats.ewma().unwrap().as_secs_f64(), 0.120, 1e-9);
    // Failures do not move it.
    stats.record(ms(5), false);
    assert_near(stats.ewma().unwrap().as_secs_f64(), 0.120, 1e-9);
    stats.record(ms(20), true);
    assert_near(stats.ewma().unwrap().as_secs_f64(), 0.100, 1e-9);
}

#[tokio::test(start_paused = true)]
async fn p95_of_known_samples() {
    let stats = TargetStats::new();
    for n in 1..=19 {
        stats.record(ms(n), true);
    }
    assert_eq!(stats.p95(), None, "fewer than 20 samples");
    stats.record(ms(10), false);
    assert_eq!(stats.p95(), None, "failures are not latency samples");
    for n in 20..=100 {
        stats.record(ms(n), true);
    }
    // Published as soon as there were 20, then refreshed every 32 samples:
    // the last 16 are not in the cached value yet.
    assert!(stats.p95().unwrap() < ms(90));
    tokio::time::advance(P95_STALE_AFTER).await;
    // Nearest rank: the 95th of 1..=100 ms, within the histogram's 1/32.
    let p95 = stats.p95().unwrap().as_secs_f64() * 1_000.0;
    assert_near(p95, 95.0, 95.0 / 32.0);
}

#[tokio::test(start_paused = true)]
async fn p95_cache_follows_new_samples() {
    let stats = TargetStats::new();
    for _ in 0..100 {
        stats.record(ms(10), true);
    }
    assert_near(stats.p95().unwrap().as_secs_f64(), 0.010, 0.010 / 32.0);
    // Enough slow samples to move the p95 refresh it within P95_EVERY records.
    for _ in 0..100 {
        stats.record(ms(500), true);
    }
    assert_near(stats.p95().unwrap().as_secs_f64(), 0.5, 0.5 / 32.0);
}

#[tokio::test(start_paused = true)]
async fn window_forgets_old_samples() {
    let stats = TargetStats::new();
    for _ in 0..20 {
        stats.record(ms(10), true);
    }
    stats.record(ms(10), false);
    assert!(stats.p95().is_some());
    // Still counted in the previous half.
    tokio::time::advance(Duration::from_secs(31)).await;
    for _ in 0..20 {
        stats.record(ms(300), true);
    }
    // The cached p95 is at most a second old.
    tokio::time::advance(P95_STALE_AFTER).await;
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.calls, snapshot.errors), (41, 1));
    assert_near(snapshot.p95_ms.unwrap(), 300.0, 300.0 / 32.0);
    // The first samples are dropped once their half is two halves old.
    tokio::time::advance(Duration::from_secs(30)).await;
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.calls, snapshot.errors), (20, 0));
    // Nothing recorded for a minute: the cached p95 ages out too.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(stats.p95(), None);
    assert_eq!(stats.snapshot().calls, 0);
    // The EWMA is not windowed: 20 samples of 300 ms after 10 ms.
    let expected = 0.300 - 0.290 * (1.0 - EWMA_ALPHA).powi(20);
    assert_near(stats.ewma().unwrap().as_secs_f64(), expected, 1e-6);
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_error_rate() {
    let stats = TargetStats::new();
    let _call = stats.start();
    for i in 0..10 {
        stats.record(ms(40), i % 5 != 0);
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.in_flight, 1);
    assert_eq!((snapshot.calls, snapshot.errors), (10, 2));
    assert_near(snapshot.error_rate, 0.2, 1e-9);
    assert_near(snapshot.ewma_ms.unwrap(), 40.0, 1e-6);
    assert_eq!(snapshot.p95_ms, None);
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["calls"], 10);
}

#[test]
fn buckets_cover_the_range_in_order() {
    let mut last = 0;
    for us in
        [0u64, 1, 15, 16, 17, 31, 32, 33, 1_000, 65_535, 1 << 20, u64::from(u32::MAX), u64::MAX]
    {
        let b = bucket(us);
        assert!(b < BUCKETS && b >= last, "{us} µs → {b}");
        last = b;
        let value = bucket_value(b);
        let clamped = us.min(u64::from(u32::MAX));
        assert!(value.abs_diff(clamped) as f64 <= clamped as f64 / 32.0 + 0.5, "{us} → {value}");
    }
}

fn candidate() -> impl proptest::strategy::Strategy<Value = Candidate> {
    (0u32..5, 0u32..50, proptest::option::of(0u64..5_000), proptest::bool::weighted(0.8)).prop_map(
        |(weight, in_flight, ewma, available)| Candidate {
            weight,
            in_flight,
            ewma: ewma.map(Duration::from_millis),
            available,
        },
    )
}

proptest! {
    #[test]
    fn order_is_always_a_permutation_with_unavailable_last(
        candidates in proptest::collection::vec(candidate(), 0..40),
        strategy in 0usize..4,
        seed: u64,
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let order = order(ALL[strategy], &candidates, &mut rng);
        prop_assert!(is_valid_order(&candidates, &order), "{order:?}");
    }
}

#[test]
fn stats_are_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TargetStats>();
    send_sync::<InFlight>();
    send_sync::<Candidate>();
}

#[tokio::test(start_paused = true)]
async fn an_unrefreshed_ewma_decays_for_least_latency() {
    let stats = TargetStats::new();
    stats.record(Duration::from_millis(40), true);
    let now = Instant::now();
    assert_eq!(stats.decayed_ewma(now), Some(Duration::from_millis(40)));
    tokio::time::advance(EWMA_HALF_LIFE).await;
    let half = stats.decayed_ewma(Instant::now()).unwrap();
    assert!((half.as_secs_f64() - 0.020).abs() < 1e-4, "{half:?}");
    tokio::time::advance(EWMA_HALF_LIFE * 2).await;
    let eighth = stats.decayed_ewma(Instant::now()).unwrap();
    assert!((eighth.as_secs_f64() - 0.005).abs() < 1e-4, "{eighth:?}");
    // The plain EWMA is unchanged, and a new sample resets the clock.
    assert_eq!(stats.ewma(), Some(Duration::from_millis(40)));
    stats.record(Duration::from_millis(40), true);
    assert_eq!(stats.decayed_ewma(Instant::now()), Some(Duration::from_millis(40)));
    assert_eq!(TargetStats::new().decayed_ewma(Instant::now()), None);
}
